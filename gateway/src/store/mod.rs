//! Durable storage of presses and of the upstream outbox, in sled.
//!
//! sled is beta (its README suggests SQLite where reliability is paramount),
//! so everything the gateway persists goes through this one small interface,
//! and the crash tests (`kill -9` under load) are what prove it.
//!
//! # Layout (store layout 3)
//! - `presslog/YYYY-MM-DD.log` (files beside the database): the presses of
//!   each UTC day, one [`PressBatch`] record per group commit, with each
//!   day's committed length and press count in the `presslog` tree
//!   ([`press_log`]); deleted whole by retention.
//! - `dedup`: which sequence numbers of each (terminal, boot) are stored,
//!   as ranges ([`dedup`]).
//! - `outbox2.<segment>`: the upstream outbox: press batches and rendered
//!   documents awaiting the upstream broker's PUBACK ([`outbox`]).
//! - `aggregates`: checkpoints of the satisfaction aggregates ([`aggregates`]).
//! - `terminals`, `alerts`, `credentials`, `power`, `releases`, `rollouts`:
//!   JSON records owned by the terminal registry, identities, power plans
//!   and OTA, each
//!   with its durability rule ([`json_records`]).
//! - `notifications`: alert notifications awaiting delivery, written in the
//!   same transaction as the alert transition that caused them
//!   ([`crate::alerting`]).
//! - `meta`: the outbox's acknowledged ranges, the layout number.
//!
//! A commit appends its presses' press-log record, writes the record's
//! committed length, the outbox record(s) and dedup ranges in one
//! transaction, then syncs the press log and flushes sled (fsync) before
//! any of it is acked to terminals: group commit, two syncs and a handful
//! of records per batch however many presses it holds. What sled holds grows with
//! undelivered presses and (terminal, boot) pairs, not with history.
//! Layouts 1 (one key per press) and 2 (the press log in sled trees) are
//! migrated in place at open ([`migrate`]).
//!
//! # Faults
//! After an I/O error (a full disk, EIO) sled refuses every later write
//! until the database is opened again. So the store treats one as a fault:
//! it closes the database, reports the cause ([`Store::fault`]), refuses
//! operations meanwhile ([`StoreError::Unavailable`]: nothing is acked, and
//! terminals keep their presses), and reopens it in the background, again
//! and again, until it works. [`Store::generation`] then changes, so the
//! parts that cache positions (the forwarder, the score engine) catch up
//! from disk.

use pressline_host::sync::{LockExt, RwLockExt};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use pressline_protocol::PressId;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

pub mod aggregates;
pub mod dedup;
mod json_records;
mod migrate;
pub mod outbox;
pub mod press_log;
mod records;

pub use aggregates::Checkpoint;
pub use records::{
    LoggedPress, OutboxEntry, OutboxItem, OutboxRecord, PressBatch, PressToStore, StoreError,
    StoreOutcome, TerminalRun,
};

use dedup::{DedupIndex, DedupRecord};
use json_records::{Durability, JsonTree};
use outbox::Outbox;
use press_log::PressLog;

/// The store layout this code writes (kept in `meta`).
pub const LAYOUT: u8 = 3;
const LAYOUT_KEY: &[u8] = b"layout";

/// What a commit did.
#[derive(Debug, Default)]
pub struct Committed {
    /// One per offered press, in order.
    pub outcomes: Vec<StoreOutcome>,
    /// The new presses, with the outbox id of the first (the press-log
    /// key): what the score engine folds in.
    pub batch: Option<(u64, PressBatch)>,
}

/// Why the store is unavailable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub reason: FaultReason,
    /// sled's error, in words.
    pub detail: String,
}

/// What kind of storage fault it is (a stable label in `/metrics` and the
/// stats: `no_space`, `io_error`, `corruption`, `bug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultReason {
    /// The disk is full.
    NoSpace,
    IoError,
    Corruption,
    /// sled reported a bug in itself.
    Bug,
}

impl FaultReason {
    /// The label.
    pub fn label(self) -> &'static str {
        match self {
            FaultReason::NoSpace => "no_space",
            FaultReason::IoError => "io_error",
            FaultReason::Corruption => "corruption",
            FaultReason::Bug => "bug",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            FaultReason::NoSpace => write!(f, "no space left for the press store ({}): free disk space; the gateway reopens the store by itself", self.detail),
            other => write!(f, "press store {} ({}); the gateway is reopening it", other.label().replace('_', " "), self.detail),
        }
    }
}

/// The gateway's durable store (cheap to clone: a handle).
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    cache_bytes: u64,
    open: RwLock<Option<Arc<Open>>>,
    fault: Mutex<Option<Fault>>,
    generation: AtomicU64,
    recovering: AtomicBool,
    /// Last size read, reported while the store is closed.
    disk_bytes: AtomicU64,
}

/// The open database and its trees.
struct Open {
    db: sled::Db,
    press_log: PressLog,
    dedup_tree: sled::Tree,
    dedup: Mutex<DedupIndex>,
    outbox: Outbox,
    aggregates: sled::Tree,
    terminals: JsonTree,
    alerts: JsonTree,
    credentials: JsonTree,
    power: JsonTree,
    releases: JsonTree,
    rollouts: JsonTree,
    notifications: sled::Tree,
    next_notification: AtomicU64,
}

