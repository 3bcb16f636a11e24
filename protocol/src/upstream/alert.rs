//! Alerts: the document, and its vocabularies (kind, severity, condition,
//! lifecycle, transition) as types that serialize to the documented words.

use std::format;
use std::string::String;
use std::vec::Vec;

use serde::{Deserialize, Serialize};

/// `schema` of [`Alert`].
pub const ALERT_SCHEMA: &str = "pressline.alert.v1";

crate::vocabulary! {
    /// What an alert is about.
    pub enum AlertKind {
        /// Not heard from for `offline_after_secs`.
        Offline = "offline",
        LowBattery = "low_battery",
        WeakWifi = "weak_wifi",
        /// Presses faster than a person can press, or one button only.
        StuckButton = "stuck_button",
        /// The terminal's press queue is filling up.
        QueueFilling = "queue_filling",
        ClockSkew = "clock_skew",
        /// A zone's share of unhappy presses is high.
        ZoneUnhappy = "zone_unhappy",
        /// A zone's visitors are unusually happy (praise).
        ZoneHappy = "zone_happy",
    }
}

impl AlertKind {
    /// How urgent an alert of this kind is: a terminal gone and a zone
    /// turning unhappy need someone now, praise needs no one.
    pub fn severity(&self) -> Severity {
        match self {
            AlertKind::Offline | AlertKind::ZoneUnhappy => Severity::Critical,
            AlertKind::ZoneHappy => Severity::Info,
            _ => Severity::Warning,
        }
    }

    /// About a zone rather than one terminal.
    pub fn is_zone(&self) -> bool {
        matches!(self, AlertKind::ZoneUnhappy | AlertKind::ZoneHappy)
    }
}

crate::vocabulary! {
    /// How urgent an alert is.
    pub enum Severity {
        Critical = "critical",
        Warning = "warning",
        Info = "info",
    }
}

crate::vocabulary! {
    /// Whether the alert's condition holds.
    pub enum AlertState {
        Raised = "raised",
        Cleared = "cleared",
    }
}

crate::vocabulary! {
    /// Where an alert stands with the people handling it.
    pub enum Lifecycle {
        Raised = "raised",
        /// Someone is on it.
        Acknowledged = "acknowledged",
        /// The condition cleared; closed after the close delay unless it
        /// comes back.
        Recovered = "recovered",
        Closed = "closed",
    }
}

crate::vocabulary! {
    /// The transition an alert document announces.
    pub enum AlertEvent {
        Raised = "raised",
        /// Nobody acknowledged in time: the escalation channels were told.
        Escalated = "escalated",
        Acknowledged = "acknowledged",
        Recovered = "recovered",
        /// The condition came back before the alert closed.
        Reopened = "reopened",
        Closed = "closed",
    }
}

impl Default for AlertKind {
    fn default() -> Self {
        AlertKind::Offline
    }
}

impl Default for Severity {
    fn default() -> Self {
        Severity::Warning
    }
}

impl Default for AlertState {
    fn default() -> Self {
        AlertState::Raised
    }
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
    pub kind: AlertKind,
    pub severity: Severity,
    /// Whether the condition still holds.
    pub state: AlertState,
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
    /// condition cleared) → `closed`. An empty string on the wire (and
    /// `None` here) marks an alert written before the lifecycle existed.
    #[serde(default, with = "lifecycle_text")]
    pub lifecycle: Option<Lifecycle>,
    /// Grows by one with every transition: a reader keeps the document
    /// with the highest revision, and `{site}:{id}:{revision}` identifies a
    /// transition (the notifications' idempotency key).
    #[serde(default)]
    pub revision: u32,
    /// The transition this document announces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<AlertEvent>,
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

impl Alert {
    /// Still calling for someone (the condition holds).
    pub fn is_open(&self) -> bool {
        self.state == AlertState::Raised
    }

    /// The notifications' idempotency key of the alert's latest transition.
    pub fn transition_key(&self) -> String {
        format!("{}:{}:{}", self.site, self.id, self.revision)
    }
}

/// `lifecycle` as the text it has always been: the word, or `""` for an
/// alert from before the lifecycle.
mod lifecycle_text {
    use super::Lifecycle;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::string::String;

    pub fn serialize<S: Serializer>(value: &Option<Lifecycle>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.as_ref().map_or("", Lifecycle::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Lifecycle>, D::Error> {
        let text = String::deserialize(d)?;
        Ok((!text.is_empty()).then(|| Lifecycle::parse(&text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document as gateways have always published it, field for field.
    const PUBLISHED: &str = r#"{"schema":"pressline.alert.v1","id":7,"site":"arena","terminal":"t-1","kind":"low_battery","severity":"warning","state":"cleared","raised_at":"2026-11-01T12:00:00.000Z","cleared_at":"2026-11-01T12:05:00.000Z","detail":"battery 3310 mV < 3500 mV","lifecycle":"recovered","revision":3,"event":"recovered","acknowledged_at":"2026-11-01T12:01:00.000Z","acknowledged_by":"Anna","notified":["ops"]}"#;

    #[test]
    fn the_wire_format_is_unchanged_word_for_word() {
        let alert: Alert = serde_json::from_str(PUBLISHED).unwrap();
        assert_eq!(alert.kind, AlertKind::LowBattery);
        assert_eq!(alert.severity, Severity::Warning);
        assert_eq!(alert.state, AlertState::Cleared);
        assert_eq!(alert.lifecycle, Some(Lifecycle::Recovered));
        assert_eq!(alert.event, Some(AlertEvent::Recovered));
        assert_eq!(serde_json::to_string(&alert).unwrap(), PUBLISHED);
    }

    #[test]
    fn an_alert_from_before_the_lifecycle_reads_and_writes_as_it_was() {
        let old = r#"{"schema":"pressline.alert.v1","id":1,"site":"arena","terminal":"t-1","kind":"stuck_button","severity":"warning","state":"raised","raised_at":"2026-01-01T00:00:00.000Z","cleared_at":null,"detail":"d"}"#;
        let alert: Alert = serde_json::from_str(old).unwrap();
        assert_eq!(alert.lifecycle, None);
        assert!(alert.is_open());
        let written = serde_json::to_string(&alert).unwrap();
        assert!(written.contains(r#""lifecycle":"""#), "{written}");
    }

    #[test]
    fn a_newer_gateways_alert_kind_is_read_not_refused() {
        let newer = PUBLISHED.replace("low_battery", "door_open");
        let alert: Alert = serde_json::from_str(&newer).unwrap();
        assert_eq!(alert.kind, AlertKind::Other("door_open".into()));
        assert_eq!(serde_json::to_string(&alert).unwrap(), newer);
    }

    #[test]
    fn severity_follows_the_kind() {
        assert_eq!(AlertKind::Offline.severity(), Severity::Critical);
        assert_eq!(AlertKind::ZoneUnhappy.severity(), Severity::Critical);
        assert_eq!(AlertKind::ZoneHappy.severity(), Severity::Info);
        assert_eq!(AlertKind::LowBattery.severity(), Severity::Warning);
        assert_eq!(AlertKind::Other("x".into()).severity(), Severity::Warning);
    }
}
