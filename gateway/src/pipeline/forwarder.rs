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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pressline_protocol::topic::{GatewayStatusTopic, UpstreamPressBatchTopic, UpstreamPressTopic};
use pressline_protocol::upstream::{
    press_id, GatewayStatus, PressBatch, UpstreamPress, GATEWAY_STATUS_SCHEMA, PRESS_BATCH_SCHEMA,
    PRESS_SCHEMA,
};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::clock::rfc3339_ms;
use crate::config::UpstreamAddr;
use crate::stats::Stats;
use crate::store::{LoggedPress, OutboxItem, Store};

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
    /// Outbox entries handed to rumqttc, awaiting their `Outgoing::Publish`
    /// event (`None` for the gateway's own status messages).
    handed_over: VecDeque<Option<Handed>>,
    /// Packet id → outbox entry, awaiting PUBACK.
    awaiting_ack: HashMap<u16, Option<Handed>>,
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
}

impl Shared {
    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs an outbox error, at most once a minute per kind of failure.
    fn outbox_error(&self, failed: &'static str, error: &crate::store::StoreError) {
        let admitted = self
            .read_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(failed, std::time::Instant::now());
        if let Some(suppressed) = admitted {
            tracing::error!(error = %error, suppressed, "{failed}");
        }
    }

    fn status_payload(&self, state: &str, since: Option<String>) -> Vec<u8> {
        serde_json::to_vec(&GatewayStatus {
            schema: GATEWAY_STATUS_SCHEMA.into(),
            site: self.config.site.clone(),
            state: state.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            since,
            time_zone: self.config.time_zone.clone(),
            zones: self.config.zones.clone(),
        })
        .expect("plain struct serializes")
    }

    /// Publishes the retained gateway status (tracked like any publish so
    /// the packet-id FIFO stays aligned).
    fn publish_status(&self, window: &mut Window, state: &str) {
        let topic = GatewayStatusTopic(&self.config.site).to_string();
        let payload = self.status_payload(
            state,
            Some(crate::clock::rfc3339_ms(crate::clock::unix_ms_now())),
        );
        window.handed_over.push_back(None);
        if self
            .client
            .try_publish(topic, QoS::AtLeastOnce, true, payload)
            .is_err()
        {
            window.handed_over.pop_back();
        }
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
            state: "offline".into(),
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
        // to it) waits for delayed ACKs: a drain crawled at ~3,000/s.
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
        });
        let poller = tokio::spawn(poll(shared.clone(), eventloop));
        let feeder = tokio::spawn(feed(shared.clone(), shutdown));
        Forwarder {
            shared,
            poller,
            feeder,
        }
    }

    /// Publishes the retained `offline` status and disconnects cleanly (if
    /// connected), waiting at most `grace`.
    pub async fn shutdown(self, grace: Duration) {
        self.feeder.abort();
        {
            let mut window = self.shared.window();
            if window.connected {
                self.shared.publish_status(&mut window, "offline");
                let _ = self.shared.client.try_disconnect();
            }
        }
        let mut poller = self.poller;
        if tokio::time::timeout(grace, &mut poller).await.is_err() {
            poller.abort();
        }
    }
}

