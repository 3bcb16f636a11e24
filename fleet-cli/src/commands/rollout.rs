//! `fleet ota rollout start|status|pause|resume|abort|retry-failed`.
//!
//! The gateway runs the rollout (it keeps going when the laptop closes);
//! these commands start it, steer it and watch it.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::{exit, Outcome};
use crate::client::Gateway;
use crate::render::{finish, table};
use crate::sites::Site;

/// A rollout as the gateway reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    #[serde(default)]
    pub site: String,
    pub id: u32,
    pub version: String,
    pub board: String,
    /// `running`, `paused`, `halted`, `completed`, `aborted`.
    pub state: String,
    pub halt_reason: Option<String>,
    pub attempt: u32,
    pub stage: usize,
    pub stages: usize,
    pub canary: usize,
    pub waves: Vec<u8>,
    pub max_failure_rate: f64,
    pub failure_rate: f64,
    pub window: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub counts: std::collections::BTreeMap<String, usize>,
    pub terminals: Vec<RolloutTerminal>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutTerminal {
    pub id: String,
    pub stage: usize,
    /// `pending`, `offered`, `downloading`, `verifying`, `rebooting`,
    /// `confirmed`, `failed`, `rolled_back`.
    pub state: String,
    pub percent: u8,
    pub written: u32,
    pub size: u32,
    pub bytes_served: u64,
    pub running: Option<String>,
    pub detail: Option<String>,
}

impl Rollout {
    fn is_over(&self) -> bool {
        matches!(self.state.as_str(), "completed" | "aborted" | "halted")
    }

    fn failures(&self) -> usize {
        self.counts.get("failed").unwrap_or(&0) + self.counts.get("rolled_back").unwrap_or(&0)
    }

    /// 0 when it went (or is going) well, 1 when it needs a person.
    fn exit_code(&self) -> u8 {
        if self.state == "halted" || self.failures() > 0 {
            exit::PROBLEM
        } else {
            exit::OK
        }
    }
}

/// What `rollout start` asks for.
#[derive(Debug, Clone)]
pub struct StartArgs {
    pub version: String,
    pub board: Option<String>,
    pub terminals: Option<Vec<String>>,
    pub zone: Option<String>,
    pub all: bool,
    pub canary: usize,
    pub waves: String,
    pub max_failure_rate: String,
    pub window: Option<String>,
}

/// `25` or `25%` → 25.
fn percent(text: &str, flag: &str) -> anyhow::Result<f64> {
    let t = text.trim().trim_end_matches('%');
    let v: f64 = t
        .parse()
        .with_context(|| format!("{flag} {text:?}: expected a percentage such as 10%"))?;
    if !(0.0..=100.0).contains(&v) {
        bail!("{flag} {text:?}: must be between 0% and 100%");
    }
    Ok(v)
}

/// `25%,100%` → [25, 100].
pub fn parse_waves(text: &str) -> anyhow::Result<Vec<u8>> {
    let waves = text
        .split(',')
        .map(|w| percent(w, "--waves").map(|v| v.round() as u8))
        .collect::<anyhow::Result<Vec<u8>>>()?;
    if waves.is_empty() || waves.windows(2).any(|w| w[0] >= w[1]) || waves.contains(&0) {
        bail!("--waves {text:?}: cumulative percentages in ascending order, e.g. 25%,100%");
    }
    if waves.last() != Some(&100) {
        bail!("--waves {text:?}: the last wave must be 100% (every chosen terminal)");
    }
    Ok(waves)
}

