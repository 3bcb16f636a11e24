//! Terminal heartbeats and the terminal's last will.
//!
//! A terminal publishes a [`Heartbeat`] on `pressline/v1/term/{t}/heartbeat`
//! when it connects and then periodically (every 30 s by default), and
//! registers an MQTT last will on `pressline/v1/term/{t}/status` with the
//! payload [`WILL_OFFLINE`], so the gateway hears at once when it vanishes.
//!
//! Wire form: version byte, then postcard: of [`Heartbeat`] (1), of
//! [`HeartbeatWireV2`] (2, signed), or of [`HeartbeatWireV3`] (3, with the
//! terminal's [`Energy`] counters, signed or not).

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::power::Energy;
use crate::DecodeError;

/// Payload of the terminal's last will.
pub const WILL_OFFLINE: &[u8] = b"offline";

/// Firmware version, semver without pre-release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FirmwareVersion {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

impl FirmwareVersion {
    /// Parses `MAJOR.MINOR.PATCH`.
    pub fn parse(text: &str) -> Option<FirmwareVersion> {
        let mut parts = text.split('.');
        let v = FirmwareVersion {
            major: parts.next()?.parse().ok()?,
            minor: parts.next()?.parse().ok()?,
            patch: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(v)
    }
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why the terminal last (re)started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ResetReason {
    Unknown = 0,
    PowerOn = 1,
    Watchdog = 2,
    Brownout = 3,
    Software = 4,
    FirmwareUpdate = 5,
    External = 6,
}

impl ResetReason {
    pub const fn from_code(code: u8) -> ResetReason {
        match code {
            1 => ResetReason::PowerOn,
            2 => ResetReason::Watchdog,
            3 => ResetReason::Brownout,
            4 => ResetReason::Software,
            5 => ResetReason::FirmwareUpdate,
            6 => ResetReason::External,
            _ => ResetReason::Unknown,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            ResetReason::Unknown => "unknown",
            ResetReason::PowerOn => "power_on",
            ResetReason::Watchdog => "watchdog",
            ResetReason::Brownout => "brownout",
            ResetReason::Software => "software",
            ResetReason::FirmwareUpdate => "firmware_update",
            ResetReason::External => "external",
        }
    }
}

/// A terminal's periodic health report. Field order is the wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub boot: u32,
    pub uptime_ms: u64,
    pub firmware: FirmwareVersion,
    /// Battery voltage; `None` on mains power.
    pub battery_mv: Option<u16>,
    /// Wi-Fi signal strength.
    pub rssi_dbm: Option<i8>,
    /// Presses waiting for a durable ack.
    pub queue_depth: u32,
    pub queue_capacity: u32,
    /// Presses lost to a full queue since the terminal was provisioned.
    pub dropped_presses: u32,
    /// [`ResetReason`] code.
    pub reset_reason: u8,
    /// The terminal's wall clock (Unix ms), when it has one (SNTP).
    pub unix_time_ms: Option<u64>,
}

/// Room for any encoded heartbeat.
pub const HEARTBEAT_BUF_LEN: usize = 112;

/// Version byte of a heartbeat signed by a provisioned terminal.
pub const HEARTBEAT_WITH_MAC_VERSION: u8 = 2;

/// The postcard body of a version-2 heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatWireV2 {
    pub heartbeat: Heartbeat,
    /// [`crate::auth::heartbeat_mac`] over the heartbeat's postcard body.
    pub mac: [u8; crate::auth::MAC_LEN],
}

/// Version byte of a heartbeat with energy counters.
pub const HEARTBEAT_WITH_ENERGY_VERSION: u8 = 3;

/// The postcard body of a version-3 heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatWireV3 {
    pub heartbeat: Heartbeat,
    pub energy: Energy,
    /// [`crate::auth::heartbeat_mac`] over postcard of `(heartbeat,
    /// energy)`; `None` from a terminal without a secret.
    pub mac: Option<[u8; crate::auth::MAC_LEN]>,
}

/// A heartbeat as it arrived: what it says, and its signature if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedHeartbeat {
    pub heartbeat: Heartbeat,
    /// Present in version 3.
    pub energy: Option<Energy>,
    pub mac: Option<[u8; crate::auth::MAC_LEN]>,
}

