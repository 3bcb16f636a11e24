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
mod render;
mod sites;

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
    /// Per site: terminals online/offline, alerts, presses today, backlog.
    /// Exits 1 when a site is unreachable or a critical alert is open.
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
    /// fresh secret) and register it with its site's gateway.
    Provision(ProvisionArgs),
    /// Everything known about one terminal, with its alerts.
    Health {
        terminal: String,
        #[command(flatten)]
        sites: SiteSelection,
    },
    /// Open health alerts (all, including cleared, with --all).
    Alerts {
        /// Include cleared alerts.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        sites: SiteSelection,
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

#[derive(Debug, Args)]
struct ProvisionArgs {
    /// Show a record (secret redacted) instead of writing one.
    #[arg(long, requires = "from_file")]
    read: bool,
    /// The record to show with --read.
    #[arg(long)]
    from_file: Option<PathBuf>,
    /// The terminal's site (from the sites profile).
    #[arg(long, required_unless_present = "read")]
    site: Option<String>,
    /// Terminal id.
    #[arg(long, required_unless_present = "read")]
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
    /// Write the record to this file (for terminal-sim --provisioning or
    /// flashing later). Writing straight to a terminal through a debug probe
    /// is not in this build yet.
    #[arg(long, required_unless_present = "read")]
    to_file: Option<PathBuf>,
    /// Write the record without registering the terminal.
    #[arg(long)]
    no_register: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum SiteCommand {
    /// Add (or update) a site.
    Add {
        name: String,
        /// Gateway HTTP address, e.g. http://10.20.0.2:8080.
        #[arg(long)]
        url: String,
        /// API token (visible in shell history: prefer --token-file).
        #[arg(long, conflicts_with = "token_file")]
        token: Option<String>,
        /// File holding the API token (the gateway's <data-dir>/api-token).
        #[arg(long)]
        token_file: Option<PathBuf>,
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
        }) => commands::site::add(&path, &name, &url, token.as_deref(), token_file.as_deref()),
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
        Command::Provision(p) if p.read => {
            commands::provision::read(p.from_file.as_deref().expect("clap requires it"), p.json)
        }
        Command::Provision(p) => {
            let site_name = p.site.as_deref().expect("clap requires it");
            let site = sites::SitesFile::load(&path)?
                .select(Some(site_name), &path)?
                .remove(0);
            let wifi_password = match &p.wifi_password_file {
                Some(f) => std::fs::read_to_string(f)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot read --wifi-password-file {}: {e}", f.display())
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
                None => String::new(),
            };
            let request = commands::provision::Request {
                terminal: p.terminal.as_deref().expect("clap requires it"),
                zone: p.zone.as_deref(),
                wifi_ssid: p.wifi_ssid.as_deref().expect("clap requires it"),
                wifi_password,
                gateway: p.gateway.as_deref().expect("clap requires it"),
                register: !p.no_register,
            };
            commands::provision::to_file(
                &site,
                &request,
                p.to_file.as_deref().expect("clap requires it"),
            )
        }
        Command::Health { terminal, sites } => {
            commands::health::run(&select(&sites)?, &terminal, sites.json, now)
        }
        Command::Alerts { all, sites } => {
            commands::alerts::run(&select(&sites)?, all, sites.json, now)
        }
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
            ExitCode::from(exit::USAGE)
        }
    }
}
