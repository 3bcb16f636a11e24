//! What a notification looks like on each kind of channel (pure: a
//! [`Notification`] and its acknowledge link in, an HTTP request out). The
//! generic webhook's document is the contract (PROTOCOL.md, "Notifications");
//! Slack, Teams and ntfy get what their incoming webhooks expect.

use pressline_protocol::upstream::{Alert, AlertEvent, AlertKind, Severity};
use serde_json::{json, Value};

use super::config::ChannelKind;
use super::routing::Notification;

/// `schema` of the generic webhook's document.
pub const NOTIFICATION_SCHEMA: &str = "pressline.notification.v1";

/// An HTTP `POST` to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Post {
    pub url: String,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// An e-mail to send (the e-mail channel).
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub subject: String,
    pub body: String,
    /// `<{idempotency keys}@pressline>`: the same on every retry, so mail
    /// systems that drop repeated Message-IDs keep one copy.
    pub message_id: String,
}

/// One notification with its one-click acknowledge link (when the alert
/// still wants acknowledging and links are configured).
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub notification: &'a Notification,
    pub ack_url: Option<String>,
}

/// The headline and the sentence of a transition, for people.
pub fn summary(alert: &Alert) -> (String, String) {
    let subject = match (&alert.zone, alert.terminal.as_str()) {
        (Some(_), _) => alert.detail.clone(),
        (None, terminal) => format!(
            "terminal {terminal}: {} ({})",
            alert.kind.as_str().replace('_', " "),
            alert.detail
        ),
    };
    let what = match (&alert.kind, &alert.severity) {
        (AlertKind::ZoneUnhappy, _) => "Unhappy zone",
        (AlertKind::ZoneHappy, _) => "Praise: a zone doing very well",
        (_, Severity::Critical) => "Critical",
        _ => "Warning",
    };
    let title = match &alert.event {
        Some(AlertEvent::Raised) => format!("{what} at {}", alert.site),
        Some(AlertEvent::Reopened) => format!("{what} again at {}", alert.site),
        Some(AlertEvent::Escalated) => format!(
            "Escalated, nobody has acknowledged: {what} at {}",
            alert.site
        ),
        Some(AlertEvent::Acknowledged) => format!(
            "Acknowledged by {} at {}",
            alert.acknowledged_by.as_deref().unwrap_or("someone"),
            alert.site
        ),
        Some(AlertEvent::Recovered) => format!("Recovered at {}", alert.site),
        Some(AlertEvent::Closed) => format!("Closed at {}", alert.site),
        _ => format!("{what} at {}", alert.site),
    };
    let mut text = subject;
    if let (Some(AlertEvent::Acknowledged), Some(note)) = (&alert.event, &alert.ack_note) {
        text.push_str(&format!(" (note: {note})"));
    }
    (title, text)
}

fn priority(alert: &Alert) -> u8 {
    let calls = matches!(
        alert.event,
        Some(AlertEvent::Raised | AlertEvent::Reopened | AlertEvent::Escalated)
    );
    match alert.severity {
        Severity::Critical if calls => 5,
        Severity::Warning if calls => 4,
        _ => 3,
    }
}

fn tag(alert: &Alert) -> &'static str {
    match (&alert.event, &alert.kind, &alert.severity) {
        (Some(AlertEvent::Acknowledged), _, _) => "eyes",
        (Some(AlertEvent::Recovered | AlertEvent::Closed), _, _) => "white_check_mark",
        (_, AlertKind::ZoneHappy, _) => "tada",
        (_, _, Severity::Critical) => "rotating_light",
        _ => "warning",
    }
}

