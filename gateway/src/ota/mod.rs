//! Firmware updates over the air.
//!
//! # Layout
//! - [`releases`]: signed firmware releases uploaded to the gateway.
//! - [`rollout`]: one rollout as a sans-IO state machine (canary, waves,
//!   halt on failures, opening-hours window).
//! - [`service`]: the rollout service running them against the site
//!   broker: offers, chunk serving, persistence, upstream events.

pub mod releases;
pub mod rollout;
pub mod service;
