//! The rollout orchestrator: a sans-IO state machine per rollout.
//!
//! Time comes in (`now_ms`, Unix ms, and the site-local minute of the day
//! for the maintenance window); what to do goes out as [`Effect`]s (offer
//! or cancel on a terminal, publish an event). The caller persists the
//! [`Rollout`] after every call that returns `true` from
//! [`Rollout::take_dirty`], so a gateway restart continues where it
//! stopped: everything a rollout knows is in this struct.
//!
//! Shape of a rollout: targets are sorted and split into stages: stage 0
//! is the canary (`canary` terminals), then one stage per wave, each wave
//! a cumulative percentage of the targets. A stage starts only when every
//! terminal of the previous ones has finished (confirmed, failed, rolled
//! back) and the failure rate is within bounds. At most
//! `max_concurrent` terminals download at once (the venue's Wi-Fi is for
//! visitors too); new downloads start only inside the maintenance window.
//! Failures are counted over the stages started so far: past
//! `max_failure_rate` the rollout halts by itself and withdraws its offers,
//! so no terminal beyond the failing stage is touched.

use std::collections::BTreeMap;

use pressline_protocol::ota_transfer::{OtaState, OtaStatus};
use pressline_protocol::upstream::OtaEventKind;
use serde::{Deserialize, Serialize};

/// A daily maintenance window in site-local time, `start` inclusive, `end`
/// exclusive, minutes after midnight; it may wrap midnight (22:00–06:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_minute: u16,
    pub end_minute: u16,
}

impl Window {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<Window, String> {
        let bad = || format!("window {text:?} is not HH:MM-HH:MM (e.g. 22:00-06:00)");
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let minute = |s: &str| -> Option<u16> {
            let (h, m) = s.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let w = Window {
            start_minute: minute(a).ok_or_else(bad)?,
            end_minute: minute(b).ok_or_else(bad)?,
        };
        if w.start_minute == w.end_minute {
            return Err(format!("window {text:?} is empty"));
        }
        Ok(w)
    }

    pub fn contains(&self, minute: u16) -> bool {
        if self.start_minute < self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute)
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start_minute / 60,
            self.start_minute % 60,
            self.end_minute / 60,
            self.end_minute % 60
        )
    }
}

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub version: String,
    pub board: String,
    /// Terminal ids (deduplicated and sorted at creation).
    pub targets: Vec<String>,
    /// Terminals in the canary stage.
    pub canary: usize,
    /// Cumulative percentages of the targets, ascending, ending at 100.
    pub waves: Vec<u8>,
    /// Halt when failures exceed this fraction (0.0–1.0) of the terminals
    /// in the stages started so far.
    pub max_failure_rate: f64,
    pub window: Option<Window>,
}

/// Site-wide limits (from the gateway config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrent: usize,
    /// An offered or downloading terminal silent this long has failed.
    pub silent_timeout_ms: i64,
    /// A verifying or rebooting terminal that has not confirmed after this
    /// long has failed.
    pub confirm_timeout_ms: i64,
    /// An offer not followed by any sign of life is repeated after this.
    pub reoffer_after_ms: i64,
}

pub use pressline_protocol::upstream::{RolloutState, RolloutTerminalState as TerminalState};

/// Order along the way to an outcome.
fn rank(state: TerminalState) -> u8 {
    match state {
        TerminalState::Pending => 0,
        TerminalState::Offered => 1,
        TerminalState::Downloading => 2,
        TerminalState::Verifying => 3,
        TerminalState::Rebooting => 4,
        TerminalState::Confirmed | TerminalState::Failed | TerminalState::RolledBack => 5,
    }
}

