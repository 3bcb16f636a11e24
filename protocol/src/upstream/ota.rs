//! Firmware rollouts: the events published upstream, and the states a
//! rollout and each of its terminals go through (also in the HTTP API).

use std::string::String;

use serde::{Deserialize, Serialize};

/// `schema` of [`OtaEvent`].
pub const OTA_EVENT_SCHEMA: &str = "pressline.ota.v1";

crate::vocabulary! {
    /// What happened in a rollout.
    pub enum OtaEventKind {
        Started = "started",
        /// A wave (0 is the canary) began.
        WaveStarted = "wave_started",
        /// One terminal moved on (see [`OtaEvent::state`]).
        Terminal = "terminal",
        Paused = "paused",
        Resumed = "resumed",
        /// Stopped by itself: too many failures.
        Halted = "halted",
        Completed = "completed",
        Aborted = "aborted",
        /// Failed terminals were offered the release again.
        Retry = "retry",
    }
}

/// One rollout event, on `pressline/v1/{site}/ota`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtaEvent {
    pub schema: String,
    pub site: String,
    pub rollout: u32,
    /// The release being rolled out.
    pub version: String,
    pub event: OtaEventKind,
    /// For `terminal` events: which terminal and its new state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RolloutTerminalState>,
    /// Why (failures, halts), for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Wave number for `wave_started` (0 is the canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<u32>,
    /// RFC 3339 UTC.
    pub at: String,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Running,
    Paused,
    /// Stopped by itself: too many failures (see `halt_reason`).
    Halted,
    Completed,
    Aborted,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Halted => "halted",
            RolloutState::Completed => "completed",
            RolloutState::Aborted => "aborted",
        }
    }

    /// Still holds the site's rollout slot.
    pub fn is_active(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Paused)
    }

    /// Over, one way or another.
    pub fn is_over(self) -> bool {
        !self.is_active()
    }
}

/// One terminal's part in a rollout. Ordered by its word, so tallies keyed
/// by state read alphabetically, as they always have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutTerminalState {
    /// Not offered yet (a later stage, the concurrency limit, or the window).
    Pending,
    Offered,
    Downloading,
    Verifying,
    Rebooting,
    Confirmed,
    Failed,
    RolledBack,
}

impl RolloutTerminalState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutTerminalState::Pending => "pending",
            RolloutTerminalState::Offered => "offered",
            RolloutTerminalState::Downloading => "downloading",
            RolloutTerminalState::Verifying => "verifying",
            RolloutTerminalState::Rebooting => "rebooting",
            RolloutTerminalState::Confirmed => "confirmed",
            RolloutTerminalState::Failed => "failed",
            RolloutTerminalState::RolledBack => "rolled_back",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            RolloutTerminalState::Confirmed
                | RolloutTerminalState::Failed
                | RolloutTerminalState::RolledBack
        )
    }

    pub fn is_failure(self) -> bool {
        matches!(
            self,
            RolloutTerminalState::Failed | RolloutTerminalState::RolledBack
        )
    }
}

impl Ord for RolloutTerminalState {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for RolloutTerminalState {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_event_is_written_as_before() {
        let text = r#"{"schema":"pressline.ota.v1","site":"arena","rollout":3,"version":"1.2.0","event":"terminal","terminal":"t-1","state":"rolled_back","detail":"trial boot failed","at":"2026-11-01T12:00:00.000Z"}"#;
        let event: OtaEvent = serde_json::from_str(text).unwrap();
        assert_eq!(event.event, OtaEventKind::Terminal);
        assert_eq!(event.state, Some(RolloutTerminalState::RolledBack));
        assert_eq!(serde_json::to_string(&event).unwrap(), text);
    }
}
