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

use std::collections::BTreeMap;

use pressline_terminal_sim::{SimConfig, SimCounters};

use crate::insight::scores::ZoneConfig;
use tokio::sync::watch;

use crate::api::state::ApiState;

fn zone_size(terminals: usize) -> usize {
    terminals.div_ceil(3).max(1)
}

/// Demo zones for `terminals` simulated terminals: three zones of a stadium.
pub fn zones(terminals: usize) -> BTreeMap<String, ZoneConfig> {
    let names = [
        ("north-food", "North stand food court"),
        ("south-bar", "South stand bar"),
        ("gate-a", "Gate A"),
    ];
    let size = zone_size(terminals);
    names
        .iter()
        .enumerate()
        .map(|(z, (id, name))| {
            let members = (z * size..((z + 1) * size).min(terminals))
                .map(|i| format!("demo-{i:03}"))
                .collect();
            (
                id.to_string(),
                ZoneConfig {
                    name: name.to_string(),
                    terminals: members,
                    unhappy_percent: None,
                    min_presses: None,
                },
            )
        })
        .collect()
}

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
        // One press every ~6 s per terminal: slower than the misuse
        // filter's response interval, so presses count as opinions.
        rate: (terminals as f64 / 6.0).max(0.2),
        // The first zone's visitors turn unhappy: its alert fires.
        unhappy: zone_size(terminals),
        // Elsewhere visitors are clearly happy, so only the first zone alarms.
        button_weights: [1, 1, 4, 6],
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