/// Holds one of the site's download slots.
fn is_transferring(state: TerminalState) -> bool {
    matches!(state, TerminalState::Offered | TerminalState::Downloading)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalProgress {
    /// Stage index (0 = canary).
    pub stage: usize,
    pub state: TerminalState,
    pub written: u32,
    pub size: u32,
    /// Image bytes the gateway served to it (resumes keep this near `size`).
    pub bytes_served: u64,
    /// Version it last said it runs.
    pub running: Option<String>,
    pub detail: Option<String>,
    /// Last message from it (or the offer), Unix ms.
    pub last_activity_ms: i64,
    pub last_offer_ms: i64,
}

impl TerminalProgress {
    pub fn percent(&self) -> u8 {
        if self.state == TerminalState::Confirmed {
            return 100;
        }
        if self.size == 0 {
            return 0;
        }
        ((u64::from(self.written.min(self.size)) * 100) / u64::from(self.size)) as u8
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish the offer for this rollout (current attempt) to a terminal.
    Offer { terminal: String },
    /// Publish a cancel to a terminal.
    Cancel { terminal: String },
    /// Publish a rollout event upstream.
    Event(Event),
}

/// A rollout event (published upstream as `pressline.ota.v1`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: OtaEventKind,
    pub terminal: Option<String>,
    pub state: Option<TerminalState>,
    pub detail: Option<String>,
    pub wave: Option<u32>,
}

impl Event {
    fn rollout(kind: OtaEventKind, detail: Option<String>) -> Event {
        Event {
            kind,
            terminal: None,
            state: None,
            detail,
            wave: None,
        }
    }
}

/// Why an operator command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("rollout is {}: {why}", .state.as_str())]
    WrongState {
        state: RolloutState,
        why: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: u32,
    pub plan: Plan,
    pub state: RolloutState,
    pub halt_reason: Option<String>,
    /// Bumped by retry-failed; terminals retry only for a new attempt.
    pub attempt: u32,
    /// The stage being rolled out.
    pub stage: usize,
    pub stages: usize,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub terminals: BTreeMap<String, TerminalProgress>,
    #[serde(skip)]
    dirty: bool,
}

impl Rollout {
    /// A new running rollout. Targets must be non-empty (checked by the
    /// caller, which knows the site's terminals).
    pub fn new(id: u32, mut plan: Plan, now_ms: i64) -> (Rollout, Vec<Effect>) {
        plan.targets.sort();
        plan.targets.dedup();
        let total = plan.targets.len();
        let canary = plan.canary.min(total);
        // Stage boundaries: cumulative counts, strictly growing.
        let mut bounds = Vec::new();
        if canary > 0 {
            bounds.push(canary);
        }
        for pct in &plan.waves {
            let upto = ((total * usize::from(*pct)).div_ceil(100)).clamp(1, total);
            if bounds.last().is_none_or(|last| upto > *last) {
                bounds.push(upto);
            }
        }
        if bounds.last() != Some(&total) {
            bounds.push(total);
        }
        let mut terminals = BTreeMap::new();
        for (i, t) in plan.targets.iter().enumerate() {
            let stage = bounds.iter().position(|b| i < *b).unwrap_or(0);
            terminals.insert(
                t.clone(),
                TerminalProgress {
                    stage,
                    state: TerminalState::Pending,
                    written: 0,
                    size: 0,
                    bytes_served: 0,
                    running: None,
                    detail: None,
                    last_activity_ms: now_ms,
                    last_offer_ms: 0,
                },
            );
        }
        let rollout = Rollout {
            id,
            stages: bounds.len(),
            plan,
            state: RolloutState::Running,
            halt_reason: None,
            attempt: 1,
            stage: 0,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            terminals,
            dirty: true,
        };
        let events = vec![
            Effect::Event(Event::rollout(
                OtaEventKind::Started,
                Some(format!(
                    "{} terminals in {} stages",
                    rollout.terminals.len(),
                    rollout.stages
                )),
            )),
            Effect::Event(Event {
                wave: Some(0),
                ..Event::rollout(OtaEventKind::WaveStarted, None)
            }),
        ];
        (rollout, events)
    }

    /// Whether anything changed since the last call (persist if so).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    fn touch(&mut self, now_ms: i64) {
        self.dirty = true;
        self.updated_at_ms = now_ms;
    }

    /// Counts per terminal state.
    pub fn counts(&self) -> BTreeMap<TerminalState, usize> {
        let mut counts = BTreeMap::new();
        for p in self.terminals.values() {
            *counts.entry(p.state).or_insert(0) += 1;
        }
        counts
    }

    /// Failures over terminals in the stages started so far.
    pub fn failure_rate(&self) -> f64 {
        let started: Vec<_> = self
            .terminals
            .values()
            .filter(|p| p.stage <= self.stage)
            .collect();
        if started.is_empty() {
            return 0.0;
        }
        let failed = started.iter().filter(|p| p.state.is_failure()).count();
        failed as f64 / started.len() as f64
    }

    /// A status report from a terminal.
    pub fn handle_status(
        &mut self,
        now_ms: i64,
        terminal: &str,
        status: &OtaStatus,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let active = self.state.is_active();
        let Some(p) = self.terminals.get_mut(terminal) else {
            return effects;
        };
        p.running = Some(status.running.to_string());
        p.last_activity_ms = now_ms;
        self.dirty = true;
        if status.rollout != self.id || status.attempt != self.attempt {
            // It knows nothing of this attempt (restarted without its
            // record, or an outcome of an earlier attempt): offer again if
            // it should be transferring.
            if active && self.state == RolloutState::Running && is_transferring(p.state) {
                p.last_offer_ms = now_ms;
                effects.push(Effect::Offer {
                    terminal: terminal.to_string(),
                });
            }
            return effects;
        }
        if p.state.is_final() {
            return effects; // the outcome is known; repeats change nothing
        }
        if p.state == TerminalState::Pending {
            // Not offered in this attempt (e.g. paused before): ignore.
            return effects;
        }
        let new_state = match status.state {
            OtaState::Idle => {
                // Cancelled earlier (pause) and now offered again: keep.
                p.state
            }
            OtaState::Offered => TerminalState::Offered,
            OtaState::Downloading => TerminalState::Downloading,
            OtaState::Verifying => TerminalState::Verifying,
            OtaState::Rebooting => TerminalState::Rebooting,
            OtaState::Confirmed => TerminalState::Confirmed,
            OtaState::Failed => TerminalState::Failed,
            OtaState::RolledBack => TerminalState::RolledBack,
        };
        // Reports can cross chunk requests in flight: never move backwards
        // (e.g. a late "offered" after the download started).
        if rank(new_state) < rank(p.state) {
            p.written = p.written.max(status.written);
            return effects;
        }
        p.written = status.written;
        p.size = status.size;
        if let Some(f) = status.failure {
            p.detail = Some(f.describe().to_string());
        }
        if new_state != p.state {
            p.state = new_state;
            effects.push(Effect::Event(Event {
                kind: OtaEventKind::Terminal,
                terminal: Some(terminal.to_string()),
                state: Some(new_state),
                detail: p.detail.clone(),
                wave: Some(p.stage as u32),
            }));
        }
        self.touch(now_ms);
        effects
    }

    /// A chunk request: whether to serve it (and count the bytes).
    pub fn handle_chunk_request(&mut self, now_ms: i64, terminal: &str, len: u32) -> bool {
        if self.state != RolloutState::Running {
            return false;
        }
        let Some(p) = self.terminals.get_mut(terminal) else {
            return false;
        };
        if !is_transferring(p.state) {
            return false;
        }
        p.last_activity_ms = now_ms;
        p.bytes_served += u64::from(len);
        if p.state == TerminalState::Offered {
            p.state = TerminalState::Downloading;
        }
        // Not persisted for every chunk: the byte count is diagnostics and
        // the state change is persisted with the next status.
        true
    }

    /// Time passes: timeouts, re-offers, halting, stage advance, new
    /// offers. `local_minute` is the site-local minute of the day.
    pub fn handle_tick(&mut self, now_ms: i64, local_minute: u16, limits: &Limits) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.state != RolloutState::Running {
            return effects;
        }
        self.time_out_silent(now_ms, limits, &mut effects);
        if self.halt_on_failures(now_ms, &mut effects) || self.advance_stages(now_ms, &mut effects)
        {
            return effects;
        }
        // New offers: inside the window, up to the concurrency limit.
        if self.plan.window.is_none_or(|w| w.contains(local_minute)) {
            self.offer_pending(now_ms, limits, &mut effects);
        }
        effects
    }

    /// Silent terminals fail; quiet offers are repeated.
    fn time_out_silent(&mut self, now_ms: i64, limits: &Limits, effects: &mut Vec<Effect>) {
        let mut changed = Vec::new();
        for (id, p) in self.terminals.iter_mut() {
            let silent = now_ms - p.last_activity_ms;
            let timeout = match p.state {
                TerminalState::Offered | TerminalState::Downloading => limits.silent_timeout_ms,
                TerminalState::Verifying | TerminalState::Rebooting => limits.confirm_timeout_ms,
                _ => continue,
            };
            if silent >= timeout {
                p.detail = Some(match p.state {
                    TerminalState::Verifying | TerminalState::Rebooting => {
                        format!("did not confirm within {} s", timeout / 1000)
                    }
                    _ => format!("silent for {} s", silent / 1000),
                });
                p.state = TerminalState::Failed;
                changed.push(id.clone());
            } else if is_transferring(p.state)
                && silent >= limits.reoffer_after_ms
                && now_ms - p.last_offer_ms >= limits.reoffer_after_ms
            {
                p.last_offer_ms = now_ms;
                effects.push(Effect::Offer {
                    terminal: id.clone(),
                });
            }
        }
        for id in changed {
            let p = &self.terminals[&id];
            effects.push(Effect::Event(Event {
                kind: OtaEventKind::Terminal,
                terminal: Some(id.clone()),
                state: Some(p.state),
                detail: p.detail.clone(),
                wave: Some(p.stage as u32),
            }));
            self.touch(now_ms);
        }
    }

    /// Too many failures: halt, withdraw every open offer. `true` if it
    /// halted.
    fn halt_on_failures(&mut self, now_ms: i64, effects: &mut Vec<Effect>) -> bool {
        let rate = self.failure_rate();
        if rate <= self.plan.max_failure_rate {
            return false;
        }
        let reason = format!(
            "failure rate {:.0}% exceeds {:.0}% in stage {}",
            rate * 100.0,
            self.plan.max_failure_rate * 100.0,
            self.stage
        );
        self.state = RolloutState::Halted;
        self.halt_reason = Some(reason.clone());
        effects.extend(self.withdraw_offers());
        effects.push(Effect::Event(Event::rollout(
            OtaEventKind::Halted,
            Some(reason),
        )));
        self.touch(now_ms);
        true
    }

    /// Each finished stage starts the next; after the last, the rollout is
    /// complete (`true`).
    fn advance_stages(&mut self, now_ms: i64, effects: &mut Vec<Effect>) -> bool {
        while self
            .terminals
            .values()
            .filter(|p| p.stage <= self.stage)
            .all(|p| p.state.is_final())
        {
            if self.stage + 1 >= self.stages {
                self.state = RolloutState::Completed;
                let counts = self.counts();
                let count = |s| counts.get(&s).copied().unwrap_or(0);
                effects.push(Effect::Event(Event::rollout(
                    OtaEventKind::Completed,
                    Some(format!(
                        "{} confirmed, {} failed, {} rolled back",
                        count(TerminalState::Confirmed),
                        count(TerminalState::Failed),
                        count(TerminalState::RolledBack)
                    )),
                )));
                self.touch(now_ms);
                return true;
            }
            self.stage += 1;
            effects.push(Effect::Event(Event {
                wave: Some(self.stage as u32),
                ..Event::rollout(OtaEventKind::WaveStarted, None)
            }));
            self.touch(now_ms);
        }
        false
    }

    /// Offers the update to pending terminals of the stages started so
    /// far, up to the concurrency limit.
    fn offer_pending(&mut self, now_ms: i64, limits: &Limits, effects: &mut Vec<Effect>) {
        let mut transferring = self
            .terminals
            .values()
            .filter(|p| is_transferring(p.state))
            .count();
        let stage = self.stage;
        for (id, p) in self.terminals.iter_mut() {
            if transferring >= limits.max_concurrent {
                break;
            }
            if p.stage <= stage && p.state == TerminalState::Pending {
                p.state = TerminalState::Offered;
                p.last_activity_ms = now_ms;
                p.last_offer_ms = now_ms;
                p.written = 0;
                p.detail = None;
                transferring += 1;
                effects.push(Effect::Offer {
                    terminal: id.clone(),
                });
                effects.push(Effect::Event(Event {
                    kind: OtaEventKind::Terminal,
                    terminal: Some(id.clone()),
                    state: Some(TerminalState::Offered),
                    detail: None,
                    wave: Some(p.stage as u32),
                }));
                self.dirty = true;
                self.updated_at_ms = now_ms;
            }
        }
    }

    /// Cancels every open offer; those terminals go back to pending.
    fn withdraw_offers(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (id, p) in self.terminals.iter_mut() {
            if is_transferring(p.state) {
                p.state = TerminalState::Pending;
                effects.push(Effect::Cancel {
                    terminal: id.clone(),
                });
            }
        }
        effects
    }

    pub fn pause(&mut self, now_ms: i64) -> Result<Vec<Effect>, CommandError> {
        if self.state != RolloutState::Running {
            return Err(CommandError::WrongState {
                state: self.state,
                why: "only a running rollout can be paused",
            });
        }
        self.state = RolloutState::Paused;
        let mut effects = self.withdraw_offers();
        effects.push(Effect::Event(Event::rollout(OtaEventKind::Paused, None)));
        self.touch(now_ms);
        Ok(effects)
    }

    pub fn resume(&mut self, now_ms: i64) -> Result<Vec<Effect>, CommandError> {
        match self.state {
            RolloutState::Paused => {}
            RolloutState::Halted => return Err(CommandError::WrongState {
                state: RolloutState::Halted,
                why: "it stopped because terminals failed: fix the cause, then retry-failed (or abort)",
            }),
            s => {
                return Err(CommandError::WrongState {
                state: s,
                why: "only a paused rollout can be resumed",
            })
            }
        }
        self.state = RolloutState::Running;
        self.touch(now_ms);
        Ok(vec![Effect::Event(Event::rollout(
            OtaEventKind::Resumed,
            None,
        ))])
    }

    pub fn abort(&mut self, now_ms: i64) -> Result<Vec<Effect>, CommandError> {
        if matches!(self.state, RolloutState::Completed | RolloutState::Aborted) {
            return Err(CommandError::WrongState {
                state: self.state,
                why: "it is already over",
            });
        }
        self.state = RolloutState::Aborted;
        let mut effects = self.withdraw_offers();
        effects.push(Effect::Event(Event::rollout(OtaEventKind::Aborted, None)));
        self.touch(now_ms);
        Ok(effects)
    }

    /// Failed and rolled-back terminals get a new attempt; a halted or
    /// completed rollout runs again.
    pub fn retry_failed(&mut self, now_ms: i64) -> Result<Vec<Effect>, CommandError> {
        if self.state == RolloutState::Aborted {
            return Err(CommandError::WrongState {
                state: RolloutState::Aborted,
                why: "start a new rollout instead",
            });
        }
        let mut retried = 0;
        for p in self.terminals.values_mut() {
            if p.state.is_failure() {
                p.state = TerminalState::Pending;
                p.detail = None;
                retried += 1;
            }
        }
        self.attempt += 1;
        if matches!(self.state, RolloutState::Halted | RolloutState::Completed) {
            self.state = RolloutState::Running;
            self.halt_reason = None;
        }
        self.touch(now_ms);
        Ok(vec![Effect::Event(Event::rollout(
            OtaEventKind::Retry,
            Some(format!("{retried} terminals get attempt {}", self.attempt)),
        ))])
    }
}

#[cfg(test)]
mod tests;