/// Hands outbox entries to rumqttc while connected and the window has room:
/// live entries first, then the backlog.
async fn feed(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let window_size = shared.config.max_inflight as usize;
    // The outbox writes acknowledgements in bursts; this writes the last
    // of a burst when no more PUBACKs come (see `crate::store::outbox`).
    let mut persist_acks = tokio::time::interval(Duration::from_secs(1));
    persist_acks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        loop {
            let mut window = shared.window();
            let generation = shared.store.generation();
            if window.connected && window.generation != generation {
                // The store was reopened after a fault: what it holds is
                // what is on disk. Split it again as at a reconnect;
                // messages in flight are resent at worst (same ids).
                match shared.store.outbox_last_key() {
                    Ok(end) => {
                        window.backlog_end = end;
                        window.backlog_cursor = None;
                        window.live_cursor = end;
                        window.generation = generation;
                    }
                    Err(e) => {
                        shared.outbox_error("cannot read the upstream outbox; retrying", &e);
                        break;
                    }
                }
            }
            let room = window_size.saturating_sub(window.in_flight());
            // Refill in batches of a quarter window (one outbox read per
            // batch, not per PUBACK) unless the window is nearly empty.
            if !window.connected || room == 0 || (room < window_size / 4 && window.in_flight() > 8)
            {
                break;
            }
            // Up to `press_batch` presses a message: read that many entries
            // a message of room.
            let per_message = usize::from(shared.config.press_batch.max(1));
            let entries_room = room * per_message;
            let live = match shared.store.outbox_after(window.live_cursor, entries_room) {
                Ok(e) => e,
                Err(e) => {
                    shared.outbox_error("cannot read the upstream outbox; retrying", &e);
                    break;
                }
            };
            let backlog_room = entries_room - live.len();
            let backlog = match window.backlog_end {
                Some(end) if backlog_room > 0 && !window.backlog_done() => {
                    match shared
                        .store
                        .outbox_between(window.backlog_cursor, end, backlog_room)
                    {
                        Ok(e) => e,
                        Err(e) => {
                            shared.outbox_error("cannot read the upstream outbox; retrying", &e);
                            break;
                        }
                    }
                }
                _ => Vec::new(),
            };
            if live.is_empty() && backlog.is_empty() {
                if let Some(end) = window.backlog_end {
                    // Nothing left up to `end` (acked earlier): backlog done.
                    window.backlog_cursor = Some(end);
                }
                break;
            }
            let entries = live
                .into_iter()
                .map(|(key, item)| (key, true, item))
                .chain(backlog.into_iter().map(|(key, item)| (key, false, item)));
            let mut full = false;
            for message in plan_messages(entries, per_message, room) {
                let (topic, payload, retain) = render(&shared.config, &message);
                window.handed_over.push_back(Some(message.handed()));
                if shared
                    .client
                    .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                    .is_err()
                {
                    window.handed_over.pop_back();
                    full = true;
                    break;
                }
                // Entries are in key order within live and within backlog.
                for &(key, is_live) in message.entries() {
                    if is_live {
                        window.live_cursor = Some(key);
                    } else {
                        window.backlog_cursor = Some(key);
                    }
                }
            }
            if full {
                break;
            }
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = persist_acks.tick() => {
                if let Err(e) = shared.store.persist_outbox_acks() {
                    shared.outbox_error(
                        "cannot record upstream acknowledgements (those messages may be sent again)",
                        &e,
                    );
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// One upstream message, planned from outbox entries.
#[derive(Debug)]
enum Planned {
    /// One entry: a press on its terminal's topic, or a stored document.
    One {
        entry: (u64, bool),
        item: OutboxItem,
    },
    /// Presses as one `pressline.press_batch.v1` document.
    Presses {
        entries: Vec<(u64, bool)>,
        presses: Vec<(Arc<str>, LoggedPress)>,
    },
}

impl Planned {
    /// `(outbox key, is live)` of what the message carries.
    fn entries(&self) -> &[(u64, bool)] {
        match self {
            Planned::One { entry, .. } => std::slice::from_ref(entry),
            Planned::Presses { entries, .. } => entries,
        }
    }

    fn handed(&self) -> Handed {
        match self {
            Planned::One { entry, item } => Handed {
                keys: vec![entry.0],
                presses: u64::from(item.is_press()),
            },
            Planned::Presses { entries, .. } => Handed {
                keys: entries.iter().map(|e| e.0).collect(),
                presses: entries.len() as u64,
            },
        }
    }
}

/// Groups outbox entries `(key, is live, item)`, in the order they are to
/// go, into at most `messages` upstream messages: presses `per_message` at
/// a time (consecutive ones; a document in between goes on its own), or
/// one message each when `per_message` is 1. Entries beyond are left for
/// the next round.
fn plan_messages(
    entries: impl IntoIterator<Item = (u64, bool, OutboxItem)>,
    per_message: usize,
    messages: usize,
) -> Vec<Planned> {
    let mut planned: Vec<Planned> = Vec::new();
    for (key, is_live, item) in entries {
        let item = match item {
            OutboxItem::Press { terminal, press } if per_message > 1 => {
                if let Some(Planned::Presses { entries, presses }) = planned.last_mut() {
                    if presses.len() < per_message {
                        entries.push((key, is_live));
                        presses.push((terminal, press));
                        continue;
                    }
                }
                if planned.len() == messages {
                    break;
                }
                planned.push(Planned::Presses {
                    entries: vec![(key, is_live)],
                    presses: vec![(terminal, press)],
                });
                continue;
            }
            item => item,
        };
        if planned.len() == messages {
            break;
        }
        planned.push(Planned::One {
            entry: (key, is_live),
            item,
        });
    }
    planned
}

/// The topic, payload and retain flag of a planned message.
fn render(config: &ForwarderConfig, message: &Planned) -> (String, Vec<u8>, bool) {
    let site = &config.site;
    let zone_of = |terminal: &str| config.zone_of.get(terminal).map(String::as_str);
    match message {
        Planned::One {
            item: OutboxItem::Press { terminal, press },
            ..
        } => {
            let (topic, payload) = press_document(site, terminal, zone_of(terminal), press);
            (topic, payload, false)
        }
        Planned::One {
            item: OutboxItem::Document(d),
            ..
        } => (d.topic.clone(), d.payload.clone(), d.retain),
        Planned::Presses { presses, .. } => {
            let batch = PressBatch {
                schema: PRESS_BATCH_SCHEMA.into(),
                site: site.clone(),
                presses: presses
                    .iter()
                    .map(|(terminal, press)| {
                        upstream_press(site, terminal, zone_of(terminal), press)
                    })
                    .collect(),
            };
            let payload = serde_json::to_vec(&batch).unwrap_or_else(|e| {
                // Structs of strings and numbers always serialize.
                tracing::error!(error = %e, "cannot render a press batch");
                Vec::new()
            });
            (UpstreamPressBatchTopic(site).to_string(), payload, false)
        }
    }
}

/// The `pressline.press.v1` document of a stored press, and its topic:
/// rendered when it is sent, so the store keeps a dozen bytes a press
/// rather than the document.
pub fn press_document(
    site: &str,
    terminal: &str,
    zone: Option<&str>,
    press: &LoggedPress,
) -> (String, Vec<u8>) {
    let document = upstream_press(site, terminal, zone, press);
    let payload = serde_json::to_vec(&document).unwrap_or_else(|e| {
        // A struct of strings and numbers always serializes.
        tracing::error!(error = %e, "cannot render a press document");
        Vec::new()
    });
    (UpstreamPressTopic { site, terminal }.to_string(), payload)
}

/// A stored press as its upstream document.
fn upstream_press(
    site: &str,
    terminal: &str,
    zone: Option<&str>,
    press: &LoggedPress,
) -> UpstreamPress {
    UpstreamPress {
        schema: PRESS_SCHEMA.into(),
        id: press_id(site, terminal, press.id()),
        site: site.to_string(),
        terminal: terminal.to_string(),
        boot: press.boot,
        seq: press.seq,
        button: press.button.name().into(),
        score: press.button.score(),
        pressed_at: press.pressed_at_ms.map(rfc3339_ms),
        received_at: rfc3339_ms(press.received_at_ms),
        counted: press.counted,
        not_counted_reason: press.reason.map(|r| r.reason().to_string()),
        zone: zone.map(str::to_string),
    }
}

/// Drops acknowledged entries from the outbox and counts them. A crash
/// before this only resends them (consumers deduplicate on the id).
fn remove_acked(shared: &Shared, acked: &mut Vec<Handed>) {
    if acked.is_empty() {
        return;
    }
    let keys: Vec<u64> = acked.iter().flat_map(|h| h.keys.iter().copied()).collect();
    match shared.store.outbox_remove_all(&keys) {
        Ok(()) => {
            let presses: u64 = acked.iter().map(|h| h.presses).sum();
            shared.stats.presses_forwarded.fetch_add(presses, Relaxed);
            shared
                .stats
                .forward_pending
                .fetch_sub(presses as i64, Relaxed);
        }
        Err(e) => shared.outbox_error(
            "cannot record upstream acknowledgements (those messages will be sent again)",
            &e,
        ),
    }
    acked.clear();
}

/// Drives the rumqttc event loop: connection state, packet-id mapping,
/// PUBACKs, reconnect backoff.
async fn poll(shared: Arc<Shared>, mut eventloop: EventLoop) {
    let nodes = &shared.config.addrs;
    let mut node = 0;
    let mut addr = nodes[node].to_string();
    shared.stats.set_upstream_node(Some(addr.clone()));
    let window_size = shared.config.max_inflight as usize;
    let mut last_error = String::new();
    let mut tls = shared.config.tls.clone();
    let mut last_reload_error = String::new();
    let mut backoff = Duration::from_millis(500);
    let mut down_since: Option<std::time::Instant> = None;
    let mut last_down_log = std::time::Instant::now();
    let mut acked: Vec<Handed> = Vec::new();
    loop {
        // PUBACKs come in bursts: remove a burst from the outbox in one
        // batch (once no further event is ready right away, or every 256),
        // not one sled write per message.
        if !acked.is_empty() && (acked.len() >= 256 || eventloop.state.events.is_empty()) {
            remove_acked(&shared, &mut acked);
        }
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(500);
                last_error.clear();
                shared.stats.set_upstream_error(None);
                let pending = shared.stats.forward_pending.load(Relaxed);
                match down_since.take() {
                    Some(t) => {
                        tracing::info!(upstream = %addr, down_secs = t.elapsed().as_secs(), pending, "upstream reconnected; forwarding backlog")
                    }
                    None => {
                        tracing::info!(upstream = %addr, session_present = ack.session_present, pending, "upstream connected")
                    }
                }
                let generation = shared.store.generation();
                let backlog_end = match shared.store.outbox_last_key() {
                    Ok(k) => k,
                    Err(e) => {
                        shared.outbox_error("cannot read the upstream outbox; retrying", &e);
                        None
                    }
                };
                let mut window = shared.window();
                window.reset(true, backlog_end);
                window.generation = generation;
                shared.publish_status(&mut window, "online");
                shared.stats.upstream_connected.store(true, Relaxed);
                drop(window);
                shared.wake.notify_one();
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut window = shared.window();
                if let Some(key) = window.handed_over.pop_front() {
                    window.awaiting_ack.insert(pkid, key);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let mut window = shared.window();
                if let Some(Some(handed)) = window.awaiting_ack.remove(&ack.pkid) {
                    acked.push(handed);
                }
                // Wake the feeder only once it would refill (see `feed`):
                // a wake per PUBACK cost more CPU in thread switches than
                // the drain itself.
                let in_flight = window.in_flight();
                drop(window);
                if window_size - in_flight.min(window_size) >= window_size / 4 || in_flight <= 8 {
                    shared.wake.notify_one();
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                remove_acked(&shared, &mut acked);
                // Our own clean disconnect at shutdown: let it reach the wire.
                let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                remove_acked(&shared, &mut acked);
                {
                    // Forget everything rumqttc holds (we resend from the
                    // outbox after the next CONNACK), under the window lock so
                    // the feeder cannot slip a publish in between.
                    let mut window = shared.window();
                    eventloop.clean();
                    eventloop.pending.clear();
                    eventloop.state.events.clear();
                    window.reset(false, None);
                }
                shared.stats.upstream_connected.store(false, Relaxed);
                if let Some(tls) = tls.as_mut() {
                    match tls.reload() {
                        Ok(()) => {
                            last_reload_error.clear();
                            eventloop.mqtt_options.set_transport(tls.transport());
                        }
                        Err(reload) if reload != last_reload_error => {
                            tracing::error!(error = %reload, "cannot reload the upstream TLS files; trying with the previous ones");
                            last_reload_error = reload;
                        }
                        Err(_) => {}
                    }
                }
                let error = describe_error(&e, &addr);
                let changed = error != last_error;
                if changed {
                    shared.stats.set_upstream_error(Some(error.clone()));
                    last_error = error.clone();
                }
                if down_since.is_none() || changed {
                    down_since.get_or_insert_with(std::time::Instant::now);
                    last_down_log = std::time::Instant::now();
                    tracing::warn!(upstream = %addr, %error, "upstream unreachable; presses are kept and forwarded when it is back");
                } else if last_down_log.elapsed() >= Duration::from_secs(60) {
                    last_down_log = std::time::Instant::now();
                    tracing::warn!(
                        upstream = %addr,
                        %error,
                        down_secs = down_since.map_or(0, |t| t.elapsed().as_secs()),
                        pending = shared.stats.forward_pending.load(Relaxed),
                        "upstream still unreachable"
                    );
                }
                // Reconnect backoff (not synchronisation), then the next
                // node of a cluster; the backoff grows once every node has
                // been tried.
                tokio::time::sleep(backoff).await;
                if nodes.len() > 1 {
                    node = (node + 1) % nodes.len();
                    addr = nodes[node].to_string();
                    eventloop
                        .mqtt_options
                        .set_broker_address(nodes[node].host.clone(), nodes[node].port);
                    shared.stats.set_upstream_node(Some(addr.clone()));
                    tracing::info!(upstream = %addr, "trying the next upstream node");
                }
                if node == 0 {
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                }
            }
        }
    }
}

/// What went wrong with the upstream connection, in words that say what to
/// fix: certificate problems and refused logins are named as such, not
/// left as a nested error chain.
fn describe_error(error: &ConnectionError, addr: &str) -> String {
    let peer = format!("upstream broker {addr}");
    if let Some(text) = crate::security::tls::explain(error, &peer) {
        return text;
    }
    match error {
        ConnectionError::ConnectionRefused(code) => {
            use rumqttc::ConnectReturnCode::*;
            match code {
                BadUserNamePassword | NotAuthorized => format!(
                    "{peer} refused the login ({code:?}); check upstream.username and upstream.password_file, or the client certificate the broker expects"
                ),
                other => format!("{peer} refused the connection ({other:?})"),
            }
        }
        other => format!("{peer}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pressline_protocol::Button;

    fn press(seq: u32) -> OutboxItem {
        OutboxItem::Press {
            terminal: Arc::from("n7"),
            press: LoggedPress {
                boot: 3,
                seq,
                button: Button::Happy,
                received_at_ms: 1_795_000_000_000,
                pressed_at_ms: None,
                counted: true,
                reason: None,
            },
        }
    }

    fn health() -> OutboxItem {
        OutboxItem::Document(crate::store::OutboxEntry {
            topic: "pressline/v1/arena/n7/health".into(),
            payload: b"{}".to_vec(),
            retain: true,
            is_press: false,
        })
    }

    fn config(press_batch: u16) -> ForwarderConfig {
        ForwarderConfig {
            site: "arena".into(),
            addrs: Vec::new(),
            client_id: "gw".into(),
            credentials: None,
            tls: None,
            keep_alive: Duration::from_secs(30),
            max_inflight: 10,
            press_batch,
            zone_of: [("n7".to_string(), "food".to_string())].into(),
            zones: Vec::new(),
            time_zone: None,
        }
    }

    fn keys(plan: &[Planned]) -> Vec<Vec<u64>> {
        plan.iter().map(|m| m.handed().keys).collect()
    }

    #[test]
    fn without_batching_every_entry_is_its_own_message_up_to_the_window() {
        let entries = (1..=5).map(|k| (k, true, press(k as u32)));
        let plan = plan_messages(entries, 1, 3);
        assert_eq!(keys(&plan), [vec![1], vec![2], vec![3]]);
        let (topic, payload, retain) = render(&config(1), &plan[0]);
        assert_eq!(topic, "pressline/v1/arena/n7/press");
        assert!(!retain);
        let doc: UpstreamPress = serde_json::from_slice(&payload).unwrap();
        assert_eq!(doc.id, "arena:n7:3:1");
        assert_eq!(doc.zone.as_deref(), Some("food"));
    }

    #[test]
    fn presses_ready_together_go_as_batches_and_documents_keep_their_own_messages() {
        let entries = vec![
            (1, true, press(1)),
            (2, true, press(2)),
            (3, true, press(3)),
            (4, true, health()),
            (5, true, press(4)),
            (9, false, press(5)),
            (10, false, press(6)),
        ];
        let plan = plan_messages(entries, 2, 10);
        assert_eq!(
            keys(&plan),
            [vec![1, 2], vec![3], vec![4], vec![5, 9], vec![10]]
        );
        let handed = plan[0].handed();
        assert_eq!(handed.presses, 2);
        assert_eq!(plan[2].handed().presses, 0);
        // Live and backlog entries are told apart for the cursors.
        assert_eq!(plan[3].entries(), &[(5, true), (9, false)]);

        let (topic, payload, retain) = render(&config(2), &plan[0]);
        assert_eq!(topic, "pressline/v1/arena/presses");
        assert!(!retain);
        let batch: PressBatch = serde_json::from_slice(&payload).unwrap();
        assert_eq!(batch.schema, PRESS_BATCH_SCHEMA);
        assert_eq!(batch.site, "arena");
        let ids: Vec<&str> = batch.presses.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["arena:n7:3:1", "arena:n7:3:2"]);
        assert!(batch.presses.iter().all(|p| p.schema == PRESS_SCHEMA));
        let (topic, _, retain) = render(&config(2), &plan[2]);
        assert_eq!(topic, "pressline/v1/arena/n7/health");
        assert!(retain);
    }

    #[test]
    fn a_batch_stops_at_the_window_and_what_is_left_waits_for_the_next_round() {
        let entries = (1..=7).map(|k| (k, true, press(k as u32)));
        let plan = plan_messages(entries, 3, 2);
        assert_eq!(keys(&plan), [vec![1, 2, 3], vec![4, 5, 6]]);
        assert!(plan_messages(Vec::new(), 3, 2).is_empty());
    }
}
