//! What a queued message is: one of the gateways' upstream documents, read
//! into the row it becomes, or a rejection with the reason. Pure: no I/O.
//!
//! The routing key is the MQTT topic with `/` as `.` (RabbitMQ's MQTT
//! plugin publishes to `amq.topic`); the document's own `schema` decides
//! what it is, and its `site` must match the routing key's.

use pressline_protocol::upstream::{
    Alert, GatewayStatus, OtaEvent, TerminalHealth, UpstreamPress, ALERT_SCHEMA,
    GATEWAY_STATUS_SCHEMA, HEALTH_SCHEMA, OTA_EVENT_SCHEMA, PRESS_SCHEMA,
};
use serde::Deserialize;

/// A message, read.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Press(UpstreamPress),
    Status(GatewayStatus),
    Health(TerminalHealth, serde_json::Value),
    Alert(Alert, serde_json::Value),
    Ota(OtaEvent, serde_json::Value),
    /// Kept in `rejected_messages` with the reason.
    Rejected {
        reason: String,
    },
}

impl Document {
    /// The table a document goes to, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Document::Press(_) => "press",
            Document::Status(_) => "gateway_status",
            Document::Health(..) => "health",
            Document::Alert(..) => "alert",
            Document::Ota(..) => "ota",
            Document::Rejected { .. } => "rejected",
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    schema: String,
    site: String,
}

/// Reads one message body delivered with `routing_key`.
pub fn read(routing_key: &str, body: &[u8]) -> Document {
    match read_checked(routing_key, body) {
        Ok(d) => d,
        Err(reason) => Document::Rejected { reason },
    }
}

fn read_checked(routing_key: &str, body: &[u8]) -> Result<Document, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let envelope = Envelope::deserialize(&value).map_err(|e| format!("no schema and site: {e}"))?;
    let mut levels = routing_key.split('.');
    let (prefix, version, site) = (levels.next(), levels.next(), levels.next());
    if prefix != Some("pressline") || version != Some("v1") {
        return Err(format!("routing key {routing_key:?} is not pressline.v1.*"));
    }
    if site != Some(envelope.site.as_str()) {
        return Err(format!(
            "document for site {:?} on routing key {routing_key:?}",
            envelope.site
        ));
    }
    fn typed<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<T, String> {
        T::deserialize(value).map_err(|e| {
            format!(
                "bad {}: {e}",
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("document")
            )
        })
    }
    Ok(match envelope.schema.as_str() {
        PRESS_SCHEMA => {
            let press: UpstreamPress = typed(&value)?;
            if !(1..=4).contains(&press.score) {
                return Err(format!("score {} outside 1-4", press.score));
            }
            let times = [
                ("received_at", Some(&press.received_at)),
                ("pressed_at", press.pressed_at.as_ref()),
            ];
            for (field, at) in times {
                if let Some(at) = at {
                    if parse_time(at).is_none() {
                        return Err(format!("{field} {at:?} is not an RFC 3339 time"));
                    }
                }
            }
            Document::Press(press)
        }
        GATEWAY_STATUS_SCHEMA => Document::Status(typed(&value)?),
        HEALTH_SCHEMA => Document::Health(typed(&value)?, value),
        ALERT_SCHEMA => Document::Alert(typed(&value)?, value),
        OTA_EVENT_SCHEMA => Document::Ota(typed(&value)?, value),
        other => return Err(format!("unknown schema {other:?}")),
    })
}

/// Unix ms of an RFC 3339 time, if it is one.
pub fn unix_ms(rfc3339: &str) -> Option<i64> {
    i64::try_from(parse_time(rfc3339)?.unix_timestamp_nanos() / 1_000_000).ok()
}

/// An RFC 3339 time, if it is one.
pub fn parse_time(rfc3339: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRESS: &str = r#"{"schema":"pressline.press.v1","id":"arena:n7:3:1412","site":"arena",
        "terminal":"n7","boot":3,"seq":1412,"button":"unhappy","score":2,
        "pressed_at":"2026-11-22T14:03:12.481Z","received_at":"2026-11-22T14:03:12.530Z",
        "zone":"food","future_field":1}"#;

    #[test]
    fn a_press_is_read_with_unknown_fields_ignored() {
        match read("pressline.v1.arena.n7.press", PRESS.as_bytes()) {
            Document::Press(p) => {
                assert_eq!(p.id, "arena:n7:3:1412");
                assert_eq!(p.zone.as_deref(), Some("food"));
                assert!(p.counted);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_cannot_be_read_is_rejected_with_the_reason() {
        let reason = |key: &str, body: &str| match read(key, body.as_bytes()) {
            Document::Rejected { reason } => reason,
            other => panic!("{other:?}"),
        };
        assert!(reason("pressline.v1.arena.n7.press", "{").starts_with("not JSON"));
        assert!(reason("pressline.v1.other.n7.press", PRESS).contains("site \"arena\""));
        assert!(reason("elsewhere.v1.arena.n7.press", PRESS).contains("not pressline.v1"));
        let v9 = PRESS.replace("pressline.press.v1", "pressline.press.v9");
        assert!(reason("pressline.v1.arena.n7.press", &v9).contains("unknown schema"));
        let bad = PRESS.replace("\"score\":2", "\"score\":7");
        assert!(reason("pressline.v1.arena.n7.press", &bad).contains("outside 1-4"));
        let bad = PRESS.replace("2026-11-22T14:03:12.530Z", "2026-13-45T99:03:12.530Z");
        assert!(reason("pressline.v1.arena.n7.press", &bad).contains("received_at"));
        let bad = PRESS.replace("\"seq\":1412", "\"seq\":\"x\"");
        assert!(reason("pressline.v1.arena.n7.press", &bad).starts_with("bad UpstreamPress"));
    }

    #[test]
    fn status_health_alert_and_ota_documents_are_read() {
        let status = r#"{"schema":"pressline.gateway_status.v1","site":"arena","state":"online",
            "version":"0.1.0","since":"2026-11-22T14:00:00.000Z","time_zone":"Europe/London",
            "zones":[{"id":"food","name":"Food court"}]}"#;
        assert!(
            matches!(read("pressline.v1.arena.gateway.status", status.as_bytes()),
            Document::Status(s) if s.time_zone.as_deref() == Some("Europe/London") && s.zones.len() == 1)
        );
        let alert = r#"{"schema":"pressline.alert.v1","id":6,"site":"arena","terminal":"",
            "kind":"zone_unhappy","severity":"critical","state":"raised",
            "raised_at":"2026-11-22T11:00:00.000Z","cleared_at":null,"detail":"x","zone":"food"}"#;
        assert_eq!(
            read("pressline.v1.arena.alert", alert.as_bytes()).kind(),
            "alert"
        );
        let ota = r#"{"schema":"pressline.ota.v1","site":"arena","rollout":3,"version":"1.2.0",
            "event":"started","at":"2026-11-22T22:04:10.120Z"}"#;
        assert_eq!(read("pressline.v1.arena.ota", ota.as_bytes()).kind(), "ota");
    }
}
