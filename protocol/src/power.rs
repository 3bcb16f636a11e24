//! How a terminal spends its power, and what it reports of it.
//!
//! - [`PowerSettings`]: `mains` (connected all the time, every press out at
//!   once) or `battery` (radio off between uploads, presses out within an
//!   upload delay, or at once for a run of unhappy presses). Set in the
//!   provisioning record and changed later by the gateway on
//!   `pressline/v1/gw/{terminal}/power` (version byte + postcard).
//! - [`Energy`]: counters since boot that a terminal adds to its heartbeat
//!   (version 3), from which the gateway estimates battery life.

use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// How the terminal is powered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PowerMode {
    /// Mains: the session stays up, presses go out at once.
    Mains,
    /// Batteries: the radio is off between uploads.
    Battery,
}

impl PowerMode {
    pub const fn name(self) -> &'static str {
        match self {
            PowerMode::Mains => "mains",
            PowerMode::Battery => "battery",
        }
    }

    pub fn parse(text: &str) -> Option<PowerMode> {
        match text {
            "mains" => Some(PowerMode::Mains),
            "battery" => Some(PowerMode::Battery),
            _ => None,
        }
    }
}

/// A terminal's power settings. Field order is the wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PowerSettings {
    pub mode: PowerMode,
    /// Battery mode: a press reaches the gateway within this many seconds.
    pub upload_delay_secs: u16,
    /// Battery mode: this many unhappy presses (the two sad buttons) in a
    /// row, each within the upload delay of the one before, go out at once:
    /// staff are sent while the visitors are still there. 0: never.
    pub unhappy_run: u8,
    /// Battery mode: a heartbeat at least this often (the radio comes on
    /// for it). Mains terminals send one every 30 s.
    pub heartbeat_every_secs: u16,
}

/// The longest heartbeat period on batteries: the gateway takes a terminal
/// silent for three of them as offline, so at most three hours.
pub const MAX_HEARTBEAT_SECS: u16 = 3600;

/// Heartbeat period of a terminal on mains.
pub const MAINS_HEARTBEAT_SECS: u16 = 30;

impl PowerSettings {
    /// Mains power: today's live behaviour.
    pub const MAINS: PowerSettings = PowerSettings {
        mode: PowerMode::Mains,
        upload_delay_secs: 0,
        unhappy_run: 0,
        heartbeat_every_secs: MAINS_HEARTBEAT_SECS,
    };

    /// Batteries with the defaults: presses out within 60 s, three unhappy
    /// presses in a row at once, a heartbeat every 15 minutes.
    pub const BATTERY: PowerSettings = PowerSettings {
        mode: PowerMode::Battery,
        upload_delay_secs: 60,
        unhappy_run: 3,
        heartbeat_every_secs: 900,
    };

    /// Checks the bounds a terminal relies on.
    pub fn validate(&self) -> Result<(), &'static str> {
        match self.mode {
            PowerMode::Mains => Ok(()),
            PowerMode::Battery if self.upload_delay_secs == 0 => {
                Err("battery mode needs an upload delay of at least 1 s")
            }
            PowerMode::Battery
                if !(60..=MAX_HEARTBEAT_SECS).contains(&self.heartbeat_every_secs) =>
            {
                Err("battery mode needs a heartbeat period of 60 to 3600 s")
            }
            PowerMode::Battery if self.heartbeat_every_secs < self.upload_delay_secs => {
                Err("the heartbeat period must not be shorter than the upload delay")
            }
            PowerMode::Battery => Ok(()),
        }
    }

    /// How often this terminal promises to be heard from (a heartbeat).
    pub const fn heard_every_secs(&self) -> u16 {
        match self.mode {
            PowerMode::Mains => MAINS_HEARTBEAT_SECS,
            PowerMode::Battery => self.heartbeat_every_secs,
        }
    }

    /// Wire form of the gateway's message: version byte, then postcard.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], postcard::Error> {
        crate::envelope::encode(self, buf)
    }

    /// Reads the gateway's message; refuses settings out of bounds.
    pub fn decode(payload: &[u8]) -> Result<PowerSettings, DecodeError> {
        let settings: PowerSettings = crate::envelope::decode(payload)?;
        settings.validate().map_err(|_| DecodeError::Malformed)?;
        Ok(settings)
    }
}

/// Room for an encoded [`PowerSettings`].
pub const POWER_SETTINGS_BUF_LEN: usize = 16;

/// What the terminal spent since boot, in the states the energy model
/// prices (the gateway's `terminals::energy`). Field order is the wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Energy {
    /// The settings in force.
    pub settings: PowerSettings,
    /// Time the processor ran (not waiting for an event), when the board
    /// can tell.
    pub awake_ms: Option<u64>,
    /// Time the radio was on (joining, associated).
    pub radio_on_ms: u64,
    /// Times the terminal woke for something other than the radio (a
    /// press, a timer).
    pub wakeups: u32,
    /// Network joins (each costs a Wi-Fi association).
    pub joins: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_bounds_are_enforced() {
        let mut buf = [0u8; POWER_SETTINGS_BUF_LEN];
        for s in [PowerSettings::MAINS, PowerSettings::BATTERY] {
            let bytes = s.encode(&mut buf).unwrap();
            assert_eq!(PowerSettings::decode(bytes), Ok(s));
        }
        let bad = PowerSettings {
            upload_delay_secs: 0,
            ..PowerSettings::BATTERY
        };
        let bytes = bad.encode(&mut buf).unwrap();
        assert_eq!(PowerSettings::decode(bytes), Err(DecodeError::Malformed));
        assert!(PowerSettings {
            heartbeat_every_secs: 30,
            ..PowerSettings::BATTERY
        }
        .validate()
        .is_err());
        assert!(PowerSettings {
            heartbeat_every_secs: 3601,
            ..PowerSettings::BATTERY
        }
        .validate()
        .is_err());
        assert_eq!(PowerSettings::BATTERY.heard_every_secs(), 900);
        assert_eq!(PowerSettings::MAINS.heard_every_secs(), 30);
    }
}
