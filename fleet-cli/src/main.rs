//! `fleet`: the Pressline CLI for field engineers and operators.
//!
//! # Layout
//! - [`cli`]: the command line (clap): subcommands and shared options.
//! - this file: which command runs, and how it ends (output, exit code).
//! - [`sites`]: the sites profile (which gateways, their tokens).
//! - [`client`]: the gateway HTTP API client and its errors.
//! - [`commands`]: one module per subcommand.
//! - [`probe`]: the debug probe (probe-rs).
//! - [`render`]: tables and human times.
//! - [`tls`]: a site's private CA, and certificate failures explained.

mod cli;
mod client;
mod commands;
mod probe;
mod render;
mod sites;
mod tls;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use cli::*;
use commands::{exit, Outcome};
use time::OffsetDateTime;

/// The sites profile a command reads.
struct Profile {
    path: PathBuf,
}

impl Profile {
    /// One site by name (commands that act on one gateway).
    fn one(&self, name: &str) -> anyhow::Result<sites::Site> {
        sites::load_one(&self.path, name)
    }

    /// The sites `--site`/`--all-sites` choose.
    fn select(&self, selection: &SiteSelection) -> anyhow::Result<Vec<sites::Site>> {
        sites::load_selected(&self.path, selection.site.as_deref())
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let profile = Profile {
        path: match cli.config {
            Some(p) => p,
            None => sites::default_path()?,
        },
    };
    let now = OffsetDateTime::now_utc();
    match cli.command {
        Command::Site(command) => site(&profile.path, command),
        Command::Status(sel) => commands::status::run(&profile.select(&sel)?, sel.json, now),
        Command::Terminals { action, sites } => terminals(&profile, action, sites, now),
        Command::Provision(p) => provision(&profile.path, p),
        Command::Keys(KeysCommand::Generate { out }) => commands::ota::generate_keys(&out),
        Command::Ota(command) => ota(&profile, command),
        Command::Probe(ProbeCommand::List { json }) => commands::probe::list(json),
        Command::Logs {
            elf,
            seconds,
            probe,
        } => commands::probe::logs(&elf, &probe.chip, probe.probe_serial.as_deref(), seconds),
        Command::Flash { firmware, probe } => {
            commands::probe::flash(&firmware, &probe.chip, probe.probe_serial.as_deref())
        }
        Command::Health { terminal, sites } => {
            commands::health::run(&profile.select(&sites)?, &terminal, sites.json, now)
        }
        Command::Alerts { action, all, sites } => alerts(&profile, action, all, sites, now),
        Command::Report(r) => report(r, now),
    }
}

fn site(path: &Path, command: SiteCommand) -> anyhow::Result<Outcome> {
    match command {
        SiteCommand::Add {
            name,
            url,
            token,
            token_file,
            ca,
        } => commands::site::add(
            path,
            &name,
            &url,
            token.as_deref(),
            token_file.as_deref(),
            ca.as_deref(),
        ),
        SiteCommand::List { json } => commands::site::list(path, json),
        SiteCommand::Remove { name } => commands::site::remove(path, &name),
    }
}

fn terminals(
    profile: &Profile,
    action: Option<TerminalsAction>,
    sites: SiteSelection,
    now: OffsetDateTime,
) -> anyhow::Result<Outcome> {
    match action {
        None => commands::terminals::run(&profile.select(&sites)?, sites.json, now),
        Some(TerminalsAction::Revoke { terminal, site }) => {
            let site = profile.one(&site)?;
            client::Gateway::new(&site).revoke(&terminal)?;
            Ok(Outcome {
                stdout: format!("revoked {terminal} at site {}\n", site.name),
                warnings: vec![],
                code: exit::OK,
            })
        }
        Some(TerminalsAction::Power {
            terminal,
            site,
            mode,
            upload_delay_secs,
            heartbeat_every_secs,
            unhappy_run,
            json,
        }) => {
            let site = profile.one(&site)?;
            let body = serde_json::json!({
                "mode": mode,
                "upload_delay_secs": upload_delay_secs,
                "heartbeat_every_secs": heartbeat_every_secs,
                "unhappy_run": unhappy_run,
            });
            let answer = client::Gateway::new(&site).set_power(&terminal, body)?;
            let stdout = if json {
                format!("{answer:#}\n")
            } else {
                let w = &answer["wanted"];
                format!(
                        "{terminal} at site {}: {} (upload delay {} s, heartbeat every {} s, unhappy run {}), sent at its next heartbeat\n",
                        site.name, w["mode"].as_str().unwrap_or("?"), w["upload_delay_secs"], w["heartbeat_every_secs"], w["unhappy_run"]
                )
            };
            Ok(Outcome {
                stdout,
                warnings: vec![],
                code: exit::OK,
            })
        }
    }
}

fn ota(profile: &Profile, command: OtaCommand) -> anyhow::Result<Outcome> {
    match command {
        OtaCommand::Pack {
            version,
            board,
            key,
            image,
            out,
            allow_downgrade,
        } => commands::ota::pack(&version, &board, &key, &image, &out, allow_downgrade),
        OtaCommand::Upload {
            artifact,
            site,
            allow_downgrade,
        } => commands::ota::upload(&profile.one(&site)?, &artifact, allow_downgrade),
        OtaCommand::Releases(sel) => commands::ota::releases(&profile.select(&sel)?, sel.json),
        OtaCommand::Rollout(command) => rollout(profile, command),
    }
}

fn rollout(profile: &Profile, command: RolloutCommand) -> anyhow::Result<Outcome> {
    use commands::rollout;
    let steer = |t: RolloutTarget, action: &str| -> anyhow::Result<Outcome> {
        rollout::command(&profile.one(&t.site)?, t.id, action, t.json)
    };
    match command {
        RolloutCommand::Start { site, args, json } => {
            rollout::start(&profile.one(&site)?, args, json)
        }
        RolloutCommand::Status {
            id,
            site,
            watch,
            json,
        } => rollout::status(&profile.one(&site)?, id, watch, json),
        RolloutCommand::Pause(t) => steer(t, "pause"),
        RolloutCommand::Resume(t) => steer(t, "resume"),
        RolloutCommand::Abort(t) => steer(t, "abort"),
        RolloutCommand::RetryFailed(t) => steer(t, "retry-failed"),
    }
}

fn alerts(
    profile: &Profile,
    action: Option<AlertsAction>,
    all: bool,
    sites: SiteSelection,
    now: OffsetDateTime,
) -> anyhow::Result<Outcome> {
    match action {
        None => commands::alerts::run(&profile.select(&sites)?, all, sites.json, now),
        Some(AlertsAction::Ack {
            id,
            site,
            by,
            note,
            json,
        }) => {
            let site = profile.one(&site)?;
            let alert = client::Gateway::new(&site).acknowledge(id, &by, note.as_deref())?;
            commands::alerts::acknowledged(&alert, json)
        }
    }
}

fn report(r: ReportArgs, now: OffsetDateTime) -> anyhow::Result<Outcome> {
    commands::report::run(commands::report::ReportArgs {
        postgres: &r.postgres,
        postgres_ca: r.postgres_ca.as_deref(),
        to: r.to.unwrap_or(now.date()),
        days: r.days,
        weeks: r.weeks,
        prior_presses: r.prior_presses,
        source: r.source,
        sites: &r.site,
        format: if r.json {
            commands::report::Format::Json
        } else if r.csv {
            commands::report::Format::Csv
        } else {
            commands::report::Format::Human
        },
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(outcome) => {
            print!("{}", outcome.stdout);
            for w in &outcome.warnings {
                eprintln!("fleet: {w}");
            }
            ExitCode::from(outcome.code)
        }
        Err(e) => {
            eprintln!("fleet: {e:#}");
            // A gateway or probe that fails is a problem on site (1), not a
            // mistake on the command line (2).
            let on_site = e
                .chain()
                .any(|cause| cause.is::<client::ClientError>() || cause.is::<probe::ProbeError>());
            ExitCode::from(if on_site { exit::PROBLEM } else { exit::USAGE })
        }
    }
}

fn provision(path: &std::path::Path, p: ProvisionArgs) -> anyhow::Result<Outcome> {
    let (chip, serial) = (p.probe.chip.as_str(), p.probe.probe_serial.as_deref());
    if p.read {
        return match &p.from_file {
            Some(file) => commands::provision::read(file, p.json),
            None => commands::provision::read_from_probe(chip, serial, p.json),
        };
    }
    let site_name = p.site.as_deref().expect("clap requires it");
    let site = sites::load_one(path, site_name)?;
    let wifi_password = match &p.wifi_password_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read --wifi-password-file {}: {e}", f.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        None => String::new(),
    };
    let wifi_ssid = p.wifi_ssid.as_deref().expect("clap requires it");
    let gateway = p.gateway.as_deref().expect("clap requires it");
    let power = match p.power.as_str() {
        "battery" => pressline_protocol::power::PowerSettings {
            upload_delay_secs: p.upload_delay_secs,
            heartbeat_every_secs: p.heartbeat_every_secs,
            unhappy_run: p.unhappy_run,
            ..pressline_protocol::power::PowerSettings::BATTERY
        },
        _ => pressline_protocol::power::PowerSettings::MAINS,
    };
    power
        .validate()
        .map_err(|e| anyhow::anyhow!("--power battery: {e}"))?;
    if let Some(batch) = &p.batch {
        return commands::batch::run(
            &site,
            batch,
            p.to_dir.as_deref(),
            wifi_ssid,
            &wifi_password,
            gateway,
            power,
            !p.no_register,
            p.yes,
            chip,
            serial,
        );
    }
    let request = commands::provision::Request {
        terminal: p.terminal.as_deref().expect("clap requires it"),
        zone: p.zone.as_deref(),
        wifi_ssid,
        wifi_password: wifi_password.clone(),
        gateway,
        power,
        register: !p.no_register,
    };
    let destination = match &p.to_file {
        Some(file) => commands::provision::Destination::File(file),
        None => commands::provision::Destination::Probe { chip, serial },
    };
    commands::provision::provision(&site, &request, &destination)
}
