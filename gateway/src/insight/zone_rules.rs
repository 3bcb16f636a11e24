//! The zone rules (pure): a zone turns **unhappy** when, in the alert
//! window, the unhappy share of its counted presses reaches its threshold
//! with at least its fewest presses, and clears only `clear_margin` below;
//! a zone doing very well is **praised** (`praise_percent`) the same way
//! with the happy share. Each raises one alert per spell, not one per
//! evaluation ([`crate::hysteresis`]).

use std::collections::BTreeMap;

use super::counts::Figures;
use crate::hysteresis::{Bound, Hysteresis};

/// The zone rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneRule {
    /// Visitors turned unhappy.
    Unhappy,
    /// Visitors are unusually happy (praise, `praise_percent`).
    Happy,
}

/// A rule started or stopped holding for a zone.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneTransition {
    pub zone: String,
    pub name: String,
    pub rule: ZoneRule,
    /// The rule now holds (raise) or no longer does (clear).
    pub active: bool,
    pub detail: String,
}

/// One zone's figures over the alert window, and its thresholds.
#[derive(Debug, Clone)]
pub struct ZoneWindow<'a> {
    pub zone: &'a str,
    pub name: &'a str,
    pub figures: Figures,
    /// Unhappy share (percent) that turns the zone unhappy.
    pub unhappy_percent: u8,
    /// Fewest counted presses for either rule to raise.
    pub min_presses: u32,
    /// Happy share (percent) that praises the zone; 0: no praise.
    pub praise_percent: u8,
    /// How far below its threshold a rule clears (percent).
    pub clear_margin: u8,
    pub window_minutes: u64,
}

/// Which zones each rule holds for.
#[derive(Debug, Clone, Default)]
pub struct ZoneRules {
    unhappy: BTreeMap<String, bool>,
    happy: BTreeMap<String, bool>,
}

impl ZoneRules {
    /// Applies both rules to a zone; returns what changed.
    pub fn evaluate(&mut self, w: &ZoneWindow<'_>) -> Vec<ZoneTransition> {
        let counted = w.figures.counted;
        let enough = counted >= u64::from(w.min_presses);
        let unhappy = w.figures.unhappy_share.unwrap_or(0.0) * 100.0;
        let mut changes = Vec::new();
        let rule = threshold(w.unhappy_percent, w.clear_margin);
        let detail = || {
            format!(
                "{unhappy:.0}% unhappy of {counted} counted presses in the last {} min (threshold {}%)",
                w.window_minutes, w.unhappy_percent
            )
        };
        let was = self.holds(ZoneRule::Unhappy, w.zone);
        let now = rule.next_gated(was, unhappy, enough, true);
        changes.extend(self.set(ZoneRule::Unhappy, w, was, now, detail));
        if w.praise_percent == 0 {
            return changes;
        }
        let happy = if counted > 0 { 100.0 - unhappy } else { 0.0 };
        let rule = threshold(w.praise_percent, w.clear_margin);
        let detail = || {
            format!(
                "{happy:.0}% happy of {counted} counted presses in the last {} min (praise at {}%)",
                w.window_minutes, w.praise_percent
            )
        };
        let was = self.holds(ZoneRule::Happy, w.zone);
        let now = rule.next_gated(was, happy, enough, counted > 0);
        changes.extend(self.set(ZoneRule::Happy, w, was, now, detail));
        changes
    }

    /// Whether `rule` holds for `zone`.
    pub fn holds(&self, rule: ZoneRule, zone: &str) -> bool {
        self.of(rule).get(zone).copied().unwrap_or(false)
    }

    /// Marks `rule` holding for `zone` without a transition (its alert was
    /// restored open).
    pub fn restore(&mut self, rule: ZoneRule, zone: &str) {
        self.of_mut(rule).insert(zone.to_string(), true);
    }

    fn set(
        &mut self,
        rule: ZoneRule,
        w: &ZoneWindow<'_>,
        was: bool,
        now: bool,
        detail: impl Fn() -> String,
    ) -> Option<ZoneTransition> {
        if now == was {
            return None;
        }
        self.of_mut(rule).insert(w.zone.to_string(), now);
        Some(ZoneTransition {
            zone: w.zone.to_string(),
            name: w.name.to_string(),
            rule,
            active: now,
            detail: detail(),
        })
    }

    fn of(&self, rule: ZoneRule) -> &BTreeMap<String, bool> {
        match rule {
            ZoneRule::Unhappy => &self.unhappy,
            ZoneRule::Happy => &self.happy,
        }
    }

    fn of_mut(&mut self, rule: ZoneRule) -> &mut BTreeMap<String, bool> {
        match rule {
            ZoneRule::Unhappy => &mut self.unhappy,
            ZoneRule::Happy => &mut self.happy,
        }
    }
}

/// Raised at `percent`, held down to `percent − margin`.
fn threshold(percent: u8, margin: u8) -> Hysteresis<f64> {
    Hysteresis {
        raise: Bound::AtLeast(f64::from(percent)),
        hold: Bound::AtLeast(f64::from(percent.saturating_sub(margin))),
    }
}
