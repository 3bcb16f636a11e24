//! What the start-up log says: where terminals, the API and upstream are,
//! the security mode, and how to watch the demo.

use std::sync::atomic::Ordering::Relaxed;

use crate::api::token::ApiTokens;
use crate::config::Config;
use crate::stats::Stats;
use crate::terminals::identity::SecurityMode;

pub(super) fn log_started(config: &Config, stats: &Stats, tokens: &ApiTokens) {
    tracing::info!(
        site = %config.site,
        data_dir = %config.data_dir.display(),
        stored = stats.presses_stored.load(Relaxed),
        pending_upstream = stats.forward_pending.load(Relaxed),
        "Pressline gateway {} started",
        env!("CARGO_PKG_VERSION")
    );
    match config.security.mode {
        SecurityMode::Closed => tracing::info!("{}", config.security.describe()),
        SecurityMode::Open => tracing::warn!("{}", config.security.describe()),
    }
    if config.security.mode == SecurityMode::Open && config.zones.is_empty() {
        tracing::warn!(
            forget_after_secs = config.health.forget_unknown_after_secs,
            "no zones configured: terminals that are not registered raise no offline alert and are forgotten once silent for health.forget_unknown_after_secs; list them in a [zones.ID] table to be alerted"
        );
    }
    log_terminal_listeners(config);
    let sources: Vec<String> = tokens
        .sources
        .iter()
        .map(|(scope, source)| format!("{} token from {source}", scope.as_str()))
        .collect();
    tracing::info!(
        "HTTP API: {}://{}/api/v1/ (bearer tokens: {})",
        if config.https() { "https" } else { "http" },
        config.http.listen,
        sources.join("; ")
    );
    log_upstream(config);
}

fn log_terminal_listeners(config: &Config) {
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
}

fn log_upstream(config: &Config) {
    match config.upstream_addr().ok().flatten() {
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
}

pub(super) fn log_demo(config: &Config, terminals: usize) {
    tracing::info!(
        "demo: {terminals} simulated terminals pressing; watch with `curl -s -H \"Authorization: Bearer $(cat {})\" http://{}/api/v1/stats` or `mosquitto_sub -p {} -t 'pressline/v1/#' -v`",
        config.data_dir.join("viewer-token").display(),
        loopback(config.http.listen),
        config.mqtt.listen.port()
    );
}

fn loopback(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}
