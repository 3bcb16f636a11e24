//! `terminal-sim`: runs N simulated terminals against a gateway's broker.
//!
//! Exits 0 only when every press was durably acked by the gateway; 1 when
//! `--timeout` ran out first; 2 on bad arguments.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use pressline_terminal_core::SessionConfig;
use pressline_terminal_sim::{AckMode, SimConfig, SimCounters};
use tokio::sync::watch;

/// Simulated Pressline terminals running the real terminal core.
#[derive(Debug, Parser)]
#[command(name = "terminal-sim", version)]
struct Args {
    /// Site broker (the gateway's MQTT listener) as HOST:PORT [default:
    /// the provisioning records' gateway, else 127.0.0.1:1883].
    #[arg(long)]
    broker: Option<String>,
    /// Connect to the broker over TLS, trusting the CA certificate(s) in
    /// this PEM file (the gateway's mqtt.tls_listen).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// Run the terminals described by these provisioning records (files
    /// written by `fleet provision --to-file`, or directories of them):
    /// their ids, logins and press signatures. Overrides --terminals.
    #[arg(long, value_name = "FILE|DIR")]
    provisioning: Vec<std::path::PathBuf>,
    /// Number of terminals.
    #[arg(long, default_value_t = 4)]
    terminals: usize,
    /// Presses per terminal.
    #[arg(long, default_value_t = 10)]
    presses: u64,
    /// Total presses per second across all terminals; 0 = no limit.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Each terminal starts pressing once connected (steady-state latency);
    /// by default presses start at once and queue while connecting.
    #[arg(long)]
    press_once_connected: bool,
    /// Fraction (0-1) of presses deliberately published twice.
    #[arg(long, default_value_t = 0.0)]
    dup_rate: f64,
    /// Random seed (buttons, timing jitter, duplicates).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Terminal id prefix; ids are PREFIX000, PREFIX001, ...
    #[arg(long, default_value = "sim-")]
    id_prefix: String,
    /// How many of the terminals speak the JSON press form.
    #[arg(long, default_value_t = 0)]
    json_terminals: usize,
    /// Resend a press when its durable ack has not come after this many ms.
    #[arg(long, default_value_t = 3000)]
    ack_timeout_ms: u64,
    /// Most presses a terminal has awaiting an ack at once.
    #[arg(long, default_value_t = 32)]
    max_in_flight: usize,
    /// What releases a press: `durable` (the gateway's durable ack, as real
    /// terminals do) or `puback` (the broker's PUBACK; for benchmarking plain
    /// brokers such as Mosquitto with the same load, not durable).
    #[arg(long, value_enum, default_value = "durable")]
    ack_mode: AckModeArg,
    /// Heartbeat period in seconds (heartbeats also go out on every connect).
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// Stay connected and heartbeating at least this many seconds, even
    /// after every press was acked.
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// The first K terminals report a nearly empty battery.
    #[arg(long, value_name = "K", default_value_t = 0)]
    low_battery: usize,
    /// The last K terminals have a stuck button (one button every 50 ms).
    #[arg(long, value_name = "K", default_value_t = 0)]
    stuck_button: usize,
    /// Firmware version the terminals report (MAJOR.MINOR.PATCH).
    #[arg(long)]
    firmware_version: Option<String>,
    /// The first K terminals' visitors are mostly unhappy.
    #[arg(long, value_name = "K", default_value_t = 0)]
    unhappy: usize,
    /// Power cuts per terminal per second (e.g. 0.2): a terminal loses power
    /// mid-operation (possibly inside a flash write), its RAM and its
    /// connection, and boots again from flash.
    #[arg(long, default_value_t = 0.0)]
    kill_rate: f64,
    /// Simulate firmware updates: the release signing public key built into
    /// the terminals (a `signing.pub` from `fleet keys generate`).
    #[arg(long, value_name = "FILE")]
    ota_public_key: Option<std::path::PathBuf>,
    /// Largest firmware image the simulated update partitions hold.
    #[arg(long, value_name = "BYTES", default_value_t = 2 << 20)]
    ota_max_image: usize,
    /// Bytes per chunk request (at most 8192).
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    ota_chunk_size: u32,
    /// Fault injection: probability per downloaded chunk that power fails
    /// right after it is written (the download must resume, not restart).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    ota_interrupt_rate: f64,
    /// Fault injection: probability that a chunk arrives damaged.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    ota_corrupt_rate: f64,
    /// Fault injection: the first K terminals' new images crash in their
    /// trial boot (the bootloader rolls them back).
    #[arg(long, value_name = "K", default_value_t = 0)]
    ota_fail_trial_boot: usize,
    /// Fault injection: the first K terminals vanish when offered an update.
    #[arg(long, value_name = "K", default_value_t = 0)]
    ota_vanish: usize,
    /// Write one line per press made (`terminal boot seq unix_us`) to this
    /// file, to measure press-to-upstream latency against what arrives.
    #[arg(long, value_name = "FILE")]
    press_log: Option<std::path::PathBuf>,
    /// Give up (exit 1) after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AckModeArg {
    Durable,
    Puback,
}

