//! Power modes: when a terminal on batteries turns its radio on, and what
//! it spent (the energy counters its heartbeat carries).
//!
//! On mains the session stays up and every press goes out at once. On
//! batteries the radio is off between uploads. It comes on when the oldest
//! press not yet sent has waited the upload delay, at once for a run of
//! unhappy presses (staff are sent while the visitors are still there), and
//! for the periodic heartbeat; the session ends as soon as everything is
//! acked and nothing else is going on. Presses go into flash at once either
//! way ([`crate::intake`]): the delay is only how long they wait there.
//!
//! [`Plan`] is the state machine (time in, decisions out, tested with a
//! virtual clock); [`Power`] shares it between the intake and network loops.

use core::cell::RefCell;

use pressline_protocol::power::{Energy, PowerMode, PowerSettings};
use pressline_protocol::Button;

/// Milliseconds since boot.
pub type Millis = u64;

/// How long before an upload's deadline the radio comes on: a Wi-Fi join
/// takes 3-8 s, then the gateway's connect.
const JOIN_LEAD_MS: u64 = 10_000;

/// When the radio comes on, and the counters.
#[derive(Debug, Clone)]
pub struct Plan {
    settings: PowerSettings,
    /// When the oldest press not yet uploaded went into flash.
    waiting_since: Option<Millis>,
    /// Unhappy presses in a row, and when the last one came.
    unhappy_run: u8,
    last_unhappy: Option<Millis>,
    /// A run of unhappy presses is waiting: upload at once.
    urgent: bool,
    /// Battery: when the next heartbeat brings the radio on.
    next_heartbeat: Millis,
    radio_on_since: Option<Millis>,
    radio_on_ms: u64,
    joins: u32,
    wakeups: u32,
}

impl Plan {
    /// At boot: the first session comes at once (the heartbeat says why the
    /// terminal started, and the gateway's settings are fetched).
    pub fn new(settings: PowerSettings) -> Plan {
        Plan {
            settings,
            waiting_since: None,
            unhappy_run: 0,
            last_unhappy: None,
            urgent: false,
            next_heartbeat: 0,
            radio_on_since: None,
            radio_on_ms: 0,
            joins: 0,
            wakeups: 0,
        }
    }

    pub fn settings(&self) -> PowerSettings {
        self.settings
    }

    pub fn is_battery(&self) -> bool {
        self.settings.mode == PowerMode::Battery
    }

    /// The gateway sent settings; `true` if they changed.
    pub fn handle_settings(&mut self, settings: PowerSettings) -> bool {
        let changed = settings != self.settings;
        self.settings = settings;
        changed
    }

    /// A press went into flash.
    pub fn handle_press(&mut self, now: Millis, button: Button) {
        self.wakeups = self.wakeups.saturating_add(1);
        self.waiting_since.get_or_insert(now);
        let delay = u64::from(self.settings.upload_delay_secs) * 1000;
        if button.score() <= Button::Unhappy.score() {
            let continues = self
                .last_unhappy
                .is_some_and(|t| now.saturating_sub(t) <= delay);
            self.unhappy_run = if continues {
                self.unhappy_run.saturating_add(1)
            } else {
                1
            };
            self.last_unhappy = Some(now);
        } else {
            self.unhappy_run = 0;
            self.last_unhappy = None;
        }
        let run = self.settings.unhappy_run;
        if run > 0 && self.unhappy_run >= run {
            self.urgent = true;
        }
    }

    /// The terminal woke for a timer (not a press).
    pub fn handle_wakeup(&mut self) {
        self.wakeups = self.wakeups.saturating_add(1);
    }

    /// The radio is being turned on (a join attempt); counted once per
    /// time it was off.
    pub fn radio_on(&mut self, now: Millis) {
        if self.radio_on_since.is_none() {
            self.radio_on_since = Some(now);
            self.joins = self.joins.saturating_add(1);
        }
    }

    /// The radio was turned off.
    pub fn radio_off(&mut self, now: Millis) {
        if let Some(since) = self.radio_on_since.take() {
            self.radio_on_ms += now.saturating_sub(since);
        }
    }

    /// A session ended with a heartbeat sent. `leftovers`: presses are in
    /// the queue after all (one that came as the session was closing, or
    /// a session cut short): they go out within a delay from now.
    pub fn handle_uploaded(&mut self, now: Millis, leftovers: bool) {
        self.waiting_since = leftovers.then_some(now);
        self.urgent = false;
        self.unhappy_run = 0;
        self.last_unhappy = None;
        self.next_heartbeat = now + u64::from(self.settings.heard_every_secs()) * 1000;
    }

    /// When the radio must be on: `None` on mains (always), else the time
    /// (at or before `now`: at once).
    pub fn poll_radio(&self) -> Option<Millis> {
        if !self.is_battery() {
            return None;
        }
        if self.urgent {
            return Some(0);
        }
        // The radio comes on this much before the deadline, so the join
        // and connect (seconds) fit inside it.
        let delay = u64::from(self.settings.upload_delay_secs) * 1000;
        let lead = JOIN_LEAD_MS.min(delay / 4);
        let upload = self.waiting_since.map(|t| t + delay - lead);
        Some(upload.map_or(self.next_heartbeat, |u| u.min(self.next_heartbeat)))
    }