pub fn start(site: &Site, args: StartArgs, json: bool) -> anyhow::Result<Outcome> {
    let chosen = [args.terminals.is_some(), args.zone.is_some(), args.all]
        .iter()
        .filter(|x| **x)
        .count();
    if chosen != 1 {
        bail!("choose the terminals with exactly one of --terminals ID,.., --zone Z, --all");
    }
    let body = serde_json::json!({
        "version": args.version,
        "board": args.board,
        "terminals": args.terminals,
        "zone": args.zone,
        "all": args.all,
        "canary": args.canary,
        "waves": parse_waves(&args.waves)?,
        "max_failure_rate": percent(&args.max_failure_rate, "--max-failure-rate")?,
        "window": args.window,
    });
    let rollout = Gateway::new(site).start_rollout(&body)?;
    let stdout = if json {
        format!("{}\n", serde_json::to_string_pretty(&rollout)?)
    } else {
        format!(
            "started rollout {id} of {board} {version} at site {site}: {n} terminals in {stages} stages (canary {canary}{window}); watch it with `fleet ota rollout status {id} --site {site} --watch`\n",
            id = rollout.id,
            board = rollout.board,
            version = rollout.version,
            site = site.name,
            n = rollout.terminals.len(),
            stages = rollout.stages,
            canary = rollout.canary,
            window = rollout
                .window
                .as_deref()
                .map(|w| format!(", only during {w}"))
                .unwrap_or_default(),
        )
    };
    Ok(Outcome {
        stdout,
        warnings: vec![],
        code: exit::OK,
    })
}

pub fn command(site: &Site, id: u32, action: &str, json: bool) -> anyhow::Result<Outcome> {
    let rollout = Gateway::new(site).rollout_command(id, action)?;
    let stdout = if json {
        format!("{}\n", serde_json::to_string_pretty(&rollout)?)
    } else {
        format!(
            "rollout {} at site {}: {}{}\n",
            rollout.id,
            site.name,
            rollout.state,
            if action == "retry-failed" {
                format!(" (attempt {})", rollout.attempt)
            } else {
                String::new()
            }
        )
    };
    Ok(Outcome {
        stdout,
        warnings: vec![],
        code: exit::OK,
    })
}

/// One line saying where the rollout is.
pub fn summary(r: &Rollout) -> String {
    let counts = |k: &str| r.counts.get(k).copied().unwrap_or(0);
    let mut line = format!(
        "rollout {} · {} {} · {} · stage {}/{} · {} confirmed, {} in progress, {} pending, {} failed, {} rolled back · failure rate {:.0}% (max {:.0}%)",
        r.id,
        r.board,
        r.version,
        r.state,
        r.stage,
        r.stages.saturating_sub(1),
        counts("confirmed"),
        counts("offered") + counts("downloading") + counts("verifying") + counts("rebooting"),
        counts("pending"),
        counts("failed"),
        counts("rolled_back"),
        r.failure_rate,
        r.max_failure_rate,
    );
    if let Some(w) = &r.window {
        line.push_str(&format!(" · window {w}"));
    }
    if let Some(reason) = &r.halt_reason {
        line.push_str(&format!("\nhalted: {reason}: fix the cause, then `fleet ota rollout retry-failed {} --site {}` (or abort)", r.id, r.site));
    }
    line
}

pub fn render(r: &Rollout) -> String {
    let mut t = table(&[
        "TERMINAL", "STAGE", "STATE", "PROGRESS", "RUNNING", "DETAIL",
    ]);
    for term in &r.terminals {
        t.add_row(vec![
            term.id.clone(),
            if term.stage == 0 && r.canary > 0 {
                "canary".into()
            } else {
                term.stage.to_string()
            },
            term.state.clone(),
            format!("{}%", term.percent),
            term.running.clone().unwrap_or_else(|| "-".into()),
            term.detail.clone().unwrap_or_default(),
        ]);
    }
    format!("{}\n{}", summary(r), finish(t))
}

pub fn status(site: &Site, id: u32, watch: bool, json: bool) -> anyhow::Result<Outcome> {
    let gw = Gateway::new(site);
    let mut rollout = gw.rollout(id)?;
    rollout.site = site.name.clone();
    if watch {
        rollout = watch_until_over(&gw, rollout, json)?;
    }
    let stdout = if json {
        format!("{}\n", serde_json::to_string_pretty(&rollout)?)
    } else {
        render(&rollout)
    };
    Ok(Outcome {
        code: rollout.exit_code(),
        stdout,
        warnings: vec![],
    })
}

