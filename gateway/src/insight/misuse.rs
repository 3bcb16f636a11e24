//! The misuse filter: presses that are not opinions.
//!
//! People press buttons again and again for fun. Like commercial feedback
//! terminals, a press that follows another on the same terminal within the
//! *response interval* is kept (stored, forwarded) but not counted; so are
//! presses past a burst limit no queue of single visitors produces.
//! Decisions use the time the press happened (the terminal's `age_ms`), so
//! presses delivered late after an outage are judged as they were made.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// `[misuse]` in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MisuseConfig {
    /// A press less than this long after the previous press on the same
    /// terminal is not counted.
    pub response_interval_secs: f64,
    /// More than `burst_max` presses on one terminal within
    /// `burst_window_secs` are not counted.
    pub burst_max: u32,
    pub burst_window_secs: u64,
    /// A terminal's recent presses are remembered this long after its
    /// last one (at least a rule window): presses a terminal delivers
    /// later than this after an outage are judged without them. Bounds
    /// the memory of ids invented in open mode.
    pub memory_secs: u64,
}

impl Default for MisuseConfig {
    fn default() -> Self {
        MisuseConfig {
            response_interval_secs: 4.0,
            burst_max: 12,
            burst_window_secs: 60,
            memory_secs: 900,
        }
    }
}

/// Why a press is not counted (the wire vocabulary of upstream documents).
pub use pressline_protocol::upstream::NotCounted;

#[derive(Debug, Default)]
struct Recent {
    last_ms: Option<i64>,
    window: VecDeque<i64>,
    /// The sweep this terminal last pressed in.
    sweep: u64,
}

/// Per-terminal memory of recent presses.
#[derive(Debug, Default)]
pub struct MisuseFilter {
    config: MisuseConfig,
    terminals: HashMap<String, Recent>,
    sweep: u64,
    swept_at_ms: Option<i64>,
}

impl MisuseFilter {
    pub fn new(config: MisuseConfig) -> Self {
        MisuseFilter {
            config,
            terminals: HashMap::new(),
            sweep: 0,
            swept_at_ms: None,
        }
    }

