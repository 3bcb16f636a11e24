//! Durable storage of presses and of the upstream outbox, in sled.
//!
//! sled is beta (its README suggests SQLite where reliability is paramount),
//! so everything the gateway persists goes through this one small interface,
//! and the crash tests (`kill -9` under load) are what prove it.
//!
//! Trees:
//! - `presses`: key `terminal \0 boot(BE) seq(BE)` → [`StoredPress`]. The key
//!   *is* the dedup identity, so a press can only ever be stored once.
//! - `terminals`: terminal id → registry state (JSON, owned by the terminal
//!   registry).
//! - `alerts`: alert id (BE) → alert.
//! - `meta`: small counters (`stored_day`: presses stored per UTC day).
//! - `rollouts`: rollout id (BE u32) → the orchestrator state (JSON).
//! - `outbox.<segment>`: key = sled-generated increasing id (BE) →
//!   [`OutboxEntry`], the upstream message still to be acknowledged by the
//!   upstream broker, in segments of consecutive ids (see [`outbox`]).
//!   Acknowledged ids are recorded as ranges in `meta` and skipped; a segment
//!   is dropped whole once every entry in it is acknowledged. A restart
//!   resends from the oldest unacknowledged entry.
//!
//! A press and its outbox entry are written in one transaction, and a batch
//! is flushed (fsync) once before any of it is acked to terminals: group
//! commit, one fsync per batch rather than per press.

use std::collections::HashSet;
use std::path::Path;

use pressline_protocol::PressId;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

pub mod outbox;
mod records;

pub use records::{OutboxEntry, PressToStore, StoreError, StoreOutcome, StoredPress};

use outbox::Outbox;

/// The gateway's durable store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    presses: sled::Tree,
    outbox: std::sync::Arc<Outbox>,
    terminals: sled::Tree,
    alerts: sled::Tree,
    meta: sled::Tree,
    credentials: sled::Tree,
    releases: sled::Tree,
    rollouts: sled::Tree,
}

fn press_key(terminal: &str, id: PressId) -> Vec<u8> {
    let mut key = Vec::with_capacity(terminal.len() + 9);
    key.extend_from_slice(terminal.as_bytes());
    key.push(0);
    key.extend_from_slice(&id.boot.to_be_bytes());
    key.extend_from_slice(&id.seq.to_be_bytes());
    key
}

