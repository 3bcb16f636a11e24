//! The terminal registry task: feeds heartbeats, last wills and stored
//! presses into the health rules ([`crate::terminals::monitor::Monitor`]),
//! runs the zone unhappiness rule of the score engine
//! ([`crate::insight::scores::Scores`], fed by the committer) every second,
//! persists what changed, and publishes health documents and alert events
//! upstream through the durable outbox. Every alert transition (and an
//! acknowledgement from the API) goes through [`Registry::record`]: the
//! routing rules pick the channels to notify, and the alert and its
//! notifications are saved in one store transaction before anyone hears of
//! it ([`writes`]).

mod writes;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pressline_host::sync::LockExt;
use pressline_protocol::upstream::{Alert, AlertKind};
use tokio::sync::{mpsc, Notify};

use crate::alerting::lifecycle::AckError;
use crate::alerting::routing::{Notification, Routing};
use crate::clock::unix_ms_now;
use crate::insight::scores::{Scores, ZoneRule, UNASSIGNED};
use crate::store::{Store, StoreError};
use crate::terminals::health::{HealthConfig, TerminalState};
use crate::terminals::identity::Identities;
use crate::terminals::monitor::{Change, Monitor};
use writes::{Backlog, Write};

/// What the registry learns from the press path: heartbeats and last wills
/// (from ingest), and newly stored presses (from commit).
#[derive(Debug, Clone)]
pub enum RegistryInput {
    Heartbeat {
        terminal: String,
        heartbeat: pressline_protocol::Heartbeat,
        energy: Option<pressline_protocol::power::Energy>,
        at_ms: i64,
    },
    Offline {
        terminal: String,
        at_ms: i64,
    },
    /// Presses the terminal sent again that were stored already: it is
    /// there (it may have been away, and its heartbeat may be late).
    Seen {
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

/// Where alert transitions go besides the store: notification routing,
/// and the tasks to wake.
#[derive(Clone)]
pub struct AlertOutlets {
    pub routing: Arc<Routing>,
    pub close_after_secs: u64,
    /// The notification sender ([`crate::alerting::delivery`]).
    pub notify_wake: Arc<Notify>,
    /// The upstream forwarder.
    pub forward_wake: Arc<Notify>,
}

/// Shared handle to the registry (the HTTP API reads it).
#[derive(Clone)]
pub struct Registry {
    monitor: Arc<Mutex<Monitor>>,
    scores: Arc<Mutex<Scores>>,
    site: Arc<str>,
    store: Store,
    outlets: AlertOutlets,
    /// Writes not yet saved, in order; held while a batch is worked out
    /// and saved, so saves never overtake each other.
    backlog: Arc<tokio::sync::Mutex<Backlog>>,
    /// When the registry was loaded, by a clock that never steps.
    started: std::time::Instant,
    /// Registered terminals: with those placed in a zone, the terminals
    /// the site knows (see [`Monitor::poll`]).
    identities: Identities,
}

impl Registry {
    /// Loads the persisted registry around a score engine already
    /// restored from its checkpoint (see [`crate::insight::checkpoints`]).
    pub fn load(
        site: &str,
        health: HealthConfig,
        mut scores: Scores,
        store: &Store,
        identities: Identities,
        outlets: AlertOutlets,
    ) -> Registry {
        let terminals: Vec<TerminalState> = store.load_terminals();
        let alerts = store.load_alerts();
        let mut monitor = Monitor::restore(site, health, terminals, alerts, unix_ms_now());
        monitor
            .alerts_mut()
            .set_close_after(outlets.close_after_secs);
        for (kind, rule) in [
            (AlertKind::ZoneUnhappy, ZoneRule::Unhappy),
            (AlertKind::ZoneHappy, ZoneRule::Happy),
        ] {
            for zone in monitor.alerts().zones_with(&kind) {
                scores.restore_rule(rule, zone);
            }
        }
        Registry {
            monitor: Arc::new(Mutex::new(monitor)),
            scores: Arc::new(Mutex::new(scores)),
            site: site.into(),
            store: store.clone(),
            outlets,
            backlog: Arc::default(),
            started: std::time::Instant::now(),
            identities,
        }
    }

    /// Acknowledges an alert (API, dashboard, `fleet alerts ack`, signed
    /// link): saved and queued for notification before this returns; if
    /// the store refuses it, an error. Acknowledging
    /// twice returns the alert as the first acknowledgement left it.
    pub async fn acknowledge(
        &self,
        id: u64,
        by: &str,
        note: Option<&str>,
    ) -> Result<Alert, AckError> {
        // On a task of its own: a client that goes away mid-save must not
        // cut the save from its undo.
        let (registry, by, note) = (self.clone(), by.to_string(), note.map(str::to_string));
        tokio::spawn(async move { registry.acknowledge_now(id, &by, note.as_deref()).await })
            .await
            .unwrap_or_else(|e| {
                Err(AckError::Storage(format!(
                    "the acknowledgement failed: {e}"
                )))
            })
    }

    async fn acknowledge_now(
        &self,
        id: u64,
        by: &str,
        note: Option<&str>,
    ) -> Result<Alert, AckError> {
        let mut backlog = self.backlog.lock().await;
        let (before, acked, writes) = {
            let mut monitor = self.monitor();
            let before = monitor
                .alerts()
                .get(id)
                .cloned()
                .ok_or(AckError::Unknown(id))?;
            let Some(acked) = monitor
                .alerts_mut()
                .acknowledge(unix_ms_now(), id, by, note)?
            else {
                return Ok(before);
            };
            let writes = writes::plan(
                self,
                &mut monitor,
                vec![Change::Alert(acked.clone())],
                BTreeSet::new(),
                Vec::new(),
            );
            (before, acked, writes)
        };
        let ours = writes.len();
        if let Err(e) = self.save(&mut backlog, writes).await {
            // Its writes start with the alert's: saved unless all are left.
            if backlog.len() >= ours {
                let withdrawn = backlog.withdraw_newest(ours);
                let mut monitor = self.monitor();
                monitor.alerts_mut().undo(&before, acked.revision);
                for write in withdrawn {
                    if let Write::Forget(ids) = write {
                        monitor.alerts_mut().forget_later(ids);
                    }
                }
                drop(monitor);
                tracing::error!(alert = id, error = %e, "acknowledgement not saved; answered with an error");
                return Err(AckError::Storage(e.to_string()));
            }
            tracing::warn!(alert = id, error = %e, "acknowledgement saved; its upstream document waits for the store");
        }
        tracing::info!(alert = id, by = %by.trim(), "alert acknowledged");
        self.monitor()
            .alerts()
            .get(id)
            .cloned()
            .ok_or(AckError::Unknown(id))
    }

    /// The zone an alert belongs to: its own, or its terminal's.
    pub fn zone_of(&self, alert: &Alert) -> Option<String> {
        zone_of(&self.scores(), alert)
    }

    /// Saves and publishes what changed (see [`writes::plan`]), after
    /// whatever earlier writes the store refused; a refusal is logged and
    /// kept for the next call.
    async fn record(
        &self,
        events: Vec<Change>,
        touched: BTreeSet<String>,
        late: Vec<Notification>,
    ) {
        let mut backlog = self.backlog.lock().await;
        let writes = writes::plan(self, &mut self.monitor(), events, touched, late);
        if let Err(e) = self.save(&mut backlog, writes).await {
            tracing::error!(error = %e, waiting = backlog.len(), "cannot save alert or terminal changes; trying again with the next change");
        }
    }

    /// Saves the backlog with `writes` appended, on a blocking thread;
    /// wakes delivery and the forwarder for what was saved.
    async fn save(&self, backlog: &mut Backlog, writes: Vec<Write>) -> Result<(), StoreError> {
        if writes.is_empty() && backlog.len() == 0 {
            return Ok(());
        }
        backlog.extend(writes);
        let mut taken = std::mem::take(backlog);
        let store = self.store.clone();
        let (taken, saved) = tokio::task::spawn_blocking(move || {
            let saved = taken.save(&store);
            (taken, saved)
        })
        .await
        .expect("a panic ends the gateway before this");
        *backlog = taken;
        self.outlets.notify_wake.notify_one();
        self.outlets.forward_wake.notify_one();
        saved
    }

    /// The score engine, shared with the committer (which folds presses
    /// in) and the API.
    pub fn scores_handle(&self) -> Arc<Mutex<Scores>> {
        self.scores.clone()
    }

    pub fn monitor(&self) -> MutexGuard<'_, Monitor> {
        self.monitor.locked()
    }

    pub fn scores(&self) -> MutexGuard<'_, Scores> {
        self.scores.locked()
    }
}

