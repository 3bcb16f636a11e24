//! `gateway`: the Pressline site gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pressline_gateway::alerting::config::{ChannelConfig, ChannelKind, RouteConfig};
use pressline_gateway::config::{Config, DEFAULT_TOML};
use pressline_gateway::terminals::identity::{ModeSource, SecurityMode};

/// mimalloc instead of glibc's malloc: sled copies and frees a leaf node
/// per insert, which glibc's `malloc`/`free` make a large share of the
/// gateway's CPU under ingest (BENCHMARKS.md, "Ingest ceiling").
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Pressline site gateway: terminals in, durable store, upstream out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (embedded defaults unless --config is given).
    Run(RunArgs),
    /// Run the gateway with simulated terminals: see presses flow end to end.
    Demo {
        /// Number of simulated terminals.
        #[arg(long, default_value_t = 8)]
        terminals: usize,
        /// Send every alert to this URL (e.g. `deploy/webhook-receiver.py`
        /// on http://127.0.0.1:9000/hook, or a Slack, Teams or ntfy URL
        /// with --webhook-kind).
        #[arg(long)]
        webhook: Option<String>,
        /// What the --webhook URL is.
        #[arg(long, value_enum, default_value = "webhook")]
        webhook_kind: WebhookKind,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Print the documented default configuration (TOML).
    GenerateConfig,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WebhookKind {
    Webhook,
    Slack,
    Teams,
    Ntfy,
}

impl From<WebhookKind> for ChannelKind {
    fn from(k: WebhookKind) -> ChannelKind {
        match k {
            WebhookKind::Webhook => ChannelKind::Webhook,
            WebhookKind::Slack => ChannelKind::Slack,
            WebhookKind::Teams => ChannelKind::Teams,
            WebhookKind::Ntfy => ChannelKind::Ntfy,
        }
    }
}

/// `gateway demo --webhook URL`: every alert to that URL, with acknowledge
/// links back to this gateway's HTTP address.
fn demo_webhook(config: &mut Config, url: String, kind: WebhookKind) {
    config.alerting.channels.insert(
        "demo".into(),
        ChannelConfig {
            kind: kind.into(),
            url: Some(url),
            url_file: None,
            token_file: None,
            from: None,
            to: Vec::new(),
        },
    );
    config.alerting.routes.push(RouteConfig {
        name: "demo: every alert".into(),
        channels: vec!["demo".into()],
        ..RouteConfig::default()
    });
    if config.alerting.public_url.is_none() {
        let http = config.http.listen;
        let host = if http.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            http.ip().to_string()
        };
        let scheme = if config.http.tls_cert_file.is_some() {
            "https"
        } else {
            "http"
        };
        config.alerting.public_url = Some(format!("{scheme}://{host}:{}", http.port()));
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Configuration file (TOML); see `gateway generate-config`.
    #[arg(long, env = "PRESSLINE_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Site id (overrides the config).
    #[arg(long)]
    site: Option<String>,
    /// Address terminals connect to, e.g. 0.0.0.0:1883.
    #[arg(long)]
    mqtt_listen: Option<SocketAddr>,
    /// MQTT 5 address for terminals, e.g. 0.0.0.0:1884.
    #[arg(long)]
    mqtt_v5_listen: Option<SocketAddr>,
    /// HTTP API address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Data directory (presses, outbox).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Upstream broker: mqtts://HOST:PORT (TLS) or mqtt://HOST:PORT; the
    /// nodes of a cluster separated by commas, tried in turn. Without one,
    /// presses are stored only.
    #[arg(long)]
    upstream: Option<String>,
    /// CA bundle (PEM) that issued the upstream broker's certificate; the
    /// system roots when not given.
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<PathBuf>,
    /// Client certificate (PEM chain) for mutual TLS with the upstream broker.
    #[arg(long, value_name = "FILE", requires = "upstream_key")]
    upstream_cert: Option<PathBuf>,
    /// Private key (PEM) of --upstream-cert; must not be world-readable.
    #[arg(long, value_name = "FILE", requires = "upstream_cert")]
    upstream_key: Option<PathBuf>,
    /// Address for terminals connecting over TLS, e.g. 0.0.0.0:8883 (needs
    /// mqtt.tls_cert_file and mqtt.tls_key_file in the config).
    #[arg(long)]
    mqtt_tls_listen: Option<SocketAddr>,
    /// Trust firmware releases signed with this public key (repeatable).
    #[arg(long = "trusted-key", value_name = "FILE")]
    trusted_keys: Vec<PathBuf>,
    /// Also run N simulated terminals in-process (demo mode).
    #[arg(long, value_name = "N")]
    demo: Option<usize>,
    /// Let any MQTT client connect and publish (overrides `[security] mode`);
    /// for trials and third-party buttons. Closed is the default.
    #[arg(long)]
    open: bool,
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<(Config, Option<usize>)> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(site) = self.site {
            config.site = site;
        }
        if let Some(a) = self.mqtt_listen {
            config.mqtt.listen = a;
        }
        if let Some(a) = self.mqtt_v5_listen {
            config.mqtt.listen_v5 = Some(a);
        }
        if let Some(a) = self.http_listen {
            config.http.listen = a;
        }
        if let Some(d) = self.data_dir {
            config.data_dir = d;
        }
        config.ota.trusted_keys.extend(self.trusted_keys);
        if let Some(u) = self.upstream {
            config.upstream.url = Some(u);
        }
        if let Some(f) = self.upstream_ca {
            config.upstream.ca_file = Some(f);
        }
        if let (Some(cert), Some(key)) = (self.upstream_cert, self.upstream_key) {
            config.upstream.cert_file = Some(cert);
            config.upstream.key_file = Some(key);
        }
        if let Some(a) = self.mqtt_tls_listen {
            config.mqtt.tls_listen = Some(a);
        }
        if self.open {
            config.security.mode = SecurityMode::Open;
            config.security.mode_source = ModeSource::CommandLine;
        }
        if self.demo.is_some() {
            open_for_demo(&mut config);
        }
        Ok((config, self.demo))
    }
}

