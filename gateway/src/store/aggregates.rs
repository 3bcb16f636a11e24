//! Checkpoints of the satisfaction aggregates, in the `aggregates` tree.
//!
//! The store does not interpret them: the score engine
//! ([`crate::insight::scores`]) encodes its day records under keys of its
//! own, and the store writes each checkpoint (changed records, records to
//! delete, and the id of the last press-log record folded in) as one
//! atomic batch. After a crash the engine loads the last checkpoint and
//! folds in the press-log records above its watermark, so nothing is
//! counted twice or lost. The key [`WATERMARK_KEY`] is the store's.

use super::records::StoreError;

/// Where the watermark lives (no engine key starts with `~`).
pub const WATERMARK_KEY: &[u8] = b"~watermark";

/// One checkpoint.
#[derive(Debug, Default)]
pub struct Checkpoint {
    pub put: Vec<(Vec<u8>, Vec<u8>)>,
    pub delete: Vec<Vec<u8>>,
    /// The last press-log record folded into what is written.
    pub watermark: Option<u64>,
}

pub fn save(tree: &sled::Tree, checkpoint: &Checkpoint) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for (k, v) in &checkpoint.put {
        batch.insert(k.as_slice(), v.as_slice());
    }
    for k in &checkpoint.delete {
        batch.remove(k.as_slice());
    }
    if let Some(w) = checkpoint.watermark {
        batch.insert(WATERMARK_KEY, &w.to_be_bytes());
    }
    tree.apply_batch(batch)?;
    Ok(())
}

pub fn watermark(tree: &sled::Tree) -> Result<Option<u64>, StoreError> {
    Ok(tree
        .get(WATERMARK_KEY)?
        .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map(u64::from_be_bytes))
}

/// Every record whose key starts with `prefix`.
pub fn scan(tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    for item in tree.scan_prefix(prefix) {
        let (k, v) = item?;
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}
