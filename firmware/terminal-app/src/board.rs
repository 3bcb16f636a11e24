//! What the application needs from the board it runs on (what the
//! visitor is shown of a press is [`crate::Feedback`]).

use pressline_protocol::{Ack, ResetReason};

/// A board: the Pico W (CYW43439 Wi-Fi, RP2040 watchdog, ADC) or a Linux
/// host (a TAP device, a flash file, re-exec as reboot).
#[allow(async_fn_in_trait)]
pub trait Board {
    /// Brings the network link up if it is down (a Wi-Fi join); `Ok` when
    /// packets can flow. Must return within a few seconds either way.
    async fn connect_network(&mut self) -> Result<(), NetworkError>;

    /// Turns the radio off (a terminal on batteries between uploads); the
    /// next [`Board::connect_network`] joins again.
    async fn disconnect_network(&mut self) {}

    /// Time the processor ran since boot (not waiting for an event), when
    /// the board can measure it.
    fn awake_ms(&mut self) -> Option<u64> {
        None
    }

    /// Signal strength now, when the board has a radio.
    async fn rssi_dbm(&mut self) -> Option<i8>;

    /// Battery voltage, when the board can measure it.
    fn battery_mv(&mut self) -> Option<u16>;

    /// Why this boot happened (watchdog, software reset, power-on).
    fn reset_reason(&self) -> ResetReason;

    /// Restarts the terminal through its bootloader (which swaps in a
    /// verified update). Does not return.
    fn reboot(&mut self) -> !;

    /// The gateway's durable ack released presses from the queue; `queued`
    /// presses are left.
    fn presses_released(&mut self, _ack: &Ack, _queued: usize) {}
}

/// Why the network link is not up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NetworkError {
    /// The access point refused the join (wrong password, out of range).
    JoinFailed,
    JoinTimedOut,
}

impl NetworkError {
    /// Words for the log.
    pub const fn as_str(self) -> &'static str {
        match self {
            NetworkError::JoinFailed => "Wi-Fi join failed",
            NetworkError::JoinTimedOut => "Wi-Fi join timed out",
        }
    }
}
