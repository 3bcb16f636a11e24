//! Every terminal of a site and the alerts their health raises, as a
//! sans-IO state machine.
//!
//! Inputs carry the time (`now_ms`, Unix milliseconds) so the rules are
//! tested with a virtual clock: [`Monitor::handle_heartbeat`],
//! [`Monitor::handle_press`], [`Monitor::handle_will`], and
//! [`Monitor::poll`] for time-based rules. Every call returns the
//! [`Change`]s it caused (alerts raised or cleared, a terminal's health
//! changed); the caller ([`super::registry`]) persists and publishes them.
//! The rules themselves are in [`super::health`]; the alerts live in an
//! [`AlertBook`] that zone rules share.

use std::collections::BTreeMap;

use pressline_protocol::power::Energy;
use pressline_protocol::upstream::{Alert, AlertKind, TerminalHealth};
use pressline_protocol::{Button, Heartbeat};

use super::health::{Condition, HealthConfig, TerminalState};
use crate::alerting::book::AlertBook;
use crate::clock::rfc3339_ms;

/// What a call changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An alert moved on (its `event` says how).
    Alert(Alert),
    /// A terminal's health document changed (online state, heartbeat, alerts).
    Health(String),
    /// An unknown terminal silent for long enough was forgotten: its
    /// saved state goes too. With its last health document (offline), for
    /// upstream when it went offline in the same poll.
    Forgotten(String, Box<TerminalHealth>),
}

/// The terminals of one site and their alerts.
#[derive(Debug, Clone)]
pub struct Monitor {
    site: String,
    config: HealthConfig,
    terminals: BTreeMap<String, TerminalState>,
    alerts: AlertBook,
    /// When this gateway started: silence is counted from no earlier, so
    /// a restart (or an upgrade) longer than `offline_after_secs` does not
    /// page anyone for every terminal that was heard from before it.
    started_ms: i64,
}

impl Monitor {
    pub fn new(site: &str, config: HealthConfig) -> Monitor {
        Monitor {
            site: site.into(),
            alerts: AlertBook::new(site, config.alert_history),
            config,
            terminals: BTreeMap::new(),
            started_ms: i64::MIN,
        }
    }

    /// Restores persisted state at a gateway start (`started_ms`).
    pub fn restore(
        site: &str,
        config: HealthConfig,
        terminals: Vec<TerminalState>,
        alerts: Vec<Alert>,
        started_ms: i64,
    ) -> Monitor {
        Monitor {
            site: site.into(),
            alerts: AlertBook::restore(site, config.alert_history, alerts),
            config,
            terminals: terminals.into_iter().map(|t| (t.id.clone(), t)).collect(),
            started_ms,
        }
    }

    /// When the gateway started, by the wall clock as it reads now: the
    /// caller measures the time since start with a monotonic clock, so a
    /// clock stepped forward after start (a box without a real-time clock
    /// setting its time from NTP) does not end the grace early.
    pub fn set_started(&mut self, started_ms: i64) {
        self.started_ms = started_ms;
    }

    pub fn terminal(&self, id: &str) -> Option<&TerminalState> {
        self.terminals.get(id)
    }

    pub fn terminals(&self) -> impl Iterator<Item = &TerminalState> {
        self.terminals.values()
    }

    /// The site's alerts (terminal and zone).
    pub fn alerts(&self) -> &AlertBook {
        &self.alerts
    }

    /// The site's alerts, to acknowledge, escalate, or raise zone alerts.
    pub fn alerts_mut(&mut self) -> &mut AlertBook {
        &mut self.alerts
    }

    /// The health document of a terminal.
    pub fn health(&self, id: &str) -> Option<TerminalHealth> {
        Some(self.terminals.get(id)?.document(&self.site))
    }

    /// A heartbeat arrived.
    pub fn handle_heartbeat(&mut self, now_ms: i64, terminal: &str, hb: Heartbeat) -> Vec<Change> {
        self.handle_heartbeat_with_energy(now_ms, terminal, hb, None)
    }

