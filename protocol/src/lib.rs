//! The Pressline wire contract: every payload and topic name exchanged between
//! terminals, the site gateway, the fleet CLI and upstream consumers.
//!
//! The crate is `#![no_std]` and allocation-free by default so the terminal
//! firmware shares it byte for byte with the gateway. The `std` feature adds
//! the JSON forms (third-party terminals and the upstream analytics payloads).
//!
//! # Layout
//! - [`backoff`]: the retry schedule every Pressline client uses.
//! - [`auth`]: terminal identity: MQTT password and press MAC from the secret.
//! - [`button`]: the four smiley buttons and their scores.
//! - [`envelope`]: version byte + postcard framing shared by native payloads.
//! - [`ident`]: terminal and site identifiers (the characters topics allow).
//! - [`ota`]: signed firmware artifacts (parse and verify; no_std).
//! - [`ota_transfer`]: offer, chunk and status messages of a firmware update.
//! - [`power`]: power settings (mains, battery) and energy counters.
//! - [`press`]: a press as a native terminal sends it (version byte + postcard).
//! - [`ack`]: the gateway's durable application ack (version byte + postcard).
//! - [`heartbeat`]: terminal health reports and the terminal's last will.
//! - [`provisioning`]: a terminal's identity and connection settings in flash.
//! - [`topic`]: every MQTT topic, as formatters and a parser.
//! - [`json`] (`std`): JSON presses/acks for third-party terminals.
//! - [`upstream`] (`std`): the versioned JSON documents analytics consume.
//! - [`api`] (`std`): gateway HTTP API documents the fleet CLI reads back.
//! - [`vocabulary!`] (`std`): closed sets of wire words as enums.
//!
//! `PROTOCOL.md` at the repository root is the human-readable version of this
//! crate; keep the two in step.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

pub mod ack;
pub mod auth;
pub mod backoff;
pub mod button;
pub mod envelope;
pub mod heartbeat;
pub mod ident;
pub mod ota;
pub mod ota_transfer;
pub mod power;
pub mod press;
pub mod provisioning;
pub mod topic;

#[cfg(feature = "std")]
pub mod api;
#[cfg(feature = "std")]
pub mod json;
#[cfg(feature = "std")]
pub mod upstream;
#[cfg(feature = "std")]
mod vocabulary;

pub use ack::Ack;
pub use button::Button;
pub use heartbeat::{FirmwareVersion, Heartbeat, ResetReason};
pub use press::{DecodeError, Press, PressId};

/// Version byte of the native (postcard) payloads this crate writes.
pub const WIRE_VERSION: u8 = 1;

/// Largest press payload the gateway accepts on either press topic. Native
/// presses are about a dozen bytes; JSON ones well under a hundred.
pub const MAX_PRESS_PAYLOAD: usize = 512;
