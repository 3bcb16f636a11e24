//! The site's alerts: raised, reopened, recovered, acknowledged, escalated
//! and closed (sans-IO: the time comes in; the caller persists and
//! publishes the alerts returned).
//!
//! Terminal alerts are raised and cleared by the health rules
//! ([`crate::terminals::monitor`]), which track which kinds are open per
//! terminal; zone alerts are tracked here, by (kind, zone). Every open
//! alert is kept, and the newest closed ones up to `history`.

use std::collections::BTreeMap;

use pressline_protocol::upstream::{Alert, AlertKind, AlertState, Lifecycle, ALERT_SCHEMA};

use crate::alerting::lifecycle::{self, AckError};
use crate::clock::rfc3339_ms;

/// How long a recovered alert waits before closing, unless configured
/// (`alerting.close_after_recovery_secs`).
pub const DEFAULT_CLOSE_AFTER_SECS: u64 = 900;

/// Every open alert of a site and its recent history.
#[derive(Debug, Clone)]
pub struct AlertBook {
    site: String,
    alerts: BTreeMap<u64, Alert>,
    next_id: u64,
    /// (kind, zone) → id of its open zone alert.
    open_zone_alerts: BTreeMap<(AlertKind, String), u64>,
    /// Closed alerts kept besides every open one.
    history: usize,
    /// Closed alerts past `history`, to delete from the store.
    forgotten: Vec<u64>,
    /// A recovered alert closes after this long without its condition
    /// coming back.
    close_after_ms: i64,
}

impl AlertBook {
    pub fn new(site: &str, history: usize) -> AlertBook {
        AlertBook {
            site: site.into(),
            alerts: BTreeMap::new(),
            next_id: 1,
            open_zone_alerts: BTreeMap::new(),
            history,
            forgotten: Vec::new(),
            close_after_ms: DEFAULT_CLOSE_AFTER_SECS as i64 * 1000,
        }
    }

    /// Restores saved alerts (those from before the lifecycle upgraded).
    pub fn restore(site: &str, history: usize, alerts: Vec<Alert>) -> AlertBook {
        let mut book = AlertBook::new(site, history);
        book.next_id = alerts.iter().map(|a| a.id + 1).max().unwrap_or(1);
        book.open_zone_alerts = alerts
            .iter()
            .filter(|a| a.is_open())
            .filter_map(|a| a.zone.clone().map(|z| ((a.kind.clone(), z), a.id)))
            .collect();
        book.alerts = alerts
            .into_iter()
            .map(|mut a| {
                lifecycle::upgrade(&mut a);
                (a.id, a)
            })
            .collect();
        book.forget_old();
        book
    }

    /// How long a recovered alert stays reopenable before it closes.
    pub fn set_close_after(&mut self, secs: u64) {
        self.close_after_ms = secs.saturating_mul(1000).min(i64::MAX as u64) as i64;
    }

    pub fn get(&self, id: u64) -> Option<&Alert> {
        self.alerts.get(&id)
    }

    /// All alerts, newest first.
    pub fn iter(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values().rev()
    }

