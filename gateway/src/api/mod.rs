//! The HTTP API and the dashboard (axum).
//!
//! # Layout
//! - [`state`]: what every handler shares ([`state::ApiState`]).
//! - [`token`]: the bearer token every call but `/healthz` needs.
//! - [`routes`]: the route table and the handlers for stats, terminals,
//!   alerts, scores, the dashboard data and its event stream.
//! - [`alerts`]: alert list, acknowledging (API and signed links),
//!   response figures.
//! - [`ota`]: the handlers for firmware releases and rollouts.
//! - [`dashboard`]: the embedded page and the snapshot it shows.
//! - [`metrics`]: Prometheus text exposition.
//! - [`server`]: serving until shutdown, over HTTP or [`https`].

pub mod alerts;
pub mod dashboard;
pub mod https;
pub mod metrics;
pub mod ota;
pub mod routes;
pub mod server;
pub mod state;
pub mod token;
