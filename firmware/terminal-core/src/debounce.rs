//! Button debouncing.
//!
//! A mechanical button bounces for a few milliseconds; a level must stay
//! stable for [`Debouncer::STABLE_MS`] before it counts. Only the press edge
//! (released → pressed) produces a press; holding a button is one press.

use crate::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debouncer {
    stable: bool,
    candidate: bool,
    since: Millis,
}

impl Default for Debouncer {
    fn default() -> Self {
        Debouncer {
            stable: false,
            candidate: false,
            since: 0,
        }
    }
}

impl Debouncer {
    /// How long a level must hold to count.
    pub const STABLE_MS: Millis = 20;

    /// Feed the raw level (`true` = pressed) sampled at `now`. Returns true
    /// exactly once per debounced press.
    pub fn handle_level(&mut self, now: Millis, pressed: bool) -> bool {
        if pressed != self.candidate {
            self.candidate = pressed;
            self.since = now;
            return false;
        }
        if self.candidate != self.stable && now.saturating_sub(self.since) >= Self::STABLE_MS {
            self.stable = self.candidate;
            return self.stable;
        }
        false
    }

    /// The debounced level (`true` = held down).
    pub fn is_pressed(&self) -> bool {
        self.stable
    }

    /// When to sample again to confirm a pending change, if one is pending.
    pub fn poll_timeout(&self) -> Option<Millis> {
        (self.candidate != self.stable).then_some(self.since + Self::STABLE_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounces_count_once_and_holding_is_one_press() {
        let mut d = Debouncer::default();
        let mut presses = 0;
        // Bouncy press: 0/1 flicker for 8 ms, then held for 500 ms, bouncy release.
        let levels = [1, 0, 1, 1, 0, 1, 0, 1];
        for (t, l) in levels.iter().enumerate() {
            presses += d.handle_level(t as Millis, *l == 1) as u32;
        }
        for t in 8..500 {
            presses += d.handle_level(t, true) as u32;
        }
        for (t, l) in [0, 1, 0, 0, 1, 0].iter().enumerate() {
            presses += d.handle_level(500 + t as Millis, *l == 1) as u32;
        }
        for t in 506..600 {
            presses += d.handle_level(t, false) as u32;
        }
        assert_eq!(presses, 1);
        // A second real press counts.
        for t in 600..700 {
            presses += d.handle_level(t, true) as u32;
        }
        assert_eq!(presses, 2);
    }

    #[test]
    fn a_glitch_shorter_than_the_stable_time_is_ignored() {
        let mut d = Debouncer::default();
        let mut presses = 0;
        for t in 0..10 {
            presses += d.handle_level(t, true) as u32;
        }
        for t in 10..100 {
            presses += d.handle_level(t, false) as u32;
        }
        assert_eq!(presses, 0);
        assert_eq!(d.poll_timeout(), None);
    }
}
