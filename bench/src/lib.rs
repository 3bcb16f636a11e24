//! Benchmark helpers for `scripts/bench.sh` (see BENCHMARKS.md):
//! - `bench-relay`: bare rumqttd with the gateway's own broker settings
//!   and nothing behind it, to measure the ceiling of the broker the
//!   gateway embeds.
//! - `bench-subscriber`: one QoS 1 subscriber that counts what a broker
//!   relays and, optionally, logs when each press id arrived.