    /// What was spent since boot, as the heartbeat reports it.
    pub fn energy(&self, now: Millis, awake_ms: Option<u64>) -> Energy {
        let on_now = self.radio_on_since.map_or(0, |t| now.saturating_sub(t));
        Energy {
            settings: self.settings,
            awake_ms,
            radio_on_ms: self.radio_on_ms + on_now,
            wakeups: self.wakeups,
            joins: self.joins,
        }
    }
}

/// The plan, shared by the loops of the one terminal task (never borrowed
/// across an await).
pub struct Power {
    plan: RefCell<Plan>,
}

impl Power {
    pub fn new(settings: PowerSettings) -> Power {
        Power {
            plan: RefCell::new(Plan::new(settings)),
        }
    }

    /// One call on the plan.
    pub fn with<R>(&self, f: impl FnOnce(&mut Plan) -> R) -> R {
        f(&mut self.plan.borrow_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn button(score: u8) -> Button {
        Button::from_score(score).unwrap()
    }

    #[test]
    fn mains_keeps_the_radio_on() {
        let plan = Plan::new(PowerSettings::MAINS);
        assert_eq!(plan.poll_radio(), None);
    }

    #[test]
    fn battery_uploads_a_press_within_the_delay_and_heartbeats_between() {
        let mut plan = Plan::new(PowerSettings::BATTERY);
        assert_eq!(plan.poll_radio(), Some(0), "first session at boot");
        plan.radio_on(0);
        plan.handle_uploaded(3_000, false);
        plan.radio_off(3_000);
        assert_eq!(plan.poll_radio(), Some(903_000), "the next heartbeat");
        plan.handle_press(10_000, button(4));
        plan.handle_press(20_000, button(3));
        assert_eq!(
            plan.poll_radio(),
            Some(60_000),
            "the first press's delay, less the join"
        );
        plan.radio_on(70_000);
        plan.handle_uploaded(72_000, false);
        plan.radio_off(72_000);
        assert_eq!(plan.poll_radio(), Some(972_000));
        let energy = plan.energy(100_000, Some(50));
        assert_eq!(energy.radio_on_ms, 5_000);
        assert_eq!(energy.joins, 2);
        assert_eq!(energy.wakeups, 2);
        assert_eq!(energy.awake_ms, Some(50));
    }

    #[test]
    fn a_run_of_unhappy_presses_goes_out_at_once() {
        let mut plan = Plan::new(PowerSettings::BATTERY);
        plan.handle_uploaded(0, false);
        plan.handle_press(1_000, button(1));
        plan.handle_press(2_000, button(2));
        assert_eq!(plan.poll_radio(), Some(51_000));
        // A happy press breaks the run.
        plan.handle_press(3_000, button(4));
        plan.handle_press(4_000, button(1));
        plan.handle_press(5_000, button(1));
        assert_eq!(plan.poll_radio(), Some(51_000));
        plan.handle_press(6_000, button(2));
        assert_eq!(plan.poll_radio(), Some(0), "three unhappy in a row");
        plan.handle_uploaded(8_000, false);
        assert_eq!(plan.poll_radio(), Some(908_000));
    }

    #[test]
    fn unhappy_presses_far_apart_are_not_a_run() {
        let mut plan = Plan::new(PowerSettings::BATTERY);
        plan.handle_uploaded(0, false);
        plan.handle_press(1_000, button(1));
        plan.handle_press(100_000, button(1));
        plan.handle_press(200_000, button(1));
        assert_ne!(plan.poll_radio(), Some(0));
    }

    #[test]
    fn presses_left_in_the_queue_after_a_session_go_out_within_a_delay_of_it() {
        let mut plan = Plan::new(PowerSettings::BATTERY);
        plan.handle_press(1_000, button(4));
        plan.radio_on(50_000);
        // A press came as the session was closing: still in the queue.
        plan.handle_uploaded(53_000, true);
        assert_eq!(plan.poll_radio(), Some(103_000));
        // A short delay keeps three quarters of it before the radio comes on.
        plan.handle_settings(PowerSettings {
            upload_delay_secs: 8,
            ..PowerSettings::BATTERY
        });
        assert_eq!(plan.poll_radio(), Some(59_000));
    }

    #[test]
    fn switching_to_mains_brings_the_radio_on() {
        let mut plan = Plan::new(PowerSettings::BATTERY);
        plan.handle_uploaded(0, false);
        assert!(plan.handle_settings(PowerSettings::MAINS));
        assert_eq!(plan.poll_radio(), None);
        assert!(!plan.handle_settings(PowerSettings::MAINS));
    }

    #[test]
    fn radio_time_counts_a_session_still_open() {
        let mut plan = Plan::new(PowerSettings::MAINS);
        plan.radio_on(1_000);
        plan.radio_on(2_000);
        assert_eq!(plan.energy(11_000, None).radio_on_ms, 10_000);
        assert_eq!(plan.energy(11_000, None).joins, 1);
    }
}
