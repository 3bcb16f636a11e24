use crate::link::local::{LinkError, LinkRx, LinkTx};
use crate::link::network;
use crate::link::network::Network;
use crate::local::LinkBuilder;
use crate::protocol::{ConnAck, Connect, ConnectReturnCode, Login, Packet, Protocol};
use crate::router::{Event, Notification};
use crate::{ConnectionId, ConnectionSettings, Refusal};

use flume::{RecvError, SendError, Sender, TrySendError};
use std::cmp::min;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::time::error::Elapsed;
use tokio::{select, time};
use tracing::{trace, Span};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O")]
    Io(#[from] io::Error),
    #[error("Zero keep alive")]
    ZeroKeepAlive,
    #[error("Not connect packet")]
    NotConnectPacket(Packet),
    #[error("Network {0}")]
    Network(#[from] network::Error),
    #[error("Timeout")]
    Timeout(#[from] Elapsed),
    #[error("Channel send error")]
    Send(#[from] SendError<(ConnectionId, Event)>),
    #[error("Channel recv error")]
    Recv(#[from] RecvError),
    #[error("Got new session, disconnecting old one")]
    SessionEnd,
    #[error("Persistent session requires valid client id")]
    InvalidClientId,
    #[error("Unexpected router message")]
    NotConnectionAck,
    #[error("ConnAck error {0}")]
    ConnectionAck(String),
    #[error("Authentication error")]
    InvalidAuth,
    #[error("Channel try send error")]
    TrySend(#[from] TrySendError<(ConnectionId, Event)>),
    #[error("Link error = {0}")]
    Link(#[from] LinkError),
    /// Pressline patch: the CONNECT was refused (with a CONNACK where the
    /// protocol has one); the client id if it was read.
    #[error("Connection refused: {}", .0.as_str())]
    Refused(Refusal, Option<String>),
}

/// Pressline patch: the CONNACK code for a refusal, in the listener's protocol.
fn refusal_code(version: u8, refusal: Refusal) -> ConnectReturnCode {
    match (refusal, version) {
        (Refusal::BadCredentials, _) => ConnectReturnCode::BadUserNamePassword,
        (Refusal::NotAuthorized | Refusal::WillNotAuthorized, _) => ConnectReturnCode::NotAuthorized,
        (Refusal::ClientIdNotValid, _) => ConnectReturnCode::ClientIdentifierNotValid,
        (Refusal::ProtocolVersion, 5) => ConnectReturnCode::UnsupportedProtocolVersion,
        (Refusal::ProtocolVersion, _) => ConnectReturnCode::RefusedProtocolVersion,
        (_, 5) => ConnectReturnCode::ServerUnavailable,
        (_, _) => ConnectReturnCode::ServiceUnavailable,
    }
}

/// Pressline patch: answers a refused CONNECT with its CONNACK, then
/// returns the error that ends the connection.
async fn refuse<P: Protocol>(
    network: &mut Network<P>,
    refusal: Refusal,
    client_id: &str,
) -> Error {
    let code = refusal_code(network.version(), refusal);
    let ack = ConnAck {
        session_present: false,
        code,
    };
    // The client may already be gone; the refusal stands either way.
    let _ = network.write(Packet::ConnAck(ack, None)).await;
    Error::Refused(refusal, Some(client_id.to_owned()))
}

/// Orchestrates between Router and Network.
pub struct RemoteLink<P> {
    connect: Connect,
    pub(crate) connection_id: ConnectionId,
    network: Network<P>,
    link_tx: LinkTx,
    link_rx: LinkRx,
    notifications: VecDeque<Notification>,
    pub(crate) will_delay_interval: u32,
}

impl<P: Protocol> RemoteLink<P> {
    /// Pressline patch: this link's notification buffer (see
    /// `Event::LinkEnded`).
    pub(crate) fn identity(&self) -> Arc<parking_lot::Mutex<VecDeque<Notification>>> {
        self.link_rx.send_buffer()
    }

    pub async fn new(
        router_tx: Sender<(ConnectionId, Event)>,
        tenant_id: Option<String>,
        mut network: Network<P>,
        connect_packet: Packet,
        dynamic_filters: bool,
        assigned_client_id: Option<String>,
    ) -> Result<RemoteLink<P>, Error> {
        let Packet::Connect(connect, props, lastwill, lastwill_props, _) = connect_packet else {
            return Err(Error::NotConnectPacket(connect_packet));
        };

        // Register this connection with the router. Router replys with ack which if ok will
        // start the link. Router can sometimes reject the connection (ex max connection limit)
        let client_id = assigned_client_id.as_ref().unwrap_or(&connect.client_id);
        let clean_session = connect.clean_session;

        let topic_alias_max = props.as_ref().and_then(|p| p.topic_alias_max);
        let session_expiry = props
            .as_ref()
            .and_then(|p| p.session_expiry_interval)
            .unwrap_or(0);

        let delay_interval = lastwill_props
            .as_ref()
            .and_then(|f| f.delay_interval)
            .unwrap_or(0);

        // The Server delays publishing the Client’s Will Message until
        // the Will Delay Interval has passed or the Session ends, whichever happens first
        let will_delay_interval = min(session_expiry, delay_interval);

        let built = LinkBuilder::new(client_id, router_tx)
            .tenant_id(tenant_id)
            .clean_session(clean_session)
            .last_will(lastwill)
            .last_will_properties(lastwill_props)
            .dynamic_filters(dynamic_filters)
            .topic_alias_max(topic_alias_max.unwrap_or(0))
            .build();
        // Pressline patch: the router refuses a connection only when it is
        // at its connection limit (the client id was checked before); say
        // so in a CONNACK instead of closing the socket silently.
        let (link_tx, link_rx, notification) = match built {
            Ok(built) => built,
            Err(LinkError::Recv(_)) => {
                return Err(refuse(&mut network, Refusal::ServerUnavailable, client_id).await)
            }
            Err(e) => return Err(e.into()),
        };

        let id = link_rx.id();
        Span::current().record("connection_id", id);

        if let Some(mut packet) = notification.into() {
            if let Packet::ConnAck(_ack, props) = &mut packet {
                let mut new_props = props.clone().unwrap_or_default();
                new_props.assigned_client_identifier = assigned_client_id;
                *props = Some(new_props);
                network.write(packet).await?;
            }
        }

        Ok(RemoteLink {
            connect,
            connection_id: id,
            network,
            link_tx,
            link_rx,
            // Pressline patch: grow on demand (was with_capacity(100)).
            notifications: VecDeque::new(),
            will_delay_interval,
        })
    }

    pub async fn start(&mut self) -> Result<(), Error> {
        self.network.set_keepalive(self.connect.keep_alive);

        // Note:
        // Shouldn't result in bounded queue deadlocks because of blocking n/w send
        loop {
            select! {
                o = self.network.read() => {
                    let packet = o?;
                    let len = {
                        let mut buffer = self.link_tx.buffer();
                        buffer.push_back(packet);
                        self.network.readv(&mut buffer)?;
                        buffer.len()
                    };

                    trace!("Packets read from network, count = {}", len);
                    self.link_tx.notify().await?;
                }
                // Receive from router when previous when state isn't in collision
                // due to previously received data request
                o = self.link_rx.exchange(&mut self.notifications) => {
                    o?;
                    let mut packets = VecDeque::new();
                    let mut unscheduled = false;

                    // Pressline patch: take the deque rather than drain it, so
                    // its memory is freed here and the router's next exchange
                    // starts from an empty, unallocated one: an idle
                    // connection holds no notification buffer.
                    for notif in std::mem::take(&mut self.notifications) {
                        if let Some(packet) = notif.into() {
                            packets.push_back(packet);
                        } else {
                            unscheduled = true;
                        }

                    }
                    self.network.writev(packets).await?;
                    if unscheduled {
                        self.link_rx.wake().await?;
                    }
                }
            }
        }
    }
}

/// Read MQTT connect packet from network and verify it.
/// authentication and checks are done here.
pub async fn mqtt_connect<P>(
    config: Arc<ConnectionSettings>,
    network: &mut Network<P>,
) -> Result<Packet, Error>
where
    P: Protocol,
{
    // Wait for MQTT connect packet and error out if it's not received in time to prevent
    // DOS attacks by filling total connections that the server can handle with idle open
    // connections which results in server rejecting new connections
    let connection_timeout_ms = config.connection_timeout_ms.into();
    let read = time::timeout(Duration::from_millis(connection_timeout_ms), network.read()).await;
    // Pressline patch: every way a CONNECT can fail is a named refusal, with
    // a CONNACK where the protocol has one (the client can show why).
    let packet = match read {
        Ok(Ok(packet)) => packet,
        Err(_) => return Err(Error::Refused(Refusal::ConnectTimeout, None)),
        Ok(Err(network::Error::Protocol(crate::protocol::Error::InvalidProtocolLevel(level)))) => {
            // MQTT 3.1.1 §3.1.2.2: CONNACK 0x01 for a level the server does
            // not speak. Sent in 3.1.1's encoding, which 3.1, 3.1.1 clients
            // read; on the MQTT 5 listener a level-5-only answer (0x84)
            // would be unreadable to the 3.1.1 client that sent it.
            let _ = network.write_raw(&[0x20, 0x02, 0x00, 0x01]).await;
            tracing::debug!(level, "unsupported protocol level");
            return Err(Error::Refused(Refusal::ProtocolVersion, None));
        }
        Ok(Err(network::Error::Protocol(_))) => {
            return Err(Error::Refused(Refusal::MalformedConnect, None))
        }
        Ok(Err(e)) => return Err(e.into()),
    };

    let (connect, _props, login, will) = match packet {
        Packet::Connect(ref connect, ref props, ref will, _, ref login) => {
            (connect, props, login, will)
        }
        _ => return Err(Error::Refused(Refusal::NotConnect, None)),
    };

    // Pressline patch: the span names the client in every line logged for
    // this connection; a client id may be 64 KiB, so at most 64 bytes of it.
    let mut shown = connect.client_id.len().min(64);
    while !connect.client_id.is_char_boundary(shown) {
        shown -= 1;
    }
    Span::current().record("client_id", &connect.client_id[..shown]);

    // Pressline patch: keep-alive 0 turns the mechanism off (MQTT 3.1.1
    // §3.1.2.10); upstream refused such clients without a CONNACK.

    // The router refuses these ids without a word; refuse them here with
    // CONNACK 0x02 / 0x85 instead.
    if "+$#/".chars().any(|c| connect.client_id.contains(c))
        || config.reserved_client_ids.iter().any(|id| *id == connect.client_id)
    {
        return Err(refuse(network, Refusal::ClientIdNotValid, &connect.client_id).await);
    }

    if let Err(refusal) = handle_auth(config.clone(), login.as_ref(), &connect.client_id).await {
        return Err(refuse(network, refusal, &connect.client_id).await);
    }

    if let (Some(will), Some(authorize)) = (will, &config.publish_authorizer) {
        let topic = String::from_utf8_lossy(&will.topic);
        if !(authorize.0)(&connect.client_id, &topic, will.retain) {
            return Err(refuse(network, Refusal::WillNotAuthorized, &connect.client_id).await);
        }
    }

    let empty_client_id = connect.client_id.is_empty();
    let clean_session = connect.clean_session;

    if empty_client_id && !clean_session {
        return Err(refuse(network, Refusal::ClientIdNotValid, "").await);
    }

    // Ok((connect, props, lastwill, lastwill_props))
    Ok(packet)
}

async fn handle_auth(
    config: Arc<ConnectionSettings>,
    login: Option<&Login>,
    client_id: &str,
) -> Result<(), Refusal> {
    if config.auth.is_none() && config.external_auth.is_none() {
        return Ok(());
    }

    // if authentication is configured and connect packet doesn't have login details
    // return an error, unless the embedding application admits this client
    // without one (Pressline patch).
    let Some(login) = login else {
        return match &config.anonymous {
            Some(anonymous) if (anonymous.0)(client_id) => Ok(()),
            _ => Err(Refusal::NotAuthorized),
        };
    };

    let username = &login.username;
    let password = &login.password;

    if let Some(auth) = &config.external_auth {
        if !auth(
            client_id.to_owned(),
            username.to_owned(),
            password.to_owned(),
        )
        .await
        {
            return Err(Refusal::BadCredentials);
        }

        return Ok(());
    }

    if let Some(pairs) = &config.auth {
        if let Some(stored_password) = pairs.get(username) {
            if stored_password.as_bytes().ct_eq(password.as_bytes()).into() {
                return Ok(());
            }
        }

        return Err(Refusal::BadCredentials);
    }

    Err(Refusal::BadCredentials)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use crate::{protocol::Login, ConnectionSettings};

    use super::handle_auth;

    fn config() -> ConnectionSettings {
        ConnectionSettings {
            connection_timeout_ms: 0,
            max_payload_size: 0,
            max_inflight_count: 0,
            auth: None,
            external_auth: None,
            dynamic_filters: false,
            on_refusal: None,
            publish_authorizer: None,
            reserved_client_ids: Vec::new(),
            anonymous: None,
        }
    }

    fn login() -> Login {
        Login {
            username: "u".to_owned(),
            password: "p".to_owned(),
        }
    }

    #[tokio::test]
    async fn no_login_no_auth() {
        let cfg = Arc::new(config());
        let r = handle_auth(cfg, None, "").await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn some_login_no_auth() {
        let cfg = Arc::new(config());
        let login = login();
        let r = handle_auth(cfg, Some(&login), "").await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn login_matches_static_auth() {
        let login = login();
        let mut map = HashMap::<String, String>::new();
        map.insert(login.username.clone(), login.password.clone());

        let mut cfg = config();
        cfg.auth = Some(map);

        let r = handle_auth(Arc::new(cfg), Some(&login), "").await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn login_fails_static_no_external() {
        let login = login();
        let mut map = HashMap::<String, String>::new();
        map.insert("wrong".to_owned(), "wrong".to_owned());

        let mut cfg = config();
        cfg.auth = Some(map);

        let r = handle_auth(Arc::new(cfg), Some(&login), "").await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn login_fails_static_matches_external() {
        let login = login();

        let mut map = HashMap::<String, String>::new();
        map.insert("wrong".to_owned(), "wrong".to_owned());

        let dynamic = |_: String, _: String, _: String| async { true };

        let mut cfg = config();
        cfg.auth = Some(map);
        cfg.set_auth_handler(dynamic);

        let r = handle_auth(Arc::new(cfg), Some(&login), "").await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn login_fails_static_fails_external() {
        let login = login();

        let mut map = HashMap::<String, String>::new();
        map.insert("wrong".to_owned(), "wrong".to_owned());

        let dynamic = |_: String, _: String, _: String| async { false };

        let mut cfg = config();
        cfg.auth = Some(map);
        cfg.set_auth_handler(dynamic);

        let r = handle_auth(Arc::new(cfg), Some(&login), "").await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn external_auth_clousre_or_fnptr_type_check_or_fail_compile() {
        let closure = |_: String, _: String, _: String| async { false };
        async fn fnptr(_: String, _: String, _: String) -> bool {
            true
        }

        let mut cfg = config();
        cfg.set_auth_handler(closure);
        cfg.set_auth_handler(fnptr);
    }
}
