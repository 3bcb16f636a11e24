//! One channel's delivery task: each round reads the channel's part of
//! the queue, lets [`super::queue`] decide, sends on a blocking thread and
//! records the answer. Store writes (a removal is flushed) run on blocking
//! threads too, so no fsync happens on an async worker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::queue::{plan_round, record_failure, Message, Outcome, Policy, Queued};
use super::{send, Channel, ChannelStatus, Notifier};
use crate::alerting::channels::{render, Outgoing};
use crate::clock::{rfc3339_ms, unix_ms_now};
use crate::store::{Store, StoreError};

/// The task of the channel `name`.
pub(super) struct Worker {
    pub name: String,
    pub channel: Channel,
    pub notifier: Notifier,
    pub store: Store,
    /// Rung when notifications are queued (a permit is kept while busy).
    pub wake: Arc<Notify>,
}

/// A round also starts this often without a wake-up: retries fall due.
const TICK: Duration = Duration::from_secs(1);

impl Worker {
    /// Rounds until shutdown; a round in flight is abandoned at shutdown
    /// (what it sent but did not remove goes again, same idempotency key).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.round() => {}
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn round(&self) {
        let policy = Policy::new(&self.notifier.config);
        let queue = match self.read_queue().await {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(channel = %self.name, error = %e, "cannot read the notification queue");
                return;
            }
        };
        let round = plan_round(self.channel.kind, queue, unix_ms_now(), &policy);
        self.drop_expired(round.expired).await;
        self.update_status(|s| {
            s.pending = round.pending;
            s.parked = round.parked;
        });
        let mut line_held = false;
        for message in round.messages {
            if line_held && message.in_line {
                continue;
            }
            let outcome = self.send(&message).await;
            line_held |= self.record(message, outcome, &policy).await;
        }
    }

    /// This channel's notifications, oldest first (unreadable ones are the
    /// janitor's).
    async fn read_queue(&self) -> Result<Vec<(u64, Queued)>, StoreError> {
        let store = self.store.clone();
        let all = blocking(move || store.queued_notifications()).await?;
        Ok(all
            .into_iter()
            .filter_map(|(key, bytes)| Some((key, serde_json::from_slice::<Queued>(&bytes).ok()?)))
            .filter(|(_, q)| q.notification.channel == self.name)
            .collect())
    }

    async fn drop_expired(&self, expired: Vec<(u64, Queued)>) {
        if expired.is_empty() {
            return;
        }
        for (_, q) in &expired {
            tracing::error!(channel = %self.name, key = %q.notification.idempotency_key, attempts = q.attempts, parked = q.parked, last_error = ?q.last_error, "notification given up: undelivered for too long");
        }
        let keys: Vec<u64> = expired.iter().map(|(k, _)| *k).collect();
        let store = self.store.clone();
        match blocking(move || store.remove_notifications(&keys)).await {
            Ok(()) => self.update_status(|s| s.dropped += expired.len() as u64),
            Err(e) => {
                tracing::warn!(channel = %self.name, error = %e, "cannot remove given-up notifications")
            }
        }
    }

    /// One message, rendered now (an acknowledge link is signed for now).
    async fn send(&self, message: &Message) -> Outcome {
        let now = unix_ms_now();
        let items: Vec<Outgoing<'_>> = message
            .items
            .iter()
            .map(|(_, q)| Outgoing {
                notification: &q.notification,
                ack_url: self.notifier.ack_url(&q.notification, now),
            })
            .collect();
        let channel = self.channel.clone();
        let timeout = Duration::from_secs(self.notifier.config.timeout_secs.max(1));
        let sending = if channel.kind.is_http() {
            let post = render(channel.kind, &channel.url, &items);
            tokio::task::spawn_blocking(move || {
                send::post_once(&post, channel.token.as_deref(), timeout)
            })
        } else {
            let mail = crate::alerting::channels::email(&items);
            tokio::task::spawn_blocking(move || send::mail_once(&channel, &mail, timeout))
        };
        sending
            .await
            .unwrap_or_else(|e| Outcome::Failed(format!("delivery thread failed: {e}")))
    }

    /// Saves what `outcome` did to `message`; true when the channel's line
    /// must wait.
    async fn record(&self, message: Message, outcome: Outcome, policy: &Policy) -> bool {
        match &outcome {
            Outcome::Delivered => {
                self.record_delivered(message).await;
                false
            }
            Outcome::Rejected(error) | Outcome::Failed(error) => {
                let error = error.clone();
                let retry = record_failure(message, &outcome, unix_ms_now(), policy);
                let store = self.store.clone();
                let updated = retry.updated;
                let saved = blocking(move || {
                    updated
                        .iter()
                        .try_for_each(|(key, q)| store.update_notification(*key, q))
                })
                .await;
                if let Err(e) = saved {
                    tracing::warn!(channel = %self.name, error = %e, "cannot record a failed notification attempt");
                }
                self.update_status(|s| {
                    s.failed_attempts += 1;
                    s.failing = true;
                    s.last_error = Some(error.clone());
                    s.last_error_at = Some(rfc3339_ms(unix_ms_now()));
                    s.pending = s.pending.saturating_sub(retry.newly_parked);
                    s.parked += retry.newly_parked;
                });
                if retry.newly_parked > 0 {
                    tracing::error!(channel = %self.name, notifications = retry.newly_parked, %error, "notification parked: the receiver rejects it; the channel's later notifications go on");
                } else {
                    tracing::warn!(channel = %self.name, %error, "alert notification not delivered; will retry");
                }
                retry.holds_line
            }
        }
    }

    async fn record_delivered(&self, message: Message) {
        let keys = message.keys();
        let store = self.store.clone();
        if let Err(e) = blocking(move || store.remove_notifications(&keys)).await {
            tracing::warn!(channel = %self.name, error = %e, "cannot remove delivered notifications (they may be sent again, same idempotency key)");
        }
        let parked = message.items.iter().filter(|(_, q)| q.parked).count() as u64;
        let in_line = message.items.len() as u64 - parked;
        self.update_status(|s| {
            s.delivered += 1;
            s.pending = s.pending.saturating_sub(in_line);
            s.parked = s.parked.saturating_sub(parked);
            s.failing = false;
            s.last_delivered_at = Some(rfc3339_ms(unix_ms_now()));
        });
        tracing::info!(channel = %self.name, notifications = message.items.len(), "alert notification delivered");
    }

    fn update_status(&self, change: impl FnOnce(&mut ChannelStatus)) {
        if let Some(s) = self.notifier.status_mut().get_mut(&self.name) {
            change(s);
        }
    }
}

/// A store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(call)
        .await
        .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("store thread failed: {e}"))))
}
