//! Raise past one bound, clear only past another: every health and zone
//! rule, so a value hovering at a threshold raises one alert, not one per
//! reading.

/// Which side of a limit a value must be on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound<T> {
    Below(T),
    AtLeast(T),
    Above(T),
}

impl<T: PartialOrd> Bound<T> {
    pub fn met(&self, value: T) -> bool {
        match self {
            Bound::Below(limit) => value < *limit,
            Bound::AtLeast(limit) => value >= *limit,
            Bound::Above(limit) => value > *limit,
        }
    }
}

/// A condition raised when `raise` is met and held (once raised) while
/// `hold`, a looser bound, is met.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis<T> {
    pub raise: Bound<T>,
    pub hold: Bound<T>,
}

impl<T: PartialOrd + Copy> Hysteresis<T> {
    /// Whether the condition holds for `value`, given whether it held.
    pub fn next(&self, was: bool, value: T) -> bool {
        latch(was, self.raise.met(value), self.hold.met(value))
    }

    /// As [`next`](Self::next), where the rule may only raise when
    /// `may_raise` (enough evidence) and only hold when `may_hold`.
    pub fn next_gated(&self, was: bool, value: T, may_raise: bool, may_hold: bool) -> bool {
        latch(
            was,
            may_raise && self.raise.met(value),
            may_hold && self.hold.met(value),
        )
    }
}

/// The condition after one reading: raised when `raise`, held while `hold`.
pub fn latch(was: bool, raise: bool, hold: bool) -> bool {
    if was {
        hold
    } else {
        raise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_at_the_threshold_and_clears_only_past_the_margin() {
        let low_battery = Hysteresis {
            raise: Bound::Below(3500),
            hold: Bound::Below(3600),
        };
        let mut raised = false;
        let mut changes = 0;
        for mv in [3700, 3499, 3550, 3520, 3599, 3600, 3550] {
            let now = low_battery.next(raised, mv);
            changes += usize::from(now != raised);
            raised = now;
        }
        // Raised at 3499, cleared at 3600; 3550 alone does not raise again.
        assert_eq!((raised, changes), (false, 2));
    }

    #[test]
    fn a_gate_stops_raising_on_too_little_evidence_and_can_end_a_hold() {
        let unhappy = Hysteresis {
            raise: Bound::AtLeast(40.0),
            hold: Bound::AtLeast(30.0),
        };
        assert!(!unhappy.next_gated(false, 90.0, false, true));
        assert!(unhappy.next_gated(false, 90.0, true, true));
        assert!(unhappy.next_gated(true, 35.0, false, true));
        assert!(!unhappy.next_gated(true, 35.0, true, false));
    }
}
