//! Group commit: store a batch of presses durably, then ack it.
//!
//! Runs on its own thread. It takes whatever the ingest thread has queued (up
//! to `commit_batch_max`), commits it in one transaction and one fsync, and
//! only then publishes the durable acks, one per contiguous run per terminal,
//! duplicates included (a duplicate means the terminal missed an earlier
//! ack). A storage error acks nothing: terminals keep the presses and resend.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pressline_protocol::topic::{AckJsonTopic, AckTopic, UpstreamPressTopic};
use pressline_protocol::upstream::{press_id, UpstreamPress, PRESS_SCHEMA};
use pressline_protocol::{ack::ACK_BUF_LEN, json};
use rumqttd::local::LinkTx;
use tokio::sync::{watch, Notify};

use crate::clock::rfc3339_ms;
use crate::insight::misuse::{MisuseFilter, NotCounted};
use crate::pipeline::acks::{coalesce, Form};
use crate::pipeline::ingest::IncomingPress;
use crate::stats::Stats;
use crate::store::{OutboxEntry, PressToStore, Store, StoreOutcome};
use crate::terminals::registry::FleetInput;

/// What the committer needs.
pub struct Committer {
    pub site: String,
    pub store: Store,
    pub stats: Arc<Stats>,
    pub link: LinkTx,
    pub batch_max: usize,
    pub max_disk_bytes: u64,
    /// Woken after new presses reach the outbox.
    pub forward_wake: Arc<Notify>,
    /// Decides which new presses count as opinions.
    pub misuse: MisuseFilter,
    /// (terminal, boot) → highest sequence number stored as new since start.
    pub high_water: std::collections::HashMap<(String, u32), u32>,
    /// Newly stored presses, for the terminal registry's rules.
    pub to_fleet: tokio::sync::mpsc::Sender<FleetInput>,
    pub shutdown: watch::Receiver<bool>,
}

