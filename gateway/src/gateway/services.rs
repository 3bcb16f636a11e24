//! Each service started, in the order they depend on each other: the
//! store, the broker, the satisfaction figures and the registry, the press
//! pipeline's threads, OTA, the forwarder, the HTTP API.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, watch, Notify};

use super::{banner, Credentials, Running};
use crate::alerting::delivery::Notifier;
use crate::api::state::ApiState;
use crate::broker::SiteBroker;
use crate::config::Config;
use crate::insight::scores::Scores;
use crate::ota::releases::Releases;
use crate::ota::service::Rollouts;
use crate::pipeline::commit::Committer;
use crate::pipeline::forwarder::{Forwarder, ForwarderConfig};
use crate::stats::Stats;
use crate::store::Store;
use crate::terminals::identity::Identities;
use crate::terminals::registry::{AlertOutlets, Registry, RegistryInput};

/// How many decoded presses may wait between ingest and commit (four full
/// commit batches). When full, ingest blocks and the broker's own
/// buffering (then terminal resends) absorbs the burst. The queue's ring
/// buffer is allocated whole, so it is sized for bursts, not for outages.
const INGEST_QUEUE: usize = 16_384;

/// Room for registry inputs (heartbeats, wills, stored presses) between
/// the press path and the registry task; past it, inputs are dropped (they
/// are health figures, never presses).
const REGISTRY_QUEUE: usize = 65_536;

/// Starts every service; the gateway runs until [`Running::stop`].
pub async fn start(
    config: Config,
    credentials: Credentials,
    demo_terminals: Option<usize>,
) -> anyhow::Result<Running> {
    let config = prepare(config, demo_terminals)?;
    let started = Instant::now();
    let (store, stats) = open_store(&config)?;
    let http_listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for HTTP on {} (choose another with --http-listen)",
                config.http.listen
            )
        })?;
    let identities = Identities::load(config.security.mode, store.clone());
    let releases = load_releases(&config, &store)?;
    let access = crate::security::mqtt_access::MqttAccess::new(
        stats.clone(),
        identities.clone(),
        crate::security::mqtt_access::FilterLimits {
            per_client: config.mqtt.max_subscriptions_per_client,
            // Terminals need one or three each; room for more, bounded.
            in_broker: config
                .mqtt
                .max_terminals
                .saturating_mul(config.mqtt.max_subscriptions_per_client),
        },
    );
    let site_broker = crate::broker::start(&config.mqtt, access)?;
    let tokens = crate::api::token::ApiTokens::load(|s| config.http.token(s), &config.data_dir)?;
    let scores = restore_scores(&config, &store)?;
    let forward_wake = Arc::new(Notify::new());
    let notifier = notifier(&config)?;
    let registry = load_registry(
        &config,
        &store,
        scores,
        identities.clone(),
        &notifier,
        &forward_wake,
    )?;

    let (shutdown_tx, shutdown) = watch::channel(false);
    let stopping = Arc::new(AtomicBool::new(false));
    let (to_registry, registry_inputs) = mpsc::channel(REGISTRY_QUEUE);
    let SiteBroker {
        link_tx,
        link_rx,
        ota_tx,
        ota_rx,
        power_link,
    } = site_broker;
    let power = crate::terminals::power::PowerPlans::load(&store, Some(power_link));
    let ingest = IngestParts {
        link_rx,
        power: power.clone(),
        identities: identities.clone(),
        to_registry: to_registry.clone(),
        stopping: stopping.clone(),
    };
    let (rollouts, ota_thread) = start_ota(
        &config,
        &store,
        &releases,
        &forward_wake,
        ota_tx,
        ota_rx,
        &shutdown,
    )?;
    let committer = Committer {
        store: store.clone(),
        stats: stats.clone(),
        link: link_tx,
        batch_max: config.storage.commit_batch_max,
        max_disk_bytes: config.storage.max_disk_mb << 20,
        forward_wake: forward_wake.clone(),
        misuse: crate::insight::misuse::MisuseFilter::new(config.misuse.clone()),
        scores: registry.scores_handle(),
        to_registry,
        failures: crate::stats::RateLimitedLog::new(Duration::from_secs(10)),
    };
    let commit_thread = start_press_path(ingest, committer, &stats)?;
    let registry_task = spawn_tasks(
        &config,
        &store,
        &stats,
        &registry,
        registry_inputs,
        &notifier,
        &shutdown,
    );
    let forwarder = start_forwarder(
        &config,
        credentials.upstream_tls,
        credentials.upstream_login,
        &store,
        &stats,
        &forward_wake,
        &shutdown,
    )?;

    let api = ApiState {
        site: config.site.clone(),
        stats: stats.clone(),
        store: store.clone(),
        registry,
        identities,
        power,
        releases,
        rollouts,
        started,
        upstream_configured: forwarder.is_some(),
        tokens: tokens.clone(),
        notifier,
        site_time: config.site_time()?,
    };
    let http = serve_http(http_listener, credentials.https, &api, &shutdown)?;
    banner::log_started(&config, &stats, &tokens);
    if let Some(n) = demo_terminals {
        banner::log_demo(&config, n);
        crate::demo::start(n, config.mqtt.listen, api.clone(), shutdown.clone());
    }
    Ok(Running {
        config,
        api,
        stats,
        store,
        shutdown: shutdown_tx,
        stopping,
        commit_thread,
        registry_task,
        ota_thread,
        forwarder,
        http,
    })
}

