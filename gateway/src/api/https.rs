//! HTTPS for the API and dashboard: the listener shared with the central
//! web view (`pressline_host::https`).

pub use pressline_host::https::TlsListener;