/// The request for `items` (one, or a digest of several) on a channel.
pub fn render(kind: ChannelKind, url: &str, items: &[Outgoing<'_>]) -> Post {
    let key = items
        .iter()
        .map(|i| i.notification.idempotency_key.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let (content_type, body, url) = match kind {
        // Not an HTTP channel: see `email`; the generic document stands in.
        ChannelKind::Email => ("application/json", webhook(items), url.to_string()),
        ChannelKind::Webhook => ("application/json", webhook(items), url.to_string()),
        ChannelKind::Slack => ("application/json", slack(items), url.to_string()),
        ChannelKind::Teams => ("application/json", teams(items), url.to_string()),
        ChannelKind::Ntfy => {
            let (base, body) = ntfy(url, items);
            ("application/json", body, base)
        }
    };
    Post {
        url,
        content_type,
        headers: vec![("Idempotency-Key", key)],
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// The e-mail for `items` (one, or a digest).
pub fn email(items: &[Outgoing<'_>]) -> Email {
    let keys: Vec<&str> = items
        .iter()
        .map(|i| i.notification.idempotency_key.as_str())
        .collect();
    let subject = match items {
        [one] => {
            let (title, text) = summary(&one.notification.alert);
            format!("{title}: {text}")
        }
        many => digest_title(many),
    };
    let mut body = String::new();
    for item in items {
        let (title, text) = summary(&item.notification.alert);
        let a = &item.notification.alert;
        body.push_str(&format!("{title}\n{text}\n\nRaised {}", a.raised_at));
        if let (Some(by), Some(at)) = (&a.acknowledged_by, &a.acknowledged_at) {
            body.push_str(&format!("; acknowledged by {by} at {at}"));
        }
        if let Some(at) = &a.cleared_at {
            body.push_str(&format!("; recovered at {at}"));
        }
        body.push_str(".\n");
        if let Some(url) = &item.ack_url {
            body.push_str(&format!("Acknowledge: {url}\n"));
        }
        body.push_str(&format!(
            "Idempotency key: {}\n\n",
            item.notification.idempotency_key
        ));
    }
    Email {
        subject: subject
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect(),
        body,
        message_id: format!("<{}@pressline>", keys.join(".").replace(':', "-")),
    }
}

fn webhook_item(item: &Outgoing<'_>) -> Value {
    let n = item.notification;
    let (title, text) = summary(&n.alert);
    json!({
        "schema": NOTIFICATION_SCHEMA,
        "idempotency_key": n.idempotency_key,
        "channel": n.channel,
        "event": n.alert.event,
        "title": title,
        "text": text,
        "ack_url": item.ack_url,
        "alert": n.alert,
    })
}

/// One document per notification; several as `{"notifications": [...]}`
/// (the generic webhook is never coalesced, but the shape allows it).
fn webhook(items: &[Outgoing<'_>]) -> Value {
    match items {
        [one] => webhook_item(one),
        many => json!({
            "schema": NOTIFICATION_SCHEMA,
            "notifications": many.iter().map(webhook_item).collect::<Vec<_>>(),
        }),
    }
}

fn digest_title(items: &[Outgoing<'_>]) -> String {
    let site = items
        .first()
        .map(|i| i.notification.alert.site.as_str())
        .unwrap_or("");
    format!("{} alert updates at {site}", items.len())
}

fn slack(items: &[Outgoing<'_>]) -> Value {
    let mut blocks = Vec::new();
    let mut plain = Vec::new();
    if items.len() > 1 {
        let t = digest_title(items);
        blocks.push(json!({"type": "header", "text": {"type": "plain_text", "text": t}}));
        plain.push(t);
    }
    for item in items {
        let (title, text) = summary(&item.notification.alert);
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!("*{}*\n{}", slack_escape(&title), slack_escape(&text))},
        }));
        if let Some(url) = &item.ack_url {
            blocks.push(json!({
                "type": "actions",
                "elements": [{
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Acknowledge"},
                    "style": "primary",
                    "url": url,
                }],
            }));
        }
        // The idempotency key, small, as a reference to quote.
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("ref {}", item.notification.idempotency_key)}],
        }));
        plain.push(format!("{title}: {text}"));
    }
    json!({ "text": plain.join("\n"), "blocks": blocks })
}

/// Slack's three control characters in mrkdwn.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn teams(items: &[Outgoing<'_>]) -> Value {
    let mut body = Vec::new();
    let mut actions = Vec::new();
    if items.len() > 1 {
        body.push(json!({"type": "TextBlock", "size": "Large", "weight": "Bolder", "text": digest_title(items), "wrap": true}));
    }
    for item in items {
        let (title, text) = summary(&item.notification.alert);
        body.push(json!({"type": "TextBlock", "size": "Medium", "weight": "Bolder", "text": title, "wrap": true}));
        body.push(json!({"type": "TextBlock", "text": text, "wrap": true}));
        body.push(json!({"type": "TextBlock", "text": format!("ref {}", item.notification.idempotency_key), "isSubtle": true, "size": "Small", "wrap": true}));
        if let Some(url) = &item.ack_url {
            let label = if items.len() > 1 {
                format!("Acknowledge alert {}", item.notification.alert.id)
            } else {
                "Acknowledge".to_string()
            };
            actions.push(json!({"type": "Action.OpenUrl", "title": label, "url": url}));
        }
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions,
            },
        }],
    })
}

