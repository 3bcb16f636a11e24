//! The records the store keeps and the errors it reports: the vocabulary
//! shared by the store, its press log and its outbox (a floor below them).
//!
//! # Why batches
//! A press is about a dozen bytes of facts. Kept as one sled key each (as
//! the first store layout did) it cost ~700 bytes of disk, a leaf-node copy
//! per insert, and sled bookkeeping that grew with every press ever stored.
//! So the presses of one group commit are kept as one [`PressBatch`]: one
//! record in the press log and one in the outbox, in a compact encoding
//! (about 2-10 bytes a press, plus each terminal's id once per batch).

use std::sync::Arc;

use pressline_protocol::upstream::NotCounted;
use pressline_protocol::{Button, PressId};
use serde::{Deserialize, Serialize};

/// Storage failures. Any of them stops acks (presses stay on terminals).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A press-log file could not be read or written.
    #[error("press log: {what}: {source}")]
    Log {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("stored record does not decode: {0}")]
    Corrupt(#[from] postcard::Error),
    #[error("stored record does not decode: {0}")]
    Malformed(&'static str),
    #[error("record does not encode: {0}")]
    Encode(String),
    /// The store hit an I/O error and is being reopened (see
    /// [`crate::store::Store::fault`]); nothing can be stored until it is.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// An upstream document awaiting the upstream broker's PUBACK: rendered
/// when it is made (terminal health, alerts, OTA events; presses of store
/// layout 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub topic: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Publish with the MQTT retain flag (terminal health documents).
    pub retain: bool,
    /// A press (counted in `presses_forwarded`), not a status document.
    pub is_press: bool,
}

/// One press offered for storage.
#[derive(Debug, Clone)]
pub struct PressToStore {
    pub terminal: String,
    pub id: PressId,
    pub button: Button,
    pub received_at_ms: i64,
    pub pressed_at_ms: Option<i64>,
    /// The misuse filter's verdict (`None`: counted as an opinion).
    pub not_counted: Option<NotCounted>,
}

/// What happened to one offered press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    Duplicate,
}

/// A stored press, as the press log and the outbox keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedPress {
    pub boot: u32,
    pub seq: u32,
    pub button: Button,
    /// Unix ms when the gateway received it.
    pub received_at_ms: i64,
    /// Unix ms of the press itself, when the terminal said (never after
    /// `received_at_ms`).
    pub pressed_at_ms: Option<i64>,
    /// Counted as an opinion.
    pub counted: bool,
    /// Why not, when known (store layout 1 kept no reason).
    pub reason: Option<NotCounted>,
}

impl LoggedPress {
    pub fn id(&self) -> PressId {
        PressId {
            boot: self.boot,
            seq: self.seq,
        }
    }

    /// When it happened: the press time if known, else when it arrived.
    pub fn at_ms(&self) -> i64 {
        self.pressed_at_ms.unwrap_or(self.received_at_ms)
    }
}

/// One terminal's presses within a batch, in the order they were stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalRun {
    pub terminal: Arc<str>,
    pub presses: Vec<LoggedPress>,
}

/// The new presses of one group commit. Each has its own outbox id: the
/// record's key plus its position, counting run by run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PressBatch {
    pub runs: Vec<TerminalRun>,
}

/// Format of [`PressBatch::encode`].
const BATCH_FORMAT: u8 = 1;

// Flag bits of one encoded press.
const BUTTON_MASK: u8 = 0b11;
const VERDICT_SHIFT: u8 = 2;
const VERDICT_MASK: u8 = 0b11 << VERDICT_SHIFT;
const HAS_AGE: u8 = 1 << 4;
const SAME_BOOT: u8 = 1 << 5;
const NEXT_SEQ: u8 = 1 << 6;

