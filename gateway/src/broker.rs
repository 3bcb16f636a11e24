//! The embedded site broker (rumqttd) terminals connect to.
//!
//! rumqttd 0.20 runs its own threads: the local link must be created before
//! `start()`, `start()` blocks (so it gets a dedicated thread), and there is
//! no shutdown handle (the process exit ends it). Nothing it holds is
//! persisted, which is why durability comes from the gateway's own ack.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use pressline_protocol::topic::TERMINAL_FILTER;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{
    Broker, Config as BrokerConfig, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig,
};

use crate::config::MqttConfig;
use crate::security::mqtt_access::MqttAccess;

/// Client id of the gateway's in-process link.
pub const LINK_CLIENT_ID: &str = "pressline-gateway";
/// Client id of the gateway's in-process OTA link.
pub const OTA_LINK_CLIENT_ID: &str = "pressline-gateway-ota";
/// Client id of the gateway's in-process link for power settings.
pub const POWER_LINK_CLIENT_ID: &str = "pressline-gateway-power";
/// The router counts the gateway's own links as connections: the limit is
/// the terminals' plus these.
const GATEWAY_LINKS: usize = 3;

/// Whether `client_id` is one of the gateway's own links: never a
/// terminal's id (registering one would end the gateway's own session).
pub fn is_gateways_client_id(client_id: &str) -> bool {
    [LINK_CLIENT_ID, OTA_LINK_CLIENT_ID, POWER_LINK_CLIENT_ID].contains(&client_id)
}

/// Every filter a terminal subscribes to (its acks, its OTA traffic).
const GATEWAY_TO_TERMINAL: &str = "pressline/v1/gw/#";
/// Segment size of those filters' logs, rumqttd's minimum: about 20 acks
/// (an ack is some 50 bytes of topic and payload). An OTA chunk (up to
/// 8 KiB) overflows a segment on its own, which rumqttd allows for the
/// last entry, so a chunk in flight is kept too. rumqttd holds several
/// hundred bytes per entry beyond what a segment counts, so these logs are
/// kept as small as possible: larger segments keep hundreds of old acks per
/// terminal, and memory grows with them (BENCHMARKS.md, "Over time, under
/// reconnect churn").
const TERMINAL_LOG_SEGMENT: usize = 1024;

/// rumqttd configuration for the site broker.
pub fn broker_config(mqtt: &MqttConfig) -> BrokerConfig {
    let server = ServerSettings {
        name: "terminals".into(),
        listen: mqtt.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: mqtt.max_payload_bytes,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
            on_refusal: None,
            publish_authorizer: None,
            reserved_client_ids: vec![
                LINK_CLIENT_ID.into(),
                OTA_LINK_CLIENT_ID.into(),
                POWER_LINK_CLIENT_ID.into(),
            ],
            anonymous: None,
        },
    };
    let mut v4 = HashMap::new();
    let mut v5 = None;
    if let (Some(listen), Some(cert), Some(key)) =
        (mqtt.tls_listen, &mqtt.tls_cert_file, &mqtt.tls_key_file)
    {
        let mut settings = server.clone();
        settings.name = "terminals-tls".into();
        settings.listen = listen;
        settings.tls = Some(TlsConfig::Rustls {
            capath: None,
            certpath: cert.display().to_string(),
            keypath: key.display().to_string(),
        });
        v4.insert("terminals-tls".to_string(), settings);
    }
    if !mqtt.tls_only {
        v5 = mqtt.listen_v5.map(|listen| {
            let mut settings = server.clone();
            settings.name = "terminals-v5".into();
            settings.listen = listen;
            HashMap::from([("terminals-v5".to_string(), settings)])
        });
        v4.insert("terminals".to_string(), server);
    }
    BrokerConfig {
        id: 0,
        router: RouterConfig {
            // The local links count as connections too.
            max_connections: mqtt.max_terminals + GATEWAY_LINKS,
            max_outgoing_packet_count: 200,
            max_segment_size: mqtt.router_segment_bytes,
            max_segment_count: mqtt.router_segment_count,
            // What the gateway publishes to a terminal (its acks, an OTA
            // offer or chunk) is delivered at once and never needed again,
            // but rumqttd keeps every publish in its filter's log until the
            // log's segments rotate: with the default segments each
            // terminal's log filled up to a megabyte of old acks, and RSS
            // followed the presses stored. Two small segments hold what is
            // in flight ([`TERMINAL_LOG_SEGMENT`]).
            custom_segment: Some(HashMap::from([(
                GATEWAY_TO_TERMINAL.to_string(),
                rumqttd::SegmentConfig {
                    max_segment_size: TERMINAL_LOG_SEGMENT,
                    max_segment_count: 2,
                },
            )])),
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
            publish_authorizer: None,
            subscribe_authorizer: None,
        },
        v4: Some(v4),
        v5,
        ..Default::default()
    }
}

/// Binds and listens once the way rumqttd will (SO_REUSEADDR, so a restart
/// right after a crash is not refused because of TIME_WAIT sockets).
fn check_bindable(addr: SocketAddr) -> std::io::Result<()> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    drop(socket.listen(1)?);
    Ok(())
}

