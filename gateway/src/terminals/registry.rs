//! The terminal registry task: feeds heartbeats, last wills and stored
//! presses into the health rules ([`crate::terminals::health::Fleet`]),
//! runs the zone unhappiness rule of the score engine
//! ([`crate::insight::scores::Scores`], fed by the committer) every second,
//! persists what changed, and publishes health documents and alert events
//! upstream through the durable outbox.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pressline_protocol::topic::{AlertTopic, TerminalHealthTopic};
use tokio::sync::{mpsc, watch, Notify};

use crate::clock::unix_ms_now;
use crate::insight::scores::Scores;
use crate::store::{OutboxEntry, Store};
use crate::terminals::health::{Fleet, FleetEvent, HealthConfig, TerminalState};

/// What the registry learns from the press path: heartbeats and last wills
/// (from ingest), and newly stored presses (from commit).
#[derive(Debug, Clone)]
pub enum FleetInput {
    Heartbeat {
        terminal: String,
        heartbeat: pressline_protocol::Heartbeat,
        at_ms: i64,
    },
    Offline {
        terminal: String,
        at_ms: i64,
    },
    /// A newly stored (not duplicate) press.
    Press {
        terminal: String,
        button: pressline_protocol::Button,
        at_ms: i64,
        pressed_at_ms: i64,
    },
}

/// Shared handle to the registry (the HTTP API reads it).
#[derive(Clone)]
pub struct Registry {
    fleet: Arc<Mutex<Fleet>>,
    scores: Arc<Mutex<Scores>>,
}

impl Registry {
    /// Loads the persisted registry around a score engine already
    /// restored from its checkpoint (see [`crate::insight::checkpoints`]).
    pub fn load(site: &str, health: HealthConfig, mut scores: Scores, store: &Store) -> Registry {
        let terminals: Vec<TerminalState> = store.load_terminals();
        let alerts = store.load_alerts();
        let fleet = Fleet::restore(site, health, terminals, alerts);
        for zone in fleet.unhappy_zones() {
            scores.restore_unhappy(zone);
        }
        Registry {
            fleet: Arc::new(Mutex::new(fleet)),
            scores: Arc::new(Mutex::new(scores)),
        }
    }

    /// The score engine, shared with the committer (which folds presses
    /// in) and the API.
    pub fn scores_handle(&self) -> Arc<Mutex<Scores>> {
        self.scores.clone()
    }

