//! Gateway counters, shared by every part and served at `/api/v1/stats`.
//!
//! `presses_stored` and `forward_pending` describe the database (they are
//! read from it at start-up); every other counter counts since start.

use pressline_host::sync::LockExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Stats {
    pub presses_received: AtomicU64,
    pub presses_duplicate: AtomicU64,
    pub presses_stored: AtomicU64,
    pub presses_forwarded: AtomicU64,
    /// Signed: the forwarder can forward an entry before the committer has
    /// counted it; the sum is right once both have run.
    pub forward_pending: AtomicI64,
    pub payloads_rejected: AtomicU64,
    pub presses_refused_storage_full: AtomicU64,
    pub acks_sent: AtomicU64,
    pub heartbeats_received: AtomicU64,
    pub commit_batches: AtomicU64,
    pub storage_errors: AtomicU64,
    pub storage_full: AtomicBool,
    pub upstream_connected: AtomicBool,
    rejected_by_reason: Mutex<BTreeMap<&'static str, u64>>,
    connections_refused: Mutex<BTreeMap<&'static str, u64>>,
    publishes_refused: AtomicU64,
    subscriptions_refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Why the upstream connection last failed; cleared on connect.
    upstream_error: Mutex<Option<String>>,
    /// The upstream node connected to, or being tried.
    upstream_node: Mutex<Option<String>>,
    today: AtomicI64,
    stored_today: AtomicU64,
}

/// A consistent-enough copy of the counters, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    pub site: String,
    pub version: &'static str,
    pub uptime_secs: u64,
    pub presses_received: u64,
    pub presses_duplicate: u64,
    pub presses_stored: u64,
    pub presses_forwarded: u64,
    pub forward_pending: u64,
    pub payloads_rejected: u64,
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// MQTT connections the site broker refused, by reason
    /// (`bad_credentials`, `not_authorized`, `protocol_version`, …).
    pub connections_refused: BTreeMap<&'static str, u64>,
    /// Publishes refused in closed mode: a terminal publishing on another
    /// terminal's topics or outside its own.
    pub publishes_refused: u64,
    /// Subscriptions the site broker refused, by reason (`not_authorized`:
    /// in closed mode, a filter outside the terminal's own
    /// `pressline/v1/gw/{id}/`; `too_many_filters`: past
    /// `mqtt.max_subscriptions_per_client`).
    pub subscriptions_refused: BTreeMap<&'static str, u64>,
    pub presses_refused_storage_full: u64,
    pub storage_full: bool,
    pub storage_errors: u64,
    /// Why the press store is unavailable (`null` while it works): a full
    /// disk or an I/O error, and that the gateway is reopening it.
    pub storage_fault: Option<String>,
    /// `no_space`, `io_error`, `corruption` or `bug` while unavailable.
    pub storage_fault_reason: Option<crate::store::FaultReason>,
    pub acks_sent: u64,
    pub heartbeats_received: u64,
    /// Presses stored today (UTC day).
    pub presses_today: u64,
    pub commit_batches: u64,
    /// `null` when no upstream broker is configured.
    pub upstream_connected: Option<bool>,
    /// Why the last upstream connection attempt failed (`null` once
    /// connected): a certificate problem, a refused login, a refused TCP
    /// connection.
    pub upstream_error: Option<String>,
    /// The upstream broker (node of a cluster) connected to, or being
    /// tried while `upstream_connected` is false.
    pub upstream_broker: Option<String>,
    pub disk_bytes: u64,
    /// Alert notification channels: delivered, failing, pending, last error.
    pub notification_channels: Vec<crate::alerting::delivery::ChannelStatus>,
}

impl Stats {
    /// Records the day's total of stored presses (kept by the store).
    pub fn set_today(&self, day: i64, total: u64) {
        self.today.store(day, Relaxed);
        self.stored_today.store(total, Relaxed);
    }

    fn presses_today(&self) -> u64 {
        let day = crate::clock::utc_day(crate::clock::unix_ms_now());
        if self.today.load(Relaxed) == day {
            self.stored_today.load(Relaxed)
        } else {
            0
        }
    }

    /// Records why the upstream connection failed (`None`: connected).
    pub fn set_upstream_error(&self, error: Option<String>) {
        *self.upstream_error.locked() = error;
    }

    /// Records which upstream node the forwarder is on.
    pub fn set_upstream_node(&self, node: Option<String>) {
        *self.upstream_node.locked() = node;
    }

    /// Counts a rejected payload under `reason`.
    pub fn reject(&self, reason: &'static str) {
        self.payloads_rejected.fetch_add(1, Relaxed);
        let mut map = self.rejected_by_reason.locked();
        *map.entry(reason).or_default() += 1;
    }

    /// Counts a refused MQTT connection under `reason`.
    pub fn refuse_connection(&self, reason: &'static str) {
        let mut map = self.connections_refused.locked();
        *map.entry(reason).or_default() += 1;
    }

    /// Counts a publish refused by closed mode's topic rule.
    pub fn refuse_publish(&self) {
        self.publishes_refused.fetch_add(1, Relaxed);
    }

    /// Counts a subscription refused under `reason`.
    pub fn refuse_subscription(&self, reason: &'static str) {
        let mut map = self.subscriptions_refused.locked();
        *map.entry(reason).or_default() += 1;
    }

    pub fn snapshot(
        &self,
        site: &str,
        started: Instant,
        upstream_configured: bool,
        disk_bytes: u64,
        storage_fault: Option<crate::store::Fault>,
    ) -> StatsSnapshot {
        StatsSnapshot {
            site: site.to_string(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: started.elapsed().as_secs(),
            presses_received: self.presses_received.load(Relaxed),
            presses_duplicate: self.presses_duplicate.load(Relaxed),
            presses_stored: self.presses_stored.load(Relaxed),
            presses_forwarded: self.presses_forwarded.load(Relaxed),
            forward_pending: self.forward_pending.load(Relaxed).max(0) as u64,
            payloads_rejected: self.payloads_rejected.load(Relaxed),
            rejected_by_reason: self.rejected_by_reason.locked().clone(),
            connections_refused: self.connections_refused.locked().clone(),
            publishes_refused: self.publishes_refused.load(Relaxed),
            subscriptions_refused: self.subscriptions_refused.locked().clone(),
            presses_refused_storage_full: self.presses_refused_storage_full.load(Relaxed),
            storage_full: self.storage_full.load(Relaxed),
            storage_errors: self.storage_errors.load(Relaxed),
            storage_fault_reason: storage_fault.as_ref().map(|f| f.reason),
            storage_fault: storage_fault.map(|f| f.to_string()),
            acks_sent: self.acks_sent.load(Relaxed),
            heartbeats_received: self.heartbeats_received.load(Relaxed),
            presses_today: self.presses_today(),
            commit_batches: self.commit_batches.load(Relaxed),
            upstream_connected: upstream_configured.then(|| self.upstream_connected.load(Relaxed)),
            upstream_error: self.upstream_error.locked().clone(),
            upstream_broker: self.upstream_node.locked().clone(),
            disk_bytes,
            notification_channels: Vec::new(),
        }
    }
}

pub use pressline_host::log_limit::RateLimitedLog;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_are_counted_by_reason() {
        let s = Stats::default();
        s.reject("malformed");
        s.reject("malformed");
        s.reject("wrong_topic");
        let snap = s.snapshot("x", Instant::now(), false, 0, None);
        assert_eq!(snap.payloads_rejected, 3);
        assert_eq!(snap.rejected_by_reason["malformed"], 2);
        assert_eq!(snap.upstream_connected, None);
    }
}
