//! The upstream outbox: messages waiting for the upstream broker's PUBACK.
//!
//! # Ids and records
//! Every message has an outbox id, increasing, one per press and one per
//! document. A record holds either one document (health, alerts, OTA
//! events) under its id, or the presses of one group commit under the id
//! of the first ([`OutboxRecord::Presses`]): the next presses have the next
//! ids. So a commit writes one record however many presses it stores,
//! while acknowledgements stay per message.
//!
//! # Why segments
//! Removing every acknowledged entry from one sled tree makes each removal
//! a page update, and during a long drain sled's I/O threads then spend
//! more CPU consolidating removals than the forwarder spends forwarding
//! (BENCHMARKS.md, "Backlog drain").
//!
//! So acknowledged messages are not removed one by one. Instead:
//! - Ids are grouped into *segments* of [`SEGMENT_KEYS`] consecutive ids,
//!   each its own sled tree (`outbox2.<segment in hex>`); a record never
//!   spans two segments (a commit's presses are split at the boundary).
//! - Acknowledged ids are recorded as ranges ([`AckedRanges`]), kept in
//!   memory and written to the `meta` tree as one small record per batch of
//!   PUBACKs. Reads skip them.
//! - A segment that can get no new ids (a newer one exists) and whose every
//!   id is acknowledged is dropped whole: sled frees its pages, not its
//!   keys one at a time.
//!
//! # Crash semantics
//! A message is only ever *skipped* once the upstream broker acknowledged
//! it. The ranges are written at most every [`PERSIST_EVERY`] (or every
//! [`PERSIST_AFTER_KEYS`] acknowledgements) and not flushed with each
//! PUBACK, so a crash can forget the last second or so of
//! acknowledgements: those messages are sent again, and upstream consumers
//! deduplicate on the press id. The forwarder writes what is left once a
//! second ([`Outbox::persist_acknowledged`]).
//!
//! # Why the lock
//! Two acknowledged ranges are merged across ids that have no message (ids
//! handed out and never used, or skipped at a restart). That is only right
//! if no message can appear there later, that is, if no commit that
//! reserved such an id is still writing. Commits hold `Outbox::segments`
//! for reading from reserving their ids until their transaction is done;
//! acknowledging takes it for writing. The same lock keeps a segment from
//! being dropped while a reader walks it.
//!
//! # Why reads stop below ids still being written
//! Ids are handed out before the records are written, and commits run
//! concurrently (presses, health documents). If a reader saw id 111 while
//! id 100 was still being written, the forwarder's cursor would pass 100
//! and that press would wait for the next reconnect. So every reservation
//! is registered while its ids are generated, and reads (and
//! [`Outbox::last_key`]) stop below the lowest id still being written.
//! With nothing being written they stop at the last id generated when
//! they began, not at the end of the tree: a commit that reserves id 100
//! after a read began, and a document that reserves 111 and is written
//! while that commit is still writing, must not hand the read 111 either.
//!
//! Earlier layouts' outboxes are converted into this one before it opens
//! ([`super::migrate::outbox_trees`]).

use pressline_host::sync::{LockExt, RwLockExt};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::records::{OutboxEntry, OutboxItem, OutboxRecord, PressBatch, StoreError};

/// Ids per segment. A drain drops a segment about every 16k messages; an
/// idle site keeps at most one segment of acknowledged entries (~2 MB).
pub const SEGMENT_KEYS: u64 = 1 << 14;

const TREE_PREFIX: &str = "outbox2.";
const ACKED_KEY: &[u8] = b"outbox_acked";
/// Acknowledged ranges are written at least this often while PUBACKs come.
pub const PERSIST_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// ... or after this many acknowledgements, whichever comes first.
pub const PERSIST_AFTER_KEYS: usize = 4096;

/// Acknowledged outbox keys, as disjoint inclusive ranges that never span
/// two segments. Sans-IO: whether two ranges may merge across a gap is
/// asked of the caller, who knows which keys exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckedRanges {
    segment_keys: u64,
    /// start → end (inclusive).
    ranges: BTreeMap<u64, u64>,
}

impl AckedRanges {
    pub fn new(segment_keys: u64) -> AckedRanges {
        AckedRanges {
            segment_keys,
            ranges: BTreeMap::new(),
        }
    }

    fn segment(&self, key: u64) -> u64 {
        key / self.segment_keys
    }

    /// The end of the range holding `key`, if `key` is acknowledged.
    pub fn end_of_range_with(&self, key: u64) -> Option<u64> {
        self.ranges
            .range(..=key)
            .next_back()
            .filter(|(_, &end)| end >= key)
            .map(|(_, &end)| end)
    }

    pub fn contains(&self, key: u64) -> bool {
        self.end_of_range_with(key).is_some()
    }

    /// Records `key` as acknowledged. `nothing_between(lo, hi)` must say
    /// whether no entry exists, or can ever exist, with a key strictly
    /// between `lo` and `hi`; only then are neighbouring ranges merged.
    pub fn insert(&mut self, key: u64, mut nothing_between: impl FnMut(u64, u64) -> bool) {
        if self.contains(key) {
            return;
        }
        let segment = self.segment(key);
        let mut start = key;
        let mut end = key;
        if let Some((&s, &e)) = self.ranges.range(..key).next_back() {
            if self.segment(s) == segment && (e + 1 == key || nothing_between(e, key)) {
                self.ranges.remove(&s);
                start = s;
            }
        }
        if let Some((&s, &e)) = self.ranges.range(key + 1..).next() {
            if self.segment(s) == segment && (key + 1 == s || nothing_between(key, s)) {
                self.ranges.remove(&s);
                end = e;
            }
        }
        self.ranges.insert(start, end);
    }

