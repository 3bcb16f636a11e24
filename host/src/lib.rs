//! What Pressline's programs on a host do alike, so each does it one way.
//!
//! # Layout
//! - [`signal`] (`signal`): the future a server's shutdown waits on.
//! - [`https`] (`https`): a TLS listener for axum servers.
//! - [`log_limit`]: log lines outside input can trigger, limited per reason.
//! - [`secret_files`]: key files every user can read are refused.
//! - [`sync`]: locks that outlive a panicked holder.
//! - [`tls`]: certificates from PEM files, a private CA beside the
//!   system's roots, and TLS to PostgreSQL (`postgres`).

#[cfg(feature = "https")]
pub mod https;
pub mod log_limit;
pub mod secret_files;
#[cfg(feature = "signal")]
pub mod signal;
pub mod sync;
pub mod tls;