/// Deletes snapshots sled began and never finished. sled 0.34 writes a
/// snapshot to `snap.<lsn>.generating` and renames it once synced, but at
/// open it takes the newest `snap.*` file, unfinished or not: one cut short
/// by a full disk (or a crash) then makes every later open fail with
/// "corruption" (sled issue #1527). An unfinished snapshot holds nothing
/// the log does not: without it sled starts from the previous snapshot and
/// replays the log.
fn remove_unfinished_sled_snapshots(dir: &Path) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Log {
                what: "listing the data directory",
                source,
            })
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| StoreError::Log {
            what: "listing the data directory",
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %name, "removing a sled snapshot that was never finished (a full disk or a crash cut it short)");
            std::fs::remove_file(entry.path()).map_err(|source| StoreError::Log {
                what: "removing an unfinished sled snapshot",
                source,
            })?;
        }
    }
    Ok(())
}

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

impl Open {
    fn open(dir: &Path, cache_bytes: u64) -> Result<Open, StoreError> {
        remove_unfinished_sled_snapshots(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Commits flush explicitly before acking; this only bounds how
            // much outbox bookkeeping a crash can roll back (resends).
            .flush_every_ms(Some(1000))
            .open()?;
        let meta = db.open_tree("meta")?;
        let press_log = PressLog::open(&db, dir)?;
        let dedup_tree = db.open_tree("dedup")?;
        migrate::layout1(&db, &meta, &press_log, &dedup_tree)?;
        migrate::layout2(&db, &press_log)?;
        migrate::outbox_trees(&db, outbox::SEGMENT_KEYS)?;
        let outbox = Outbox::open(&db, &meta, outbox::SEGMENT_KEYS)?;
        press_log.rebuild_tail(&db, &outbox)?;
        if meta.get(LAYOUT_KEY)?.as_deref() != Some(&[LAYOUT]) {
            meta.insert(LAYOUT_KEY, &[LAYOUT])?;
            db.flush()?;
        }
        let notifications = db.open_tree("notifications")?;
        let next_notification = match notifications.last()? {
            Some((k, _)) => <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Malformed("notification key"))?
                .saturating_add(1),
            None => 0,
        };
        Ok(Open {
            press_log,
            dedup_tree,
            dedup: Mutex::new(DedupIndex::default()),
            outbox,
            aggregates: db.open_tree("aggregates")?,
            terminals: JsonTree::open(&db, "terminals", "terminal", Durability::Background)?,
            alerts: JsonTree::open(&db, "alerts", "alert", Durability::Flushed)?,
            credentials: JsonTree::open(&db, "credentials", "credential", Durability::Flushed)?,
            power: JsonTree::open(&db, "power", "power setting", Durability::Flushed)?,
            releases: JsonTree::open(&db, "releases", "release", Durability::Flushed)?,
            rollouts: JsonTree::open(&db, "rollouts", "rollout", Durability::Flushed)?,
            next_notification: AtomicU64::new(next_notification),
            notifications,
            db,
        })
    }

    fn commit(&self, batch: &[PressToStore]) -> Result<Committed, StoreError> {
        let now = Instant::now();
        let mut dedup = self.dedup.locked();
        // Records as they will be if the commit succeeds; the cache is
        // only updated once the batch is durable.
        let mut records: HashMap<(&str, u32), DedupRecord> = HashMap::new();
        let mut changed: HashSet<(&str, u32)> = HashSet::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut fresh = PressBatch::default();
        let day = batch
            .first()
            .map_or(0, |p| crate::clock::utc_day(p.received_at_ms));
        for p in batch {
            let k = (p.terminal.as_str(), p.id.boot);
            if !records.contains_key(&k) {
                let record = dedup.get(&self.dedup_tree, k.0, k.1, now)?.clone();
                records.insert(k, record);
            }
            let record = records
                .get_mut(&k)
                .ok_or(StoreError::Malformed("dedup overlay lost a record"))?;
            if !record.seqs.insert(p.id.seq) {
                outcomes.push(StoreOutcome::Duplicate);
                continue;
            }
            record.last_day = record.last_day.max(day);
            changed.insert(k);
            outcomes.push(StoreOutcome::Stored);
            fresh.push(
                &p.terminal,
                LoggedPress {
                    boot: p.id.boot,
                    seq: p.id.seq,
                    button: p.button,
                    received_at_ms: p.received_at_ms,
                    pressed_at_ms: p.pressed_at_ms.map(|at| at.min(p.received_at_ms)),
                    counted: p.not_counted.is_none(),
                    reason: p.not_counted,
                },
            );
        }
        if fresh.is_empty() {
            // Only resends: stored and flushed by an earlier commit.
            return Ok(Committed {
                outcomes,
                batch: None,
            });
        }
        let reservation = self.outbox.reserve(fresh.len())?;
        let first_id = *reservation
            .ids()
            .first()
            .ok_or(StoreError::Malformed("no outbox id reserved"))?;
        let outbox_records = reservation.press_records(&fresh)?;
        let dedup_writes: Vec<(Vec<u8>, Vec<u8>)> = changed
            .iter()
            .map(|k| (dedup::key(k.0, k.1), records[k].encode()))
            .collect();
        // The press-log record is written before the transaction that
        // records its length and synced after it, outside the outbox
        // reservation (see [`press_log`]).
        let durable = self
            .press_log
            .write(day, first_id, &fresh)
            .and_then(|written| {
                let mut trees = vec![self.press_log.index(), &self.dedup_tree];
                trees.extend(reservation.trees());
                trees
                    .as_slice()
                    .transaction(|t| {
                        PressLog::record(&t[0], &written)?;
                        for (k, v) in &dedup_writes {
                            t[1].insert(k.as_slice(), v.as_slice())?;
                        }
                        for (tree, key, record) in &outbox_records {
                            t[2 + tree].insert(&key.to_be_bytes(), record.as_slice())?;
                        }
                        Ok::<(), ConflictableTransactionError<StoreError>>(())
                    })
                    .map_err(tx_error)?;
                Ok(written)
            });
        drop(reservation);
        let durable = durable.and_then(|written| {
            self.press_log.sync(day)?;
            self.outbox.persist_acknowledged()?;
            self.db.flush()?;
            Ok(written)
        });
        let written = match durable {
            Ok(w) => w,
            Err(e) => {
                self.press_log.rollback(day);
                return Err(e);
            }
        };
        // Durable: now it is the truth.
        self.press_log.confirm(&written);
        for k in changed {
            if let Some(record) = records.remove(&k) {
                dedup.put(k.0, k.1, record, now);
            }
        }
        Ok(Committed {
            outcomes,
            batch: Some((first_id, fresh)),
        })
    }

