//! Live satisfaction figures, as a sans-IO engine fed with stored presses.
//!
//! - Per terminal and per zone, over a sliding window (5 min, 1 h, today):
//!   counted presses per button, presses not counted (misuse filter), and the
//!   satisfaction index (share of happy + very happy among counted presses).
//! - An hour-of-day × weekday table of counted presses, for staffing.
//! - A timeline of satisfaction in buckets, for the dashboard's chart.
//! - Zone unhappiness: when the unhappy share (very unhappy + unhappy) over
//!   the alert window reaches a zone's threshold with enough presses, the
//!   zone turns unhappy; it clears only below threshold minus a margin.
//!
//! Times are the site's local time (`utc_offset_minutes`) for "today" and
//! the hour table, so staffing reports read in the venue's hours.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use pressline_protocol::Button;
use serde::{Deserialize, Serialize};

/// `[scores]` in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoresConfig {
    /// The site's offset from UTC (minutes), for "today" and the hour table.
    pub utc_offset_minutes: i32,
    /// Window the unhappiness rule looks at.
    pub alert_window_secs: u64,
    /// Default unhappy share (percent) that raises a zone alert.
    pub unhappy_percent: u8,
    /// Default fewest counted presses in the window for a zone alert.
    pub min_presses: u32,
    /// The alert clears below `unhappy_percent - clear_margin_percent`.
    pub clear_margin_percent: u8,
}

impl Default for ScoresConfig {
    fn default() -> Self {
        ScoresConfig {
            utc_offset_minutes: 0,
            alert_window_secs: 300,
            unhappy_percent: 40,
            min_presses: 10,
            clear_margin_percent: 10,
        }
    }
}

/// A zone (`[zones.ID]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Display name, e.g. "North stand food court".
    pub name: String,
    pub terminals: Vec<String>,
    /// Overrides `[scores] unhappy_percent` for this zone.
    #[serde(default)]
    pub unhappy_percent: Option<u8>,
    /// Overrides `[scores] min_presses` for this zone.
    #[serde(default)]
    pub min_presses: Option<u32>,
}

/// Zone of terminals that belong to no configured zone.
pub const UNASSIGNED: &str = "unassigned";

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

/// Press counts and the satisfaction index.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub very_unhappy: u64,
    pub unhappy: u64,
    pub happy: u64,
    pub very_happy: u64,
    /// Presses counted as opinions (the four above).
    pub counted: u64,
    /// Presses the misuse filter did not count.
    pub not_counted: u64,
    /// Share (0–1) of happy + very happy among counted presses.
    pub satisfaction: Option<f64>,
    /// Share (0–1) of unhappy + very unhappy among counted presses.
    pub unhappy_share: Option<f64>,
}

impl Figures {
    fn add(&mut self, button: Button, counted: bool) {
        if !counted {
            self.not_counted += 1;
            return;
        }
        self.counted += 1;
        match button {
            Button::VeryUnhappy => self.very_unhappy += 1,
            Button::Unhappy => self.unhappy += 1,
            Button::Happy => self.happy += 1,
            Button::VeryHappy => self.very_happy += 1,
        }
    }

    fn merge(&mut self, other: &Figures) {
        self.very_unhappy += other.very_unhappy;
        self.unhappy += other.unhappy;
        self.happy += other.happy;
        self.very_happy += other.very_happy;
        self.counted += other.counted;
        self.not_counted += other.not_counted;
    }

