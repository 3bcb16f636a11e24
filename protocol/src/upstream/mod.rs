//! The versioned JSON documents the gateway publishes upstream for analytics.
//!
//! Every document carries a `schema` string; a consumer switches on it. New
//! optional fields may be added within a schema version; anything else bumps
//! it (and the `v1` topic level).
//!
//! # Layout
//! - this file: presses, press batches, the gateway's status;
//! - [`alert`]: alerts and their vocabularies;
//! - [`health`]: a terminal's health;
//! - [`ota`]: rollout events and states.

mod alert;
mod health;
mod ota;

pub use alert::{Alert, AlertEvent, AlertKind, AlertState, Lifecycle, Severity, ALERT_SCHEMA};
pub use health::{PackLife, TerminalEnergy, TerminalHealth, HEALTH_SCHEMA};
pub use ota::{OtaEvent, OtaEventKind, RolloutState, RolloutTerminalState, OTA_EVENT_SCHEMA};

use std::format;
use std::string::String;
use std::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::PressId;

/// `schema` of [`UpstreamPress`].
pub const PRESS_SCHEMA: &str = "pressline.press.v1";
/// `schema` of [`GatewayStatus`].
pub const GATEWAY_STATUS_SCHEMA: &str = "pressline.gateway_status.v1";

/// The stable, globally unique id of a press: `{site}:{terminal}:{boot}:{seq}`.
/// Ids never contain `:` otherwise (see [`crate::ident`]), so it splits back.
pub fn press_id(site: &str, terminal: &str, id: PressId) -> String {
    format!("{site}:{terminal}:{}:{}", id.boot, id.seq)
}

/// One stored press, published at `pressline/v1/{site}/{terminal}/press`.
/// Delivery is at-least-once: consumers deduplicate on `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamPress {
    pub schema: String,
    pub id: String,
    pub site: String,
    pub terminal: String,
    pub boot: u32,
    pub seq: u32,
    /// `very_unhappy`, `unhappy`, `happy` or `very_happy`.
    pub button: String,
    /// 1 (very unhappy) to 4 (very happy).
    pub score: u8,
    /// When the press happened (RFC 3339, UTC), derived from the terminal's
    /// `age_ms`; absent when the terminal could not tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressed_at: Option<String>,
    /// When the gateway first stored the press (RFC 3339, UTC).
    pub received_at: String,
    /// Whether the press counts as an opinion. Repeated presses (within the
    /// terminal's response interval, or past a burst limit) are delivered
    /// but not counted.
    #[serde(default = "counted_by_default")]
    pub counted: bool,
    /// Why not: `response_interval` or `burst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_counted_reason: Option<String>,
    /// The zone the terminal is in (the gateway's `[zones]`); absent for a
    /// terminal in no zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// `schema` of [`PressBatch`].
pub const PRESS_BATCH_SCHEMA: &str = "pressline.press_batch.v1";

/// Several stored presses of one site in one message, published at
/// `pressline/v1/{site}/presses` when the gateway's `upstream.press_batch`
/// is above 1: a central broker then carries one message, not one per
/// press. Each element is a complete [`UpstreamPress`] (its own `schema`
/// included); delivery is at-least-once, consumers deduplicate on each
/// press's `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PressBatch {
    pub schema: String,
    pub site: String,
    pub presses: Vec<UpstreamPress>,
}

fn counted_by_default() -> bool {
    true
}

/// Why a press is kept but not counted as an opinion: its
/// `not_counted_reason` in [`UpstreamPress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotCounted {
    /// Within the terminal's response interval of the previous press.
    ResponseInterval,
    /// Past the terminal's burst limit.
    Burst,
}

impl NotCounted {
    /// The wire value (`response_interval`, `burst`).
    pub const fn reason(self) -> &'static str {
        match self {
            NotCounted::ResponseInterval => "response_interval",
            NotCounted::Burst => "burst",
        }
    }

    pub fn from_reason(reason: &str) -> Option<NotCounted> {
        match reason {
            "response_interval" => Some(NotCounted::ResponseInterval),
            "burst" => Some(NotCounted::Burst),
            _ => None,
        }
    }
}

/// Gateway liveness, retained at `pressline/v1/{site}/gateway/status`. The
/// gateway's MQTT last will replaces it with `state: "offline"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    pub schema: String,
    pub site: String,
    pub state: GatewayState,
    /// Gateway software version.
    pub version: String,
    /// RFC 3339 time the state was entered; absent in the last will, which is
    /// written at connect time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The site's IANA time zone (`Europe/London`), in which its days,
    /// hours and weekdays are reckoned; absent when only a fixed UTC offset
    /// is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The site's zones (id and display name); absent in the last will.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneName>,
}

crate::vocabulary! {
    /// Whether a gateway is up.
    pub enum GatewayState {
        Online = "online",
        /// Said by the gateway as it stops, or by its last will.
        Offline = "offline",
    }
}

/// A zone's id and display name, in [`GatewayStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneName {
    pub id: String,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn press_ids_are_stable() {
        assert_eq!(
            press_id("arena", "t-1", PressId { boot: 2, seq: 30 }),
            "arena:t-1:2:30"
        );
    }
}
