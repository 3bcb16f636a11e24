//! What a queued message is: one of the gateways' upstream documents, read
//! into the row it becomes, or a rejection with the reason. Pure: no I/O.
//!
//! The routing key is the MQTT topic with `/` as `.` (RabbitMQ's MQTT
//! plugin publishes to `amq.topic`); the document's own `schema` decides
//! what it is, and its `site` must match the routing key's.
//!
//! Every value that becomes a key is checked before the database sees it:
//! site, terminal and zone ids as the protocol defines them (an unbounded
//! one would make PostgreSQL refuse the whole batch it is in), and a
//! press's `id` as the function of what it says (`{site}:{terminal}:{boot}:{seq}`),
//! so that no gateway can claim another site's press ids and have the real
//! presses dropped as duplicates.

use pressline_protocol::ident::validate_id;
use pressline_protocol::upstream::press_id;
use pressline_protocol::upstream::{
    Alert, GatewayStatus, OtaEvent, PressBatch, TerminalHealth, UpstreamPress, ALERT_SCHEMA,
    GATEWAY_STATUS_SCHEMA, HEALTH_SCHEMA, OTA_EVENT_SCHEMA, PRESS_BATCH_SCHEMA, PRESS_SCHEMA,
};
use pressline_protocol::{Button, PressId};
use serde::Deserialize;

/// Longest free-text value that becomes part of a key (OTA event and
/// state names, a press's not-counted reason).
const MAX_NAME_LEN: usize = 64;

/// A message, read.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Press(UpstreamPress),
    /// A `pressline.press_batch.v1` message: several presses of one site.
    Presses(Vec<UpstreamPress>),
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
    /// Rows it becomes (what a transaction's size is counted in).
    pub fn rows(&self) -> usize {
        match self {
            Document::Presses(presses) => presses.len().max(1),
            _ => 1,
        }
    }

    /// What kind of message it was, for metrics.
    pub fn kind(&self) -> DocumentKind {
        match self {
            Document::Press(_) => DocumentKind::Press,
            Document::Presses(_) => DocumentKind::PressBatch,
            Document::Status(_) => DocumentKind::GatewayStatus,
            Document::Health(..) => DocumentKind::Health,
            Document::Alert(..) => DocumentKind::Alert,
            Document::Ota(..) => DocumentKind::Ota,
            Document::Rejected { .. } => DocumentKind::Rejected,
        }
    }
}

/// The kinds of message the consumer counts (`messages_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    Press,
    PressBatch,
    GatewayStatus,
    Health,
    Alert,
    Ota,
    Rejected,
}

