//! Upstream store-and-forward over MQTT (rumqttc).
//!
//! The outbox in sled is the only source of truth. rumqttc is used as a
//! transport and never trusted to remember anything:
//! - rumqttc drops its pending queue when the broker reports no session, and
//!   would otherwise replay it with old packet ids. So after any connection
//!   error the forwarder empties rumqttc's queues itself, and after every
//!   CONNACK it resends from the oldest unacknowledged outbox entry.
//! - rumqttc has no per-publish callback. Each publish handed to it yields
//!   exactly one `Outgoing::Publish(pkid)` event, in order, so a FIFO of
//!   outbox keys maps packet ids to entries; `PubAck(pkid)` then removes the
//!   entry from the outbox. A crash before that removal reaches disk only
//!   causes a resend, and upstream consumers deduplicate on the press `id`.
//!
//! Two tasks share `Window` under a mutex: the *feeder* hands outbox
//! entries to rumqttc while the in-flight window has room, and the *poller*
//! drives the event loop (never raced in a `select!`: cancelling
//! `EventLoop::poll` mid-write would corrupt the stream).
//!
//! Live first: at each CONNACK the outbox's newest key splits it into the
//! *backlog* (everything stored while upstream was away) and what arrives
//! *live* from then on. The feeder always hands over live entries first and
//! fills the rest of the window from the backlog, oldest first, so a press
//! made during hours of catch-up still reaches analytics within
//! milliseconds. Upstream order is therefore not storage order during a
//! drain; every document carries its own timestamps and id.

//!
//! # Layout
//! - this file: start, shutdown, and what the two tasks share;
//! - [`feed`]: the feeder;
//! - [`poll`]: the poller (connection, PUBACKs, failures, backoff);
//! - [`messages`]: outbox entries planned into upstream messages.

use pressline_host::sync::LockExt;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pressline_protocol::topic::GatewayStatusTopic;
use pressline_protocol::upstream::{GatewayState, GatewayStatus, GATEWAY_STATUS_SCHEMA};
use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::UpstreamAddr;
use crate::stats::Stats;
use crate::store::Store;

mod feed;
mod messages;
mod poll;

pub use messages::press_document;

/// Upstream connection settings.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    pub site: String,
    /// The broker, or the nodes of a clustered one, tried in turn: on a
    /// failed or lost connection the next node is tried.
    pub addrs: Vec<UpstreamAddr>,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    /// For an `mqtts://` broker: trust roots and, for mutual TLS, the
    /// gateway's certificate.
    pub tls: Option<UpstreamTls>,
    pub keep_alive: Duration,
    pub max_inflight: u16,
    /// Most presses in one upstream message (1: one document per press on
    /// its terminal's topic; above: `pressline.press_batch.v1`).
    pub press_batch: u16,
    /// Each zoned terminal's zone, for the press documents' `zone`.
    pub zone_of: std::collections::HashMap<String, String>,
    /// The site's zones and IANA time zone, for the gateway status, so
    /// central reports name zones and reckon local time as the site does.
    pub zones: Vec<pressline_protocol::upstream::ZoneName>,
    pub time_zone: Option<String>,
}

/// TLS to the upstream broker: the files, and the configuration last
/// loaded from them.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub files: crate::security::tls::ClientTls,
    pub config: Arc<rustls::ClientConfig>,
}

impl UpstreamTls {
    fn transport(&self) -> Transport {
        Transport::tls_with_config(TlsConfiguration::Rustls(self.config.clone()))
    }

    /// Reads the files again after a failed attempt, so a renewed
    /// certificate or a corrected CA bundle is used without a restart.
    /// Keeps the previous configuration when the files cannot be used now
    /// (say, half-written by a renewal).
    fn reload(&mut self) -> Result<(), String> {
        let config =
            crate::security::tls::client_config(&self.files).map_err(|e| format!("{e:#}"))?;
        self.config = Arc::new(config);
        Ok(())
    }
}

