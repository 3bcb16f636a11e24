//! Live satisfaction figures and the aggregates reports read, as a sans-IO
//! engine fed with stored presses (time comes in as `now_ms`).
//!
//! What it keeps is bounded by configuration, not by history:
//! - per terminal and minute, the last hour ([`LIVE_MINUTES`]): the
//!   5-minute and 1-hour windows;
//! - per zone and second, the alert window: the unhappiness rule (when the
//!   unhappy share reaches a zone's threshold with enough presses, the zone
//!   turns unhappy; it clears only below threshold minus a margin);
//! - per terminal and per site, each local day in quarters of an hour
//!   ([`DaySlots`]): today's figures, the timeline and daily reports. Today
//!   and yesterday are in memory; every day is checkpointed to the store
//!   and kept there for the aggregate retention;
//! - the weekday × hour table: the site's days within aggregate retention.
//!
//! Presses are folded in once, after their commit is durable. A checkpoint
//! ([`Scores::take_checkpoint`]) carries what changed since the last one
//! and the id of the last press-log record folded in; after a restart the
//! engine loads the checkpointed days and folds in the press log above that
//! id, and the last hour for the live windows.
//!
//! Times are the site's local time ([`SiteTime`]) for "today", the
//! quarters and the hour table, so staffing reports read in the venue's
//! hours. Windows are whole minutes: the 5-minute window is the current
//! minute and the five before it.

//!
//! # Layout
//! - this file: the engine: folding presses in, checkpoints, pruning;
//! - [`config`]: `[scores]` and `[zones]`;
//! - [`views`]: figures over windows, the hour table, the timeline;
//! - [`store_keys`]: keys of the day records in the store.
//!
//! The zone rules it feeds are in [`crate::insight::zone_rules`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use pressline_protocol::Button;

pub use super::counts::Figures;
use super::counts::{Counts, DaySlots, SLOT_MS};
pub use super::zone_rules::{ZoneRule, ZoneTransition};
use super::zone_rules::{ZoneRules, ZoneWindow};
use crate::site_time::SiteTime;
use crate::store::PressBatch;

mod config;
mod store_keys;
mod views;

pub use config::{ScoresConfig, ZoneConfig};
pub use store_keys::{parse_day_key, site_day_key, terminal_day_key, terminal_days_of, SITE_DAYS};
pub use views::{HourCell, TerminalFigures, TimelinePoint, Window, WindowView, ZoneFigures};

/// Zone of terminals that belong to no configured zone.
pub const UNASSIGNED: &str = "unassigned";

/// Where the counts of forgotten terminals go: no terminal has an empty
/// id, and the views list no terminal by it.
pub const FORGOTTEN: &str = "";

/// Minutes of per-terminal counts kept for the live windows.
pub const LIVE_MINUTES: i64 = 61;

/// What changed since the last checkpoint: day deltas to add to what the
/// store holds, and the last press-log id folded in.
#[derive(Debug, Clone, Default)]
pub struct ScoresCheckpoint {
    pub site_days: Vec<(i64, DaySlots)>,
    pub terminal_days: Vec<((i64, String), DaySlots)>,
    pub watermark: Option<u64>,
}