impl DocumentKind {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            DocumentKind::Press => "press",
            DocumentKind::PressBatch => "press_batch",
            DocumentKind::GatewayStatus => "gateway_status",
            DocumentKind::Health => "health",
            DocumentKind::Alert => "alert",
            DocumentKind::Ota => "ota",
            DocumentKind::Rejected => "rejected",
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
    // The envelope first, straight from the bytes: presses (most of the
    // traffic) then go straight into their type, with no JSON tree between.
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => format!("no schema and site: {e}"),
        _ => format!("not JSON: {e}"),
    })?;
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
    check_id("site", &envelope.site)?;
    fn name_of<T>() -> &'static str {
        std::any::type_name::<T>()
            .rsplit("::")
            .next()
            .unwrap_or("document")
    }
    fn typed<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
        serde_json::from_slice(body).map_err(|e| format!("bad {}: {e}", name_of::<T>()))
    }
    /// The document, and the JSON it came as (kept whole in `document`
    /// columns).
    fn typed_and_value<T: serde::de::DeserializeOwned>(
        body: &[u8],
    ) -> Result<(T, serde_json::Value), String> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let typed = T::deserialize(&value).map_err(|e| format!("bad {}: {e}", name_of::<T>()))?;
        Ok((typed, value))
    }
    Ok(match envelope.schema.as_str() {
        PRESS_SCHEMA => {
            let press: UpstreamPress = typed(body)?;
            check_press(&press)?;
            // `pressline.v1.{site}.{terminal}.press`
            if levels.next() != Some(press.terminal.as_str()) {
                return Err(format!(
                    "press of terminal {:?} on routing key {routing_key:?}",
                    press.terminal
                ));
            }
            Document::Press(press)
        }
        PRESS_BATCH_SCHEMA => {
            let batch: PressBatch = typed(body)?;
            for (i, press) in batch.presses.iter().enumerate() {
                if press.site != batch.site {
                    return Err(format!(
                        "presses[{i}]: site {:?} in a batch of site {:?}",
                        press.site, batch.site
                    ));
                }
                check_press(press).map_err(|reason| format!("presses[{i}]: {reason}"))?;
            }
            Document::Presses(batch.presses)
        }
        GATEWAY_STATUS_SCHEMA => {
            let status: GatewayStatus = typed(body)?;
            check_id("site", &status.site)?;
            for zone in &status.zones {
                check_id("zone", &zone.id)?;
            }
            Document::Status(status)
        }
        HEALTH_SCHEMA => {
            let (health, value) = typed_and_value::<TerminalHealth>(body)?;
            check_id("terminal", &health.id)?;
            Document::Health(health, value)
        }
        ALERT_SCHEMA => {
            let (alert, value) = typed_and_value::<Alert>(body)?;
            // A zone alert has no terminal.
            if !alert.terminal.is_empty() {
                check_id("terminal", &alert.terminal)?;
            }
            if let Some(zone) = &alert.zone {
                check_id("zone", zone)?;
            }
            Document::Alert(alert, value)
        }
        OTA_EVENT_SCHEMA => {
            let (ota, value) = typed_and_value::<OtaEvent>(body)?;
            if let Some(terminal) = &ota.terminal {
                check_id("terminal", terminal)?;
            }
            check_name("event", ota.event.as_str())?;
            if let Some(state) = &ota.state {
                check_name("state", state.as_str())?;
            }
            Document::Ota(ota, value)
        }
        other => return Err(format!("unknown schema {other:?}")),
    })
}