impl PressBatch {
    /// Number of presses.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|r| r.presses.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.iter().all(|r| r.presses.is_empty())
    }

    /// Adds a press to `terminal`'s run (a new run when the previous press
    /// was another terminal's).
    pub fn push(&mut self, terminal: &str, press: LoggedPress) {
        match self.runs.last_mut() {
            Some(run) if &*run.terminal == terminal => run.presses.push(press),
            _ => self.runs.push(TerminalRun {
                terminal: Arc::from(terminal),
                presses: vec![press],
            }),
        }
    }

    /// Every press with its terminal, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &LoggedPress)> {
        self.runs
            .iter()
            .flat_map(|r| r.presses.iter().map(move |p| (&r.terminal, p)))
    }

    /// When the first press arrived (the batch's time), if any.
    pub fn received_at_ms(&self) -> Option<i64> {
        self.iter().map(|(_, p)| p.received_at_ms).next()
    }

    /// Compact encoding: a format byte, the press count (so a reader can
    /// learn the span without decoding), a base time, then per run the
    /// terminal id and per press one flag byte plus whatever differs from
    /// the press before it (boot, seq, arrival time delta, age).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(BATCH_FORMAT);
        put_varint(out, self.len() as u64);
        let base = self.received_at_ms().unwrap_or(0);
        put_varint(out, zigzag(base));
        put_varint(out, self.runs.len() as u64);
        let mut last_received = base;
        for run in &self.runs {
            put_varint(out, run.terminal.len() as u64);
            out.extend_from_slice(run.terminal.as_bytes());
            put_varint(out, run.presses.len() as u64);
            let mut prev: Option<PressId> = None;
            for p in &run.presses {
                let age = p
                    .pressed_at_ms
                    .map(|at| p.received_at_ms.saturating_sub(at).max(0) as u64);
                let mut flags = p.button.score() - 1;
                flags |= verdict_code(p.counted, p.reason) << VERDICT_SHIFT;
                if age.is_some() {
                    flags |= HAS_AGE;
                }
                let same_boot = prev.is_some_and(|q| q.boot == p.boot);
                if same_boot {
                    flags |= SAME_BOOT;
                }
                let next_seq =
                    same_boot && prev.is_some_and(|q| q.seq.checked_add(1) == Some(p.seq));
                if next_seq {
                    flags |= NEXT_SEQ;
                }
                out.push(flags);
                if !same_boot {
                    put_varint(out, u64::from(p.boot));
                }
                if !next_seq {
                    put_varint(out, u64::from(p.seq));
                }
                put_varint(out, zigzag(p.received_at_ms.wrapping_sub(last_received)));
                last_received = p.received_at_ms;
                if let Some(age) = age {
                    put_varint(out, age);
                }
                prev = Some(p.id());
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.len() * 4);
        self.encode(&mut out);
        out
    }

    /// The number of presses in an encoded batch, reading only its header.
    pub fn encoded_len(bytes: &[u8]) -> Result<u64, StoreError> {
        let mut r = bytes;
        if take_byte(&mut r)? != BATCH_FORMAT {
            return Err(StoreError::Malformed("unknown press batch format"));
        }
        take_varint(&mut r)
    }

    /// Decodes [`PressBatch::encode`]'s output. Never panics: a damaged
    /// record is an error.
    pub fn decode(bytes: &[u8]) -> Result<PressBatch, StoreError> {
        let mut r = bytes;
        if take_byte(&mut r)? != BATCH_FORMAT {
            return Err(StoreError::Malformed("unknown press batch format"));
        }
        let count = take_varint(&mut r)?;
        let mut last_received = unzigzag(take_varint(&mut r)?);
        let runs = take_varint(&mut r)?;
        // Every run and press takes at least a byte: bound allocations by
        // what is there, not by what a damaged header claims.
        if runs > r.len() as u64 || count > r.len() as u64 {
            return Err(StoreError::Malformed(
                "press batch header larger than its record",
            ));
        }
        let mut batch = PressBatch {
            runs: Vec::with_capacity(runs as usize),
        };
        let mut total = 0u64;
        for _ in 0..runs {
            let len = take_varint(&mut r)? as usize;
            if len > r.len() {
                return Err(StoreError::Malformed(
                    "terminal id past the end of a press batch",
                ));
            }
            let (name, rest) = r.split_at(len);
            r = rest;
            let terminal = std::str::from_utf8(name)
                .map_err(|_| StoreError::Malformed("terminal id is not UTF-8"))?;
            let n = take_varint(&mut r)?;
            if n > r.len() as u64 {
                return Err(StoreError::Malformed("press run longer than its record"));
            }
            let mut presses = Vec::with_capacity(n as usize);
            let mut prev: Option<PressId> = None;
            for _ in 0..n {
                let flags = take_byte(&mut r)?;
                let button = Button::from_score((flags & BUTTON_MASK) + 1)
                    .ok_or(StoreError::Malformed("button out of range"))?;
                let (counted, reason) = verdict_of((flags & VERDICT_MASK) >> VERDICT_SHIFT);
                let boot = match prev {
                    Some(q) if flags & SAME_BOOT != 0 => q.boot,
                    None if flags & SAME_BOOT != 0 => {
                        return Err(StoreError::Malformed("first press of a run has no boot"))
                    }
                    _ => u32::try_from(take_varint(&mut r)?)
                        .map_err(|_| StoreError::Malformed("boot out of range"))?,
                };
                let seq = match prev {
                    Some(q) if flags & NEXT_SEQ != 0 => q
                        .seq
                        .checked_add(1)
                        .ok_or(StoreError::Malformed("sequence number overflows"))?,
                    None if flags & NEXT_SEQ != 0 => {
                        return Err(StoreError::Malformed("first press of a run has no seq"))
                    }
                    _ => u32::try_from(take_varint(&mut r)?)
                        .map_err(|_| StoreError::Malformed("seq out of range"))?,
                };
                let received_at_ms = last_received.wrapping_add(unzigzag(take_varint(&mut r)?));
                last_received = received_at_ms;
                let pressed_at_ms = if flags & HAS_AGE != 0 {
                    let age = i64::try_from(take_varint(&mut r)?)
                        .map_err(|_| StoreError::Malformed("age out of range"))?;
                    Some(received_at_ms.saturating_sub(age))
                } else {
                    None
                };
                presses.push(LoggedPress {
                    boot,
                    seq,
                    button,
                    received_at_ms,
                    pressed_at_ms,
                    counted,
                    reason,
                });
                prev = Some(PressId { boot, seq });
            }
            total += n;
            batch.runs.push(TerminalRun {
                terminal: Arc::from(terminal),
                presses,
            });
        }
        if total != count || !r.is_empty() {
            return Err(StoreError::Malformed(
                "press batch count does not match its presses",
            ));
        }
        Ok(batch)
    }
}

