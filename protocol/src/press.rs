//! A button press as a native terminal sends it.
//!
//! Wire form: one version byte ([`crate::WIRE_VERSION`]), then the postcard
//! encoding of [`PressWireV1`]. The terminal id is not in the payload: it is
//! the topic level (`pressline/v1/term/{terminal}/press`).

use serde::{Deserialize, Serialize};

use crate::{Button, MAX_PRESS_PAYLOAD};

/// A press's identity within one terminal: the terminal's boot counter and
/// the sequence number it gave the press during that boot. Together with the
/// terminal id this is the key the gateway deduplicates on.
///
/// Ordering is (boot, seq), the order in which a terminal made its presses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PressId {
    pub boot: u32,
    pub seq: u32,
}

/// A decoded press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Press {
    pub id: PressId,
    pub button: Button,
    /// Milliseconds between the press and this (re)transmission, measured on
    /// the terminal's monotonic clock, so the gateway can date presses that
    /// waited out an outage. `None` when the terminal cannot tell (the press
    /// survived a reboot, or a third-party terminal did not say).
    pub age_ms: Option<u32>,
    /// Proof that the terminal holding the secret made this press
    /// ([`crate::auth::press_mac`]); required from registered terminals.
    pub mac: Option<[u8; crate::auth::MAC_LEN]>,
}

/// Version byte of a native press that carries a MAC ([`PressWireV2`]).
pub const PRESS_WITH_MAC_VERSION: u8 = 2;

/// The postcard body of a version-2 press: version 1 plus the MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PressWireV2 {
    pub boot: u32,
    pub seq: u32,
    pub button: u8,
    pub age_ms: Option<u32>,
    pub mac: [u8; crate::auth::MAC_LEN],
}

/// The postcard body of a version-1 press. Field order is the wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PressWireV1 {
    pub boot: u32,
    pub seq: u32,
    /// Button score, 1–4.
    pub button: u8,
    pub age_ms: Option<u32>,
}

/// Why a press payload was rejected. [`DecodeError::reason`] is the stable
/// label the gateway counts rejects under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Zero-length payload.
    Empty,
    /// Larger than [`MAX_PRESS_PAYLOAD`].
    Oversized(usize),
    /// A version byte this build does not know.
    UnknownVersion(u8),
    /// The body does not decode (truncated, garbage, trailing bytes, bad JSON).
    Malformed,
    /// A button score outside 1–4 or an unknown button name.
    ButtonOutOfRange,
    /// A JSON press whose `terminal` field disagrees with its topic.
    TerminalMismatch,
}

impl DecodeError {
    /// Stable, metric-friendly label.
    pub const fn reason(self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Oversized(_) => "oversized",
            DecodeError::UnknownVersion(_) => "unknown_version",
            DecodeError::Malformed => "malformed",
            DecodeError::ButtonOutOfRange => "button_out_of_range",
            DecodeError::TerminalMismatch => "terminal_mismatch",
        }
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty payload"),
            DecodeError::Oversized(n) => {
                write!(f, "payload of {n} bytes exceeds {MAX_PRESS_PAYLOAD}")
            }
            DecodeError::UnknownVersion(v) => write!(f, "unknown payload version {v}"),
            DecodeError::Malformed => f.write_str("payload does not decode"),
            DecodeError::ButtonOutOfRange => f.write_str("button is not one of the four"),
            DecodeError::TerminalMismatch => f.write_str("terminal field does not match the topic"),
        }
    }
}

/// Room for any encoded press.
pub const PRESS_BUF_LEN: usize = 32;