    fn is_stored(&self, terminal: &str, id: PressId) -> Result<bool, StoreError> {
        let mut dedup = self.dedup.locked();
        Ok(dedup
            .get(&self.dedup_tree, terminal, id.boot, Instant::now())?
            .seqs
            .contains(id.seq))
    }

    /// Drops press-log days before `cutoff_day` and the dedup records of
    /// (terminal, boot) pairs with no new press since, and of each
    /// terminal's boots past the newest [`dedup::MAX_BOOTS`].
    fn prune_raw(&self, cutoff_day: i64) -> Result<u64, StoreError> {
        let dropped = self.press_log.drop_days_before(cutoff_day)?;
        let stale = self.stale_dedup_records(cutoff_day)?;
        if !stale.is_empty() {
            let mut dedup = self.dedup.locked();
            let mut batch = sled::Batch::default();
            for key in &stale {
                if let Some((terminal, boot)) = dedup::parse_key(key) {
                    dedup.forget(terminal, boot);
                }
                batch.remove(key.as_ref());
            }
            self.dedup_tree.apply_batch(batch)?;
        }
        if dropped > 0 || !stale.is_empty() {
            self.db.flush()?;
        }
        Ok(dropped)
    }

    /// The dedup records to drop: unreadable ones, those with no new press
    /// since `cutoff_day`, and each terminal's oldest past
    /// [`dedup::MAX_BOOTS`]. Keys sort by terminal, so one terminal's
    /// records are read together.
    fn stale_dedup_records(&self, cutoff_day: i64) -> Result<Vec<sled::IVec>, StoreError> {
        let mut stale = Vec::new();
        let mut terminal: Vec<u8> = Vec::new();
        // (last day, boot, key) of the current terminal's kept records.
        let mut boots: Vec<(i64, u32, sled::IVec)> = Vec::new();
        for item in self.dedup_tree.iter() {
            let (key, value) = item?;
            let (Some((id, boot)), Ok(record)) =
                (dedup::parse_key(&key), DedupRecord::decode(&value))
            else {
                stale.push(key);
                continue;
            };
            if record.last_day < cutoff_day {
                stale.push(key);
                continue;
            }
            if id.as_bytes() != terminal.as_slice() {
                stale.extend(dedup::beyond_max_boots(std::mem::take(&mut boots)));
                terminal = id.as_bytes().to_vec();
            }
            boots.push((record.last_day, boot, key));
        }
        stale.extend(dedup::beyond_max_boots(boots));
        Ok(stale)
    }
}

