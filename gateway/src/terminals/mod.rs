//! What the gateway knows about each terminal.
//!
//! # Layout
//! - [`identity`]: registered terminals, their broker logins and press MACs.
//! - [`energy`]: battery life from a terminal's energy counters (pure).
//! - [`health`]: the health rules of one terminal (pure).
//! - [`monitor`]: every terminal's state and the alerts the rules raise
//!   (sans-IO: time in, changes out).
//! - [`power`]: the power settings wanted per terminal, sent when a
//!   heartbeat reports others.
//! - [`registry`]: the task that feeds the monitor heartbeats, last wills
//!   and stored presses, runs the zone rules, persists what changed and
//!   publishes health and alerts upstream.

pub mod energy;
pub mod health;
pub mod identity;
pub mod monitor;
pub mod power;
pub mod registry;
