//! Terminal registry and health rules, as a sans-IO state machine.
//!
//! Inputs carry the time (`now_ms`, Unix milliseconds) so the rules are tested
//! with a virtual clock: [`Fleet::handle_heartbeat`], [`Fleet::handle_press`],
//! [`Fleet::handle_will`], and [`Fleet::poll`] for time-based rules. Every
//! call returns the [`FleetEvent`]s it caused (alerts raised or cleared, a
//! terminal's health changed); the caller persists and publishes them.
//!
//! Rules (thresholds in [`HealthConfig`]), each raised once and cleared with
//! hysteresis:
//! - `offline` (critical): not heard from for `offline_after_secs`.
//! - `low_battery`: battery below `low_battery_mv`.
//! - `weak_wifi`: RSSI below `weak_rssi_dbm`.
//! - `stuck_button`: presses faster than a person can press, or one button
//!   only for a long run; cleared by the first press at a human pace that
//!   does not continue a one-button run.
//! - `queue_filling`: the terminal's press queue is filling up (the gateway
//!   is not acking, or the terminal cannot reach it often enough).
//! - `clock_skew`: the terminal's clock is far from the gateway's.

use std::collections::BTreeMap;

use pressline_protocol::upstream::{Alert, TerminalHealth, ALERT_SCHEMA, HEALTH_SCHEMA};
use pressline_protocol::{Button, Heartbeat, ResetReason};
use serde::{Deserialize, Serialize};

use crate::alerting::lifecycle::{self, AckError};
use crate::clock::rfc3339_ms;
use pressline_protocol::upstream::lifecycle::{CLOSED, RECOVERED};

/// Thresholds of the health rules (`[health]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// A terminal not heard from (heartbeat or press) for this long is offline.
    pub offline_after_secs: u64,
    pub low_battery_mv: u16,
    pub weak_rssi_dbm: i8,
    /// Consecutive presses closer together than this are "faster than a
    /// person can press".
    pub stuck_min_interval_ms: u64,
    /// How many such fast presses in a row raise `stuck_button`.
    pub stuck_fast_run: u32,
    /// How many presses of one button in a row raise `stuck_button`.
    pub stuck_same_button_run: u32,
    /// Queue depth (percent of capacity) that raises `queue_filling`.
    pub queue_filling_percent: u8,
    /// Clock difference that raises `clock_skew`.
    pub clock_skew_secs: u64,
    /// Cleared alerts kept (newest first) besides every open one; older
    /// ones are forgotten, so a flapping rule cannot grow memory and disk
    /// (upstream has every alert event).
    pub alert_history: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            offline_after_secs: 90,
            low_battery_mv: 3500,
            weak_rssi_dbm: -80,
            stuck_min_interval_ms: 120,
            stuck_fast_run: 15,
            stuck_same_button_run: 60,
            queue_filling_percent: 50,
            clock_skew_secs: 120,
            alert_history: 1000,
        }
    }
}

/// Hysteresis margins: a condition clears only this far on the good side.
const BATTERY_CLEAR_MARGIN_MV: u16 = 100;
const RSSI_CLEAR_MARGIN_DB: i8 = 5;

/// Alert kinds.
pub const OFFLINE: &str = "offline";
pub const LOW_BATTERY: &str = "low_battery";
pub const WEAK_WIFI: &str = "weak_wifi";
pub const STUCK_BUTTON: &str = "stuck_button";
pub const QUEUE_FILLING: &str = "queue_filling";
pub const CLOCK_SKEW: &str = "clock_skew";
/// A zone's visitors turned unhappy (from the scores engine).
pub const ZONE_UNHAPPY: &str = "zone_unhappy";
/// A zone's visitors are unusually happy: praise (`scores.praise_percent`).
pub const ZONE_HAPPY: &str = "zone_happy";

fn severity(kind: &str) -> &'static str {
    match kind {
        OFFLINE | ZONE_UNHAPPY => "critical",
        ZONE_HAPPY => "info",
        _ => "warning",
    }
}

/// The last heartbeat, as kept in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastHeartbeat {
    pub at_ms: i64,
    pub heartbeat: Heartbeat,
}

/// One terminal in the registry (persisted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalState {
    pub id: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub online: bool,
    pub last_heartbeat: Option<LastHeartbeat>,
    pub presses_total: u64,
    last_press_ms: Option<i64>,
    fast_run: u32,
    same_button: Option<u8>,
    same_run: u32,
    /// kind → id of the open alert.
    open_alerts: BTreeMap<String, u64>,
}

impl TerminalState {
    fn new(id: &str, now_ms: i64) -> Self {
        TerminalState {
            id: id.to_string(),
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            online: true,
            last_heartbeat: None,
            presses_total: 0,
            last_press_ms: None,
            fast_run: 0,
            same_button: None,
            same_run: 0,
            open_alerts: BTreeMap::new(),
        }
    }
}

