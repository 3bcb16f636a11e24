//! The versioned JSON documents the gateway publishes upstream for analytics.
//!
//! Every document carries a `schema` string; a consumer switches on it. New
//! optional fields may be added within a schema version; anything else bumps
//! it (and the `v1` topic level).

use std::format;
use std::string::String;

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
