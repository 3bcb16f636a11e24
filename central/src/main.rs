//! `pressline-central`: see the crate documentation and README ("Central
//! side").

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pressline_central::consumer::{self, ConsumerConfig};
use pressline_central::metrics::{self, Metrics};
use pressline_central::{database, dead_letters, queue};

#[derive(Parser)]
#[command(
    name = "pressline-central",
    version,
    about = "Consumes the Pressline gateways' upstream topics from RabbitMQ into PostgreSQL, exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume until stopped (SIGTERM or Ctrl-C): declare the queue,
    /// migrate the schema, commit batches, acknowledge after each commit.
    Run(RunArgs),
    /// Declare the quorum queue and its binding, then exit. Run this (or
    /// start a consumer) before gateways publish: RabbitMQ drops messages
    /// that match no queue.
    Declare(BrokerArgs),
    /// Apply the schema migrations, then exit.
    Migrate(MigrateArgs),
    /// Count the messages in the dead-letter queue (`{queue}.dead`), or
    /// put them back in the queue with --replay once the reason they were
    /// dead-lettered (a consumer lost again and again while holding them)
    /// is fixed. Stored presses are not stored twice.
    DeadLetters(DeadLetterArgs),
    /// Show or set how many whole months of presses are kept before the
    /// current (UTC) month, and list the months held. Older months are
    /// dropped now and by every consumer within the hour; their counts
    /// stay in `press_hours`, so reports keep their figures.
    Retention(RetentionArgs),
    /// Serve the reports in a browser (network overview, sites, comparison,
    /// CSV downloads) to viewers until stopped. Read-only: give it a
    /// database role that can only read.
    Web(WebArgs),
    /// Add, list or remove the viewers who may read the web view.
    Viewers(ViewersArgs),
    /// E-mail each subscription's daily, weekly or monthly report to its
    /// recipients (deploy/reports.toml), once per period and recipient
    /// across restarts and several senders; runs until stopped.
    Mail(MailArgs),
}

#[derive(Args)]
struct MailArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// The relay, the web view's address and the subscriptions (TOML).
    #[arg(long, env = "PRESSLINE_CENTRAL_MAIL_CONFIG")]
    config: std::path::PathBuf,
    /// Send what is due now, then exit (for a timer instead of a service).
    #[arg(long)]
    once: bool,
    /// Take this time as now (RFC 3339): sends the reports due then, e.g.
    /// a period missed while the sender was stopped for long.
    #[arg(long, value_parser = parse_rfc3339)]
    at: Option<time::OffsetDateTime>,
}

fn parse_rfc3339(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{e}; e.g. 2026-10-26T07:00:00Z"))
}

#[derive(Args)]
struct WebArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Where the pages are served: HTTPS with --tls-cert and --tls-key,
    /// else plain HTTP (for loopback, or behind a reverse proxy that
    /// serves HTTPS; deploy/README.md).
    #[arg(long, default_value = "127.0.0.1:9470")]
    http: SocketAddr,
    /// PEM certificate chain to serve HTTPS with (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert (refused when every user can read it).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Mark the sign-in cookie `Secure` when a reverse proxy serves the
    /// pages over HTTPS (implied by --tls-cert).
    #[arg(long)]
    behind_https: bool,
}

#[derive(Args)]
struct ViewersArgs {
    #[command(subcommand)]
    action: ViewersAction,
}

#[derive(Subcommand)]
enum ViewersAction {
    /// Add a viewer and print its token (shown only this once).
    Add {
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List the viewers.
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Remove a viewer: its token stops working at once.
    Remove {
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Args)]
struct RetentionArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Keep this many whole months before the current one.
    #[arg(long, conflicts_with = "keep_all",
          value_parser = clap::value_parser!(i32).range(1..=1200))]
    keep_months: Option<i32>,
    /// Keep every press (the default).
    #[arg(long)]
    keep_all: bool,
}

#[derive(Args)]
struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Stop at this schema version (PROTOCOL.md, "Central tables"); the
    /// default is the newest.
    #[arg(long)]
    to_version: Option<u32>,
}

#[derive(Args)]
struct DeadLetterArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Move every dead-lettered message back to the queue.
    #[arg(long)]
    replay: bool,
}

