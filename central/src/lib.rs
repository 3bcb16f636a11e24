//! pressline-central: the gateways' upstream documents, from a RabbitMQ
//! cluster into PostgreSQL, exactly once.
//!
//! Gateways publish over MQTT to any node of the cluster; RabbitMQ's MQTT
//! plugin routes `pressline/v1/...` to `amq.topic` as `pressline.v1...`,
//! and a durable quorum queue bound there holds everything until a
//! consumer has committed it. Several consumers may run at once
//! (competing consumers on the one queue).
//!
//! # Layout
//! - [`documents`]: what a message is (press, status, health, alert, OTA
//!   event) or why it is rejected. Pure.
//! - [`database`]: schema migrations and one transaction per batch.
//! - [`queue`]: the queue, its binding, delivery limit and dead-letter
//!   target, its depth.
//! - [`dead_letters`]: counting and replaying dead-lettered messages.
//! - [`batching`]: deliveries cut into transactions (pure).
//! - [`consumer`]: deliveries → batch → commit → ack, with reconnection.
//! - [`retention`]: months of presses dropped past the setting, hourly.
//! - [`metrics`]: `/metrics`, `/api/v1/stats`, `/healthz`.
//! - [`mail`]: reports e-mailed to subscribers, once per period.
//! - [`web`]: the reports in a browser (network, sites, comparison, CSV),
//!   for viewer tokens.

pub mod batching;
pub mod consumer;
pub mod database;
pub mod dead_letters;
pub mod documents;
pub mod mail;
pub mod metrics;
pub mod queue;
pub mod retention;
pub mod web;