    /// A heartbeat arrived, with the terminal's energy counters (version 3).
    pub fn handle_heartbeat_with_energy(
        &mut self,
        now_ms: i64,
        terminal: &str,
        hb: Heartbeat,
        energy: Option<Energy>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let config = self.config.clone();
        let conditions = self
            .seen(terminal, now_ms, &mut changes)
            .heartbeat(&config, now_ms, hb, energy);
        for condition in conditions {
            self.set_condition(terminal, condition, now_ms, &mut changes);
        }
        changes.push(Change::Health(terminal.to_string()));
        changes
    }

    /// A new (not duplicate) press was stored. `pressed_at_ms` is when it
    /// happened (falls back to arrival time).
    pub fn handle_press(
        &mut self,
        now_ms: i64,
        terminal: &str,
        button: Button,
        pressed_at_ms: i64,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let config = self.config.clone();
        let stuck = self
            .seen(terminal, now_ms, &mut changes)
            .press(&config, button, pressed_at_ms);
        self.set_condition(terminal, stuck, now_ms, &mut changes);
        changes
    }

    /// The terminal was heard from in some other way (a resend of a press
    /// already stored): it is there.
    pub fn handle_seen(&mut self, now_ms: i64, terminal: &str) -> Vec<Change> {
        let mut changes = Vec::new();
        self.seen(terminal, now_ms, &mut changes);
        changes
    }

