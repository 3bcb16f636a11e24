//! The Pressline site gateway.
//!
//! Terminals publish presses to the embedded MQTT broker; the gateway
//! deduplicates them, commits them to its store, acks them durably back to the
//! terminal, and forwards them to the central broker, losing nothing through
//! upstream outages, crashes and power cuts.
//!
//! ```text
//! terminals ──MQTT──▶ broker ──local link──▶ pipeline::ingest ──▶ pipeline::commit ──▶ store
//!     ▲                                                                 │       (presses, outbox)
//!     └──────────── durable ack (after fsync) ◀─────────────────────────┘              │
//!                                                   pipeline::forwarder ◀──────────────┘──MQTT──▶ upstream
//! ```
//!
//! # Layout
//! Folders are subsystems; each has its own map. Floors, from the bottom:
//! nothing below depends on anything above it.
//!
//! - [`clock`], [`stats`]: the time, and the counters every part updates;
//!   [`allocator`]: the memory allocator's settings; [`hysteresis`]: raise
//!   past one bound, clear past another (every alert rule).
//! - [`store`]: everything persisted, behind one interface: raw presses in
//!   a file per day, and in sled the dedup state, the upstream outbox in
//!   segments, terminal, alert and OTA records.
//! - [`security`]: TLS and secrets on disk.
//! - [`insight`]: which presses count as opinions, and the satisfaction
//!   figures built on them (pure logic).
//! - [`alerting`]: the site's alerts and their lifecycle, routing to
//!   notification channels (webhook, Slack, Teams, ntfy, e-mail), durable
//!   delivery, response figures.
//! - [`terminals`]: identity, health rules and the registry task.
//! - [`ota`]: firmware releases and rollouts.
//! - [`broker`]: the embedded rumqttd site broker.
//! - [`pipeline`]: the press path: ingest → commit → store → forwarder,
//!   durable acks, retention.
//! - [`api`]: the HTTP API, dashboard and metrics.
//! - [`site_time`]: the site's wall clock (IANA zone or fixed offset).
//! - [`config`]: typed configuration and its documented defaults.
//! - [`demo`]: in-process simulated terminals for `gateway demo`.
//! - [`gateway`]: wiring it all together: start-up, and graceful shutdown
//!   when the future it is given completes.

pub mod alerting;
pub mod allocator;
pub mod api;
pub mod broker;
pub mod clock;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod hysteresis;
pub mod insight;
pub mod ota;
pub mod pipeline;
pub mod security;
pub mod site_time;
pub mod stats;
pub mod store;
pub mod terminals;

pub use config::Config;
