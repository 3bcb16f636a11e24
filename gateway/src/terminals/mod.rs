//! What the gateway knows about each terminal.
//!
//! # Layout
//! - [`identity`]: registered terminals, their broker logins and press MACs.
//! - [`health`]: the health rules and alert lifecycle (sans-IO: time in,
//!   events out).
//! - [`registry`]: the task that feeds them heartbeats, last wills and
//!   stored presses, persists their state and publishes health and alerts
//!   upstream.

pub mod health;
pub mod identity;
pub mod registry;
