//! Which presses are stored: the deduplication state.
//!
//! Terminals number presses in order within a boot, so the stored sequence
//! numbers of one (terminal, boot) are nearly always one range, and a few
//! ranges at worst (a terminal whose queue overflowed leaves gaps). They
//! are kept as ranges, one small sled record per (terminal, boot) in the
//! `dedup` tree, rather than one key per press forever: sled's memory grows
//! with the keys it holds.
//!
//! A record holds at most [`MAX_RANGES`] ranges: a terminal that sends
//! seq 0, 2, 4, … would otherwise make its record (rewritten at every
//! commit) grow with every press. Past the bound the lowest range is
//! forgotten. Forgetting errs on the safe side: a resend of a forgotten
//! press is stored again (a duplicate, whose press id upstream is the same,
//! so the central table keeps it once, though the site's own scores count
//! it again), never acked without being stored.
//! Terminals resend in order, so the lowest presses are the oldest, long
//! since acked.
//!
//! The hourly retention pass also keeps at most [`MAX_BOOTS`] records per
//! terminal (a client that starts a new boot with every press).
//!
//! The committer is the only writer, so the records it has read are cached
//! in memory and are authoritative; a record unused for a while is dropped
//! from the cache (and read again if its terminal resends). Records whose
//! last new press is older than the raw-press retention are deleted with
//! the press log: a terminal resends only presses it has not had acked,
//! which are minutes old.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::records::{put_varint, take_varint, StoreError};

/// Most ranges one (terminal, boot) record keeps (about 1.5 KiB encoded).
pub const MAX_RANGES: usize = 256;

/// Most (terminal, boot) records one terminal keeps past the hourly
/// retention pass: a client that starts a new boot with every press would
/// otherwise leave a record per press for the whole retention period. The
/// oldest go first (by last new press, then boot); forgetting one errs on
/// the safe side, as with [`MAX_RANGES`].
pub const MAX_BOOTS: usize = 1024;

/// Of one terminal's records `(last day, boot, key)`, the keys of those
/// past the newest [`MAX_BOOTS`].
pub fn beyond_max_boots<K>(mut boots: Vec<(i64, u32, K)>) -> impl Iterator<Item = K> {
    let excess = boots.len().saturating_sub(MAX_BOOTS);
    // Oldest first.
    boots.sort_by_key(|&(day, boot, _)| (day, boot));
    boots.into_iter().take(excess).map(|(_, _, key)| key)
}

/// Sequence numbers as sorted, disjoint, non-adjacent inclusive ranges, at
/// most [`MAX_RANGES`] of them (the lowest are forgotten past it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    ranges: Vec<(u32, u32)>,
}

impl SeqSet {
    pub fn contains(&self, seq: u32) -> bool {
        // The last range whose start is at or below `seq`.
        let i = self.ranges.partition_point(|&(start, _)| start <= seq);
        i > 0 && self.ranges[i - 1].1 >= seq
    }

    /// Adds `seq`; returns whether it was new.
    pub fn insert(&mut self, seq: u32) -> bool {
        let i = self.ranges.partition_point(|&(start, _)| start <= seq);
        if i > 0 && self.ranges[i - 1].1 >= seq {
            return false;
        }
        let joins_left = i > 0 && self.ranges[i - 1].1.checked_add(1) == Some(seq);
        let joins_right = i < self.ranges.len() && seq.checked_add(1) == Some(self.ranges[i].0);
        match (joins_left, joins_right) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = seq,
            (false, true) => self.ranges[i].0 = seq,
            (false, false) => {
                self.ranges.insert(i, (seq, seq));
                // The lowest go, but never the one just added: a repeat of
                // it (in the same batch) must be known. (A record written
                // before the bound may hold more.)
                let excess = self.ranges.len().saturating_sub(MAX_RANGES);
                let skip = usize::from(i == 0 && excess > 0);
                self.ranges.drain(skip..skip + excess);
            }
        }
        true
    }

    /// Number of ranges (1 for a terminal that never lost a press).
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