    pub fn fleet(&self) -> MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn scores(&self) -> MutexGuard<'_, Scores> {
        self.scores.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs the registry until shutdown.
pub async fn run(
    registry: Registry,
    site: String,
    store: Store,
    mut inputs: mpsc::Receiver<FleetInput>,
    forward_wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Terminals whose counters changed, saved on the next tick rather than
    // per batch of presses (it was 16 % of the gateway's CPU under load; a
    // crash loses at most a second of counters, never a press).
    let mut unsaved: BTreeSet<String> = BTreeSet::new();
    loop {
        let events = tokio::select! {
            input = inputs.recv() => {
                let Some(input) = input else { return };
                let mut fleet = registry.fleet();
                let mut touched = BTreeSet::new();
                let mut events = apply(&mut fleet, input, &mut touched);
                // Take whatever else is queued under the same lock.
                while let Ok(more) = inputs.try_recv() {
                    events.extend(apply(&mut fleet, more, &mut touched));
                }
                drop(fleet);
                if events.is_empty() {
                    // Presses only: save with the next tick.
                    unsaved.extend(touched);
                    continue;
                }
                (events, touched)
            }
            _ = tick.tick() => (tick_rules(&registry, unix_ms_now()), std::mem::take(&mut unsaved)),
            _ = shutdown.changed() => {
                persist_and_publish(&registry, &site, &store, Vec::new(), std::mem::take(&mut unsaved));
                return;
            }
        };
        let (events, touched) = events;
        if !events.is_empty() || !touched.is_empty() {
            persist_and_publish(&registry, &site, &store, events, touched);
            forward_wake.notify_one();
        }
    }
}

/// Time-based rules: silent terminals, zone unhappiness.
fn tick_rules(registry: &Registry, now_ms: i64) -> Vec<FleetEvent> {
    let mut fleet = registry.fleet();
    let mut events = fleet.poll(now_ms);
    let mut scores = registry.scores();
    scores.prune(now_ms);
    for change in scores.evaluate_zones(now_ms) {
        if let Some(alert) = fleet.set_zone_unhappy(
            now_ms,
            &change.zone,
            &change.name,
            change.unhappy,
            change.detail,
        ) {
            events.push(FleetEvent::Alert(alert));
        }
    }
    events
}

/// Applies one input; records the terminal as touched (to persist).
fn apply(fleet: &mut Fleet, input: FleetInput, touched: &mut BTreeSet<String>) -> Vec<FleetEvent> {
    match input {
        FleetInput::Heartbeat {
            terminal,
            heartbeat,
            at_ms,
        } => {
            let events = fleet.handle_heartbeat(at_ms, &terminal, heartbeat);
            touched.insert(terminal);
            events
        }
        FleetInput::Offline { terminal, at_ms } => fleet.handle_will(at_ms, &terminal),
        // Press counts change the stored state, but a health document per
        // press upstream would be noise: persisted, published with the next
        // heartbeat or alert.
        FleetInput::Press {
            terminal,
            button,
            at_ms,
            pressed_at_ms,
        } => {
            let events = fleet.handle_press(at_ms, &terminal, button, pressed_at_ms);
            touched.insert(terminal);
            events
        }
    }
}

fn persist_and_publish(
    registry: &Registry,
    site: &str,
    store: &Store,
    events: Vec<FleetEvent>,
    mut persist: BTreeSet<String>,
) {
    let mut fleet = registry.fleet();
    // Deleted after the events below are saved: an alert raised and
    // forgotten in one batch must not come back.
    let forgotten = fleet.take_forgotten();
    let mut publish = BTreeSet::new();
    let mut upstream = Vec::new();
    for event in events {
        match event {
            FleetEvent::Alert(alert) => {
                if let Err(e) = store.save_alert(alert.id, &alert) {
                    tracing::error!(error = %e, "cannot save an alert");
                }
                let level = if alert.severity == "critical" {
                    tracing::Level::WARN
                } else {
                    tracing::Level::INFO
                };
                if level == tracing::Level::WARN {
                    tracing::warn!(terminal = %alert.terminal, kind = %alert.kind, state = %alert.state, "alert: {}", alert.detail);
                } else {
                    tracing::info!(terminal = %alert.terminal, kind = %alert.kind, state = %alert.state, "alert: {}", alert.detail);
                }
                upstream.push(OutboxEntry {
                    topic: AlertTopic(site).to_string(),
                    payload: serde_json::to_vec(&alert).expect("plain struct serializes"),
                    retain: false,
                    is_press: false,
                });
            }
            FleetEvent::Health(id) => {
                persist.insert(id.clone());
                publish.insert(id);
            }
        }
    }
    for id in &persist {
        if let Some(state) = fleet.terminal(id) {
            if let Err(e) = store.save_terminal(id, state) {
                tracing::error!(error = %e, terminal = %id, "cannot save terminal state");
            }
        }
    }
    for id in &publish {
        if let Some(health) = fleet.health(id) {
            upstream.push(OutboxEntry {
                topic: TerminalHealthTopic { site, terminal: id }.to_string(),
                payload: serde_json::to_vec(&health).expect("plain struct serializes"),
                retain: true,
                is_press: false,
            });
        }
    }
    if let Err(e) = store.enqueue_upstream(&upstream) {
        tracing::error!(error = %e, "cannot queue health updates for upstream");
    }
    if let Err(e) = store.delete_alerts(&forgotten) {
        tracing::warn!(error = %e, "cannot delete alerts past the history limit");
    }
}
