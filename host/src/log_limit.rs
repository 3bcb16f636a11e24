//! Log lines that input from outside can trigger, limited per reason.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Logs at most one line per reason per interval, saying how many were
/// suppressed in between, so a misbehaving device cannot flood the log.
#[derive(Debug)]
pub struct RateLimitedLog {
    interval: Duration,
    last: BTreeMap<&'static str, (Instant, u64)>,
}

impl RateLimitedLog {
    pub fn new(interval: Duration) -> Self {
        RateLimitedLog {
            interval,
            last: BTreeMap::new(),
        }
    }

    /// Returns `Some(suppressed_since_last)` when a line should be logged now.
    pub fn admit(&mut self, reason: &'static str, now: Instant) -> Option<u64> {
        match self.last.get_mut(reason) {
            Some((at, suppressed)) if now.duration_since(*at) < self.interval => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let n = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                self.last.insert(reason, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_log_admits_once_per_interval_and_counts_the_rest() {
        let mut log = RateLimitedLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(log.admit("malformed", t0), Some(0));
        assert_eq!(log.admit("malformed", t0 + Duration::from_secs(1)), None);
        assert_eq!(log.admit("malformed", t0 + Duration::from_secs(2)), None);
        assert_eq!(log.admit("oversized", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(
            log.admit("malformed", t0 + Duration::from_secs(10)),
            Some(2)
        );
    }
}