impl Press {
    /// Encodes into `buf` (version 1 without a MAC, version 2 with one),
    /// returning the used prefix.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], postcard::Error> {
        let (boot, seq, button, age_ms) =
            (self.id.boot, self.id.seq, self.button.score(), self.age_ms);
        match self.mac {
            None => crate::envelope::encode(
                &PressWireV1 {
                    boot,
                    seq,
                    button,
                    age_ms,
                },
                buf,
            ),
            Some(mac) => crate::envelope::encode_as(
                PRESS_WITH_MAC_VERSION,
                &PressWireV2 {
                    boot,
                    seq,
                    button,
                    age_ms,
                    mac,
                },
                buf,
            ),
        }
    }

    /// Decodes a native press payload (version 1 or 2).
    pub fn decode(payload: &[u8]) -> Result<Press, DecodeError> {
        let (boot, seq, button, age_ms, mac) = match crate::envelope::version(payload)? {
            PRESS_WITH_MAC_VERSION => {
                let w: PressWireV2 = crate::envelope::decode_as(PRESS_WITH_MAC_VERSION, payload)?;
                (w.boot, w.seq, w.button, w.age_ms, Some(w.mac))
            }
            _ => {
                let w: PressWireV1 = crate::envelope::decode(payload)?;
                (w.boot, w.seq, w.button, w.age_ms, None)
            }
        };
        Ok(Press {
            id: PressId { boot, seq },
            button: Button::from_score(button).ok_or(DecodeError::ButtonOutOfRange)?,
            age_ms,
            mac,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(boot: u32, seq: u32, button: Button, age_ms: Option<u32>) -> Press {
        Press {
            id: PressId { boot, seq },
            button,
            age_ms,
            mac: None,
        }
    }

    #[test]
    fn presses_with_a_mac_are_version_2_and_round_trip() {
        let mut p = press(1, 2, Button::Happy, Some(5));
        p.mac = Some([1, 2, 3, 4, 5, 6, 7, 8]);
        let mut buf = [0u8; PRESS_BUF_LEN];
        let bytes = p.encode(&mut buf).unwrap();
        assert_eq!(bytes[0], PRESS_WITH_MAC_VERSION);
        assert_eq!(Press::decode(bytes), Ok(p));
        assert_eq!(
            Press::decode(&[2, 0, 0, 1, 0]),
            Err(DecodeError::Malformed),
            "version 2 needs its MAC"
        );
    }

    #[test]
    fn round_trips_every_button_and_extreme_ids() {
        for button in Button::ALL {
            for (boot, seq, age) in [
                (0, 0, None),
                (7, 42, Some(1500)),
                (u32::MAX, u32::MAX, Some(u32::MAX)),
            ] {
                let p = press(boot, seq, button, age);
                let mut buf = [0u8; PRESS_BUF_LEN];
                let bytes = p.encode(&mut buf).unwrap();
                assert_eq!(bytes[0], crate::WIRE_VERSION);
                assert_eq!(Press::decode(bytes), Ok(p));
            }
        }
    }

    #[test]
    fn wire_bytes_are_stable() {
        // Version 1, boot 3, seq 300 (varint 0xAC 0x02), button 4, age none.
        let mut buf = [0u8; PRESS_BUF_LEN];
        let bytes = press(3, 300, Button::VeryHappy, None)
            .encode(&mut buf)
            .unwrap();
        assert_eq!(bytes, &[1, 3, 0xAC, 0x02, 4, 0]);
    }

    #[test]
    fn rejects_bad_payloads_with_a_reason() {
        assert_eq!(Press::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            Press::decode(&[9, 0, 0, 1, 0]),
            Err(DecodeError::UnknownVersion(9))
        );
        assert_eq!(Press::decode(&[1, 0]), Err(DecodeError::Malformed));
        assert_eq!(
            Press::decode(&[1, 0, 0, 1, 0, 0xFF]),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            Press::decode(&[1, 0, 0, 5, 0]),
            Err(DecodeError::ButtonOutOfRange)
        );
        assert_eq!(
            Press::decode(&[1, 0, 0, 0, 0]),
            Err(DecodeError::ButtonOutOfRange)
        );
        assert_eq!(
            Press::decode(&[1; MAX_PRESS_PAYLOAD + 1]),
            Err(DecodeError::Oversized(MAX_PRESS_PAYLOAD + 1))
        );
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap exhaustive sweep of short payloads starting with version 1.
        for a in 0..=255u8 {
            for b in [0u8, 1, 4, 0x80, 0xFF] {
                let _ = Press::decode(&[1, a, b, a ^ b, b]);
                let _ = Press::decode(&[1, 0x80, 0x80, 0x80, 0x80, 0x80, a]);
            }
        }
    }
}