impl ScoresCheckpoint {
    pub fn is_empty(&self) -> bool {
        self.site_days.is_empty() && self.terminal_days.is_empty()
    }
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_MS: i64 = 86_400_000;

/// The engine.
#[derive(Debug)]
pub struct Scores {
    config: ScoresConfig,
    site_time: SiteTime,
    /// Days of aggregates kept (older days are not folded in).
    retention_days: u32,
    zones: BTreeMap<String, ZoneConfig>,
    zone_of: HashMap<String, Arc<str>>,
    unassigned: Arc<str>,
    names: HashMap<String, Arc<str>>,
    /// (minute, terminal) → counts: the last [`LIVE_MINUTES`].
    minutes: BTreeMap<(i64, Arc<str>), Counts>,
    /// (zone, second) → counts, for the zone rules: they run every second,
    /// and walking every press of the window instead would cost in
    /// proportion to the presses in it.
    zone_seconds: BTreeMap<(Arc<str>, i64), Counts>,
    /// Today and yesterday (local), complete.
    terminal_days: BTreeMap<(i64, Arc<str>), DaySlots>,
    site_days: BTreeMap<i64, DaySlots>,
    /// Weekday × hour, over the site days within retention.
    hourly: Vec<Counts>,
    /// Changes since the last checkpoint.
    pending_terminal_days: BTreeMap<(i64, Arc<str>), DaySlots>,
    pending_site_days: BTreeMap<i64, DaySlots>,
    folded_through: Option<u64>,
    checkpointed_through: Option<u64>,
    /// The local day of the latest `now` seen.
    today: i64,
    /// (zone, button, counted) → presses since start, for metrics.
    totals: BTreeMap<(Arc<str>, Button, bool), u64>,
    rules: ZoneRules,
}

/// How a press-log record is folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// Just committed: everything, and the since-start totals.
    New,
    /// From the press log at start-up, above the checkpoint: the days and
    /// the live windows.
    Replay,
    /// From the press log at start-up, already in the checkpointed days:
    /// the live windows only.
    LiveOnly,
}