    fn finish(mut self) -> Self {
        if self.counted > 0 {
            let n = self.counted as f64;
            self.satisfaction = Some((self.happy + self.very_happy) as f64 / n);
            self.unhappy_share = Some((self.unhappy + self.very_unhappy) as f64 / n);
        }
        self
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

/// A zone's unhappiness changed.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneTransition {
    pub zone: String,
    pub name: String,
    pub unhappy: bool,
    pub detail: String,
}

#[derive(Debug, Clone)]
struct Event {
    at_ms: i64,
    terminal: Arc<str>,
    zone: Arc<str>,
    button: Button,
    counted: bool,
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const KEEP_MS: i64 = 26 * 3600 * 1000;

/// The engine.
#[derive(Debug)]
pub struct Scores {
    config: ScoresConfig,
    zones: BTreeMap<String, ZoneConfig>,
    zone_of: HashMap<String, Arc<str>>,
    unassigned: Arc<str>,
    /// Presses by (time, arrival number): O(log n) to insert in time order
    /// whatever order they arrive in (a sorted VecDeque spent 30 % of the
    /// gateway's CPU moving elements, and went quadratic when presses were
    /// replayed at start-up in key order).
    recent: BTreeMap<(i64, u64), Event>,
    arrivals: u64,
    /// (zone, second) → presses dated in that second, for the alert rule:
    /// it runs every second, and walking every press in the window cost 7 %
    /// of the gateway's CPU with a million presses in it.
    zone_seconds: BTreeMap<(Arc<str>, i64), Figures>,
    hourly: Vec<Figures>,
    /// (zone, button, counted) → presses since start, for metrics.
    totals: BTreeMap<(Arc<str>, Button, bool), u64>,
    unhappy_zones: BTreeMap<String, bool>,
    names: HashMap<String, Arc<str>>,
}

impl Scores {
    pub fn new(config: ScoresConfig, zones: BTreeMap<String, ZoneConfig>) -> Scores {
        let mut zone_of = HashMap::new();
        for (id, zone) in &zones {
            let id: Arc<str> = Arc::from(id.as_str());
            for t in &zone.terminals {
                zone_of.insert(t.clone(), id.clone());
            }
        }
        Scores {
            config,
            zones,
            zone_of,
            unassigned: Arc::from(UNASSIGNED),
            recent: BTreeMap::new(),
            arrivals: 0,
            zone_seconds: BTreeMap::new(),
            hourly: vec![Figures::default(); 7 * 24],
            totals: BTreeMap::new(),
            unhappy_zones: BTreeMap::new(),
            names: HashMap::new(),
        }
    }

    /// Puts a terminal in a zone (registration with a zone). A zone that is
    /// not configured is created with its id as the name.
    pub fn assign(&mut self, terminal: &str, zone: &str) {
        if !self.zones.contains_key(zone) {
            self.zones.insert(
                zone.to_string(),
                ZoneConfig {
                    name: zone.to_string(),
                    terminals: Vec::new(),
                    unhappy_percent: None,
                    min_presses: None,
                },
            );
        }
        if let Some(z) = self.zones.get_mut(zone) {
            if !z.terminals.iter().any(|t| t == terminal) {
                z.terminals.push(terminal.to_string());
            }
        }
        for (id, z) in self.zones.iter_mut() {
            if id != zone {
                z.terminals.retain(|t| t != terminal);
            }
        }
        self.zone_of.insert(terminal.to_string(), Arc::from(zone));
    }

    /// The zone a terminal belongs to.
    pub fn zone_of(&self, terminal: &str) -> &str {
        self.zone_of.get(terminal).map_or(UNASSIGNED, |z| z)
    }

    fn zone_name(&self, zone: &str) -> String {
        self.zones
            .get(zone)
            .map_or_else(|| "Unassigned terminals".to_string(), |z| z.name.clone())
    }

    fn local_ms(&self, unix_ms: i64) -> i64 {
        unix_ms + self.config.utc_offset_minutes as i64 * 60_000
    }

    /// Records a stored press (`counted` from the misuse filter).
    pub fn record(&mut self, terminal: &str, button: Button, pressed_at_ms: i64, counted: bool) {
        let zone = self
            .zone_of
            .get(terminal)
            .cloned()
            .unwrap_or_else(|| self.unassigned.clone());
        *self
            .totals
            .entry((zone.clone(), button, counted))
            .or_default() += 1;
        let local = self.local_ms(pressed_at_ms);
        let day = local.div_euclid(86_400_000);
        // 1970-01-01 was a Thursday (index 3 from Monday).
        let weekday = (day + 3).rem_euclid(7) as usize;
        let hour = (local.rem_euclid(86_400_000) / 3_600_000) as usize;
        self.hourly[weekday * 24 + hour].add(button, counted);
        self.zone_seconds
            .entry((zone.clone(), pressed_at_ms.div_euclid(1000)))
            .or_default()
            .add(button, counted);
        let event = Event {
            at_ms: pressed_at_ms,
            terminal: self.intern(terminal),
            zone,
            button,
            counted,
        };
        self.arrivals += 1;
        self.recent.insert((pressed_at_ms, self.arrivals), event);
    }

