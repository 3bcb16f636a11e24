//! The score engine's persistence: checkpoints of its day records in the
//! store, the start-up that loads them and folds in the press log they had
//! not seen, and the expiry of days past the aggregate retention.
//!
//! The committer is the only writer of the day records (it folds presses
//! in and writes checkpoints), so a checkpoint's read-modify-write of a
//! record needs no lock beyond the engine's own.

use pressline_host::sync::LockExt;
use std::sync::Mutex;

use super::counts::DaySlots;
use super::scores::{
    parse_day_key, site_day_key, terminal_day_key, terminal_days_of, Fold, Scores,
    ScoresCheckpoint, LIVE_MINUTES, SITE_DAYS,
};
use crate::store::{Checkpoint, Store, StoreError};

/// What start-up loaded and folded in.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub site_days: usize,
    pub terminal_days: usize,
    /// Presses folded in from the press log (above the checkpoint, or
    /// within the live windows).
    pub replayed: u64,
}

/// Loads the last checkpoint into a new engine and folds in the press
/// log above its watermark, and the last hour of presses for the live
/// windows; then writes a checkpoint of what that added.
pub fn restore(store: &Store, scores: &Mutex<Scores>, now_ms: i64) -> Result<Restored, StoreError> {
    let mut restored = Restored::default();
    let watermark = store.aggregates_watermark()?;
    {
        let mut s = scores.locked();
        s.restore_watermark(watermark);
        for (key, value) in store.aggregates(SITE_DAYS)? {
            match (parse_day_key(&key), DaySlots::decode(&value)) {
                (Some((day, None)), Some(slots)) => {
                    s.restore_site_day(day, slots);
                    restored.site_days += 1;
                }
                _ => {
                    tracing::warn!(key = ?key, "a site day record does not decode; left out of the reports")
                }
            }
        }
        for day in s.days_in_memory() {
            for (key, value) in store.aggregates(&terminal_days_of(day))? {
                match (parse_day_key(&key), DaySlots::decode(&value)) {
                    (Some((day, Some(terminal))), Some(slots)) => {
                        s.restore_terminal_day(day, terminal, slots);
                        restored.terminal_days += 1;
                    }
                    _ => {
                        tracing::warn!(key = ?key, "a terminal day record does not decode; left out")
                    }
                }
            }
        }
    }
    restored.replayed = replay(store, scores, watermark, now_ms)?;
    write(store, scores)?;
    Ok(restored)
}

/// Folds in press-log records above `after`, and (for the live windows
/// only) those of the last hour.
fn replay(
    store: &Store,
    scores: &Mutex<Scores>,
    after: Option<u64>,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let mut replayed = 0u64;
    let since = now_ms - (LIVE_MINUTES + 1) * 60_000;
    store.replay_presses(after, since, |id, batch| {
        let how = if after.is_none_or(|a| id > a) {
            Fold::Replay
        } else {
            Fold::LiveOnly
        };
        replayed += batch.len() as u64;
        scores.locked().fold(now_ms, id, &batch, how);
        Ok(())
    })?;
    scores.locked().prune(now_ms);
    Ok(replayed)
}

/// After the store was reopened: folds in whatever was committed but not
/// folded (a batch whose flush reported an error may have reached disk
/// all the same).
pub fn catch_up(store: &Store, scores: &Mutex<Scores>, now_ms: i64) -> Result<u64, StoreError> {
    let after = scores.locked().folded_through();
    let mut n = 0u64;
    store.replay_presses(after, i64::MAX, |id, batch| {
        if after.is_none_or(|a| id > a) {
            n += batch.len() as u64;
            scores.locked().fold(now_ms, id, &batch, Fold::Replay);
        }
        Ok(())
    })?;
    Ok(n)
}

/// Writes what changed since the last checkpoint. On failure the changes
/// stay pending for the next attempt.
pub fn write(store: &Store, scores: &Mutex<Scores>) -> Result<(), StoreError> {
    let (checkpoint, previous) = {
        let mut s = scores.locked();
        let previous = s.checkpointed_through();
        (s.take_checkpoint(), previous)
    };
    let Some(checkpoint) = checkpoint else {
        return Ok(());
    };
    match merge_and_save(store, &checkpoint) {
        Ok(()) => Ok(()),
        Err(e) => {
            scores.locked().checkpoint_failed(checkpoint, previous);
            Err(e)
        }
    }
}

fn merge_and_save(store: &Store, checkpoint: &ScoresCheckpoint) -> Result<(), StoreError> {
    let mut put = Vec::with_capacity(checkpoint.site_days.len() + checkpoint.terminal_days.len());
    let keyed = checkpoint
        .site_days
        .iter()
        .map(|(day, delta)| (site_day_key(*day), delta))
        .chain(
            checkpoint
                .terminal_days
                .iter()
                .map(|((day, terminal), delta)| (terminal_day_key(*day, terminal), delta)),
        );
    for (key, delta) in keyed {
        let mut slots = match store.aggregate(&key)? {
            Some(bytes) => DaySlots::decode(&bytes).unwrap_or_else(|| {
                tracing::warn!(key = ?key, "a day record does not decode; rewritten from what is folded since");
                DaySlots::default()
            }),
            None => DaySlots::default(),
        };
        slots.merge(delta);
        put.push((key, slots.encode()));
    }
    store.save_aggregates(&Checkpoint {
        put,
        delete: Vec::new(),
        watermark: checkpoint.watermark,
    })
}

/// Deletes the day records past the aggregate retention, and takes their
/// site days out of the hour table; returns how many days went.
pub fn expire(store: &Store, scores: &Mutex<Scores>, now_ms: i64) -> Result<usize, StoreError> {
    let cutoff = scores.locked().retention_cutoff(now_ms);
    let mut delete = Vec::new();
    let mut expired = Vec::new();
    for (key, value) in store.aggregates(SITE_DAYS)? {
        if let Some((day, None)) = parse_day_key(&key) {
            if day < cutoff {
                if let Some(slots) = DaySlots::decode(&value) {
                    expired.push((day, slots));
                }
                delete.push(key);
            }
        }
    }
    // Terminal records sort by day: every key below the cutoff day's.
    delete.extend(store.aggregate_keys(b"t", &terminal_days_of(cutoff))?);
    if delete.is_empty() {
        return Ok(0);
    }
    store.save_aggregates(&Checkpoint {
        put: Vec::new(),
        delete,
        watermark: None,
    })?;
    let mut s = scores.locked();
    for (day, slots) in &expired {
        s.forget_site_day(*day, slots);
    }
    Ok(expired.len())
}
