//! A terminal's health as the gateway knows it.

use std::string::String;
use std::vec::Vec;

use serde::{Deserialize, Serialize};

use super::AlertKind;

/// `schema` of [`TerminalHealth`].
pub const HEALTH_SCHEMA: &str = "pressline.health.v1";

/// What the gateway knows about one terminal. Retained upstream at
/// `pressline/v1/{site}/{terminal}/health`, and the item of the HTTP API's
/// `GET /api/v1/terminals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalHealth {
    pub schema: String,
    /// Terminal id.
    pub id: String,
    pub site: String,
    pub online: bool,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(default)]
    pub last_heartbeat: Option<String>,
    #[serde(default)]
    pub boot: Option<u32>,
    /// `MAJOR.MINOR.PATCH`.
    #[serde(default)]
    pub firmware: Option<String>,
    #[serde(default)]
    pub uptime_secs: Option<u64>,
    #[serde(default)]
    pub battery_mv: Option<u16>,
    #[serde(default)]
    pub rssi_dbm: Option<i8>,
    #[serde(default)]
    pub queue_depth: Option<u32>,
    #[serde(default)]
    pub queue_capacity: Option<u32>,
    #[serde(default)]
    pub dropped_presses: Option<u32>,
    #[serde(default)]
    pub reset_reason: Option<String>,
    /// Presses stored from this terminal since the gateway first saw it.
    pub presses_total: u64,
    /// Kinds of the alerts open for this terminal.
    #[serde(default)]
    pub open_alerts: Vec<AlertKind>,
    /// Power mode and energy counters, from a terminal that reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy: Option<TerminalEnergy>,
}

/// What a terminal spent since boot, and the battery life it implies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalEnergy {
    /// `mains` or `battery`.
    pub mode: String,
    pub upload_delay_secs: u16,
    pub heartbeat_every_secs: u16,
    #[serde(default)]
    pub awake_ms: Option<u64>,
    pub radio_on_ms: u64,
    pub wakeups: u32,
    pub joins: u32,
    /// Average current the energy model gives (µA at the board's supply);
    /// absent under a minute of uptime.
    #[serde(default)]
    pub average_ua: Option<u32>,
    /// Days a fresh pack of each kind would last at that average.
    #[serde(default)]
    pub battery_life_days: Vec<PackLife>,
}

/// Estimated life on one kind of pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackLife {
    /// `3 x AA`, `4 x D`.
    pub pack: String,
    pub days: u32,
}
