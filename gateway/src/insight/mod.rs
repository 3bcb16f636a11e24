//! What the presses say: which count as opinions, and the satisfaction
//! figures and reports built on them.
//!
//! # Layout
//! - [`misuse`]: repeated presses are kept but not counted as opinions.
//! - [`counts`]: press counts and the compact day records (quarters of an
//!   hour) reports are built from.
//! - [`scores`]: the engine (sans-IO): live figures per zone and terminal,
//!   the weekday × hour table, the timeline, and what changed since its
//!   last checkpoint.
//! - [`zone_rules`]: zones turning unhappy, and praise (pure).
//! - [`checkpoints`]: the engine's checkpoints in the store, start-up from
//!   them and the press log, expiry past the aggregate retention.

pub mod checkpoints;
pub mod counts;
pub mod misuse;
pub mod scores;
pub mod zone_rules;