fn verdict_code(counted: bool, reason: Option<NotCounted>) -> u8 {
    match (counted, reason) {
        (true, _) => 0,
        (false, Some(NotCounted::ResponseInterval)) => 1,
        (false, Some(NotCounted::Burst)) => 2,
        (false, None) => 3,
    }
}

fn verdict_of(code: u8) -> (bool, Option<NotCounted>) {
    match code {
        0 => (true, None),
        1 => (false, Some(NotCounted::ResponseInterval)),
        2 => (false, Some(NotCounted::Burst)),
        _ => (false, None),
    }
}

/// What an outbox record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxRecord {
    /// Presses, one outbox id each from the record's key upward; their
    /// upstream documents are rendered when they are sent.
    Presses(PressBatch),
    /// One document, rendered when it was made.
    Document(OutboxEntry),
}

const PRESSES_TAG: u8 = 1;
const DOCUMENT_TAG: u8 = 2;

impl OutboxRecord {
    pub fn to_bytes(&self) -> Result<Vec<u8>, StoreError> {
        match self {
            OutboxRecord::Presses(batch) => {
                let mut out = Vec::with_capacity(16 + batch.len() * 4);
                out.push(PRESSES_TAG);
                batch.encode(&mut out);
                Ok(out)
            }
            OutboxRecord::Document(entry) => {
                let mut out = vec![DOCUMENT_TAG];
                out.extend(postcard::to_allocvec(entry)?);
                Ok(out)
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<OutboxRecord, StoreError> {
        match bytes.split_first() {
            Some((&PRESSES_TAG, rest)) => Ok(OutboxRecord::Presses(PressBatch::decode(rest)?)),
            Some((&DOCUMENT_TAG, rest)) => Ok(OutboxRecord::Document(postcard::from_bytes(rest)?)),
            _ => Err(StoreError::Malformed("unknown outbox record kind")),
        }
    }

    /// Whether an encoded record's messages are presses (counted in
    /// `presses_forwarded`): a press batch, or a press document of store
    /// layout 1.
    pub fn holds_presses(bytes: &[u8]) -> bool {
        match bytes.split_first() {
            Some((&PRESSES_TAG, _)) => true,
            Some((&DOCUMENT_TAG, rest)) => {
                postcard::from_bytes::<OutboxEntry>(rest).is_ok_and(|d| d.is_press)
            }
            _ => false,
        }
    }

    /// How many outbox ids an encoded record covers, reading only its
    /// header.
    pub fn span(bytes: &[u8]) -> Result<u64, StoreError> {
        match bytes.split_first() {
            Some((&PRESSES_TAG, rest)) => PressBatch::encoded_len(rest),
            Some((&DOCUMENT_TAG, _)) => Ok(1),
            _ => Err(StoreError::Malformed("unknown outbox record kind")),
        }
    }
}

/// One message for upstream, as the outbox hands it to the forwarder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxItem {
    /// A press: the forwarder renders its document.
    Press {
        terminal: Arc<str>,
        press: LoggedPress,
    },
    Document(OutboxEntry),
}

impl OutboxItem {
    /// Counted in `presses_forwarded` once acknowledged.
    pub fn is_press(&self) -> bool {
        match self {
            OutboxItem::Press { .. } => true,
            OutboxItem::Document(d) => d.is_press,
        }
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// LEB128.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn take_varint(r: &mut &[u8]) -> Result<u64, StoreError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = take_byte(r)?;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(StoreError::Malformed("varint longer than 64 bits"))
}

pub(crate) fn take_byte(r: &mut &[u8]) -> Result<u8, StoreError> {
    let (&b, rest) = r
        .split_first()
        .ok_or(StoreError::Malformed("record ends early"))?;
    *r = rest;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(boot: u32, seq: u32, received: i64, age: Option<i64>, counted: bool) -> LoggedPress {
        LoggedPress {
            boot,
            seq,
            button: Button::from_score((seq % 4) as u8 + 1).unwrap(),
            received_at_ms: received,
            pressed_at_ms: age.map(|a| received - a),
            counted,
            reason: (!counted).then_some(NotCounted::Burst),
        }
    }

    #[test]
    fn batches_round_trip_and_cost_a_few_bytes_a_press() {
        let mut batch = PressBatch::default();
        for seq in 0..100 {
            batch.push(
                "north-07",
                press(3, seq, 1_795_000_000_000 + i64::from(seq) * 7, None, true),
            );
        }
        batch.push(
            "gate-a",
            press(0, u32::MAX, 1_795_000_000_900, Some(120_000), false),
        );
        batch.push("gate-a", press(1, 0, 1_795_000_000_901, Some(0), true));
        batch.push("north-07", press(3, 500, 1_794_999_999_000, None, true));
        let bytes = batch.to_bytes();
        assert_eq!(PressBatch::decode(&bytes).unwrap(), batch);
        assert_eq!(PressBatch::encoded_len(&bytes).unwrap(), 103);
        assert!(
            bytes.len() < 103 * 3,
            "{} bytes for 103 presses",
            bytes.len()
        );
        let ids: Vec<_> = batch.iter().map(|(t, p)| (t.to_string(), p.seq)).collect();
        assert_eq!(ids[100], ("gate-a".to_string(), u32::MAX));
        assert_eq!(ids.len(), 103);
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let mut batch = PressBatch::default();
        for seq in 0..20 {
            batch.push(
                "t1",
                press(0, seq, 1_700_000_000_000, Some(5), seq % 3 == 0),
            );
        }
        let bytes = OutboxRecord::Presses(batch).to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                OutboxRecord::decode(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        for i in 0..flipped.len() {
            for bit in 0..8 {
                flipped[i] ^= 1 << bit;
                let _ = OutboxRecord::decode(&flipped);
                flipped[i] ^= 1 << bit;
            }
        }
        assert!(OutboxRecord::decode(&[9, 1, 2]).is_err());
        assert!(PressBatch::decode(&[
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
        ])
        .is_err());
    }

    #[test]
    fn documents_span_one_id_and_batches_their_press_count() {
        let doc = OutboxRecord::Document(OutboxEntry {
            topic: "t".into(),
            payload: b"{}".to_vec(),
            retain: true,
            is_press: false,
        });
        let bytes = doc.to_bytes().unwrap();
        assert_eq!(OutboxRecord::span(&bytes).unwrap(), 1);
        assert_eq!(OutboxRecord::decode(&bytes).unwrap(), doc);
        let mut batch = PressBatch::default();
        batch.push("a", press(0, 1, 5, None, true));
        batch.push("b", press(0, 1, 5, None, true));
        let bytes = OutboxRecord::Presses(batch).to_bytes().unwrap();
        assert_eq!(OutboxRecord::span(&bytes).unwrap(), 2);
    }
}
