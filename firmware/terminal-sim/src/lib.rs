//! Simulated Pressline terminals.
//!
//! Each simulated terminal runs the real terminal core
//! ([`pressline_terminal_core::Session`]) over its own MQTT connection, so it
//! behaves like a board does when the gateway goes away: it keeps unacked
//! presses, reconnects with backoff, and resends until the gateway's durable
//! ack arrives.
//!
//! Used by the `terminal-sim` binary, by the gateway's demo mode and by the
//! end-to-end tests.
//!
//! # Layout
//! - [`config`]: what to simulate ([`SimConfig`]).
//! - [`terminal`]: one simulated terminal (core session + MQTT I/O).
//! - [`device`]: the simulated board's update partitions and bootloader.
//! - [`report`]: live counters and the final summary ([`SimReport`]).

pub mod config;
pub mod device;
pub mod report;
pub mod terminal;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

pub use config::{AckMode, SimConfig, SimIdentity, SimOta};
pub use report::{Latency, SimCounters, SimReport};

/// Runs every simulated terminal until each has had all its presses acked,
/// or until `stop` turns true. The report says which.
pub async fn run(
    config: SimConfig,
    counters: Arc<SimCounters>,
    stop: watch::Receiver<bool>,
) -> SimReport {
    let started = Instant::now();
    let config = Arc::new(config);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..config.terminals {
        tasks.spawn(terminal::run(
            index,
            config.clone(),
            counters.clone(),
            stop.clone(),
        ));
    }
    let mut complete = true;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(finished) => complete &= finished,
            Err(e) => {
                tracing::error!(error = %e, "simulated terminal task failed");
                complete = false;
            }
        }
    }
    counters.flush_log();
    counters.report(config.terminals, started.elapsed(), complete)
}