    /// The terminal's last will arrived: it is gone now.
    pub fn handle_will(&mut self, _now_ms: i64, terminal: &str) -> Vec<Change> {
        match self.terminals.get_mut(terminal) {
            Some(t) if t.online => {
                t.online = false;
                vec![Change::Health(terminal.to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// Time-based rules: terminals silent for too long go offline (silence
    /// counted from this gateway's start at the earliest); recovered
    /// alerts quiet for long enough close.
    ///
    /// `known` says whether the site knows a terminal (registered, or
    /// placed in a zone). Only a known terminal's silence raises `offline`:
    /// in open mode any client can invent ids, and an alert per invented
    /// id would page people for nothing and never clear. An unknown
    /// terminal silent for `forget_unknown_after_secs` is forgotten, so
    /// invented ids leave no state behind ([`Change::Forgotten`]).
    pub fn poll(&mut self, now_ms: i64, known: impl Fn(&str) -> bool) -> Vec<Change> {
        let mut changes = Vec::new();
        self.mark_silent(now_ms, &known, &mut changes);
        self.forget_unknown(now_ms, &known, &mut changes);
        changes.extend(
            self.alerts
                .close_quiet(now_ms)
                .into_iter()
                .map(Change::Alert),
        );
        changes
    }

    /// When an unknown terminal's silence makes it forgotten: never before
    /// it went offline.
    pub fn forget_after_ms(&self) -> i64 {
        let secs = self
            .config
            .forget_unknown_after_secs
            .max(self.config.offline_after_secs);
        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// How long a terminal has been silent, counted from this gateway's
    /// start at the earliest.
    fn silent_ms(&self, t: &TerminalState, now_ms: i64) -> i64 {
        now_ms - t.last_seen_ms.max(self.started_ms)
    }

    /// Terminals silent past `offline_after_secs` go offline; a known one
    /// raises `offline`.
    fn mark_silent(
        &mut self,
        now_ms: i64,
        known: &impl Fn(&str) -> bool,
        changes: &mut Vec<Change>,
    ) {
        let silent: Vec<(String, i64)> = self
            .terminals
            .values()
            .filter(|t| self.silent_ms(t, now_ms) >= t.offline_after_ms(&self.config))
            .filter(|t| t.online || (known(&t.id) && !t.is_open(&AlertKind::Offline)))
            .map(|t| (t.id.clone(), t.last_seen_ms))
            .collect();
        for (id, last_seen) in silent {
            if let Some(t) = self.terminals.get_mut(&id) {
                t.online = false;
            }
            if !known(&id) {
                changes.push(Change::Health(id));
                continue;
            }
            let offline = Condition {
                kind: AlertKind::Offline,
                holds: true,
                detail: format!("not heard from since {}", rfc3339_ms(last_seen)),
            };
            self.set_condition(&id, offline, now_ms, changes);
        }
    }

    /// Unknown terminals silent past `forget_unknown_after_secs` are
    /// forgotten; their open alerts recover first, so none stays open
    /// without a terminal.
    fn forget_unknown(
        &mut self,
        now_ms: i64,
        known: &impl Fn(&str) -> bool,
        changes: &mut Vec<Change>,
    ) {
        let limit = self.forget_after_ms();
        let gone: Vec<String> = self
            .terminals
            .values()
            .filter(|t| {
                // Never before it is offline (a terminal on batteries is
                // heard from every 15 minutes).
                let limit = limit.max(t.offline_after_ms(&self.config));
                self.silent_ms(t, now_ms) >= limit && !known(&t.id)
            })
            .map(|t| t.id.clone())
            .collect();
        for id in gone {
            let Some(t) = self.terminals.remove(&id) else {
                continue;
            };
            for alert in t.open_alerts.values() {
                changes.extend(self.alerts.recover(*alert, now_ms).map(Change::Alert));
            }
            let mut last = t.document(&self.site);
            last.open_alerts.clear();
            changes.push(Change::Forgotten(id, Box::new(last)));
        }
    }

    /// The terminal, now heard from: registered if new, back online (its
    /// `offline` alert recovered) if it was away.
    fn seen(
        &mut self,
        terminal: &str,
        now_ms: i64,
        changes: &mut Vec<Change>,
    ) -> &mut TerminalState {
        let came_back = match self.terminals.get_mut(terminal) {
            Some(t) => {
                t.last_seen_ms = t.last_seen_ms.max(now_ms);
                !std::mem::replace(&mut t.online, true)
            }
            None => {
                self.terminals
                    .insert(terminal.to_string(), TerminalState::new(terminal, now_ms));
                true
            }
        };
        if came_back {
            let back = Condition {
                kind: AlertKind::Offline,
                holds: false,
                detail: String::new(),
            };
            self.set_condition(terminal, back, now_ms, changes);
        }
        self.terminals.get_mut(terminal).expect("inserted above")
    }

    /// Raises or clears a terminal's condition if it changed.
    fn set_condition(
        &mut self,
        terminal: &str,
        condition: Condition,
        now_ms: i64,
        changes: &mut Vec<Change>,
    ) {
        let Some(t) = self.terminals.get_mut(terminal) else {
            return;
        };
        let Condition {
            kind,
            holds,
            detail,
        } = condition;
        let changed = match (t.open_alerts.get(&kind).copied(), holds) {
            (None, true) => {
                let alert = self
                    .alerts
                    .raise_or_reopen(terminal, None, &kind, now_ms, detail);
                t.open_alerts.insert(kind, alert.id);
                Some(alert)
            }
            (Some(id), false) => {
                t.open_alerts.remove(&kind);
                self.alerts.recover(id, now_ms)
            }
            _ => return,
        };
        changes.extend(changed.map(Change::Alert));
        changes.push(Change::Health(terminal.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pressline_protocol::upstream::{AlertState, Severity};
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

    fn raised(changes: &[Change]) -> Vec<(AlertKind, AlertState)> {
        changes
            .iter()
            .filter_map(|e| match e {
                Change::Alert(a) => Some((a.kind.clone(), a.state.clone())),
                _ => None,
            })
            .collect()
    }

    fn pair(kind: AlertKind, state: AlertState) -> Vec<(AlertKind, AlertState)> {
        vec![(kind, state)]
    }

    use AlertKind::{ClockSkew, LowBattery, Offline, QueueFilling, StuckButton, WeakWifi};
    use AlertState::{Cleared, Raised};

    #[test]
    fn a_healthy_heartbeat_registers_the_terminal_without_alerts() {
        let mut m = Monitor::new("arena", HealthConfig::default());
        let ev = m.handle_heartbeat(T0, "t1", hb(3900, -60, 0));
        assert!(raised(&ev).is_empty());
        let h = m.health("t1").unwrap();
        assert!(h.online);
        assert_eq!(h.firmware.as_deref(), Some("1.0.0"));
        assert_eq!(h.battery_mv, Some(3900));
        assert_eq!(h.reset_reason.as_deref(), Some("power_on"));
    }

    #[test]
    fn low_battery_raises_once_and_clears_with_hysteresis() {
        let mut m = Monitor::new("arena", HealthConfig::default());
        assert_eq!(
            raised(&m.handle_heartbeat(T0, "t1", hb(3400, -60, 0))),
            pair(LowBattery, Raised)
        );
        assert!(raised(&m.handle_heartbeat(T0 + 1, "t1", hb(3390, -60, 0))).is_empty());
        // Just above the threshold is not enough to clear.
        assert!(raised(&m.handle_heartbeat(T0 + 2, "t1", hb(3550, -60, 0))).is_empty());
        assert_eq!(
            raised(&m.handle_heartbeat(T0 + 3, "t1", hb(3650, -60, 0))),
            pair(LowBattery, Cleared)
        );
        let a = m.alerts().iter().next().unwrap();
        assert_eq!((&a.state, &a.severity), (&Cleared, &Severity::Warning));
        assert!(a.cleared_at.is_some());
        assert!(m.health("t1").unwrap().open_alerts.is_empty());
    }

    #[test]
    fn silence_makes_a_terminal_offline_and_any_sign_of_life_clears_it() {
        let mut m = Monitor::new(
            "arena",
            HealthConfig {
                offline_after_secs: 60,
                ..Default::default()
            },
        );
        m.handle_heartbeat(T0, "t1", hb(3900, -60, 0));
        assert!(m.poll(T0 + 59_000, |_| true).is_empty());
        let ev = m.poll(T0 + 60_000, |_| true);
        assert_eq!(raised(&ev), pair(Offline, Raised));
        assert!(!m.health("t1").unwrap().online);
        assert_eq!(m.health("t1").unwrap().open_alerts, [Offline]);
        assert_eq!(
            m.alerts().iter().next().unwrap().severity,
            Severity::Critical
        );
        assert!(
            raised(&m.poll(T0 + 120_000, |_| true)).is_empty(),
            "raised once"
        );
        assert_eq!(
            raised(&m.handle_press(T0 + 130_000, "t1", Button::Happy, T0 + 130_000)),
            pair(Offline, Cleared)
        );
        assert!(m.health("t1").unwrap().online);
    }

    #[test]
    fn a_terminal_on_batteries_is_offline_after_three_of_its_heartbeat_periods() {
        use pressline_protocol::power::{Energy, PowerSettings};
        let mut m = Monitor::new(
            "arena",
            HealthConfig {
                offline_after_secs: 90,
                ..Default::default()
            },
        );
        let energy = Energy {
            settings: PowerSettings::BATTERY,
            awake_ms: Some(1_000),
            radio_on_ms: 60_000,
            wakeups: 10,
            joins: 4,
        };
        let mut beat = hb(3900, -60, 0);
        beat.uptime_ms = 3_600_000;
        m.handle_heartbeat_with_energy(T0, "t1", beat, Some(energy));
        assert!(m.poll(T0 + 2_699_000, |_| true).is_empty(), "radio off");
        assert_eq!(
            raised(&m.poll(T0 + 2_700_000, |_| true)),
            pair(Offline, Raised)
        );
        let doc = m.health("t1").unwrap().energy.unwrap();
        assert_eq!(doc.mode, "battery");
        assert_eq!(doc.heartbeat_every_secs, 900);
        assert!(doc.average_ua.is_some());
        let packs: Vec<&str> = doc
            .battery_life_days
            .iter()
            .map(|p| p.pack.as_str())
            .collect();
        assert_eq!(packs, ["3 x AA", "4 x D"]);
    }

    #[test]
    fn a_last_will_marks_offline_at_once_and_alerts_after_the_threshold() {
        let mut m = Monitor::new(
            "arena",
            HealthConfig {
                offline_after_secs: 60,
                ..Default::default()
            },
        );
        m.handle_heartbeat(T0, "t1", hb(3900, -60, 0));
        m.handle_will(T0 + 1000, "t1");
        assert!(!m.health("t1").unwrap().online);
        assert!(raised(&m.poll(T0 + 30_000, |_| true)).is_empty());
        assert_eq!(
            raised(&m.poll(T0 + 60_000, |_| true)),
            pair(Offline, Raised)
        );
    }

    #[test]
    fn weak_wifi_queue_filling_and_clock_skew() {
        let mut m = Monitor::new("arena", HealthConfig::default());
        assert_eq!(
            raised(&m.handle_heartbeat(T0, "t1", hb(3900, -85, 0))),
            pair(WeakWifi, Raised)
        );
        assert!(raised(&m.handle_heartbeat(T0, "t1", hb(3900, -78, 0))).is_empty());
        assert_eq!(
            raised(&m.handle_heartbeat(T0, "t1", hb(3900, -70, 0))),
            pair(WeakWifi, Cleared)
        );
        assert_eq!(
            raised(&m.handle_heartbeat(T0, "t2", hb(3900, -60, 60))),
            pair(QueueFilling, Raised)
        );
        assert_eq!(
            raised(&m.handle_heartbeat(T0, "t2", hb(3900, -60, 10))),
            pair(QueueFilling, Cleared)
        );
        let mut skewed = hb(3900, -60, 0);
        skewed.unix_time_ms = Some((T0 - 600_000) as u64);
        assert_eq!(
            raised(&m.handle_heartbeat(T0, "t3", skewed)),
            pair(ClockSkew, Raised)
        );
    }

    /// A monitor whose `stuck_button` rule trips after 5 presses in a row
    /// less than 100 ms apart.
    fn stuck_after_5_presses_under_100_ms() -> Monitor {
        Monitor::new(
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
        let mut m = stuck_after_5_presses_under_100_ms();
        let buttons = [Button::Happy, Button::Unhappy];
        let mut all = Vec::new();
        for i in 0..6i64 {
            let at = T0 + i * 30;
            all.extend(raised(&m.handle_press(
                at,
                "t1",
                buttons[i as usize % 2],
                at,
            )));
        }
        assert_eq!(all, pair(StuckButton, Raised));
        // A human-paced press of another button clears it.
        let ev = m.handle_press(T0 + 10_000, "t1", Button::VeryHappy, T0 + 10_000);
        assert_eq!(raised(&ev), pair(StuckButton, Cleared));
    }

    #[test]
    fn mashing_every_button_raises_stuck_once_and_clears_once_at_a_human_pace() {
        // Hysteresis: once raised, a fast press of another button does not
        // clear it (which re-raised it on the next press, an alert upstream
        // and a log line per press while someone drums on the buttons).
        let mut m = stuck_after_5_presses_under_100_ms();
        let buttons = [
            Button::VeryUnhappy,
            Button::Unhappy,
            Button::Happy,
            Button::VeryHappy,
        ];
        let mut all = Vec::new();
        for i in 0..200i64 {
            let at = T0 + i * 20;
            all.extend(raised(&m.handle_press(
                at,
                "t1",
                buttons[(i * 7 % 4) as usize],
                at,
            )));
        }
        assert_eq!(all, pair(StuckButton, Raised));
        let at = T0 + 200 * 20 + 5_000;
        let ev = m.handle_press(at, "t1", Button::Happy, at);
        assert_eq!(raised(&ev), pair(StuckButton, Cleared));
    }

    #[test]
    fn one_button_only_for_a_long_run_looks_stuck_but_a_child_pressing_does_not() {
        let mut m = Monitor::new(
            "arena",
            HealthConfig {
                stuck_same_button_run: 10,
                ..Default::default()
            },
        );
        // A child presses 8 times in 2 s: fast, but neither rule trips.
        for i in 0..8i64 {
            let at = T0 + i * 250;
            assert!(raised(&m.handle_press(at, "kid", Button::VeryHappy, at)).is_empty());
        }
        let mut all = Vec::new();
        for i in 0..10i64 {
            let at = T0 + i * 5_000;
            all.extend(raised(&m.handle_press(at, "t1", Button::VeryUnhappy, at)));
        }
        assert_eq!(all, pair(StuckButton, Raised));
    }

    #[test]
    fn state_survives_a_restore() {
        let mut m = Monitor::new("arena", HealthConfig::default());
        m.handle_heartbeat(T0, "t1", hb(3000, -60, 0));
        let terminals: Vec<_> = m.terminals().cloned().collect();
        let alerts: Vec<_> = m.alerts().iter().cloned().collect();
        let mut restored =
            Monitor::restore("arena", HealthConfig::default(), terminals, alerts, T0);
        assert_eq!(restored.health("t1"), m.health("t1"));
        // The open alert is still open (no second raise) and new ids do not collide.
        assert!(raised(&restored.handle_heartbeat(T0 + 1, "t1", hb(3000, -60, 0))).is_empty());
        let ev = restored.handle_heartbeat(T0 + 2, "t2", hb(3000, -60, 0));
        match &ev[0] {
            Change::Alert(a) => assert_eq!(a.id, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn after_a_restart_silence_counts_from_the_start_not_from_before_it() {
        let config = HealthConfig {
            offline_after_secs: 60,
            ..Default::default()
        };
        let mut m = Monitor::new("arena", config.clone());
        m.handle_heartbeat(T0, "back", hb(3900, -60, 0));
        m.handle_heartbeat(T0, "gone", hb(3900, -60, 0));
        let terminals: Vec<_> = m.terminals().cloned().collect();
        // The gateway was down for two minutes.
        let start = T0 + 120_000;
        let mut m = Monitor::restore("arena", config, terminals, Vec::new(), start);
        assert!(m.poll(start, |_| true).is_empty(), "no alert at start");
        assert!(
            m.poll(start + 59_000, |_| true).is_empty(),
            "nor within the grace"
        );
        m.handle_heartbeat(start + 5_000, "back", hb(3900, -60, 0));
        assert_eq!(
            raised(&m.poll(start + 60_000, |_| true)),
            pair(Offline, Raised),
            "one alert: the terminal that really stayed away"
        );
        assert!(m.health("back").unwrap().online);
        assert!(!m.health("gone").unwrap().online);
    }

    #[test]
    fn a_clock_stepped_forward_after_start_does_not_end_the_grace() {
        let config = HealthConfig {
            offline_after_secs: 60,
            ..Default::default()
        };
        let mut m = Monitor::new("arena", config.clone());
        m.handle_heartbeat(T0, "t1", hb(3900, -60, 0));
        let terminals: Vec<_> = m.terminals().cloned().collect();
        // Started by a clock an hour behind; 10 s later NTP steps it.
        let mut m = Monitor::restore("arena", config, terminals, Vec::new(), T0);
        let stepped = T0 + 3_600_000 + 10_000;
        m.set_started(stepped - 10_000);
        assert!(m.poll(stepped, |_| true).is_empty());
        assert_eq!(
            raised(&m.poll(stepped + 50_000, |_| true)),
            pair(Offline, Raised)
        );
    }

    #[test]
    fn a_resend_is_a_sign_of_life() {
        let mut m = Monitor::new(
            "arena",
            HealthConfig {
                offline_after_secs: 60,
                ..Default::default()
            },
        );
        m.handle_heartbeat(T0, "t1", hb(3900, -60, 0));
        assert_eq!(
            raised(&m.poll(T0 + 60_000, |_| true)),
            pair(Offline, Raised)
        );
        assert_eq!(
            raised(&m.handle_seen(T0 + 61_000, "t1")),
            pair(Offline, Cleared)
        );
    }

    fn forgets_unknown_after(offline_secs: u64, forget_secs: u64) -> Monitor {
        Monitor::new(
            "arena",
            HealthConfig {
                offline_after_secs: offline_secs,
                forget_unknown_after_secs: forget_secs,
                ..Default::default()
            },
        )
    }

    fn only_known(id: &str) -> bool {
        id.starts_with("known")
    }

    #[test]
    fn an_unknown_terminal_goes_offline_without_an_alert_and_is_forgotten_later() {
        let mut m = forgets_unknown_after(60, 600);
        m.handle_press(T0, "invented-1", Button::Happy, T0);
        m.handle_press(T0, "known-1", Button::Happy, T0);
        let ev = m.poll(T0 + 60_000, only_known);
        assert_eq!(raised(&ev), pair(Offline, Raised), "for the known one only");
        assert!(ev.contains(&Change::Health("invented-1".into())));
        assert!(!m.health("invented-1").unwrap().online);
        assert!(m.health("invented-1").unwrap().open_alerts.is_empty());
        assert!(m.poll(T0 + 599_000, only_known).is_empty());
        let ev = m.poll(T0 + 600_000, only_known);
        assert!(
            matches!(&ev[..], [Change::Forgotten(id, last)] if id == "invented-1" && !last.online)
        );
        assert!(m.health("invented-1").is_none());
        assert!(m.health("known-1").is_some(), "a known terminal stays");
        assert!(m.poll(T0 + 6_000_000, only_known).is_empty());
    }

    #[test]
    fn forgetting_never_comes_before_going_offline_and_carries_the_offline_document() {
        // Configured to forget sooner than it goes offline: both at 60 s.
        let mut m = forgets_unknown_after(60, 10);
        m.handle_press(T0, "invented-1", Button::Happy, T0);
        assert!(m.poll(T0 + 59_000, only_known).is_empty());
        let ev = m.poll(T0 + 60_000, only_known);
        assert!(ev.contains(&Change::Health("invented-1".into())));
        assert!(ev.iter().any(
            |c| matches!(c, Change::Forgotten(id, last) if id == "invented-1" && !last.online)
        ));
    }

    #[test]
    fn a_forgotten_terminal_leaves_no_open_alert_and_comes_back_as_new() {
        let mut m = forgets_unknown_after(60, 120);
        assert_eq!(
            raised(&m.handle_heartbeat(T0, "invented-1", hb(3000, -60, 0))),
            pair(LowBattery, Raised)
        );
        let ev = m.poll(T0 + 120_000, only_known);
        assert_eq!(raised(&ev), pair(LowBattery, Cleared));
        assert!(ev
            .iter()
            .any(|c| matches!(c, Change::Forgotten(id, _) if id == "invented-1")));
        assert!(m.alerts().iter().all(|a| !a.is_open()));
        m.handle_press(T0 + 200_000, "invented-1", Button::Happy, T0 + 200_000);
        let h = m.health("invented-1").unwrap();
        assert!(h.online);
        assert_eq!(h.presses_total, 1);
    }

    #[test]
    fn unknown_terminals_restored_at_a_start_are_forgotten_counting_from_the_start() {
        let mut m = forgets_unknown_after(60, 120);
        m.handle_press(T0, "invented-1", Button::Happy, T0);
        let terminals: Vec<_> = m.terminals().cloned().collect();
        let start = T0 + 3_600_000;
        let mut m = Monitor::restore("arena", m.config.clone(), terminals, Vec::new(), start);
        let forgotten = |ev: &[Change]| ev.iter().any(|c| matches!(c, Change::Forgotten(..)));
        assert!(!forgotten(&m.poll(start + 60_000, only_known)));
        assert!(forgotten(&m.poll(start + 120_000, only_known)));
    }

    #[test]
    fn terminal_state_saved_by_earlier_versions_still_loads() {
        // Open alerts keyed by their kind's word, as always stored.
        let saved = r#"{"id":"t1","first_seen_ms":1,"last_seen_ms":2,"online":true,"last_heartbeat":null,"presses_total":3,"last_press_ms":null,"fast_run":0,"same_button":null,"same_run":0,"open_alerts":{"low_battery":4}}"#;
        let state: TerminalState = serde_json::from_str(saved).unwrap();
        assert!(state.is_open(&LowBattery));
        assert_eq!(serde_json::to_string(&state).unwrap(), saved);
    }
}