impl Store {
    /// Opens (or creates) the store in `dir`, with a page cache of
    /// `cache_bytes` (sled's default of 1 GB is far too much for a site box).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // We flush explicitly before acking; this only bounds how much
            // outbox bookkeeping a crash can roll back (harmless resends).
            .flush_every_ms(Some(1000))
            .open()?;
        let presses = db.open_tree("presses")?;
        let terminals = db.open_tree("terminals")?;
        let alerts = db.open_tree("alerts")?;
        let meta = db.open_tree("meta")?;
        let outbox = std::sync::Arc::new(Outbox::open(&db, &meta, outbox::SEGMENT_KEYS)?);
        let credentials = db.open_tree("credentials")?;
        let releases = db.open_tree("releases")?;
        let rollouts = db.open_tree("rollouts")?;
        Ok(Store {
            db,
            presses,
            outbox,
            terminals,
            alerts,
            meta,
            credentials,
            releases,
            rollouts,
        })
    }

    /// Stores each press that is not stored yet, and enqueues its upstream
    /// message, atomically; then makes it durable. Returns one outcome per
    /// input, in order. Nothing may be acked unless this returned `Ok`.
    pub fn commit(&self, batch: &[PressToStore]) -> Result<Vec<StoreOutcome>, StoreError> {
        let keys: Vec<Vec<u8>> = batch.iter().map(|p| press_key(&p.terminal, p.id)).collect();
        // Ids for the outbox entries, reserved up front so the segment
        // trees they fall in can join the transaction. Ids left over
        // (duplicates) are gaps, which the outbox skips.
        let reservation = self.outbox.reserve(batch.len())?;
        let mut trees = vec![&self.presses];
        trees.extend(reservation.trees());
        let outcomes = trees
            .as_slice()
            .transaction(|trees| {
                let presses = &trees[0];
                let mut ids = reservation.ids().iter();
                let mut seen = HashSet::with_capacity(batch.len());
                let mut outcomes = Vec::with_capacity(batch.len());
                for (press, key) in batch.iter().zip(&keys) {
                    if !seen.insert(key.as_slice()) || presses.get(key)?.is_some() {
                        outcomes.push(StoreOutcome::Duplicate);
                        continue;
                    }
                    let record = StoredPress {
                        button: press.button.score(),
                        received_at_ms: press.received_at_ms,
                        pressed_at_ms: press.pressed_at_ms,
                        counted: press.counted,
                    };
                    let value = postcard::to_allocvec(&record)
                        .map_err(ConflictableTransactionError::Abort)?;
                    presses.insert(key.as_slice(), value)?;
                    let entry = postcard::to_allocvec(&press.upstream)
                        .map_err(ConflictableTransactionError::Abort)?;
                    let outbox_id = *ids.next().expect("one id reserved per press");
                    trees[1 + reservation.tree_index(outbox_id)]
                        .insert(&outbox_id.to_be_bytes(), entry)?;
                    outcomes.push(StoreOutcome::Stored);
                }
                Ok(outcomes)
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => StoreError::Corrupt(e),
                TransactionError::Storage(e) => StoreError::Sled(e),
            })?;
        drop(reservation);
        self.outbox.persist_acknowledged()?;
        self.db.flush()?;
        Ok(outcomes)
    }

    /// Up to `limit` unacknowledged outbox entries with keys greater than
    /// `after` (or from the start), oldest first.
    pub fn outbox_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
        match after {
            Some(u64::MAX) => Ok(Vec::new()),
            Some(k) => self.outbox.read(k + 1, u64::MAX, limit),
            None => self.outbox.read(0, u64::MAX, limit),
        }
    }

    /// Up to `limit` unacknowledged outbox entries with keys in
    /// `(after, upto]`, oldest first (the backlog part of a live-first
    /// drain).
    pub fn outbox_between(
        &self,
        after: Option<u64>,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
        match after {
            Some(u64::MAX) => Ok(Vec::new()),
            Some(k) => self.outbox.read(k + 1, upto, limit),
            None => self.outbox.read(0, upto, limit),
        }
    }

    /// The newest outbox key, if any.
    pub fn outbox_last_key(&self) -> Result<Option<u64>, StoreError> {
        self.outbox.last_key()
    }

    /// The upstream broker has these messages: they are not sent again.
    pub fn outbox_remove_all(&self, keys: &[u64]) -> Result<(), StoreError> {
        self.outbox.acknowledge(keys)
    }

    /// The upstream broker has the message: it is not sent again.
    pub fn outbox_remove(&self, key: u64) -> Result<(), StoreError> {
        self.outbox.acknowledge(&[key])
    }

    /// Number of stored presses (walks the tree: call at start-up only).
    pub fn press_count(&self) -> usize {
        self.presses.len()
    }

    /// Number of upstream messages not yet acknowledged (walks them all:
    /// start-up and tests only).
    pub fn outbox_len(&self) -> usize {
        self.outbox_counts().0
    }

    /// Number of presses among them (decodes every entry: start-up only).
    pub fn outbox_presses(&self) -> usize {
        self.outbox_counts().1
    }

    fn outbox_counts(&self) -> (usize, usize) {
        self.outbox.count().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot count the upstream outbox");
            (0, 0)
        })
    }

    /// Looks a press up.
    pub fn press(&self, terminal: &str, id: PressId) -> Result<Option<StoredPress>, StoreError> {
        match self.presses.get(press_key(terminal, id))? {
            Some(v) => Ok(Some(postcard::from_bytes(&v)?)),
            None => Ok(None),
        }
    }

    /// Enqueues upstream messages that are not presses (health, alerts).
    /// Not flushed here: losing them in a crash only loses a status update
    /// that the next change repeats.
    pub fn enqueue_upstream(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        self.outbox.enqueue(entries)
    }

    /// Saves a serializable registry record under `key` in `terminals` or
    /// `alerts` (JSON, so the layout can grow fields).
    pub fn save_terminal<T: Serialize>(&self, id: &str, value: &T) -> Result<(), StoreError> {
        self.terminals
            .insert(id.as_bytes(), serde_json::to_vec(value).map_err(json_err)?)?;
        Ok(())
    }

    pub fn save_alert<T: Serialize>(&self, id: u64, value: &T) -> Result<(), StoreError> {
        self.alerts.insert(
            id.to_be_bytes(),
            serde_json::to_vec(value).map_err(json_err)?,
        )?;
        Ok(())
    }

    /// Every saved terminal record; undecodable ones are skipped (and logged).
    pub fn load_terminals<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        load_all(&self.terminals, "terminal")
    }

    pub fn load_alerts<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        load_all(&self.alerts, "alert")
    }

    /// Saves a registered terminal's credential (JSON, owned by the terminal
    /// identities).
    pub fn save_credential<T: Serialize>(
        &self,
        terminal: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.credentials.insert(
            terminal.as_bytes(),
            serde_json::to_vec(value).map_err(json_err)?,
        )?;
        Ok(())
    }

    pub fn load_credentials<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        load_all(&self.credentials, "credential")
    }

    /// Saves an uploaded firmware release's description (flushed: an
    /// acknowledged upload must survive a crash).
    pub fn save_release<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.releases
            .insert(key.as_bytes(), serde_json::to_vec(value).map_err(json_err)?)?;
        self.flush()
    }

    /// Saves a rollout (JSON, key = id BE) durably: a rollout step the
    /// gateway forgets could offer a terminal twice or skip a halt.
    pub fn save_rollout<T: Serialize>(&self, id: u32, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Encode(e.to_string()))?;
        self.rollouts.insert(id.to_be_bytes(), bytes)?;
        self.rollouts.flush()?;
        Ok(())
    }

    /// Every stored rollout that decodes (others are logged and skipped).
    pub fn load_rollouts<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        self.rollouts
            .iter()
            .filter_map(|r| r.ok())
            .filter_map(|(k, v)| match serde_json::from_slice(&v) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::error!(key = ?k, error = %e, "a stored rollout does not decode; skipped");
                    None
                }
            })
            .collect()
    }

    pub fn load_releases<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        load_all(&self.releases, "release")
    }

    /// Adds `n` to the presses stored on UTC day `day` and returns the total.
    pub fn count_stored_on(&self, day: i64, n: u64) -> Result<u64, StoreError> {
        let mut total = 0;
        self.meta.update_and_fetch(b"stored_day", |old| {
            let (d, c) = decode_day(old);
            total = if d == day { c + n } else { n };
            Some(encode_day(day, total).to_vec())
        })?;
        Ok(total)
    }

    /// Presses stored on UTC day `day`.
    pub fn stored_on(&self, day: i64) -> u64 {
        let old = self.meta.get(b"stored_day").ok().flatten();
        match decode_day(old.as_deref()) {
            (d, c) if d == day => c,
            _ => 0,
        }
    }

    /// Deletes presses the gateway first stored before `cutoff_ms` (Unix
    /// ms), in batches so the tree is never locked for long; returns how
    /// many went. A terminal resending such an old press would have it
    /// stored again, but terminals resend only unacked presses, and those
    /// are minutes old at most.
    pub fn prune_presses_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut pruned = 0u64;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for item in self.presses.iter() {
            let (key, value) = item?;
            let old = postcard::from_bytes::<StoredPress>(&value)
                .map(|p| p.received_at_ms < cutoff_ms)
                .unwrap_or(false);
            if old {
                batch.remove(key);
                in_batch += 1;
                if in_batch == 10_000 {
                    self.presses.apply_batch(std::mem::take(&mut batch))?;
                    pruned += in_batch;
                    in_batch = 0;
                }
            }
        }
        if in_batch > 0 {
            self.presses.apply_batch(batch)?;
            pruned += in_batch;
        }
        if pruned > 0 {
            self.db.flush()?;
        }
        Ok(pruned)
    }

    /// Every stored press, for rebuilding in-memory figures at start-up.
    /// Undecodable records are skipped and counted in the returned number.
    pub fn for_each_press(&self, mut f: impl FnMut(&str, &StoredPress)) -> usize {
        let mut skipped = 0;
        for item in self.presses.iter() {
            let Ok((key, value)) = item else {
                skipped += 1;
                continue;
            };
            let terminal = key
                .split(|b| *b == 0)
                .next()
                .and_then(|t| std::str::from_utf8(t).ok());
            match (terminal, postcard::from_bytes::<StoredPress>(&value)) {
                (Some(t), Ok(record)) => f(t, &record),
                _ => skipped += 1,
            }
        }
        skipped
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Writes the upstream acknowledgements still held in memory (see
    /// [`outbox`]); the forwarder calls this once a second.
    pub fn persist_outbox_acks(&self) -> Result<(), StoreError> {
        self.outbox.persist_acknowledged()
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.outbox.persist_acknowledged()?;
        self.db.flush()?;
        Ok(())
    }
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Sled(sled::Error::Unsupported(format!(
        "record does not serialize: {e}"
    )))
}

fn load_all<T: serde::de::DeserializeOwned>(tree: &sled::Tree, what: &str) -> Vec<T> {
    let mut out = Vec::new();
    for item in tree.iter() {
        match item {
            Ok((_, v)) => match serde_json::from_slice(&v) {
                Ok(t) => out.push(t),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an undecodable stored {what} record")
                }
            },
            Err(e) => tracing::error!(error = %e, "cannot read stored {what} records"),
        }
    }
    out
}

