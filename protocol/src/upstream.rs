//! The versioned JSON documents the gateway publishes upstream for analytics.
//!
//! Every document carries a `schema` string; a consumer switches on it. New
//! optional fields may be added within a schema version; anything else bumps
//! it (and the `v1` topic level).

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
    /// `online` or `offline`.
    pub state: String,
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

/// `schema` of [`TerminalHealth`].
pub const HEALTH_SCHEMA: &str = "pressline.health.v1";
/// `schema` of [`Alert`].
pub const ALERT_SCHEMA: &str = "pressline.alert.v1";

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
    pub open_alerts: Vec<String>,
}

/// An alert (terminal health or zone), published at `pressline/v1/{site}/alert`
/// on every lifecycle transition, and served by `GET /api/v1/alerts`.
///
/// `state` is the condition (`raised` while it holds, `cleared` once it
/// recovered), as in the first version of this document; `lifecycle`,
/// `revision` and the fields after them were added without changing the
/// schema name: every earlier field keeps its meaning, and readers that do
/// not know the new ones can ignore them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub schema: String,
    /// Unique per site; every event of one alert shares it.
    pub id: u64,
    pub site: String,
    pub terminal: String,
    /// `offline`, `low_battery`, `weak_wifi`, `stuck_button`,
    /// `queue_filling`, `clock_skew`, or `zone_unhappy` / `zone_happy`
    /// (praise) for a zone.
    pub kind: String,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    /// `raised` or `cleared`: whether the condition still holds.
    pub state: String,
    pub raised_at: String,
    /// When the condition recovered (absent while it holds).
    #[serde(default)]
    pub cleared_at: Option<String>,
    /// Human-readable specifics ("battery 3310 mV < 3500 mV").
    pub detail: String,
    /// The zone, for zone alerts (`zone_unhappy`); `terminal` is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// `raised` → `acknowledged` (someone is on it) → `recovered` (the
    /// condition cleared) → `closed` ([`lifecycle`] has the rules).
    #[serde(default)]
    pub lifecycle: String,
    /// Grows by one with every transition: a reader keeps the document
    /// with the highest revision, and `{site}:{id}:{revision}` identifies a
    /// transition (the notifications' idempotency key).
    #[serde(default)]
    pub revision: u32,
    /// The transition this document announces: `raised`, `escalated`,
    /// `acknowledged`, `recovered`, `reopened` or `closed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<String>,
    /// Who acknowledged (a name typed on the dashboard, `fleet --by`, or the
    /// channel a signed link was sent to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_note: Option<String>,
    /// When nobody had acknowledged in time and the escalation channels
    /// were told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    /// How often the condition came back while the alert was recovered but
    /// not yet closed (a flapping condition stays one alert).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reopened: u32,
    /// Notification channels told about this alert.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notified: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Alert lifecycle states and transition names (see [`Alert::lifecycle`]).
pub mod lifecycle {
    pub const RAISED: &str = "raised";
    pub const ACKNOWLEDGED: &str = "acknowledged";
    pub const RECOVERED: &str = "recovered";
    pub const CLOSED: &str = "closed";
    /// Transitions that are not states.
    pub const ESCALATED: &str = "escalated";
    pub const REOPENED: &str = "reopened";
}

impl Alert {
    /// Still calling for someone (raised or acknowledged, condition holding).
    pub fn is_open(&self) -> bool {
        self.state == "raised"
    }

    /// The notifications' idempotency key of the alert's latest transition.
    pub fn transition_key(&self) -> String {
        format!("{}:{}:{}", self.site, self.id, self.revision)
    }
}

/// `schema` of [`OtaEvent`].
pub const OTA_EVENT_SCHEMA: &str = "pressline.ota.v1";

/// One rollout event, on `pressline/v1/{site}/ota`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtaEvent {
    pub schema: String,
    pub site: String,
    pub rollout: u32,
    /// The release being rolled out.
    pub version: String,
    /// `started`, `wave_started`, `terminal`, `paused`, `resumed`,
    /// `halted`, `completed`, `aborted`.
    pub event: String,
    /// For `terminal` events: which terminal and its new state (`offered`,
    /// `downloading`, `verifying`, `rebooting`, `confirmed`, `failed`,
    /// `rolled_back`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why (failures, halts), for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Wave number for `wave_started` (0 is the canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<u32>,
    /// RFC 3339 UTC.
    pub at: String,
}