/// One (terminal, boot)'s record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupRecord {
    /// UTC day of the last new press (for retention).
    pub last_day: i64,
    pub seqs: SeqSet,
}

impl DedupRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.seqs.ranges.len() * 6);
        put_varint(&mut out, self.last_day as u64);
        put_varint(&mut out, self.seqs.ranges.len() as u64);
        for &(start, end) in &self.seqs.ranges {
            put_varint(&mut out, u64::from(start));
            put_varint(&mut out, u64::from(end - start));
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<DedupRecord, StoreError> {
        let mut r = bytes;
        let last_day = take_varint(&mut r)? as i64;
        let n = take_varint(&mut r)?;
        if n > r.len() as u64 {
            return Err(StoreError::Malformed(
                "dedup record claims more ranges than it holds",
            ));
        }
        let mut ranges: Vec<(u32, u32)> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let start = u32::try_from(take_varint(&mut r)?)
                .map_err(|_| StoreError::Malformed("dedup range out of bounds"))?;
            let end = u32::try_from(take_varint(&mut r)?)
                .ok()
                .and_then(|len| start.checked_add(len))
                .ok_or(StoreError::Malformed("dedup range out of bounds"))?;
            // Sorted and apart, or it is not a record this code wrote.
            if ranges
                .last()
                .is_some_and(|&(_, e)| e.saturating_add(1) >= start)
            {
                return Err(StoreError::Malformed("dedup ranges out of order"));
            }
            ranges.push((start, end));
        }
        if !r.is_empty() {
            return Err(StoreError::Malformed("trailing bytes in a dedup record"));
        }
        Ok(DedupRecord {
            last_day,
            seqs: SeqSet { ranges },
        })
    }
}

/// The sled key of a (terminal, boot): terminal ids never contain NUL.
pub fn key(terminal: &str, boot: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(terminal.len() + 5);
    key.extend_from_slice(terminal.as_bytes());
    key.push(0);
    key.extend_from_slice(&boot.to_be_bytes());
    key
}

/// Parses [`key`] back.
pub fn parse_key(raw: &[u8]) -> Option<(&str, u32)> {
    let split = raw.len().checked_sub(5)?;
    let (terminal, rest) = raw.split_at(split);
    let (&nul, boot) = rest.split_first()?;
    if nul != 0 {
        return None;
    }
    let terminal = std::str::from_utf8(terminal).ok()?;
    Some((terminal, u32::from_be_bytes(boot.try_into().ok()?)))
}

struct Cached {
    record: DedupRecord,
    used: Instant,
}

/// The cache over the `dedup` tree.
#[derive(Default)]
pub struct DedupIndex {
    cache: HashMap<String, HashMap<u32, Cached>>,
}

/// How long an unused record stays cached.
pub const IDLE: Duration = Duration::from_secs(600);

impl DedupIndex {
    /// The record of (terminal, boot), read from `tree` when not cached.
    pub fn get(
        &mut self,
        tree: &sled::Tree,
        terminal: &str,
        boot: u32,
        now: Instant,
    ) -> Result<&DedupRecord, StoreError> {
        // Two lookups rather than the entry API: no key allocation when
        // the record is cached, which is every press but the first.
        let cached = self
            .cache
            .get(terminal)
            .is_some_and(|boots| boots.contains_key(&boot));
        if !cached {
            let record = match tree.get(key(terminal, boot))? {
                Some(bytes) => DedupRecord::decode(&bytes)?,
                None => DedupRecord::default(),
            };
            self.cache
                .entry(terminal.to_string())
                .or_default()
                .insert(boot, Cached { record, used: now });
        }
        let entry = self
            .cache
            .get_mut(terminal)
            .and_then(|boots| boots.get_mut(&boot))
            .ok_or(StoreError::Malformed("dedup cache lost an entry"))?;
        entry.used = now;
        Ok(&entry.record)
    }

    /// Replaces the cached record after it was committed.
    pub fn put(&mut self, terminal: &str, boot: u32, record: DedupRecord, now: Instant) {
        if let Some(boots) = self.cache.get_mut(terminal) {
            boots.insert(boot, Cached { record, used: now });
        } else {
            self.cache
                .entry(terminal.to_string())
                .or_default()
                .insert(boot, Cached { record, used: now });
        }
    }