/// Errors that mean the store must be opened again.
fn fault_reason(e: &StoreError) -> Option<FaultReason> {
    let io_reason = |io: &std::io::Error| {
        if io.raw_os_error() == Some(28) || io.kind() == std::io::ErrorKind::StorageFull {
            FaultReason::NoSpace
        } else {
            FaultReason::IoError
        }
    };
    match e {
        StoreError::Sled(sled::Error::Io(io)) | StoreError::Log { source: io, .. } => {
            Some(io_reason(io))
        }
        StoreError::Sled(sled::Error::Corruption { .. }) => Some(FaultReason::Corruption),
        StoreError::Sled(sled::Error::ReportableBug(_)) => Some(FaultReason::Bug),
        _ => None,
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, with a page cache of
    /// `cache_bytes` (sled's default of 1 GB is far too much for a site
    /// box), migrating an earlier layout in place.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let open = Open::open(dir, cache_bytes)?;
        Ok(Store {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                cache_bytes,
                open: RwLock::new(Some(Arc::new(open))),
                fault: Mutex::new(None),
                generation: AtomicU64::new(0),
                recovering: AtomicBool::new(false),
                disk_bytes: AtomicU64::new(0),
            }),
        })
    }

    fn current(&self) -> Result<Arc<Open>, StoreError> {
        let open = self.shared.open.read_locked().clone();
        open.ok_or_else(|| {
            StoreError::Unavailable(
                self.fault()
                    .map_or_else(|| "reopening".to_string(), |f| f.to_string()),
            )
        })
    }

    /// Runs `op` on the open database; an I/O error closes it and starts
    /// reopening it (see the module documentation).
    fn with<T>(&self, op: impl FnOnce(&Open) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let open = self.current()?;
        let result = op(&open);
        drop(open);
        if let Err(e) = &result {
            if let Some(reason) = fault_reason(e) {
                self.start_recovery(reason, e.to_string());
            }
        }
        result
    }

    fn start_recovery(&self, reason: FaultReason, detail: String) {
        {
            let mut fault = self.shared.fault.locked();
            if fault.is_none() {
                tracing::error!(reason = reason.label(), error = %detail, "the press store failed: nothing is acked until it is reopened (terminals keep their presses)");
                *fault = Some(Fault { reason, detail });
            }
        }
        let old = self.shared.open.write_locked().take();
        if let Some(old) = old {
            if !self.shared.recovering.swap(true, Ordering::SeqCst) {
                let shared = self.shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("store-recovery".into())
                    .spawn(move || recover(shared, old));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start reopening the press store");
                }
            }
        }
    }

    /// Why the store is unavailable, while it is.
    pub fn fault(&self) -> Option<Fault> {
        self.shared.fault.locked().clone()
    }

    /// Changes each time the store is reopened after a fault.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::SeqCst)
    }

    /// Stores each press that is not stored yet (its press-log record, its
    /// outbox record, the dedup ranges), atomically; then makes it
    /// durable. Returns one outcome per input, in order, and the new
    /// presses. Nothing may be acked unless this returned `Ok`.
    pub fn commit(&self, batch: &[PressToStore]) -> Result<Committed, StoreError> {
        self.with(|o| o.commit(batch))
    }

    /// Whether a press is stored (the committer asks before the misuse
    /// filter sees a press: a resend is not a new press).
    pub fn is_stored(&self, terminal: &str, id: PressId) -> Result<bool, StoreError> {
        self.with(|o| o.is_stored(terminal, id))
    }

    /// Forgets cached dedup records unused for a while (the committer
    /// calls this now and then).
    pub fn evict_idle(&self) {
        if let Ok(open) = self.current() {
            open.dedup.locked().evict_idle(Instant::now());
        }
    }

    /// Up to `limit` unacknowledged outbox messages with ids greater than
    /// `after` (or from the start), oldest first.
    pub fn outbox_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxItem)>, StoreError> {
        match after {
            Some(u64::MAX) => Ok(Vec::new()),
            Some(k) => self.with(|o| o.outbox.read(k + 1, u64::MAX, limit)),
            None => self.with(|o| o.outbox.read(0, u64::MAX, limit)),
        }
    }

    /// Up to `limit` unacknowledged outbox messages with ids in
    /// `(after, upto]`, oldest first (the backlog part of a live-first
    /// drain).
    pub fn outbox_between(
        &self,
        after: Option<u64>,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxItem)>, StoreError> {
        match after {
            Some(u64::MAX) => Ok(Vec::new()),
            Some(k) => self.with(|o| o.outbox.read(k + 1, upto, limit)),
            None => self.with(|o| o.outbox.read(0, upto, limit)),
        }
    }

    /// The newest outbox id, if any.
    pub fn outbox_last_key(&self) -> Result<Option<u64>, StoreError> {
        self.with(|o| o.outbox.last_key())
    }

    /// The upstream broker has these messages: they are not sent again.
    pub fn outbox_remove_all(&self, keys: &[u64]) -> Result<(), StoreError> {
        self.with(|o| o.outbox.acknowledge(keys))
    }

    /// The upstream broker has the message: it is not sent again.
    pub fn outbox_remove(&self, key: u64) -> Result<(), StoreError> {
        self.outbox_remove_all(&[key])
    }

    /// Presses in the press log.
    pub fn press_count(&self) -> u64 {
        self.current().map_or(0, |o| o.press_log.total())
    }

    /// Number of upstream messages not yet acknowledged (walks them all:
    /// start-up and tests only).
    pub fn outbox_len(&self) -> usize {
        self.outbox_counts().0
    }

    /// Number of presses among them (start-up only).
    pub fn outbox_presses(&self) -> usize {
        self.outbox_counts().1
    }

    fn outbox_counts(&self) -> (usize, usize) {
        self.with(|o| o.outbox.count()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot count the upstream outbox");
            (0, 0)
        })
    }

    /// Enqueues upstream documents (health, alerts, OTA events). Not
    /// flushed here: losing them in a crash only loses a status update that
    /// the next change repeats.
    pub fn enqueue_upstream(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.with(|o| o.outbox.enqueue(entries))
    }

    /// Saves a registry record (JSON, so the layout can grow fields).
    pub fn save_terminal<T: Serialize>(&self, id: &str, value: &T) -> Result<(), StoreError> {
        self.with(|o| o.terminals.save(id.as_bytes(), value))
    }

    /// Deletes forgotten terminals' state, and drops their cached dedup
    /// records (the records themselves stay: a resend is still known).
    pub fn delete_terminals(&self, ids: &[String]) -> Result<(), StoreError> {
        self.with(|o| {
            let mut dedup = o.dedup.locked();
            for id in ids {
                dedup.forget_terminal(id);
            }
            drop(dedup);
            o.terminals.remove_all(ids)
        })
    }

    /// Deletes alerts dropped from the history.
    pub fn delete_alerts(&self, ids: &[u64]) -> Result<(), StoreError> {
        let keys: Vec<[u8; 8]> = ids.iter().map(|id| id.to_be_bytes()).collect();
        self.with(|o| o.alerts.remove_all(&keys))
    }

    /// Saves an alert transition and queues its notifications, in one
    /// transaction, flushed: a transition the API or a chat message has
    /// reported is never lost, and never notified twice as two transitions.
    pub fn save_alert_transition<A: Serialize, N: Serialize>(
        &self,
        id: u64,
        alert: &A,
        notifications: &[N],
    ) -> Result<Vec<u64>, StoreError> {
        let alert = serde_json::to_vec(alert).map_err(json_err)?;
        let records: Vec<Vec<u8>> = notifications
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<_, _>>()
            .map_err(json_err)?;
        self.with(|o| {
            let keys: Vec<u64> = records
                .iter()
                .map(|_| o.next_notification.fetch_add(1, Ordering::Relaxed))
                .collect();
            (o.alerts.tree(), &o.notifications)
                .transaction(|(alerts, queue)| {
                    alerts.insert(&id.to_be_bytes(), alert.as_slice())?;
                    for (key, record) in keys.iter().zip(&records) {
                        queue.insert(&key.to_be_bytes(), record.as_slice())?;
                    }
                    Ok::<(), ConflictableTransactionError<StoreError>>(())
                })
                .map_err(tx_error)?;
            o.alerts.settle()?;
            Ok(keys)
        })
    }

    /// Queued notifications, oldest first, with their keys (undecodable
    /// ones are logged and skipped by the caller).
    pub fn queued_notifications(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.with(|o| {
            o.notifications
                .iter()
                .map(|kv| {
                    let (k, v) = kv?;
                    let key = <[u8; 8]>::try_from(k.as_ref())
                        .map(u64::from_be_bytes)
                        .map_err(|_| StoreError::Malformed("notification key"))?;
                    Ok((key, v.to_vec()))
                })
                .collect()
        })
    }

    /// Rewrites a queued notification (attempts, next try, last error).
    pub fn update_notification<N: Serialize>(&self, key: u64, value: &N) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(json_err)?;
        // The delivery task is the only writer after the enqueue.
        self.with(|o| Ok(o.notifications.insert(key.to_be_bytes(), bytes).map(drop)?))
    }

    /// Removes delivered (or abandoned) notifications, flushed, so a
    /// restart does not send them again.
    pub fn remove_notifications(&self, keys: &[u64]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(&k.to_be_bytes());
        }
        self.with(|o| {
            o.notifications.apply_batch(batch)?;
            o.db.flush()?;
            Ok(())
        })
    }

    /// Every saved terminal record; undecodable ones are skipped (and logged).
    pub fn load_terminals<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        self.current()
            .map(|o| o.terminals.load_all())
            .unwrap_or_default()
    }

    pub fn load_alerts<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        self.current()
            .map(|o| o.alerts.load_all())
            .unwrap_or_default()
    }

    /// Saves a registered terminal's credential (owned by the terminal
    /// identities).
    pub fn save_credential<T: Serialize>(
        &self,
        terminal: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.with(|o| o.credentials.save(terminal.as_bytes(), value))
    }

    /// One terminal's credential, if it is registered.
    pub fn load_credential<T: serde::de::DeserializeOwned>(
        &self,
        terminal: &str,
    ) -> Result<Option<T>, StoreError> {
        self.with(|o| o.credentials.get(terminal.as_bytes()))
    }

    pub fn load_credentials<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        self.current()
            .map(|o| o.credentials.load_all())
            .unwrap_or_default()
    }

    /// Saves the power settings wanted for a terminal
    /// ([`crate::terminals::power`]).
    pub fn save_power<T: Serialize>(&self, terminal: &str, value: &T) -> Result<(), StoreError> {
        self.with(|o| o.power.save(terminal.as_bytes(), value))
    }

    pub fn remove_power(&self, terminal: &str) -> Result<(), StoreError> {
        self.with(|o| o.power.remove_all(&[terminal.as_bytes()]))
    }

    pub fn load_power<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        self.current()
            .map(|o| o.power.load_all())
            .unwrap_or_default()
    }

    /// Saves an uploaded firmware release's description.
    pub fn save_release<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.with(|o| o.releases.save(key.as_bytes(), value))
    }

    /// Saves a rollout (key = id BE).
    pub fn save_rollout<T: Serialize>(&self, id: u32, value: &T) -> Result<(), StoreError> {
        self.with(|o| o.rollouts.save(&id.to_be_bytes(), value))
    }

    /// Every stored rollout that decodes (others are logged and skipped).
    pub fn load_rollouts<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        self.current()
            .map(|o| o.rollouts.load_all())
            .unwrap_or_default()
    }

    pub fn load_releases<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        self.current()
            .map(|o| o.releases.load_all())
            .unwrap_or_default()
    }

    /// Presses stored on UTC day `day`.
    pub fn stored_on(&self, day: i64) -> u64 {
        self.current().map_or(0, |o| o.press_log.count_on(day))
    }

    /// Raw-press retention: drops the press log's days before `cutoff_day`
    /// (UTC) whole, and the dedup records of (terminal, boot) pairs with no
    /// new press since; returns how many presses went. A terminal resending
    /// such an old press would have it stored again, but terminals resend
    /// only unacked presses, and those are minutes old at most.
    pub fn prune_raw_before(&self, cutoff_day: i64) -> Result<u64, StoreError> {
        self.with(|o| o.prune_raw(cutoff_day))
    }

    /// Calls `f` with every press-log record above `after` (all for `None`)
    /// or whose presses arrived since `since_ms` (see
    /// [`PressLog::for_each`]).
    pub fn replay_presses(
        &self,
        after: Option<u64>,
        since_ms: i64,
        f: impl FnMut(u64, PressBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.with(|o| o.press_log.for_each(after, since_ms, f))
    }

    /// The last checkpoint's watermark (see [`aggregates`]).
    pub fn aggregates_watermark(&self) -> Result<Option<u64>, StoreError> {
        self.with(|o| aggregates::watermark(&o.aggregates))
    }

    /// Checkpointed aggregate records whose key starts with `prefix`.
    pub fn aggregates(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.with(|o| aggregates::scan(&o.aggregates, prefix))
    }

    /// Keys of checkpointed aggregate records in `from..to`.
    pub fn aggregate_keys(&self, from: &[u8], to: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        self.with(|o| {
            o.aggregates
                .range(from..to)
                .keys()
                .map(|k| Ok(k?.to_vec()))
                .collect()
        })
    }

    /// One checkpointed aggregate record.
    pub fn aggregate(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|o| Ok(o.aggregates.get(key)?.map(|v| v.to_vec())))
    }

    /// Writes a checkpoint atomically (not flushed: a lost checkpoint is
    /// rebuilt from the press log).
    pub fn save_aggregates(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.with(|o| aggregates::save(&o.aggregates, checkpoint))
    }

    /// Bytes the database occupies on disk (the last figure while the
    /// store is being reopened).
    pub fn size_on_disk(&self) -> u64 {
        match self
            .current()
            .map(|o| o.db.size_on_disk().map(|n| n + o.press_log.disk_bytes()))
        {
            Ok(Ok(n)) => {
                self.shared.disk_bytes.store(n, Ordering::Relaxed);
                n
            }
            _ => self.shared.disk_bytes.load(Ordering::Relaxed),
        }
    }

    /// Writes the upstream acknowledgements still held in memory (see
    /// [`outbox`]); the forwarder calls this once a second.
    pub fn persist_outbox_acks(&self) -> Result<(), StoreError> {
        self.with(|o| o.outbox.persist_acknowledged())
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.with(|o| {
            o.outbox.persist_acknowledged()?;
            o.db.flush()?;
            Ok(())
        })
    }
}