    /// Ids of alerts dropped from the history since the last call (to
    /// delete from the store).
    pub fn take_forgotten(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.forgotten)
    }

    /// Raises `kind`, or reopens its recovered (not yet closed) alert.
    pub fn raise_or_reopen(
        &mut self,
        terminal: &str,
        zone: Option<&str>,
        kind: &AlertKind,
        now_ms: i64,
        detail: String,
    ) -> Alert {
        if let Some(alert) = self.recovered_mut(terminal, zone, kind) {
            lifecycle::reopen(alert, detail);
            return alert.clone();
        }
        self.raise(terminal, zone, kind, now_ms, detail)
    }

    /// The condition of an alert recovered.
    pub fn recover(&mut self, id: u64, now_ms: i64) -> Option<Alert> {
        let alert = self.alerts.get_mut(&id)?;
        lifecycle::recover(alert, now_ms);
        Some(alert.clone())
    }

    /// Raises or clears a zone alert of `kind`; returns the alert if its
    /// state changed.
    pub fn set_zone_condition(
        &mut self,
        now_ms: i64,
        kind: &AlertKind,
        zone: &str,
        zone_name: &str,
        active: bool,
        detail: String,
    ) -> Option<Alert> {
        let key = (kind.clone(), zone.to_string());
        match (self.open_zone_alerts.get(&key).copied(), active) {
            (None, true) => {
                let detail = format!("{zone_name}: {detail}");
                let alert = self.raise_or_reopen("", Some(zone), kind, now_ms, detail);
                self.open_zone_alerts.insert(key, alert.id);
                Some(alert)
            }
            (Some(id), false) => {
                self.open_zone_alerts.remove(&key);
                self.recover(id, now_ms)
            }
            _ => None,
        }
    }

    /// Zones with an open alert of `kind`.
    pub fn zones_with<'a>(&'a self, kind: &'a AlertKind) -> impl Iterator<Item = &'a str> {
        self.open_zone_alerts
            .keys()
            .filter(move |(k, _)| k == kind)
            .map(|(_, z)| z.as_str())
    }

    /// Someone is on it (dashboard, `fleet alerts ack`, API, signed link).
    /// `Ok(None)`: it was already acknowledged; nothing changed.
    pub fn acknowledge(
        &mut self,
        now_ms: i64,
        id: u64,
        by: &str,
        note: Option<&str>,
    ) -> Result<Option<Alert>, AckError> {
        let alert = self.alerts.get_mut(&id).ok_or(AckError::Unknown(id))?;
        Ok(lifecycle::acknowledge(alert, now_ms, by, note)?.then(|| alert.clone()))
    }

    /// Puts an alert back as it was before a change that could not be
    /// saved, unless something changed it since (`revision` is the one
    /// the unsaved change gave it): a later change then carries it.
    pub fn undo(&mut self, before: &Alert, revision: u32) {
        if let Some(alert) = self.alerts.get_mut(&before.id) {
            if alert.revision == revision {
                *alert = before.clone();
            }
        }
    }

    /// Alerts whose deletion could not be saved: deleted with the next
    /// change instead.
    pub fn forget_later(&mut self, ids: Vec<u64>) {
        self.forgotten.extend(ids);
    }

    /// Marks an open, unacknowledged alert escalated (the routing rules
    /// decide when).
    pub fn escalate(&mut self, now_ms: i64, id: u64) -> Option<Alert> {
        let alert = self.alerts.get_mut(&id)?;
        if !alert.is_open() || alert.acknowledged_at.is_some() || alert.escalated_at.is_some() {
            return None;
        }
        lifecycle::escalate(alert, now_ms);
        Some(alert.clone())
    }

    /// Records the channels told about an alert (kept with it, so a
    /// restart neither repeats nor forgets them).
    pub fn mark_notified(&mut self, id: u64, channels: &[String]) -> Option<Alert> {
        let alert = self.alerts.get_mut(&id)?;
        let mut changed = false;
        for c in channels {
            if !alert.notified.contains(c) {
                alert.notified.push(c.clone());
                changed = true;
            }
        }
        changed.then(|| alert.clone())
    }

    /// Closes recovered alerts whose condition stayed away `close_after`;
    /// returns them.
    pub fn close_quiet(&mut self, now_ms: i64) -> Vec<Alert> {
        let close_after_ms = self.close_after_ms;
        let mut closed = Vec::new();
        for alert in self.alerts.values_mut() {
            let quiet = alert.lifecycle == Some(Lifecycle::Recovered)
                && alert
                    .cleared_at
                    .as_deref()
                    .and_then(crate::clock::parse_rfc3339_ms)
                    .is_none_or(|at| now_ms - at >= close_after_ms);
            if quiet {
                lifecycle::close(alert, now_ms);
                closed.push(alert.clone());
            }
        }
        self.forget_old();
        closed
    }

    fn raise(
        &mut self,
        terminal: &str,
        zone: Option<&str>,
        kind: &AlertKind,
        now_ms: i64,
        detail: String,
    ) -> Alert {
        let id = self.next_id;
        self.next_id += 1;
        let mut alert = Alert {
            schema: ALERT_SCHEMA.into(),
            id,
            site: self.site.clone(),
            terminal: terminal.to_string(),
            kind: kind.clone(),
            severity: kind.severity(),
            state: AlertState::Raised,
            raised_at: rfc3339_ms(now_ms),
            detail,
            zone: zone.map(str::to_string),
            ..Alert::default()
        };
        lifecycle::start(&mut alert);
        self.alerts.insert(id, alert.clone());
        alert
    }

    /// The recovered (not yet closed) alert of this condition, if any.
    fn recovered_mut(
        &mut self,
        terminal: &str,
        zone: Option<&str>,
        kind: &AlertKind,
    ) -> Option<&mut Alert> {
        self.alerts.values_mut().rev().find(|a| {
            a.lifecycle == Some(Lifecycle::Recovered)
                && a.kind == *kind
                && a.terminal == terminal
                && a.zone.as_deref() == zone
        })
    }

    /// Drops the oldest closed alerts past `history`.
    fn forget_old(&mut self) {
        let closed = |a: &&Alert| a.lifecycle == Some(Lifecycle::Closed);
        let excess = self
            .alerts
            .values()
            .filter(closed)
            .count()
            .saturating_sub(self.history);
        if excess == 0 {
            return;
        }
        let old: Vec<u64> = self
            .alerts
            .values()
            .filter(closed)
            .take(excess)
            .map(|a| a.id)
            .collect();
        for id in &old {
            self.alerts.remove(id);
        }
        self.forgotten.extend(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_790_000_000_000;
    const UNHAPPY: AlertKind = AlertKind::ZoneUnhappy;

    fn unhappy(
        book: &mut AlertBook,
        at: i64,
        zone: &str,
        active: bool,
        detail: &str,
    ) -> Option<Alert> {
        book.set_zone_condition(at, &UNHAPPY, zone, "Food court", active, detail.into())
    }

    #[test]
    fn the_history_keeps_every_open_alert_and_the_newest_closed_ones() {
        let mut book = AlertBook::new("s", 3);
        // Ten zones turn unhappy and back; one stays unhappy.
        for i in 0..10 {
            unhappy(&mut book, i * 1000, &format!("z{i}"), true, "");
        }
        for i in 1..10 {
            unhappy(&mut book, 20_000 + i * 1000, &format!("z{i}"), false, "");
        }
        // Recovered alerts stay (they may reopen) until they close.
        assert_eq!(book.iter().count(), 10);
        let closed = book.close_quiet(30_000 + DEFAULT_CLOSE_AFTER_SECS as i64 * 1000);
        assert_eq!(closed.len(), 9);
        let kept: Vec<(u64, AlertState)> = book.iter().map(|a| (a.id, a.state.clone())).collect();
        assert_eq!(
            kept,
            vec![
                (10, AlertState::Cleared),
                (9, AlertState::Cleared),
                (8, AlertState::Cleared),
                (1, AlertState::Raised)
            ]
        );
        assert_eq!(book.take_forgotten(), vec![2, 3, 4, 5, 6, 7]);
        assert!(book.take_forgotten().is_empty());
        // A store that kept more (an older gateway) is trimmed at restore.
        let all: Vec<Alert> = (1..=6)
            .map(|id| {
                let mut a = book.iter().next().unwrap().clone();
                a.id = id;
                a
            })
            .collect();
        let mut restored = AlertBook::restore("s", 3, all);
        assert_eq!(restored.iter().count(), 3);
        assert_eq!(restored.take_forgotten(), vec![1, 2, 3]);
    }

    #[test]
    fn a_zone_alert_lives_through_acknowledgement_recovery_a_flap_and_closing() {
        let mut book = AlertBook::new("arena", 1000);
        let raised = unhappy(&mut book, T0, "food", true, "62%").unwrap();
        assert_eq!((raised.id, raised.lifecycle), (1, Some(Lifecycle::Raised)));
        let acked = book
            .acknowledge(T0 + 60_000, 1, "Anna", Some("on my way"))
            .unwrap()
            .unwrap();
        assert_eq!(acked.lifecycle, Some(Lifecycle::Acknowledged));
        assert_eq!(
            book.acknowledge(T0 + 61_000, 1, "Ben", None),
            Ok(None),
            "first one stands"
        );
        assert_eq!(
            book.escalate(T0 + 600_000, 1),
            None,
            "acknowledged alerts do not escalate"
        );
        let recovered = unhappy(&mut book, T0 + 120_000, "food", false, "").unwrap();
        assert_eq!(recovered.lifecycle, Some(Lifecycle::Recovered));
        // The figures turn bad again before it closes: the same alert.
        let again = unhappy(&mut book, T0 + 180_000, "food", true, "58%").unwrap();
        assert_eq!(
            (again.id, again.event.clone(), again.reopened),
            (
                1,
                Some(pressline_protocol::upstream::AlertEvent::Reopened),
                1
            )
        );
        assert_eq!(again.lifecycle, Some(Lifecycle::Acknowledged));
        assert_eq!(again.detail, "Food court: 58%");
        unhappy(&mut book, T0 + 240_000, "food", false, "").unwrap();
        // Quiet for the close delay: closed; the next bad spell is a new alert.
        let close_at = T0 + 240_000 + DEFAULT_CLOSE_AFTER_SECS as i64 * 1000;
        assert!(book.close_quiet(close_at - 1).is_empty());
        let closed = book.close_quiet(close_at);
        assert!(
            matches!(&closed[..], [a] if a.lifecycle == Some(Lifecycle::Closed) && a.revision == 6)
        );
        let next = unhappy(&mut book, T0 + 2_000_000, "food", true, "70%").unwrap();
        assert_eq!((next.id, next.revision), (2, 1));
        assert_eq!(
            book.acknowledge(T0, 1, "Anna", None),
            Err(AckError::Closed(1))
        );
        assert_eq!(
            book.acknowledge(T0, 99, "Anna", None),
            Err(AckError::Unknown(99))
        );
    }

    #[test]
    fn an_acknowledgement_the_store_refused_is_undone_unless_the_alert_moved_on() {
        let mut book = AlertBook::new("arena", 1000);
        let before = unhappy(&mut book, T0, "food", true, "62%").unwrap();
        let acked = book.acknowledge(T0 + 1, 1, "Anna", None).unwrap().unwrap();
        book.undo(&before, acked.revision);
        assert_eq!(book.get(1), Some(&before), "as if never acknowledged");
        let acked = book.acknowledge(T0 + 2, 1, "Anna", None).unwrap().unwrap();
        let recovered = unhappy(&mut book, T0 + 3, "food", false, "").unwrap();
        book.undo(&before, acked.revision);
        assert_eq!(book.get(1), Some(&recovered), "a later change carries it");
    }

    #[test]
    fn praise_is_its_own_informational_alert_and_survives_a_restart() {
        let mut book = AlertBook::new("arena", 1000);
        let praise = book
            .set_zone_condition(
                T0,
                &AlertKind::ZoneHappy,
                "bar",
                "South bar",
                true,
                "95% happy".into(),
            )
            .unwrap();
        assert_eq!(
            (praise.kind.clone(), praise.severity.clone()),
            (
                AlertKind::ZoneHappy,
                pressline_protocol::upstream::Severity::Info
            )
        );
        assert_eq!(praise.detail, "South bar: 95% happy");
        // The same zone turning unhappy later is another alert.
        let unhappy = book
            .set_zone_condition(T0 + 1, &UNHAPPY, "bar", "South bar", true, "50%".into())
            .unwrap();
        assert_ne!(unhappy.id, praise.id);
        let restored = AlertBook::restore("arena", 1000, book.iter().cloned().collect());
        assert_eq!(
            restored
                .zones_with(&AlertKind::ZoneHappy)
                .collect::<Vec<_>>(),
            ["bar"]
        );
        assert_eq!(restored.zones_with(&UNHAPPY).collect::<Vec<_>>(), ["bar"]);
    }

    #[test]
    fn an_unacknowledged_alert_escalates_once_and_channels_are_recorded_once() {
        let mut book = AlertBook::new("arena", 1000);
        let id = book
            .raise_or_reopen("t1", None, &AlertKind::LowBattery, T0, "3300 mV".into())
            .id;
        let e = book.escalate(T0 + 600_000, id).unwrap();
        assert_eq!(
            (e.event.clone(), e.revision),
            (Some(pressline_protocol::upstream::AlertEvent::Escalated), 2)
        );
        assert!(e.escalated_at.is_some());
        assert_eq!(book.escalate(T0 + 700_000, id), None);
        assert_eq!(
            book.mark_notified(id, &["techs".into()]).unwrap().notified,
            ["techs"]
        );
        assert_eq!(book.mark_notified(id, &["techs".into()]), None, "unchanged");
    }
}
