//! The health rules of one terminal, as pure functions of what it sent
//! (time comes in as `now_ms`): which conditions hold after a heartbeat or
//! a press. [`super::monitor::Monitor`] applies them to every terminal and
//! raises or clears the alerts.
//!
//! Rules (thresholds in [`HealthConfig`]), each raised once and cleared with
//! hysteresis ([`crate::hysteresis`]):
//! - `offline` (critical): not heard from for `offline_after_secs`; only
//!   for a terminal the site knows (registered, or placed in a zone).
//! - `low_battery`: battery below `low_battery_mv`.
//! - `weak_wifi`: RSSI below `weak_rssi_dbm`.
//! - `stuck_button`: presses faster than a person can press, or one button
//!   only for a long run; cleared by the first press at a human pace that
//!   does not continue a one-button run.
//! - `queue_filling`: the terminal's press queue is filling up (the gateway
//!   is not acking, or the terminal cannot reach it often enough).
//! - `clock_skew`: the terminal's clock is far from the gateway's.

use std::collections::BTreeMap;

use pressline_protocol::power::Energy;
use pressline_protocol::upstream::{
    AlertKind, PackLife, TerminalEnergy, TerminalHealth, HEALTH_SCHEMA,
};
use pressline_protocol::{Button, Heartbeat, ResetReason};
use serde::{Deserialize, Serialize};

use crate::clock::rfc3339_ms;
use crate::hysteresis::{latch, Bound, Hysteresis};

/// Thresholds of the health rules (`[health]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// A terminal not heard from (heartbeat or press) for this long is offline.
    pub offline_after_secs: u64,
    /// A terminal the site does not know (neither registered nor placed in
    /// a zone) silent for this long (`offline_after_secs` at least) is
    /// forgotten: open mode admits any id, and invented ones must not stay
    /// for good.
    pub forget_unknown_after_secs: u64,
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
            forget_unknown_after_secs: 3600,
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

/// The last heartbeat, as kept in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastHeartbeat {
    pub at_ms: i64,
    pub heartbeat: Heartbeat,
    /// The energy counters of a version-3 heartbeat.
    #[serde(default)]
    pub energy: Option<Energy>,
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
    pub(super) open_alerts: BTreeMap<AlertKind, u64>,
}

impl TerminalState {
    pub(super) fn new(id: &str, now_ms: i64) -> Self {
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

/// A condition and whether it holds now, with the words for people.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub kind: AlertKind,
    pub holds: bool,
    pub detail: String,
}

impl TerminalState {
    pub(super) fn is_open(&self, kind: &AlertKind) -> bool {
        self.open_alerts.contains_key(kind)
    }

    /// Records a heartbeat; returns the conditions it tells about.
    pub(super) fn heartbeat(
        &mut self,
        c: &HealthConfig,
        now_ms: i64,
        hb: Heartbeat,
        energy: Option<Energy>,
    ) -> Vec<Condition> {
        self.last_heartbeat = Some(LastHeartbeat {
            at_ms: now_ms,
            heartbeat: hb,
            energy,
        });
        let mut conditions = Vec::new();
        if let Some(mv) = hb.battery_mv {
            let rule = Hysteresis {
                raise: Bound::Below(c.low_battery_mv),
                hold: Bound::Below(c.low_battery_mv.saturating_add(BATTERY_CLEAR_MARGIN_MV)),
            };
            conditions.push(self.condition(
                AlertKind::LowBattery,
                |was| rule.next(was, mv),
                format!("battery {mv} mV (threshold {} mV)", c.low_battery_mv),
            ));
        }
        if let Some(rssi) = hb.rssi_dbm {
            let rule = Hysteresis {
                raise: Bound::Below(c.weak_rssi_dbm),
                hold: Bound::Below(c.weak_rssi_dbm.saturating_add(RSSI_CLEAR_MARGIN_DB)),
            };
            conditions.push(self.condition(
                AlertKind::WeakWifi,
                |was| rule.next(was, rssi),
                format!(
                    "Wi-Fi signal {rssi} dBm (threshold {} dBm)",
                    c.weak_rssi_dbm
                ),
            ));
        }
        if hb.queue_capacity > 0 {
            let percent = (hb.queue_depth as u64 * 100 / hb.queue_capacity as u64) as u8;
            let rule = Hysteresis {
                raise: Bound::AtLeast(c.queue_filling_percent),
                hold: Bound::AtLeast(c.queue_filling_percent / 2),
            };
            conditions.push(self.condition(
                AlertKind::QueueFilling,
                |was| rule.next(was, percent),
                format!(
                    "{} of {} queued presses ({percent}%), {} dropped",
                    hb.queue_depth, hb.queue_capacity, hb.dropped_presses
                ),
            ));
        }
        if let Some(clock) = hb.unix_time_ms {
            let skew_ms = (clock as i64 - now_ms).unsigned_abs();
            let limit = c.clock_skew_secs * 1000;
            let rule = Hysteresis {
                raise: Bound::Above(limit),
                hold: Bound::Above(limit / 2),
            };
            conditions.push(self.condition(
                AlertKind::ClockSkew,
                |was| rule.next(was, skew_ms),
                format!("terminal clock off by {} s", skew_ms / 1000),
            ));
        }
        conditions
    }