    /// Forgets terminals that pressed nothing since the sweep before the
    /// last, a sweep every `memory_secs` (so a terminal is remembered for
    /// one to two of them after its last press). `now_ms` is a clock that
    /// never steps (milliseconds from any start), not a press's time,
    /// since late presses carry old times.
    pub fn forget_quiet(&mut self, now_ms: i64) {
        let interval_ms = (self.config.response_interval_secs * 1000.0) as i64;
        let window_ms =
            i64::try_from(self.config.burst_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let memory_ms =
            i64::try_from(self.config.memory_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let every_ms = interval_ms.max(window_ms).max(memory_ms).max(1_000);
        let Some(swept_at) = self.swept_at_ms else {
            self.swept_at_ms = Some(now_ms);
            return;
        };
        if now_ms - swept_at < every_ms {
            return;
        }
        let previous = self.sweep;
        self.terminals.retain(|_, r| r.sweep >= previous);
        self.sweep += 1;
        self.swept_at_ms = Some(now_ms);
    }

    /// Terminals remembered.
    pub fn remembered(&self) -> usize {
        self.terminals.len()
    }

    /// Classifies a new press (call once per press, in the terminal's order):
    /// `None` = counted.
    pub fn classify(&mut self, terminal: &str, pressed_at_ms: i64) -> Option<NotCounted> {
        let interval_ms = (self.config.response_interval_secs * 1000.0) as i64;
        let window_ms = self.config.burst_window_secs as i64 * 1000;
        // No allocation on the hot path once a terminal is known.
        if !self.terminals.contains_key(terminal) {
            self.terminals
                .insert(terminal.to_string(), Recent::default());
        }
        let recent = self.terminals.get_mut(terminal).expect("inserted above");
        recent.sweep = self.sweep;
        let repeated = recent
            .last_ms
            .is_some_and(|last| (pressed_at_ms - last).abs() < interval_ms);
        recent.last_ms = Some(
            recent
                .last_ms
                .map_or(pressed_at_ms, |l| l.max(pressed_at_ms)),
        );
        while recent
            .window
            .front()
            .is_some_and(|t| *t <= pressed_at_ms - window_ms)
        {
            recent.window.pop_front();
        }
        recent.window.push_back(pressed_at_ms);
        // Deciding "more than burst_max" needs no more than burst_max + 1
        // of them: a stuck button or a flood would otherwise hold every
        // press of the window.
        while recent.window.len() > self.config.burst_max as usize + 1 {
            recent.window.pop_front();
        }
        if repeated {
            Some(NotCounted::ResponseInterval)
        } else if recent.window.len() as u32 > self.config.burst_max {
            Some(NotCounted::Burst)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_quiet_for_two_sweeps_are_forgotten_and_pressing_ones_kept() {
        let mut f = MisuseFilter::new(MisuseConfig {
            memory_secs: 0,
            ..MisuseConfig::default()
        });
        // Sweeps every rule window at least (the burst window, 60 s).
        let s = 1_000;
        f.forget_quiet(0);
        f.classify("invented", 0);
        f.classify("busy", 0);
        f.forget_quiet(59 * s);
        assert_eq!(f.remembered(), 2, "not before a sweep is due");
        f.forget_quiet(60 * s);
        assert_eq!(f.remembered(), 2, "pressed in the last sweep");
        f.classify("busy", 90 * s);
        f.forget_quiet(120 * s);
        assert_eq!(f.remembered(), 1);
        assert!(f.terminals.contains_key("busy"));
    }

    fn run(filter: &mut MisuseFilter, terminal: &str, times_s: &[f64]) -> Vec<Option<NotCounted>> {
        times_s
            .iter()
            .map(|t| filter.classify(terminal, (t * 1000.0) as i64))
            .collect()
    }

    #[test]
    fn a_child_mashing_a_button_counts_once() {
        let mut f = MisuseFilter::new(MisuseConfig::default());
        // Recorded: a child presses 8 times in 3 seconds.
        let r = run(&mut f, "t1", &[0.0, 0.3, 0.6, 0.9, 1.4, 2.0, 2.5, 3.0]);
        assert_eq!(r[0], None);
        assert!(r[1..]
            .iter()
            .all(|c| *c == Some(NotCounted::ResponseInterval)));
        // The next visitor, 10 s later, counts again.
        assert_eq!(f.classify("t1", 13_000), None);
    }

    #[test]
    fn visitors_a_few_seconds_apart_all_count_and_terminals_are_independent() {
        let mut f = MisuseFilter::new(MisuseConfig::default());
        assert!(run(&mut f, "t1", &[0.0, 5.0, 10.0, 15.5])
            .iter()
            .all(|c| c.is_none()));
        assert_eq!(
            f.classify("t2", 15_600),
            None,
            "another terminal is not affected"
        );
    }

    #[test]
    fn a_group_pressing_just_past_the_interval_hits_the_burst_limit() {
        let mut f = MisuseFilter::new(MisuseConfig {
            response_interval_secs: 4.0,
            burst_max: 5,
            burst_window_secs: 60,
            memory_secs: 900,
        });
        let times: Vec<f64> = (0..8).map(|i| i as f64 * 4.5).collect();
        let r = run(&mut f, "t1", &times);
        assert_eq!(r.iter().filter(|c| c.is_none()).count(), 5);
        assert_eq!(r[5], Some(NotCounted::Burst));
        // A minute later the window has passed.
        assert_eq!(f.classify("t1", 120_000), None);
    }

    #[test]
    fn a_stuck_button_holds_no_more_than_the_burst_limit() {
        let mut f = MisuseFilter::new(MisuseConfig::default());
        for i in 0..100_000 {
            f.classify("t1", i * 5);
        }
        let held = f.terminals["t1"].window.len();
        assert!(held <= 13, "{held} press times held");
        assert_eq!(
            f.classify("t1", 500_001),
            Some(NotCounted::ResponseInterval)
        );
        // Past the burst limit still, at a human pace: 13 presses 4.5 s apart.
        let mut g = MisuseFilter::new(MisuseConfig::default());
        let verdicts: Vec<_> = (0..13).map(|i| g.classify("t1", i * 4_500)).collect();
        assert_eq!(verdicts[12], Some(NotCounted::Burst));
    }

    #[test]
    fn late_delivered_presses_are_judged_by_when_they_happened() {
        let mut f = MisuseFilter::new(MisuseConfig::default());
        // Delivered together after an outage, but pressed a minute apart.
        assert!(run(&mut f, "t1", &[0.0, 60.0, 120.0])
            .iter()
            .all(|c| c.is_none()));
    }
}
