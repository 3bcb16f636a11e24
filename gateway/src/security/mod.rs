//! Keys, certificates and secrets.
//!
//! # Layout
//! - [`tls`]: rustls for the upstream client, the terminal listener and
//!   HTTPS; certificate errors in plain words.
//! - [`secret_files`]: owner-only secrets on disk; world-readable keys
//!   refused.
//! - [`mqtt_access`]: who may connect, publish and subscribe on the site
//!   broker; refusals counted and logged.
//! - [`log_budget`]: how many refusal lines one source may cause.

pub mod log_budget;
pub mod mqtt_access;
pub mod secret_files;
pub mod tls;
