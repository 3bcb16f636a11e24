//! Upstream messages planned from outbox entries, and their documents
//! (pure): one press per message on its terminal's topic, or presses that
//! are ready together as one `pressline.press_batch.v1`.

use std::sync::Arc;

use pressline_protocol::topic::{UpstreamPressBatchTopic, UpstreamPressTopic};
use pressline_protocol::upstream::{
    press_id, PressBatch, UpstreamPress, PRESS_BATCH_SCHEMA, PRESS_SCHEMA,
};

use super::{ForwarderConfig, Handed};
use crate::clock::rfc3339_ms;
use crate::store::{LoggedPress, OutboxItem};

/// One upstream message, planned from outbox entries.
#[derive(Debug)]
pub(super) enum Planned {
    /// One entry: a press on its terminal's topic, or a stored document.
    One {
        entry: (u64, bool),
        item: OutboxItem,
    },
    /// Presses as one `pressline.press_batch.v1` document.
    Presses {
        entries: Vec<(u64, bool)>,
        presses: Vec<(Arc<str>, LoggedPress)>,
    },
}

impl Planned {
    /// `(outbox key, is live)` of what the message carries.
    pub(super) fn entries(&self) -> &[(u64, bool)] {
        match self {
            Planned::One { entry, .. } => std::slice::from_ref(entry),
            Planned::Presses { entries, .. } => entries,
        }
    }

    pub(super) fn handed(&self) -> Handed {
        match self {
            Planned::One { entry, item } => Handed {
                keys: vec![entry.0],
                presses: u64::from(item.is_press()),
            },
            Planned::Presses { entries, .. } => Handed {
                keys: entries.iter().map(|e| e.0).collect(),
                presses: entries.len() as u64,
            },
        }
    }
}

/// Groups outbox entries `(key, is live, item)`, in the order they are to
/// go, into at most `messages` upstream messages: presses `per_message` at
/// a time (consecutive ones; a document in between goes on its own), or
/// one message each when `per_message` is 1. Entries beyond are left for
/// the next round.
pub(super) fn plan_messages(
    entries: impl IntoIterator<Item = (u64, bool, OutboxItem)>,
    per_message: usize,
    messages: usize,
) -> Vec<Planned> {
    let mut planned: Vec<Planned> = Vec::new();
    for (key, is_live, item) in entries {
        let item = match item {
            OutboxItem::Press { terminal, press } if per_message > 1 => {
                if let Some(Planned::Presses { entries, presses }) = planned.last_mut() {
                    if presses.len() < per_message {
                        entries.push((key, is_live));
                        presses.push((terminal, press));
                        continue;
                    }
                }
                if planned.len() == messages {
                    break;
                }
                planned.push(Planned::Presses {
                    entries: vec![(key, is_live)],
                    presses: vec![(terminal, press)],
                });
                continue;
            }
            item => item,
        };
        if planned.len() == messages {
            break;
        }
        planned.push(Planned::One {
            entry: (key, is_live),
            item,
        });
    }
    planned
}

/// The topic, payload and retain flag of a planned message.
pub(super) fn render(config: &ForwarderConfig, message: &Planned) -> (String, Vec<u8>, bool) {
    let site = &config.site;
    let zone_of = |terminal: &str| config.zone_of.get(terminal).map(String::as_str);
    match message {
        Planned::One {
            item: OutboxItem::Press { terminal, press },
            ..
        } => {
            let (topic, payload) = press_document(site, terminal, zone_of(terminal), press);
            (topic, payload, false)
        }
        Planned::One {
            item: OutboxItem::Document(d),
            ..
        } => (d.topic.clone(), d.payload.clone(), d.retain),
        Planned::Presses { presses, .. } => {
            let batch = PressBatch {
                schema: PRESS_BATCH_SCHEMA.into(),
                site: site.clone(),
                presses: presses
                    .iter()
                    .map(|(terminal, press)| {
                        upstream_press(site, terminal, zone_of(terminal), press)
                    })
                    .collect(),
            };
            let payload = serde_json::to_vec(&batch).unwrap_or_else(|e| {
                // Structs of strings and numbers always serialize.
                tracing::error!(error = %e, "cannot render a press batch");
                Vec::new()
            });
            (UpstreamPressBatchTopic(site).to_string(), payload, false)
        }
    }
}

/// The `pressline.press.v1` document of a stored press, and its topic:
/// rendered when it is sent, so the store keeps a dozen bytes a press
/// rather than the document.
pub fn press_document(
    site: &str,
    terminal: &str,
    zone: Option<&str>,
    press: &LoggedPress,
) -> (String, Vec<u8>) {
    let document = upstream_press(site, terminal, zone, press);
    let payload = serde_json::to_vec(&document).unwrap_or_else(|e| {
        // A struct of strings and numbers always serializes.
        tracing::error!(error = %e, "cannot render a press document");
        Vec::new()
    });
    (UpstreamPressTopic { site, terminal }.to_string(), payload)
}