/// What a press must be to become a row: the database would refuse the
/// rest, or worse, take it.
fn check_press(press: &UpstreamPress) -> Result<(), String> {
    if !(1..=4).contains(&press.score) {
        return Err(format!("score {} outside 1-4", press.score));
    }
    check_id("site", &press.site)?;
    check_id("terminal", &press.terminal)?;
    if let Some(zone) = &press.zone {
        check_id("zone", zone)?;
    }
    let id = PressId {
        boot: press.boot,
        seq: press.seq,
    };
    let expected = press_id(&press.site, &press.terminal, id);
    if press.id != expected {
        return Err(format!(
            "id {:?} is not {expected:?}, the id of what the press says",
            cut(&press.id)
        ));
    }
    let named = Button::from_score(press.score).map(Button::name);
    if named != Some(press.button.as_str()) {
        return Err(format!(
            "button {:?} with score {}",
            cut(&press.button),
            press.score
        ));
    }
    if let Some(reason) = &press.not_counted_reason {
        check_name("not_counted_reason", reason)?;
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
    Ok(())
}

/// An id (site, terminal, zone) as the protocol defines it.
fn check_id(field: &str, value: &str) -> Result<(), String> {
    validate_id(value).map_err(|e| format!("{field} {:?}: {e}", cut(value)))
}

/// A name that becomes part of a key: at most [`MAX_NAME_LEN`] bytes.
fn check_name(field: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_NAME_LEN {
        return Err(format!(
            "{field} {:?}… longer than {MAX_NAME_LEN} bytes",
            cut(value)
        ));
    }
    Ok(())
}

/// At most 64 bytes of a value, for a rejection's reason.
fn cut(value: &str) -> &str {
    let mut end = value.len().min(64);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
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
    fn a_press_is_what_it_says_and_where_it_was_sent() {
        let reason = |key: &str, body: &str| match read(key, body.as_bytes()) {
            Document::Rejected { reason } => reason,
            other => panic!("{other:?}"),
        };
        let key = "pressline.v1.arena.n7.press";
        // Another site's id, or another press's: claimed, never stored.
        let claimed = PRESS.replace("arena:n7:3:1412", "dome:n7:3:1412");
        assert!(reason(key, &claimed).contains("is not \"arena:n7:3:1412\""));
        let claimed = PRESS.replace("\"seq\":1412", "\"seq\":1413");
        assert!(reason(key, &claimed).contains("the id of what the press says"));
        assert!(reason("pressline.v1.arena.n8.press", PRESS).contains("terminal \"n7\""));
        let mismatched = PRESS.replace("\"button\":\"unhappy\"", "\"button\":\"happy\"");
        assert!(reason(key, &mismatched).contains("button \"happy\" with score 2"));
        let long = "n".repeat(40);
        let too_long = PRESS.replace("n7", &long);
        let key_long = format!("pressline.v1.arena.{long}.press");
        assert!(reason(&key_long, &too_long).starts_with("terminal \"nnnn"));
        let zone = PRESS.replace("\"food\"", "\"food court\"");
        assert!(reason(key, &zone).starts_with("zone \"food court\""));
    }

    #[test]
    fn a_press_batch_is_read_press_by_press_and_refused_whole_with_the_bad_one_named() {
        let press = |seq: u32| PRESS.replace("1412", &seq.to_string());
        let batch = format!(
            r#"{{"schema":"pressline.press_batch.v1","site":"arena","presses":[{},{}]}}"#,
            press(1),
            press(2)
        );
        match read("pressline.v1.arena.presses", batch.as_bytes()) {
            Document::Presses(p) => {
                let ids: Vec<&str> = p.iter().map(|p| p.id.as_str()).collect();
                assert_eq!(ids, ["arena:n7:3:1", "arena:n7:3:2"]);
            }
            other => panic!("{other:?}"),
        }
        let reason = |body: String| match read("pressline.v1.arena.presses", body.as_bytes()) {
            Document::Rejected { reason } => reason,
            other => panic!("{other:?}"),
        };
        let bad = batch.replacen("\"score\":2", "\"score\":0", 2);
        let bad = bad.replacen("\"score\":0", "\"score\":2", 1);
        assert_eq!(reason(bad), "presses[1]: score 0 outside 1-4");
        let elsewhere = batch.replacen("\"site\":\"arena\"", "\"site\":\"dome\"", 2);
        let elsewhere = elsewhere.replacen("\"site\":\"dome\"", "\"site\":\"arena\"", 1);
        assert!(reason(elsewhere).starts_with("presses[0]: site \"dome\""));
        assert!(
            reason(r#"{"schema":"pressline.press_batch.v1","site":"arena"}"#.into())
                .starts_with("bad PressBatch")
        );
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
        let long_zone = status.replace("\"food\"", &format!("\"{}\"", "f".repeat(3000)));
        assert!(matches!(
            read("pressline.v1.arena.gateway.status", long_zone.as_bytes()),
            Document::Rejected { reason } if reason.starts_with("zone \"ffff")
        ));
        let alert = r#"{"schema":"pressline.alert.v1","id":6,"site":"arena","terminal":"",
            "kind":"zone_unhappy","severity":"critical","state":"raised",
            "raised_at":"2026-11-22T11:00:00.000Z","cleared_at":null,"detail":"x","zone":"food"}"#;
        assert_eq!(
            read("pressline.v1.arena.alert", alert.as_bytes()).kind(),
            DocumentKind::Alert
        );
        let ota = r#"{"schema":"pressline.ota.v1","site":"arena","rollout":3,"version":"1.2.0",
            "event":"started","at":"2026-11-22T22:04:10.120Z"}"#;
        assert_eq!(
            read("pressline.v1.arena.ota", ota.as_bytes()).kind(),
            DocumentKind::Ota
        );
    }
}