    /// One shared name per terminal, so recording a press does not allocate.
    fn intern(&mut self, terminal: &str) -> Arc<str> {
        if let Some(name) = self.names.get(terminal) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(terminal);
        self.names.insert(terminal.to_string(), name.clone());
        name
    }

    /// Forgets events older than needed for "today" and the timeline.
    pub fn prune(&mut self, now_ms: i64) {
        while self
            .recent
            .first_key_value()
            .is_some_and(|((at, _), _)| *at < now_ms - KEEP_MS)
        {
            self.recent.pop_first();
        }
        let oldest = (now_ms - self.config.alert_window_secs as i64 * 1000).div_euclid(1000) - 1;
        self.zone_seconds.retain(|(_, second), _| *second >= oldest);
    }

    fn window_start(&self, now_ms: i64, window: Window) -> i64 {
        match window {
            Window::FiveMinutes => now_ms - 5 * 60_000,
            Window::Hour => now_ms - 3_600_000,
            Window::Today => {
                let local = self.local_ms(now_ms);
                local
                    - local.rem_euclid(86_400_000)
                    - self.config.utc_offset_minutes as i64 * 60_000
            }
        }
    }

    /// Events with `from_ms <= at < to_ms` (late-delivered presses can be
    /// dated in the future of a window that is asked about).
    fn events_between(&self, from_ms: i64, to_ms: i64) -> impl Iterator<Item = &Event> {
        let to_ms = to_ms.max(from_ms);
        self.recent.range((from_ms, 0)..(to_ms, 0)).map(|(_, e)| e)
    }

    /// Figures per site, zone and terminal over `window`.
    pub fn window(&self, now_ms: i64, window: Window) -> WindowView {
        let from = self.window_start(now_ms, window);
        let mut site = Figures::default();
        let mut zones: BTreeMap<&str, Figures> = self
            .zones
            .keys()
            .map(|z| (z.as_str(), Figures::default()))
            .collect();
        let mut terminals: BTreeMap<&str, (&str, Figures)> = BTreeMap::new();
        for e in self.events_between(from, now_ms + 1) {
            site.add(e.button, e.counted);
            zones.entry(&e.zone).or_default().add(e.button, e.counted);
            terminals
                .entry(&e.terminal)
                .or_insert((&e.zone, Figures::default()))
                .1
                .add(e.button, e.counted);
        }
        WindowView {
            window: window.name(),
            site: site.finish(),
            zones: zones
                .into_iter()
                .map(|(zone, f)| ZoneFigures {
                    zone: zone.to_string(),
                    name: self.zone_name(zone),
                    figures: f.finish(),
                    unhappy_alert: self.unhappy_zones.get(zone).copied().unwrap_or(false),
                })
                .collect(),
            terminals: terminals
                .into_iter()
                .map(|(t, (z, f))| TerminalFigures {
                    terminal: t.to_string(),
                    zone: z.to_string(),
                    figures: f.finish(),
                })
                .collect(),
        }
    }

    /// The weekday × hour table (site local time), Monday 00h first.
    pub fn hourly(&self) -> Vec<HourCell> {
        self.hourly
            .iter()
            .enumerate()
            .map(|(i, f)| HourCell {
                weekday: WEEKDAYS[i / 24],
                hour: (i % 24) as u8,
                figures: f.clone().finish(),
            })
            .collect()
    }

    /// Site-wide figures in `buckets` buckets of `bucket_ms`, oldest first,
    /// ending at `now_ms`.
    pub fn timeline(&self, now_ms: i64, bucket_ms: i64, buckets: usize) -> Vec<TimelinePoint> {
        let end = now_ms - now_ms.rem_euclid(bucket_ms) + bucket_ms;
        let start = end - bucket_ms * buckets as i64;
        let mut points: Vec<TimelinePoint> = (0..buckets)
            .map(|i| TimelinePoint {
                at_ms: start + i as i64 * bucket_ms,
                figures: Figures::default(),
            })
            .collect();
        for e in self.events_between(start, end) {
            let i = ((e.at_ms - start) / bucket_ms) as usize;
            if let Some(p) = points.get_mut(i) {
                p.figures.add(e.button, e.counted);
            }
        }
        points
            .into_iter()
            .map(|p| TimelinePoint {
                at_ms: p.at_ms,
                figures: p.figures.finish(),
            })
            .collect()
    }

