//! The Pressline site gateway.
//!
//! Terminals publish presses to the embedded MQTT broker; the gateway
//! deduplicates them, commits them to sled, acks them durably back to the
//! terminal, and forwards them to the central broker, losing nothing through
//! upstream outages, crashes and power cuts.
//!
//! ```text
//! terminals ──MQTT──▶ rumqttd ──local link──▶ ingest ──▶ commit ──▶ sled
//!     ▲                                                   │  (presses, outbox)
//!     └──────────── durable ack (after fsync) ◀───────────┘        │
//!                                                       forwarder ◀┘──MQTT──▶ upstream
//! ```
//!
//! # Layout
//! - [`config`]: typed configuration and its documented defaults.
//! - [`broker`]: the embedded rumqttd site broker.
//! - [`ingest`]: decoding and validating terminal publishes (own thread).
//! - [`commit`]: group commit to sled, then durable acks (own thread).
//! - [`acks`]: coalescing committed presses into ack ranges.
//! - [`store`]: the sled layout (presses, outbox) behind one interface.
//! - [`outbox`]: the upstream outbox in segments, acknowledged ranges
//!   skipped and finished segments dropped whole.
//! - [`forwarder`]: upstream store-and-forward with rumqttc.
//! - [`health`]: terminal registry and health rules (sans-IO).
//! - [`retention`]: hourly deletion of presses past the retention period.
//! - [`releases`]: signed firmware releases uploaded for OTA.
//! - [`rollout`]: the rollout orchestrator (sans-IO state machine).
//! - [`rollouts`]: its service: OTA link, chunk serving, persistence.
//! - [`registry`]: the task running them: persistence, upstream health/alerts.
//! - [`http`]: the HTTP API.
//! - [`https`]: the TLS listener the API is served from when HTTPS is on.
//! - [`identity`]: registered terminals, broker logins, press MACs.
//! - [`tls`]: rustls for the upstream client, the terminal listener and
//!   HTTPS; certificate errors in plain words.
//! - [`secret_files`]: owner-only secrets on disk; world-readable keys refused.
//! - [`stats`]: counters and rate-limited logging.
//! - [`demo`]: in-process simulated terminals for the demo.
//! - [`gateway`]: wiring it all together, start-up and graceful shutdown.

pub mod acks;
pub mod broker;
pub mod commit;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod forwarder;
pub mod gateway;
pub mod health;
pub mod http;
pub mod https;
pub mod identity;
pub mod ingest;
pub mod metrics;
pub mod misuse;
pub mod outbox;
pub mod registry;
pub mod releases;
pub mod retention;
pub mod rollout;
pub mod rollouts;
pub mod scores;
pub mod secret_files;
pub mod stats;
pub mod store;
pub mod time;
pub mod tls;

pub use config::Config;
