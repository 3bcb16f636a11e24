//! Live counters shared by all simulated terminals, and the final summary.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pressline_protocol::PressId;

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
    /// Press-to-release times in µs (durable ack, or PUBACK in that mode).
    pub ack_latencies_us: Mutex<Vec<u32>>,
    /// `--press-log`: one line per press made, `terminal boot seq unix_us`.
    pub press_log: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

/// Latency percentiles of a run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn of(mut samples: Vec<u32>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| u64::from(samples[((samples.len() - 1) as f64 * q).round() as usize]);
        Latency {
            samples: samples.len() as u64,
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us: at(1.0),
        }
    }
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
    /// Press made → released by the ack that counts (durable ack, or
    /// PUBACK in that mode).
    pub ack_latency: Latency,
}

impl SimCounters {
    pub fn record_ack_latency(&self, latency: Duration) {
        if let Ok(mut v) = self.ack_latencies_us.lock() {
            v.push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }

    /// Appends a press to the press log, if one is kept.
    pub fn log_press(&self, terminal: &str, id: PressId) {
        let Some(log) = &self.press_log else { return };
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        if let Ok(mut w) = log.lock() {
            let _ = writeln!(w, "{terminal} {} {} {unix_us}", id.boot, id.seq);
        }
    }

    /// Flushes the press log.
    pub fn flush_log(&self) {
        if let Some(log) = &self.press_log {
            if let Ok(mut w) = log.lock() {
                let _ = w.flush();
            }
        }
    }

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
            ack_latency: Latency::of(
                self.ack_latencies_us
                    .lock()
                    .map(|v| v.clone())
                    .unwrap_or_default(),
            ),
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