/// ntfy's JSON publishing: `POST` to the server's root with the topic in
/// the body (headers cannot carry every character of a zone's name).
fn ntfy(topic_url: &str, items: &[Outgoing<'_>]) -> (String, Value) {
    let (base, topic) = match url::Url::parse(topic_url) {
        Ok(mut u) => {
            let topic = u
                .path_segments()
                .and_then(|mut s| s.next_back().map(str::to_string))
                .unwrap_or_default();
            u.set_path("/");
            u.set_query(None);
            (u.to_string(), topic)
        }
        Err(_) => (topic_url.to_string(), String::new()),
    };
    let first = &items[0].notification.alert;
    let (title, message) = if items.len() == 1 {
        summary(first)
    } else {
        (
            digest_title(items),
            items
                .iter()
                .map(|i| {
                    let (t, x) = summary(&i.notification.alert);
                    format!("{t}: {x}")
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    let actions: Vec<Value> = items
        .iter()
        .filter_map(|i| i.ack_url.as_ref().map(|u| (i, u)))
        .take(3) // ntfy shows at most three actions
        .map(|(i, url)| {
            let label = if items.len() > 1 {
                format!("Acknowledge {}", i.notification.alert.id)
            } else {
                "Acknowledge".into()
            };
            json!({"action": "view", "label": label, "url": url, "clear": true})
        })
        .collect();
    let top = items
        .iter()
        .map(|i| priority(&i.notification.alert))
        .max()
        .unwrap_or(3);
    (
        base,
        json!({
            "topic": topic,
            "title": title,
            "message": message,
            "priority": top,
            "tags": [tag(first)],
            "actions": actions,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::lifecycle;

    fn notification(event: AlertEvent) -> Notification {
        let mut alert = Alert {
            schema: "pressline.alert.v1".into(),
            id: 7,
            site: "arena".into(),
            kind: AlertKind::ZoneUnhappy,
            severity: Severity::Critical,
            zone: Some("food".into()),
            raised_at: "2026-11-30T12:00:00.000Z".into(),
            detail: "North stand food court: 62% unhappy of 40 presses in 5 min".into(),
            ..Alert::default()
        };
        lifecycle::start(&mut alert);
        if event == AlertEvent::Acknowledged {
            lifecycle::acknowledge(&mut alert, 1_796_040_060_000, "Anna", Some("on my way"))
                .unwrap();
        }
        Notification {
            channel: "floor".into(),
            idempotency_key: alert.transition_key(),
            alert,
        }
    }

    fn body(p: &Post) -> Value {
        serde_json::from_slice(&p.body).unwrap()
    }

    const LINK: &str = "https://gw.example/ack/7?exp=1&sig=ab";

    #[test]
    fn the_generic_webhook_carries_the_key_the_text_the_link_and_the_alert() {
        let n = notification(AlertEvent::Raised);
        let p = render(
            ChannelKind::Webhook,
            "http://127.0.0.1:9/hook",
            &[Outgoing {
                notification: &n,
                ack_url: Some(LINK.into()),
            }],
        );
        assert_eq!(p.url, "http://127.0.0.1:9/hook");
        assert_eq!(p.headers, [("Idempotency-Key", "arena:7:1".to_string())]);
        let b = body(&p);
        assert_eq!(b["schema"], NOTIFICATION_SCHEMA);
        assert_eq!(b["idempotency_key"], "arena:7:1");
        assert_eq!(b["event"], "raised");
        assert_eq!(b["title"], "Unhappy zone at arena");
        assert_eq!(
            b["text"],
            "North stand food court: 62% unhappy of 40 presses in 5 min"
        );
        assert_eq!(b["ack_url"], LINK);
        assert_eq!(b["alert"]["zone"], "food");
        assert_eq!(b["alert"]["lifecycle"], "raised");
    }

    #[test]
    fn slack_gets_text_blocks_and_an_acknowledge_button() {
        let n = notification(AlertEvent::Raised);
        let b = body(&render(
            ChannelKind::Slack,
            "https://hooks.slack.com/x",
            &[Outgoing {
                notification: &n,
                ack_url: Some(LINK.into()),
            }],
        ));
        assert!(b["text"]
            .as_str()
            .unwrap()
            .starts_with("Unhappy zone at arena: North stand"));
        assert_eq!(b["blocks"][1]["elements"][0]["url"], LINK);
        let ack = notification(AlertEvent::Acknowledged);
        let b = body(&render(
            ChannelKind::Slack,
            "https://hooks.slack.com/x",
            &[Outgoing {
                notification: &ack,
                ack_url: None,
            }],
        ));
        assert_eq!(
            b["text"],
            "Acknowledged by Anna at arena: North stand food court: 62% unhappy of 40 presses in 5 min (note: on my way)"
        );
        let blocks = b["blocks"].as_array().unwrap();
        assert!(
            blocks.iter().all(|b| b["type"] != "actions"),
            "no button once acknowledged"
        );
        assert_eq!(
            blocks.last().unwrap()["elements"][0]["text"],
            "ref arena:7:2"
        );
    }

    #[test]
    fn teams_gets_an_adaptive_card() {
        let n = notification(AlertEvent::Raised);
        let b = body(&render(
            ChannelKind::Teams,
            "https://x.webhook.office.com/y",
            &[Outgoing {
                notification: &n,
                ack_url: Some(LINK.into()),
            }],
        ));
        let card = &b["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(card["content"]["actions"][0]["type"], "Action.OpenUrl");
        assert_eq!(card["content"]["actions"][0]["url"], LINK);
    }

    #[test]
    fn ntfy_publishes_json_to_the_server_root_with_the_topic_inside() {
        let n = notification(AlertEvent::Raised);
        let p = render(
            ChannelKind::Ntfy,
            "https://ntfy.sh/arena-floor",
            &[Outgoing {
                notification: &n,
                ack_url: Some(LINK.into()),
            }],
        );
        assert_eq!(p.url, "https://ntfy.sh/");
        let b = body(&p);
        assert_eq!(b["topic"], "arena-floor");
        assert_eq!(b["priority"], 5);
        assert_eq!(b["tags"][0], "rotating_light");
        assert_eq!(b["actions"][0]["action"], "view");
        assert_eq!(b["actions"][0]["url"], LINK);
    }

    #[test]
    fn an_email_has_the_headline_as_subject_the_link_and_a_stable_message_id() {
        let n = notification(AlertEvent::Raised);
        let e = email(&[Outgoing {
            notification: &n,
            ack_url: Some(LINK.into()),
        }]);
        assert_eq!(
            e.subject,
            "Unhappy zone at arena: North stand food court: 62% unhappy of 40 presses in 5 min"
        );
        assert!(
            e.body.contains(&format!("Acknowledge: {LINK}\n")),
            "{}",
            e.body
        );
        assert!(e.body.contains("Idempotency key: arena:7:1"), "{}", e.body);
        assert_eq!(e.message_id, "<arena-7-1@pressline>");
    }

    #[test]
    fn a_digest_names_every_alert_and_carries_every_key() {
        let a = notification(AlertEvent::Raised);
        let mut b = notification(AlertEvent::Raised);
        b.alert.id = 8;
        b.idempotency_key = "arena:8:1".into();
        let items = [
            Outgoing {
                notification: &a,
                ack_url: None,
            },
            Outgoing {
                notification: &b,
                ack_url: None,
            },
        ];
        let p = render(ChannelKind::Ntfy, "https://ntfy.sh/t", &items);
        assert_eq!(p.headers[0].1, "arena:7:1,arena:8:1");
        let v = body(&p);
        assert_eq!(v["title"], "2 alert updates at arena");
        assert_eq!(v["message"].as_str().unwrap().lines().count(), 2);
        let s = body(&render(
            ChannelKind::Slack,
            "https://hooks.slack.com/x",
            &items,
        ));
        assert_eq!(s["blocks"][0]["type"], "header");
    }
}
