//! Documents of the gateway's HTTP API that the fleet CLI reads back:
//! one definition for both sides, so they cannot drift apart.

use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::upstream::{RolloutState, RolloutTerminalState};

/// A firmware release stored at a gateway (`GET /api/v1/ota/releases`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub version: String,
    pub board: String,
    pub size: u32,
    pub sha256: String,
    pub key_id: String,
    pub uploaded_at: String,
}

/// A rollout (`GET /api/v1/ota/rollouts[/{id}]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: u32,
    pub version: String,
    pub board: String,
    pub state: RolloutState,
    pub halt_reason: Option<String>,
    pub attempt: u32,
    /// The stage being rolled out (0 = canary) of `stages`.
    pub stage: usize,
    pub stages: usize,
    pub canary: usize,
    pub waves: Vec<u8>,
    /// Percent.
    pub max_failure_rate: f64,
    /// Percent.
    pub failure_rate: f64,
    pub window: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Terminals in each state.
    pub counts: BTreeMap<RolloutTerminalState, usize>,
    pub terminals: Vec<RolloutTerminal>,
}

impl Rollout {
    /// Terminals that failed or were rolled back.
    pub fn failures(&self) -> usize {
        self.counts
            .iter()
            .filter(|(state, _)| state.is_failure())
            .map(|(_, n)| n)
            .sum()
    }
}

/// One terminal's part in a [`Rollout`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutTerminal {
    pub id: String,
    pub stage: usize,
    pub state: RolloutTerminalState,
    pub percent: u8,
    pub written: u32,
    pub size: u32,
    pub bytes_served: u64,
    pub running: Option<String>,
    pub detail: Option<String>,
}