impl Committer {
    /// Runs until shutdown, committing whatever is queued at that moment
    /// before returning.
    pub fn run(mut self, incoming: Receiver<IncomingPress>) {
        let mut last_disk_check = Instant::now() - Duration::from_secs(60);
        loop {
            if last_disk_check.elapsed() >= Duration::from_secs(1) {
                self.check_disk();
                last_disk_check = Instant::now();
            }
            let stopping = *self.shutdown.borrow();
            let first = match incoming.recv_timeout(Duration::from_millis(200)) {
                Ok(p) => p,
                Err(RecvTimeoutError::Timeout) if stopping => return,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = Vec::with_capacity(64);
            batch.push(first);
            while batch.len() < self.batch_max {
                match incoming.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn check_disk(&mut self) {
        let full = self.store.size_on_disk() > self.max_disk_bytes;
        let was = self.stats.storage_full.swap(full, Relaxed);
        if full && !was {
            tracing::error!(
                limit_mb = self.max_disk_bytes >> 20,
                "storage limit reached: new presses are refused, not acked (terminals keep and \
                 resend them); raise storage.max_disk_mb or free disk space and restart"
            );
        } else if was && !full {
            tracing::info!("storage below its limit again: accepting new presses");
        }
    }

    fn commit(&mut self, batch: Vec<IncomingPress>) {
        let storage_full = self.stats.storage_full.load(Relaxed);
        let mut offers = Vec::with_capacity(batch.len());
        let mut offered_from = Vec::with_capacity(batch.len());
        let mut in_batch = std::collections::HashSet::with_capacity(batch.len());
        for (i, incoming) in batch.iter().enumerate() {
            let fresh_in_batch = in_batch.insert((incoming.terminal.as_str(), incoming.press.id));
            // Terminals number presses in order: past the highest new press
            // seen for this terminal and boot, a press cannot be stored yet,
            // so the lookup is only needed for resends and after a restart.
            let above_high_water = self
                .high_water
                .get(&(incoming.terminal.clone(), incoming.press.id.boot))
                .is_some_and(|&hw| incoming.press.id.seq > hw);
            let known = !fresh_in_batch
                || (!above_high_water
                    && matches!(
                        self.store.press(&incoming.terminal, incoming.press.id),
                        Ok(Some(_))
                    ));
            if storage_full && !known {
                // Only presses we already have may be acked now.
                self.stats
                    .presses_refused_storage_full
                    .fetch_add(1, Relaxed);
                continue;
            }
            // Only new presses reach the misuse filter: a resend is not a
            // second press.
            let verdict = if known {
                None
            } else {
                let at = pressed_at(incoming).unwrap_or(incoming.received_at_ms);
                self.misuse.classify(&incoming.terminal, at)
            };
            offers.push(self.to_store(incoming, verdict));
            offered_from.push(i);
        }
        if offers.is_empty() {
            return;
        }
        let outcomes = match self.store.commit(&offers) {
            Ok(o) => o,
            Err(e) => {
                self.stats.storage_errors.fetch_add(1, Relaxed);
                tracing::error!(error = %e, presses = offers.len(), "commit failed; nothing acked, terminals will resend");
                return;
            }
        };
        self.stats.commit_batches.fetch_add(1, Relaxed);
        let stored = outcomes
            .iter()
            .filter(|o| **o == StoreOutcome::Stored)
            .count() as u64;
        self.stats.presses_stored.fetch_add(stored, Relaxed);
        self.stats
            .presses_duplicate
            .fetch_add(outcomes.len() as u64 - stored, Relaxed);
        if stored > 0 {
            self.stats.forward_pending.fetch_add(stored as i64, Relaxed);
            self.forward_wake.notify_one();
            let now = crate::clock::unix_ms_now();
            let day = crate::clock::utc_day(now);
            match self.store.count_stored_on(day, stored) {
                Ok(total) => self.stats.set_today(day, total),
                Err(e) => tracing::warn!(error = %e, "cannot update the daily press count"),
            }
            for (offer, outcome) in offers.iter().zip(&outcomes) {
                if *outcome == StoreOutcome::Stored {
                    let hw = self
                        .high_water
                        .entry((offer.terminal.clone(), offer.id.boot))
                        .or_insert(offer.id.seq);
                    *hw = (*hw).max(offer.id.seq);
                    let _ = self.to_fleet.try_send(FleetInput::Press {
                        terminal: offer.terminal.clone(),
                        button: offer.button,
                        at_ms: offer.received_at_ms,
                        pressed_at_ms: offer.pressed_at_ms.unwrap_or(offer.received_at_ms),
                        counted: offer.counted,
                    });
                }
            }
        }

        let committed = offered_from.iter().map(|&i| {
            let p = &batch[i];
            (p.terminal.as_str(), p.form, p.press.id)
        });
        for (terminal, form, ack) in coalesce(committed) {
            let sent = match form {
                Form::Native => {
                    let mut buf = [0u8; ACK_BUF_LEN];
                    match ack.encode(&mut buf) {
                        Ok(bytes) => self
                            .link
                            .publish(AckTopic(terminal).to_string(), bytes.to_vec()),
                        Err(_) => continue,
                    }
                }
                Form::Json => self
                    .link
                    .publish(AckJsonTopic(terminal).to_string(), json::encode_ack(&ack)),
            };
            match sent {
                Ok(_) => {
                    self.stats.acks_sent.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    // The presses are stored; the terminal's resend will be
                    // acked as a duplicate.
                    tracing::warn!(error = ?e, terminal, "could not publish ack");
                }
            }
        }
    }

    fn to_store(&self, incoming: &IncomingPress, not_counted: Option<NotCounted>) -> PressToStore {
        let pressed_at_ms = pressed_at(incoming);
        let upstream = UpstreamPress {
            schema: PRESS_SCHEMA.into(),
            id: press_id(&self.site, &incoming.terminal, incoming.press.id),
            site: self.site.clone(),
            terminal: incoming.terminal.clone(),
            boot: incoming.press.id.boot,
            seq: incoming.press.id.seq,
            button: incoming.press.button.name().into(),
            score: incoming.press.button.score(),
            pressed_at: pressed_at_ms.map(rfc3339_ms),
            received_at: rfc3339_ms(incoming.received_at_ms),
            counted: not_counted.is_none(),
            not_counted_reason: not_counted.map(|n| n.reason().to_string()),
        };
        PressToStore {
            terminal: incoming.terminal.clone(),
            id: incoming.press.id,
            button: incoming.press.button,
            received_at_ms: incoming.received_at_ms,
            pressed_at_ms,
            counted: not_counted.is_none(),
            upstream: OutboxEntry {
                topic: UpstreamPressTopic {
                    site: &self.site,
                    terminal: &incoming.terminal,
                }
                .to_string(),
                payload: serde_json::to_vec(&upstream).expect("plain struct serializes"),
                retain: false,
                is_press: true,
            },
        }
    }
}

/// When the press happened (Unix ms), from the terminal's `age_ms`.
fn pressed_at(incoming: &IncomingPress) -> Option<i64> {
    incoming
        .press
        .age_ms
        .map(|age| incoming.received_at_ms - age as i64)
}
