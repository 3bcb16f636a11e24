//! JSON presses and acks, so third-party MQTT buttons and scripts
//! (`mosquitto_pub`) can act as terminals.
//!
//! Press (topic `pressline/v1/term/{t}/press/json`):
//! `{"seq": 17, "button": "happy", "boot": 0, "age_ms": 1200, "terminal": "t"}`
//! - `seq` (required): sequence number, unique per terminal and boot.
//! - `button` (required): a name (`very_unhappy`, `unhappy`, `happy`,
//!   `very_happy`) or a score 1–4.
//! - `boot` (optional, default 0): boot counter; scripts without one just
//!   keep increasing `seq`.
//! - `age_ms` (optional): how long ago the press happened.
//! - `terminal` (optional): must equal the topic's terminal id if present.
//!
//! Ack (topic `pressline/v1/term/{t}/ack/json`):
//! `{"boot": 0, "first_seq": 17, "last_seq": 17}`
//!
//! Unknown fields are ignored so devices may add their own.

use std::string::String;
use std::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::{Ack, Button, DecodeError, Press, PressId, MAX_PRESS_PAYLOAD};

#[derive(Deserialize)]
struct JsonPressIn {
    terminal: Option<String>,
    #[serde(default)]
    boot: u32,
    seq: u32,
    button: JsonButton,
    age_ms: Option<u32>,
    /// Hex press MAC (16 characters), required from registered terminals.
    mac: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonButton {
    Score(i64),
    Name(String),
}

#[derive(Serialize)]
struct JsonPressOut<'a> {
    terminal: &'a str,
    boot: u32,
    seq: u32,
    button: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    age_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

fn parse_mac(hex: &str) -> Option<[u8; crate::auth::MAC_LEN]> {
    if hex.len() != 2 * crate::auth::MAC_LEN || !hex.is_ascii() {
        return None;
    }
    let mut mac = [0u8; crate::auth::MAC_LEN];
    for (i, byte) in mac.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(mac)
}

/// Decodes a JSON press published by terminal `topic_terminal`.
pub fn decode_press(topic_terminal: &str, payload: &[u8]) -> Result<Press, DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::Empty);
    }
    if payload.len() > MAX_PRESS_PAYLOAD {
        return Err(DecodeError::Oversized(payload.len()));
    }
    let raw: JsonPressIn = serde_json::from_slice(payload).map_err(|_| DecodeError::Malformed)?;
    if raw.terminal.as_deref().is_some_and(|t| t != topic_terminal) {
        return Err(DecodeError::TerminalMismatch);
    }
    let button = match raw.button {
        JsonButton::Score(s) => u8::try_from(s).ok().and_then(Button::from_score),
        JsonButton::Name(n) => Button::from_name(&n),
    }
    .ok_or(DecodeError::ButtonOutOfRange)?;
    let mac = match raw.mac.as_deref() {
        Some(hex) => Some(parse_mac(hex).ok_or(DecodeError::Malformed)?),
        None => None,
    };
    Ok(Press {
        id: PressId {
            boot: raw.boot,
            seq: raw.seq,
        },
        button,
        age_ms: raw.age_ms,
        mac,
    })
}

/// Encodes a press as JSON (what a third-party terminal would send).
pub fn encode_press(terminal: &str, press: &Press) -> Vec<u8> {
    serde_json::to_vec(&JsonPressOut {
        terminal,
        boot: press.id.boot,
        seq: press.id.seq,
        button: press.button.name(),
        age_ms: press.age_ms,
        mac: press
            .mac
            .map(|m| m.iter().map(|b| std::format!("{b:02x}")).collect()),
    })
    .expect("plain struct serializes")
}

/// Encodes an ack as JSON.
pub fn encode_ack(ack: &Ack) -> Vec<u8> {
    serde_json::to_vec(ack).expect("plain struct serializes")
}

/// Decodes a JSON ack.
pub fn decode_ack(payload: &[u8]) -> Result<Ack, DecodeError> {
    let ack: Ack = serde_json::from_slice(payload).map_err(|_| DecodeError::Malformed)?;
    ack.checked()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_scores_and_defaults() {
        let p = decode_press("t1", br#"{"seq":5,"button":"very_happy"}"#).unwrap();
        assert_eq!(p.id, PressId { boot: 0, seq: 5 });
        assert_eq!(p.button, Button::VeryHappy);
        assert_eq!(p.age_ms, None);
        let p = decode_press(
            "t1",
            br#"{"terminal":"t1","boot":3,"seq":6,"button":1,"age_ms":40,"extra":true}"#,
        )
        .unwrap();
        assert_eq!(p.id, PressId { boot: 3, seq: 6 });
        assert_eq!(p.button, Button::VeryUnhappy);
        assert_eq!(p.age_ms, Some(40));
    }

    #[test]
    fn round_trips_through_encode() {
        let p = Press {
            mac: Some([0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]),
            id: PressId { boot: 1, seq: 2 },
            button: Button::Unhappy,
            age_ms: Some(9),
        };
        assert_eq!(decode_press("t9", &encode_press("t9", &p)), Ok(p));
        let ack = Ack {
            boot: 1,
            first_seq: 2,
            last_seq: 4,
        };
        assert_eq!(decode_ack(&encode_ack(&ack)), Ok(ack));
    }

    #[test]
    fn rejects_with_reasons() {
        assert_eq!(decode_press("t1", b""), Err(DecodeError::Empty));
        assert_eq!(decode_press("t1", b"{"), Err(DecodeError::Malformed));
        assert_eq!(
            decode_press("t1", br#"{"button":"happy"}"#),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            decode_press("t1", br#"{"seq":-1,"button":"happy"}"#),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            decode_press("t1", br#"{"seq":1,"button":5}"#),
            Err(DecodeError::ButtonOutOfRange)
        );
        assert_eq!(
            decode_press("t1", br#"{"seq":1,"button":-3}"#),
            Err(DecodeError::ButtonOutOfRange)
        );
        assert_eq!(
            decode_press("t1", br#"{"seq":1,"button":"meh"}"#),
            Err(DecodeError::ButtonOutOfRange)
        );
        assert_eq!(
            decode_press("t1", br#"{"terminal":"t2","seq":1,"button":"happy"}"#),
            Err(DecodeError::TerminalMismatch)
        );
        let big = std::vec![b' '; MAX_PRESS_PAYLOAD + 1];
        assert_eq!(
            decode_press("t1", &big),
            Err(DecodeError::Oversized(MAX_PRESS_PAYLOAD + 1))
        );
    }
}
