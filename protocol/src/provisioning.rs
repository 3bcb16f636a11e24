//! The provisioning record: who a terminal is and how it reaches its
//! gateway. Written into a reserved flash sector by `fleet provision` (or
//! to a file for the simulator), read by the firmware at boot.
//!
//! Layout: `"PLPR"` magic, version byte (1), body length (u16 LE), postcard
//! body ([`ProvisioningRecord`], then the [`PowerSettings`] of a terminal not
//! on mains; a body without them is a mains terminal), CRC-32 (ISO-HDLC, LE) over version, length
//! and body. An erased sector (all `0xFF`) reads as [`ProvisioningError::Blank`].

use serde::{Deserialize, Serialize};

use crate::ident::validate_id;
use crate::power::PowerSettings;

pub const MAGIC: [u8; 4] = *b"PLPR";
pub const VERSION: u8 = 1;
/// Largest encoded record (it must fit the reserved sector comfortably).
pub const MAX_RECORD_LEN: usize = 512;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// A terminal's identity and connection settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningRecord<'a> {
    pub terminal: &'a str,
    pub site: &'a str,
    pub zone: &'a str,
    pub wifi_ssid: &'a str,
    pub wifi_password: &'a str,
    /// Gateway host name or IPv4 address.
    pub gateway_host: &'a str,
    /// The gateway's MQTT port for this terminal's protocol version.
    pub gateway_port: u16,
    /// Per-terminal secret (credentials and press MACs).
    pub secret: [u8; 32],
    /// Written after the record, and only when not mains: firmware that
    /// predates power settings reads the record and ignores them.
    #[serde(skip, default = "mains")]
    pub power: PowerSettings,
}

fn mains() -> PowerSettings {
    PowerSettings::MAINS
}

/// Why a record could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisioningError {
    /// The sector is erased: the terminal was never provisioned.
    Blank,
    BadMagic,
    UnknownVersion(u8),
    /// Length or body does not decode.
    Malformed,
    /// The checksum does not match: the sector is damaged.
    BadChecksum,
    /// A field is invalid (terminal or site id, empty SSID or host, port 0).
    Invalid(&'static str),
    /// The buffer is too small, or the record too large.
    TooLarge,
}

impl core::fmt::Display for ProvisioningError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProvisioningError::Blank => f.write_str("no provisioning record (erased sector)"),
            ProvisioningError::BadMagic => f.write_str("not a provisioning record (bad magic)"),
            ProvisioningError::UnknownVersion(v) => {
                write!(f, "unknown provisioning record version {v}")
            }
            ProvisioningError::Malformed => f.write_str("provisioning record does not decode"),
            ProvisioningError::BadChecksum => {
                f.write_str("provisioning record checksum mismatch (damaged)")
            }
            ProvisioningError::Invalid(what) => write!(f, "invalid provisioning record: {what}"),
            ProvisioningError::TooLarge => f.write_str("provisioning record too large"),
        }
    }
}

impl<'a> ProvisioningRecord<'a> {
    /// Checks the fields a terminal cannot work without.
    pub fn validate(&self) -> Result<(), ProvisioningError> {
        validate_id(self.terminal).map_err(|_| ProvisioningError::Invalid("terminal id"))?;
        validate_id(self.site).map_err(|_| ProvisioningError::Invalid("site id"))?;
        if self.wifi_ssid.is_empty() || self.wifi_ssid.len() > 32 {
            return Err(ProvisioningError::Invalid("Wi-Fi SSID must be 1-32 bytes"));
        }
        if self.wifi_password.len() > 63 {
            return Err(ProvisioningError::Invalid(
                "Wi-Fi password longer than 63 bytes",
            ));
        }
        if self.gateway_host.is_empty() || self.gateway_port == 0 {
            return Err(ProvisioningError::Invalid("gateway address"));
        }
        self.power.validate().map_err(ProvisioningError::Invalid)
    }

