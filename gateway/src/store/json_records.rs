//! Trees of JSON records: terminal state, alerts, credentials, releases,
//! rollouts. One way to save, remove and load them, and one durability
//! rule, declared with each tree when the store opens:
//!
//! | tree | durability | why |
//! |---|---|---|
//! | `terminals` | background | the next heartbeat says it again |
//! | `alerts`, `credentials`, `power`, `releases`, `rollouts` | flushed | someone was told: an acknowledgement answered, a terminal registered or revoked, its power settings changed, an upload accepted, a rollout step taken |
//!
//! Flushed records are on disk when the call returns; background ones
//! within sled's own flush interval. JSON, so a record can grow fields
//! and an older gateway's records still load; one that does not decode is
//! logged and skipped, never fatal.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{json_err, StoreError};

/// When a write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// Before the write returns.
    Flushed,
    /// Within sled's flush interval (it repeats soon anyway).
    Background,
}

/// One tree of JSON records.
pub(super) struct JsonTree {
    tree: sled::Tree,
    /// What a record is, for log lines ("alert").
    what: &'static str,
    durability: Durability,
}

impl JsonTree {
    pub fn open(
        db: &sled::Db,
        name: &str,
        what: &'static str,
        durability: Durability,
    ) -> Result<JsonTree, StoreError> {
        Ok(JsonTree {
            tree: db.open_tree(name)?,
            what,
            durability,
        })
    }

    /// The tree itself, for a transaction across trees (the caller then
    /// owes the flush: see [`JsonTree::settle`]).
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    pub fn save<T: Serialize + ?Sized>(&self, key: &[u8], value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(json_err)?;
        self.tree.insert(key, bytes)?;
        self.settle()
    }

    pub fn remove_all<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key.as_ref());
        }
        self.tree.apply_batch(batch)?;
        self.settle()
    }

    /// The record under `key`, if there is one that decodes.
    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.tree.get(key)? else {
            return Ok(None);
        };
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                tracing::warn!(error = %e, "an undecodable stored {} record is ignored", self.what);
                Ok(None)
            }
        }
    }

    /// Every record that decodes (others are logged and skipped).
    pub fn load_all<T: DeserializeOwned>(&self) -> Vec<T> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            match item {
                Ok((_, v)) => match serde_json::from_slice(&v) {
                    Ok(t) => out.push(t),
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an undecodable stored {} record", self.what)
                    }
                },
                Err(e) => tracing::error!(error = %e, "cannot read stored {} records", self.what),
            }
        }
        out
    }

    /// Applies the tree's durability to what was just written.
    pub fn settle(&self) -> Result<(), StoreError> {
        if self.durability == Durability::Flushed {
            // One pagecache for every tree: this is the database's fsync.
            self.tree.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Record {
        name: String,
    }

    #[test]
    fn records_round_trip_and_an_undecodable_one_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = JsonTree::open(&db, "things", "thing", Durability::Flushed).unwrap();
        tree.save(b"a", &Record { name: "A".into() }).unwrap();
        tree.save(b"b", &Record { name: "B".into() }).unwrap();
        tree.tree().insert(b"c", &b"{not json"[..]).unwrap();
        let all: Vec<Record> = tree.load_all();
        assert_eq!(all.len(), 2);
        assert_eq!(tree.get::<Record>(b"c").unwrap(), None);
        assert_eq!(tree.get::<Record>(b"a").unwrap().unwrap().name, "A");
        tree.remove_all(&[b"a", b"b"]).unwrap();
        assert!(tree.load_all::<Record>().is_empty());
    }
}