    /// Forgets records unused since `now - IDLE`.
    pub fn evict_idle(&mut self, now: Instant) {
        self.cache.retain(|_, boots| {
            boots.retain(|_, c| now.duration_since(c.used) < IDLE);
            !boots.is_empty()
        });
    }

    /// Drops every cached record of `terminal`.
    pub fn forget_terminal(&mut self, terminal: &str) {
        self.cache.remove(terminal);
    }

    pub fn forget(&mut self, terminal: &str, boot: u32) {
        if let Some(boots) = self.cache.get_mut(terminal) {
            boots.remove(&boot);
            if boots.is_empty() {
                self.cache.remove(terminal);
            }
        }
    }

    /// Cached records (for tests and diagnostics).
    pub fn cached(&self) -> usize {
        self.cache.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_presses_stay_one_range_and_gaps_are_remembered_exactly() {
        let mut s = SeqSet::default();
        for seq in 0..1000 {
            assert!(s.insert(seq));
        }
        assert_eq!(s.ranges(), 1);
        assert!(!s.insert(500), "a resend is not new");
        // A terminal whose queue overflowed: 1000..1010 never arrive.
        for seq in 1010..1020 {
            s.insert(seq);
        }
        assert_eq!(s.ranges(), 2);
        assert!(!s.contains(1005));
        // A late one fills part of the gap; the rest stays unknown.
        assert!(s.insert(1000));
        assert!(s.contains(1000) && !s.contains(1001));
        for seq in 1001..1010 {
            s.insert(seq);
        }
        assert_eq!(s.ranges(), 1, "gap closed");
        assert!(s.insert(u32::MAX) && s.contains(u32::MAX) && !s.contains(u32::MAX - 1));
    }

    #[test]
    fn a_record_stays_small_whatever_the_sequence_pattern() {
        let mut s = SeqSet::default();
        for seq in (0..400_000).step_by(2) {
            assert!(s.insert(seq));
        }
        assert_eq!(s.ranges(), MAX_RANGES);
        let record = DedupRecord {
            last_day: 20_000,
            seqs: s.clone(),
        };
        assert!(record.encode().len() < 2048, "{}", record.encode().len());
        // Recent presses are still recognised, and recent gaps still
        // unknown: a real resend there is stored, never acked unstored.
        assert!(!s.insert(399_998), "a recent resend is a duplicate");
        assert!(!s.contains(399_997));
        // The oldest were forgotten: stored again if they ever came back.
        assert!(!s.contains(0));
        // One below them all is new, and remembered: a repeat is known.
        assert!(s.insert(1));
        assert!(!s.insert(1), "a repeat in the same batch is a duplicate");
        assert_eq!(s.ranges(), MAX_RANGES);
    }

    #[test]
    fn matches_a_plain_set_for_any_order() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
        for _ in 0..200 {
            let mut s = SeqSet::default();
            let mut model = std::collections::BTreeSet::new();
            for _ in 0..rng.gen_range(0..200) {
                let seq = rng.gen_range(0..64u32);
                assert_eq!(s.insert(seq), model.insert(seq));
            }
            for seq in 0..70 {
                assert_eq!(s.contains(seq), model.contains(&seq));
            }
            let record = DedupRecord {
                last_day: 20_000,
                seqs: s.clone(),
            };
            assert_eq!(DedupRecord::decode(&record.encode()).unwrap(), record);
        }
    }

    #[test]
    fn keys_parse_back_and_damaged_records_are_errors() {
        assert_eq!(parse_key(&key("gate-a", 7)), Some(("gate-a", 7)));
        assert_eq!(parse_key(b"ab"), None);
        assert!(DedupRecord::decode(&[1, 200]).is_err());
        assert!(
            DedupRecord::decode(&[1, 2, 5, 0, 3, 0]).is_err(),
            "out of order"
        );
    }
}
