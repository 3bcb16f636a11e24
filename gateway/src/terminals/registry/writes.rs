//! What a batch of registry changes writes, worked out under the monitor's
//! lock and saved after it is released, on a blocking thread: no fsync
//! holds the lock the API reads through, nor an async worker.
//!
//! Writes wait in a [`Backlog`] kept behind one async lock, so they reach
//! the store in the order the changes happened, whoever made them (the
//! registry task, an acknowledgement). A write the store refuses (a full
//! disk, a store being reopened) stays at the front and is tried again
//! with the next change or tick: an alert raised while the store was
//! failing is still saved, queued for its channels and sent upstream once
//! it recovers, not logged and forgotten.

use std::collections::VecDeque;

use pressline_protocol::topic::{AlertTopic, TerminalHealthTopic};
use pressline_protocol::upstream::{Alert, Severity, TerminalHealth};

use super::{zone_of, Registry};
use crate::alerting::delivery::Queued;
use crate::alerting::routing::Notification;
use crate::clock::unix_ms_now;
use crate::store::{OutboxEntry, Store, StoreError};
use crate::terminals::health::TerminalState;
use crate::terminals::monitor::{Change, Monitor};

/// Writes kept while the store refuses them, at most: about a day of a
/// big site's ticks. Past it the oldest go (and are logged): memory must
/// stay bounded through a store outage of any length.
const BACKLOG_MAX: usize = 100_000;

/// One store write.
#[derive(Debug, Clone)]
pub enum Write {
    /// An alert as it is now, with the notifications a transition queues.
    Alert {
        alert: Alert,
        queued: Vec<Queued>,
    },
    Terminal {
        id: String,
        state: TerminalState,
    },
    Upstream(Vec<OutboxEntry>),
    /// Alerts past the history limit.
    Forget(Vec<u64>),
    /// Terminals the monitor forgot (one batch: a flood of invented ids
    /// is forgotten in thousands at a time).
    ForgetTerminals(Vec<String>),
}

/// Writes in the order their changes happened, not yet saved.
#[derive(Debug, Default)]
pub struct Backlog {
    writes: VecDeque<Write>,
}

impl Backlog {
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn extend(&mut self, writes: Vec<Write>) {
        self.writes.extend(writes);
        while self.writes.len() > BACKLOG_MAX {
            if let Some(lost) = self.writes.pop_front() {
                tracing::error!(write = ?describe(&lost), "registry write dropped: the store has refused writes for too long");
            }
        }
    }

    /// Takes back the newest `n` writes (not saved: their change is
    /// undone).
    pub fn withdraw_newest(&mut self, n: usize) -> Vec<Write> {
        let keep = self.writes.len().saturating_sub(n);
        self.writes.drain(keep..).collect()
    }

    /// Saves from the oldest; stops at the first refusal, which stays.
    pub fn save(&mut self, store: &Store) -> Result<(), StoreError> {
        while let Some(write) = self.writes.front() {
            apply(store, write)?;
            self.writes.pop_front();
        }
        // A burst (thousands of terminals going offline at once) must not
        // keep its room for good.
        self.writes = VecDeque::new();
        Ok(())
    }
}

fn apply(store: &Store, write: &Write) -> Result<(), StoreError> {
    match write {
        Write::Alert { alert, queued } => store
            .save_alert_transition(alert.id, alert, queued)
            .map(drop),
        Write::Terminal { id, state } => store.save_terminal(id, state),
        Write::Upstream(entries) => store.enqueue_upstream(entries),
        Write::Forget(ids) => store.delete_alerts(ids),
        Write::ForgetTerminals(ids) => store.delete_terminals(ids),
    }
}

fn describe(write: &Write) -> String {
    match write {
        Write::Alert { alert, queued } => format!(
            "alert {} revision {} ({} notifications)",
            alert.id,
            alert.revision,
            queued.len()
        ),
        Write::Terminal { id, .. } => format!("terminal {id}"),
        Write::Upstream(entries) => format!("{} upstream documents", entries.len()),
        Write::Forget(ids) => format!("forget alerts {ids:?}"),
        Write::ForgetTerminals(ids) => format!("forget {} terminals", ids.len()),
    }
}

/// The writes of one batch of changes: each alert transition with the
/// notifications routing gives it, terminal states in `persist`, alert
/// and health documents for upstream. `late`: notifications of open
/// alerts that are not transitions (a route's quiet hours ended).
pub fn plan(
    registry: &Registry,
    monitor: &mut Monitor,
    events: Vec<Change>,
    mut persist: std::collections::BTreeSet<String>,
    late: Vec<Notification>,
) -> Vec<Write> {
    let now = unix_ms_now();
    let mut writes = Vec::new();
    let mut publish = std::collections::BTreeSet::new();
    let mut upstream = Vec::new();
    // Deleted after the events below are saved: an alert raised and
    // forgotten in one batch must not come back.
    let forgotten = monitor.alerts_mut().take_forgotten();
    let mut forgotten_terminals = Vec::new();
    for event in events {
        match event {
            Change::Alert(alert) => {
                writes.push(alert_write(registry, monitor, &alert, now));
                upstream.push(alert_document(&registry.site, &alert));
            }
            Change::Health(id) => {
                persist.insert(id.clone());
                publish.insert(id);
            }
            Change::Forgotten(id, last) => {
                persist.remove(&id);
                // Went offline in this very batch: upstream hears it
                // from the last document, the monitor has none left.
                if publish.remove(&id) {
                    upstream.push(health_entry(&registry.site, &id, &last));
                }
                forgotten_terminals.push(id);
            }
        }
    }
    for id in &persist {
        if let Some(state) = monitor.terminal(id) {
            writes.push(Write::Terminal {
                id: id.clone(),
                state: state.clone(),
            });
        }
    }
    for id in &publish {
        if let Some(health) = monitor.health(id) {
            upstream.push(health_entry(&registry.site, id, &health));
        }
    }
    if !forgotten_terminals.is_empty() {
        writes.push(Write::ForgetTerminals(forgotten_terminals));
    }
    if !upstream.is_empty() {
        writes.push(Write::Upstream(upstream));
    }
    if !forgotten.is_empty() {
        writes.push(Write::Forget(forgotten));
    }
    writes.extend(held_notifications(monitor, late, now));
    writes
}