#[derive(Args, Clone)]
struct BrokerArgs {
    /// AMQP URIs of the cluster's nodes, comma-separated, tried in turn
    /// (`amqp://user:pass@host:5672/%2f`).
    #[arg(
        long,
        env = "PRESSLINE_CENTRAL_AMQP",
        value_delimiter = ',',
        required = true
    )]
    amqp: Vec<String>,
    /// PEM file of a private CA that signed the brokers' certificates, for
    /// `amqps://` nodes (the system's trust store is used as well).
    #[arg(long, env = "PRESSLINE_CENTRAL_AMQP_CA")]
    amqp_ca: Option<std::path::PathBuf>,
    /// The queue every consumer shares.
    #[arg(long, default_value = queue::DEFAULT_QUEUE, value_parser = queue::valid_queue_name)]
    queue: String,
    /// Deliveries a message may have before the queue dead-letters it
    /// (only a consumer lost while holding it counts). Set when the queue
    /// is first declared; see deploy/README.md to change it later.
    #[arg(long, default_value_t = queue::DEFAULT_DELIVERY_LIMIT,
          value_parser = clap::value_parser!(u32).range(1..))]
    delivery_limit: u32,
}

impl BrokerArgs {
    fn topology(&self) -> queue::Topology {
        queue::Topology {
            queue: self.queue.clone(),
            delivery_limit: self.delivery_limit,
        }
    }
}

#[derive(Args, Clone)]
struct DatabaseArgs {
    /// PostgreSQL connection (`postgres://user:pass@host:5432/db`, or
    /// `host=/run/postgresql dbname=pressline`).
    #[arg(long, env = "PRESSLINE_CENTRAL_POSTGRES")]
    postgres: String,
    /// PEM file of a private CA that signed the database server's
    /// certificate (the system's trust store is used as well). Add
    /// `sslmode=require` to the URL to refuse an unencrypted connection.
    #[arg(long, env = "PRESSLINE_CENTRAL_POSTGRES_CA")]
    postgres_ca: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Most rows per transaction (a press, a health document, …; a batch
    /// message from a gateway counts its presses).
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// Longest a message waits for its batch to fill (ms).
    #[arg(long, default_value_t = 100)]
    batch_wait_ms: u64,
    /// Unacknowledged messages the broker may send ahead: what the consumer
    /// holds at most (a gateway's batch message is up to ~330 KB). A batch
    /// is also cut at half of it, so one half fills while the other commits.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(2..))]
    prefetch: u16,
    /// Where `/metrics`, `/api/v1/stats` and `/healthz` are served.
    #[arg(long, default_value = "127.0.0.1:9465")]
    http: SocketAddr,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,lapin=warn".into()),
        )
        // Standard output is for what a command prints (a viewer's token).
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Declare(broker) => {
            let topology = broker.topology();
            let declared = on_any_node(&broker, |c| {
                let topology = topology.clone();
                async move { queue::declare(&c, &topology).await }
            })
            .await?;
            let limits = if declared.legacy {
                "declared by an earlier version, without a delivery limit: apply the policy logged above".to_string()
            } else {
                format!(
                    "delivery limit {}, dead letters to {}",
                    topology.delivery_limit,
                    topology.dead_letters()
                )
            };
            println!(
                "queue {} (quorum) bound to {} with {}; {limits}; {} messages ready",
                topology.queue,
                queue::EXCHANGE,
                queue::BINDING,
                declared.ready
            );
            Ok(())
        }
        Command::DeadLetters(args) => {
            let topology = args.broker.topology();
            let replay = args.replay;
            let (waiting, moved) = on_any_node(&args.broker, |c| {
                let topology = topology.clone();
                async move {
                    let waiting = dead_letters::count(&c, &topology).await?;
                    let moved = if replay {
                        Some(dead_letters::replay(&c, &topology, waiting).await?)
                    } else {
                        None
                    };
                    Ok((waiting, moved))
                }
            })
            .await?;
            match moved {
                Some(moved) => println!(
                    "{moved} messages moved from {} back to {}",
                    topology.dead_letters(),
                    topology.queue
                ),
                None if waiting == 0 => println!("{} is empty", topology.dead_letters()),
                None => println!(
                    "{waiting} messages in {}; once the reason is fixed: pressline-central dead-letters --replay",
                    topology.dead_letters()
                ),
            }
            Ok(())
        }
        Command::Retention(args) => retention(args).await,
        Command::Web(args) => web(args).await,
        Command::Viewers(args) => viewers(args).await,
        Command::Mail(args) => mail(args).await,
        Command::Migrate(args) => {
            let db = args.database;
            let tls = pressline_host::tls::postgres_tls(db.postgres_ca.as_deref())?;
            let mut database = database::Database::connect(&db.postgres, &tls).await?;
            let applied = database.migrate_to(args.to_version).await?;
            if applied.is_empty() {
                println!("schema up to date");
            }
            for m in applied {
                println!("applied {m}");
            }
            Ok(())
        }
        Command::Run(args) => {
            anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
            let metrics = Arc::new(Metrics {
                queue_messages: AtomicI64::new(-1),
                queue_consumers: AtomicI64::new(-1),
                dead_letter_messages: AtomicI64::new(-1),
                lag_ms: AtomicI64::new(-1),
                ..Default::default()
            });
            let listener = tokio::net::TcpListener::bind(args.http)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot listen on {} for /metrics: {e}; pick another with --http",
                        args.http
                    )
                })?;
            tracing::info!(http = %listener.local_addr()?, "serving /metrics, /api/v1/stats and /healthz");
            let (stop, shutdown) = tokio::sync::watch::channel(false);
            tokio::spawn({
                let router = metrics::router(metrics.clone());
                async move {
                    let _ = axum::serve(listener, router).await;
                }
            });
            tokio::spawn(async move {
                pressline_host::signal::shutdown_signal().await;
                tracing::info!("stopping: committing what is in hand");
                let _ = stop.send(true);
            });
            let config = ConsumerConfig {
                topology: args.broker.topology(),
                amqp_ca: read_ca(args.broker.amqp_ca.as_deref())?,
                amqp: args.broker.amqp,
                postgres_tls: pressline_host::tls::postgres_tls(
                    args.database.postgres_ca.as_deref(),
                )?,
                postgres: args.database.postgres,
                batch: args.batch,
                batch_wait: Duration::from_millis(args.batch_wait_ms),
                prefetch: args.prefetch,
            };
            consumer::run(config, metrics, shutdown).await
        }
    }
}