fn zone_of(scores: &Scores, alert: &Alert) -> Option<String> {
    alert.zone.clone().or_else(|| {
        let zone = scores.zone_of(&alert.terminal);
        (zone != UNASSIGNED).then(|| zone.to_string())
    })
}

/// Runs the registry until its inputs end (ingest and the committer have
/// stopped, so it has seen the last stored press), then saves what is
/// unsaved.
pub async fn run(registry: Registry, mut inputs: mpsc::Receiver<RegistryInput>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Terminals whose counters changed, saved on the next tick rather than
    // per batch of presses: a save per batch costs the ingest ceiling
    // (BENCHMARKS.md, "Ingest ceiling"), and a crash loses at most a
    // second of counters, never a press.
    let mut unsaved: BTreeSet<String> = BTreeSet::new();
    loop {
        let events = tokio::select! {
            input = inputs.recv() => {
                let Some(input) = input else {
                    let unsaved = std::mem::take(&mut unsaved);
                    registry.record(Vec::new(), unsaved, Vec::new()).await;
                    return;
                };
                let mut monitor = registry.monitor();
                let mut touched = BTreeSet::new();
                let mut events = apply(&mut monitor, input, &mut touched);
                // Take whatever else is queued under the same lock.
                while let Ok(more) = inputs.try_recv() {
                    events.extend(apply(&mut monitor, more, &mut touched));
                }
                drop(monitor);
                if events.is_empty() {
                    // Presses only: save with the next tick.
                    unsaved.extend(touched);
                    continue;
                }
                (events, touched, Vec::new())
            }
            _ = tick.tick() => {
                let (events, late) = tick_rules(&registry, unix_ms_now());
                (events, std::mem::take(&mut unsaved), late)
            }
        };
        let (events, touched, late) = events;
        registry.record(events, touched, late).await;
    }
}