    /// Whether one range covers every key from `first` to `last`.
    pub fn covers(&self, first: u64, last: u64) -> bool {
        self.end_of_range_with(first).is_some_and(|end| end >= last)
    }

    /// How many of the ids `first..=last` are acknowledged.
    pub fn count_within(&self, first: u64, last: u64) -> u64 {
        let mut n = 0;
        let start = self
            .ranges
            .range(..=first)
            .next_back()
            .map_or(first, |(&s, _)| s);
        for (&s, &e) in self.ranges.range(start..=last) {
            let lo = s.max(first);
            let hi = e.min(last);
            if lo <= hi {
                n += hi - lo + 1;
            }
        }
        n
    }

    /// Forgets the ranges of a dropped segment.
    pub fn forget_segment(&mut self, segment: u64) {
        let start = segment * self.segment_keys;
        let end = start.saturating_add(self.segment_keys - 1);
        let starts: Vec<u64> = self.ranges.range(start..=end).map(|(&s, _)| s).collect();
        for s in starts {
            self.ranges.remove(&s);
        }
    }

    pub fn segments(&self) -> impl Iterator<Item = u64> + '_ {
        let mut last = None;
        self.ranges.keys().filter_map(move |&s| {
            let seg = s / self.segment_keys;
            (last.replace(seg) != Some(seg)).then_some(seg)
        })
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let ranges: Vec<(u64, u64)> = self.ranges.iter().map(|(&s, &e)| (s, e)).collect();
        Ok(postcard::to_allocvec(&ranges)?)
    }

    fn decode(segment_keys: u64, bytes: &[u8]) -> Result<AckedRanges, StoreError> {
        let ranges: Vec<(u64, u64)> = postcard::from_bytes(bytes)?;
        let mut out = AckedRanges::new(segment_keys);
        for (s, e) in ranges {
            // A record that breaks the invariants is ignored range by range:
            // forgetting an acknowledgement only resends.
            if s <= e && s / segment_keys == e / segment_keys {
                out.ranges.insert(s, e);
            }
        }
        Ok(out)
    }
}

/// Outbox ids reserved for one commit, with the segment trees they fall in.
/// Holds the segment lock for reading until dropped: the commit's
/// transaction must run while this is alive.
pub struct Reservation<'a> {
    _segments: SegmentsGuard<'a>,
    ids: Vec<u64>,
    trees: Vec<(u64, sled::Tree)>,
    segment_keys: u64,
    in_flight: &'a Mutex<InFlight>,
}

/// Ids handed out and not yet written.
#[derive(Debug, Default)]
struct InFlight {
    /// First id of each reservation whose entries are still being written.
    firsts: std::collections::BTreeSet<u64>,
    /// The last id generated (everything up to it is written or
    /// abandoned once `firsts` holds nothing below it).
    last_generated: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        // Before the segment guard (fields drop after this body).
        if let Some(first) = self.ids.first() {
            self.in_flight.locked().firsts.remove(first);
        }
    }
}

impl Reservation<'_> {
    /// The reserved ids, increasing. Ids left unused are simply skipped.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// The distinct segment trees the ids fall in, in order.
    pub fn trees(&self) -> impl Iterator<Item = &sled::Tree> {
        self.trees.iter().map(|(_, t)| t)
    }

    /// Index into [`Reservation::trees`] of the tree for `id`.
    pub fn tree_index(&self, id: u64) -> Result<usize, StoreError> {
        let segment = id / self.segment_keys;
        self.trees
            .iter()
            .position(|(s, _)| *s == segment)
            .ok_or(StoreError::Malformed(
                "an outbox id outside its reservation",
            ))
    }

    /// The records for `batch`, whose presses take the reserved ids in
    /// order: (tree index, key, record). Split where the ids cross into
    /// the next segment, so that no record spans two.
    pub fn press_records(
        &self,
        batch: &PressBatch,
    ) -> Result<Vec<(usize, u64, Vec<u8>)>, StoreError> {
        if batch.len() > self.ids.len() {
            return Err(StoreError::Malformed(
                "more presses than reserved outbox ids",
            ));
        }
        let mut records = Vec::new();
        let mut part = PressBatch::default();
        let mut part_first = None;
        for (&id, (terminal, press)) in self.ids.iter().zip(batch.iter()) {
            if let Some(first) = part_first {
                if id / self.segment_keys != first / self.segment_keys {
                    let record = OutboxRecord::Presses(std::mem::take(&mut part));
                    records.push((self.tree_index(first)?, first, record.to_bytes()?));
                    part_first = None;
                }
            }
            part_first.get_or_insert(id);
            part.push(terminal, *press);
        }
        if let Some(first) = part_first {
            let record = OutboxRecord::Presses(part);
            records.push((self.tree_index(first)?, first, record.to_bytes()?));
        }
        Ok(records)
    }
}

