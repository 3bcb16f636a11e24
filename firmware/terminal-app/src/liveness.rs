//! The watchdog contract: the application's main loop checks in; the
//! board feeds its hardware watchdog only while check-ins are recent.
//!
//! Two ways a terminal can hang, both ending in a reset that loses nothing
//! (presses are in flash before anything else happens to them):
//! - a task spins and the executor stops: nothing feeds the hardware
//!   watchdog, which resets the chip after its period;
//! - a task waits forever on something that never comes: the executor
//!   runs, but the main loop stops checking in, so the board stops feeding
//!   (see [`Liveness::should_feed`]) and the hardware watchdog resets it.
//!
//! Every wait of the application is bounded well below [`STALL_MS`].

use core::sync::atomic::{AtomicU32, Ordering};

/// Longest the main loop may go without checking in.
pub const STALL_MS: u64 = 60_000;
/// How often the board's watchdog task should look (and feed).
pub const FEED_EVERY_MS: u64 = 1_000;

/// The main loop's last check-in, in milliseconds of uptime (32 bits wrap
/// after 49 days; differences are taken with wrapping arithmetic).
pub struct Liveness {
    last: AtomicU32,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

impl Liveness {
    pub const fn new() -> Liveness {
        Liveness {
            last: AtomicU32::new(0),
        }
    }

    /// The main loop is making progress.
    pub fn check_in(&self, now_ms: u64) {
        self.last.store(now_ms as u32, Ordering::Relaxed);
    }

    /// Whether the board should feed its watchdog now.
    pub fn should_feed(&self, now_ms: u64) -> bool {
        let since = (now_ms as u32).wrapping_sub(self.last.load(Ordering::Relaxed));
        u64::from(since) < STALL_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_checking_in_stops_the_feeding() {
        let l = Liveness::new();
        l.check_in(1_000);
        assert!(l.should_feed(1_000 + STALL_MS - 1));
        assert!(!l.should_feed(1_000 + STALL_MS));
        l.check_in(200_000);
        assert!(l.should_feed(200_500));
        // Across the 32-bit wrap of the uptime counter.
        let wrap = u64::from(u32::MAX) - 10;
        l.check_in(wrap);
        assert!(l.should_feed(wrap + 20));
        assert!(!l.should_feed(wrap + STALL_MS + 5));
    }
}
