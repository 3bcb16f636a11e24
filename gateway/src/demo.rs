//! Demo mode: simulated terminals in-process, so one command shows presses
//! flowing end to end.
//!
//! The simulated terminals are the real `terminal-sim` ones (the shared
//! terminal core over real MQTT connections to the embedded broker), pressing
//! forever at a gentle rate.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use pressline_terminal_sim::{SimConfig, SimCounters};
use tokio::sync::watch;

use crate::http::ApiState;

/// Starts `terminals` simulated terminals against the broker at `mqtt`, and a
/// progress line every 10 seconds.
pub fn start(terminals: usize, mqtt: SocketAddr, api: ApiState, shutdown: watch::Receiver<bool>) {
    let host = if mqtt.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        mqtt.ip().to_string()
    };
    let config = SimConfig {
        broker_host: host,
        broker_port: mqtt.port(),
        terminals,
        presses: None,
        rate: (terminals as f64 * 0.5).max(1.0),
        dup_rate: 0.05,
        seed: std::process::id() as u64,
        id_prefix: "demo-".into(),
        json_terminals: terminals / 4,
        ..SimConfig::default()
    };
    let counters = Arc::new(SimCounters::default());
    tokio::spawn(pressline_terminal_sim::run(
        config,
        counters.clone(),
        shutdown.clone(),
    ));
    let mut shutdown = shutdown;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let s = api.snapshot();
            tracing::info!(
                "demo: terminals pressed {} (acked {}, resent {}); gateway stored {}, duplicates {}, forwarded {}, pending upstream {}",
                counters.presses.load(Relaxed),
                counters.acked.load(Relaxed),
                counters.resends.load(Relaxed),
                s.presses_stored,
                s.presses_duplicate,
                s.presses_forwarded,
                s.forward_pending,
            );
        }
    });
}
