//! Group commit: store a batch of presses durably, then ack it.
//!
//! Runs on its own thread. It takes whatever the ingest thread has queued (up
//! to `commit_batch_max`), commits it in one transaction and one fsync, and
//! only then publishes the durable acks, one per contiguous run per terminal,
//! duplicates included (a duplicate means the terminal missed an earlier
//! ack). A storage error acks nothing: terminals keep the presses and resend.

use pressline_host::sync::LockExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pressline_protocol::topic::{AckJsonTopic, AckTopic};
use pressline_protocol::{ack::ACK_BUF_LEN, json, PressId};
use rumqttd::local::LinkTx;
use tokio::sync::Notify;

use crate::clock::unix_ms_now;
use crate::insight::checkpoints;
use crate::insight::misuse::MisuseFilter;
use crate::insight::scores::{Fold, Scores};
use crate::pipeline::acks::{coalesce, Form};
use crate::pipeline::commit_plan::plan_commit;
use crate::pipeline::ingest::IncomingPress;
use crate::stats::Stats;
use crate::store::{Store, StoreOutcome};
use crate::terminals::registry::RegistryInput;

/// How often the score engine's changes are checkpointed: a crash costs a
/// restart this much of the press log to fold in again, never a count.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// What the committer needs.
pub struct Committer {
    pub store: Store,
    pub stats: Arc<Stats>,
    pub link: LinkTx,
    pub batch_max: usize,
    pub max_disk_bytes: u64,
    /// Woken after new presses reach the outbox.
    pub forward_wake: Arc<Notify>,
    /// Decides which new presses count as opinions.
    pub misuse: MisuseFilter,
    /// The score engine: every durable batch is folded in here, and its
    /// checkpoints are written from this thread (the only writer).
    pub scores: Arc<Mutex<Scores>>,
    /// Newly stored presses, for the terminal registry's health rules.
    pub to_registry: tokio::sync::mpsc::Sender<RegistryInput>,
    /// Storage failures are logged at most every 10 s: while the store is
    /// being reopened every batch fails.
    pub failures: crate::stats::RateLimitedLog,
}

impl Committer {
    /// Runs until ingest stops (the channel closes), committing whatever
    /// was queued first: every press handed over is committed and acked.
    pub fn run(mut self, incoming: Receiver<IncomingPress>) {
        let mut last_disk_check = Instant::now() - Duration::from_secs(60);
        let mut last_checkpoint = Instant::now();
        let mut last_eviction = Instant::now();
        let started = Instant::now();
        let mut generation = self.store.generation();
        loop {
            if last_disk_check.elapsed() >= Duration::from_secs(1) {
                self.check_disk();
                last_disk_check = Instant::now();
            }
            if self.store.generation() != generation {
                // Reopened after a fault: fold in what reached disk unseen.
                match checkpoints::catch_up(&self.store, &self.scores, unix_ms_now()) {
                    Ok(n) => {
                        generation = self.store.generation();
                        if n > 0 {
                            tracing::info!(
                                presses = n,
                                "folded presses the store kept through its fault into the scores"
                            );
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot catch the scores up yet"),
                }
            }
            if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                self.checkpoint();
                last_checkpoint = Instant::now();
            }
            if last_eviction.elapsed() >= Duration::from_secs(60) {
                self.store.evict_idle();
                last_eviction = Instant::now();
            }
            // Due once per `misuse.memory_secs`; cheap otherwise. A clock
            // that never steps: one stepped back would stop the sweeps.
            self.misuse
                .forget_quiet(started.elapsed().as_millis().min(i64::MAX as u128) as i64);
            let first = match incoming.recv_timeout(Duration::from_millis(200)) {
                Ok(p) => p,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
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
        self.checkpoint();
    }

    fn checkpoint(&self) {
        if let Err(e) = checkpoints::write(&self.store, &self.scores) {
            tracing::warn!(error = %e, "cannot checkpoint the scores (kept for the next attempt; the press log has every press)");
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
        let store = &self.store;
        let plan = plan_commit(
            &batch,
            |terminal, id| store.is_stored(terminal, id),
            storage_full,
            &mut self.misuse,
        );
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => return self.storage_failed(&e, batch.len()),
        };
        self.stats
            .presses_refused_storage_full
            .fetch_add(plan.refused_storage_full, Relaxed);
        if plan.offers.is_empty() {
            return;
        }
        let committed = match self.store.commit(&plan.offers) {
            Ok(c) => c,
            Err(e) => return self.storage_failed(&e, plan.offers.len()),
        };
        self.count_and_fold(&committed);
        self.report_resends(&plan.offers, &committed.outcomes);
        let acked = plan.offered_from.iter().map(|&i| {
            let p = &batch[i];
            (p.terminal.as_str(), p.form, p.press.id)
        });
        self.send_acks(acked);
    }

    /// Counts a durable batch, wakes the forwarder, folds the new presses
    /// into the scores and tells the registry about them.
    fn count_and_fold(&mut self, committed: &crate::store::Committed) {
        self.stats.commit_batches.fetch_add(1, Relaxed);
        let stored = committed
            .outcomes
            .iter()
            .filter(|o| **o == StoreOutcome::Stored)
            .count() as u64;
        self.stats.presses_stored.fetch_add(stored, Relaxed);
        self.stats
            .presses_duplicate
            .fetch_add(committed.outcomes.len() as u64 - stored, Relaxed);
        let Some((first_id, fresh)) = &committed.batch else {
            return;
        };
        self.stats.forward_pending.fetch_add(stored as i64, Relaxed);
        self.forward_wake.notify_one();
        let now = unix_ms_now();
        let day = crate::clock::utc_day(now);
        self.stats.set_today(day, self.store.stored_on(day));
        self.scores.locked().fold(now, *first_id, fresh, Fold::New);
        for (terminal, press) in fresh.iter() {
            let _ = self.to_registry.try_send(RegistryInput::Press {
                terminal: terminal.to_string(),
                button: press.button,
                at_ms: press.received_at_ms,
                pressed_at_ms: press.at_ms(),
            });
        }
    }

    /// Terminals that sent presses again: signs of life for the registry
    /// (a terminal catching up after an outage may resend before it
    /// heartbeats). One per terminal per batch.
    fn report_resends(&self, offers: &[crate::store::PressToStore], outcomes: &[StoreOutcome]) {
        let mut told: Vec<&str> = Vec::new();
        let now = unix_ms_now();
        for (offer, outcome) in offers.iter().zip(outcomes) {
            if *outcome == StoreOutcome::Duplicate && !told.contains(&offer.terminal.as_str()) {
                told.push(&offer.terminal);
                let _ = self.to_registry.try_send(RegistryInput::Seen {
                    terminal: offer.terminal.clone(),
                    at_ms: now,
                });
            }
        }
    }

    /// The durable acks of committed presses: one per contiguous run per
    /// terminal.
    fn send_acks<'a>(&mut self, committed: impl Iterator<Item = (&'a str, Form, PressId)>) {
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

    fn storage_failed(&mut self, error: &crate::store::StoreError, presses: usize) {
        self.stats.storage_errors.fetch_add(1, Relaxed);
        if let Some(suppressed) = self.failures.admit("commit", Instant::now()) {
            tracing::error!(error = %error, presses, suppressed, "commit failed; nothing acked, terminals will resend (similar failures are logged at most every 10 s)");
        }
    }
}
