//! Pressline's reports over the central PostgreSQL (filled by
//! `pressline-central`): the one implementation behind `fleet report`, the
//! central web view and the e-mailed reports, so they can never disagree.
//!
//! - **Happy Index**: the mean counted press on a 0–100 scale (very
//!   unhappy 0, unhappy 33.3, happy 66.7, very happy 100). Presses the
//!   gateway's misuse filter did not count are left out.
//! - **Ranking**: sites ordered by their index shrunk toward the network's
//!   (`(n·index + k·network) / (n + k)`, `k` = the prior presses), so a
//!   site with a handful of presses cannot top or bottom the table by luck.
//! - **Hour × weekday** over some weeks, each site in its own IANA time
//!   zone (daylight saving included; PostgreSQL's `AT TIME ZONE`).
//! - **Change**: index points against the period of the same length just
//!   before.
//!
//! Periods are whole local days at each site. A press counts at
//! `pressed_at`, or `received_at` when the terminal could not tell.
//!
//! # Layout
//! - [`counts`]: presses per face, the index, periods. Pure.
//! - [`ranking`]: the report (network, ranked sites, zones, hours) from
//!   grouped figures. Pure.
//! - [`fetch`]: the grouped figures read from PostgreSQL (rollups or raw
//!   presses).
//! - [`export`]: the report as one CSV table.
//! - [`site`]: one site's page: index per week, unhappiest hours, alert
//!   response, terminal health.
//! - [`network`]: what the overview adds per site: open alerts, terminals
//!   offline.

pub mod counts;
pub mod export;
pub mod fetch;
pub mod network;
pub mod ranking;
pub mod site;

pub use counts::{fmt_date, Counts, Period};
pub use fetch::{fetch, fetch_hours, fetch_totals, fetch_totals_on, Figures, Source};
pub use ranking::{build, Report};