    /// Records a stored press (`pressed_at_ms`: when it happened, or its
    /// arrival); returns whether the button looks stuck.
    pub(super) fn press(
        &mut self,
        c: &HealthConfig,
        button: Button,
        pressed_at_ms: i64,
    ) -> Condition {
        self.presses_total += 1;
        let fast = self
            .last_press_ms
            .is_some_and(|last| (pressed_at_ms - last).unsigned_abs() < c.stuck_min_interval_ms);
        self.fast_run = if fast { self.fast_run + 1 } else { 0 };
        self.last_press_ms = Some(pressed_at_ms);
        if self.same_button == Some(button.score()) {
            self.same_run += 1;
        } else {
            self.same_button = Some(button.score());
            self.same_run = 1;
        }
        let (fast_run, same_run) = (self.fast_run, self.same_run);
        let stuck_fast = fast_run >= c.stuck_fast_run;
        let stuck_same = same_run >= c.stuck_same_button_run;
        let detail = if stuck_fast {
            format!(
                "{fast_run} presses in a row less than {} ms apart",
                c.stuck_min_interval_ms
            )
        } else {
            format!("{same_run} presses in a row of {}", button.name())
        };
        // Once raised, it stays raised while presses keep coming faster
        // than a person presses (whichever button) or the one-button run
        // goes on; the first press at a human pace clears it. Clearing on a
        // fast press of another button made it flap, raised and cleared on
        // every press of someone drumming on all four buttons.
        self.condition(
            AlertKind::StuckButton,
            |was| latch(was, stuck_fast || stuck_same, fast_run > 0 || stuck_same),
            detail,
        )
    }

    fn condition(&self, kind: AlertKind, rule: impl Fn(bool) -> bool, detail: String) -> Condition {
        let holds = rule(self.is_open(&kind));
        Condition {
            kind,
            holds,
            detail,
        }
    }

    /// The health document (`site`: the gateway's).
    pub fn document(&self, site: &str) -> TerminalHealth {
        let hb = self.last_heartbeat.as_ref();
        TerminalHealth {
            schema: HEALTH_SCHEMA.into(),
            id: self.id.clone(),
            site: site.to_string(),
            online: self.online,
            first_seen: rfc3339_ms(self.first_seen_ms),
            last_seen: rfc3339_ms(self.last_seen_ms),
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
            presses_total: self.presses_total,
            open_alerts: self.open_alerts.keys().cloned().collect(),
            energy: hb.and_then(|h| Some(energy_document(&h.energy?, h.heartbeat.uptime_ms))),
        }
    }

    /// How long this terminal may be silent before it is offline: the
    /// configured time, or three of its heartbeat periods if longer (a
    /// terminal on batteries is heard from every 15 minutes).
    pub fn offline_after_ms(&self, c: &HealthConfig) -> i64 {
        let promised = self
            .last_heartbeat
            .as_ref()
            .and_then(|h| h.energy)
            .map_or(0, |e| u64::from(e.settings.heard_every_secs()) * 3);
        (c.offline_after_secs.max(promised) as i64).saturating_mul(1000)
    }
}

/// The energy part of a health document, with the model's estimate.
fn energy_document(e: &Energy, uptime_ms: u64) -> TerminalEnergy {
    use super::energy::{average_ma, life_days, PACKS, PICO_W};
    let average = average_ma(&PICO_W, e, uptime_ms);
    TerminalEnergy {
        mode: e.settings.mode.name().into(),
        upload_delay_secs: e.settings.upload_delay_secs,
        heartbeat_every_secs: e.settings.heard_every_secs(),
        awake_ms: e.awake_ms,
        radio_on_ms: e.radio_on_ms,
        wakeups: e.wakeups,
        joins: e.joins,
        average_ua: average.map(|ma| (ma * 1000.0).round() as u32),
        battery_life_days: average
            .map(|ma| {
                PACKS
                    .iter()
                    .map(|pack| PackLife {
                        pack: pack.name.into(),
                        days: life_days(pack, ma) as u32,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}