/// Either hold on the segment lock keeps acknowledgements from judging a
/// reserved id's gap empty, and segments from being dropped.
enum SegmentsGuard<'a> {
    Read(#[allow(dead_code)] RwLockReadGuard<'a, BTreeMap<u64, sled::Tree>>),
    Write(#[allow(dead_code)] RwLockWriteGuard<'a, BTreeMap<u64, sled::Tree>>),
}

/// The segmented outbox (see the module documentation).
pub struct Outbox {
    db: sled::Db,
    meta: sled::Tree,
    segment_keys: u64,
    segments: RwLock<BTreeMap<u64, sled::Tree>>,
    acked: Mutex<AckedRanges>,
    /// First and last key of sealed segments (they never change once a
    /// newer segment exists), so checking whether a segment is finished
    /// after each batch of PUBACKs costs no tree walk.
    sealed_bounds: Mutex<std::collections::HashMap<u64, Option<(u64, u64)>>>,
    /// Acknowledgements not yet written to `meta`, and when it was last
    /// written: a write per PUBACK burst would cost a drain much of its
    /// CPU (BENCHMARKS.md, "Backlog drain").
    unpersisted: Mutex<(usize, std::time::Instant)>,
    persist_every: std::time::Duration,
    persist_after_keys: usize,
    /// Reservations whose entries are still being written.
    in_flight: Mutex<InFlight>,
}

/// The segment a tree's name (after its prefix) says, in hex.
pub(super) fn segment_of_name(hex: &[u8]) -> Option<u64> {
    std::str::from_utf8(hex)
        .ok()
        .and_then(|h| u64::from_str_radix(h, 16).ok())
}

pub(super) fn tree_name(segment: u64) -> String {
    format!("{TREE_PREFIX}{segment:016x}")
}

pub(super) fn key_of(raw: &[u8]) -> Result<u64, StoreError> {
    raw.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Malformed("outbox key is not 8 bytes"))
}

/// Ids a stored record covers (at least 1: a damaged record still holds
/// its own id, so walks always move on).
fn span_of(key: u64, value: &[u8]) -> u64 {
    match OutboxRecord::span(value) {
        Ok(n) if n > 0 => n,
        Ok(_) => 1,
        Err(e) => {
            tracing::error!(key, error = %e, "an outbox record header does not decode");
            1
        }
    }
}

/// Whether no message exists, or can appear, strictly between the ids
/// `lo` and `hi` of `tree` (under the segment write lock, so no commit is
/// between reserving ids there and writing them).
fn nothing_between(tree: &sled::Tree, lo: u64, hi: u64) -> bool {
    if lo.saturating_add(1) >= hi {
        return true;
    }
    let first = lo + 1;
    // A record that starts at or before `first` and reaches it ...
    let covered = match tree.range(..=first.to_be_bytes()).next_back() {
        Some(Ok((raw, value))) => match key_of(&raw) {
            Ok(key) => key.saturating_add(span_of(key, &value)) > first,
            Err(_) => true,
        },
        Some(Err(_)) => true,
        None => false,
    };
    // ... or one that starts inside the gap.
    !covered
        && tree
            .range(first.to_be_bytes()..hi.to_be_bytes())
            .next()
            .is_none()
}

