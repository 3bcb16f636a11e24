//! Cutting deliveries into transactions (pure: time comes in).
//!
//! A batch is committed when it holds `max_rows` rows (a message may carry
//! many presses), or `max_messages` messages (half the prefetch: the broker
//! sends no more than the prefetch until an ack, and the next batch fills
//! while this one commits), or when its first message has waited
//! `max_wait`.

use std::time::{Duration, Instant};

/// The batch being filled.
#[derive(Debug)]
pub struct Batcher<T> {
    items: Vec<T>,
    rows: usize,
    deadline: Option<Instant>,
    max_rows: usize,
    max_messages: usize,
    max_wait: Duration,
}

impl<T> Batcher<T> {
    /// `prefetch`: the broker's window in messages.
    pub fn new(max_rows: usize, prefetch: u16, max_wait: Duration) -> Batcher<T> {
        Batcher {
            items: Vec::new(),
            rows: 0,
            deadline: None,
            max_rows: max_rows.max(1),
            max_messages: usize::from(prefetch / 2).max(1),
            max_wait,
        }
    }

    /// Adds a message of `rows` rows; `true` when the batch is full.
    pub fn push(&mut self, item: T, rows: usize, now: Instant) -> bool {
        self.items.push(item);
        self.rows += rows;
        self.deadline.get_or_insert(now + self.max_wait);
        self.rows >= self.max_rows || self.items.len() >= self.max_messages
    }

    /// When the batch must be committed however full it is (`None` while
    /// it is empty).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The batch, leaving an empty one.
    pub fn take(&mut self) -> Vec<T> {
        self.rows = 0;
        self.deadline = None;
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_cut_at_its_rows_whatever_the_messages() {
        let t0 = Instant::now();
        let mut b = Batcher::new(5_000, 1_000, Duration::from_millis(100));
        assert!(!b.push("batch of 3,000", 3_000, t0));
        assert!(b.push("batch of 2,500", 2_500, t0), "5,500 rows");
        assert_eq!(b.take(), ["batch of 3,000", "batch of 2,500"]);
        assert!(b.is_empty() && b.deadline().is_none());
    }

    #[test]
    fn a_batch_is_cut_at_half_the_prefetch_in_messages() {
        let t0 = Instant::now();
        let mut b = Batcher::new(5_000, 10, Duration::from_millis(100));
        let full: Vec<bool> = (0..5).map(|i| b.push(i, 1, t0)).collect();
        assert_eq!(full, [false, false, false, false, true]);
        // A prefetch of 1 still makes batches of one.
        let mut one = Batcher::new(5_000, 1, Duration::from_millis(100));
        assert!(one.push(0, 1, t0));
    }

    #[test]
    fn the_first_message_sets_how_long_the_batch_may_wait() {
        let t0 = Instant::now();
        let mut b = Batcher::new(5_000, 1_000, Duration::from_millis(100));
        assert_eq!(b.deadline(), None);
        b.push(1, 1, t0);
        b.push(2, 1, t0 + Duration::from_millis(80));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(100)));
        b.take();
        b.push(3, 1, t0 + Duration::from_millis(150));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(250)));
    }
}