impl ReceivedHeartbeat {
    /// The bytes the signature covers.
    pub fn signed_body<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], postcard::Error> {
        Ok(match &self.energy {
            None => postcard::to_slice(&self.heartbeat, buf)?,
            Some(energy) => postcard::to_slice(&(self.heartbeat, *energy), buf)?,
        })
    }
}

impl Heartbeat {
    /// Version 3: with the energy counters; signed when `signer` (the
    /// secret and the terminal id) is given.
    pub fn encode_with_energy<'b>(
        &self,
        energy: &Energy,
        signer: Option<(&crate::auth::Secret, &str)>,
        buf: &'b mut [u8],
    ) -> Result<&'b mut [u8], postcard::Error> {
        let mut wire = HeartbeatWireV3 {
            heartbeat: *self,
            energy: *energy,
            mac: None,
        };
        if let Some((secret, terminal)) = signer {
            let mut body = [0u8; HEARTBEAT_BUF_LEN];
            let received = ReceivedHeartbeat {
                heartbeat: *self,
                energy: Some(*energy),
                mac: None,
            };
            let body = received.signed_body(&mut body)?;
            wire.mac = Some(crate::auth::heartbeat_mac(secret, terminal, body));
        }
        crate::envelope::encode_as(HEARTBEAT_WITH_ENERGY_VERSION, &wire, buf)
    }

    /// Version 1: unsigned (open-mode terminals without a secret).
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], postcard::Error> {
        crate::envelope::encode(self, buf)
    }

    /// The postcard body the signature covers.
    pub fn body<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], postcard::Error> {
        Ok(postcard::to_slice(self, buf)?)
    }

    /// Version 2: signed with the terminal's secret.
    pub fn encode_signed<'b>(
        &self,
        secret: &crate::auth::Secret,
        terminal: &str,
        buf: &'b mut [u8],
    ) -> Result<&'b mut [u8], postcard::Error> {
        let mut body = [0u8; HEARTBEAT_BUF_LEN];
        let mac = crate::auth::heartbeat_mac(secret, terminal, self.body(&mut body)?);
        crate::envelope::encode_as(
            HEARTBEAT_WITH_MAC_VERSION,
            &HeartbeatWireV2 {
                heartbeat: *self,
                mac,
            },
            buf,
        )
    }

    /// Decodes version 1, 2 or 3.
    pub fn decode(payload: &[u8]) -> Result<ReceivedHeartbeat, DecodeError> {
        match crate::envelope::version(payload)? {
            HEARTBEAT_WITH_MAC_VERSION => {
                let w: HeartbeatWireV2 =
                    crate::envelope::decode_as(HEARTBEAT_WITH_MAC_VERSION, payload)?;
                Ok(ReceivedHeartbeat {
                    heartbeat: w.heartbeat,
                    energy: None,
                    mac: Some(w.mac),
                })
            }
            HEARTBEAT_WITH_ENERGY_VERSION => {
                let w: HeartbeatWireV3 =
                    crate::envelope::decode_as(HEARTBEAT_WITH_ENERGY_VERSION, payload)?;
                Ok(ReceivedHeartbeat {
                    heartbeat: w.heartbeat,
                    energy: Some(w.energy),
                    mac: w.mac,
                })
            }
            _ => Ok(ReceivedHeartbeat {
                heartbeat: crate::envelope::decode(payload)?,
                energy: None,
                mac: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        let hb = Heartbeat {
            boot: 4,
            uptime_ms: 86_400_000,
            firmware: FirmwareVersion {
                major: 1,
                minor: 2,
                patch: 3,
            },
            battery_mv: Some(3700),
            rssi_dbm: Some(-67),
            queue_depth: 3,
            queue_capacity: 4096,
            dropped_presses: 0,
            reset_reason: ResetReason::Watchdog as u8,
            unix_time_ms: Some(1_790_000_000_000),
        };
        let mut buf = [0u8; HEARTBEAT_BUF_LEN];
        let bytes = hb.encode(&mut buf).unwrap();
        let plain = Heartbeat::decode(bytes).unwrap();
        assert_eq!((plain.heartbeat, plain.energy, plain.mac), (hb, None, None));
        let secret = [3u8; 32];
        let signed = hb.encode_signed(&secret, "t1", &mut buf).unwrap();
        assert_eq!(signed[0], HEARTBEAT_WITH_MAC_VERSION);
        let received = Heartbeat::decode(signed).unwrap();
        let mac = received.mac;
        assert_eq!(received.heartbeat, hb);
        let mut body = [0u8; HEARTBEAT_BUF_LEN];
        assert_eq!(
            mac,
            Some(crate::auth::heartbeat_mac(
                &secret,
                "t1",
                hb.body(&mut body).unwrap()
            ))
        );
        assert_ne!(
            mac,
            Some(crate::auth::heartbeat_mac(
                &secret,
                "t2",
                hb.body(&mut body).unwrap()
            ))
        );
        assert_eq!(Heartbeat::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            Heartbeat::decode(&[9, 0]),
            Err(DecodeError::UnknownVersion(9))
        );
        assert_eq!(Heartbeat::decode(&[1, 0]), Err(DecodeError::Malformed));
    }

    #[test]
    fn energy_counters_ride_in_version_3_under_the_signature() {
        let hb = Heartbeat {
            boot: u32::MAX,
            uptime_ms: u64::MAX,
            firmware: FirmwareVersion {
                major: u16::MAX,
                minor: u16::MAX,
                patch: u16::MAX,
            },
            battery_mv: Some(u16::MAX),
            rssi_dbm: Some(-128),
            queue_depth: u32::MAX,
            queue_capacity: u32::MAX,
            dropped_presses: u32::MAX,
            reset_reason: 255,
            unix_time_ms: Some(u64::MAX),
        };
        let energy = Energy {
            settings: crate::power::PowerSettings::BATTERY,
            awake_ms: Some(u64::MAX),
            radio_on_ms: u64::MAX,
            wakeups: u32::MAX,
            joins: u32::MAX,
        };
        let secret = [5u8; 32];
        let mut buf = [0u8; HEARTBEAT_BUF_LEN];
        let bytes = hb
            .encode_with_energy(&energy, Some((&secret, "t1")), &mut buf)
            .expect("the largest heartbeat fits HEARTBEAT_BUF_LEN");
        assert_eq!(bytes[0], HEARTBEAT_WITH_ENERGY_VERSION);
        let received = Heartbeat::decode(bytes).unwrap();
        assert_eq!(received.heartbeat, hb);
        assert_eq!(received.energy, Some(energy));
        let mut body = [0u8; HEARTBEAT_BUF_LEN];
        let body = received.signed_body(&mut body).unwrap();
        assert_eq!(
            received.mac,
            Some(crate::auth::heartbeat_mac(&secret, "t1", body))
        );
        // Changing a counter breaks the signature.
        let forged = ReceivedHeartbeat {
            energy: Some(Energy { joins: 0, ..energy }),
            ..received
        };
        let mut other = [0u8; HEARTBEAT_BUF_LEN];
        assert_ne!(
            received.mac,
            Some(crate::auth::heartbeat_mac(
                &secret,
                "t1",
                forged.signed_body(&mut other).unwrap()
            ))
        );
        let unsigned = hb.encode_with_energy(&energy, None, &mut buf).unwrap();
        assert_eq!(Heartbeat::decode(unsigned).unwrap().mac, None);
    }

    #[test]
    fn versions_parse_and_print() {
        let v = FirmwareVersion::parse("1.10.0").unwrap();
        assert_eq!(
            v,
            FirmwareVersion {
                major: 1,
                minor: 10,
                patch: 0
            }
        );
        let mut s = [0u8; 16];
        let mut w = Cursor {
            buf: &mut s,
            len: 0,
        };
        core::fmt::write(&mut w, format_args!("{v}")).unwrap();
        let len = w.len;
        assert_eq!(&s[..len], b"1.10.0");
        assert_eq!(FirmwareVersion::parse("1.2"), None);
        assert_eq!(FirmwareVersion::parse("1.2.3.4"), None);
        assert_eq!(FirmwareVersion::parse("1.x.3"), None);
        assert_eq!(ResetReason::from_code(2).name(), "watchdog");
        assert_eq!(ResetReason::from_code(200), ResetReason::Unknown);
    }

    struct Cursor<'a> {
        buf: &'a mut [u8],
        len: usize,
    }
    impl core::fmt::Write for Cursor<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
            Ok(())
        }
    }
}