    /// Presses since start by (zone, button, counted), for metrics.
    pub fn totals(&self) -> impl Iterator<Item = (&str, Button, bool, u64)> {
        self.totals.iter().map(|((z, b, c), n)| (&**z, *b, *c, *n))
    }

    /// Applies the unhappiness rule to every zone; returns what changed.
    pub fn evaluate_zones(&mut self, now_ms: i64) -> Vec<ZoneTransition> {
        // Whole seconds: from the second `alert_window_secs` ago to now.
        let from = (now_ms - self.config.alert_window_secs as i64 * 1000).div_euclid(1000);
        let to = now_ms.div_euclid(1000);
        let mut figures: HashMap<String, Figures> = HashMap::new();
        for ((zone, _), f) in self
            .zone_seconds
            .iter()
            .filter(|((_, second), _)| (from..=to).contains(second))
        {
            figures.entry(zone.to_string()).or_default().merge(f);
        }
        let mut changes = Vec::new();
        let zone_ids: Vec<String> = self
            .zones
            .keys()
            .cloned()
            .chain(std::iter::once(UNASSIGNED.to_string()))
            .collect();
        for zone in zone_ids {
            let f = figures.get(&zone).cloned().unwrap_or_default().finish();
            let (threshold, min) = match self.zones.get(&zone) {
                Some(z) => (
                    z.unhappy_percent.unwrap_or(self.config.unhappy_percent),
                    z.min_presses.unwrap_or(self.config.min_presses),
                ),
                None => (self.config.unhappy_percent, self.config.min_presses),
            };
            let share = f.unhappy_share.unwrap_or(0.0) * 100.0;
            let was = self.unhappy_zones.get(&zone).copied().unwrap_or(false);
            let now = if was {
                share >= threshold.saturating_sub(self.config.clear_margin_percent) as f64
            } else {
                f.counted >= min as u64 && share >= threshold as f64
            };
            if now != was {
                self.unhappy_zones.insert(zone.clone(), now);
                changes.push(ZoneTransition {
                    name: self.zone_name(&zone),
                    detail: format!(
                        "{:.0}% unhappy of {} counted presses in the last {} min (threshold {}%)",
                        share,
                        f.counted,
                        self.config.alert_window_secs / 60,
                        threshold
                    ),
                    zone,
                    unhappy: now,
                });
            }
        }
        changes
    }

