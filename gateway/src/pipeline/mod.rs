//! The press path, in the order a press travels it.
//!
//! ```text
//! rumqttd local link ─▶ ingest ─▶ commit ─▶ store (presses + outbox) ─▶ forwarder ─▶ upstream
//!                        (thread)  (thread)  │                            (tokio)
//!                                            └─▶ durable ack to the terminal (acks)
//! ```
//!
//! # Layout
//! - [`ingest`]: decodes and validates terminal publishes on its own
//!   thread; hands presses to the committer, health to the registry.
//! - [`commit`]: group commit (one transaction and one fsync per batch),
//!   then the durable acks.
//! - [`commit_plan`]: what the committer does with a batch (dedup within
//!   it, refusal while storage is full, the misuse verdict), pure.
//! - [`acks`]: a committed batch as few acks as possible.
//! - [`forwarder`]: store-and-forward upstream with rumqttc, live presses
//!   ahead of the backlog; the outbox is its only truth.
//! - [`retention`]: presses past the retention period leave the store.

pub mod acks;
pub mod commit;
pub mod commit_plan;
pub mod forwarder;
pub mod ingest;
pub mod retention;