impl Outbox {
    /// Opens the outbox in `db`: finds its segments, loads the acknowledged
    /// ranges, and drops segments a crash left fully acknowledged.
    pub fn open(db: &sled::Db, meta: &sled::Tree, segment_keys: u64) -> Result<Outbox, StoreError> {
        if segment_keys == 0 {
            return Err(StoreError::Malformed(
                "outbox segments must hold at least one id",
            ));
        }
        let mut segments = BTreeMap::new();
        for name in db.tree_names() {
            let Some(hex) = name.strip_prefix(TREE_PREFIX.as_bytes()) else {
                continue;
            };
            match segment_of_name(hex) {
                Some(segment) => {
                    segments.insert(segment, db.open_tree(&name)?);
                }
                None => tracing::warn!(
                    tree = %String::from_utf8_lossy(&name),
                    "ignoring a sled tree that looks like an outbox segment but is not named like one"
                ),
            }
        }
        let acked = match meta.get(ACKED_KEY)? {
            Some(bytes) => AckedRanges::decode(segment_keys, &bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "acknowledged-outbox record does not decode; those messages will be sent again");
                AckedRanges::new(segment_keys)
            }),
            None => AckedRanges::new(segment_keys),
        };
        let outbox = Outbox {
            db: db.clone(),
            meta: meta.clone(),
            segment_keys,
            segments: RwLock::new(segments),
            acked: Mutex::new(acked),
            sealed_bounds: Mutex::new(std::collections::HashMap::new()),
            unpersisted: Mutex::new((0, std::time::Instant::now())),
            persist_every: PERSIST_EVERY,
            persist_after_keys: PERSIST_AFTER_KEYS,
            // Every id handed out before this open is written or abandoned.
            in_flight: Mutex::new(InFlight {
                firsts: Default::default(),
                last_generated: db.generate_id()?,
            }),
        };
        {
            let mut segments = outbox.write_segments();
            let mut acked = outbox.acked();
            let stale: Vec<u64> = acked
                .segments()
                .filter(|s| !segments.contains_key(s))
                .collect();
            for segment in stale {
                acked.forget_segment(segment);
            }
            let all: Vec<u64> = segments.keys().copied().collect();
            outbox.drop_finished(&mut segments, &mut acked, &all)?;
            outbox.meta.insert(ACKED_KEY, acked.encode()?)?;
        }
        Ok(outbox)
    }

    fn read_segments(&self) -> RwLockReadGuard<'_, BTreeMap<u64, sled::Tree>> {
        self.segments.read_locked()
    }

    fn write_segments(&self) -> RwLockWriteGuard<'_, BTreeMap<u64, sled::Tree>> {
        self.segments.write_locked()
    }

    fn acked(&self) -> MutexGuard<'_, AckedRanges> {
        self.acked.locked()
    }

    fn segment(&self, key: u64) -> u64 {
        key / self.segment_keys
    }

    /// Reserves `n` increasing ids and opens the segments they fall in.
    /// The commit writing them must run while the reservation is alive.
    pub fn reserve(&self, n: usize) -> Result<Reservation<'_>, StoreError> {
        {
            let segments = self.read_segments();
            let ids = self.generate_ids(n)?;
            let wanted = self.segments_of(&ids);
            if wanted.iter().all(|s| segments.contains_key(s)) {
                let trees = wanted.iter().map(|s| (*s, segments[s].clone())).collect();
                return Ok(Reservation {
                    _segments: SegmentsGuard::Read(segments),
                    ids,
                    trees,
                    segment_keys: self.segment_keys,
                    in_flight: &self.in_flight,
                });
            }
            if let Some(first) = ids.first() {
                self.in_flight.locked().firsts.remove(first);
            }
        }
        // A new segment (the ids above are skipped; gaps are harmless).
        // Reserve again under the write lock and create what is missing;
        // the older segments are sealed now, so some may be finished.
        let mut segments = self.write_segments();
        let ids = self.generate_ids(n)?;
        let wanted = self.segments_of(&ids);
        for &segment in &wanted {
            if let std::collections::btree_map::Entry::Vacant(e) = segments.entry(segment) {
                e.insert(self.db.open_tree(tree_name(segment))?);
            }
        }
        let mut acked = self.acked();
        let older: Vec<u64> = segments
            .keys()
            .copied()
            .filter(|s| !wanted.contains(s))
            .collect();
        if self.drop_finished(&mut segments, &mut acked, &older)? {
            self.meta.insert(ACKED_KEY, acked.encode()?)?;
        }
        drop(acked);
        let trees = wanted.iter().map(|s| (*s, segments[s].clone())).collect();
        Ok(Reservation {
            _segments: SegmentsGuard::Write(segments),
            ids,
            trees,
            segment_keys: self.segment_keys,
            in_flight: &self.in_flight,
        })
    }

    /// `n` fresh ids, registered as being written (see the module
    /// documentation) until the reservation holding them is dropped.
    fn generate_ids(&self, n: usize) -> Result<Vec<u64>, StoreError> {
        let mut in_flight = self.in_flight.locked();
        let ids = (0..n)
            .map(|_| self.db.generate_id())
            .collect::<Result<Vec<u64>, _>>()?;
        if let (Some(&first), Some(&last)) = (ids.first(), ids.last()) {
            in_flight.firsts.insert(first);
            in_flight.last_generated = in_flight.last_generated.max(last);
        }
        Ok(ids)
    }

    /// The highest id below every id still being written, and no higher
    /// than the last id generated so far: entries up to it are all there
    /// (or never will be), whatever is reserved after this call.
    fn written_through(&self) -> u64 {
        let in_flight = self.in_flight.locked();
        in_flight
            .firsts
            .first()
            .map_or(in_flight.last_generated, |first| first.saturating_sub(1))
    }

    fn segments_of(&self, ids: &[u64]) -> Vec<u64> {
        let mut segments: Vec<u64> = ids.iter().map(|&id| self.segment(id)).collect();
        segments.dedup();
        segments
    }

    /// Press records with keys above `after` (all for `None`), delivered
    /// or not, in key order: what the press log rebuilds records lost in a
    /// power cut from (see [`super::press_log`]).
    pub fn press_records_after(
        &self,
        after: Option<u64>,
    ) -> Result<Vec<(u64, PressBatch)>, StoreError> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let segments = self.read_segments();
        let mut out = Vec::new();
        for tree in segments.range(self.segment(from)..).map(|(_, t)| t) {
            for item in tree.range(from.to_be_bytes()..) {
                let (raw, value) = item?;
                if let Ok(OutboxRecord::Presses(batch)) = OutboxRecord::decode(&value) {
                    out.push((key_of(&raw)?, batch));
                }
            }
        }
        Ok(out)
    }

    /// Writes messages that need no transaction with a press (status
    /// documents), each under a fresh id.
    pub fn enqueue(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        let reservation = self.reserve(entries.len())?;
        let trees: Vec<&sled::Tree> = reservation.trees().collect();
        for (entry, &id) in entries.iter().zip(reservation.ids()) {
            let record = OutboxRecord::Document(entry.clone()).to_bytes()?;
            trees[reservation.tree_index(id)?].insert(id.to_be_bytes(), record)?;
        }
        Ok(())
    }

    /// The key of the record holding `id` if one starts before it, else
    /// `id`: where a walk that must not miss `id` starts.
    fn record_start(&self, tree: &sled::Tree, id: u64) -> Result<u64, StoreError> {
        if let Some(item) = tree.range(..id.to_be_bytes()).next_back() {
            let (raw, value) = item?;
            let key = key_of(&raw)?;
            if key.saturating_add(span_of(key, &value)) > id {
                return Ok(key);
            }
        }
        Ok(id)
    }

    /// Up to `limit` unacknowledged messages with ids in `from..=to`,
    /// oldest first.
    pub fn read(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxItem)>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(1024));
        let segments = self.read_segments();
        let to = to.min(self.written_through());
        if from > to || limit == 0 {
            return Ok(out);
        }
        let acked = self.acked();
        for (&segment, tree) in segments.range(self.segment(from)..=self.segment(to)) {
            let seg_start = segment * self.segment_keys;
            let seg_end = seg_start.saturating_add(self.segment_keys - 1);
            // The first id still of interest.
            let mut next = from.max(seg_start);
            let last = to.min(seg_end);
            'seek: while next <= last {
                let start = self.record_start(tree, next)?;
                for item in tree.range(start.to_be_bytes()..=last.to_be_bytes()) {
                    let (raw, value) = item?;
                    let key = key_of(&raw)?;
                    let record_last = key.saturating_add(span_of(key, &value) - 1);
                    if record_last < next {
                        continue;
                    }
                    let first = key.max(next);
                    if let Some(end) = acked.end_of_range_with(first) {
                        if end > record_last {
                            // Jump over the whole acknowledged range.
                            next = end.saturating_add(1);
                            continue 'seek;
                        }
                        if end == record_last {
                            next = record_last.saturating_add(1);
                            continue;
                        }
                    }
                    let record = match OutboxRecord::decode(&value) {
                        Ok(r) => r,
                        Err(e) => {
                            // Never block the rest behind a damaged record.
                            tracing::error!(key, error = %e, "an outbox record does not decode; skipped");
                            next = record_last.saturating_add(1);
                            continue;
                        }
                    };
                    match record {
                        OutboxRecord::Document(entry) => {
                            out.push((key, OutboxItem::Document(entry)));
                            if out.len() == limit {
                                return Ok(out);
                            }
                        }
                        OutboxRecord::Presses(batch) => {
                            for (id, (terminal, press)) in (key..).zip(batch.iter()) {
                                if id < first || acked.contains(id) {
                                    continue;
                                }
                                if id > last {
                                    break;
                                }
                                out.push((
                                    id,
                                    OutboxItem::Press {
                                        terminal: terminal.clone(),
                                        press: *press,
                                    },
                                ));
                                if out.len() == limit {
                                    return Ok(out);
                                }
                            }
                        }
                    }
                    next = record_last.saturating_add(1);
                }
                break;
            }
        }
        Ok(out)
    }

    /// The newest id, acknowledged or not, below any id still being
    /// written (the forwarder's backlog ends there).
    pub fn last_key(&self) -> Result<Option<u64>, StoreError> {
        let segments = self.read_segments();
        let through = self.written_through();
        for tree in segments.values().rev() {
            if let Some(item) = tree.range(..=through.to_be_bytes()).next_back() {
                let (raw, value) = item?;
                let key = key_of(&raw)?;
                return Ok(Some(key.saturating_add(span_of(key, &value) - 1)));
            }
        }
        Ok(None)
    }

    /// The upstream broker has these messages: records them as
    /// acknowledged (one small write) and drops segments now finished.
    pub fn acknowledge(&self, keys: &[u64]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let count = keys.len();
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        // For writing: no commit may be between reserving ids and writing
        // them while gaps are judged empty (see the module documentation).
        let mut segments = self.write_segments();
        let mut acked = self.acked();
        let mut touched = Vec::new();
        for key in keys {
            let segment = self.segment(key);
            let Some(tree) = segments.get(&segment) else {
                continue; // already dropped: acknowledged twice
            };
            acked.insert(key, |lo, hi| nothing_between(tree, lo, hi));
            if touched.last() != Some(&segment) {
                touched.push(segment);
            }
        }
        let dropped = self.drop_finished(&mut segments, &mut acked, &touched)?;
        self.persist(&acked, count, dropped)
    }

    /// Writes the acknowledged ranges if any are unwritten (the forwarder
    /// calls this once a second, and the store before flushing).
    pub fn persist_acknowledged(&self) -> Result<(), StoreError> {
        let acked = self.acked();
        let pending = self.unpersisted.locked().0 > 0;
        if pending {
            self.persist(&acked, 0, true)?;
        }
        Ok(())
    }

    /// Counts `new` acknowledgements and writes the ranges when due, or
    /// now if `force` (a segment was dropped: its ranges are gone).
    fn persist(&self, acked: &AckedRanges, new: usize, force: bool) -> Result<(), StoreError> {
        let mut unpersisted = self.unpersisted.locked();
        unpersisted.0 += new;
        let due = force
            || unpersisted.0 >= self.persist_after_keys
            || (unpersisted.0 > 0 && unpersisted.1.elapsed() >= self.persist_every);
        if due {
            self.meta.insert(ACKED_KEY, acked.encode()?)?;
            *unpersisted = (0, std::time::Instant::now());
        }
        Ok(())
    }

    /// Drops those of `candidates` that are sealed (a newer segment exists)
    /// and hold no unacknowledged entry. Returns whether any was dropped.
    fn drop_finished(
        &self,
        segments: &mut BTreeMap<u64, sled::Tree>,
        acked: &mut AckedRanges,
        candidates: &[u64],
    ) -> Result<bool, StoreError> {
        let Some(&newest) = segments.keys().next_back() else {
            return Ok(false);
        };
        let mut dropped = false;
        for &segment in candidates {
            if segment >= newest {
                continue;
            }
            let Some(tree) = segments.get(&segment) else {
                continue;
            };
            let mut sealed_bounds = self.sealed_bounds.locked();
            let bounds = match sealed_bounds.get(&segment) {
                Some(bounds) => *bounds,
                None => {
                    let bounds = match (tree.first()?, tree.last()?) {
                        (Some((first, _)), Some((last, value))) => {
                            let last = key_of(&last)?;
                            Some((
                                key_of(&first)?,
                                last.saturating_add(span_of(last, &value) - 1),
                            ))
                        }
                        _ => None,
                    };
                    sealed_bounds.insert(segment, bounds);
                    bounds
                }
            };
            let finished = bounds.is_none_or(|(first, last)| acked.covers(first, last));
            if finished {
                self.db.drop_tree(tree_name(segment))?;
                segments.remove(&segment);
                acked.forget_segment(segment);
                sealed_bounds.remove(&segment);
                dropped = true;
            }
        }
        Ok(dropped)
    }

    /// Unacknowledged messages, and how many of them are presses (walks
    /// every record: start-up only).
    pub fn count(&self) -> Result<(usize, usize), StoreError> {
        let segments = self.read_segments();
        let acked = self.acked();
        let through = self.written_through();
        let (mut all, mut presses) = (0u64, 0u64);
        for tree in segments.values() {
            for item in tree.range(..=through.to_be_bytes()) {
                let (raw, value) = item?;
                let key = key_of(&raw)?;
                let span = span_of(key, &value);
                let pending = span - acked.count_within(key, key.saturating_add(span - 1));
                all += pending;
                if pending > 0 && OutboxRecord::holds_presses(&value) {
                    presses += pending;
                }
            }
        }
        Ok((all as usize, presses as usize))
    }

    /// Writes acknowledgements only when told to or when a segment is
    /// dropped, so tests decide what a crash forgets.
    #[cfg(test)]
    fn persisting_only_when_told(mut self) -> Outbox {
        self.persist_every = std::time::Duration::MAX;
        self.persist_after_keys = usize::MAX;
        self
    }

    /// Number of segment trees (for tests and diagnostics).
    pub fn segment_count(&self) -> usize {
        self.read_segments().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> OutboxEntry {
        OutboxEntry {
            topic: format!("t/{n}"),
            payload: n.to_be_bytes().to_vec(),
            retain: false,
            is_press: !n.is_multiple_of(5),
        }
    }

    fn press(seq: u32) -> crate::store::records::LoggedPress {
        crate::store::records::LoggedPress {
            boot: 0,
            seq,
            button: pressline_protocol::Button::Happy,
            received_at_ms: 1_700_000_000_000 + i64::from(seq),
            pressed_at_ms: None,
            counted: true,
            reason: None,
        }
    }

    /// Writes `n` presses as one commit does: one reservation, records
    /// split at segment boundaries. Returns their ids.
    fn enqueue_presses(outbox: &Outbox, terminals: &[&str], n: usize) -> Vec<u64> {
        let reservation = outbox.reserve(n).unwrap();
        let mut batch = PressBatch::default();
        for i in 0..n {
            batch.push(terminals[i % terminals.len()], press(i as u32));
        }
        let trees: Vec<sled::Tree> = reservation.trees().cloned().collect();
        for (tree, key, record) in reservation.press_records(&batch).unwrap() {
            trees[tree].insert(key.to_be_bytes(), record).unwrap();
        }
        reservation.ids().to_vec()
    }

    fn open(dir: &std::path::Path, segment_keys: u64) -> (sled::Db, Outbox) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let db = loop {
            match sled::Config::new().path(dir).cache_capacity(1 << 20).open() {
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
        let meta = db.open_tree("meta").unwrap();
        let outbox = Outbox::open(&db, &meta, segment_keys).unwrap();
        (db, outbox)
    }

    fn all_keys(outbox: &Outbox) -> Vec<u64> {
        outbox
            .read(0, u64::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    fn never_anything_between(_: u64, _: u64) -> bool {
        true
    }

    #[test]
    fn acknowledged_keys_merge_into_ranges_only_over_empty_gaps() {
        let mut acked = AckedRanges::new(100);
        acked.insert(10, never_anything_between);
        acked.insert(11, |_, _| panic!("adjacent keys need no question"));
        assert_eq!(acked.len(), 1);
        // Key 13 exists and is pending: 12 is a hole, 14 stays apart.
        acked.insert(14, |lo, hi| !(lo < 13 && 13 < hi));
        assert_eq!(acked.len(), 2);
        assert!(!acked.contains(12) && !acked.contains(13));
        // 13 acknowledged: 12 never existed, so all of 10..=14 is one range.
        acked.insert(13, never_anything_between);
        assert_eq!(acked.len(), 1);
        assert!(acked.covers(10, 14));
        assert!(
            acked.contains(12),
            "an id with no entry inside a range is harmless"
        );
    }

    #[test]
    fn ranges_never_span_two_segments() {
        let mut acked = AckedRanges::new(100);
        acked.insert(99, never_anything_between);
        acked.insert(100, never_anything_between);
        assert_eq!(acked.len(), 2);
        assert_eq!(acked.segments().collect::<Vec<_>>(), vec![0, 1]);
        acked.forget_segment(0);
        assert!(!acked.contains(99) && acked.contains(100));
    }

    #[test]
    fn ranges_survive_encoding_and_bad_records_are_dropped_range_by_range() {
        let mut acked = AckedRanges::new(100);
        for k in [1, 2, 3, 50, 150] {
            acked.insert(k, |_, _| false);
        }
        let back = AckedRanges::decode(100, &acked.encode().unwrap()).unwrap();
        assert_eq!(back, acked);
        let bad = postcard::to_allocvec(&vec![(5u64, 3u64), (90, 110), (7, 8)]).unwrap();
        let back = AckedRanges::decode(100, &bad).unwrap();
        assert_eq!(back.len(), 1);
        assert!(back.contains(8));
        assert!(AckedRanges::decode(100, b"\xff\xff\xff").is_err());
    }

    #[test]
    fn acknowledged_entries_are_skipped_and_stay_skipped_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let keys = {
            let (db, outbox) = open(dir.path(), 64);
            outbox
                .enqueue(&(0..20).map(entry).collect::<Vec<_>>())
                .unwrap();
            db.flush().unwrap();
            all_keys(&outbox)
        };
        assert_eq!(keys.len(), 20);
        let odd: Vec<u64> = keys.iter().copied().skip(1).step_by(2).collect();
        let even: Vec<u64> = keys.iter().copied().step_by(2).collect();
        {
            // Acknowledged but not yet written when the gateway dies: sent
            // again after the restart, never lost.
            let (db, outbox) = open(dir.path(), 64);
            let outbox = outbox.persisting_only_when_told();
            outbox.acknowledge(&odd).unwrap();
            assert_eq!(all_keys(&outbox), even);
            db.flush().unwrap();
        }
        {
            let (db, outbox) = open(dir.path(), 64);
            assert_eq!(all_keys(&outbox), keys, "forgotten acknowledgements resend");
            outbox.acknowledge(&odd).unwrap();
            assert_eq!(outbox.read(keys[3], keys[9], 2).unwrap().len(), 2);
            outbox.persist_acknowledged().unwrap();
            db.flush().unwrap();
        }
        let (_db, outbox) = open(dir.path(), 64);
        assert_eq!(all_keys(&outbox), even);
        assert_eq!(outbox.count().unwrap(), (10, 8));
    }

    #[test]
    fn a_finished_segment_is_dropped_whole_but_never_one_with_a_pending_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, outbox) = open(dir.path(), 16);
        outbox
            .enqueue(&(0..40).map(entry).collect::<Vec<_>>())
            .unwrap();
        let keys = all_keys(&outbox);
        let segments = outbox.segment_count();
        assert!(segments >= 3, "40 entries over segments of 16");
        let pending = keys[3];
        let rest: Vec<u64> = keys.iter().copied().filter(|&k| k != pending).collect();
        outbox.acknowledge(&rest).unwrap();
        assert_eq!(all_keys(&outbox), vec![pending]);
        // The newest segment stays (it can still get keys), and so does
        // the one holding the pending entry.
        assert_eq!(outbox.segment_count(), 2);
        outbox.acknowledge(&[pending]).unwrap();
        assert_eq!(outbox.segment_count(), 1);
        assert!(all_keys(&outbox).is_empty());
        // A new segment seals the last one, which is dropped then.
        outbox
            .enqueue(&(0..16).map(entry).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(all_keys(&outbox).len(), 16);
        assert!(outbox.segment_count() <= 2);
    }

    #[test]
    fn a_read_never_passes_an_entry_reserved_after_it_began() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, outbox) = open(dir.path(), SEGMENT_KEYS);
        outbox.enqueue(&[entry(1)]).unwrap();
        let first = all_keys(&outbox);
        // The bound a read takes as it starts, with nothing being written.
        let bound = outbox.written_through();
        // Then, while it walks the tree: a commit reserves an id and is
        // still writing when a later document is reserved and written.
        let slow = outbox.reserve(1).unwrap();
        outbox.enqueue(&[entry(2)]).unwrap();
        let later: Vec<u64> = all_keys(&outbox);
        drop(slow);
        let written_later = *all_keys(&outbox).last().unwrap();
        assert_eq!(later, first, "reads from now on stop below the slow id");
        assert!(
            bound < written_later,
            "the walk that began before must not reach the later document either"
        );
    }

    #[test]
    fn reads_stop_below_an_entry_still_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, outbox) = open(dir.path(), SEGMENT_KEYS);
        outbox.enqueue(&[entry(1)]).unwrap();
        let before = all_keys(&outbox);
        // A commit has its id but has not written yet; a later one is done.
        let slow = outbox.reserve(1).unwrap();
        let slow_id = slow.ids()[0];
        outbox.enqueue(&[entry(2)]).unwrap();
        assert_eq!(
            all_keys(&outbox),
            before,
            "a cursor must not pass the slow id"
        );
        assert_eq!(outbox.last_key().unwrap(), before.last().copied());
        let tree = slow.trees().next().unwrap().clone();
        tree.insert(
            slow_id.to_be_bytes(),
            OutboxRecord::Document(entry(3)).to_bytes().unwrap(),
        )
        .unwrap();
        drop(slow);
        let keys = all_keys(&outbox);
        assert_eq!(keys.len(), 3);
        assert!(keys.contains(&slow_id));
        assert_eq!(outbox.last_key().unwrap(), keys.last().copied());
    }

    #[test]
    fn a_commit_is_one_record_and_its_presses_are_acknowledged_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, outbox) = open(dir.path(), 64);
        let ids = enqueue_presses(&outbox, &["a", "b"], 10);
        assert_eq!(outbox.segment_count(), 1);
        assert_eq!(all_keys(&outbox), ids);
        assert_eq!(outbox.last_key().unwrap(), ids.last().copied());
        let items = outbox.read(ids[0], u64::MAX, 100).unwrap();
        let terminals: Vec<&str> = items
            .iter()
            .map(|(_, item)| match item {
                OutboxItem::Press { terminal, .. } => &**terminal,
                OutboxItem::Document(_) => "doc",
            })
            .collect();
        assert_eq!(
            terminals,
            ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b"]
        );
        // PUBACKs out of order, some missing: only those are resent.
        outbox
            .acknowledge(&[ids[0], ids[2], ids[3], ids[9], ids[5]])
            .unwrap();
        let left: Vec<u64> = [1, 4, 6, 7, 8].iter().map(|&i| ids[i]).collect();
        assert_eq!(all_keys(&outbox), left);
        // A read starting inside the record finds the rest of it.
        assert_eq!(
            outbox
                .read(ids[5], ids[7], 10)
                .unwrap()
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>(),
            vec![ids[6], ids[7]]
        );
        assert_eq!(outbox.count().unwrap(), (5, 5));
        outbox.acknowledge(&left).unwrap();
        assert!(all_keys(&outbox).is_empty());
    }

    #[test]
    fn a_commit_crossing_a_segment_boundary_is_split_and_both_parts_drop_when_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, outbox) = open(dir.path(), 16);
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.extend(enqueue_presses(&outbox, &["t"], 7));
        }
        assert_eq!(all_keys(&outbox), ids);
        assert!(outbox.segment_count() >= 3);
        outbox.acknowledge(&ids[..30]).unwrap();
        assert_eq!(all_keys(&outbox), ids[30..].to_vec());
        outbox.acknowledge(&ids[30..]).unwrap();
        assert!(all_keys(&outbox).is_empty());
        assert_eq!(outbox.segment_count(), 1, "only the newest segment stays");
    }

    /// A model check: random enqueues, acknowledgements (in any order,
    /// repeated) and reopenings never lose or resurrect an entry.
    #[test]
    fn reads_always_match_a_model_of_what_is_unacknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = std::collections::BTreeSet::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut db, mut outbox) = open(dir.path(), 32);
        let mut newest = None;
        for round in 0..300 {
            match next() % 10 {
                0..=3 => {
                    let n = (next() % 20) as usize;
                    if next() % 2 == 0 {
                        outbox
                            .enqueue(&(0..n as u64).map(entry).collect::<Vec<_>>())
                            .unwrap();
                    } else if n > 0 {
                        enqueue_presses(&outbox, &["x", "y", "z"], n);
                    }
                    let fresh: Vec<u64> = all_keys(&outbox)
                        .into_iter()
                        .filter(|&k| newest.is_none_or(|m| k > m))
                        .collect();
                    assert_eq!(fresh.len(), n, "round {round}");
                    newest = fresh.last().copied().or(newest);
                    model.extend(fresh);
                }
                4..=7 => {
                    let pending: Vec<u64> = model.iter().copied().collect();
                    let mut chosen: Vec<u64> = pending
                        .iter()
                        .copied()
                        .filter(|_| next() % 3 == 0)
                        .collect();
                    if let Some(&k) = chosen.first() {
                        chosen.push(k); // a repeated PUBACK
                    }
                    outbox.acknowledge(&chosen).unwrap();
                    for k in chosen {
                        model.remove(&k);
                    }
                }
                8 => {
                    outbox.persist_acknowledged().unwrap();
                    db.flush().unwrap();
                    drop(outbox);
                    drop(db);
                    (db, outbox) = open(dir.path(), 32);
                }
                _ => {
                    let from = model.iter().next().copied().unwrap_or(0);
                    let limit = 1 + (next() % 7) as usize;
                    let want: Vec<u64> = model.range(from..).take(limit).copied().collect();
                    let got: Vec<u64> = outbox
                        .read(from, u64::MAX, limit)
                        .unwrap()
                        .into_iter()
                        .map(|(k, _)| k)
                        .collect();
                    assert_eq!(got, want, "round {round}");
                }
            }
            assert_eq!(
                all_keys(&outbox),
                model.iter().copied().collect::<Vec<_>>(),
                "round {round}"
            );
        }
        assert!(
            outbox.segment_count() < 20,
            "finished segments are dropped ({} left)",
            outbox.segment_count()
        );
    }
}
