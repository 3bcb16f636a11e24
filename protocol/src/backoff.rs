//! How long to wait before trying a peer again: doubling from a first
//! delay up to a ceiling. One schedule for everything that reconnects or
//! retries (terminals to their gateway, the gateway to its upstream broker
//! and notification receivers, the central consumer to its broker and
//! database), so a recovering peer is never stampeded and never waited on
//! for longer than the ceiling. Jitter, where wanted, is the caller's.

/// A doubling delay in milliseconds (no clock here: callers sleep).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first_ms: u64,
    max_ms: u64,
    next_ms: u64,
}

impl Backoff {
    pub const fn new(first_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            first_ms,
            max_ms,
            next_ms: first_ms,
        }
    }

    /// The delay to wait now; the one after it doubles (up to the ceiling).
    pub fn next_ms(&mut self) -> u64 {
        let now = self.next_ms;
        self.grow();
        now
    }

    /// The delay [`next_ms`](Self::next_ms) would give, without growing it.
    pub fn peek_ms(&self) -> u64 {
        self.next_ms
    }

    /// Doubles the delay (up to the ceiling), for callers that grow it only
    /// on some failures (a cluster's nodes all tried, say).
    pub fn grow(&mut self) {
        self.next_ms = self.next_ms.saturating_mul(2).min(self.max_ms);
    }

    /// Back to the first delay: the peer answered.
    pub fn reset(&mut self) {
        self.next_ms = self.first_ms;
    }

    /// The delay before attempt `attempt` (1 is the first retry) of
    /// something whose attempts are counted elsewhere (persisted, say):
    /// `first × 2^(attempt − 1)`, at most the ceiling.
    pub fn after_attempts(first_ms: u64, max_ms: u64, attempt: u32) -> u64 {
        let doublings = attempt.saturating_sub(1).min(20);
        first_ms
            .saturating_mul(1 << doublings)
            .min(max_ms.max(first_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_delay_to_the_ceiling_and_starts_over_on_reset() {
        let mut b = Backoff::new(250, 1_000);
        let seen: [u64; 5] = core::array::from_fn(|_| b.next_ms());
        assert_eq!(seen, [250, 500, 1_000, 1_000, 1_000]);
        b.reset();
        assert_eq!(b.next_ms(), 250);
    }

    #[test]
    fn peeking_does_not_grow_and_grow_does() {
        let mut b = Backoff::new(500, 15_000);
        assert_eq!(b.peek_ms(), 500);
        assert_eq!(b.peek_ms(), 500);
        b.grow();
        assert_eq!(b.peek_ms(), 1_000);
    }

    #[test]
    fn counted_attempts_give_the_same_schedule_and_never_overflow() {
        assert_eq!(Backoff::after_attempts(5_000, 600_000, 1), 5_000);
        assert_eq!(Backoff::after_attempts(5_000, 600_000, 3), 20_000);
        assert_eq!(Backoff::after_attempts(5_000, 600_000, 1_000), 600_000);
        // A ceiling below the first delay: the first delay wins.
        assert_eq!(Backoff::after_attempts(5_000, 1_000, 4), 5_000);
        assert_eq!(Backoff::after_attempts(u64::MAX, u64::MAX, 40), u64::MAX);
    }
}