/// What a call changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetEvent {
    /// An alert was raised or cleared (the alert's `state` says which).
    Alert(Alert),
    /// A terminal's health document changed (online state, heartbeat, alerts).
    Health(String),
}

/// The registry and rule engine for one site.
#[derive(Debug, Clone)]
pub struct Fleet {
    site: String,
    config: HealthConfig,
    terminals: BTreeMap<String, TerminalState>,
    alerts: BTreeMap<u64, Alert>,
    next_alert_id: u64,
    /// (kind, zone) → id of its open zone alert (`zone_unhappy`, `zone_happy`).
    open_zone_alerts: BTreeMap<(String, String), u64>,
    /// Cleared alerts past `alert_history`, to delete from the store.
    forgotten: Vec<u64>,
    /// A recovered alert closes after this long without its condition
    /// coming back.
    close_after_ms: i64,
}

/// How long a recovered alert waits before closing, unless configured
/// (`alerting.close_after_recovery_secs`).
pub const DEFAULT_CLOSE_AFTER_SECS: u64 = 900;

impl Fleet {
    pub fn new(site: &str, config: HealthConfig) -> Fleet {
        Fleet {
            site: site.into(),
            config,
            terminals: BTreeMap::new(),
            alerts: BTreeMap::new(),
            next_alert_id: 1,
            open_zone_alerts: BTreeMap::new(),
            forgotten: Vec::new(),
            close_after_ms: DEFAULT_CLOSE_AFTER_SECS as i64 * 1000,
        }
    }

    /// How long a recovered alert stays reopenable before it closes.
    pub fn set_close_after(&mut self, secs: u64) {
        self.close_after_ms = secs.saturating_mul(1000).min(i64::MAX as u64) as i64;
    }

    /// Restores persisted state.
    pub fn restore(
        site: &str,
        config: HealthConfig,
        terminals: Vec<TerminalState>,
        alerts: Vec<Alert>,
    ) -> Fleet {
        let mut fleet = Fleet::new(site, config);
        fleet.next_alert_id = alerts.iter().map(|a| a.id + 1).max().unwrap_or(1);
        fleet.open_zone_alerts = alerts
            .iter()
            .filter(|a| a.state == "raised")
            .filter_map(|a| a.zone.clone().map(|z| ((a.kind.clone(), z), a.id)))
            .collect();
        fleet.alerts = alerts
            .into_iter()
            .map(|mut a| {
                lifecycle::upgrade(&mut a);
                (a.id, a)
            })
            .collect();
        fleet.terminals = terminals.into_iter().map(|t| (t.id.clone(), t)).collect();
        fleet.forget_old_alerts();
        fleet
    }

    /// Drops the oldest closed alerts past `alert_history`.
    fn forget_old_alerts(&mut self) {
        let cleared = self
            .alerts
            .values()
            .filter(|a| a.lifecycle == CLOSED)
            .count();
        let excess = cleared.saturating_sub(self.config.alert_history);
        if excess == 0 {
            return;
        }
        let old: Vec<u64> = self
            .alerts
            .values()
            .filter(|a| a.lifecycle == CLOSED)
            .take(excess)
            .map(|a| a.id)
            .collect();
        for id in &old {
            self.alerts.remove(id);
        }
        self.forgotten.extend(old);
    }