fn main() -> ExitCode {
    #[cfg(not(feature = "system-allocator"))]
    pressline_gateway::allocator::purge_freed_memory_at_once();
    exit_on_panic();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttd=warn,rumqttd::router::routing=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let parsed = match cli.command {
        Command::GenerateConfig => {
            print!("{DEFAULT_TOML}");
            return ExitCode::SUCCESS;
        }
        Command::Run(args) => args.into_config(),
        Command::Demo {
            terminals,
            webhook,
            webhook_kind,
            run,
        } => run.into_config().map(|(mut c, _)| {
            open_for_demo(&mut c);
            if let Some(url) = webhook {
                demo_webhook(&mut c, url, webhook_kind);
            }
            (c, Some(terminals))
        }),
    }
    .and_then(|(c, d)| {
        c.validate()?;
        let credentials = pressline_gateway::gateway::Credentials::load(&c)?;
        Ok((c, credentials, d))
    });
    let (config, credentials, demo) = match parsed {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = pressline_host::signal::shutdown_signal();
    let ran = runtime.block_on(pressline_gateway::gateway::run(
        config,
        credentials,
        demo,
        stop,
    ));
    // Everything that stores has finished; a notification request still
    // waiting on a slow receiver stays queued and goes after the restart.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The demo's simulated terminals are not registered: the demo runs open,
/// and says so at start.
fn open_for_demo(config: &mut Config) {
    config.security.mode = SecurityMode::Open;
    config.security.mode_source = ModeSource::Demo;
}

/// A panic on any thread ends the process (exit code 101), so its
/// supervisor restarts it (`Restart=always` in the systemd unit): a
/// gateway whose committer or broker thread died would otherwise keep
/// answering `/healthz` while acking nothing. Terminals keep their presses
/// and resend them to the restarted gateway.
fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("gateway: a thread panicked; exiting so the supervisor restarts the gateway");
        std::process::exit(101);
    }));
}
