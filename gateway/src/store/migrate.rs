//! Earlier store layouts, migrated in place at open.
//!
//! # Layout 1 → 3
//! Layout 1 kept one `presses` key per press (`terminal \0 boot seq` →
//! postcard `{button, received_at_ms, pressed_at_ms, counted}`), which was
//! both the record and the dedup index. The same presses become batch
//! records in the press log's day files, and the dedup state ranges per
//! (terminal, boot). The outbox's trees are converted by
//! [`outbox_trees`]; the satisfaction aggregates are rebuilt from the press
//! log by the score engine on its first start (no checkpoint yet).
//!
//! Crash-safe: a marker in `meta` says a migration is under way. A start
//! that finds it clears what the interrupted attempt wrote and begins
//! again; `presses` is dropped only once everything is written and
//! flushed.
//!
//! # Layout 2 → 3
//! Layout 2 kept the press log in one sled tree per UTC day
//! (`presslog.<day in hex>`: the same batch records under the same keys,
//! and the day's count under the empty key). Each day's records are
//! copied into its day file, committed ([`PressLog::seal`]), and only then
//! is the tree dropped. Crash-safe per day: a day file not committed yet is
//! deleted at the next open and copied again; a committed one means its
//! tree only has to be dropped.

use std::collections::{BTreeMap, HashMap};

use pressline_protocol::Button;
use serde::Deserialize;

use super::dedup::{self, DedupRecord};
use super::outbox::{key_of, segment_of_name, tree_name};
use super::press_log::PressLog;
use super::records::{LoggedPress, OutboxEntry, OutboxRecord, PressBatch, StoreError};

const LAYOUT1_PRESSES: &str = "presses";
const MARKER: &[u8] = b"migrating_from_layout_1";
/// Layout 1's daily counter, replaced by the press log's day counts.
const LAYOUT1_STORED_DAY: &[u8] = b"stored_day";
/// Presses per migrated record.
const CHUNK: usize = 4096;

/// A press as layout 1 stored it.
#[derive(Deserialize)]
struct Layout1Press {
    button: u8,
    received_at_ms: i64,
    pressed_at_ms: Option<i64>,
    counted: bool,
}

/// Migrates layout 1's presses if there are any; returns how many.
pub fn layout1(
    db: &sled::Db,
    meta: &sled::Tree,
    press_log: &PressLog,
    dedup_tree: &sled::Tree,
) -> Result<u64, StoreError> {
    let has_presses = db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == LAYOUT1_PRESSES.as_bytes());
    if !has_presses {
        if meta.remove(MARKER)?.is_some() {
            db.flush()?;
        }
        return Ok(0);
    }
    if meta.get(MARKER)?.is_some() {
        tracing::warn!(
            "an earlier migration of the press store was interrupted; starting it again"
        );
        press_log.drop_days_before(i64::MAX)?;
        dedup_tree.clear()?;
    }
    meta.insert(MARKER, &[1])?;
    db.flush()?;

    let legacy = db.open_tree(LAYOUT1_PRESSES)?;
    let mut chunks: BTreeMap<i64, PressBatch> = BTreeMap::new();
    let mut dedup: HashMap<(String, u32), DedupRecord> = HashMap::new();
    let mut migrated = 0u64;
    let mut skipped = 0u64;
    let flush_chunk = |day: i64, batch: PressBatch| -> Result<(), StoreError> {
        press_log.write(day, db.generate_id()?, &batch)?;
        Ok(())
    };
    for item in legacy.iter() {
        let (key, value) = item?;
        let parsed = parse_key(&key).and_then(|(terminal, boot, seq)| {
            let p: Layout1Press = postcard::from_bytes(&value).ok()?;
            let button = Button::from_score(p.button)?;
            Some((terminal, boot, seq, button, p))
        });
        let Some((terminal, boot, seq, button, p)) = parsed else {
            skipped += 1;
            continue;
        };
        let day = crate::clock::utc_day(p.received_at_ms);
        let batch = chunks.entry(day).or_default();
        batch.push(
            terminal,
            LoggedPress {
                boot,
                seq,
                button,
                received_at_ms: p.received_at_ms,
                pressed_at_ms: p.pressed_at_ms.map(|at| at.min(p.received_at_ms)),
                counted: p.counted,
                reason: None,
            },
        );
        let record = dedup.entry((terminal.to_string(), boot)).or_default();
        record.seqs.insert(seq);
        record.last_day = record.last_day.max(day);
        migrated += 1;
        if batch.len() >= CHUNK {
            let full = std::mem::take(batch);
            flush_chunk(day, full)?;
        }
    }
    for (day, batch) in std::mem::take(&mut chunks) {
        if !batch.is_empty() {
            flush_chunk(day, batch)?;
        }
    }
    press_log.seal(db)?;
    let mut writes = sled::Batch::default();
    for ((terminal, boot), record) in &dedup {
        writes.insert(dedup::key(terminal, *boot), record.encode());
    }
    dedup_tree.apply_batch(writes)?;
    meta.remove(LAYOUT1_STORED_DAY)?;
    db.flush()?;
    db.drop_tree(LAYOUT1_PRESSES)?;
    meta.remove(MARKER)?;
    db.flush()?;
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "stored presses of layout 1 that did not decode were left out"
        );
    }
    tracing::info!(
        presses = migrated,
        terminals_and_boots = dedup.len(),
        "migrated the press store from layout 1 (press log in day files, dedup ranges)"
    );
    Ok(migrated)
}

