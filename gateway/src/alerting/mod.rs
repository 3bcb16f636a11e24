//! Alerts reaching the people who act on them.
//!
//! # Layout
//! - [`lifecycle`]: raised → acknowledged → recovered → closed, as pure
//!   transitions of one alert document.
//! - [`book`]: the site's alerts, open and recent, and their transitions
//!   (sans-IO).
//! - [`config`]: `[alerting]`: channels, routes, quiet hours, escalation.
//! - [`routing`]: which transition goes to which channel, and when (quiet
//!   hours, escalation); sans-IO, driven with a virtual clock in tests.
//! - [`channels`]: the request each kind of channel gets (generic webhook,
//!   Slack, Teams, ntfy).
//! - [`links`]: signed one-click acknowledge links.
//! - [`delivery`]: the durable queue's sender: retries, backoff,
//!   coalescing, per-channel figures (the only part doing network I/O).
//! - [`response`]: time to acknowledge and to recover.
//!
//! The flow: the health rules ([`crate::terminals::monitor`]) and the zone
//! rules ([`crate::insight::zone_rules`]) change an alert in the [`book`]; the registry task
//! ([`crate::terminals::registry`]) asks [`routing`] who to tell, saves the
//! alert and its notifications in one store transaction, publishes the
//! alert upstream, and wakes [`delivery`].

pub mod book;
pub mod channels;
pub mod config;
pub mod delivery;
pub mod lifecycle;
pub mod links;
pub mod response;
pub mod routing;