    /// Ids of alerts dropped from the history since the last call (to
    /// delete from the store).
    pub fn take_forgotten(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.forgotten)
    }

    pub fn terminal(&self, id: &str) -> Option<&TerminalState> {
        self.terminals.get(id)
    }

    pub fn terminals(&self) -> impl Iterator<Item = &TerminalState> {
        self.terminals.values()
    }

    pub fn alert(&self, id: u64) -> Option<&Alert> {
        self.alerts.get(&id)
    }

    /// All alerts, newest first.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values().rev()
    }

    fn seen(
        &mut self,
        terminal: &str,
        now_ms: i64,
        events: &mut Vec<FleetEvent>,
    ) -> &mut TerminalState {
        let came_back = match self.terminals.get_mut(terminal) {
            Some(t) => {
                t.last_seen_ms = t.last_seen_ms.max(now_ms);
                let back = !t.online;
                t.online = true;
                back
            }
            None => {
                self.terminals
                    .insert(terminal.to_string(), TerminalState::new(terminal, now_ms));
                true
            }
        };
        if came_back {
            self.set_condition(terminal, OFFLINE, false, now_ms, String::new(), events);
        }
        self.terminals.get_mut(terminal).expect("just inserted")
    }

    /// A heartbeat arrived.
    pub fn handle_heartbeat(
        &mut self,
        now_ms: i64,
        terminal: &str,
        hb: Heartbeat,
    ) -> Vec<FleetEvent> {
        let mut events = Vec::new();
        let t = self.seen(terminal, now_ms, &mut events);
        t.last_heartbeat = Some(LastHeartbeat {
            at_ms: now_ms,
            heartbeat: hb,
        });
        let c = self.config.clone();

        if let Some(mv) = hb.battery_mv {
            let open = self.is_open(terminal, LOW_BATTERY);
            let low = if open {
                mv < c.low_battery_mv + BATTERY_CLEAR_MARGIN_MV
            } else {
                mv < c.low_battery_mv
            };
            self.set_condition(
                terminal,
                LOW_BATTERY,
                low,
                now_ms,
                format!("battery {mv} mV (threshold {} mV)", c.low_battery_mv),
                &mut events,
            );
        }
        if let Some(rssi) = hb.rssi_dbm {
            let open = self.is_open(terminal, WEAK_WIFI);
            let weak = if open {
                rssi < c.weak_rssi_dbm.saturating_add(RSSI_CLEAR_MARGIN_DB)
            } else {
                rssi < c.weak_rssi_dbm
            };
            self.set_condition(
                terminal,
                WEAK_WIFI,
                weak,
                now_ms,
                format!(
                    "Wi-Fi signal {rssi} dBm (threshold {} dBm)",
                    c.weak_rssi_dbm
                ),
                &mut events,
            );
        }
        if hb.queue_capacity > 0 {
            let percent = (hb.queue_depth as u64 * 100 / hb.queue_capacity as u64) as u8;
            let open = self.is_open(terminal, QUEUE_FILLING);
            let filling = if open {
                percent >= c.queue_filling_percent / 2
            } else {
                percent >= c.queue_filling_percent
            };
            self.set_condition(
                terminal,
                QUEUE_FILLING,
                filling,
                now_ms,
                format!(
                    "{} of {} queued presses ({percent}%), {} dropped",
                    hb.queue_depth, hb.queue_capacity, hb.dropped_presses
                ),
                &mut events,
            );
        }
        if let Some(clock) = hb.unix_time_ms {
            let skew_ms = (clock as i64 - now_ms).unsigned_abs();
            let limit = c.clock_skew_secs * 1000;
            let open = self.is_open(terminal, CLOCK_SKEW);
            let skewed = if open {
                skew_ms > limit / 2
            } else {
                skew_ms > limit
            };
            self.set_condition(
                terminal,
                CLOCK_SKEW,
                skewed,
                now_ms,
                format!("terminal clock off by {} s", skew_ms / 1000),
                &mut events,
            );
        }
        events.push(FleetEvent::Health(terminal.to_string()));
        events
    }

    /// A new (not duplicate) press was stored. `pressed_at_ms` is when it
    /// happened (falls back to arrival time).
    pub fn handle_press(
        &mut self,
        now_ms: i64,
        terminal: &str,
        button: Button,
        pressed_at_ms: i64,
    ) -> Vec<FleetEvent> {
        let mut events = Vec::new();
        let c = self.config.clone();
        let t = self.seen(terminal, now_ms, &mut events);
        t.presses_total += 1;
        let fast = t
            .last_press_ms
            .is_some_and(|last| (pressed_at_ms - last).unsigned_abs() < c.stuck_min_interval_ms);
        t.fast_run = if fast { t.fast_run + 1 } else { 0 };
        t.last_press_ms = Some(pressed_at_ms);
        if t.same_button == Some(button.score()) {
            t.same_run += 1;
        } else {
            t.same_button = Some(button.score());
            t.same_run = 1;
        }
        let (fast_run, same_run) = (t.fast_run, t.same_run);
        let stuck_fast = fast_run >= c.stuck_fast_run;
        let stuck_same = same_run >= c.stuck_same_button_run;
        let open = self.is_open(terminal, STUCK_BUTTON);
        // Once raised, it stays raised while presses keep coming faster
        // than a person presses (whichever button) or the one-button run
        // goes on; the first press at a human pace clears it. Clearing on a
        // fast press of another button made it flap, raised and cleared on
        // every press of someone drumming on all four buttons.
        let stuck = if open {
            fast_run > 0 || stuck_same
        } else {
            stuck_fast || stuck_same
        };
        let detail = if stuck_fast {
            format!(
                "{fast_run} presses in a row less than {} ms apart",
                c.stuck_min_interval_ms
            )
        } else {
            format!("{same_run} presses in a row of {}", button.name())
        };
        self.set_condition(terminal, STUCK_BUTTON, stuck, now_ms, detail, &mut events);
        events
    }

    /// The terminal's last will arrived: it is gone now.
    pub fn handle_will(&mut self, _now_ms: i64, terminal: &str) -> Vec<FleetEvent> {
        match self.terminals.get_mut(terminal) {
            Some(t) if t.online => {
                t.online = false;
                vec![FleetEvent::Health(terminal.to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// Time-based rules: terminals silent for too long go offline.
    pub fn poll(&mut self, now_ms: i64) -> Vec<FleetEvent> {
        let mut events = Vec::new();
        let limit = self.config.offline_after_secs as i64 * 1000;
        let silent: Vec<(String, i64)> = self
            .terminals
            .values()
            .filter(|t| now_ms - t.last_seen_ms >= limit && !t.open_alerts.contains_key(OFFLINE))
            .map(|t| (t.id.clone(), t.last_seen_ms))
            .collect();
        for (id, last_seen) in silent {
            if let Some(t) = self.terminals.get_mut(&id) {
                if t.online {
                    t.online = false;
                }
            }
            let detail = format!("not heard from since {}", rfc3339_ms(last_seen));
            self.set_condition(&id, OFFLINE, true, now_ms, detail, &mut events);
        }
        self.close_quiet_alerts(now_ms, &mut events);
        events
    }

    /// Closes recovered alerts whose condition stayed away `close_after`.
    fn close_quiet_alerts(&mut self, now_ms: i64, events: &mut Vec<FleetEvent>) {
        let due: Vec<u64> = self
            .alerts
            .values()
            .filter(|a| a.lifecycle == RECOVERED)
            .filter(|a| {
                a.cleared_at
                    .as_deref()
                    .and_then(crate::clock::parse_rfc3339_ms)
                    .is_none_or(|at| now_ms - at >= self.close_after_ms)
            })
            .map(|a| a.id)
            .collect();
        for id in due {
            if let Some(alert) = self.alerts.get_mut(&id) {
                lifecycle::close(alert, now_ms);
                events.push(FleetEvent::Alert(alert.clone()));
            }
        }
        self.forget_old_alerts();
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

    /// The recovered (not yet closed) alert of this condition, if any.
    fn recovered(&self, terminal: &str, zone: Option<&str>, kind: &str) -> Option<u64> {
        self.alerts
            .values()
            .rev()
            .find(|a| {
                a.lifecycle == RECOVERED
                    && a.kind == kind
                    && a.terminal == terminal
                    && a.zone.as_deref() == zone
            })
            .map(|a| a.id)
    }

    /// Raises `kind`, or reopens its recovered alert.
    fn raise_or_reopen(
        &mut self,
        terminal: &str,
        zone: Option<&str>,
        kind: &str,
        now_ms: i64,
        detail: String,
    ) -> Alert {
        if let Some(id) = self.recovered(terminal, zone, kind) {
            if let Some(alert) = self.alerts.get_mut(&id) {
                lifecycle::reopen(alert, detail);
                return alert.clone();
            }
        }
        self.raise(terminal, zone, kind, now_ms, detail)
    }

    fn is_open(&self, terminal: &str, kind: &str) -> bool {
        self.terminals
            .get(terminal)
            .is_some_and(|t| t.open_alerts.contains_key(kind))
    }

    /// Raises or clears `kind` for `terminal` if its state changes.
    fn set_condition(
        &mut self,
        terminal: &str,
        kind: &str,
        active: bool,
        now_ms: i64,
        detail: String,
        events: &mut Vec<FleetEvent>,
    ) {
        let Some(open) = self
            .terminals
            .get(terminal)
            .map(|t| t.open_alerts.get(kind).copied())
        else {
            return;
        };
        let changed = match (open, active) {
            (None, true) => {
                let alert = self.raise_or_reopen(terminal, None, kind, now_ms, detail);
                if let Some(t) = self.terminals.get_mut(terminal) {
                    t.open_alerts.insert(kind.to_string(), alert.id);
                }
                Some(alert)
            }
            (Some(id), false) => {
                if let Some(t) = self.terminals.get_mut(terminal) {
                    t.open_alerts.remove(kind);
                }
                self.clear(id, now_ms)
            }
            _ => return,
        };
        if let Some(alert) = changed {
            events.push(FleetEvent::Alert(alert));
        }
        events.push(FleetEvent::Health(terminal.to_string()));
    }

    /// Creates and stores a raised alert.
    fn raise(
        &mut self,
        terminal: &str,
        zone: Option<&str>,
        kind: &str,
        now_ms: i64,
        detail: String,
    ) -> Alert {
        let id = self.next_alert_id;
        self.next_alert_id += 1;
        let mut alert = Alert {
            schema: ALERT_SCHEMA.into(),
            id,
            site: self.site.clone(),
            terminal: terminal.to_string(),
            kind: kind.to_string(),
            severity: severity(kind).into(),
            raised_at: rfc3339_ms(now_ms),
            detail,
            zone: zone.map(str::to_string),
            ..Alert::default()
        };
        lifecycle::start(&mut alert);
        self.alerts.insert(id, alert.clone());
        alert
    }

    /// The condition of a stored alert recovered.
    fn clear(&mut self, id: u64, now_ms: i64) -> Option<Alert> {
        let alert = self.alerts.get_mut(&id)?;
        lifecycle::recover(alert, now_ms);
        Some(alert.clone())
    }

    /// Raises or clears a zone's `zone_unhappy` alert; returns the alert if
    /// its state changed.
    pub fn set_zone_unhappy(
        &mut self,
        now_ms: i64,
        zone: &str,
        zone_name: &str,
        unhappy: bool,
        detail: String,
    ) -> Option<Alert> {
        self.set_zone_condition(now_ms, ZONE_UNHAPPY, zone, zone_name, unhappy, detail)
    }

    /// Raises or clears a zone alert of `kind` (`zone_unhappy`,
    /// `zone_happy`); returns the alert if its state changed.
    pub fn set_zone_condition(
        &mut self,
        now_ms: i64,
        kind: &str,
        zone: &str,
        zone_name: &str,
        active: bool,
        detail: String,
    ) -> Option<Alert> {
        let key = (kind.to_string(), zone.to_string());
        match (self.open_zone_alerts.get(&key).copied(), active) {
            (None, true) => {
                let alert = self.raise_or_reopen(
                    "",
                    Some(zone),
                    kind,
                    now_ms,
                    format!("{zone_name}: {detail}"),
                );
                self.open_zone_alerts.insert(key, alert.id);
                Some(alert)
            }
            (Some(id), false) => {
                self.open_zone_alerts.remove(&key);
                self.clear(id, now_ms)
            }
            _ => None,
        }
    }

    /// Zones with an open alert of `kind`.
    pub fn zones_with<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a str> {
        self.open_zone_alerts
            .keys()
            .filter(move |(k, _)| k == kind)
            .map(|(_, z)| z.as_str())
    }

    /// The health document of a terminal.
    pub fn health(&self, id: &str) -> Option<TerminalHealth> {
        let t = self.terminals.get(id)?;
        let hb = t.last_heartbeat.as_ref();
        Some(TerminalHealth {
            schema: HEALTH_SCHEMA.into(),
            id: t.id.clone(),
            site: self.site.clone(),
            online: t.online,
            first_seen: rfc3339_ms(t.first_seen_ms),
            last_seen: rfc3339_ms(t.last_seen_ms),
            last_heartbeat: hb.map(|h| rfc3339_ms(h.at_ms)),
            boot: hb.map(|h| h.heartbeat.boot),
            firmware: hb.map(|h| h.heartbeat.firmware.to_string()),
            uptime_secs: hb.map(|h| h.heartbeat.uptime_ms / 1000),
            battery_mv: hb.and_then(|h| h.heartbeat.battery_mv),
            rssi_dbm: hb.and_then(|h| h.heartbeat.rssi_dbm),
            queue_depth: hb.map(|h| h.heartbeat.queue_depth),
            queue_capacity: hb.map(|h| h.heartbeat.queue_capacity),
            dropped_presses: hb.map(|h| h.heartbeat.dropped_presses),
            reset_reason: hb.map(|h| {
                ResetReason::from_code(h.heartbeat.reset_reason)
                    .name()
                    .to_string()
            }),
            presses_total: t.presses_total,
            open_alerts: t.open_alerts.keys().cloned().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pressline_protocol::FirmwareVersion;

    const T0: i64 = 1_790_000_000_000;

    fn hb(battery: u16, rssi: i8, depth: u32) -> Heartbeat {
        Heartbeat {
            boot: 1,
            uptime_ms: 1000,
            firmware: FirmwareVersion {
                major: 1,
                minor: 0,
                patch: 0,
            },
            battery_mv: Some(battery),
            rssi_dbm: Some(rssi),
            queue_depth: depth,
            queue_capacity: 100,
            dropped_presses: 0,
            reset_reason: 1,
            unix_time_ms: Some(T0 as u64),
        }
    }

    fn raised(events: &[FleetEvent]) -> Vec<(String, String)> {
        events
            .iter()
            .filter_map(|e| match e {
                FleetEvent::Alert(a) => Some((a.kind.clone(), a.state.clone())),
                _ => None,
            })
            .collect()
    }

    fn pair(kind: &str, state: &str) -> Vec<(String, String)> {
        vec![(kind.to_string(), state.to_string())]
    }

    #[test]
    fn the_alert_history_keeps_every_open_alert_and_the_newest_cleared_ones() {
        let config = HealthConfig {
            alert_history: 3,
            ..HealthConfig::default()
        };
        let mut f = Fleet::new("s", config.clone());
        // Ten zones turn unhappy and back; one stays unhappy.
        for i in 0..10 {
            f.set_zone_unhappy(i * 1000, &format!("z{i}"), "Z", true, String::new());
        }
        for i in 1..10 {
            f.set_zone_unhappy(
                20_000 + i * 1000,
                &format!("z{i}"),
                "Z",
                false,
                String::new(),
            );
        }
        // Recovered alerts stay (they may reopen) until they close.
        assert_eq!(f.alerts().count(), 10);
        let closed = f.poll(30_000 + DEFAULT_CLOSE_AFTER_SECS as i64 * 1000);
        assert_eq!(closed.len(), 9);
        let kept: Vec<(u64, &str)> = f.alerts().map(|a| (a.id, a.state.as_str())).collect();
        assert_eq!(
            kept,
            vec![
                (10, "cleared"),
                (9, "cleared"),
                (8, "cleared"),
                (1, "raised")
            ]
        );
        assert_eq!(f.take_forgotten(), vec![2, 3, 4, 5, 6, 7]);
        assert!(f.take_forgotten().is_empty());
        // A store that kept more (an older gateway) is trimmed at restore.
        let all: Vec<Alert> = (1..=6)
            .map(|id| {
                let mut a = f.alerts().next().unwrap().clone();
                a.id = id;
                a
            })
            .collect();
        let mut g = Fleet::restore("s", config, Vec::new(), all);
        assert_eq!(g.alerts().count(), 3);
        assert_eq!(g.take_forgotten(), vec![1, 2, 3]);
    }

    #[test]
    fn a_zone_alert_lives_through_acknowledgement_recovery_a_flap_and_closing() {
        let mut f = Fleet::new("arena", HealthConfig::default());
        let raised = f
            .set_zone_unhappy(T0, "food", "Food court", true, "62%".into())
            .unwrap();
        assert_eq!((raised.id, raised.lifecycle.as_str()), (1, "raised"));
        let acked = f
            .acknowledge(T0 + 60_000, 1, "Anna", Some("on my way"))
            .unwrap()
            .unwrap();
        assert_eq!(acked.lifecycle, "acknowledged");
        assert_eq!(
            f.acknowledge(T0 + 61_000, 1, "Ben", None),
            Ok(None),
            "first one stands"
        );
        assert_eq!(
            f.escalate(T0 + 600_000, 1),
            None,
            "acknowledged alerts do not escalate"
        );
        let recovered = f
            .set_zone_unhappy(T0 + 120_000, "food", "Food court", false, String::new())
            .unwrap();
        assert_eq!(recovered.lifecycle, "recovered");
        // The figures turn bad again before it closes: the same alert.
        let again = f
            .set_zone_unhappy(T0 + 180_000, "food", "Food court", true, "58%".into())
            .unwrap();
        assert_eq!(
            (again.id, again.event.as_deref(), again.reopened),
            (1, Some("reopened"), 1)
        );
        assert_eq!(again.lifecycle, "acknowledged");
        assert_eq!(again.detail, "Food court: 58%");
        f.set_zone_unhappy(T0 + 240_000, "food", "Food court", false, String::new())
            .unwrap();
        // Quiet for the close delay: closed; the next bad spell is a new alert.
        assert!(f
            .poll(T0 + 240_000 + DEFAULT_CLOSE_AFTER_SECS as i64 * 1000 - 1)
            .is_empty());
        let closed = f.poll(T0 + 240_000 + DEFAULT_CLOSE_AFTER_SECS as i64 * 1000);
        assert!(
            matches!(&closed[..], [FleetEvent::Alert(a)] if a.lifecycle == "closed" && a.revision == 6)
        );
        let next = f
            .set_zone_unhappy(T0 + 2_000_000, "food", "Food court", true, "70%".into())
            .unwrap();
        assert_eq!((next.id, next.revision), (2, 1));
        assert_eq!(f.acknowledge(T0, 1, "Anna", None), Err(AckError::Closed(1)));
        assert_eq!(
            f.acknowledge(T0, 99, "Anna", None),
            Err(AckError::Unknown(99))
        );
    }

    #[test]
    fn praise_is_its_own_informational_alert_and_survives_a_restart() {
        let mut f = Fleet::new("arena", HealthConfig::default());
        let praise = f
            .set_zone_condition(T0, ZONE_HAPPY, "bar", "South bar", true, "95% happy".into())
            .unwrap();
        assert_eq!(
            (praise.kind.as_str(), praise.severity.as_str()),
            (ZONE_HAPPY, "info")
        );
        assert_eq!(praise.detail, "South bar: 95% happy");
        // The same zone turning unhappy later is another alert.
        let unhappy = f
            .set_zone_unhappy(T0 + 1, "bar", "South bar", true, "50%".into())
            .unwrap();
        assert_ne!(unhappy.id, praise.id);
        let restored = Fleet::restore(
            "arena",
            HealthConfig::default(),
            Vec::new(),
            f.alerts().cloned().collect(),
        );
        assert_eq!(restored.zones_with(ZONE_HAPPY).collect::<Vec<_>>(), ["bar"]);
        assert_eq!(
            restored.zones_with(ZONE_UNHAPPY).collect::<Vec<_>>(),
            ["bar"]
        );
    }

    #[test]
    fn an_unacknowledged_alert_escalates_once() {
        let mut f = Fleet::new("arena", HealthConfig::default());
        f.handle_heartbeat(T0, "t1", hb(3300, -60, 0));
        let id = f.alerts().next().unwrap().id;
        let e = f.escalate(T0 + 600_000, id).unwrap();
        assert_eq!((e.event.as_deref(), e.revision), (Some("escalated"), 2));
        assert!(e.escalated_at.is_some());
        assert_eq!(f.escalate(T0 + 700_000, id), None);
        assert_eq!(
            f.mark_notified(id, &["techs".into()]).unwrap().notified,
            ["techs"]
        );
        assert_eq!(f.mark_notified(id, &["techs".into()]), None, "unchanged");
    }

    #[test]
    fn a_healthy_heartbeat_registers_the_terminal_without_alerts() {
        let mut f = Fleet::new("arena", HealthConfig::default());
        let ev = f.handle_heartbeat(T0, "t1", hb(3900, -60, 0));
        assert!(raised(&ev).is_empty());
        let h = f.health("t1").unwrap();
        assert!(h.online);
        assert_eq!(h.firmware.as_deref(), Some("1.0.0"));
        assert_eq!(h.battery_mv, Some(3900));
        assert_eq!(h.reset_reason.as_deref(), Some("power_on"));
    }

    #[test]
    fn low_battery_raises_once_and_clears_with_hysteresis() {
        let mut f = Fleet::new("arena", HealthConfig::default());
        assert_eq!(
            raised(&f.handle_heartbeat(T0, "t1", hb(3400, -60, 0))),
            pair(LOW_BATTERY, "raised")
        );
        assert!(raised(&f.handle_heartbeat(T0 + 1, "t1", hb(3390, -60, 0))).is_empty());
        // Just above the threshold is not enough to clear.
        assert!(raised(&f.handle_heartbeat(T0 + 2, "t1", hb(3550, -60, 0))).is_empty());
        assert_eq!(
            raised(&f.handle_heartbeat(T0 + 3, "t1", hb(3650, -60, 0))),
            pair(LOW_BATTERY, "cleared")
        );
        let a = f.alerts().next().unwrap();
        assert_eq!(
            (a.state.as_str(), a.severity.as_str()),
            ("cleared", "warning")
        );
        assert!(a.cleared_at.is_some());
    }

    #[test]
    fn silence_makes_a_terminal_offline_and_any_sign_of_life_clears_it() {
        let mut f = Fleet::new(
            "arena",
            HealthConfig {
                offline_after_secs: 60,
                ..Default::default()
            },
        );
        f.handle_heartbeat(T0, "t1", hb(3900, -60, 0));
        assert!(f.poll(T0 + 59_000).is_empty());
        let ev = f.poll(T0 + 60_000);
        assert_eq!(raised(&ev), pair(OFFLINE, "raised"));
        assert!(!f.health("t1").unwrap().online);
        assert_eq!(f.alerts().next().unwrap().severity, "critical");
        assert!(raised(&f.poll(T0 + 120_000)).is_empty(), "raised once");
        assert_eq!(
            raised(&f.handle_press(T0 + 130_000, "t1", Button::Happy, T0 + 130_000)),
            pair(OFFLINE, "cleared")
        );
        assert!(f.health("t1").unwrap().online);
    }

    #[test]
    fn a_last_will_marks_offline_at_once_and_alerts_after_the_threshold() {
        let mut f = Fleet::new(
            "arena",
            HealthConfig {
                offline_after_secs: 60,
                ..Default::default()
            },
        );
        f.handle_heartbeat(T0, "t1", hb(3900, -60, 0));
        f.handle_will(T0 + 1000, "t1");
        assert!(!f.health("t1").unwrap().online);
        assert!(raised(&f.poll(T0 + 30_000)).is_empty());
        assert_eq!(raised(&f.poll(T0 + 60_000)), pair(OFFLINE, "raised"));
    }

    #[test]
    fn weak_wifi_queue_filling_and_clock_skew() {
        let mut f = Fleet::new("arena", HealthConfig::default());
        assert_eq!(
            raised(&f.handle_heartbeat(T0, "t1", hb(3900, -85, 0))),
            pair(WEAK_WIFI, "raised")
        );
        assert!(raised(&f.handle_heartbeat(T0, "t1", hb(3900, -78, 0))).is_empty());
        assert_eq!(
            raised(&f.handle_heartbeat(T0, "t1", hb(3900, -70, 0))),
            pair(WEAK_WIFI, "cleared")
        );
        assert_eq!(
            raised(&f.handle_heartbeat(T0, "t2", hb(3900, -60, 60))),
            pair(QUEUE_FILLING, "raised")
        );
        assert_eq!(
            raised(&f.handle_heartbeat(T0, "t2", hb(3900, -60, 10))),
            pair(QUEUE_FILLING, "cleared")
        );
        let mut skewed = hb(3900, -60, 0);
        skewed.unix_time_ms = Some((T0 - 600_000) as u64);
        assert_eq!(
            raised(&f.handle_heartbeat(T0, "t3", skewed)),
            pair(CLOCK_SKEW, "raised")
        );
    }

    /// A fleet whose `stuck_button` rule trips after 5 presses in a row
    /// less than 100 ms apart.
    fn fleet_stuck_after_5_presses_under_100_ms() -> Fleet {
        Fleet::new(
            "arena",
            HealthConfig {
                stuck_fast_run: 5,
                stuck_min_interval_ms: 100,
                ..Default::default()
            },
        )
    }

    #[test]
    fn presses_faster_than_a_person_can_press_look_stuck() {
        let mut f = fleet_stuck_after_5_presses_under_100_ms();
        let buttons = [Button::Happy, Button::Unhappy];
        let mut all = Vec::new();
        for i in 0..6i64 {
            all.extend(raised(&f.handle_press(
                T0 + i * 30,
                "t1",
                buttons[i as usize % 2],
                T0 + i * 30,
            )));
        }
        assert_eq!(all, pair(STUCK_BUTTON, "raised"));
        // A human-paced press of another button clears it.
        let ev = f.handle_press(T0 + 10_000, "t1", Button::VeryHappy, T0 + 10_000);
        assert_eq!(raised(&ev), pair(STUCK_BUTTON, "cleared"));
    }

    #[test]
    fn mashing_every_button_raises_stuck_once_and_clears_once_at_a_human_pace() {
        // Hysteresis: once raised, a fast press of another button does not
        // clear it (which re-raised it on the next press, an alert upstream
        // and a log line per press while someone drums on the buttons).
        let mut f = fleet_stuck_after_5_presses_under_100_ms();
        let buttons = [
            Button::VeryUnhappy,
            Button::Unhappy,
            Button::Happy,
            Button::VeryHappy,
        ];
        let mut all = Vec::new();
        for i in 0..200i64 {
            let at = T0 + i * 20;
            all.extend(raised(&f.handle_press(
                at,
                "t1",
                buttons[(i * 7 % 4) as usize],
                at,
            )));
        }
        assert_eq!(all, pair(STUCK_BUTTON, "raised"));
        let at = T0 + 200 * 20 + 5_000;
        let ev = f.handle_press(at, "t1", Button::Happy, at);
        assert_eq!(raised(&ev), pair(STUCK_BUTTON, "cleared"));
    }

    #[test]
    fn one_button_only_for_a_long_run_looks_stuck_but_a_child_pressing_does_not() {
        let mut f = Fleet::new(
            "arena",
            HealthConfig {
                stuck_same_button_run: 10,
                ..Default::default()
            },
        );
        // A child presses 8 times in 2 s: fast, but neither rule trips.
        for i in 0..8i64 {
            assert!(
                raised(&f.handle_press(T0 + i * 250, "kid", Button::VeryHappy, T0 + i * 250))
                    .is_empty()
            );
        }
        let mut all = Vec::new();
        for i in 0..10i64 {
            all.extend(raised(&f.handle_press(
                T0 + i * 5_000,
                "t1",
                Button::VeryUnhappy,
                T0 + i * 5_000,
            )));
        }
        assert_eq!(all, pair(STUCK_BUTTON, "raised"));
    }

    #[test]
    fn state_survives_a_restore() {
        let mut f = Fleet::new("arena", HealthConfig::default());
        f.handle_heartbeat(T0, "t1", hb(3000, -60, 0));
        let terminals: Vec<_> = f.terminals().cloned().collect();
        let alerts: Vec<_> = f.alerts().cloned().collect();
        let mut g = Fleet::restore("arena", HealthConfig::default(), terminals, alerts);
        assert_eq!(g.health("t1"), f.health("t1"));
        // The open alert is still open (no second raise) and new ids do not collide.
        assert!(raised(&g.handle_heartbeat(T0 + 1, "t1", hb(3000, -60, 0))).is_empty());
        let ev = g.handle_heartbeat(T0 + 2, "t2", hb(3000, -60, 0));
        match &ev[0] {
            FleetEvent::Alert(a) => assert_eq!(a.id, 2),
            other => panic!("{other:?}"),
        }
    }
}
