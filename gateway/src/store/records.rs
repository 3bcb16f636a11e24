//! The records the store keeps and the errors it reports: the vocabulary
//! shared by the store and its outbox (a floor below both).

use pressline_protocol::{Button, PressId};
use serde::{Deserialize, Serialize};

/// Storage failures. Any of them stops acks (presses stay on terminals).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored record does not decode: {0}")]
    Corrupt(#[from] postcard::Error),
    #[error("record does not encode: {0}")]
    Encode(String),
}

/// A press as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPress {
    pub button: u8,
    /// Unix milliseconds when the gateway first stored it.
    pub received_at_ms: i64,
    /// Unix milliseconds of the press itself, when the terminal said.
    pub pressed_at_ms: Option<i64>,
    /// The misuse filter's verdict: counted as an opinion.
    pub counted: bool,
}

/// An upstream message awaiting the upstream broker's PUBACK.
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
    pub counted: bool,
    /// Upstream message to enqueue if the press is new.
    pub upstream: OutboxEntry,
}

/// What happened to one offered press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    Duplicate,
}