/// Reopens the store after a fault: waits for operations still holding
/// the failed database, closes it, and opens the directory again until it
/// works (space may take a while to come back).
fn recover(shared: Arc<Shared>, old: Arc<Open>) {
    let waiting_since = Instant::now();
    while Arc::strong_count(&old) > 1 && waiting_since.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(old);
    let mut backoff = pressline_protocol::backoff::Backoff::new(100, 2_000);
    let mut last_logged: Option<Instant> = None;
    loop {
        match Open::open(&shared.dir, shared.cache_bytes) {
            Ok(open) => {
                *shared.open.write_locked() = Some(Arc::new(open));
                shared.generation.fetch_add(1, Ordering::SeqCst);
                let fault = shared.fault.locked().take();
                shared.recovering.store(false, Ordering::SeqCst);
                tracing::info!(
                    after = fault.map(|f| f.reason.label()),
                    "the press store is open again: accepting presses"
                );
                return;
            }
            Err(e) => {
                if last_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    tracing::warn!(error = %e, dir = %shared.dir.display(), "cannot reopen the press store yet; retrying");
                    last_logged = Some(Instant::now());
                }
                if let Some(reason) = fault_reason(&e) {
                    let mut fault = shared.fault.locked();
                    if let Some(f) = fault.as_mut() {
                        f.reason = reason;
                        f.detail = e.to_string();
                    }
                }
                std::thread::sleep(Duration::from_millis(backoff.next_ms()));
            }
        }
    }
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Encode(format!("record does not serialize: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pressline_protocol::Button;

    /// Reopens a store in the same process. sled's background flusher holds
    /// the file lock for a moment after the last handle is dropped, so wait
    /// for the lock (a gateway restart is a new process and never sees this).
    fn reopen(dir: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match Store::open(dir, 1 << 20) {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::yield_now();
                }
                Err(e) => panic!("store did not reopen: {e}"),
            }
        }
    }

    fn offer(terminal: &str, boot: u32, seq: u32) -> PressToStore {
        PressToStore {
            terminal: terminal.into(),
            id: PressId { boot, seq },
            button: Button::Happy,
            received_at_ms: 1_700_000_000_000,
            pressed_at_ms: None,
            not_counted: None,
        }
    }

    fn outcomes(store: &Store, batch: &[PressToStore]) -> Vec<StoreOutcome> {
        store.commit(batch).unwrap().outcomes
    }

    #[test]
    fn a_press_is_stored_once_however_often_it_is_offered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let out = outcomes(
            &store,
            &[
                offer("a", 0, 1),
                offer("a", 0, 1),
                offer("b", 0, 1),
                offer("a", 1, 1),
            ],
        );
        use StoreOutcome::*;
        assert_eq!(out, vec![Stored, Duplicate, Stored, Stored]);
        assert_eq!(outcomes(&store, &[offer("a", 0, 1)]), vec![Duplicate]);
        assert_eq!(store.press_count(), 3);
        assert_eq!(store.outbox_len(), 3);
        assert!(store.is_stored("a", PressId { boot: 1, seq: 1 }).unwrap());
        assert!(!store.is_stored("a", PressId { boot: 1, seq: 2 }).unwrap());
    }

    #[test]
    fn retention_drops_whole_days_and_forgets_their_dedup_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        const DAY: i64 = 86_400_000;
        let at = |terminal: &str, boot: u32, seq: u32, day: i64| PressToStore {
            received_at_ms: day * DAY + 1_000,
            ..offer(terminal, boot, seq)
        };
        store
            .commit(&[at("a", 0, 1, 100), at("a", 0, 2, 100)])
            .unwrap();
        store.commit(&[at("b", 0, 1, 101)]).unwrap();
        store.commit(&[at("a", 1, 1, 102)]).unwrap();
        assert_eq!(
            (
                store.stored_on(100),
                store.stored_on(101),
                store.press_count()
            ),
            (2, 1, 4)
        );
        assert_eq!(store.prune_raw_before(101).unwrap(), 2);
        assert_eq!(store.press_count(), 2);
        assert_eq!(store.prune_raw_before(101).unwrap(), 0);
        // The kept ones still deduplicate; the dropped boot is forgotten.
        assert_eq!(
            outcomes(&store, &[at("b", 0, 1, 102)]),
            vec![StoreOutcome::Duplicate]
        );
        assert!(!store.is_stored("a", PressId { boot: 0, seq: 1 }).unwrap());
        // The upstream outbox is untouched by retention.
        assert_eq!(store.outbox_len(), 4);
    }

    #[test]
    fn retention_keeps_a_terminals_newest_boots_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        // A client that starts a new boot with every press.
        let boots = dedup::MAX_BOOTS as u32 + 10;
        let presses: Vec<PressToStore> = (0..boots).map(|b| offer("naive", b, 0)).collect();
        store.commit(&presses).unwrap();
        store.commit(&[offer("other", 0, 0)]).unwrap();
        store.prune_raw_before(0).unwrap();
        let kept = |terminal: &str, boot: u32| {
            store.is_stored(terminal, PressId { boot, seq: 0 }).unwrap()
        };
        assert!((0..10).all(|b| !kept("naive", b)), "the oldest forgotten");
        assert!((10..boots).all(|b| kept("naive", b)), "the newest kept");
        assert!(kept("other", 0), "other terminals keep theirs");
    }

    #[test]
    fn a_snapshot_cut_short_by_a_full_disk_does_not_stop_the_store_opening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            store.commit(&[offer("a", 0, 1), offer("a", 0, 2)]).unwrap();
        }
        // What sled leaves when ENOSPC interrupts a snapshot: the file it
        // writes before the rename, empty, newer than any finished one.
        std::fs::write(dir.path().join("snap.FFFFFFFFFFFFFFFF.generating"), b"").unwrap();
        let store = reopen(dir.path());
        assert_eq!(store.press_count(), 2);
        assert_eq!(
            outcomes(&store, &[offer("a", 0, 2), offer("a", 0, 3)]),
            vec![StoreOutcome::Duplicate, StoreOutcome::Stored]
        );
    }

    #[test]
    fn terminal_ids_cannot_alias_through_the_key_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        // "a" boot 0x61000000 must not collide with "aa" boot 0 etc.
        let out = outcomes(&store, &[offer("a", 0x6100_0000, 0), offer("aa", 0, 0)]);
        assert_eq!(out, vec![StoreOutcome::Stored, StoreOutcome::Stored]);
    }

    #[test]
    fn outbox_is_a_cursor_that_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            store
                .commit(&[offer("a", 0, 0), offer("a", 0, 1), offer("a", 0, 2)])
                .unwrap();
            let all = store.outbox_after(None, 10).unwrap();
            assert_eq!(all.len(), 3);
            assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "oldest first");
            store.outbox_remove(all[0].0).unwrap();
            let rest = store.outbox_after(Some(all[1].0), 10).unwrap();
            assert_eq!(rest.len(), 1);
            assert!(matches!(&rest[0].1, OutboxItem::Press { press, .. } if press.seq == 2));
            store.flush().unwrap();
        }
        let store = reopen(dir.path());
        let left: Vec<u32> = store
            .outbox_after(None, 10)
            .unwrap()
            .into_iter()
            .map(|(_, e)| match e {
                OutboxItem::Press { press, .. } => press.seq,
                OutboxItem::Document(_) => u32::MAX,
            })
            .collect();
        assert_eq!(left, vec![1, 2]);
        assert_eq!(store.press_count(), 3);
        assert!(store.is_stored("a", PressId { boot: 0, seq: 2 }).unwrap());
        assert_eq!(
            outcomes(&store, &[offer("a", 0, 2)]),
            vec![StoreOutcome::Duplicate]
        );
        // New outbox ids keep increasing after a restart.
        store.commit(&[offer("a", 0, 3)]).unwrap();
        let keys: Vec<u64> = store
            .outbox_after(None, 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_daily_count_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let day = crate::clock::utc_day(1_700_000_000_000);
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            store.commit(&[offer("a", 0, 0), offer("a", 0, 1)]).unwrap();
            store.commit(&[offer("a", 0, 1), offer("a", 0, 2)]).unwrap();
            assert_eq!(store.stored_on(day), 3);
            store.flush().unwrap();
        }
        let store = reopen(dir.path());
        assert_eq!(store.stored_on(day), 3);
        assert_eq!(store.stored_on(day + 1), 0);
    }

    #[test]
    fn status_entries_are_not_counted_as_presses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store.commit(&[offer("a", 0, 0)]).unwrap();
        store
            .enqueue_upstream(&[OutboxEntry {
                topic: "h".into(),
                payload: vec![],
                retain: true,
                is_press: false,
            }])
            .unwrap();
        assert_eq!(store.outbox_len(), 2);
        assert_eq!(store.outbox_presses(), 1);
    }

    #[test]
    fn the_press_log_replays_what_a_checkpoint_missed_and_the_last_hour() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let now = crate::clock::unix_ms_now();
        let at = |seq: u32, ms: i64| PressToStore {
            received_at_ms: ms,
            ..offer("a", 0, seq)
        };
        let old = store
            .commit(&[at(1, now - 3 * 3_600_000)])
            .unwrap()
            .batch
            .unwrap()
            .0;
        let recent = store
            .commit(&[at(2, now - 60_000), at(3, now - 60_000)])
            .unwrap()
            .batch
            .unwrap()
            .0;
        let mut seen = Vec::new();
        store
            .replay_presses(Some(old), now - 3_600_000, |id, b| {
                seen.push((id, b.len()));
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, vec![(recent, 2)]);
        seen.clear();
        store
            .replay_presses(None, now, |id, b| {
                seen.push((id, b.len()));
                Ok(())
            })
            .unwrap();
        seen.sort();
        assert_eq!(seen, vec![(old, 1), (recent, 2)]);
    }

    /// Every press in the log, with its record's key.
    fn logged(store: &Store) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        store
            .replay_presses(None, i64::MAX, |key, b| {
                out.extend(b.iter().map(|(_, p)| (key, p.seq)));
                Ok(())
            })
            .unwrap();
        out.sort();
        out
    }

    /// Byte offsets where each record of a day file starts.
    fn record_starts(bytes: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut starts = Vec::new();
        while at < bytes.len() {
            starts.push(at);
            let n = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            at += 24 + n;
        }
        starts
    }

    #[test]
    fn a_power_cut_between_sled_and_the_press_log_loses_nothing_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let day = crate::clock::utc_day(1_700_000_000_000);
        let file = dir
            .path()
            .join(press_log::DIR)
            .join(press_log::file_name(day));
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        for first in [0, 3, 6, 9] {
            store
                .commit(&[
                    offer("a", 0, first),
                    offer("a", 0, first + 1),
                    offer("a", 0, first + 2),
                ])
                .unwrap();
        }
        let before = logged(&store);
        assert_eq!(before.len(), 12);
        drop(store);
        let whole = std::fs::read(&file).unwrap();
        let starts = record_starts(&whole);
        assert_eq!(starts.len(), 4);

        // sled has every commit; the file lost the last record and half of
        // the one before.
        std::fs::write(&file, &whole[..starts[2] + 10]).unwrap();
        let store = reopen(dir.path());
        assert_eq!(logged(&store), before);
        assert_eq!(store.press_count(), 12);
        // A resend is still a duplicate, and the next commit goes on.
        assert_eq!(
            outcomes(&store, &[offer("a", 0, 11)]),
            vec![StoreOutcome::Duplicate]
        );
        store.commit(&[offer("a", 0, 12)]).unwrap();
        assert_eq!(store.press_count(), 13);
        drop(store);

        // The file's size made it to disk, its last record's bytes did not.
        let mut zeroed = std::fs::read(&file).unwrap();
        let last = *record_starts(&zeroed).last().unwrap();
        zeroed[last + 24..].fill(0);
        std::fs::write(&file, &zeroed).unwrap();
        let store = reopen(dir.path());
        assert_eq!(store.press_count(), 13);
        assert_eq!(logged(&store).len(), 13);
        drop(store);

        // The whole day's file gone.
        std::fs::remove_file(&file).unwrap();
        let store = reopen(dir.path());
        assert_eq!(store.press_count(), 13);
        assert_eq!(logged(&store).len(), 13);
    }

    #[test]
    fn a_checkpoint_is_written_whole_with_its_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.aggregates_watermark().unwrap(), None);
        store
            .save_aggregates(&Checkpoint {
                put: vec![
                    (b"s1".to_vec(), b"x".to_vec()),
                    (b"t1a".to_vec(), b"y".to_vec()),
                ],
                delete: vec![],
                watermark: Some(42),
            })
            .unwrap();
        store
            .save_aggregates(&Checkpoint {
                put: vec![],
                delete: vec![b"s1".to_vec()],
                watermark: Some(43),
            })
            .unwrap();
        assert_eq!(store.aggregates_watermark().unwrap(), Some(43));
        assert_eq!(store.aggregates(b"s").unwrap().len(), 0);
        assert_eq!(store.aggregate(b"t1a").unwrap().as_deref(), Some(&b"y"[..]));
    }
}