/// Time-based rules: silent terminals, zone unhappiness, closing recovered
/// alerts; then escalations due and notifications held by quiet hours.
fn tick_rules(registry: &Registry, now_ms: i64) -> (Vec<Change>, Vec<Notification>) {
    let mut monitor = registry.monitor();
    let since_start = registry.started.elapsed().as_millis().min(i64::MAX as u128) as i64;
    monitor.set_started(now_ms.saturating_sub(since_start));
    let mut scores = registry.scores();
    let mut events = monitor.poll(now_ms, |terminal| {
        scores.zone_of(terminal) != UNASSIGNED || registry.identities.is_registered(terminal)
    });
    let forgotten: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Change::Forgotten(id, _) => Some(id.clone()),
            _ => None,
        })
        .collect();
    let silent_since = now_ms.saturating_sub(monitor.forget_after_ms());
    if let Some(first) = forgotten.first() {
        // One line however many: invented ids must not flood the log.
        tracing::info!(count = forgotten.len(), first = %first, "terminals the site does not know, silent for health.forget_unknown_after_secs: forgotten");
    }
    scores.forget_terminals(&forgotten, silent_since);
    scores.prune(now_ms);
    for change in scores.evaluate_zones(now_ms) {
        let kind = match change.rule {
            ZoneRule::Unhappy => AlertKind::ZoneUnhappy,
            ZoneRule::Happy => AlertKind::ZoneHappy,
        };
        if let Some(alert) = monitor.alerts_mut().set_zone_condition(
            now_ms,
            &kind,
            &change.zone,
            &change.name,
            change.active,
            change.detail,
        ) {
            events.push(Change::Alert(alert));
        }
    }
    let routing = &registry.outlets.routing;
    if routing.is_empty() {
        return (events, Vec::new());
    }
    let alerts = monitor.alerts();
    let zones: Vec<(u64, Option<String>)> = alerts
        .iter()
        .filter(|a| a.is_open())
        .map(|a| (a.id, zone_of(&scores, a)))
        .collect();
    let due = routing.poll(
        now_ms,
        zones
            .iter()
            .filter_map(|(id, zone)| Some((alerts.get(*id)?, zone.as_deref()))),
    );
    for id in due.escalate {
        if let Some(alert) = monitor.alerts_mut().escalate(now_ms, id) {
            tracing::warn!(alert = id, kind = %alert.kind, "nobody acknowledged in time: escalated");
            events.push(Change::Alert(alert));
        }
    }
    (events, due.notify)
}

