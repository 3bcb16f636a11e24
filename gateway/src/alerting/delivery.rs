//! Delivery of queued notifications: the I/O edge of alerting.
//!
//! Notifications are queued in the store with the alert transition that
//! caused them ([`crate::store::Store::save_alert_transition`]). This task
//! sends what is due, per channel and in order, each request bounded by
//! `delivery.timeout_secs` on a blocking thread of its own, so a slow or
//! dead receiver never holds up presses, other channels or the registry.
//! A notification leaves the queue (flushed) once its receiver answered
//! 2xx; otherwise it is retried with doubling backoff until
//! `give_up_after_hours`. A crash between a receiver's answer and the
//! removal sends it again with the same `Idempotency-Key`, so receivers
//! that keep keys see each transition once.

use pressline_host::sync::LockExt;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use pressline_protocol::backoff::Backoff;
use pressline_protocol::upstream::AlertEvent;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use super::channels::{render, Outgoing, Post};
use super::config::{AlertingConfig, ChannelKind, DeliveryConfig};
use super::links::LinkSigner;
use super::routing::Notification;
use crate::clock::{rfc3339_ms, unix_ms_now};
use crate::store::Store;

/// A notification in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub notification: Notification,
    pub created_ms: i64,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
}

impl Queued {
    pub fn new(notification: Notification, now_ms: i64) -> Queued {
        Queued {
            notification,
            created_ms: now_ms,
            attempts: 0,
            next_attempt_ms: now_ms,
            last_error: None,
        }
    }
}

/// One channel's delivery figures (stats, `/metrics`, `fleet status`,
/// the dashboard).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelStatus {
    pub channel: String,
    pub kind: String,
    /// Requests answered 2xx (a digest counts once).
    pub delivered: u64,
    pub failed_attempts: u64,
    /// Given up after `give_up_after_hours`.
    pub dropped: u64,
    /// Notifications waiting.
    pub pending: u64,
    /// The last attempt failed and nothing was delivered since.
    pub failing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_at: Option<String>,
}

#[derive(Debug, Clone)]
struct Channel {
    kind: ChannelKind,
    url: String,
    token: Option<String>,
    /// E-mail channels.
    from: Option<String>,
    to: Vec<String>,
}

/// The channels, their figures, and the wake-up for new notifications.
#[derive(Clone)]
pub struct Notifier {
    channels: Arc<BTreeMap<String, Channel>>,
    status: Arc<Mutex<BTreeMap<String, ChannelStatus>>>,
    pub wake: Arc<Notify>,
    pub signer: LinkSigner,
    config: DeliveryConfig,
}

fn read_secret(path: &Path, what: &str) -> anyhow::Result<String> {
    crate::security::secret_files::refuse_world_readable(path, what)?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(!line.is_empty(), "{what} {} is empty", path.display());
    Ok(line)
}

impl Notifier {
    /// Resolves every channel's URL and token (files read now: a missing
    /// file is a start-up error, not a failure at the first alert).
    pub fn new(config: &AlertingConfig, signer: LinkSigner) -> anyhow::Result<Notifier> {
        let mut channels = BTreeMap::new();
        let mut status = BTreeMap::new();
        for (name, c) in &config.channels {
            let url = match (&c.url, &c.url_file) {
                (Some(url), _) => url.trim().to_string(),
                (None, Some(file)) => {
                    let url = read_secret(file, &format!("alerting.channels.{name}.url_file"))?;
                    super::config::check_channel_url(name, c.kind, &url)?;
                    url
                }
                (None, None) => anyhow::bail!("alerting.channels.{name}: no url"),
            };
            let token = c
                .token_file
                .as_deref()
                .map(|f| read_secret(f, &format!("alerting.channels.{name}.token_file")))
                .transpose()?;
            channels.insert(
                name.clone(),
                Channel {
                    kind: c.kind,
                    url,
                    token,
                    from: c.from.clone(),
                    to: c.to.clone(),
                },
            );
            status.insert(
                name.clone(),
                ChannelStatus {
                    channel: name.clone(),
                    kind: c.kind.name().into(),
                    ..ChannelStatus::default()
                },
            );
        }
        Ok(Notifier {
            channels: Arc::new(channels),
            status: Arc::new(Mutex::new(status)),
            wake: Arc::new(Notify::new()),
            signer,
            config: config.delivery.clone(),
        })
    }

    fn status_mut(&self) -> MutexGuard<'_, BTreeMap<String, ChannelStatus>> {
        self.status.locked()
    }

    /// Every channel's figures.
    pub fn status(&self) -> Vec<ChannelStatus> {
        self.status_mut().values().cloned().collect()
    }

    fn backoff_ms(&self, attempts: u32) -> i64 {
        let first = self.config.retry_min_secs.max(1).saturating_mul(1000);
        let max = self.config.retry_max_secs.saturating_mul(1000);
        Backoff::after_attempts(first, max, attempts).min(i64::MAX as u64) as i64
    }

    /// The acknowledge link, while the alert wants acknowledging.
    fn ack_url(&self, n: &Notification, now_ms: i64) -> Option<String> {
        let a = &n.alert;
        let wants = matches!(
            a.event,
            Some(AlertEvent::Raised | AlertEvent::Reopened | AlertEvent::Escalated)
        ) && a.acknowledged_at.is_none();
        wants
            .then(|| self.signer.link(a.id, &n.channel, now_ms))
            .flatten()
    }
}

