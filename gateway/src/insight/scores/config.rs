//! `[scores]` and `[zones.ID]` in the gateway's configuration.

use serde::{Deserialize, Serialize};

/// `[scores]` in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoresConfig {
    /// The site's IANA time zone (`Europe/London`), for "today" and the
    /// hour table, daylight saving included. Overrides `utc_offset_minutes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The site's fixed offset from UTC (minutes), when no `time_zone`.
    pub utc_offset_minutes: i32,
    /// Window the unhappiness rule looks at.
    pub alert_window_secs: u64,
    /// Default unhappy share (percent) that raises a zone alert.
    pub unhappy_percent: u8,
    /// Default fewest counted presses in the window for a zone alert.
    pub min_presses: u32,
    /// The alert clears below `unhappy_percent - clear_margin_percent`.
    pub clear_margin_percent: u8,
    /// Praise: a zone where at least this share (percent) of at least
    /// `min_presses` counted presses in the window are happy or very happy
    /// raises an informational `zone_happy` alert (it clears
    /// `clear_margin_percent` below). 0: off.
    pub praise_percent: u8,
}

impl Default for ScoresConfig {
    fn default() -> Self {
        ScoresConfig {
            time_zone: None,
            utc_offset_minutes: 0,
            alert_window_secs: 300,
            unhappy_percent: 40,
            min_presses: 10,
            clear_margin_percent: 10,
            praise_percent: 0,
        }
    }
}

/// A zone (`[zones.ID]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Display name, e.g. "North stand food court".
    pub name: String,
    pub terminals: Vec<String>,
    /// Overrides `[scores] unhappy_percent` for this zone.
    #[serde(default)]
    pub unhappy_percent: Option<u8>,
    /// Overrides `[scores] min_presses` for this zone.
    #[serde(default)]
    pub min_presses: Option<u32>,
}
