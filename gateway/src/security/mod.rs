//! Keys, certificates and secrets.
//!
//! # Layout
//! - [`tls`]: rustls for the upstream client, the terminal listener and
//!   HTTPS; certificate errors in plain words.
//! - [`secret_files`]: owner-only secrets on disk; world-readable keys
//!   refused.

pub mod secret_files;
pub mod tls;