fn decode_day(raw: Option<&[u8]>) -> (i64, u64) {
    match raw {
        Some(b) if b.len() == 16 => (
            i64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
            u64::from_be_bytes(b[8..].try_into().expect("8 bytes")),
        ),
        _ => (i64::MIN, 0),
    }
}

fn encode_day(day: i64, count: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&day.to_be_bytes());
    b[8..].copy_from_slice(&count.to_be_bytes());
    b
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
            counted: true,
            upstream: OutboxEntry {
                topic: format!("up/{terminal}/{boot}/{seq}"),
                payload: vec![seq as u8],
                retain: false,
                is_press: true,
            },
        }
    }

    #[test]
    fn a_press_is_stored_once_however_often_it_is_offered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let out = store
            .commit(&[
                offer("a", 0, 1),
                offer("a", 0, 1),
                offer("b", 0, 1),
                offer("a", 1, 1),
            ])
            .unwrap();
        use StoreOutcome::*;
        assert_eq!(out, vec![Stored, Duplicate, Stored, Stored]);
        assert_eq!(store.commit(&[offer("a", 0, 1)]).unwrap(), vec![Duplicate]);
        assert_eq!(store.press_count(), 3);
        assert_eq!(store.outbox_len(), 3);
    }

    #[test]
    fn retention_deletes_only_presses_older_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let at = |terminal: &str, seq: u32, ms: i64| PressToStore {
            received_at_ms: ms,
            ..offer(terminal, 0, seq)
        };
        store
            .commit(&[
                at("a", 1, 1_000),
                at("a", 2, 2_000),
                at("b", 1, 3_000),
                at("b", 2, 1_500),
            ])
            .unwrap();
        assert_eq!(store.prune_presses_before(2_000).unwrap(), 2);
        assert_eq!(store.press_count(), 2);
        assert_eq!(store.prune_presses_before(2_000).unwrap(), 0);
        // The kept ones still deduplicate; the upstream outbox is untouched.
        assert_eq!(
            store.commit(&[at("a", 2, 9_000)]).unwrap(),
            vec![StoreOutcome::Duplicate]
        );
        assert_eq!(store.outbox_len(), 4);
    }

    #[test]
    fn terminal_ids_cannot_alias_through_the_key_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        // "a" boot 0x61000000 must not collide with "aa" boot 0 etc.
        let out = store
            .commit(&[offer("a", 0x6100_0000, 0), offer("aa", 0, 0)])
            .unwrap();
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
            assert_eq!(rest[0].1.payload, vec![2]);
            store.flush().unwrap();
        }
        let store = reopen(dir.path());
        let left: Vec<_> = store
            .outbox_after(None, 10)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.payload[0])
            .collect();
        assert_eq!(left, vec![1, 2]);
        assert_eq!(store.press_count(), 3);
        assert!(store
            .press("a", PressId { boot: 0, seq: 2 })
            .unwrap()
            .is_some());
        assert_eq!(
            store.commit(&[offer("a", 0, 2)]).unwrap(),
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
    fn the_daily_count_resets_on_a_new_day_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(store.count_stored_on(100, 5).unwrap(), 5);
            assert_eq!(store.count_stored_on(100, 2).unwrap(), 7);
            store.flush().unwrap();
        }
        let store = reopen(dir.path());
        assert_eq!(store.stored_on(100), 7);
        assert_eq!(store.stored_on(101), 0);
        assert_eq!(store.count_stored_on(101, 1).unwrap(), 1);
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
}
