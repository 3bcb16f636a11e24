//! `fleet ota rollout start|status|pause|resume|abort|retry-failed`.
//!
//! The gateway runs the rollout (it keeps going when the laptop closes);
//! these commands start it, steer it and watch it.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{exit, Outcome};
use crate::client::{AtSite, Gateway};
use crate::render::{finish, table};
use crate::sites::Site;
use pressline_protocol::upstream::{RolloutState, RolloutTerminalState as TerminalState};

/// A rollout as the gateway reports it, with its site.
pub type Rollout = AtSite<pressline_protocol::api::Rollout>;

/// Over, or waiting for a person: time to stop watching.
fn stops_watching(r: &Rollout) -> bool {
    r.state.is_over() || r.state == RolloutState::Paused
}

/// 0 when it went (or is going) well, 1 when it needs a person.
fn exit_code(r: &Rollout) -> u8 {
    if r.state == RolloutState::Halted || r.failures() > 0 {
        exit::PROBLEM
    } else {
        exit::OK
    }
}

/// What `rollout start` asks for.
#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    /// Release version (uploaded with `fleet ota upload`).
    #[arg(long)]
    pub version: String,
    /// Board, if the version exists for several.
    #[arg(long)]
    pub board: Option<String>,
    /// These terminals (comma-separated ids).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["zone", "all"])]
    pub terminals: Option<Vec<String>>,
    /// Every terminal in this zone.
    #[arg(long, conflicts_with = "all")]
    pub zone: Option<String>,
    /// Every terminal that has reported to the gateway.
    #[arg(long)]
    pub all: bool,
    /// Terminals updated first, alone.
    #[arg(long, default_value_t = 2)]
    pub canary: usize,
    /// Cumulative waves after the canary, e.g. 25%,100%.
    #[arg(long, default_value = "25%,100%")]
    pub waves: String,
    /// Halt when this share of the terminals so far failed.
    #[arg(long, default_value = "10%")]
    pub max_failure_rate: String,
    /// Only start downloads in this daily window (site local time), e.g. 22:00-06:00.
    #[arg(long)]
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
            rollout.state.as_str(),
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
    let counts = |k: TerminalState| r.counts.get(&k).copied().unwrap_or(0);
    let mut line = format!(
        "rollout {} · {} {} · {} · stage {}/{} · {} confirmed, {} in progress, {} pending, {} failed, {} rolled back · failure rate {:.0}% (max {:.0}%)",
        r.id,
        r.board,
        r.version,
        r.state.as_str(),
        r.stage,
        r.stages.saturating_sub(1),
        counts(TerminalState::Confirmed),
        counts(TerminalState::Offered)
            + counts(TerminalState::Downloading)
            + counts(TerminalState::Verifying)
            + counts(TerminalState::Rebooting),
        counts(TerminalState::Pending),
        counts(TerminalState::Failed),
        counts(TerminalState::RolledBack),
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
            term.state.as_str().to_string(),
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
    if watch {
        rollout = watch_until_over(&gw, rollout, json)?;
    }
    let stdout = if json {
        format!("{}\n", serde_json::to_string_pretty(&rollout)?)
    } else {
        render(&rollout)
    };
    Ok(Outcome {
        code: exit_code(&rollout),
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
                    Some(d) if t.state.is_failure() => format!("{} ({d})", t.state.as_str()),
                    _ => t.state.as_str().to_string(),
                });
                if t.state.is_final() {
                    bar.finish();
                }
            }
        }
        if stops_watching(&rollout) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        rollout = gw.rollout(rollout.id)?;
    }
    multi.clear().ok();
    Ok(rollout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Rollout {
        let t = |id: &str, stage, state, percent, running: &str, detail: Option<&str>| {
            pressline_protocol::api::RolloutTerminal {
                id: id.into(),
                stage,
                state,
                percent,
                written: 0,
                size: 0,
                bytes_served: 0,
                running: Some(running.into()),
                detail: detail.map(str::to_string),
            }
        };
        let rollout = pressline_protocol::api::Rollout {
            id: 3,
            version: "1.2.0".into(),
            board: "pico-w".into(),
            state: RolloutState::Halted,
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
            counts: [
                (TerminalState::Confirmed, 1),
                (TerminalState::RolledBack, 1),
                (TerminalState::Pending, 6),
            ]
            .into_iter()
            .collect(),
            terminals: vec![
                t("gate-a-01", 0, TerminalState::Confirmed, 100, "1.2.0", None),
                t("gate-a-02", 0, TerminalState::RolledBack, 100, "1.1.0", Some("the new image did not confirm its trial boot; the bootloader restored the previous image")),
                t("gate-b-01", 1, TerminalState::Pending, 0, "1.1.0", None),
            ],
        };
        AtSite {
            site: "arena".into(),
            item: rollout,
        }
    }

    #[test]
    fn status_shows_the_halt_and_what_to_do() {
        insta::assert_snapshot!(render(&sample()));
        assert_eq!(exit_code(&sample()), exit::PROBLEM);
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