    /// Encodes into `buf`, returning the used prefix.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], ProvisioningError> {
        self.validate()?;
        if buf.len() < 11 {
            return Err(ProvisioningError::TooLarge);
        }
        let body_len = {
            let limit = buf.len().min(MAX_RECORD_LEN) - 11;
            let (_, rest) = buf.split_at_mut(7);
            let body = &mut rest[..limit];
            let record = postcard::to_slice(self, body)
                .map_err(|_| ProvisioningError::TooLarge)?
                .len();
            let power = if self.power == PowerSettings::MAINS {
                0
            } else {
                postcard::to_slice(&self.power, &mut body[record..])
                    .map_err(|_| ProvisioningError::TooLarge)?
                    .len()
            };
            record + power
        };
        buf[..4].copy_from_slice(&MAGIC);
        buf[4] = VERSION;
        buf[5..7].copy_from_slice(&(body_len as u16).to_le_bytes());
        let crc = CRC.checksum(&buf[4..7 + body_len]);
        buf[7 + body_len..11 + body_len].copy_from_slice(&crc.to_le_bytes());
        Ok(&buf[..11 + body_len])
    }

    /// Decodes a record (trailing bytes, e.g. the rest of the sector, are ignored).
    pub fn decode(bytes: &'a [u8]) -> Result<ProvisioningRecord<'a>, ProvisioningError> {
        if bytes.len() >= 4 && bytes[..4].iter().all(|b| *b == 0xFF) {
            return Err(ProvisioningError::Blank);
        }
        if bytes.len() < 11 || bytes[..4] != MAGIC {
            return Err(ProvisioningError::BadMagic);
        }
        if bytes[4] != VERSION {
            return Err(ProvisioningError::UnknownVersion(bytes[4]));
        }
        let body_len = u16::from_le_bytes([bytes[5], bytes[6]]) as usize;
        let end = 7 + body_len;
        if body_len > MAX_RECORD_LEN || bytes.len() < end + 4 {
            return Err(ProvisioningError::Malformed);
        }
        let stored =
            u32::from_le_bytes([bytes[end], bytes[end + 1], bytes[end + 2], bytes[end + 3]]);
        if CRC.checksum(&bytes[4..end]) != stored {
            return Err(ProvisioningError::BadChecksum);
        }
        let (mut record, rest): (ProvisioningRecord<'a>, _) =
            postcard::take_from_bytes(&bytes[7..end]).map_err(|_| ProvisioningError::Malformed)?;
        if !rest.is_empty() {
            let (power, rest) =
                postcard::take_from_bytes(rest).map_err(|_| ProvisioningError::Malformed)?;
            if !rest.is_empty() {
                return Err(ProvisioningError::Malformed);
            }
            record.power = power;
        }
        record.validate()?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProvisioningRecord<'static> {
        ProvisioningRecord {
            terminal: "north-07",
            site: "arena",
            zone: "North stand food court",
            wifi_ssid: "arena-staff",
            wifi_password: "correct horse battery staple",
            gateway_host: "10.20.0.2",
            gateway_port: 1884,
            secret: [7; 32],
            power: PowerSettings::MAINS,
        }
    }

    #[test]
    fn battery_settings_follow_the_record_and_mains_records_are_unchanged() {
        let mut mains = [0xFFu8; 4096];
        let mains_len = sample().encode(&mut mains).unwrap().len();
        let battery = ProvisioningRecord {
            power: PowerSettings::BATTERY,
            ..sample()
        };
        let mut sector = [0xFFu8; 4096];
        let len = battery.encode(&mut sector).unwrap().len();
        assert!(len > mains_len);
        assert_eq!(ProvisioningRecord::decode(&sector), Ok(battery.clone()));
        // What firmware without power settings reads: the record itself.
        let body_len = u16::from_le_bytes([sector[5], sector[6]]) as usize;
        let old: ProvisioningRecord<'_> = postcard::from_bytes(&sector[7..7 + body_len]).unwrap();
        assert_eq!(old.terminal, "north-07");
        assert_eq!(old.power, PowerSettings::MAINS);
        let bad = ProvisioningRecord {
            power: PowerSettings {
                upload_delay_secs: 0,
                ..PowerSettings::BATTERY
            },
            ..sample()
        };
        assert!(matches!(
            bad.encode(&mut sector),
            Err(ProvisioningError::Invalid(_))
        ));
    }

    #[test]
    fn round_trips_and_ignores_the_rest_of_the_sector() {
        let mut sector = [0xFFu8; 4096];
        let len = sample().encode(&mut sector).unwrap().len();
        assert!(len < MAX_RECORD_LEN);
        assert_eq!(ProvisioningRecord::decode(&sector), Ok(sample()));
    }

    #[test]
    fn damage_is_detected() {
        let mut sector = [0xFFu8; 4096];
        let len = sample().encode(&mut sector).unwrap().len();
        assert_eq!(
            ProvisioningRecord::decode(&[0xFF; 64]),
            Err(ProvisioningError::Blank)
        );
        let mut bad = sector;
        bad[20] ^= 0x01;
        assert_eq!(
            ProvisioningRecord::decode(&bad),
            Err(ProvisioningError::BadChecksum)
        );
        let mut bad = sector;
        bad[4] = 9;
        assert_eq!(
            ProvisioningRecord::decode(&bad),
            Err(ProvisioningError::UnknownVersion(9))
        );
        let mut bad = sector;
        bad[0] = b'X';
        assert_eq!(
            ProvisioningRecord::decode(&bad),
            Err(ProvisioningError::BadMagic)
        );
        assert_eq!(
            ProvisioningRecord::decode(&sector[..len - 1]),
            Err(ProvisioningError::Malformed)
        );
    }

    #[test]
    fn invalid_fields_are_refused_on_write() {
        let mut buf = [0u8; 512];
        let mut r = sample();
        r.terminal = "bad id";
        assert_eq!(
            r.encode(&mut buf),
            Err(ProvisioningError::Invalid("terminal id"))
        );
        let mut r = sample();
        r.gateway_port = 0;
        assert_eq!(
            r.encode(&mut buf),
            Err(ProvisioningError::Invalid("gateway address"))
        );
    }
}
