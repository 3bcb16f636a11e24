//! How many WARN lines one source may cause: anyone on the venue network
//! can make the broker refuse them, and each refusal must not become a log
//! line (a flood of refused logins would fill the disk and bury what
//! matters). Past its budget a source is counted, not logged, until its
//! window ends; the line that spends the budget says so.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Sources remembered at once; past this, expired ones are forgotten, and
/// if none has expired, all of them (a flood of addresses must not grow
/// the gateway).
const SOURCES_MAX: usize = 4096;

/// Whether to log a line for a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Log,
    /// Log it, and say that the next ones are not.
    LogLast,
    Quiet,
}

/// Lines per source per window.
pub struct LogBudget {
    window: Duration,
    per_window: u32,
    spent: HashMap<String, (Instant, u32)>,
}

impl LogBudget {
    pub fn new(per_window: u32, window: Duration) -> LogBudget {
        LogBudget {
            window,
            per_window,
            spent: HashMap::new(),
        }
    }

    /// Spends one line of `source`'s budget at `now`.
    pub fn take(&mut self, source: &str, now: Instant) -> Take {
        if self.spent.len() >= SOURCES_MAX && !self.spent.contains_key(source) {
            let window = self.window;
            self.spent
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            if self.spent.len() >= SOURCES_MAX {
                self.spent.clear();
            }
        }
        let (start, used) = self.spent.entry(source.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            (*start, *used) = (now, 0);
        }
        *used = used.saturating_add(1);
        match (*used).cmp(&self.per_window) {
            std::cmp::Ordering::Less => Take::Log,
            std::cmp::Ordering::Equal => Take::LogLast,
            std::cmp::Ordering::Greater => Take::Quiet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_logs_its_budget_then_is_quiet_until_its_window_ends() {
        let mut budget = LogBudget::new(3, Duration::from_secs(600));
        let t0 = Instant::now();
        let takes: Vec<Take> = (0..1000).map(|_| budget.take("10.0.0.9", t0)).collect();
        assert_eq!(&takes[..3], &[Take::Log, Take::Log, Take::LogLast]);
        assert!(takes[3..].iter().all(|t| *t == Take::Quiet));
        assert_eq!(budget.take("10.0.0.7", t0), Take::Log, "others keep theirs");
        let later = t0 + Duration::from_secs(600);
        assert_eq!(budget.take("10.0.0.9", later), Take::Log);
    }

    #[test]
    fn a_flood_of_sources_does_not_grow_it() {
        let mut budget = LogBudget::new(3, Duration::from_secs(600));
        let t0 = Instant::now();
        for i in 0..(3 * SOURCES_MAX) {
            budget.take(&format!("source-{i}"), t0);
        }
        assert!(budget.spent.len() <= SOURCES_MAX);
    }
}