const LAYOUT2_DAY_PREFIX: &str = "presslog.";

/// Moves layout 2's press-log day trees into day files; returns how many
/// presses moved.
pub fn layout2(db: &sled::Db, press_log: &PressLog) -> Result<u64, StoreError> {
    let mut days = 0u64;
    let mut moved = 0u64;
    let mut skipped = 0u64;
    for name in db.tree_names() {
        let Some(hex) = name.strip_prefix(LAYOUT2_DAY_PREFIX.as_bytes()) else {
            continue;
        };
        let Some(day) = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| i64::from_str_radix(h, 16).ok())
        else {
            tracing::warn!(tree = %String::from_utf8_lossy(&name), "leaving a sled tree named like a layout-2 press-log day but not one");
            continue;
        };
        if !press_log.has_day(day) {
            let tree = db.open_tree(&name)?;
            // From the first 8-byte key: the day's count sits under the
            // empty key, before every record.
            for item in tree.range(0u64.to_be_bytes()..) {
                let (key, value) = item?;
                let batch = <[u8; 8]>::try_from(key.as_ref())
                    .map_err(|_| StoreError::Malformed("press-log key is not 8 bytes"))
                    .and_then(|k| Ok((u64::from_be_bytes(k), PressBatch::decode(&value)?)));
                match batch {
                    Ok((key, batch)) => {
                        press_log.write(day, key, &batch)?;
                        moved += batch.len() as u64;
                    }
                    Err(e) => {
                        tracing::error!(day, error = %e, "a layout-2 press-log record does not decode; left out");
                        skipped += 1;
                    }
                }
            }
            press_log.seal(db)?;
        }
        db.drop_tree(&name)?;
        days += 1;
    }
    if days > 0 {
        db.flush()?;
        tracing::info!(
            days,
            presses = moved,
            skipped,
            "migrated the press store from layout 2 (press log from sled day trees to day files)"
        );
    }
    Ok(moved)
}

/// Segments of store layout 1's outbox (rendered documents).
const LAYOUT1_OUTBOX_PREFIX: &str = "outbox.";
/// The single outbox tree of layout 0.
const LAYOUT0_OUTBOX: &str = "outbox";

/// Converts the outboxes of layouts 0 and 1 (one rendered document per
/// message, in one `outbox` tree or in `outbox.<segment>` trees) into
/// document records of the current segments, under the same ids (both
/// came from sled's id generator, so the acknowledged ranges stay right),
/// then drops them. Runs before the outbox opens; a crash half-way repeats
/// the copy, which is idempotent. Returns how many messages moved.
pub fn outbox_trees(db: &sled::Db, segment_keys: u64) -> Result<u64, StoreError> {
    let mut moved = 0;
    for name in db.tree_names() {
        let earlier = name.as_ref() == LAYOUT0_OUTBOX.as_bytes()
            || name
                .strip_prefix(LAYOUT1_OUTBOX_PREFIX.as_bytes())
                .is_some_and(|hex| segment_of_name(hex).is_some());
        if earlier {
            moved += convert_outbox_tree(db, &name, segment_keys)?;
        }
    }
    Ok(moved)
}