/// Applies one input; records the terminal as touched (to persist).
fn apply(
    monitor: &mut Monitor,
    input: RegistryInput,
    touched: &mut BTreeSet<String>,
) -> Vec<Change> {
    match input {
        RegistryInput::Heartbeat {
            terminal,
            heartbeat,
            energy,
            at_ms,
        } => {
            let events = monitor.handle_heartbeat_with_energy(at_ms, &terminal, heartbeat, energy);
            touched.insert(terminal);
            events
        }
        RegistryInput::Offline { terminal, at_ms } => monitor.handle_will(at_ms, &terminal),
        RegistryInput::Seen { terminal, at_ms } => monitor.handle_seen(at_ms, &terminal),
        // Press counts change the stored state, but a health document per
        // press upstream would be noise: persisted, published with the next
        // heartbeat or alert.
        RegistryInput::Press {
            terminal,
            button,
            at_ms,
            pressed_at_ms,
        } => {
            let events = monitor.handle_press(at_ms, &terminal, button, pressed_at_ms);
            touched.insert(terminal);
            events
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::config::AlertingConfig;
    use crate::insight::scores::{ScoresConfig, Window, ZoneConfig};
    use crate::site_time::SiteTime;
    use crate::store::OutboxItem;
    use crate::terminals::identity::SecurityMode;
    use pressline_protocol::upstream::Lifecycle;
    use pressline_protocol::{FirmwareVersion, Heartbeat};

    const T0: i64 = 1_790_000_000_000;

    fn registry(store: &Store) -> Registry {
        let zones = [(
            "food".to_string(),
            ZoneConfig {
                name: "Food court".into(),
                terminals: vec!["t1".into()],
                unhappy_percent: None,
                min_presses: None,
            },
        )];
        let scores = Scores::new(ScoresConfig::default(), zones.into(), 400, T0);
        let outlets = AlertOutlets {
            routing: Arc::new(Routing::new(
                &AlertingConfig::default(),
                SiteTime::Fixed { offset_ms: 0 },
            )),
            close_after_secs: 900,
            notify_wake: Arc::new(Notify::new()),
            forward_wake: Arc::new(Notify::new()),
        };
        let identities = Identities::load(SecurityMode::Open, store.clone());
        Registry::load(
            "arena",
            HealthConfig::default(),
            scores,
            store,
            identities,
            outlets,
        )
    }

    fn low_battery(at_ms: i64) -> RegistryInput {
        RegistryInput::Heartbeat {
            terminal: "t1".into(),
            heartbeat: Heartbeat {
                boot: 1,
                uptime_ms: 1_000,
                firmware: FirmwareVersion {
                    major: 1,
                    minor: 0,
                    patch: 0,
                },
                battery_mv: Some(3_300),
                rssi_dbm: Some(-60),
                queue_depth: 0,
                queue_capacity: 100,
                dropped_presses: 0,
                reset_reason: 1,
                unix_time_ms: None,
            },
            energy: None,
            at_ms,
        }
    }

    /// What the registry task does with one input.
    async fn feed(registry: &Registry, input: RegistryInput) {
        let mut touched = BTreeSet::new();
        let events = apply(&mut registry.monitor(), input, &mut touched);
        registry.record(events, touched, Vec::new()).await;
    }

    fn upstream_topics(store: &Store) -> Vec<String> {
        store
            .outbox_after(None, 100)
            .unwrap()
            .into_iter()
            .filter_map(|(_, item)| match item {
                OutboxItem::Document(d) => Some(d.topic),
                OutboxItem::Press { .. } => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn an_alert_and_the_health_it_changes_go_upstream_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let registry = registry(&store);
        feed(&registry, low_battery(T0)).await;
        let topics = upstream_topics(&store);
        assert!(
            topics.contains(&"pressline/v1/arena/alert".to_string()),
            "{topics:?}"
        );
        assert!(topics.contains(&"pressline/v1/arena/t1/health".to_string()));
        let restarted = super::tests::registry(&store);
        let monitor = restarted.monitor();
        let alert = monitor.alerts().iter().next().expect("saved");
        assert_eq!(alert.kind, AlertKind::LowBattery);
        assert_eq!(
            monitor.health("t1").unwrap().open_alerts,
            [AlertKind::LowBattery]
        );
    }

    #[tokio::test]
    async fn an_acknowledgement_is_saved_before_it_is_answered_and_stands_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let registry = registry(&store);
        feed(&registry, low_battery(T0)).await;
        let id = registry.monitor().alerts().iter().next().unwrap().id;
        let acked = registry
            .acknowledge(id, "Anna", Some("on my way"))
            .await
            .unwrap();
        assert_eq!(acked.lifecycle, Some(Lifecycle::Acknowledged));
        let again = registry.acknowledge(id, "Ben", None).await.unwrap();
        assert_eq!(again.acknowledged_by.as_deref(), Some("Anna"));
        assert_eq!(
            registry.acknowledge(99, "Anna", None).await,
            Err(AckError::Unknown(99))
        );
        let restarted = super::tests::registry(&store);
        let saved = restarted.monitor().alerts().get(id).cloned().unwrap();
        assert_eq!(saved.acknowledged_by.as_deref(), Some("Anna"));
    }

    #[tokio::test]
    async fn a_zone_alert_open_at_a_restart_keeps_its_zone_unhappy_without_a_second_raise() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let registry = registry(&store);
        let raised = registry
            .monitor()
            .alerts_mut()
            .set_zone_condition(
                T0,
                &AlertKind::ZoneUnhappy,
                "food",
                "Food court",
                true,
                "62%".into(),
            )
            .unwrap();
        registry
            .record(vec![Change::Alert(raised)], BTreeSet::new(), Vec::new())
            .await;
        let restarted = super::tests::registry(&store);
        let view = restarted.scores().window(T0, Window::FiveMinutes);
        let food = view.zones.iter().find(|z| z.zone == "food").unwrap();
        assert!(food.unhappy_alert, "the rule holds as the alert does");
    }

    #[test]
    fn presses_change_the_counts_but_publish_nothing_by_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let registry = registry(&store);
        let mut touched = BTreeSet::new();
        let press = RegistryInput::Press {
            terminal: "t1".into(),
            button: pressline_protocol::Button::Happy,
            at_ms: T0,
            pressed_at_ms: T0,
        };
        let events = apply(&mut registry.monitor(), press, &mut touched);
        // A new terminal comes online: its health goes out; the count
        // itself waits for the next tick (see `run`).
        assert!(events.iter().all(|e| matches!(e, Change::Health(_))));
        assert_eq!(touched, BTreeSet::from(["t1".to_string()]));
        assert_eq!(registry.monitor().health("t1").unwrap().presses_total, 1);
    }
}
