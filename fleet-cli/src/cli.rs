//! The command line: every subcommand and its options (clap), and the
//! option groups several share ([`SiteSelection`], [`ProbeArgs`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::probe;

/// Pressline fleet CLI: sites, terminals, health and alerts across gateways.
#[derive(Debug, Parser)]
#[command(name = "fleet", version)]
pub struct Cli {
    /// Sites profile [default: ~/.config/pressline/sites.toml].
    #[arg(long, global = true, env = "PRESSLINE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Which sites a command talks to.
#[derive(Debug, Args)]
pub struct SiteSelection {
    /// Only this site.
    #[arg(long, conflicts_with = "all_sites")]
    pub site: Option<String>,
    /// Every site in the profile (the default).
    #[arg(long)]
    pub all_sites: bool,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
pub struct ReportArgs {
    /// The central database (`postgres://user:pass@host:5432/db`).
    #[arg(long, env = "PRESSLINE_POSTGRES")]
    pub postgres: String,
    /// PEM file of a private CA that signed the database's certificate.
    #[arg(long, env = "PRESSLINE_POSTGRES_CA")]
    pub postgres_ca: Option<PathBuf>,
    /// Last day of the period (each site's local date; default: today, UTC).
    #[arg(long, value_parser = parse_date)]
    pub to: Option<time::Date>,
    /// Days in the period, ending with --to.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=36_600))]
    pub days: u32,
    /// Weeks of the hour × weekday table, ending with --to.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=5_200))]
    pub weeks: u32,
    /// Weight of the network average in the ranking, in presses: sites
    /// with far fewer presses than this rank near the average.
    #[arg(long, default_value_t = 50)]
    pub prior_presses: u32,
    /// Read the figures from `press_hours` (default) or from every row of
    /// `presses` (the same figures within the months the retention keeps,
    /// slower; for checking).
    #[arg(long, value_enum, default_value = "rollups")]
    pub source: crate::commands::report::Source,
    /// Only these sites (repeatable; default: all).
    #[arg(long)]
    pub site: Vec<String>,
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// One long table with a `section` column.
    #[arg(long)]
    pub csv: bool,
}

pub fn parse_date(s: &str) -> Result<time::Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, format).map_err(|e| format!("{s:?} is not a date like 2026-11-29: {e}"))
}

#[derive(Debug, Subcommand)]
pub enum AlertsAction {
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
pub enum TerminalsAction {
    /// Cut a terminal off: its login and presses are refused from now on.
    Revoke {
        terminal: String,
        /// The terminal's site.
        #[arg(long)]
        site: String,
    },
    /// Change how a terminal spends its power: the gateway sends the
    /// settings at the terminal's next heartbeat (on batteries, its next
    /// upload) and keeps them across restarts.
    Power {
        terminal: String,
        /// The terminal's site.
        #[arg(long)]
        site: String,
        /// `mains` (always connected) or `battery` (radio off between
        /// uploads).
        #[arg(long, value_parser = ["mains", "battery"])]
        mode: String,
        /// Battery: presses reach the gateway within this many seconds.
        #[arg(long, value_name = "SECONDS")]
        upload_delay_secs: Option<u16>,
        /// Battery: a heartbeat at least this often.
        #[arg(long, value_name = "SECONDS")]
        heartbeat_every_secs: Option<u16>,
        /// Battery: this many unhappy presses in a row go out at once (0: never).
        #[arg(long, value_name = "PRESSES")]
        unhappy_run: Option<u8>,
        /// The gateway's answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which probe and chip (shared by every probe command).
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Target chip.
    #[arg(long, default_value = probe::DEFAULT_CHIP)]
    pub chip: String,
    /// Debug probe serial number, when several are attached (see `fleet probe list`).
    #[arg(long = "probe", value_name = "SERIAL")]
    pub probe_serial: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Show a record (secret redacted) instead of writing one: from
    /// --from-file, or from the terminal on the probe.
    #[arg(long)]
    pub read: bool,
    /// The record file to show with --read.
    #[arg(long, requires = "read")]
    pub from_file: Option<PathBuf>,
    /// Provision every terminal listed in this CSV (header: terminal,zone),
    /// prompting to plug in each (or into --to-dir without prompting).
    #[arg(long, value_name = "CSV", conflicts_with_all = ["read", "terminal", "to_file"])]
    pub batch: Option<PathBuf>,
    /// With --batch: write record files into this directory instead of
    /// terminals on a probe.
    #[arg(long, requires = "batch")]
    pub to_dir: Option<PathBuf>,
    /// The terminal's site (from the sites profile).
    #[arg(long, required_unless_present = "read")]
    pub site: Option<String>,
    /// Terminal id.
    #[arg(long, required_unless_present_any = ["read", "batch"])]
    pub terminal: Option<String>,
    /// Zone id the terminal belongs to (e.g. north-food).
    #[arg(long)]
    pub zone: Option<String>,
    #[arg(long, required_unless_present = "read")]
    pub wifi_ssid: Option<String>,
    /// File holding the Wi-Fi password (kept out of shell history).
    #[arg(long)]
    pub wifi_password_file: Option<PathBuf>,
    /// The gateway's MQTT address as the terminal sees it, HOST:PORT
    /// (port 1884 for the Pico W firmware, which speaks MQTT 5).
    #[arg(long, required_unless_present = "read")]
    pub gateway: Option<String>,
    /// Write the record to this file instead of the terminal on the probe
    /// (for terminal-sim --provisioning, or flashing later).
    #[arg(long)]
    pub to_file: Option<PathBuf>,
    /// Write the record without registering the terminal with its gateway.
    #[arg(long)]
    pub no_register: bool,
    /// How the terminal is powered: `mains` (always connected, every press
    /// out at once) or `battery` (radio off between uploads).
    #[arg(long, value_name = "MODE", default_value = "mains", value_parser = ["mains", "battery"])]
    pub power: String,
    /// Battery: presses reach the gateway within this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = pressline_protocol::power::PowerSettings::BATTERY.upload_delay_secs)]
    pub upload_delay_secs: u16,
    /// Battery: a heartbeat at least this often.
    #[arg(long, value_name = "SECONDS", default_value_t = pressline_protocol::power::PowerSettings::BATTERY.heartbeat_every_secs)]
    pub heartbeat_every_secs: u16,
    /// Battery: this many unhappy presses in a row go out at once (0: never).
    #[arg(long, value_name = "PRESSES", default_value_t = pressline_protocol::power::PowerSettings::BATTERY.unhappy_run)]
    pub unhappy_run: u8,
    /// With --batch: do not wait for Enter between terminals.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub probe: ProbeArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make an ed25519 signing key pair: DIR/signing.key, DIR/signing.pub.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum OtaCommand {
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
        /// Sign it as a roll-back: terminals running a newer version take
        /// it (without this they refuse it, `downgrade`).
        #[arg(long)]
        allow_downgrade: bool,
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
pub enum RolloutCommand {
    /// Start a rollout: canary terminals first, then waves; it halts by
    /// itself past the failure rate. Prints the rollout id.
    Start {
        #[arg(long)]
        site: String,
        #[command(flatten)]
        args: crate::commands::rollout::StartArgs,
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
pub struct RolloutTarget {
    pub id: u32,
    #[arg(long)]
    pub site: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ProbeCommand {
    /// List attached debug probes.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
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