/// Notifications in one digest message at most.
const DIGEST_MAX: usize = 10;

/// Runs until shutdown.
pub async fn run(notifier: Notifier, store: Store, mut shutdown: watch::Receiver<bool>) {
    if notifier.channels.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            _ = notifier.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        deliver_due(&notifier, &store).await;
    }
}

/// One round: everything due, channels in parallel.
async fn deliver_due(notifier: &Notifier, store: &Store) {
    let now = unix_ms_now();
    let queued = match store.queued_notifications() {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the notification queue");
            return;
        }
    };
    let give_up_ms = notifier.config.give_up_after_hours.max(1) as i64 * 3_600_000;
    let mut by_channel: BTreeMap<String, Vec<(u64, Queued)>> = BTreeMap::new();
    let mut abandoned = Vec::new();
    for (key, bytes) in queued {
        let q: Queued = match serde_json::from_slice(&bytes) {
            Ok(q) => q,
            Err(e) => {
                tracing::error!(error = %e, key, "unreadable queued notification removed");
                abandoned.push(key);
                continue;
            }
        };
        let channel = q.notification.channel.clone();
        if !notifier.channels.contains_key(&channel) {
            tracing::warn!(%channel, key = %q.notification.idempotency_key, "notification for a channel no longer configured removed");
            abandoned.push(key);
            continue;
        }
        if now - q.created_ms > give_up_ms {
            tracing::error!(%channel, key = %q.notification.idempotency_key, attempts = q.attempts, last_error = ?q.last_error, "notification given up: undelivered for too long");
            if let Some(s) = notifier.status_mut().get_mut(&channel) {
                s.dropped += 1;
            }
            abandoned.push(key);
            continue;
        }
        by_channel.entry(channel).or_default().push((key, q));
    }
    if let Err(e) = store.remove_notifications(&abandoned) {
        tracing::warn!(error = %e, "cannot remove abandoned notifications");
    }
    {
        let mut status = notifier.status_mut();
        for s in status.values_mut() {
            s.pending = by_channel.get(&s.channel).map_or(0, |q| q.len() as u64);
        }
    }
    let rounds = by_channel.into_iter().map(|(name, queue)| {
        let notifier = notifier.clone();
        let store = store.clone();
        async move { deliver_channel(&notifier, &store, &name, queue, now).await }
    });
    futures_join_all(rounds).await;
}

async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    while set.join_next().await.is_some() {}
}

/// A channel's due notifications, in order; the first failure stops the
/// round (later ones wait: a recovery never arrives before its alert).
async fn deliver_channel(
    notifier: &Notifier,
    store: &Store,
    name: &str,
    queue: Vec<(u64, Queued)>,
    now: i64,
) {
    let Some(channel) = notifier.channels.get(name).cloned() else {
        return;
    };
    // Only a prefix that is due: order is kept.
    let due: Vec<(u64, Queued)> = queue
        .into_iter()
        .take_while(|(_, q)| q.next_attempt_ms <= now)
        .collect();
    if due.is_empty() {
        return;
    }
    let batches = batches(channel.kind, due, notifier.config.coalesce_above);
    for batch in batches {
        let message = {
            let items: Vec<Outgoing<'_>> = batch
                .iter()
                .map(|(_, q)| Outgoing {
                    notification: &q.notification,
                    ack_url: notifier.ack_url(&q.notification, now),
                })
                .collect();
            if channel.kind.is_http() {
                Ok(render(channel.kind, &channel.url, &items))
            } else {
                Err(super::channels::email(&items))
            }
        };
        let timeout = Duration::from_secs(notifier.config.timeout_secs.max(1));
        let sending = channel.clone();
        let sent = tokio::task::spawn_blocking(move || match message {
            Ok(post) => post_once(&post, sending.token.as_deref(), timeout),
            Err(mail) => mail_once(&sending, &mail, timeout),
        })
        .await
        .unwrap_or_else(|e| Err(format!("delivery thread failed: {e}")));
        let keys: Vec<u64> = batch.iter().map(|(k, _)| *k).collect();
        match sent {
            Ok(()) => {
                if let Err(e) = store.remove_notifications(&keys) {
                    tracing::warn!(error = %e, "cannot remove delivered notifications (they may be sent again, same idempotency key)");
                }
                let mut status = notifier.status_mut();
                if let Some(s) = status.get_mut(name) {
                    s.delivered += 1;
                    s.pending = s.pending.saturating_sub(keys.len() as u64);
                    s.failing = false;
                    s.last_delivered_at = Some(rfc3339_ms(unix_ms_now()));
                }
                tracing::info!(channel = %name, notifications = keys.len(), "alert notification delivered");
            }
            Err(error) => {
                for (key, mut q) in batch {
                    q.attempts += 1;
                    q.next_attempt_ms = unix_ms_now() + notifier.backoff_ms(q.attempts);
                    q.last_error = Some(error.clone());
                    if let Err(e) = store.update_notification(key, &q) {
                        tracing::warn!(error = %e, "cannot record a failed notification attempt");
                    }
                }
                let mut status = notifier.status_mut();
                if let Some(s) = status.get_mut(name) {
                    s.failed_attempts += 1;
                    s.failing = true;
                    s.last_error = Some(error.clone());
                    s.last_error_at = Some(rfc3339_ms(unix_ms_now()));
                }
                tracing::warn!(channel = %name, %error, "alert notification not delivered; will retry");
                return;
            }
        }
    }
}