/// The configuration as it will run: the demo's zones, then validated.
fn prepare(mut config: Config, demo_terminals: Option<usize>) -> anyhow::Result<Config> {
    if let Some(n) = demo_terminals.filter(|_| config.zones.is_empty()) {
        config.zones = crate::demo::zones(n);
    }
    config.validate()?;
    if demo_terminals.is_some() && config.mqtt.tls_only {
        anyhow::bail!("--demo needs the plain terminal listener: unset mqtt.tls_only");
    }
    if !config.alerting.channels.is_empty() && config.alerting.public_url.is_none() {
        tracing::info!("alerting.public_url is not set: notifications carry no acknowledge links");
    }
    for route in &config.alerting.routes {
        for zone in route
            .zones
            .iter()
            .filter(|z| !config.zones.contains_key(*z))
        {
            // Zones can also come from terminal registrations, so not an error.
            tracing::warn!(route = %route.name, %zone, "alerting route names a zone that is not in [zones]: it matches only terminals registered into that zone");
        }
    }
    Ok(config)
}

/// The press store, and the counters started from what it holds.
fn open_store(config: &Config) -> anyhow::Result<(Store, Arc<Stats>)> {
    crate::security::secret_files::prepare_data_dir(&config.data_dir)?;
    let store =
        Store::open(&config.data_dir, config.storage.cache_mb << 20).with_context(|| {
            format!(
                "cannot open the press store in {} (is another gateway using this directory?)",
                config.data_dir.display()
            )
        })?;
    let stats = Arc::new(Stats::default());
    stats.presses_stored.store(store.press_count(), Relaxed);
    stats
        .forward_pending
        .store(store.outbox_presses() as i64, Relaxed);
    let today = crate::clock::utc_day(crate::clock::unix_ms_now());
    stats.set_today(today, store.stored_on(today));
    Ok((store, stats))
}

