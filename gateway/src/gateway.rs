//! Start-up, wiring and graceful shutdown.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{watch, Notify};

use crate::api::state::ApiState;
use crate::config::Config;
use crate::pipeline::commit::Committer;
use crate::pipeline::forwarder::{Forwarder, ForwarderConfig};
use crate::stats::Stats;
use crate::store::Store;

/// How many decoded presses may wait between ingest and commit (four full
/// commit batches). When full, ingest blocks and the broker's own
/// buffering (then terminal resends) absorbs the burst. The queue's ring
/// buffer is allocated whole: 65,536 slots were 4.7 MB of RSS.
const INGEST_QUEUE: usize = 16_384;

/// Everything secret or certificate-bearing the configuration points to,
/// read and checked before anything starts: a mistake there is one clear
/// configuration error (exit code 2), not a half-started gateway.
pub struct Credentials {
    upstream_tls: Option<crate::pipeline::forwarder::UpstreamTls>,
    upstream_login: Option<(String, String)>,
    https: Option<rustls::ServerConfig>,
}

impl Credentials {
    pub fn load(config: &Config) -> anyhow::Result<Credentials> {
        let upstream_tls = match config.upstream_addr()? {
            Some(addr) if addr.tls => {
                let files = crate::security::tls::ClientTls {
                    ca_file: config.upstream.ca_file.clone(),
                    cert_file: config.upstream.cert_file.clone(),
                    key_file: config.upstream.key_file.clone(),
                };
                let client = crate::security::tls::client_config(&files)?;
                if let Some(problem) = files.certificate_problem() {
                    tracing::error!("{problem}: the broker will refuse it; presses are kept, and a renewed certificate in its place is used at the next attempt");
                }
                Some(crate::pipeline::forwarder::UpstreamTls {
                    files,
                    config: Arc::new(client),
                })
            }
            _ => None,
        };
        let upstream_login = match (&config.upstream.username, &config.upstream.password_file) {
            (Some(user), Some(file)) => {
                crate::security::secret_files::refuse_world_readable(
                    file,
                    "upstream.password_file",
                )?;
                let pass = std::fs::read_to_string(file).with_context(|| {
                    format!("cannot read upstream.password_file {}", file.display())
                })?;
                Some((user.clone(), pass.trim_end().to_string()))
            }
            (Some(user), None) => Some((user.clone(), String::new())),
            (None, Some(_)) => anyhow::bail!("upstream.password_file needs upstream.username"),
            (None, None) => None,
        };
        let https = match (&config.http.tls_cert_file, &config.http.tls_key_file) {
            (Some(cert), Some(key)) => {
                Some(crate::security::tls::server_config(cert, key, "HTTPS")?)
            }
            _ => None,
        };
        // rumqttd reads the terminal listener's files itself, in its own
        // thread, and would only log a problem there.
        if let (Some(_), Some(cert), Some(key)) = (
            config.mqtt.tls_listen,
            &config.mqtt.tls_cert_file,
            &config.mqtt.tls_key_file,
        ) {
            crate::security::tls::server_config(cert, key, "terminal TLS listener")?;
        }
        Ok(Credentials {
            upstream_tls,
            upstream_login,
            https,
        })
    }
}