/// What is in flight on the current connection.
#[derive(Debug, Default)]
struct Window {
    connected: bool,
    /// Messages handed to rumqttc, awaiting their `Outgoing::Publish`
    /// event.
    handed_over: VecDeque<InFlight>,
    /// Packet id → message, awaiting PUBACK.
    awaiting_ack: HashMap<u16, InFlight>,
    /// The newest outbox key at CONNACK: the end of the backlog.
    backlog_end: Option<u64>,
    /// Last backlog key handed over on this connection.
    backlog_cursor: Option<u64>,
    /// Last live key (after `backlog_end`) handed over on this connection.
    live_cursor: Option<u64>,
    /// The store's generation the cursors belong to (see
    /// [`Store::generation`]).
    generation: u64,
}

/// What a publish handed to rumqttc carries.
#[derive(Debug, Clone)]
enum InFlight {
    Outbox(Handed),
    /// The gateway's own retained status (`offline`: the shutdown's).
    Status {
        offline: bool,
    },
}

/// An upstream message in flight: the outbox entries it carries.
#[derive(Debug, Clone)]
struct Handed {
    keys: Vec<u64>,
    /// How many of them are presses (counted in `presses_forwarded`).
    presses: u64,
}

impl Window {
    fn in_flight(&self) -> usize {
        self.handed_over.len() + self.awaiting_ack.len()
    }

    fn reset(&mut self, connected: bool, backlog_end: Option<u64>) {
        self.connected = connected;
        self.handed_over.clear();
        self.awaiting_ack.clear();
        self.backlog_end = backlog_end;
        self.backlog_cursor = None;
        self.live_cursor = backlog_end;
    }

    fn backlog_done(&self) -> bool {
        match (self.backlog_end, self.backlog_cursor) {
            (None, _) => true,
            (Some(end), Some(cursor)) => cursor >= end,
            (Some(_), None) => false,
        }
    }
}

struct Shared {
    config: ForwarderConfig,
    store: Store,
    stats: Arc<Stats>,
    client: AsyncClient,
    window: Mutex<Window>,
    wake: Arc<Notify>,
    /// Outbox read errors (a store being reopened fails every read),
    /// logged at most once a minute.
    read_errors: Mutex<crate::stats::RateLimitedLog>,
    /// The broker has PUBACKed the shutdown's `offline` status, and a wake
    /// for the shutdown waiting on it.
    offline_acked: AtomicBool,
    status_acked: Notify,
    /// The shutdown has begun: a reconnect publishes `offline`.
    stopping: AtomicBool,
}

impl Shared {
    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.locked()
    }

    /// Logs an outbox error, at most once a minute per kind of failure.
    fn outbox_error(&self, failed: &'static str, error: &crate::store::StoreError) {
        let admitted = self
            .read_errors
            .locked()
            .admit(failed, std::time::Instant::now());
        if let Some(suppressed) = admitted {
            tracing::error!(error = %error, suppressed, "{failed}");
        }
    }

    fn status_payload(&self, state: GatewayState, since: Option<String>) -> Vec<u8> {
        serde_json::to_vec(&GatewayStatus {
            schema: GATEWAY_STATUS_SCHEMA.into(),
            site: self.config.site.clone(),
            state,
            version: env!("CARGO_PKG_VERSION").into(),
            since,
            time_zone: self.config.time_zone.clone(),
            zones: self.config.zones.clone(),
        })
        .expect("plain struct serializes")
    }

    /// Publishes the retained gateway status (tracked like any publish so
    /// the packet-id FIFO stays aligned).
    /// Hands the status to rumqttc; `false` if its queue is full.
    fn publish_status(&self, window: &mut Window, state: GatewayState) -> bool {
        let topic = GatewayStatusTopic(&self.config.site).to_string();
        let offline = state == GatewayState::Offline;
        let payload = self.status_payload(
            state,
            Some(crate::clock::rfc3339_ms(crate::clock::unix_ms_now())),
        );
        window.handed_over.push_back(InFlight::Status { offline });
        if self
            .client
            .try_publish(topic, QoS::AtLeastOnce, true, payload)
            .is_err()
        {
            window.handed_over.pop_back();
            return false;
        }
        true
    }
}