/// How due notifications go out: one request each, or (a burst on a
/// channel read by people) digests of at most [`DIGEST_MAX`]: Slack takes
/// 50 blocks a message, ntfy 4 KiB, Teams about 28 KiB.
fn batches<T>(kind: ChannelKind, due: Vec<T>, coalesce_above: usize) -> Vec<Vec<T>> {
    if kind.is_chat() && due.len() > coalesce_above.max(1) {
        let mut due = due.into_iter().peekable();
        let mut digests = Vec::new();
        while due.peek().is_some() {
            digests.push(due.by_ref().take(DIGEST_MAX).collect());
        }
        digests
    } else {
        due.into_iter().map(|d| vec![d]).collect()
    }
}

/// One e-mail through the relay; `Err` says why (never the relay URL: it
/// may hold credentials).
fn mail_once(
    channel: &Channel,
    mail: &super::channels::Email,
    timeout: Duration,
) -> Result<(), String> {
    use lettre::message::{header::ContentType, Mailbox};
    use lettre::Transport as _;
    let from: Mailbox = channel
        .from
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("bad sender address: {e}"))?;
    let mut message = lettre::Message::builder()
        .from(from)
        .subject(mail.subject.clone())
        .message_id(Some(mail.message_id.clone()))
        .header(ContentType::TEXT_PLAIN);
    for to in &channel.to {
        message = message.to(to
            .parse()
            .map_err(|e| format!("bad recipient {to:?}: {e}"))?);
    }
    let message = message
        .body(mail.body.clone())
        .map_err(|e| format!("cannot build the e-mail: {e}"))?;
    let transport = lettre::SmtpTransport::from_url(&channel.url)
        .map_err(|e| format!("unusable SMTP relay URL: {e}"))?
        .timeout(Some(timeout))
        .build();
    transport
        .send(&message)
        .map(drop)
        .map_err(|e| format!("the SMTP relay did not take the e-mail: {e}"))
}

/// One `POST`; `Err` says why in words for stats and logs.
fn post_once(post: &Post, token: Option<&str>, timeout: Duration) -> Result<(), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .user_agent(concat!("pressline-gateway/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut request = agent.post(&post.url).set("Content-Type", post.content_type);
    for (name, value) in &post.headers {
        request = request.set(name, value);
    }
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    match request.send_bytes(&post.body) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, response)) => {
            let body: String = response
                .into_string()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            Err(format!("HTTP {code} from the receiver: {}", body.trim()))
        }
        Err(ureq::Error::Transport(t)) => Err(format!("cannot reach the receiver: {t}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_on_chat_channels_become_digests_of_at_most_ten() {
        let sizes = |kind, n: usize| -> Vec<usize> {
            batches(kind, (0..n).collect(), 3)
                .iter()
                .map(Vec::len)
                .collect()
        };
        assert_eq!(
            sizes(ChannelKind::Slack, 3),
            [1, 1, 1],
            "at the limit: one each"
        );
        assert_eq!(sizes(ChannelKind::Ntfy, 4), [4]);
        assert_eq!(sizes(ChannelKind::Teams, 23), [10, 10, 3]);
        assert_eq!(sizes(ChannelKind::Email, 12), [10, 2]);
        assert_eq!(
            sizes(ChannelKind::Webhook, 5),
            [1, 1, 1, 1, 1],
            "machines get one each"
        );
        assert_eq!(
            batches(ChannelKind::Slack, (0..12).collect(), 3)[1],
            [10, 11],
            "in order"
        );
    }

    #[test]
    fn retries_back_off_by_doubling_up_to_the_limit() {
        let config = AlertingConfig::default();
        let n = Notifier::new(&config, LinkSigner::new("s", vec![0; 32], None, 1)).unwrap();
        let waits: Vec<i64> = (1..=10).map(|a| n.backoff_ms(a) / 1000).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
    }
}