/// Runs the gateway until SIGINT/SIGTERM, then shuts down cleanly.
pub async fn run(
    mut config: Config,
    credentials: Credentials,
    demo_terminals: Option<usize>,
) -> anyhow::Result<()> {
    if let Some(n) = demo_terminals.filter(|_| config.zones.is_empty()) {
        config.zones = crate::demo::zones(n);
    }
    config.validate()?;
    let upstream = config.upstream_addr()?;
    let started = Instant::now();
    if demo_terminals.is_some() && config.mqtt.tls_only {
        anyhow::bail!("--demo needs the plain terminal listener: unset mqtt.tls_only");
    }
    let Credentials {
        upstream_tls,
        upstream_login,
        https,
    } = credentials;

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

    let http_listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for HTTP on {} (choose another with --http-listen)",
                config.http.listen
            )
        })?;
    let identities =
        crate::terminals::identity::Identities::load(config.security.mode, store.clone());
    let mut trusted = Vec::new();
    for path in &config.ota.trusted_keys {
        trusted.push(crate::ota::releases::read_public_key(path)?);
    }
    let releases = crate::ota::releases::Releases::new(
        store.clone(),
        &config.data_dir,
        trusted,
        config.ota.allow_downgrade,
    );
    if !config.ota.trusted_keys.is_empty() {
        tracing::info!(keys = ?releases.trusted_key_ids(), "firmware releases signed by these keys are accepted");
    }
    let access = crate::security::mqtt_access::MqttAccess::new(stats.clone());
    let site_broker = crate::broker::start(&config.mqtt, &identities, access)?;

    let today = crate::clock::utc_day(crate::clock::unix_ms_now());
    stats.set_today(today, store.stored_on(today));
    let (token, token_source) =
        crate::api::token::api_token(config.http.api_token.as_deref(), &config.data_dir)?;
    let scores = {
        let now = crate::clock::unix_ms_now();
        let mut scores = crate::insight::scores::Scores::new(
            config.scores.clone(),
            config.zones.clone(),
            config.storage.aggregate_retention_days,
            now,
        );
        for (terminal, zone) in registry_zones_from_registrations(&store) {
            scores.assign(&terminal, &zone);
        }
        let scores = std::sync::Mutex::new(scores);
        let restored = crate::insight::checkpoints::restore(&store, &scores, now)
            .context("cannot load the satisfaction figures from the press store")?;
        if restored.replayed > 0 {
            tracing::info!(
                presses = restored.replayed,
                days = restored.site_days,
                "satisfaction figures restored from their checkpoint and the press log"
            );
        }
        scores.into_inner().unwrap_or_else(|p| p.into_inner())
    };
    let forward_wake = Arc::new(Notify::new());
    let link_signer = crate::alerting::links::LinkSigner::load(
        &config.site,
        &config.data_dir,
        config.alerting.public_url.as_deref(),
        config.alerting.link_valid_hours,
    )?;
    let notifier = crate::alerting::delivery::Notifier::new(&config.alerting, link_signer)?;
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
    if !config.alerting.channels.is_empty() && config.alerting.public_url.is_none() {
        tracing::info!("alerting.public_url is not set: notifications carry no acknowledge links");
    }
    let registry = crate::terminals::registry::Registry::load(
        &config.site,
        config.health.clone(),
        scores,
        &store,
        crate::terminals::registry::AlertOutlets {
            routing: Arc::new(crate::alerting::routing::Routing::new(
                &config.alerting,
                config.site_time()?,
            )),
            close_after_secs: config.alerting.close_after_recovery_secs,
            notify_wake: notifier.wake.clone(),
            forward_wake: forward_wake.clone(),
        },
    );

    let (shutdown_tx, shutdown) = watch::channel(false);
    let (to_registry, registry_inputs) = tokio::sync::mpsc::channel(65_536);

    // Ingest thread → bounded queue → commit thread.
    let (to_committer, from_ingest) = sync_channel(INGEST_QUEUE);
    let ingest_stats = stats.clone();
    let link_rx = site_broker.link_rx;
    std::thread::Builder::new()
        .name("ingest".into())
        .spawn({
            let to_registry = to_registry.clone();
            {
                let identities = identities.clone();
                move || {
                    crate::pipeline::ingest::run(
                        link_rx,
                        to_committer,
                        to_registry,
                        identities,
                        ingest_stats,
                    )
                }
            }
        })
        .context("cannot start the ingest thread")?;
    let rollouts = crate::ota::service::Rollouts::load(
        &config.site,
        store.clone(),
        releases.clone(),
        config.ota.limits(),
        config.site_time()?,
        forward_wake.clone(),
    );
    let ota_thread = std::thread::Builder::new()
        .name("ota".into())
        .spawn({
            let (rollouts, tx, rx, shutdown) = (
                rollouts.clone(),
                site_broker.ota_tx,
                site_broker.ota_rx,
                shutdown.clone(),
            );
            move || crate::ota::service::run(rollouts, tx, rx, shutdown)
        })
        .context("cannot start the OTA thread")?;
    let committer = Committer {
        store: store.clone(),
        stats: stats.clone(),
        link: site_broker.link_tx,
        batch_max: config.storage.commit_batch_max,
        max_disk_bytes: config.storage.max_disk_mb << 20,
        forward_wake: forward_wake.clone(),
        misuse: crate::insight::misuse::MisuseFilter::new(config.misuse.clone()),
        scores: registry.scores_handle(),
        to_registry,
        shutdown: shutdown.clone(),
        failures: crate::stats::RateLimitedLog::new(Duration::from_secs(10)),
    };
    tokio::spawn(crate::pipeline::retention::run(
        store.clone(),
        stats.clone(),
        registry.scores_handle(),
        config.storage.retention_days,
        shutdown.clone(),
    ));
    tokio::spawn(crate::terminals::registry::run(
        registry.clone(),
        registry_inputs,
        shutdown.clone(),
    ));
    tokio::spawn(crate::alerting::delivery::run(
        notifier.clone(),
        store.clone(),
        shutdown.clone(),
    ));
    let commit_thread = std::thread::Builder::new()
        .name("commit".into())
        .spawn(move || committer.run(from_ingest))
        .context("cannot start the commit thread")?;

    let forwarder = match &upstream {
        Some(_) => Some(Forwarder::start(
            ForwarderConfig {
                site: config.site.clone(),
                addrs: config.upstream_addrs()?,
                client_id: config.upstream_client_id(),
                credentials: upstream_login,
                tls: upstream_tls,
                keep_alive: Duration::from_secs(config.upstream.keep_alive_secs.max(5)),
                max_inflight: config.upstream.max_inflight,
                press_batch: config.upstream.press_batch,
                zone_of: config
                    .zones
                    .iter()
                    .flat_map(|(id, zone)| {
                        zone.terminals.iter().map(move |t| (t.clone(), id.clone()))
                    })
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
            },
            store.clone(),
            stats.clone(),
            forward_wake.clone(),
            shutdown.clone(),
        )),
        None => None,
    };

    let api = ApiState {
        site: config.site.clone(),
        stats: stats.clone(),
        store: store.clone(),
        registry,
        identities: identities.clone(),
        releases,
        rollouts,
        started,
        upstream_configured: upstream.is_some(),
        token: token.into(),
        notifier,
        site_time: config.site_time()?,
    };
    let http_listener = match https {
        Some(tls) => crate::api::server::HttpListener::Tls(
            crate::api::https::TlsListener::new(http_listener, tls)
                .context("cannot start the HTTPS listener")?,
        ),
        None => crate::api::server::HttpListener::Plain(http_listener),
    };
    let http = tokio::spawn(crate::api::server::serve(
        http_listener,
        api.clone(),
        shutdown.clone(),
    ));

    tracing::info!(
        site = %config.site,
        data_dir = %config.data_dir.display(),
        stored = stats.presses_stored.load(Relaxed),
        pending_upstream = stats.forward_pending.load(Relaxed),
        "Pressline gateway {} started",
        env!("CARGO_PKG_VERSION")
    );
    match config.security.mode {
        crate::terminals::identity::SecurityMode::Closed => {
            tracing::info!("{}", config.security.describe())
        }
        crate::terminals::identity::SecurityMode::Open => {
            tracing::warn!("{}", config.security.describe())
        }
    }
    if !config.mqtt.tls_only {
        tracing::info!(
            "terminals: mqtt://{} (topics pressline/v1/term/{{terminal}}/press[/json])",
            config.mqtt.listen
        );
        if let Some(v5) = config.mqtt.listen_v5 {
            tracing::info!("terminals speaking MQTT 5: mqtt://{v5}");
        }
    }
    if let Some(tls) = config.mqtt.tls_listen {
        tracing::info!("terminals over TLS: mqtts://{tls}");
    }
    tracing::info!(
        "HTTP API: {}://{}/api/v1/ (bearer token from {token_source})",
        if config.https() { "https" } else { "http" },
        config.http.listen
    );
    match &upstream {
        Some(a) => tracing::info!(
            "upstream: {a} as {:?} (topics pressline/v1/{}/#){}",
            config.upstream_client_id(),
            config.site,
            match (a.tls, config.upstream.cert_file.is_some()) {
                (true, true) => ", mutual TLS with a client certificate",
                (true, false) => ", TLS",
                (false, _) => ", plain TCP: use mqtts:// across any network you do not control",
            }
        ),
        None => tracing::warn!("no upstream broker configured: presses are stored only (set --upstream mqtt://HOST:PORT to forward; the backlog is sent then)"),
    }

    if let Some(n) = demo_terminals {
        tracing::info!(
            "demo: {n} simulated terminals pressing; watch with `curl -s -H \"Authorization: Bearer $(cat {})\" http://{}/api/v1/stats` or `mosquitto_sub -p {} -t 'pressline/v1/#' -v`",
            config.data_dir.join("api-token").display(),
            loopback(config.http.listen),
            config.mqtt.listen.port()
        );
        crate::demo::start(n, config.mqtt.listen, api, shutdown.clone());
    }

    wait_for_signal().await;
    tracing::info!("shutting down: committing queued presses");
    let _ = shutdown_tx.send(true);
    let _ = tokio::task::spawn_blocking(move || commit_thread.join()).await;
    let _ = tokio::task::spawn_blocking(move || ota_thread.join()).await;
    if let Some(f) = forwarder {
        f.shutdown(Duration::from_secs(3)).await;
    }
    let _ = http.await;
    store
        .flush()
        .context("final flush of the press store failed")?;
    tracing::info!(
        stored = stats.presses_stored.load(Relaxed),
        pending_upstream = stats.forward_pending.load(Relaxed),
        "gateway stopped cleanly"
    );
    Ok(())
}

fn loopback(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// (terminal, zone) of registered terminals that were given a zone.
fn registry_zones_from_registrations(store: &Store) -> Vec<(String, String)> {
    store
        .load_credentials::<crate::terminals::identity::Credential>()
        .into_iter()
        .filter(|c| !c.revoked)
        .filter_map(|c| c.zone.map(|z| (c.terminal, z)))
        .collect()
}