async fn web(args: WebArgs) -> anyhow::Result<()> {
    use pressline_central::web;
    let db = args.database;
    let tls = pressline_host::tls::postgres_tls(db.postgres_ca.as_deref())?;
    let reader = Arc::new(web::reader::Reader::new(db.postgres, tls));
    // A wrong URL or password is said at start, not on the first page.
    reader.client().await?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(pressline_host::https::server_config(cert, key, "--tls")?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} for the web view: {e}; pick another with --http",
                args.http
            )
        })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(address = %listener.local_addr()?, scheme, "serving the web view");
    let router = web::router(web::Web {
        reader,
        https: args.behind_https || tls.is_some(),
        refused_logins: Arc::new(web::access::RefusedLogins::new()),
    });
    let shutdown = pressline_host::signal::shutdown_signal();
    match tls {
        Some(config) => {
            let listener = pressline_host::https::TlsListener::new(listener, config)?;
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await?
        }
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    Ok(())
}

async fn mail(args: MailArgs) -> anyhow::Result<()> {
    use pressline_central::mail;
    let config = mail::config::MailConfig::load(&args.config)?;
    let db = args.database;
    let tls = pressline_host::tls::postgres_tls(db.postgres_ca.as_deref())?;
    let mut database = database::Database::connect(&db.postgres, &tls).await?;
    // The sending record is in the schema's latest version.
    database.migrate().await?;
    mail::check_time_zones(database.client(), &config).await?;
    drop(database);
    let reader = Arc::new(pressline_central::web::reader::Reader::writable(
        db.postgres,
        tls,
    ));
    tracing::info!(
        subscriptions = config.subscriptions.len(),
        "sending reports by e-mail"
    );
    let pass = mail::run(
        reader,
        config,
        args.once,
        args.at,
        pressline_host::signal::shutdown_signal(),
    )
    .await?;
    if args.once {
        println!(
            "{} sent, {} sent before, {} failed",
            pass.sent, pass.already, pass.failed
        );
        anyhow::ensure!(
            pass.failed == 0,
            "{} reports not sent (see above)",
            pass.failed
        );
    }
    Ok(())
}