fn convert_outbox_tree(db: &sled::Db, name: &[u8], segment_keys: u64) -> Result<u64, StoreError> {
    let earlier = db.open_tree(name)?;
    let mut segments: HashMap<u64, sled::Tree> = HashMap::new();
    let mut moved = 0u64;
    for item in earlier.iter() {
        let (key, value) = item?;
        let id = key_of(&key)?;
        // The entry's postcard bytes are a document record's body.
        let entry: OutboxEntry = match postcard::from_bytes(&value) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::error!(key = id, error = %e, "an outbox entry of an earlier layout does not decode; left out");
                continue;
            }
        };
        let segment = id / segment_keys.max(1);
        let tree = match segments.get(&segment) {
            Some(t) => t,
            None => segments
                .entry(segment)
                .or_insert(db.open_tree(tree_name(segment))?),
        };
        tree.insert(key, OutboxRecord::Document(entry).to_bytes()?)?;
        moved += 1;
    }
    db.flush()?;
    db.drop_tree(name)?;
    if moved > 0 {
        tracing::info!(
            messages = moved,
            tree = %String::from_utf8_lossy(name),
            "moved upstream messages of an earlier store layout into the current outbox"
        );
    }
    Ok(moved)
}

/// `terminal \0 boot(BE) seq(BE)`.
fn parse_key(key: &[u8]) -> Option<(&str, u32, u32)> {
    let split = key.len().checked_sub(9)?;
    let (terminal, rest) = key.split_at(split);
    if rest[0] != 0 {
        return None;
    }
    let boot = u32::from_be_bytes(rest[1..5].try_into().ok()?);
    let seq = u32::from_be_bytes(rest[5..9].try_into().ok()?);
    Some((std::str::from_utf8(terminal).ok()?, boot, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::outbox::{AckedRanges, Outbox, SEGMENT_KEYS};
    use crate::store::records::OutboxItem;

    fn entry(n: u64) -> OutboxEntry {
        OutboxEntry {
            topic: format!("t/{n}"),
            payload: n.to_be_bytes().to_vec(),
            retain: false,
            is_press: !n.is_multiple_of(5),
        }
    }

    /// Opens the database an earlier gateway wrote (a restart: sled's id
    /// generator moves past every id it handed out), migrates it and opens
    /// the outbox, as the store does.
    fn reopen(dir: &std::path::Path, earlier: sled::Db) -> (sled::Db, Outbox) {
        earlier.flush().unwrap();
        drop(earlier);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let db = loop {
            match sled::open(dir) {
                Ok(db) => break db,
                // sled's flusher holds the lock a moment after the last
                // handle drops (only in-process reopening sees this).
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::yield_now();
                }
                Err(e) => panic!("db did not reopen: {e}"),
            }
        };
        outbox_trees(&db, SEGMENT_KEYS).unwrap();
        let meta = db.open_tree("meta").unwrap();
        let outbox = Outbox::open(&db, &meta, SEGMENT_KEYS).unwrap();
        (db, outbox)
    }

    fn all_keys(outbox: &Outbox) -> Vec<u64> {
        let items = outbox.read(0, u64::MAX, usize::MAX).unwrap();
        items.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn the_single_outbox_tree_of_layout_0_moves_with_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        {
            let legacy = db.open_tree(LAYOUT0_OUTBOX).unwrap();
            for k in [5u64, 6, 70_000] {
                let bytes = postcard::to_allocvec(&entry(k)).unwrap();
                legacy.insert(k.to_be_bytes(), bytes).unwrap();
            }
        }
        let (db, outbox) = reopen(dir.path(), db);
        assert_eq!(all_keys(&outbox), vec![5, 6, 70_000]);
        assert_eq!(
            outbox.read(6, 6, 10).unwrap()[0].1,
            OutboxItem::Document(entry(6))
        );
        assert!(!db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == LAYOUT0_OUTBOX.as_bytes()));
    }

    #[test]
    fn layout_1_segments_become_document_records_under_the_same_ids() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        {
            let meta = db.open_tree("meta").unwrap();
            let segment = db
                .open_tree(format!("{LAYOUT1_OUTBOX_PREFIX}{:016x}", 0))
                .unwrap();
            for k in 1u64..=4 {
                let bytes = postcard::to_allocvec(&entry(k)).unwrap();
                segment.insert(k.to_be_bytes(), bytes).unwrap();
            }
            // Layout 1 had acknowledged id 2.
            let mut acked = AckedRanges::new(SEGMENT_KEYS);
            acked.insert(2, |_, _| true);
            meta.insert(b"outbox_acked", acked.encode().unwrap())
                .unwrap();
        }
        let (db, outbox) = reopen(dir.path(), db);
        assert_eq!(all_keys(&outbox), vec![1, 3, 4]);
        assert_eq!(
            outbox.count().unwrap(),
            (3, 3),
            "layout-1 press documents still count as presses"
        );
        assert!(db
            .tree_names()
            .iter()
            .all(|n| !n.starts_with(LAYOUT1_OUTBOX_PREFIX.as_bytes())));
    }
}