    /// Marks zones already unhappy (restored alerts) without a transition.
    pub fn restore_unhappy(&mut self, zone: &str) {
        self.unhappy_zones.insert(zone.to_string(), true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_000_000_000; // Wednesday 2026-11-18 11:06:40 UTC

    fn zones() -> BTreeMap<String, ZoneConfig> {
        BTreeMap::from([
            (
                "food".to_string(),
                ZoneConfig {
                    name: "North food court".into(),
                    terminals: vec!["f1".into(), "f2".into()],
                    unhappy_percent: None,
                    min_presses: None,
                },
            ),
            (
                "gate".to_string(),
                ZoneConfig {
                    name: "Gate A".into(),
                    terminals: vec!["g1".into()],
                    unhappy_percent: Some(60),
                    min_presses: Some(4),
                },
            ),
        ])
    }

    #[test]
    fn windows_group_by_zone_and_terminal_and_ignore_uncounted_presses() {
        let mut s = Scores::new(ScoresConfig::default(), zones());
        s.record("f1", Button::Happy, T0 - 10 * 60_000, true); // outside 5 min
        s.record("f1", Button::VeryHappy, T0 - 60_000, true);
        s.record("f2", Button::Unhappy, T0 - 30_000, true);
        s.record("f2", Button::Unhappy, T0 - 29_000, false);
        s.record("x9", Button::Happy, T0 - 1_000, true);
        let v = s.window(T0, Window::FiveMinutes);
        assert_eq!(v.site.counted, 3);
        assert_eq!(v.site.not_counted, 1);
        let food = v.zones.iter().find(|z| z.zone == "food").unwrap();
        assert_eq!(
            (
                food.figures.very_happy,
                food.figures.unhappy,
                food.figures.counted
            ),
            (1, 1, 2)
        );
        assert_eq!(food.figures.satisfaction, Some(0.5));
        assert!(v
            .zones
            .iter()
            .any(|z| z.zone == UNASSIGNED && z.figures.happy == 1));
        assert_eq!(
            v.zones
                .iter()
                .find(|z| z.zone == "gate")
                .unwrap()
                .figures
                .counted,
            0,
            "configured zones always show"
        );
        assert_eq!(s.window(T0, Window::Hour).site.counted, 4);
    }

    #[test]
    fn today_and_the_hour_table_use_the_site_local_time() {
        let cfg = ScoresConfig {
            utc_offset_minutes: 120,
            ..Default::default()
        };
        let mut s = Scores::new(cfg, zones());
        // 2026-11-18 23:30 UTC is 01:30 local on Thursday the 19th.
        let t = 1_795_044_600_000;
        s.record("f1", Button::VeryUnhappy, t, true);
        let cell = s
            .hourly()
            .into_iter()
            .find(|c| c.figures.counted == 1)
            .unwrap();
        assert_eq!((cell.weekday, cell.hour), ("thu", 1));
        // Later that local day it still counts as today; the local day before does not.
        assert_eq!(s.window(t + 3_600_000, Window::Today).site.counted, 1);
        assert_eq!(s.window(t - 2 * 3_600_000, Window::Today).site.counted, 0);
    }

    #[test]
    fn a_zone_turning_unhappy_raises_once_and_clears_with_hysteresis() {
        let mut s = Scores::new(ScoresConfig::default(), zones());
        // 6 unhappy of 10: 60% >= 40% with enough presses.
        for i in 0..10 {
            let b = if i < 6 {
                Button::VeryUnhappy
            } else {
                Button::Happy
            };
            s.record("f1", b, T0 + i * 1000, true);
        }
        let t = s.evaluate_zones(T0 + 10_000);
        assert_eq!(t.len(), 1);
        assert!(t[0].unhappy && t[0].zone == "food");
        assert!(s.evaluate_zones(T0 + 11_000).is_empty(), "raised once");
        assert!(s.window(T0 + 11_000, Window::FiveMinutes).zones[0].unhappy_alert);
        // 6 of 16 = 37.5%: below 40 but above 30, still unhappy.
        for i in 0..6 {
            s.record("f2", Button::Happy, T0 + 20_000 + i, true);
        }
        assert!(s.evaluate_zones(T0 + 21_000).is_empty());
        // 6 of 24 = 25%: clears.
        for i in 0..8 {
            s.record("f2", Button::VeryHappy, T0 + 30_000 + i, true);
        }
        let t = s.evaluate_zones(T0 + 31_000);
        assert_eq!(t.len(), 1);
        assert!(!t[0].unhappy);
    }

    #[test]
    fn few_presses_do_not_alarm_and_zone_thresholds_override() {
        let mut s = Scores::new(ScoresConfig::default(), zones());
        for i in 0..3 {
            s.record("f1", Button::VeryUnhappy, T0 + i, true);
        }
        assert!(
            s.evaluate_zones(T0 + 10).is_empty(),
            "3 presses are not enough"
        );
        // Gate A: 60% threshold, 4 presses minimum: 3 of 4 unhappy = 75%.
        for (i, b) in [
            Button::Unhappy,
            Button::Unhappy,
            Button::VeryUnhappy,
            Button::Happy,
        ]
        .into_iter()
        .enumerate()
        {
            s.record("g1", b, T0 + i as i64, true);
        }
        let t = s.evaluate_zones(T0 + 10);
        assert_eq!(
            t.iter().map(|t| t.zone.as_str()).collect::<Vec<_>>(),
            vec!["gate"]
        );
    }

    #[test]
    fn the_timeline_buckets_presses() {
        let mut s = Scores::new(ScoresConfig::default(), zones());
        s.record("f1", Button::Happy, T0 - 25 * 60_000, true);
        s.record("f1", Button::Unhappy, T0 - 60_000, true);
        let tl = s.timeline(T0, 10 * 60_000, 6);
        assert_eq!(tl.len(), 6);
        assert_eq!(tl.iter().map(|p| p.figures.counted).sum::<u64>(), 2);
        assert_eq!(tl.last().unwrap().figures.unhappy, 1);
    }
}