async fn viewers(args: ViewersArgs) -> anyhow::Result<()> {
    use pressline_central::web::access;
    let db = match &args.action {
        ViewersAction::Add { database, .. }
        | ViewersAction::List { database }
        | ViewersAction::Remove { database, .. } => database.clone(),
    };
    let tls = pressline_host::tls::postgres_tls(db.postgres_ca.as_deref())?;
    let mut database = database::Database::connect(&db.postgres, &tls).await?;
    // The viewers' table is in the schema's latest version.
    database.migrate().await?;
    let client = database.client();
    match args.action {
        ViewersAction::Add { name, .. } => {
            let token = access::add(client, &name).await?;
            println!("{token}");
            eprintln!("viewer {name:?} added; the token above is shown only now");
        }
        ViewersAction::List { .. } => {
            for (name, created) in access::list(client).await? {
                println!("{name}\t{}", created.date());
            }
        }
        ViewersAction::Remove { name, .. } => {
            anyhow::ensure!(
                access::remove(client, &name).await?,
                "no viewer is called {name:?} (pressline-central viewers list)"
            );
            println!("viewer {name:?} removed");
        }
    }
    Ok(())
}

async fn retention(args: RetentionArgs) -> anyhow::Result<()> {
    use database::partitions;
    let db = args.database;
    let tls = pressline_host::tls::postgres_tls(db.postgres_ca.as_deref())?;
    let database = database::Database::connect(&db.postgres, &tls).await?;
    let client = database.client();
    // Dropping a month waits for every reader of `presses`, and inserts
    // queue behind it meanwhile: given up after 30 s rather than that.
    client
        .batch_execute("SET lock_timeout = '30s'")
        .await
        .map_err(|e| anyhow::anyhow!("cannot set lock_timeout: {}", database::describe(&e)))?;
    let pg = |what: &'static str| {
        move |e: tokio_postgres::Error| {
            anyhow::anyhow!(
                "cannot {what}: {} (a schema older than version 4? run pressline-central migrate; \
                 55P03: a long reader of presses held the month, try again)",
                database::describe(&e)
            )
        }
    };
    if args.keep_all || args.keep_months.is_some() {
        partitions::set_retention(client, args.keep_months)
            .await
            .map_err(pg("set the retention"))?;
    }
    for name in partitions::drop_expired(client)
        .await
        .map_err(pg("drop expired months"))?
    {
        println!("dropped {name}");
    }
    match partitions::retention(client)
        .await
        .map_err(pg("read the retention"))?
    {
        Some(n) => println!("presses kept: {n} whole months before the current (UTC) month"),
        None => println!("presses kept: all"),
    }
    let date = |t: time::OffsetDateTime| t.date().to_string();
    for p in partitions::list(client)
        .await
        .map_err(pg("list the months"))?
    {
        match (p.from, p.to) {
            (_, None) => println!("{}  rows of months not made yet", p.name),
            (from, Some(to)) => {
                let from = from.map(date).unwrap_or_else(|| "(earliest)".into());
                println!("{}  {from} .. {}", p.name, date(to));
            }
        }
    }
    Ok(())
}

/// The PEM text of `--amqp-ca`, checked to hold a certificate.
fn read_ca(path: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read --amqp-ca {}: {e}", path.display()))?;
    anyhow::ensure!(
        pem.contains("-----BEGIN CERTIFICATE-----"),
        "--amqp-ca {} holds no certificate (expected \"-----BEGIN CERTIFICATE-----\" blocks)",
        path.display()
    );
    Ok(Some(pem))
}

/// Runs `work` on the first node that answers.
async fn on_any_node<T, F, Fut>(broker: &BrokerArgs, work: F) -> anyhow::Result<T>
where
    F: Fn(Arc<lapin::Connection>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let ca = read_ca(broker.amqp_ca.as_deref())?;
    let mut last = None;
    for uri in &broker.amqp {
        let attempt = async {
            let connection = Arc::new(queue::connect(uri, ca.as_deref()).await?);
            let done = work(connection.clone()).await;
            let _ = connection.close(200, "done".into()).await;
            done
        };
        match attempt.await {
            Ok(done) => return Ok(done),
            Err(e) => last = Some(e.context(format!("node {}", queue::redact(uri)))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no --amqp node given")))
}
