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
#![no_std]
#![forbid(unsafe_code)]

pub mod session;

pub use session::{QueueFull, Session, SessionConfig, SessionCounters};

/// Milliseconds on the terminal's monotonic clock (uptime). Never wall time.
pub type Millis = u64;
