//! Hardware-independent terminal logic, shared by the Pico W firmware and
//! `terminal-sim`.
//!
//! Everything here is a sans-IO state machine: no clock, no radio, no flash.
//! Time is passed in as milliseconds of a monotonic clock ([`Millis`]), and
//! the caller performs whatever I/O the machine asks for. That keeps the
//! behaviour that matters (never forget a press before the gateway's durable
//! ack, resend on reconnect and on ack timeout) testable with a virtual
//! clock.
//!
//! # Layout
//! - [`session`]: press numbering, the press queue, and the MQTT session
//!   logic (what to publish, when to resend, what an ack releases).
//! - [`terminal`]: the session with its queue and boot counter in flash
//!   ([`DurableTerminal`]), so power cuts lose nothing.
//! - [`generation`]: boot numbers that never repeat for a terminal id, a
//!   fresh flash or a re-provisioned spare included.
//! - [`ota`]: the firmware-update receiver (offer, chunked download into
//!   the DFU partition, signature check and trial boot via embassy-boot).
//! - [`debounce`]: button debouncing.
//! - [`ram_flash`]: NOR flash in RAM with power-loss injection (tests, QEMU,
//!   simulator).
//! - `rp2040_power_cuts` (tests): power cuts at the RP2040's flash geometry
//!   across queue page rollovers.
//! - [`selftest`]: behaviour checks shared by the host tests and the
//!   emulated-MCU (QEMU) test runner.
#![no_std]
#![forbid(unsafe_code)]

pub mod debounce;
pub mod generation;
pub mod ota;
pub mod ram_flash;
#[cfg(test)]
mod rp2040_power_cuts;
pub mod selftest;
pub mod session;
pub mod terminal;

pub use debounce::Debouncer;
pub use generation::Origin;
pub use session::{QueueFull, Session, SessionConfig, SessionCounters};
pub use terminal::{DeviceStatus, DurableTerminal, FlashLayout, PressError};

/// Milliseconds on the terminal's monotonic clock (uptime). Never wall time.
pub type Millis = u64;
