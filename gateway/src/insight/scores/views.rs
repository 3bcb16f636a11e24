//! What the API and the dashboard read from the engine: figures over a
//! window per site, zone and terminal; the weekday × hour table; the
//! timeline.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::{Scores, DAY_MS, WEEKDAYS};
use crate::insight::counts::{Counts, Figures, SLOT_MS};
use crate::insight::zone_rules::ZoneRule;

/// A sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    FiveMinutes,
    Hour,
    Today,
}

impl Window {
    pub fn parse(s: &str) -> Option<Window> {
        match s {
            "5m" => Some(Window::FiveMinutes),
            "1h" => Some(Window::Hour),
            "today" => Some(Window::Today),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Window::FiveMinutes => "5m",
            Window::Hour => "1h",
            Window::Today => "today",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ZoneFigures {
    pub zone: String,
    pub name: String,
    pub figures: Figures,
    pub unhappy_alert: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TerminalFigures {
    pub terminal: String,
    pub zone: String,
    pub figures: Figures,
}

/// `GET /api/v1/scores` and the dashboard's zone cards.
#[derive(Debug, Clone, Serialize)]
pub struct WindowView {
    pub window: &'static str,
    pub site: Figures,
    pub zones: Vec<ZoneFigures>,
    pub terminals: Vec<TerminalFigures>,
}

/// One cell of the weekday × hour table.
#[derive(Debug, Clone, Serialize)]
pub struct HourCell {
    /// `mon` … `sun`.
    pub weekday: &'static str,
    pub hour: u8,
    pub figures: Figures,
}

/// One bucket of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    /// Bucket start, Unix ms.
    pub at_ms: i64,
    pub figures: Figures,
}

impl Scores {
    /// Figures per site, zone and terminal over `window`.
    pub fn window(&self, now_ms: i64, window: Window) -> WindowView {
        let mut site = Counts::default();
        let mut zones: BTreeMap<&str, Counts> = self
            .zones
            .keys()
            .map(|z| (z.as_str(), Counts::default()))
            .collect();
        let mut terminals: BTreeMap<&str, Counts> = BTreeMap::new();
        match window {
            Window::FiveMinutes | Window::Hour => {
                let span = if window == Window::Hour { 60 } else { 5 };
                let now_minute = now_ms.div_euclid(60_000);
                let from = (now_minute - span, Arc::<str>::from(""));
                for ((minute, terminal), counts) in self.minutes.range(from..) {
                    if *minute > now_minute {
                        break;
                    }
                    terminals.entry(terminal).or_default().merge(counts);
                }
            }
            Window::Today => {
                let today = self.local_day(now_ms);
                let from = (today, Arc::<str>::from(""));
                for ((day, terminal), slots) in self.terminal_days.range(from..) {
                    if *day != today {
                        break;
                    }
                    terminals.entry(terminal).or_default().merge(&slots.total());
                }
            }
        }
        for counts in terminals.values() {
            site.merge(counts);
        }
        for (terminal, counts) in &terminals {
            zones
                .entry(self.zone_of(terminal))
                .or_default()
                .merge(counts);
        }
        WindowView {
            window: window.name(),
            site: site.figures(),
            zones: zones
                .into_iter()
                .map(|(zone, c)| ZoneFigures {
                    zone: zone.to_string(),
                    name: self.zone_name(zone),
                    figures: c.figures(),
                    unhappy_alert: self.rules.holds(ZoneRule::Unhappy, zone),
                })
                .collect(),
            terminals: terminals
                .into_iter()
                .filter(|(t, _)| *t != super::FORGOTTEN)
                .map(|(t, c)| TerminalFigures {
                    terminal: t.to_string(),
                    zone: self.zone_of(t).to_string(),
                    figures: c.figures(),
                })
                .collect(),
        }
    }

    /// The weekday × hour table (site local time), Monday 00h first.
    pub fn hourly(&self) -> Vec<HourCell> {
        self.hourly
            .iter()
            .enumerate()
            .map(|(i, c)| HourCell {
                weekday: WEEKDAYS[i / 24],
                hour: (i % 24) as u8,
                figures: c.figures(),
            })
            .collect()
    }

    /// Site-wide figures per quarter of an hour, `buckets` of them, oldest
    /// first, the last one holding `now_ms` (today and yesterday).
    pub fn timeline(&self, now_ms: i64, buckets: usize) -> Vec<TimelinePoint> {
        let local_now = self.local_ms(now_ms);
        let last_start = local_now - local_now.rem_euclid(SLOT_MS);
        (0..buckets as i64)
            .rev()
            .map(|back| {
                let local_start = last_start - back * SLOT_MS;
                let day = local_start.div_euclid(DAY_MS);
                let slot = (local_start.rem_euclid(DAY_MS) / SLOT_MS) as u8;
                let counts = self
                    .site_days
                    .get(&day)
                    .and_then(|d| d.slots().find(|(s, _)| *s == slot).map(|(_, c)| *c))
                    .unwrap_or_default();
                TimelinePoint {
                    at_ms: self.site_time.unix_ms(local_start),
                    figures: counts.figures(),
                }
            })
            .collect()
    }
}