/// The started site broker's link into the gateway.
pub struct SiteBroker {
    pub link_tx: LinkTx,
    pub link_rx: LinkRx,
    /// A second link for firmware transfer (OTA topics only), so image
    /// chunks and presses never wait for each other.
    pub ota_tx: LinkTx,
    pub ota_rx: LinkRx,
    /// A third for power settings (it subscribes to nothing).
    pub power_link: (LinkTx, LinkRx),
}

/// Starts the broker on its own thread and returns the gateway's link,
/// already subscribed to everything terminals publish.
pub fn start(mqtt: &MqttConfig, access: Arc<MqttAccess>) -> anyhow::Result<SiteBroker> {
    // rumqttd only logs a failed bind from its server thread; check first so
    // the operator gets a clear error and a non-zero exit.
    if !mqtt.tls_only {
        check_bindable(mqtt.listen).with_context(|| {
            format!(
                "cannot listen for terminals on {} (is another broker or gateway running? choose another with --mqtt-listen)",
                mqtt.listen
            )
        })?;
        if let Some(v5) = mqtt.listen_v5 {
            check_bindable(v5).with_context(|| {
                format!("cannot listen for MQTT 5 terminals on {v5} (choose another with --mqtt-v5-listen, or remove mqtt.listen_v5)")
            })?;
        }
    }
    if let Some(tls) = mqtt.tls_listen {
        check_bindable(tls).with_context(|| {
            format!(
                "cannot listen for TLS terminals on {tls} (choose another with --mqtt-tls-listen)"
            )
        })?;
    }
    let mut config = broker_config(mqtt);
    // Publishes: checked, counted and logged on the router thread (in
    // every mode: gateway topics are the gateway's, a registered terminal's
    // topics are its own). Wills: checked at CONNECT, where a refusal is
    // counted as a refused connection.
    let authorizer = {
        let access = access.clone();
        rumqttd::PublishAuthorizer(Arc::new(move |client_id: &str, topic: &str, retain| {
            access.authorize_publish(client_id, topic, retain)
        }))
    };
    config.router.publish_authorizer = Some(authorizer);
    // Subscriptions: in closed mode a terminal reads only its own
    // `pressline/v1/gw/{id}/…` topics; in every mode a client's filters
    // are bounded.
    config.router.subscribe_authorizer = Some({
        let access = access.clone();
        rumqttd::SubscribeAuthorizer(Arc::new(move |request: &rumqttd::SubscribeRequest<'_>| {
            access.authorize_subscribe(request)
        }))
    });
    let will_authorizer = {
        let access = access.clone();
        rumqttd::PublishAuthorizer(Arc::new(move |client_id: &str, topic: &str, retain| {
            access.may_publish(client_id, topic, retain)
        }))
    };
    let refusals = {
        let access = access.clone();
        rumqttd::RefusalHandler(Arc::new(move |refusal, client_id: Option<&str>, peer| {
            access.connection_refused(refusal, client_id, peer)
        }))
    };
    for servers in [config.v4.as_mut(), config.v5.as_mut()]
        .into_iter()
        .flatten()
    {
        for settings in servers.values_mut() {
            settings.connections.on_refusal = Some(refusals.clone());
            settings.connections.publish_authorizer = Some(will_authorizer.clone());
            // A registered terminal's client id is taken only by a client
            // logging in as it (closed mode: every client must); in open
            // mode other clients may connect without a login.
            let checker = access.clone();
            settings.set_auth_handler(move |client_id: String, user: String, password: String| {
                let checker = checker.clone();
                async move { checker.may_log_in(&client_id, &user, &password) }
            });
            let anonymous = access.clone();
            settings.connections.anonymous = Some(rumqttd::AnonymousPolicy(Arc::new(
                move |client_id: &str| anonymous.may_connect_anonymously(client_id),
            )));
        }
    }
    let mut broker = Broker::new(config);
    access
        .identities()
        .end_sessions_with(broker.session_ender());
    let (mut link_tx, link_rx) = broker
        .link(LINK_CLIENT_ID)
        .map_err(|e| anyhow::anyhow!("cannot open the gateway's link to the site broker: {e:?}"))?;
    link_tx
        .subscribe(TERMINAL_FILTER)
        .map_err(|e| anyhow::anyhow!("cannot subscribe to terminal topics: {e:?}"))?;
    let (mut ota_tx, ota_rx) = broker.link(OTA_LINK_CLIENT_ID).map_err(|e| {
        anyhow::anyhow!("cannot open the gateway's OTA link to the site broker: {e:?}")
    })?;
    ota_tx
        .subscribe(pressline_protocol::topic::OTA_FILTER)
        .map_err(|e| anyhow::anyhow!("cannot subscribe to terminal OTA topics: {e:?}"))?;
    let power_link = broker.link(POWER_LINK_CLIENT_ID).map_err(|e| {
        anyhow::anyhow!("cannot open the gateway's power link to the site broker: {e:?}")
    })?;
    std::thread::Builder::new()
        .name("site-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "site broker stopped");
            }
        })
        .context("cannot start the site broker thread")?;
    Ok(SiteBroker {
        link_tx,
        link_rx,
        ota_tx,
        ota_rx,
        power_link,
    })
}