/// A running forwarder.
pub struct Forwarder {
    shared: Arc<Shared>,
    poller: JoinHandle<()>,
    feeder: JoinHandle<()>,
}

impl Forwarder {
    /// Starts forwarding the outbox to the upstream broker.
    pub fn start(
        config: ForwarderConfig,
        store: Store,
        stats: Arc<Stats>,
        wake: Arc<Notify>,
        shutdown: watch::Receiver<bool>,
    ) -> Forwarder {
        let first = &config.addrs[0];
        let mut options = MqttOptions::new(&config.client_id, &first.host, first.port);
        options.set_clean_session(false);
        options.set_keep_alive(config.keep_alive);
        options.set_inflight(config.max_inflight);
        options.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, pass)) = &config.credentials {
            options.set_credentials(user, pass);
        }
        if let Some(tls) = &config.tls {
            options.set_transport(tls.transport());
        }
        let will_payload = serde_json::to_vec(&GatewayStatus {
            schema: GATEWAY_STATUS_SCHEMA.into(),
            site: config.site.clone(),
            state: GatewayState::Offline,
            version: env!("CARGO_PKG_VERSION").into(),
            since: None,
            time_zone: None,
            zones: Vec::new(),
        })
        .expect("plain struct serializes");
        options.set_last_will(LastWill::new(
            GatewayStatusTopic(&config.site).to_string(),
            will_payload,
            QoS::AtLeastOnce,
            true,
        ));
        // Channel room for a full window plus status and disconnect.
        let (client, mut eventloop) =
            AsyncClient::new(options, config.max_inflight as usize * 2 + 8);
        // Without TCP_NODELAY a burst of publishes (or the broker's PUBACKs
        // to it) waits for delayed ACKs, and a drain crawls.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let shared = Arc::new(Shared {
            config,
            store,
            stats,
            client,
            window: Mutex::new(Window::default()),
            wake,
            read_errors: Mutex::new(crate::stats::RateLimitedLog::new(Duration::from_secs(60))),
            offline_acked: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            status_acked: Notify::new(),
        });
        let poller = tokio::spawn(poll::poll(shared.clone(), eventloop));
        let feeder = tokio::spawn(feed::feed(shared.clone(), shutdown));
        Forwarder {
            shared,
            poller,
            feeder,
        }
    }

    /// Publishes the retained `offline` status, waits (at most `grace`)
    /// until the broker has it, then disconnects cleanly. A clean
    /// disconnect drops the last will, so without that PUBACK the
    /// connection is dropped instead, and the will says `offline`.
    pub async fn shutdown(self, grace: Duration) {
        self.feeder.abort();
        self.shared.stopping.store(true, Relaxed);
        let deadline = tokio::time::Instant::now() + grace;
        let published = {
            let mut window = self.shared.window();
            window.connected
                && self
                    .shared
                    .publish_status(&mut window, GatewayState::Offline)
        };
        let mut acked = false;
        if published {
            let offline_acked = async {
                loop {
                    // Registered before the count is read, so a PUBACK in
                    // between still wakes it.
                    let notified = self.shared.status_acked.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if self.shared.offline_acked.load(Relaxed) {
                        return;
                    }
                    notified.await;
                }
            };
            acked = tokio::time::timeout_at(deadline, offline_acked)
                .await
                .is_ok();
            if !acked {
                tracing::warn!("the upstream broker did not acknowledge the offline status in time; its last will says it instead");
            }
        }
        let mut poller = self.poller;
        if !acked {
            poller.abort();
            return;
        }
        let _ = self.shared.client.try_disconnect();
        if tokio::time::timeout_at(deadline + Duration::from_millis(500), &mut poller)
            .await
            .is_err()
        {
            poller.abort();
        }
    }
}