/// A stored press as its upstream document.
fn upstream_press(
    site: &str,
    terminal: &str,
    zone: Option<&str>,
    press: &LoggedPress,
) -> UpstreamPress {
    UpstreamPress {
        schema: PRESS_SCHEMA.into(),
        id: press_id(site, terminal, press.id()),
        site: site.to_string(),
        terminal: terminal.to_string(),
        boot: press.boot,
        seq: press.seq,
        button: press.button.name().into(),
        score: press.button.score(),
        pressed_at: press.pressed_at_ms.map(rfc3339_ms),
        received_at: rfc3339_ms(press.received_at_ms),
        counted: press.counted,
        not_counted_reason: press.reason.map(|r| r.reason().to_string()),
        zone: zone.map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pressline_protocol::Button;
    use std::time::Duration;

    fn press(seq: u32) -> OutboxItem {
        OutboxItem::Press {
            terminal: Arc::from("n7"),
            press: LoggedPress {
                boot: 3,
                seq,
                button: Button::Happy,
                received_at_ms: 1_795_000_000_000,
                pressed_at_ms: None,
                counted: true,
                reason: None,
            },
        }
    }

    fn health() -> OutboxItem {
        OutboxItem::Document(crate::store::OutboxEntry {
            topic: "pressline/v1/arena/n7/health".into(),
            payload: b"{}".to_vec(),
            retain: true,
            is_press: false,
        })
    }

    fn config(press_batch: u16) -> ForwarderConfig {
        ForwarderConfig {
            site: "arena".into(),
            addrs: Vec::new(),
            client_id: "gw".into(),
            credentials: None,
            tls: None,
            keep_alive: Duration::from_secs(30),
            max_inflight: 10,
            press_batch,
            zone_of: [("n7".to_string(), "food".to_string())].into(),
            zones: Vec::new(),
            time_zone: None,
        }
    }

    fn keys(plan: &[Planned]) -> Vec<Vec<u64>> {
        plan.iter().map(|m| m.handed().keys).collect()
    }

    #[test]
    fn without_batching_every_entry_is_its_own_message_up_to_the_window() {
        let entries = (1..=5).map(|k| (k, true, press(k as u32)));
        let plan = plan_messages(entries, 1, 3);
        assert_eq!(keys(&plan), [vec![1], vec![2], vec![3]]);
        let (topic, payload, retain) = render(&config(1), &plan[0]);
        assert_eq!(topic, "pressline/v1/arena/n7/press");
        assert!(!retain);
        let doc: UpstreamPress = serde_json::from_slice(&payload).unwrap();
        assert_eq!(doc.id, "arena:n7:3:1");
        assert_eq!(doc.zone.as_deref(), Some("food"));
    }

    #[test]
    fn presses_ready_together_go_as_batches_and_documents_keep_their_own_messages() {
        let entries = vec![
            (1, true, press(1)),
            (2, true, press(2)),
            (3, true, press(3)),
            (4, true, health()),
            (5, true, press(4)),
            (9, false, press(5)),
            (10, false, press(6)),
        ];
        let plan = plan_messages(entries, 2, 10);
        assert_eq!(
            keys(&plan),
            [vec![1, 2], vec![3], vec![4], vec![5, 9], vec![10]]
        );
        let handed = plan[0].handed();
        assert_eq!(handed.presses, 2);
        assert_eq!(plan[2].handed().presses, 0);
        // Live and backlog entries are told apart for the cursors.
        assert_eq!(plan[3].entries(), &[(5, true), (9, false)]);

        let (topic, payload, retain) = render(&config(2), &plan[0]);
        assert_eq!(topic, "pressline/v1/arena/presses");
        assert!(!retain);
        let batch: PressBatch = serde_json::from_slice(&payload).unwrap();
        assert_eq!(batch.schema, PRESS_BATCH_SCHEMA);
        assert_eq!(batch.site, "arena");
        let ids: Vec<&str> = batch.presses.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["arena:n7:3:1", "arena:n7:3:2"]);
        assert!(batch.presses.iter().all(|p| p.schema == PRESS_SCHEMA));
        let (topic, _, retain) = render(&config(2), &plan[2]);
        assert_eq!(topic, "pressline/v1/arena/n7/health");
        assert!(retain);
    }

    #[test]
    fn a_batch_stops_at_the_window_and_what_is_left_waits_for_the_next_round() {
        let entries = (1..=7).map(|k| (k, true, press(k as u32)));
        let plan = plan_messages(entries, 3, 2);
        assert_eq!(keys(&plan), [vec![1, 2, 3], vec![4, 5, 6]]);
        assert!(plan_messages(Vec::new(), 3, 2).is_empty());
    }
}