/// Shows one progress bar per terminal until the rollout is over (or
/// paused), polling the gateway once a second. Bars are drawn only on a
/// terminal; with `--json` or a pipe nothing is drawn, only the end result
/// is printed.
fn watch_until_over(gw: &Gateway, mut rollout: Rollout, json: bool) -> anyhow::Result<Rollout> {
    let draw = !json && std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if draw {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos:>3}% {msg}")
        .expect("static template")
        .progress_chars("=> ");
    let header = multi.add(ProgressBar::new_spinner());
    let bars: Vec<(String, ProgressBar)> = rollout
        .terminals
        .iter()
        .map(|t| {
            let bar = multi.add(ProgressBar::new(100).with_style(style.clone()));
            bar.set_prefix(t.id.clone());
            (t.id.clone(), bar)
        })
        .collect();
    loop {
        header.set_message(summary(&rollout));
        header.tick();
        for (id, bar) in &bars {
            if let Some(t) = rollout.terminals.iter().find(|t| &t.id == id) {
                bar.set_position(u64::from(t.percent));
                bar.set_message(match &t.detail {
                    Some(d) if t.state == "failed" || t.state == "rolled_back" => {
                        format!("{} ({d})", t.state)
                    }
                    _ => t.state.clone(),
                });
                if matches!(t.state.as_str(), "confirmed" | "failed" | "rolled_back") {
                    bar.finish();
                }
            }
        }
        if rollout.is_over() || rollout.state == "paused" {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        let site = rollout.site.clone();
        rollout = gw.rollout(rollout.id)?;
        rollout.site = site;
    }
    multi.clear().ok();
    Ok(rollout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Rollout {
        let t = |id: &str, stage, state: &str, percent, running: &str, detail: Option<&str>| {
            RolloutTerminal {
                id: id.into(),
                stage,
                state: state.into(),
                percent,
                written: 0,
                size: 0,
                bytes_served: 0,
                running: Some(running.into()),
                detail: detail.map(str::to_string),
            }
        };
        Rollout {
            site: "arena".into(),
            id: 3,
            version: "1.2.0".into(),
            board: "pico-w".into(),
            state: "halted".into(),
            halt_reason: Some("failure rate 50% exceeds 10% in stage 0".into()),
            attempt: 1,
            stage: 0,
            stages: 3,
            canary: 2,
            waves: vec![25, 100],
            max_failure_rate: 10.0,
            failure_rate: 50.0,
            window: Some("22:00-06:00".into()),
            created_at: "2026-11-22T22:00:00Z".into(),
            updated_at: "2026-11-22T22:05:00Z".into(),
            counts: [("confirmed".to_string(), 1), ("rolled_back".to_string(), 1), ("pending".to_string(), 6)]
                .into_iter()
                .collect(),
            terminals: vec![
                t("gate-a-01", 0, "confirmed", 100, "1.2.0", None),
                t("gate-a-02", 0, "rolled_back", 100, "1.1.0", Some("the new image did not confirm its trial boot; the bootloader restored the previous image")),
                t("gate-b-01", 1, "pending", 0, "1.1.0", None),
            ],
        }
    }

    #[test]
    fn status_shows_the_halt_and_what_to_do() {
        insta::assert_snapshot!(render(&sample()));
        assert_eq!(sample().exit_code(), exit::PROBLEM);
    }

    #[test]
    fn waves_and_rates_are_percentages() {
        assert_eq!(parse_waves("25%,100%").unwrap(), [25, 100]);
        assert_eq!(parse_waves("100").unwrap(), [100]);
        assert!(parse_waves("50%,25%,100%").is_err());
        assert!(parse_waves("25%,50%").is_err());
        assert!(parse_waves("lots").is_err());
        assert_eq!(percent("10%", "--max-failure-rate").unwrap(), 10.0);
        assert!(percent("120%", "--max-failure-rate").is_err());
    }
}
