//! `fleet`: the Pressline CLI for field engineers and operators.
//!
//! # Layout
//! - [`sites`]: the sites profile (which gateways, their tokens).
//! - [`client`]: the gateway HTTP API client and its errors.
//! - [`commands`]: one module per subcommand (`site`, `status`,
//!   `terminals`, `health`, `alerts`).
//! - [`render`]: tables and human times.

mod client;
mod commands;
mod probe;
mod render;
mod sites;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use commands::{exit, Outcome};
use time::OffsetDateTime;

/// Pressline fleet CLI: sites, terminals, health and alerts across gateways.
#[derive(Debug, Parser)]
#[command(name = "fleet", version)]
struct Cli {
    /// Sites profile [default: ~/.config/pressline/sites.toml].
    #[arg(long, global = true, env = "PRESSLINE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Which sites a command talks to.
#[derive(Debug, Args)]
struct SiteSelection {
    /// Only this site.
    #[arg(long, conflicts_with = "all_sites")]
    site: Option<String>,
    /// Every site in the profile (the default).
    #[arg(long)]
    all_sites: bool,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the sites profile.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Per site: terminals online/offline, alerts, presses today, backlog,
    /// notification channels. Exits 1 when a site is unreachable, a
    /// critical alert is open or a notification channel is failing.
    Status(SiteSelection),
    /// Every terminal: online, last seen, battery, Wi-Fi, firmware, queue.
    #[command(args_conflicts_with_subcommands = true)]
    Terminals {
        #[command(subcommand)]
        action: Option<TerminalsAction>,
        #[command(flatten)]
        sites: SiteSelection,
    },
    /// Give a terminal its identity: write its provisioning record (with a
    /// fresh secret) into it through the debug probe, or to a file, and
    /// register it with its site's gateway.
    Provision(ProvisionArgs),
    /// Debug probes.
    #[command(subcommand)]
    Probe(ProbeCommand),
    /// Release signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Firmware releases for over-the-air updates.
    #[command(subcommand)]
    Ota(OtaCommand),
    /// Stream the terminal's defmt log over RTT (Ctrl-C to stop).
    Logs {
        /// The firmware ELF the terminal runs (for its defmt table).
        #[arg(long)]
        elf: PathBuf,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
        #[command(flatten)]
        probe: ProbeArgs,
    },
    /// Flash firmware through the debug probe (verify, reset, run).
    Flash {
        /// The firmware ELF (e.g. pressline-pico-w).
        firmware: PathBuf,
        #[command(flatten)]
        probe: ProbeArgs,
    },
    /// Everything known about one terminal, with its alerts.
    Health {
        terminal: String,
        #[command(flatten)]
        sites: SiteSelection,
    },
    /// Open alerts (all, including recovered and closed, with --all);
    /// `fleet alerts ack ID --site S --by NAME` acknowledges one.
    #[command(args_conflicts_with_subcommands = true)]
    Alerts {
        #[command(subcommand)]
        action: Option<AlertsAction>,
        /// Include recovered and closed alerts.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        sites: SiteSelection,
    },
    /// Happy Index per site and zone, a ranking, hour × weekday in each
    /// site's time zone, change against the previous period: from the
    /// central PostgreSQL that pressline-central fills.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The central database (`postgres://user:pass@host:5432/db`).
    #[arg(long, env = "PRESSLINE_POSTGRES")]
    postgres: String,
    /// PEM file of a private CA that signed the database's certificate.
    #[arg(long, env = "PRESSLINE_POSTGRES_CA")]
    postgres_ca: Option<PathBuf>,
    /// Last day of the period (each site's local date; default: today, UTC).
    #[arg(long, value_parser = parse_date)]
    to: Option<time::Date>,
    /// Days in the period, ending with --to.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Weeks of the hour × weekday table, ending with --to.
    #[arg(long, default_value_t = 4)]
    weeks: u32,
    /// Weight of the network average in the ranking, in presses: sites
    /// with far fewer presses than this rank near the average.
    #[arg(long, default_value_t = 50)]
    prior_presses: u32,
    /// Only these sites (repeatable; default: all).
    #[arg(long)]
    site: Vec<String>,
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// One long table with a `section` column.
    #[arg(long)]
    csv: bool,
}

fn parse_date(s: &str) -> Result<time::Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, format).map_err(|e| format!("{s:?} is not a date like 2026-11-29: {e}"))
}

