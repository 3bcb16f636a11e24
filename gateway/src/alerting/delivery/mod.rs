//! Delivery of queued notifications: the I/O edge of alerting.
//!
//! Notifications are queued in the store with the alert transition that
//! caused them ([`crate::store::Store::save_alert_transition`]). Each
//! channel has a task of its own ([`worker`]), so a slow, dead or
//! rejecting receiver delays only itself: it sends what is due, in order,
//! each request bounded by `delivery.timeout_secs` on a blocking thread. A
//! notification leaves the queue (flushed) once its receiver answered 2xx;
//! otherwise it is retried with doubling backoff, parked if the receiver
//! rejects it for good ([`queue`]), and dropped after
//! `give_up_after_hours`. A crash between a receiver's answer and the
//! removal sends it again with the same `Idempotency-Key`, so receivers
//! that keep keys see each transition once.
//!
//! # Layout
//! - [`queue`]: one channel's queue as decisions (order, digests, backoff,
//!   parking, giving up), without I/O.
//! - [`worker`]: a channel's task: read, send, record.
//! - [`send`]: one request or e-mail and how its answer sorts.

mod queue;
mod send;
mod worker;

pub use queue::{Queued, PARK_AFTER};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use pressline_host::sync::LockExt;
use pressline_protocol::upstream::AlertEvent;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use super::config::{AlertingConfig, ChannelKind, DeliveryConfig};
use super::links::LinkSigner;
use super::routing::Notification;
use crate::store::{Store, StoreError};

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
    /// Notifications waiting in line.
    pub pending: u64,
    /// Notifications the receiver rejected for good (HTTP 400/413/415/422,
    /// SMTP 5xx) [`PARK_AFTER`] times: out of line, retried slowly.
    #[serde(default)]
    pub parked: u64,
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

/// How often notifications nobody will send (a channel removed from the
/// configuration, an unreadable record) are cleared from the queue.
const JANITOR_EVERY: Duration = Duration::from_secs(60);

/// Runs until shutdown: a task per channel, woken together when the
/// registry queues notifications.
pub async fn run(notifier: Notifier, store: Store, mut shutdown: watch::Receiver<bool>) {
    if notifier.channels.is_empty() {
        return;
    }
    let wakes: Vec<Arc<Notify>> = notifier
        .channels
        .iter()
        .map(|(name, channel)| {
            let wake = Arc::new(Notify::new());
            let worker = worker::Worker {
                name: name.clone(),
                channel: channel.clone(),
                notifier: notifier.clone(),
                store: store.clone(),
                wake: wake.clone(),
            };
            tokio::spawn(worker.run(shutdown.clone()));
            wake
        })
        .collect();
    let mut janitor = tokio::time::interval(JANITOR_EVERY);
    loop {
        tokio::select! {
            _ = notifier.wake.notified() => {
                // `notify_one` keeps a permit for a worker busy sending.
                wakes.iter().for_each(|w| w.notify_one());
            }
            _ = janitor.tick() => clear_unsendable(&notifier, &store).await,
            _ = shutdown.changed() => return,
        }
    }
}

/// Removes queued notifications no channel task will ever look at.
async fn clear_unsendable(notifier: &Notifier, store: &Store) {
    let channels = notifier.channels.clone();
    let store = store.clone();
    let cleared = tokio::task::spawn_blocking(move || -> Result<usize, StoreError> {
        let mut unsendable = Vec::new();
        for (key, bytes) in store.queued_notifications()? {
            match serde_json::from_slice::<Queued>(&bytes) {
                Ok(q) if channels.contains_key(&q.notification.channel) => {}
                Ok(q) => {
                    tracing::warn!(channel = %q.notification.channel, key = %q.notification.idempotency_key, "notification for a channel no longer configured removed");
                    unsendable.push(key);
                }
                Err(e) => {
                    tracing::error!(error = %e, key, "unreadable queued notification removed");
                    unsendable.push(key);
                }
            }
        }
        store.remove_notifications(&unsendable)?;
        Ok(unsendable.len())
    })
    .await;
    match cleared {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot clear unsendable notifications"),
        Err(e) => tracing::warn!(error = %e, "the notification janitor failed"),
    }
}
