//! The gateway dashboard: one page embedded in the binary (plain HTML, CSS,
//! JavaScript and SVG: nothing fetched from elsewhere), fed by
//! [`Snapshot`]s from `/api/v1/dashboard` and the `/api/v1/events` stream.
//!
//! The page itself holds no data, so it is served without a token; it asks
//! for the token (login form, or `?token=` on first load, then kept in the
//! browser's local storage) and sends it with every API call.

use pressline_protocol::upstream::{Alert, TerminalHealth};
use serde::Serialize;

use crate::api::state::ApiState;
use crate::clock::rfc3339_ms;
use crate::clock::unix_ms_now;
use crate::insight::scores::{HourCell, TimelinePoint, Window, WindowView};

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// Everything the dashboard shows.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub site: String,
    pub generated_at: String,
    /// Zone cards: the last 5 minutes ...
    pub now: WindowView,
    /// ... and today.
    pub today: WindowView,
    /// Site satisfaction in 15-minute buckets over the last 6 hours.
    pub timeline: Vec<TimelinePoint>,
    /// Weekday × hour table.
    pub hourly: Vec<HourCell>,
    /// Alerts not yet closed (open, or recovered within the close delay).
    pub alerts: Vec<Alert>,
    pub terminals: Vec<TerminalHealth>,
    /// Notification channels and how delivery goes.
    pub channels: Vec<crate::alerting::delivery::ChannelStatus>,
    /// Response figures over the last 7 days.
    pub response: crate::alerting::response::ResponseFigures,
    pub presses_stored: u64,
    pub forward_pending: u64,
    pub upstream_connected: Option<bool>,
}

pub fn snapshot(state: &ApiState) -> Snapshot {
    let now = unix_ms_now();
    let stats = state.snapshot();
    let (now_view, today, timeline, hourly) = {
        let scores = state.registry.scores();
        (
            scores.window(now, Window::FiveMinutes),
            scores.window(now, Window::Today),
            scores.timeline(now, 24),
            scores.hourly(),
        )
    };
    let (alerts, terminals) = {
        let monitor = state.registry.monitor();
        (
            monitor
                .alerts()
                .iter()
                .filter(|a| a.lifecycle != Some(pressline_protocol::upstream::Lifecycle::Closed))
                .cloned()
                .collect(),
            monitor
                .terminals()
                .map(|t| t.document(&state.site))
                .collect(),
        )
    };
    Snapshot {
        site: state.site.clone(),
        generated_at: rfc3339_ms(now),
        now: now_view,
        today,
        timeline,
        hourly,
        alerts,
        terminals,
        channels: stats.notification_channels.clone(),
        response: crate::api::alerts::response_figures(state, 7),
        presses_stored: stats.presses_stored,
        forward_pending: stats.forward_pending,
        upstream_connected: stats.upstream_connected,
    }
}
