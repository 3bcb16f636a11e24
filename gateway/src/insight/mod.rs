//! What the presses say: which count as opinions, and the satisfaction
//! figures and unhappiness rules built on them. Pure logic, no I/O.
//!
//! # Layout
//! - [`misuse`]: repeated presses are kept but not counted as opinions.
//! - [`scores`]: live figures per zone and terminal, the weekday × hour
//!   table, the timeline, zone unhappiness.

pub mod misuse;
pub mod scores;