fn parse_broker(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("--broker {s:?}: expected HOST:PORT, e.g. 127.0.0.1:1883"))?;
    let port = port
        .parse()
        .with_context(|| format!("--broker {s:?}: port {port:?} is not a number 1-65535"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// Reads provisioning records from files and directories: the identities
/// and each record's gateway address.
fn load_provisioning(
    paths: &[std::path::PathBuf],
) -> anyhow::Result<Vec<(pressline_terminal_sim::SimIdentity, String)>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.clone());
        }
    }
    let mut out = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file)
            .with_context(|| format!("cannot read provisioning record {}", file.display()))?;
        let record = pressline_protocol::provisioning::ProvisioningRecord::decode(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        out.push((
            pressline_terminal_sim::SimIdentity {
                terminal: record.terminal.to_string(),
                secret: record.secret,
            },
            format!("{}:{}", record.gateway_host, record.gateway_port),
        ));
    }
    Ok(out)
}

/// Reads a public key file (64 hex characters, as `fleet keys generate`
/// writes `signing.pub`).
fn read_public_key(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --ota-public-key {}", path.display()))?;
    pressline_protocol::ota::parse_public_key(&text)
        .map_err(|e| anyhow::anyhow!("--ota-public-key {}: {e}", path.display()))
}

/// TLS trusting only the CA certificates in `ca_file`.
fn tls_config(ca_file: &std::path::Path) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(ca_file)
        .with_context(|| format!("cannot read --tls-ca {}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("--tls-ca {} is not PEM", ca_file.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("--tls-ca {}: invalid CA certificate", ca_file.display()))?;
    }
    if roots.is_empty() {
        bail!("--tls-ca {} holds no certificate", ca_file.display());
    }
    Ok(std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

fn validate(args: &Args) -> anyhow::Result<SimConfig> {
    let records = load_provisioning(&args.provisioning)?;
    let broker = match (&args.broker, records.first()) {
        (Some(b), _) => b.clone(),
        (None, Some((_, gateway))) => gateway.clone(),
        (None, None) => "127.0.0.1:1883".to_string(),
    };
    let (broker_host, broker_port) = parse_broker(&broker)?;
    let tls = args.tls_ca.as_deref().map(tls_config).transpose()?;
    let identities: Vec<_> = records.into_iter().map(|(identity, _)| identity).collect();
    let terminals = if identities.is_empty() {
        args.terminals
    } else {
        identities.len()
    };
    if args.low_battery > terminals || args.stuck_button > terminals {
        bail!("--low-battery and --stuck-button cannot exceed --terminals");
    }
    if !(args.kill_rate >= 0.0 && args.kill_rate.is_finite()) {
        bail!("--kill-rate must be 0 (no power cuts) or a positive number of cuts per terminal per second");
    }
    if terminals == 0 {
        bail!("--terminals must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.dup_rate) {
        bail!("--dup-rate must be between 0 and 1");
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        bail!("--rate must be 0 (no limit) or a positive number");
    }
    let ota = match &args.ota_public_key {
        None => None,
        Some(path) => {
            for (name, p) in [
                ("--ota-interrupt-rate", args.ota_interrupt_rate),
                ("--ota-corrupt-rate", args.ota_corrupt_rate),
            ] {
                if !(0.0..=1.0).contains(&p) {
                    bail!("{name} must be between 0 and 1");
                }
            }
            if args.ota_chunk_size == 0
                || args.ota_chunk_size > pressline_protocol::ota_transfer::MAX_CHUNK
                || 4096 % args.ota_chunk_size != 0 && args.ota_chunk_size % 4096 != 0
            {
                bail!("--ota-chunk-size must divide 4096 or be a multiple of it, at most 8192");
            }
            Some(pressline_terminal_sim::SimOta {
                public_key: read_public_key(path)?,
                max_image: args.ota_max_image.max(4096),
                chunk_size: args.ota_chunk_size,
                interrupt_rate: args.ota_interrupt_rate,
                corrupt_rate: args.ota_corrupt_rate,
                fail_trial_boot: args.ota_fail_trial_boot,
                vanish: args.ota_vanish,
                ..Default::default()
            })
        }
    };
    let sample = format!("{}{:03}", args.id_prefix, terminals - 1);
    pressline_protocol::ident::validate_id(&sample).map_err(|e| {
        anyhow::anyhow!(
            "--id-prefix {:?} makes terminal id {sample:?}: {e}",
            args.id_prefix
        )
    })?;
    Ok(SimConfig {
        broker_host,
        broker_port,
        tls,
        terminals,
        identities,
        presses: Some(args.presses),
        rate: args.rate,
        press_once_connected: args.press_once_connected,
        dup_rate: args.dup_rate,
        seed: args.seed,
        id_prefix: args.id_prefix.clone(),
        json_terminals: args.json_terminals,
        session: SessionConfig {
            ack_timeout_ms: args.ack_timeout_ms.max(1),
            max_in_flight: args.max_in_flight.max(1),
        },
        heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
        kill_rate: args.kill_rate,
        unhappy: args.unhappy,
        duration: Duration::from_secs(args.duration),
        low_battery: args.low_battery,
        stuck_button: args.stuck_button,
        firmware: match &args.firmware_version {
            Some(v) => pressline_protocol::FirmwareVersion::parse(v).with_context(|| {
                format!("--firmware-version {v:?}: expected MAJOR.MINOR.PATCH, e.g. 1.4.2")
            })?,
            None => SimConfig::default().firmware,
        },
        ota,
        ack_mode: match args.ack_mode {
            AckModeArg::Durable => AckMode::Durable,
            AckModeArg::Puback => AckMode::Puback,
        },
        ..SimConfig::default()
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = match validate(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("terminal-sim: {e:#}");
            return ExitCode::from(2);
        }
    };
    let press_log = match &args.press_log {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some(std::sync::Mutex::new(std::io::BufWriter::new(f))),
            Err(e) => {
                eprintln!(
                    "terminal-sim: cannot write --press-log {}: {e}",
                    path.display()
                );
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let counters = Arc::new(SimCounters {
        press_log,
        ..SimCounters::default()
    });
    let (stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(pressline_terminal_sim::run(config, counters, stop));
    let timeout = tokio::time::sleep(Duration::from_secs(args.timeout));
    tokio::pin!(timeout);
    let mut run = run;
    let report = tokio::select! {
        r = &mut run => r,
        _ = &mut timeout => {
            eprintln!("terminal-sim: --timeout of {} s reached before every press was acked", args.timeout);
            let _ = stop_tx.send(true);
            run.await
        }
        _ = pressline_host::signal::shutdown_signal() => {
            let _ = stop_tx.send(true);
            run.await
        }
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("terminal-sim: internal error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("report serializes")
        );
    } else {
        println!("terminal-sim: {report}");
    }
    if report.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
