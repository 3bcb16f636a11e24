//! The poller: drives the rumqttc event loop (connection state, packet-id
//! mapping, PUBACKs), and after a failure forgets what rumqttc holds,
//! reloads TLS files, says what went wrong, backs off and moves on to the
//! next node of a cluster.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pressline_protocol::backoff::Backoff;
use pressline_protocol::upstream::GatewayState;
use rumqttc::{ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, Outgoing, Packet};

use super::{Handed, InFlight, Shared, UpstreamTls};

/// Runs the poller until the forwarder's own clean disconnect.
pub(super) async fn poll(shared: Arc<Shared>, mut eventloop: EventLoop) {
    let mut link = Link::new(&shared);
    let window_size = shared.config.max_inflight as usize;
    let mut acked: Vec<Handed> = Vec::new();
    loop {
        // PUBACKs come in bursts: remove a burst from the outbox in one
        // batch (once no further event is ready right away, or every 256),
        // not one sled write per message.
        if !acked.is_empty() && (acked.len() >= 256 || eventloop.state.events.is_empty()) {
            remove_acked(&shared, &mut acked);
        }
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => link.connected(&shared, &ack),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut window = shared.window();
                if let Some(key) = window.handed_over.pop_front() {
                    window.awaiting_ack.insert(pkid, key);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let mut window = shared.window();
                match window.awaiting_ack.remove(&ack.pkid) {
                    Some(InFlight::Outbox(handed)) => acked.push(handed),
                    Some(InFlight::Status { offline: true }) => {
                        shared.offline_acked.store(true, Relaxed);
                        shared.status_acked.notify_waiters();
                    }
                    Some(InFlight::Status { offline: false }) | None => {}
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
                link.failed(&shared, &mut eventloop, &e).await;
            }
        }
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

/// The connection as the poller sees it: which node, its TLS files, the
/// backoff, and the outage being reported.
struct Link {
    node: usize,
    addr: String,
    tls: Option<UpstreamTls>,
    backoff: Backoff,
    /// Since when upstream is unreachable, if it is.
    down_since: Option<Instant>,
    last_down_log: Instant,
    /// What went wrong last (a new kind of failure is logged at once; the
    /// same one again at most once a minute).
    last_failure: Option<Failure>,
    last_reload_failure: Option<String>,
}

impl Link {
    fn new(shared: &Shared) -> Link {
        let addr = shared.config.addrs[0].to_string();
        shared.stats.set_upstream_node(Some(addr.clone()));
        Link {
            node: 0,
            addr,
            tls: shared.config.tls.clone(),
            backoff: Backoff::new(500, 15_000),
            down_since: None,
            last_down_log: Instant::now(),
            last_failure: None,
            last_reload_failure: None,
        }
    }

    /// CONNACK: split the outbox into backlog and live, say `online`, and
    /// start feeding.
    fn connected(&mut self, shared: &Shared, ack: &ConnAck) {
        self.backoff.reset();
        self.last_failure = None;
        shared.stats.set_upstream_error(None);
        let pending = shared.stats.forward_pending.load(Relaxed);
        match self.down_since.take() {
            Some(t) => {
                tracing::info!(upstream = %self.addr, down_secs = t.elapsed().as_secs(), pending, "upstream reconnected; forwarding backlog")
            }
            None => {
                tracing::info!(upstream = %self.addr, session_present = ack.session_present, pending, "upstream connected")
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
        // A reconnect during the shutdown says what is true by then.
        let state = if shared.stopping.load(Relaxed) {
            GatewayState::Offline
        } else {
            GatewayState::Online
        };
        let _ = shared.publish_status(&mut window, state);
        shared.stats.upstream_connected.store(true, Relaxed);
        drop(window);
        shared.wake.notify_one();
    }

    /// A failed or lost connection.
    async fn failed(&mut self, shared: &Shared, eventloop: &mut EventLoop, e: &ConnectionError) {
        {
            // Forget everything rumqttc holds (the outbox is resent after
            // the next CONNACK), under the window lock so the feeder
            // cannot slip a publish in between.
            let mut window = shared.window();
            eventloop.clean();
            eventloop.pending.clear();
            eventloop.state.events.clear();
            window.reset(false, None);
        }
        shared.stats.upstream_connected.store(false, Relaxed);
        self.reload_tls(eventloop);
        self.report(shared, e);
        // Reconnect backoff (not synchronisation), then the next node of a
        // cluster; the backoff grows once every node has been tried.
        tokio::time::sleep(Duration::from_millis(self.backoff.peek_ms())).await;
        self.next_node(shared, eventloop);
        if self.node == 0 {
            self.backoff.grow();
        }
    }

    /// Reads the TLS files again, so a renewed certificate or a corrected
    /// CA bundle is used at the next attempt without a restart.
    fn reload_tls(&mut self, eventloop: &mut EventLoop) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        match tls.reload() {
            Ok(()) => {
                self.last_reload_failure = None;
                eventloop.mqtt_options.set_transport(tls.transport());
            }
            Err(reload) => {
                if self.last_reload_failure.as_ref() != Some(&reload) {
                    tracing::error!(error = %reload, "cannot reload the upstream TLS files; trying with the previous ones");
                    self.last_reload_failure = Some(reload);
                }
            }
        }
    }

    /// Says what went wrong: in the stats always, in the log when the kind
    /// of failure changes, and once a minute while it lasts.
    fn report(&mut self, shared: &Shared, e: &ConnectionError) {
        let failure = Failure::of(e);
        let error = describe_error(e, &self.addr);
        shared.stats.set_upstream_error(Some(error.clone()));
        let new_kind = self.last_failure.as_ref() != Some(&failure);
        self.last_failure = Some(failure);
        if self.down_since.is_none() || new_kind {
            self.down_since.get_or_insert_with(Instant::now);
            self.last_down_log = Instant::now();
            tracing::warn!(upstream = %self.addr, %error, "upstream unreachable; presses are kept and forwarded when it is back");
        } else if self.last_down_log.elapsed() >= Duration::from_secs(60) {
            self.last_down_log = Instant::now();
            tracing::warn!(
                upstream = %self.addr,
                %error,
                down_secs = self.down_since.map_or(0, |t| t.elapsed().as_secs()),
                pending = shared.stats.forward_pending.load(Relaxed),
                "upstream still unreachable"
            );
        }
    }

    fn next_node(&mut self, shared: &Shared, eventloop: &mut EventLoop) {
        let nodes = &shared.config.addrs;
        if nodes.len() < 2 {
            return;
        }
        self.node = (self.node + 1) % nodes.len();
        self.addr = nodes[self.node].to_string();
        eventloop
            .mqtt_options
            .set_broker_address(nodes[self.node].host.clone(), nodes[self.node].port);
        shared.stats.set_upstream_node(Some(self.addr.clone()));
        tracing::info!(upstream = %self.addr, "trying the next upstream node");
    }
}

/// The kind of an upstream failure, whatever node it came from: what the
/// log says once rather than at every attempt.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    Tls(rustls::Error),
    Refused(ConnectReturnCode),
    Io(std::io::ErrorKind),
    Other(std::mem::Discriminant<ConnectionError>),
}

impl Failure {
    fn of(e: &ConnectionError) -> Failure {
        if let Some(tls) = crate::security::tls::find_rustls_error(e) {
            return Failure::Tls(tls.clone());
        }
        match e {
            ConnectionError::ConnectionRefused(code) => Failure::Refused(*code),
            ConnectionError::Io(io) => Failure::Io(io.kind()),
            other => Failure::Other(std::mem::discriminant(other)),
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

    #[test]
    fn the_same_failure_from_another_node_is_the_same_kind() {
        let refused = |addr: &str| {
            let e = ConnectionError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("connect {addr}"),
            ));
            (Failure::of(&e), describe_error(&e, addr))
        };
        let (a, text_a) = refused("10.0.0.1:1883");
        let (b, text_b) = refused("10.0.0.2:1883");
        assert_eq!(a, b, "logged once, not per node");
        assert_ne!(text_a, text_b, "the stats still name the node");
        let login = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert_ne!(Failure::of(&login), a);
        assert!(describe_error(&login, "b:1883").contains("upstream.password_file"));
    }
}