impl Scores {
    pub fn new(
        config: ScoresConfig,
        zones: BTreeMap<String, ZoneConfig>,
        retention_days: u32,
        now_ms: i64,
    ) -> Scores {
        let mut zone_of = HashMap::new();
        for (id, zone) in &zones {
            let id: Arc<str> = Arc::from(id.as_str());
            for t in &zone.terminals {
                zone_of.insert(t.clone(), id.clone());
            }
        }
        // The configuration was validated at start; a zone that vanished
        // from the tz database since then falls back to the fixed offset.
        let site_time =
            SiteTime::from_config(config.time_zone.as_deref(), config.utc_offset_minutes)
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "using scores.utc_offset_minutes instead");
                    SiteTime::Fixed {
                        offset_ms: i64::from(config.utc_offset_minutes) * 60_000,
                    }
                });
        let mut scores = Scores {
            config,
            site_time,
            retention_days: retention_days.max(2),
            zones,
            zone_of,
            unassigned: Arc::from(UNASSIGNED),
            names: HashMap::new(),
            minutes: BTreeMap::new(),
            zone_seconds: BTreeMap::new(),
            terminal_days: BTreeMap::new(),
            site_days: BTreeMap::new(),
            hourly: vec![Counts::default(); 7 * 24],
            pending_terminal_days: BTreeMap::new(),
            pending_site_days: BTreeMap::new(),
            folded_through: None,
            checkpointed_through: None,
            today: 0,
            totals: BTreeMap::new(),
            rules: ZoneRules::default(),
        };
        scores.today = scores.local_day(now_ms);
        scores
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

    fn zone_arc(&self, terminal: &str) -> Arc<str> {
        self.zone_of
            .get(terminal)
            .cloned()
            .unwrap_or_else(|| self.unassigned.clone())
    }

    fn zone_name(&self, zone: &str) -> String {
        self.zones
            .get(zone)
            .map_or_else(|| "Unassigned terminals".to_string(), |z| z.name.clone())
    }

    fn local_ms(&self, unix_ms: i64) -> i64 {
        self.site_time.local_ms(unix_ms)
    }

    fn local_day(&self, unix_ms: i64) -> i64 {
        self.local_ms(unix_ms).div_euclid(DAY_MS)
    }

    /// (local day, quarter of the day) of a time.
    fn day_slot(&self, unix_ms: i64) -> (i64, u8) {
        let local = self.local_ms(unix_ms);
        (
            local.div_euclid(DAY_MS),
            (local.rem_euclid(DAY_MS) / SLOT_MS) as u8,
        )
    }

    /// The earliest local day still within aggregate retention.
    fn first_kept_day(&self) -> i64 {
        self.today - i64::from(self.retention_days) + 1
    }

    fn hour_index(day: i64, slot: u8) -> usize {
        // 1970-01-01 was a Thursday (index 3 from Monday).
        let weekday = (day + 3).rem_euclid(7) as usize;
        weekday * 24 + usize::from(slot / 4)
    }

    /// One shared name per terminal, so folding a press does not allocate.
    fn intern(&mut self, terminal: &str) -> Arc<str> {
        if let Some(name) = self.names.get(terminal) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(terminal);
        self.names.insert(terminal.to_string(), name.clone());
        name
    }

    /// Folds in the presses of press-log record `id`.
    pub fn fold(&mut self, now_ms: i64, id: u64, batch: &PressBatch, how: Fold) {
        self.today = self.today.max(self.local_day(now_ms));
        let live_from = now_ms.div_euclid(60_000) - LIVE_MINUTES;
        let seconds_from =
            (now_ms - self.config.alert_window_secs as i64 * 1000).div_euclid(1000) - 1;
        for run in &batch.runs {
            let terminal = self.intern(&run.terminal);
            let zone = self.zone_arc(&terminal);
            for p in &run.presses {
                let at = p.at_ms();
                if how == Fold::New {
                    *self
                        .totals
                        .entry((zone.clone(), p.button, p.counted))
                        .or_default() += 1;
                }
                if at.div_euclid(60_000) >= live_from {
                    self.minutes
                        .entry((at.div_euclid(60_000), terminal.clone()))
                        .or_default()
                        .add(p.button, p.counted);
                }
                if at.div_euclid(1000) >= seconds_from {
                    self.zone_seconds
                        .entry((zone.clone(), at.div_euclid(1000)))
                        .or_default()
                        .add(p.button, p.counted);
                }
                if how == Fold::LiveOnly {
                    continue;
                }
                let (day, slot) = self.day_slot(at);
                if day < self.first_kept_day() {
                    continue;
                }
                self.hourly[Self::hour_index(day, slot)].add(p.button, p.counted);
                if day >= self.today - 1 {
                    self.terminal_days
                        .entry((day, terminal.clone()))
                        .or_default()
                        .add(slot, p.button, p.counted);
                    self.site_days
                        .entry(day)
                        .or_default()
                        .add(slot, p.button, p.counted);
                }
                self.pending_terminal_days
                    .entry((day, terminal.clone()))
                    .or_default()
                    .add(slot, p.button, p.counted);
                self.pending_site_days
                    .entry(day)
                    .or_default()
                    .add(slot, p.button, p.counted);
            }
        }
        if how != Fold::LiveOnly {
            self.folded_through = self.folded_through.max(Some(id));
        }
    }

    /// The last press-log id folded into the days.
    pub fn folded_through(&self) -> Option<u64> {
        self.folded_through
    }

    /// Starts from a checkpoint: its watermark ...
    pub fn restore_watermark(&mut self, watermark: Option<u64>) {
        self.folded_through = watermark;
        self.checkpointed_through = watermark;
    }

    /// ... its site days (the hour table; today and yesterday for the
    /// timeline) ...
    pub fn restore_site_day(&mut self, day: i64, slots: DaySlots) {
        if day < self.first_kept_day() {
            return;
        }
        for (slot, counts) in slots.slots() {
            self.hourly[Self::hour_index(day, slot)].merge(counts);
        }
        if day >= self.today - 1 {
            self.site_days.entry(day).or_default().merge(&slots);
        }
    }

    /// ... and its terminal days for today and yesterday.
    pub fn restore_terminal_day(&mut self, day: i64, terminal: &str, slots: DaySlots) {
        if day >= self.today - 1 {
            let terminal = self.intern(terminal);
            self.terminal_days
                .entry((day, terminal))
                .or_default()
                .merge(&slots);
        }
    }

    /// The local days whose figures are kept in memory (today and
    /// yesterday): which terminal records to load at start-up.
    pub fn days_in_memory(&self) -> [i64; 2] {
        [self.today - 1, self.today]
    }

    /// A site day leaves the aggregate retention: out of the hour table.
    pub fn forget_site_day(&mut self, day: i64, slots: &DaySlots) {
        for (slot, counts) in slots.slots() {
            self.hourly[Self::hour_index(day, slot)].subtract(counts);
        }
    }

    /// The first local day kept, given `now_ms`: records before it expire.
    pub fn retention_cutoff(&self, now_ms: i64) -> i64 {
        self.local_day(now_ms) - i64::from(self.retention_days) + 1
    }

    /// What changed since the last checkpoint (taken out: hand it back
    /// with [`Scores::checkpoint_failed`] if it cannot be written). `None`
    /// when there is nothing to write.
    pub fn take_checkpoint(&mut self) -> Option<ScoresCheckpoint> {
        if self.pending_site_days.is_empty()
            && self.pending_terminal_days.is_empty()
            && self.folded_through == self.checkpointed_through
        {
            return None;
        }
        let checkpoint = ScoresCheckpoint {
            site_days: std::mem::take(&mut self.pending_site_days)
                .into_iter()
                .collect(),
            terminal_days: std::mem::take(&mut self.pending_terminal_days)
                .into_iter()
                .map(|((d, t), s)| ((d, t.to_string()), s))
                .collect(),
            watermark: self.folded_through,
        };
        self.checkpointed_through = self.folded_through;
        Some(checkpoint)
    }

    /// The checkpoint could not be written: its changes are pending again.
    pub fn checkpoint_failed(&mut self, checkpoint: ScoresCheckpoint, previous: Option<u64>) {
        for (day, slots) in checkpoint.site_days {
            self.pending_site_days.entry(day).or_default().merge(&slots);
        }
        for ((day, terminal), slots) in checkpoint.terminal_days {
            let terminal = self.intern(&terminal);
            self.pending_terminal_days
                .entry((day, terminal))
                .or_default()
                .merge(&slots);
        }
        self.checkpointed_through = previous;
    }

    /// The watermark of the last checkpoint written.
    pub fn checkpointed_through(&self) -> Option<u64> {
        self.checkpointed_through
    }

    /// Forgets what is past the live windows and the days in memory.
    pub fn prune(&mut self, now_ms: i64) {
        self.today = self.today.max(self.local_day(now_ms));
        let live_from = now_ms.div_euclid(60_000) - LIVE_MINUTES;
        while self
            .minutes
            .first_key_value()
            .is_some_and(|((minute, _), _)| *minute < live_from)
        {
            self.minutes.pop_first();
        }
        let oldest = (now_ms - self.config.alert_window_secs as i64 * 1000).div_euclid(1000) - 1;
        self.zone_seconds.retain(|(_, second), _| *second >= oldest);
        let keep_from = self.today - 1;
        self.terminal_days.retain(|(day, _), _| *day >= keep_from);
        self.site_days.retain(|day, _| *day >= keep_from);
        // A name nothing else holds belongs to a terminal silent for the
        // live windows and the days in memory: interned again if it comes
        // back, gone for good if it was invented.
        self.names.retain(|_, name| Arc::strong_count(name) > 1);
    }

    /// Forgets terminals the site does not know (no zone) that went
    /// silent: their counts in the live windows and the days in memory
    /// move to [`FORGOTTEN`], so site and zone figures stay as they were
    /// while the per-terminal entries, and their names, go.
    ///
    /// A terminal with counts in a minute after `silent_since_ms` pressed
    /// again (its press was folded in before the registry heard of it):
    /// it stays, and its entries age out with the windows if it is gone.
    pub fn forget_terminals(&mut self, gone: &[String], silent_since_ms: i64) {
        // Called every registry tick: nothing to walk on most of them.
        if gone.is_empty() {
            return;
        }
        let after = silent_since_ms.div_euclid(60_000);
        let pressed_since: std::collections::HashSet<&str> = self
            .minutes
            .range((after + 1, Arc::<str>::from(""))..)
            .map(|((_, t), _)| &**t)
            .collect();
        let gone: std::collections::HashSet<&str> = gone
            .iter()
            .map(String::as_str)
            .filter(|t| self.zone_of(t) == UNASSIGNED && !t.is_empty())
            .filter(|t| !pressed_since.contains(t))
            .collect();
        if gone.is_empty() {
            return;
        }
        let forgotten: Arc<str> = Arc::from(FORGOTTEN);
        let mut minutes = Vec::new();
        self.minutes.retain(|(minute, t), counts| {
            let keep = !gone.contains(&**t);
            if !keep {
                minutes.push((*minute, std::mem::take(counts)));
            }
            keep
        });
        for (minute, counts) in minutes {
            let key = (minute, forgotten.clone());
            self.minutes.entry(key).or_default().merge(&counts);
        }
        let mut days = Vec::new();
        self.terminal_days.retain(|(day, t), slots| {
            let keep = !gone.contains(&**t);
            if !keep {
                days.push((*day, std::mem::take(slots)));
            }
            keep
        });
        for (day, slots) in days {
            let key = (day, forgotten.clone());
            self.terminal_days.entry(key).or_default().merge(&slots);
        }
        for t in gone {
            self.names.remove(t);
        }
    }

    /// Presses since start by (zone, button, counted), for metrics.
    pub fn totals(&self) -> impl Iterator<Item = (&str, Button, bool, u64)> {
        self.totals.iter().map(|((z, b, c), n)| (&**z, *b, *c, *n))
    }

    /// Applies the zone rules to every zone over the alert window;
    /// returns what changed.
    pub fn evaluate_zones(&mut self, now_ms: i64) -> Vec<ZoneTransition> {
        let counts = self.alert_window_counts(now_ms);
        let zone_ids: Vec<String> = self
            .zones
            .keys()
            .cloned()
            .chain(std::iter::once(UNASSIGNED.to_string()))
            .collect();
        let mut changes = Vec::new();
        for zone in zone_ids {
            let (unhappy_percent, min_presses) = match self.zones.get(&zone) {
                Some(z) => (
                    z.unhappy_percent.unwrap_or(self.config.unhappy_percent),
                    z.min_presses.unwrap_or(self.config.min_presses),
                ),
                None => (self.config.unhappy_percent, self.config.min_presses),
            };
            let name = self.zone_name(&zone);
            let window = ZoneWindow {
                zone: &zone,
                name: &name,
                figures: counts
                    .get(zone.as_str())
                    .copied()
                    .unwrap_or_default()
                    .figures(),
                unhappy_percent,
                min_presses,
                praise_percent: self.config.praise_percent,
                clear_margin: self.config.clear_margin_percent,
                window_minutes: self.config.alert_window_secs / 60,
            };
            changes.extend(self.rules.evaluate(&window));
        }
        changes
    }

    /// Counts per zone from the second `alert_window_secs` ago to now.
    fn alert_window_counts(&self, now_ms: i64) -> HashMap<String, Counts> {
        let from = (now_ms - self.config.alert_window_secs as i64 * 1000).div_euclid(1000);
        let to = now_ms.div_euclid(1000);
        let mut counts: HashMap<String, Counts> = HashMap::new();
        for ((zone, _), c) in self
            .zone_seconds
            .iter()
            .filter(|((_, second), _)| (from..=to).contains(second))
        {
            match counts.get_mut(&**zone) {
                Some(total) => total.merge(c),
                None => {
                    counts.insert(zone.to_string(), *c);
                }
            }
        }
        counts
    }

    /// Marks a zone rule holding (its alert was restored open) without a
    /// transition.
    pub fn restore_rule(&mut self, rule: ZoneRule, zone: &str) {
        self.rules.restore(rule, zone);
    }

    /// Entries held, by kind (for tests and diagnostics): minutes, zone
    /// seconds, terminal days.
    pub fn held(&self) -> (usize, usize, usize) {
        (
            self.minutes.len(),
            self.zone_seconds.len(),
            self.terminal_days.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LoggedPress;

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

    /// Folds one press, as the committer does after its commit.
    fn record(s: &mut Scores, now: i64, terminal: &str, button: Button, at: i64, counted: bool) {
        let mut batch = PressBatch::default();
        batch.push(
            terminal,
            LoggedPress {
                boot: 0,
                seq: 0,
                button,
                received_at_ms: now.max(at),
                pressed_at_ms: Some(at),
                counted,
                reason: None,
            },
        );
        let id = s.folded_through().map_or(1, |i| i + 1);
        s.fold(now, id, &batch, Fold::New);
    }

    fn scores(config: ScoresConfig, now: i64) -> Scores {
        Scores::new(config, zones(), 400, now)
    }

    #[test]
    fn windows_group_by_zone_and_terminal_and_ignore_uncounted_presses() {
        let mut s = scores(ScoresConfig::default(), T0);
        record(&mut s, T0, "f1", Button::Happy, T0 - 10 * 60_000, true); // outside 5 min
        record(&mut s, T0, "f1", Button::VeryHappy, T0 - 60_000, true);
        record(&mut s, T0, "f2", Button::Unhappy, T0 - 30_000, true);
        record(&mut s, T0, "f2", Button::Unhappy, T0 - 29_000, false);
        record(&mut s, T0, "x9", Button::Happy, T0 - 1_000, true);
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
        assert_eq!(s.window(T0, Window::Today).site.counted, 4);
    }

    #[test]
    fn today_and_the_hour_table_use_the_site_local_time() {
        let cfg = ScoresConfig {
            utc_offset_minutes: 120,
            ..Default::default()
        };
        // 2026-11-18 23:30 UTC is 01:30 local on Thursday the 19th.
        let t = 1_795_044_600_000;
        let mut s = scores(cfg, t);
        record(&mut s, t, "f1", Button::VeryUnhappy, t, true);
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
        let mut s = scores(ScoresConfig::default(), T0);
        // 6 unhappy of 10: 60% >= 40% with enough presses.
        for i in 0..10 {
            let b = if i < 6 {
                Button::VeryUnhappy
            } else {
                Button::Happy
            };
            record(&mut s, T0 + i * 1000, "f1", b, T0 + i * 1000, true);
        }
        let t = s.evaluate_zones(T0 + 10_000);
        assert_eq!(t.len(), 1);
        assert!(t[0].active && t[0].rule == ZoneRule::Unhappy && t[0].zone == "food");
        assert!(s.evaluate_zones(T0 + 11_000).is_empty(), "raised once");
        assert!(s.window(T0 + 11_000, Window::FiveMinutes).zones[0].unhappy_alert);
        // 6 of 16 = 37.5%: below 40 but above 30, still unhappy.
        for i in 0..6 {
            record(
                &mut s,
                T0 + 20_000,
                "f2",
                Button::Happy,
                T0 + 20_000 + i,
                true,
            );
        }
        assert!(s.evaluate_zones(T0 + 21_000).is_empty());
        // 6 of 24 = 25%: clears.
        for i in 0..8 {
            record(
                &mut s,
                T0 + 30_000,
                "f2",
                Button::VeryHappy,
                T0 + 30_000 + i,
                true,
            );
        }
        let t = s.evaluate_zones(T0 + 31_000);
        assert_eq!(t.len(), 1);
        assert!(!t[0].active);
    }

    #[test]
    fn a_zone_doing_very_well_is_praised_when_praise_is_on() {
        let config = ScoresConfig {
            praise_percent: 90,
            ..ScoresConfig::default()
        };
        let mut s = scores(config, T0);
        // 10 of 10 happy: praised once.
        for i in 0..10 {
            record(
                &mut s,
                T0 + i * 1000,
                "f1",
                Button::VeryHappy,
                T0 + i * 1000,
                true,
            );
        }
        let t = s.evaluate_zones(T0 + 10_000);
        assert_eq!(t.len(), 1, "{t:?}");
        assert!(t[0].active && t[0].rule == ZoneRule::Happy && t[0].zone == "food");
        assert!(
            t[0].detail.starts_with("100% happy of 10"),
            "{}",
            t[0].detail
        );
        assert!(s.evaluate_zones(T0 + 11_000).is_empty());
        // 2 unhappy of 12: 83% happy, above 80: still praised; 3 of 13 (77%): cleared.
        for i in 0..2 {
            record(
                &mut s,
                T0 + 12_000,
                "f2",
                Button::Unhappy,
                T0 + 12_000 + i,
                true,
            );
        }
        assert!(s.evaluate_zones(T0 + 13_000).is_empty());
        record(
            &mut s,
            T0 + 14_000,
            "f2",
            Button::Unhappy,
            T0 + 14_000,
            true,
        );
        let t = s.evaluate_zones(T0 + 15_000);
        assert!(
            matches!(&t[..], [z] if z.rule == ZoneRule::Happy && !z.active),
            "{t:?}"
        );
        // Off by default: the same presses praise nobody.
        let mut off = scores(ScoresConfig::default(), T0);
        for i in 0..10 {
            record(
                &mut off,
                T0 + i * 1000,
                "f1",
                Button::VeryHappy,
                T0 + i * 1000,
                true,
            );
        }
        assert!(off.evaluate_zones(T0 + 10_000).is_empty());
    }

    #[test]
    fn few_presses_do_not_alarm_and_zone_thresholds_override() {
        let mut s = scores(ScoresConfig::default(), T0);
        for i in 0..3 {
            record(&mut s, T0, "f1", Button::VeryUnhappy, T0 + i, true);
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
            record(&mut s, T0, "g1", b, T0 + i as i64, true);
        }
        let t = s.evaluate_zones(T0 + 10);
        assert_eq!(
            t.iter().map(|t| t.zone.as_str()).collect::<Vec<_>>(),
            vec!["gate"]
        );
    }

    #[test]
    fn the_timeline_buckets_presses_by_quarter_hour() {
        let mut s = scores(ScoresConfig::default(), T0);
        record(&mut s, T0, "f1", Button::Happy, T0 - 25 * 60_000, true);
        record(&mut s, T0, "f1", Button::Unhappy, T0 - 60_000, true);
        let tl = s.timeline(T0, 6);
        assert_eq!(tl.len(), 6);
        assert_eq!(tl.iter().map(|p| p.figures.counted).sum::<u64>(), 2);
        assert_eq!(tl.last().unwrap().figures.unhappy, 1);
        assert!(tl.last().unwrap().at_ms <= T0 && T0 < tl.last().unwrap().at_ms + SLOT_MS);
        assert!(tl.windows(2).all(|w| w[1].at_ms - w[0].at_ms == SLOT_MS));
    }

    #[test]
    fn memory_follows_terminals_and_time_not_presses() {
        let mut s = scores(ScoresConfig::default(), T0);
        // A day of a busy site: 50 terminals, a press a second between them.
        let mut now = T0;
        for i in 0..86_400 {
            now = T0 + i * 1000;
            let terminal = format!("t{}", i % 50);
            record(&mut s, now, &terminal, Button::Happy, now, true);
            if i % 60 == 0 {
                s.prune(now);
            }
        }
        s.prune(now);
        let (minutes, seconds, days) = s.held();
        assert!(
            minutes <= 50 * (LIVE_MINUTES as usize + 1),
            "{minutes} minute entries"
        );
        assert!(seconds <= 2 * 302, "{seconds} zone-second entries");
        assert!(days <= 2 * 50, "{days} terminal-day entries");
        // The hour window is the current minute and the 60 before it.
        let first_minute = now.div_euclid(60_000) - 60;
        let expected = (0..86_400i64)
            .filter(|i| (T0 + i * 1000).div_euclid(60_000) >= first_minute)
            .count() as u64;
        assert_eq!(s.window(now, Window::Hour).site.counted, expected);
    }

    #[test]
    fn a_restart_loads_the_checkpoint_and_folds_only_what_it_missed() {
        let mut before = scores(ScoresConfig::default(), T0);
        let batch = |terminal: &str, at: i64, n: usize| {
            let mut b = PressBatch::default();
            for i in 0..n {
                b.push(
                    terminal,
                    LoggedPress {
                        boot: 0,
                        seq: i as u32,
                        button: Button::Happy,
                        received_at_ms: at,
                        pressed_at_ms: None,
                        counted: true,
                        reason: None,
                    },
                );
            }
            b
        };
        let (b1, b2) = (batch("f1", T0 - 60_000, 3), batch("g1", T0, 2));
        before.fold(T0, 10, &b1, Fold::New);
        let checkpoint = before.take_checkpoint().unwrap();
        assert_eq!(checkpoint.watermark, Some(10));
        before.fold(T0, 20, &b2, Fold::New);
        // The gateway dies before the next checkpoint. Starting again:
        let mut after = scores(ScoresConfig::default(), T0 + 1000);
        after.restore_watermark(checkpoint.watermark);
        for (day, slots) in &checkpoint.site_days {
            after.restore_site_day(*day, slots.clone());
        }
        for ((day, terminal), slots) in &checkpoint.terminal_days {
            after.restore_terminal_day(*day, terminal, slots.clone());
        }
        // The press log: record 10 is in the checkpoint (live windows
        // only), record 20 is not.
        after.fold(T0 + 1000, 10, &b1, Fold::LiveOnly);
        after.fold(T0 + 1000, 20, &b2, Fold::Replay);
        for w in [Window::FiveMinutes, Window::Today] {
            assert_eq!(after.window(T0 + 1000, w).site.counted, 5, "{w:?}");
        }
        assert_eq!(
            after
                .hourly()
                .iter()
                .map(|c| c.figures.counted)
                .sum::<u64>(),
            5
        );
        let next = after.take_checkpoint().unwrap();
        assert_eq!(next.watermark, Some(20));
        assert_eq!(
            next.site_days
                .iter()
                .map(|(_, s)| s.total().counted())
                .sum::<u64>(),
            2
        );
    }

    #[test]
    fn days_past_the_aggregate_retention_leave_the_hour_table() {
        let mut s = Scores::new(ScoresConfig::default(), zones(), 7, T0);
        let old = T0 - 6 * DAY_MS;
        record(&mut s, T0, "f1", Button::Happy, old, true);
        record(&mut s, T0, "f1", Button::Happy, T0 - 10 * DAY_MS, true);
        assert_eq!(
            s.hourly().iter().map(|c| c.figures.counted).sum::<u64>(),
            1,
            "a press older than the retention is not folded in"
        );
        let cp = s.take_checkpoint().unwrap();
        let (day, slots) = cp.site_days[0].clone();
        assert!(s.retention_cutoff(T0 + 2 * DAY_MS) > day);
        s.forget_site_day(day, &slots);
        assert_eq!(s.hourly().iter().map(|c| c.figures.counted).sum::<u64>(), 0);
    }

    #[test]
    fn a_forgotten_terminal_leaves_the_figures_as_they_were_and_its_entries_go() {
        let mut s = scores(ScoresConfig::default(), T0);
        record(&mut s, T0, "invented", Button::VeryUnhappy, T0, true);
        record(&mut s, T0, "kept", Button::Happy, T0, true);
        record(&mut s, T0, "f1", Button::Happy, T0, true);
        let figures = |s: &Scores| {
            serde_json::to_value((
                s.window(T0, Window::Hour).site,
                s.window(T0, Window::Today).zones,
            ))
            .unwrap()
        };
        let before = figures(&s);
        // A terminal in a zone is known: never forgotten.
        s.forget_terminals(&["invented".to_string(), "f1".to_string()], T0);
        let hour = s.window(T0, Window::Hour);
        assert_eq!(figures(&s), before);
        let listed: Vec<_> = hour.terminals.iter().map(|t| t.terminal.as_str()).collect();
        assert_eq!(listed, ["f1", "kept"]);
        s.take_checkpoint();
        s.prune(T0);
        assert!(!s.names.contains_key("invented"));
        assert!(s.names.contains_key("kept"));
        // A press folded in a minute after the silence began: it is back.
        record(
            &mut s,
            T0 + 120_000,
            "kept",
            Button::Happy,
            T0 + 120_000,
            true,
        );
        s.forget_terminals(&["kept".to_string()], T0);
        let listed = s.window(T0 + 120_000, Window::Hour).terminals;
        assert!(listed.iter().any(|t| t.terminal == "kept"));
    }
}