/// A transition: routed, the channels told recorded on the alert, saved
/// as the book holds it now (a later change in the same batch included,
/// so an older revision never overwrites a newer one).
fn alert_write(registry: &Registry, monitor: &mut Monitor, alert: &Alert, now: i64) -> Write {
    let zone = zone_of(&registry.scores(), alert);
    let notifications = registry
        .outlets
        .routing
        .handle_transition(now, alert, zone.as_deref());
    let channels: Vec<String> = notifications.iter().map(|n| n.channel.clone()).collect();
    monitor.alerts_mut().mark_notified(alert.id, &channels);
    let current = monitor
        .alerts()
        .get(alert.id)
        .cloned()
        .unwrap_or_else(|| alert.clone());
    let event = alert.event.as_ref().map_or("", |e| e.as_str());
    if alert.severity == Severity::Critical {
        tracing::warn!(alert = alert.id, terminal = %alert.terminal, kind = %alert.kind, event, notified = ?channels, "alert: {}", alert.detail);
    } else {
        tracing::info!(alert = alert.id, terminal = %alert.terminal, kind = %alert.kind, event, notified = ?channels, "alert: {}", alert.detail);
    }
    Write::Alert {
        alert: current,
        queued: notifications
            .into_iter()
            .map(|n| Queued::new(n, now))
            .collect(),
    }
}

/// A terminal's health document, retained upstream.
fn health_entry(site: &str, terminal: &str, health: &TerminalHealth) -> OutboxEntry {
    OutboxEntry {
        topic: TerminalHealthTopic { site, terminal }.to_string(),
        payload: serde_json::to_vec(health).expect("plain struct serializes"),
        retain: true,
        is_press: false,
    }
}

fn alert_document(site: &str, alert: &Alert) -> OutboxEntry {
    OutboxEntry {
        topic: AlertTopic(site).to_string(),
        payload: serde_json::to_vec(alert).expect("plain struct serializes"),
        retain: false,
        is_press: false,
    }
}

/// Held notifications, saved with the alert's new list of channels told.
fn held_notifications(monitor: &mut Monitor, late: Vec<Notification>, now: i64) -> Vec<Write> {
    let mut by_alert: std::collections::BTreeMap<u64, Vec<Notification>> = Default::default();
    for n in late {
        by_alert.entry(n.alert.id).or_default().push(n);
    }
    by_alert
        .into_iter()
        .filter_map(|(id, notifications)| {
            let channels: Vec<String> = notifications.iter().map(|n| n.channel.clone()).collect();
            let alert = monitor.alerts_mut().mark_notified(id, &channels)?;
            let queued = notifications
                .into_iter()
                .map(|n| Queued::new(n, now))
                .collect();
            Some(Write::Alert { alert, queued })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forget(id: u64) -> Write {
        Write::Forget(vec![id])
    }

    fn ids(backlog: &Backlog) -> Vec<u64> {
        backlog
            .writes
            .iter()
            .map(|w| match w {
                Write::Forget(ids) => ids[0],
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn a_withdrawn_change_takes_only_its_own_writes_back() {
        let mut backlog = Backlog::default();
        backlog.extend(vec![forget(1), forget(2)]);
        backlog.extend(vec![forget(3), forget(4)]);
        let withdrawn = backlog.withdraw_newest(2);
        assert_eq!(ids(&backlog), [1, 2]);
        assert!(
            matches!(&withdrawn[..], [Write::Forget(a), Write::Forget(b)] if a == &[3] && b == &[4])
        );
        backlog.withdraw_newest(5);
        assert_eq!(backlog.len(), 0);
    }

    #[test]
    fn a_store_outage_of_any_length_keeps_memory_bounded_dropping_the_oldest() {
        let mut backlog = Backlog::default();
        backlog.extend((0..BACKLOG_MAX as u64 + 3).map(forget).collect());
        assert_eq!(backlog.len(), BACKLOG_MAX);
        assert_eq!(ids(&backlog)[0], 3);
    }

    #[test]
    fn writes_the_store_takes_leave_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut backlog = Backlog::default();
        backlog.extend(vec![forget(1), Write::Upstream(Vec::new()), forget(2)]);
        backlog.save(&store).unwrap();
        assert_eq!(backlog.len(), 0);
    }
}
