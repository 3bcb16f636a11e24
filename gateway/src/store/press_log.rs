//! The press log: every stored press, for the record, in one sled tree per
//! UTC day (`presslog.<day in hex>`), dropped whole when the day passes
//! the raw-press retention.
//!
//! A record is one group commit's new presses ([`PressBatch`]), keyed by the
//! outbox id of its first press (BE), so records are in commit order
//! across days. Each day tree also holds its press count under the empty
//! key (sorted before every id), updated in the commit's transaction:
//! `presses_stored` and `presses_today` are read from there, and dropping a
//! day drops its count with it.
//!
//! Nothing is read from the log on the press path. It is read at start-up
//! (the last hour of presses for the live figures, and whatever the last
//! aggregate checkpoint had not folded in yet) and when an earlier store
//! layout is migrated.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::records::{PressBatch, StoreError};

const TREE_PREFIX: &str = "presslog.";
/// The day's press count (sorts before every 8-byte id key).
const COUNT_KEY: &[u8] = b"";

fn tree_name(day: i64) -> String {
    format!("{TREE_PREFIX}{:08x}", day.max(0))
}

/// The day trees, and each day's press count.
pub struct PressLog {
    db: sled::Db,
    days: Mutex<BTreeMap<i64, (sled::Tree, u64)>>,
}

fn decode_count(raw: Option<&[u8]>) -> u64 {
    raw.and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

impl PressLog {
    pub fn open(db: &sled::Db) -> Result<PressLog, StoreError> {
        let mut days = BTreeMap::new();
        for name in db.tree_names() {
            let Some(hex) = name.strip_prefix(TREE_PREFIX.as_bytes()) else {
                continue;
            };
            let Some(day) = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| i64::from_str_radix(h, 16).ok())
            else {
                tracing::warn!(tree = %String::from_utf8_lossy(&name), "ignoring a sled tree named like a press-log day but not one");
                continue;
            };
            let tree = db.open_tree(&name)?;
            let count = decode_count(tree.get(COUNT_KEY)?.as_deref());
            days.insert(day, (tree, count));
        }
        Ok(PressLog {
            db: db.clone(),
            days: Mutex::new(days),
        })
    }

    fn days(&self) -> MutexGuard<'_, BTreeMap<i64, (sled::Tree, u64)>> {
        self.days.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tree of UTC day `day`, created if new.
    pub fn tree(&self, day: i64) -> Result<sled::Tree, StoreError> {
        let mut days = self.days();
        if let Some((tree, _)) = days.get(&day) {
            return Ok(tree.clone());
        }
        let tree = self.db.open_tree(tree_name(day))?;
        days.insert(day, (tree.clone(), 0));
        Ok(tree)
    }

    /// Writes a batch into `tree` (the day's tree, inside the commit's
    /// transaction): the record and the day's new count.
    pub fn write(
        tree: &sled::transaction::TransactionalTree,
        first_id: u64,
        batch: &[u8],
        count_after: u64,
    ) -> sled::transaction::ConflictableTransactionResult<(), StoreError> {
        tree.insert(&first_id.to_be_bytes(), batch)?;
        tree.insert(COUNT_KEY, &count_after.to_be_bytes())?;
        Ok(())
    }

    /// Presses stored on UTC day `day`.
    pub fn count_on(&self, day: i64) -> u64 {
        self.days().get(&day).map_or(0, |(_, n)| *n)
    }

    /// Records the day's count after a commit made it durable.
    pub fn set_count(&self, day: i64, count: u64) {
        if let Some(entry) = self.days().get_mut(&day) {
            entry.1 = count;
        }
    }

    /// Presses in the log.
    pub fn total(&self) -> u64 {
        self.days().values().map(|(_, n)| n).sum()
    }

    /// Days kept, oldest first.
    pub fn day_list(&self) -> Vec<i64> {
        self.days().keys().copied().collect()
    }

    /// Drops the days before `cutoff_day`; returns how many presses went.
    pub fn drop_days_before(&self, cutoff_day: i64) -> Result<u64, StoreError> {
        let old: Vec<(i64, u64)> = self
            .days()
            .range(..cutoff_day)
            .map(|(&d, (_, n))| (d, *n))
            .collect();
        let mut dropped = 0;
        for (day, count) in old {
            self.db.drop_tree(tree_name(day))?;
            self.days().remove(&day);
            dropped += count;
        }
        Ok(dropped)
    }

    /// Calls `f` with every record that has a key above `after` (all of
    /// them for `None`) or whose first press arrived at or after
    /// `since_ms`, in no particular order (what is folded from it is a
    /// sum). Stops at the first error of `f`. Damaged records are logged
    /// and skipped.
    pub fn for_each(
        &self,
        after: Option<u64>,
        since_ms: i64,
        mut f: impl FnMut(u64, PressBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let days: Vec<(i64, sled::Tree)> = self
            .days()
            .iter()
            .map(|(&d, (t, _))| (d, t.clone()))
            .collect();
        // A press that arrived at `since_ms` sits in that UTC day's tree,
        // or a day later if the clock stepped back across midnight.
        let since_day = crate::clock::utc_day(since_ms) - 1;
        let start = after.map_or(0, |a| a.saturating_add(1));
        for (day, tree) in days {
            if day < since_day {
                // Only what the watermark has not seen: a range from it.
                for item in tree.range(start.to_be_bytes()..) {
                    let (raw, value) = item?;
                    visit(&raw, &value, &mut f)?;
                }
                continue;
            }
            // Recent days: newest first, back to `since_ms`, plus anything
            // above the watermark (decoded one at a time: an hour of a busy
            // site is a million presses).
            for item in tree.range(0u64.to_be_bytes()..).rev() {
                let (raw, value) = item?;
                let key = key_of(&raw)?;
                let above = after.is_none_or(|a| key > a);
                let batch = match PressBatch::decode(&value) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(key, error = %e, "a press-log record does not decode; skipped");
                        continue;
                    }
                };
                if !above && batch.received_at_ms().unwrap_or(i64::MIN) < since_ms {
                    break;
                }
                f(key, batch)?;
            }
        }
        Ok(())
    }
}

fn key_of(raw: &[u8]) -> Result<u64, StoreError> {
    raw.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Malformed("press-log key is not 8 bytes"))
}

fn visit(
    raw: &[u8],
    value: &[u8],
    f: &mut impl FnMut(u64, PressBatch) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let key = key_of(raw)?;
    match PressBatch::decode(value) {
        Ok(batch) => f(key, batch),
        Err(e) => {
            tracing::error!(key, error = %e, "a press-log record does not decode; skipped");
            Ok(())
        }
    }
}
