//! What Pressline's programs on a host do alike, so each does it one way.
//!
//! # Layout
//! - [`signal`] (`signal`): the future a server's shutdown waits on.
//! - [`sync`]: locks that outlive a panicked holder.
//! - [`tls`]: certificates from PEM files, a private CA beside the
//!   system's roots, and TLS to PostgreSQL (`postgres`).

#[cfg(feature = "signal")]
pub mod signal;
pub mod sync;
pub mod tls;