#[derive(Debug, Subcommand)]
enum AlertsAction {
    /// Someone is on it: records who (and a note), tells the channels that
    /// heard of the alert, and stops its escalation.
    Ack {
        /// The alert's id (the ID column of `fleet alerts`).
        id: u64,
        /// The alert's site.
        #[arg(long)]
        site: String,
        /// Who is acknowledging.
        #[arg(long)]
        by: String,
        /// What is being done about it.
        #[arg(long)]
        note: Option<String>,
        /// The acknowledged alert as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TerminalsAction {
    /// Cut a terminal off: its login and presses are refused from now on.
    Revoke {
        terminal: String,
        /// The terminal's site.
        #[arg(long)]
        site: String,
    },
}

/// Which probe and chip (shared by every probe command).
#[derive(Debug, Args)]
struct ProbeArgs {
    /// Target chip.
    #[arg(long, default_value = probe::DEFAULT_CHIP)]
    chip: String,
    /// Debug probe serial number, when several are attached (see `fleet probe list`).
    #[arg(long = "probe", value_name = "SERIAL")]
    probe_serial: Option<String>,
}

#[derive(Debug, Args)]
struct ProvisionArgs {
    /// Show a record (secret redacted) instead of writing one: from
    /// --from-file, or from the terminal on the probe.
    #[arg(long)]
    read: bool,
    /// The record file to show with --read.
    #[arg(long, requires = "read")]
    from_file: Option<PathBuf>,
    /// Provision every terminal listed in this CSV (header: terminal,zone),
    /// prompting to plug in each (or into --to-dir without prompting).
    #[arg(long, value_name = "CSV", conflicts_with_all = ["read", "terminal", "to_file"])]
    batch: Option<PathBuf>,
    /// With --batch: write record files into this directory instead of
    /// terminals on a probe.
    #[arg(long, requires = "batch")]
    to_dir: Option<PathBuf>,
    /// The terminal's site (from the sites profile).
    #[arg(long, required_unless_present = "read")]
    site: Option<String>,
    /// Terminal id.
    #[arg(long, required_unless_present_any = ["read", "batch"])]
    terminal: Option<String>,
    /// Zone id the terminal belongs to (e.g. north-food).
    #[arg(long)]
    zone: Option<String>,
    #[arg(long, required_unless_present = "read")]
    wifi_ssid: Option<String>,
    /// File holding the Wi-Fi password (kept out of shell history).
    #[arg(long)]
    wifi_password_file: Option<PathBuf>,
    /// The gateway's MQTT address as the terminal sees it, HOST:PORT
    /// (port 1884 for the Pico W firmware, which speaks MQTT 5).
    #[arg(long, required_unless_present = "read")]
    gateway: Option<String>,
    /// Write the record to this file instead of the terminal on the probe
    /// (for terminal-sim --provisioning, or flashing later).
    #[arg(long)]
    to_file: Option<PathBuf>,
    /// Write the record without registering the terminal with its gateway.
    #[arg(long)]
    no_register: bool,
    /// With --batch: do not wait for Enter between terminals.
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    probe: ProbeArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make an ed25519 signing key pair: DIR/signing.key, DIR/signing.pub.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum OtaCommand {
    /// Sign a raw firmware image into a release artifact.
    Pack {
        /// MAJOR.MINOR.PATCH.
        #[arg(long)]
        version: String,
        #[arg(long, default_value = "pico-w")]
        board: String,
        /// The private key (signing.key).
        #[arg(long)]
        key: PathBuf,
        /// The raw image (objcopy -O binary of the firmware ELF).
        image: PathBuf,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Upload a release artifact to a site's gateway.
    Upload {
        artifact: PathBuf,
        #[arg(long)]
        site: String,
        /// Accept a release older than the newest one there (a deliberate roll-back).
        #[arg(long)]
        allow_downgrade: bool,
    },
    /// Releases uploaded to the gateways.
    Releases(SiteSelection),
    /// Roll a release out to a site's terminals (canary, waves, halts).
    #[command(subcommand)]
    Rollout(RolloutCommand),
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Start a rollout: canary terminals first, then waves; it halts by
    /// itself past the failure rate. Prints the rollout id.
    Start {
        #[arg(long)]
        site: String,
        /// Release version (uploaded with `fleet ota upload`).
        #[arg(long)]
        version: String,
        /// Board, if the version exists for several.
        #[arg(long)]
        board: Option<String>,
        /// These terminals (comma-separated ids).
        #[arg(long, value_delimiter = ',', conflicts_with_all = ["zone", "all"])]
        terminals: Option<Vec<String>>,
        /// Every terminal in this zone.
        #[arg(long, conflicts_with = "all")]
        zone: Option<String>,
        /// Every terminal that has reported to the gateway.
        #[arg(long)]
        all: bool,
        /// Terminals updated first, alone.
        #[arg(long, default_value_t = 2)]
        canary: usize,
        /// Cumulative waves after the canary, e.g. 25%,100%.
        #[arg(long, default_value = "25%,100%")]
        waves: String,
        /// Halt when this share of the terminals so far failed.
        #[arg(long, default_value = "10%")]
        max_failure_rate: String,
        /// Only start downloads in this daily window (site local time), e.g. 22:00-06:00.
        #[arg(long)]
        window: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Where a rollout is, per terminal; --watch follows it to the end.
    Status {
        id: u32,
        #[arg(long)]
        site: String,
        /// Show per-terminal progress bars until the rollout is over or paused.
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        json: bool,
    },
    /// Stop offering the update (downloads in progress are withdrawn).
    Pause(RolloutTarget),
    /// Continue a paused rollout.
    Resume(RolloutTarget),
    /// End a rollout for good.
    Abort(RolloutTarget),
    /// Give failed and rolled-back terminals another attempt (also restarts a halted rollout).
    RetryFailed(RolloutTarget),
}

#[derive(Debug, clap::Args)]
struct RolloutTarget {
    id: u32,
    #[arg(long)]
    site: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ProbeCommand {
    /// List attached debug probes.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SiteCommand {
    /// Add (or update) a site.
    Add {
        name: String,
        /// Gateway address, e.g. https://10.20.0.2:8080 (or http:// when the
        /// gateway serves plain HTTP).
        #[arg(long)]
        url: String,
        /// API token (visible in shell history: prefer --token-file).
        #[arg(long, conflicts_with = "token_file")]
        token: Option<String>,
        /// File holding the API token (the gateway's <data-dir>/api-token).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// CA certificate (PEM) that issued the gateway's HTTPS certificate,
        /// for a gateway with a certificate from your own CA.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
    },
    /// List sites (tokens are never shown).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a site.
    Remove { name: String },
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let path = match cli.config {
        Some(p) => p,
        None => sites::default_path()?,
    };
    let now = OffsetDateTime::now_utc();
    let select = |sel: &SiteSelection| -> anyhow::Result<Vec<sites::Site>> {
        sites::SitesFile::load(&path)?.select(sel.site.as_deref(), &path)
    };
    match cli.command {
        Command::Site(SiteCommand::Add {
            name,
            url,
            token,
            token_file,
            ca,
        }) => commands::site::add(
            &path,
            &name,
            &url,
            token.as_deref(),
            token_file.as_deref(),
            ca.as_deref(),
        ),
        Command::Site(SiteCommand::List { json }) => commands::site::list(&path, json),
        Command::Site(SiteCommand::Remove { name }) => commands::site::remove(&path, &name),
        Command::Status(sel) => commands::status::run(&select(&sel)?, sel.json, now),
        Command::Terminals {
            action: None,
            sites,
        } => commands::terminals::run(&select(&sites)?, sites.json, now),
        Command::Terminals {
            action: Some(TerminalsAction::Revoke { terminal, site }),
            ..
        } => {
            let site = sites::SitesFile::load(&path)?
                .select(Some(&site), &path)?
                .remove(0);
            client::Gateway::new(&site).revoke(&terminal)?;
            Ok(Outcome {
                stdout: format!("revoked {terminal} at site {}\n", site.name),
                warnings: vec![],
                code: exit::OK,
            })
        }
        Command::Provision(p) => provision(&path, p),
        Command::Keys(KeysCommand::Generate { out }) => commands::ota::generate_keys(&out),
        Command::Ota(OtaCommand::Pack {
            version,
            board,
            key,
            image,
            out,
        }) => commands::ota::pack(&version, &board, &key, &image, &out),
        Command::Ota(OtaCommand::Upload {
            artifact,
            site,
            allow_downgrade,
        }) => {
            let site = sites::SitesFile::load(&path)?
                .select(Some(&site), &path)?
                .remove(0);
            commands::ota::upload(&site, &artifact, allow_downgrade)
        }
        Command::Ota(OtaCommand::Releases(sel)) => {
            commands::ota::releases(&select(&sel)?, sel.json)
        }
        Command::Ota(OtaCommand::Rollout(command)) => {
            let one_site = |name: &str| -> anyhow::Result<sites::Site> {
                Ok(sites::SitesFile::load(&path)?
                    .select(Some(name), &path)?
                    .remove(0))
            };
            use commands::rollout;
            match command {
                RolloutCommand::Start {
                    site,
                    version,
                    board,
                    terminals,
                    zone,
                    all,
                    canary,
                    waves,
                    max_failure_rate,
                    window,
                    json,
                } => rollout::start(
                    &one_site(&site)?,
                    rollout::StartArgs {
                        version,
                        board,
                        terminals,
                        zone,
                        all,
                        canary,
                        waves,
                        max_failure_rate,
                        window,
                    },
                    json,
                ),
                RolloutCommand::Status {
                    id,
                    site,
                    watch,
                    json,
                } => rollout::status(&one_site(&site)?, id, watch, json),
                RolloutCommand::Pause(t) => {
                    rollout::command(&one_site(&t.site)?, t.id, "pause", t.json)
                }
                RolloutCommand::Resume(t) => {
                    rollout::command(&one_site(&t.site)?, t.id, "resume", t.json)
                }
                RolloutCommand::Abort(t) => {
                    rollout::command(&one_site(&t.site)?, t.id, "abort", t.json)
                }
                RolloutCommand::RetryFailed(t) => {
                    rollout::command(&one_site(&t.site)?, t.id, "retry-failed", t.json)
                }
            }
        }
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
            commands::health::run(&select(&sites)?, &terminal, sites.json, now)
        }
        Command::Alerts {
            action: None,
            all,
            sites,
        } => commands::alerts::run(&select(&sites)?, all, sites.json, now),
        Command::Alerts {
            action:
                Some(AlertsAction::Ack {
                    id,
                    site,
                    by,
                    note,
                    json,
                }),
            ..
        } => {
            let site = sites::SitesFile::load(&path)?
                .select(Some(&site), &path)?
                .remove(0);
            let alert = client::Gateway::new(&site).acknowledge(id, &by, note.as_deref())?;
            commands::alerts::acknowledged(&alert, json)
        }
        Command::Report(r) => commands::report::run(commands::report::ReportArgs {
            postgres: &r.postgres,
            postgres_ca: r.postgres_ca.as_deref(),
            to: r.to.unwrap_or(now.date()),
            days: r.days,
            weeks: r.weeks,
            prior_presses: r.prior_presses,
            sites: &r.site,
            format: if r.json {
                commands::report::Format::Json
            } else if r.csv {
                commands::report::Format::Csv
            } else {
                commands::report::Format::Human
            },
        }),
    }
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
    let site = sites::SitesFile::load(path)?
        .select(Some(site_name), path)?
        .remove(0);
    let wifi_password = match &p.wifi_password_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read --wifi-password-file {}: {e}", f.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        None => String::new(),
    };
    let wifi_ssid = p.wifi_ssid.as_deref().expect("clap requires it");
    let gateway = p.gateway.as_deref().expect("clap requires it");
    if let Some(batch) = &p.batch {
        return commands::batch::run(
            &site,
            batch,
            p.to_dir.as_deref(),
            wifi_ssid,
            &wifi_password,
            gateway,
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
        register: !p.no_register,
    };
    let destination = match &p.to_file {
        Some(file) => commands::provision::Destination::File(file),
        None => commands::provision::Destination::Probe { chip, serial },
    };
    commands::provision::provision(&site, &request, &destination)
}
