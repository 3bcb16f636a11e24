//! Keys, certificates and secrets.
//!
//! # Layout
//! - [`tls`]: rustls for the upstream client, the terminal listener and
//!   HTTPS; certificate errors in plain words.
//! - [`secret_files`]: owner-only secrets on disk; world-readable keys
//!   refused.
//! - [`mqtt_access`]: refused MQTT connections counted and logged; closed
//!   mode's rule that a terminal publishes only on its own topics.

pub mod mqtt_access;
pub mod secret_files;
pub mod tls;