/// Firmware releases, and the keys that may sign them.
fn load_releases(config: &Config, store: &Store) -> anyhow::Result<Releases> {
    let trusted = config
        .ota
        .trusted_keys
        .iter()
        .map(|path| crate::ota::releases::read_public_key(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let releases = Releases::new(
        store.clone(),
        &config.data_dir,
        trusted,
        config.ota.allow_downgrade,
    );
    if !config.ota.trusted_keys.is_empty() {
        tracing::info!(keys = ?releases.trusted_key_ids(), "firmware releases signed by these keys are accepted");
    }
    Ok(releases)
}

/// The satisfaction figures: zones from the configuration and from
/// registrations, restored from their checkpoint and the press log.
fn restore_scores(config: &Config, store: &Store) -> anyhow::Result<Scores> {
    let now = crate::clock::unix_ms_now();
    let mut scores = Scores::new(
        config.scores.clone(),
        config.zones.clone(),
        config.storage.aggregate_retention_days,
        now,
    );
    let registered = store
        .load_credentials::<crate::terminals::identity::Credential>()
        .into_iter()
        .filter(|c| !c.revoked);
    for credential in registered {
        if let Some(zone) = &credential.zone {
            scores.assign(&credential.terminal, zone);
        }
    }
    let scores = std::sync::Mutex::new(scores);
    let restored = crate::insight::checkpoints::restore(store, &scores, now)
        .context("cannot load the satisfaction figures from the press store")?;
    if restored.replayed > 0 {
        tracing::info!(
            presses = restored.replayed,
            days = restored.site_days,
            "satisfaction figures restored from their checkpoint and the press log"
        );
    }
    Ok(pressline_host::sync::into_inner(scores))
}

fn notifier(config: &Config) -> anyhow::Result<Notifier> {
    let link_signer = crate::alerting::links::LinkSigner::load(
        &config.site,
        &config.data_dir,
        config.alerting.public_url.as_deref(),
        config.alerting.link_valid_hours,
    )?;
    Notifier::new(&config.alerting, link_signer)
}

fn load_registry(
    config: &Config,
    store: &Store,
    scores: Scores,
    identities: Identities,
    notifier: &Notifier,
    forward_wake: &Arc<Notify>,
) -> anyhow::Result<Registry> {
    let outlets = AlertOutlets {
        routing: Arc::new(crate::alerting::routing::Routing::new(
            &config.alerting,
            config.site_time()?,
        )),
        close_after_secs: config.alerting.close_after_recovery_secs,
        notify_wake: notifier.wake.clone(),
        forward_wake: forward_wake.clone(),
    };
    Ok(Registry::load(
        &config.site,
        config.health.clone(),
        scores,
        store,
        identities,
        outlets,
    ))
}

/// What the ingest thread needs.
struct IngestParts {
    link_rx: rumqttd::local::LinkRx,
    power: crate::terminals::power::PowerPlans,
    identities: Identities,
    to_registry: mpsc::Sender<RegistryInput>,
    stopping: Arc<AtomicBool>,
}

/// The press path: ingest thread → bounded queue → commit thread.
fn start_press_path(
    ingest: IngestParts,
    committer: Committer,
    stats: &Arc<Stats>,
) -> anyhow::Result<JoinHandle<()>> {
    let (to_committer, from_ingest) = sync_channel(INGEST_QUEUE);
    let stats = stats.clone();
    std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || {
            crate::pipeline::ingest::run(
                ingest.link_rx,
                to_committer,
                ingest.to_registry,
                ingest.identities,
                ingest.power,
                stats,
                ingest.stopping,
            )
        })
        .context("cannot start the ingest thread")?;
    std::thread::Builder::new()
        .name("commit".into())
        .spawn(move || committer.run(from_ingest))
        .context("cannot start the commit thread")
}

/// Rollouts, and the thread serving terminals their updates.
#[allow(clippy::too_many_arguments)]
fn start_ota(
    config: &Config,
    store: &Store,
    releases: &Releases,
    forward_wake: &Arc<Notify>,
    ota_tx: rumqttd::local::LinkTx,
    ota_rx: rumqttd::local::LinkRx,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<(Rollouts, JoinHandle<()>)> {
    let rollouts = Rollouts::load(
        &config.site,
        store.clone(),
        releases.clone(),
        config.ota.limits(),
        config.site_time()?,
        forward_wake.clone(),
    );
    let thread = std::thread::Builder::new()
        .name("ota".into())
        .spawn({
            let (rollouts, shutdown) = (rollouts.clone(), shutdown.clone());
            move || crate::ota::service::run(rollouts, ota_tx, ota_rx, shutdown)
        })
        .context("cannot start the OTA thread")?;
    Ok((rollouts, thread))
}

/// Retention, the registry and notification delivery; returns the
/// registry's task (it ends once the press path has).
fn spawn_tasks(
    config: &Config,
    store: &Store,
    stats: &Arc<Stats>,
    registry: &Registry,
    registry_inputs: mpsc::Receiver<RegistryInput>,
    notifier: &Notifier,
    shutdown: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(crate::pipeline::retention::run(
        store.clone(),
        stats.clone(),
        registry.scores_handle(),
        config.storage.retention_days,
        shutdown.clone(),
    ));
    tokio::spawn(crate::alerting::delivery::run(
        notifier.clone(),
        store.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(crate::terminals::registry::run(
        registry.clone(),
        registry_inputs,
    ))
}

/// The upstream forwarder, when an upstream broker is configured.
fn start_forwarder(
    config: &Config,
    tls: Option<crate::pipeline::forwarder::UpstreamTls>,
    credentials: Option<(String, String)>,
    store: &Store,
    stats: &Arc<Stats>,
    wake: &Arc<Notify>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Option<Forwarder>> {
    if config.upstream_addr()?.is_none() {
        return Ok(None);
    }
    let forwarder_config = ForwarderConfig {
        site: config.site.clone(),
        addrs: config.upstream_addrs()?,
        client_id: config.upstream_client_id(),
        credentials,
        tls,
        keep_alive: Duration::from_secs(config.upstream.keep_alive_secs.max(5)),
        max_inflight: config.upstream.max_inflight,
        press_batch: config.upstream.press_batch,
        zone_of: config
            .zones
            .iter()
            .flat_map(|(id, zone)| zone.terminals.iter().map(move |t| (t.clone(), id.clone())))
            .collect(),
        zones: config
            .zones
            .iter()
            .map(|(id, zone)| pressline_protocol::upstream::ZoneName {
                id: id.clone(),
                name: zone.name.clone(),
            })
            .collect(),
        time_zone: config.scores.time_zone.clone(),
    };
    Ok(Some(Forwarder::start(
        forwarder_config,
        store.clone(),
        stats.clone(),
        wake.clone(),
        shutdown.clone(),
    )))
}

/// The HTTP API and dashboard, over TLS when given a certificate.
fn serve_http(
    listener: tokio::net::TcpListener,
    https: Option<rustls::ServerConfig>,
    api: &ApiState,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = match https {
        Some(tls) => crate::api::server::HttpListener::Tls(
            crate::api::https::TlsListener::new(listener, tls)
                .context("cannot start the HTTPS listener")?,
        ),
        None => crate::api::server::HttpListener::Plain(listener),
    };
    Ok(tokio::spawn(crate::api::server::serve(
        listener,
        api.clone(),
        shutdown.clone(),
    )))
}
