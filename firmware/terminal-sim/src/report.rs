//! Live counters shared by all simulated terminals, and the final summary.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

/// Counters every simulated terminal adds to as things happen, so the demo
/// can show progress while a run is going.
#[derive(Debug, Default)]
pub struct SimCounters {
    pub presses: AtomicU64,
    pub transmissions: AtomicU64,
    pub resends: AtomicU64,
    pub deliberate_duplicates: AtomicU64,
    pub acked: AtomicU64,
    pub dropped: AtomicU64,
    pub reconnects: AtomicU64,
    pub connected: AtomicU64,
    pub power_cuts: AtomicU64,
    pub ota_confirmed: AtomicU64,
    pub ota_rolled_back: AtomicU64,
    pub ota_failed: AtomicU64,
    pub ota_bytes: AtomicU64,
    pub ota_resumes: AtomicU64,
    pub ota_damaged_chunks: AtomicU64,
    pub ota_interruptions: AtomicU64,
    pub ota_vanished: AtomicU64,
}

/// Summary of a run, printed by `terminal-sim` (as JSON with `--json`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SimReport {
    pub terminals: usize,
    /// Presses made (queued by the terminals).
    pub presses: u64,
    /// Presses released by a durable ack from the gateway.
    pub acked: u64,
    /// MQTT publishes of presses, including resends and deliberate duplicates.
    pub transmissions: u64,
    /// Transmissions that repeated a press after a reconnect or ack timeout.
    pub resent: u64,
    pub deliberate_duplicates: u64,
    pub reconnects: u64,
    /// Simulated power cuts (terminal rebooted from flash).
    pub power_cuts: u64,
    /// Presses a full queue could not take.
    pub dropped: u64,
    pub elapsed_ms: u64,
    /// Whether every terminal finished with every press acked.
    pub complete: bool,
    /// Firmware updates: terminals that confirmed a new image, rolled back,
    /// or reported a failure; image bytes received; downloads resumed after
    /// an interruption; damaged chunks asked for again; injected
    /// interruptions; terminals that vanished.
    pub ota_confirmed: u64,
    pub ota_rolled_back: u64,
    pub ota_failed: u64,
    pub ota_bytes: u64,
    pub ota_resumes: u64,
    pub ota_damaged_chunks: u64,
    pub ota_interruptions: u64,
    pub ota_vanished: u64,
}

impl SimCounters {
    pub fn report(&self, terminals: usize, elapsed: Duration, complete: bool) -> SimReport {
        SimReport {
            terminals,
            presses: self.presses.load(Relaxed),
            acked: self.acked.load(Relaxed),
            transmissions: self.transmissions.load(Relaxed),
            resent: self.resends.load(Relaxed),
            deliberate_duplicates: self.deliberate_duplicates.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            power_cuts: self.power_cuts.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            elapsed_ms: elapsed.as_millis() as u64,
            complete,
            ota_confirmed: self.ota_confirmed.load(Relaxed),
            ota_rolled_back: self.ota_rolled_back.load(Relaxed),
            ota_failed: self.ota_failed.load(Relaxed),
            ota_bytes: self.ota_bytes.load(Relaxed),
            ota_resumes: self.ota_resumes.load(Relaxed),
            ota_damaged_chunks: self.ota_damaged_chunks.load(Relaxed),
            ota_interruptions: self.ota_interruptions.load(Relaxed),
            ota_vanished: self.ota_vanished.load(Relaxed),
        }
    }
}

impl std::fmt::Display for SimReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} terminals: {} presses sent, {} acked, {} transmissions ({} resent, {} deliberate duplicates), {} reconnects, {} power cuts, {} dropped, {:.1} s{}",
            self.terminals,
            self.presses,
            self.acked,
            self.transmissions,
            self.resent,
            self.deliberate_duplicates,
            self.reconnects,
            self.power_cuts,
            self.dropped,
            self.elapsed_ms as f64 / 1000.0,
            if self.complete { "" } else { " (INCOMPLETE: not every press was acked)" }
        )?;
        if self.ota_bytes > 0 || self.ota_failed > 0 {
            write!(
                f,
                "; firmware updates: {} confirmed, {} rolled back, {} failed, {} bytes, {} resumes, {} damaged chunks",
                self.ota_confirmed,
                self.ota_rolled_back,
                self.ota_failed,
                self.ota_bytes,
                self.ota_resumes,
                self.ota_damaged_chunks
            )?;
        }
        Ok(())
    }
}
