//! One MQTT 5 session with the gateway (rust-mqtt over an embassy-net TCP
//! socket): connect (logging in with the terminal's secret when it has
//! one), subscribe to `pressline/v1/gw/{terminal}/#`, then until the
//! connection fails: queue presses, publish what the terminal core wants
//! out (signed), apply durable acks, serve the OTA receiver, heartbeat.

use core::fmt::Write as _;
use core::num::NonZero;

use embassy_futures::select::{select3, Either3};
use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpAddress, Stack};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::channel::Receiver;
use embassy_time::{with_timeout, Duration, Instant, Timer};
use embedded_storage_async::nor_flash::{MultiwriteNorFlash, NorFlash};
use heapless::String;
use pressline_protocol::heartbeat::{HEARTBEAT_BUF_LEN, WILL_OFFLINE};
use pressline_protocol::ota_transfer::{self, Chunk, OtaCommand, SMALL_BUF_LEN};
use pressline_protocol::press::PRESS_BUF_LEN;
use pressline_protocol::topic::{
    AckTopic, HeartbeatTopic, OtaChunkTopic, OtaCommandTopic, OtaRequestTopic, OtaStatusTopic,
    PressTopic, TerminalStatusTopic,
};
use pressline_protocol::{Ack, Button};
use pressline_terminal_core::ota::OtaReceiver;
use pressline_terminal_core::{DeviceStatus, DurableTerminal};
use rust_mqtt::buffer::BumpBuffer;
use rust_mqtt::client::event::Event;
use rust_mqtt::client::options::{
    ConnectOptions, PublicationOptions, SubscriptionOptions, TopicReference, WillOptions,
};
use rust_mqtt::client::Client;
use rust_mqtt::config::KeepAlive;
use rust_mqtt::types::{MqttBinary, MqttString, TopicFilter, TopicName};

use crate::board::Board;
use crate::liveness::Liveness;
use crate::log::{log_error, log_info, log_warn};
use crate::settings::Settings;
use crate::{queue_press, uptime_ms};

const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);
/// The main loop wakes at least this often (to check in, see
/// [`crate::liveness`]).
const CHECK_IN_EVERY: Duration = Duration::from_secs(5);
/// Bound on every network step before the session runs (name lookup, TCP
/// connect, MQTT connect and subscribe).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// A socket that moves nothing for this long is dead (the MQTT keep-alive
/// is 30 s).
const SOCKET_TIMEOUT: Duration = Duration::from_secs(45);

async fn resolve(stack: Stack<'_>, host: &str) -> Result<IpAddress, &'static str> {
    if let Ok(ip) = host.parse::<core::net::Ipv4Addr>() {
        return Ok(IpAddress::Ipv4(ip));
    }
    let found = with_timeout(STEP_TIMEOUT, stack.dns_query(host, DnsQueryType::A))
        .await
        .map_err(|_| "gateway name lookup timed out")?
        .map_err(|_| "gateway name does not resolve")?;
    found.first().copied().ok_or("gateway name has no address")
}

/// `pressline/v1/gw/{terminal}/#`: everything the gateway sends a terminal.
struct GatewayFilter<'a>(&'a str);

impl core::fmt::Display for GatewayFilter<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{}/{}/#",
            pressline_protocol::topic::GATEWAY_ROOT,
            self.0
        )
    }
}

fn topic<const N: usize>(t: impl core::fmt::Display) -> String<N> {
    let mut s = String::new();
    let _ = write!(s, "{t}");
    s
}

fn name(topic: &str) -> Result<TopicName<'_>, &'static str> {
    TopicName::new(MqttString::try_from(topic).map_err(|_| "topic")?).ok_or("topic")
}

/// Unacknowledged QoS 1 publishes rust-mqtt keeps (its `SEND_MAXIMUM`).
const SEND_MAXIMUM: usize = 16;

/// Whether a QoS 1 publish fits now with `$spare` slots left over:
/// rust-mqtt refuses one more than it (and the gateway's Receive Maximum)
/// allows, and the session would end. The terminal core can hand out 16
/// presses at once and the OTA receiver reports besides, so publishing
/// waits for PUBACKs to free slots instead.
macro_rules! room {
    ($client:expr, $spare:expr) => {{
        let limit = SEND_MAXIMUM.min(usize::from($client.server_config().receive_maximum.get()));
        usize::from($client.session().active_outbound_publishes()) + $spare < limit
    }};
}

/// Publishes `$payload` on `$topic` (QoS 1 when `$reliable`, else QoS 0).
/// A macro: the client's type has too many parameters to spell out twice.
macro_rules! publish {
    ($client:expr, $topic:expr, $payload:expr, $reliable:expr) => {{
        let options = PublicationOptions::new(TopicReference::Name(name($topic.as_str())?));
        let options = if $reliable {
            options.at_least_once()
        } else {
            options
        };
        $client
            .publish(&options, (&$payload[..]).into())
            .await
            .map_err(|_e| {
                #[cfg(feature = "log")]
                ::log::debug!("publish failed: {:?}", _e);
                "publish failed"
            })?;
    }};
}

/// Runs one session until the connection fails (the error says why) or an
/// update asks for a reboot (`Ok`).
#[allow(clippy::too_many_arguments)]
pub async fn run<B, F, DFU, STATE, M, const Q: usize, const N: usize>(
    board: &mut B,
    stack: Stack<'_>,
    terminal: &mut DurableTerminal<F, Q>,
    ota: &mut OtaReceiver<'_, DFU, STATE>,
    settings: &Settings,
    presses: &Receiver<'_, M, Button, N>,
    liveness: &Liveness,
) -> Result<(), &'static str>
where
    B: Board,
    F: MultiwriteNorFlash,
    DFU: NorFlash,
    STATE: NorFlash,
    M: RawMutex,
{
    let address = resolve(stack, &settings.gateway_host).await?;
    let mut rx = [0u8; 1536];
    let mut tx = [0u8; 1536];
    let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
    socket.set_timeout(Some(SOCKET_TIMEOUT));
    // Small request/response messages (acks, chunk requests) must not wait
    // for the gateway's delayed ACK.
    socket.set_nagle_enabled(false);
    with_timeout(
        STEP_TIMEOUT,
        socket.connect((address, settings.gateway_port)),
    )
    .await
    .map_err(|_| "gateway connect timed out")?
    .map_err(|_| "cannot reach the gateway")?;
    liveness.check_in(uptime_ms());

    let id = settings.terminal.as_str();
    let status_topic: String<64> = topic(TerminalStatusTopic(id));
    let ack_topic: String<64> = topic(AckTopic(id));
    let press_topic: String<64> = topic(PressTopic(id));
    let heartbeat_topic: String<64> = topic(HeartbeatTopic(id));
    let ota_command_topic: String<64> = topic(OtaCommandTopic(id));
    let ota_chunk_topic: String<64> = topic(OtaChunkTopic(id));
    let ota_request_topic: String<64> = topic(OtaRequestTopic(id));
    let ota_status_topic: String<64> = topic(OtaStatusTopic(id));
    // Everything the gateway sends this terminal: acks and OTA messages.
    let gateway_filter: String<64> = topic(GatewayFilter(id));

    let mut buffer = [0u8; 2048];
    let mut bump = BumpBuffer::new(&mut buffer);
    let mut client: Client<'_, '_, TcpSocket<'_>, BumpBuffer<'_>, 1, 8, SEND_MAXIMUM, 0, 0, 0, 0> =
        Client::new(&mut bump);

    let will = WillOptions::new(
        name(status_topic.as_str())?,
        MqttBinary::from_slice(WILL_OFFLINE).map_err(|_| "will")?,
    )
    .at_least_once();
    let password = settings
        .secret
        .as_ref()
        .map(pressline_protocol::auth::mqtt_password);
    let mut options = ConnectOptions::new()
        .clean_start()
        .keep_alive(KeepAlive::Seconds(NonZero::new(30).ok_or("keep alive")?))
        .will(will);
    if let Some(password) = &password {
        // Closed-mode gateways admit registered terminals logging in as
        // themselves.
        options = options
            .user_name(MqttString::try_from(id).map_err(|_| "user name")?)
            .password(MqttBinary::from_slice(password.as_bytes()).map_err(|_| "password")?);
    }
    let client_id = MqttString::try_from(id).map_err(|_| "client id")?;
    with_timeout(
        STEP_TIMEOUT,
        client.connect(socket, &options, Some(client_id)),
    )
    .await
    .map_err(|_| "MQTT connect timed out")?
    .map_err(|_| "MQTT connect refused")?;

    let filter =
        TopicFilter::new(MqttString::try_from(gateway_filter.as_str()).map_err(|_| "topic")?)
            .ok_or("topic")?;
    with_timeout(STEP_TIMEOUT, async {
        client
            .subscribe(filter, &SubscriptionOptions::new().at_least_once())
            .await
            .map_err(|_| "subscribe failed")?;
        loop {
            match client
                .poll()
                .await
                .map_err(|_| "connection lost before SUBACK")?
            {
                Event::Suback(_) => return Ok::<(), &'static str>(()),
                _ => continue,
            }
        }
    })
    .await
    .map_err(|_| "subscribe timed out")??;
    // SAFETY: no event borrowing the buffer is alive any more.
    unsafe { client.buffer_mut().reset() };
    log_info!(
        "connected to the gateway at {}:{}",
        settings.gateway_host.as_str(),
        settings.gateway_port
    );
    terminal.handle_connected(uptime_ms());
    ota.handle_connected(uptime_ms());
    if ota.is_trial() {
        // Back on the gateway with the new image: keep it.
        match ota.confirm(terminal).await {
            Ok(()) => log_info!("new firmware confirmed"),
            Err(_) => log_error!("cannot confirm the new firmware (flash error)"),
        }
    }
    let mut next_heartbeat = Instant::now();

    loop {
        liveness.check_in(uptime_ms());
        // Publish what the core wants out (QoS 1; only its durable ack
        // counts), leaving a slot for the OTA receiver's reports.
        while room!(client, 1) {
            let Some(mut press) = terminal.poll_transmit(uptime_ms()) else {
                break;
            };
            if let Some(secret) = &settings.secret {
                press.mac = Some(pressline_protocol::auth::press_mac(
                    secret,
                    id,
                    press.id,
                    press.button,
                ));
            }
            let mut bytes = [0u8; PRESS_BUF_LEN];
            let Ok(payload) = press.encode(&mut bytes) else {
                continue;
            };
            publish!(client, press_topic, payload, true);
        }
        // Firmware update traffic: chunk requests, then status (a
        // "verifying" status goes out before the slow signature check).
        while let Some(request) = ota.poll_request(uptime_ms()) {
            let mut bytes = [0u8; SMALL_BUF_LEN];
            if let Ok(payload) = ota_transfer::encode(&request, &mut bytes) {
                publish!(client, ota_request_topic, payload, false);
            }
        }
        for pass in 0..2 {
            while room!(client, 0) {
                let Some(status) = ota.poll_status() else {
                    break;
                };
                let mut bytes = [0u8; SMALL_BUF_LEN];
                if let Ok(payload) = ota_transfer::encode(&status, &mut bytes) {
                    publish!(client, ota_status_topic, payload, true);
                }
            }
            if pass == 0 && ota.needs_verify() {
                ota.verify(terminal)
                    .await
                    .map_err(|_| "flash error while verifying the update")?;
            }
        }
        if ota.wants_reboot() {
            return Ok(()); // the caller reboots into the new image
        }
        if Instant::now() >= next_heartbeat {
            let device = DeviceStatus {
                firmware: ota.running(),
                battery_mv: board.battery_mv(),
                rssi_dbm: board.rssi_dbm().await,
                reset_reason: board.reset_reason(),
                unix_time_ms: None,
            };
            let hb = terminal.heartbeat(uptime_ms(), device);
            let mut bytes = [0u8; HEARTBEAT_BUF_LEN];
            let encoded = match &settings.secret {
                Some(secret) => hb.encode_signed(secret, id, &mut bytes),
                None => hb.encode(&mut bytes),
            };
            if let Ok(payload) = encoded {
                publish!(client, heartbeat_topic, payload, false);
            }
            next_heartbeat = Instant::now() + HEARTBEAT_EVERY;
        }

        let mut wake = next_heartbeat.min(Instant::now() + CHECK_IN_EVERY);
        if let Some(ms) = terminal.poll_timeout() {
            wake = wake.min(Instant::from_millis(ms));
        }
        if let Some(ms) = ota.poll_timeout() {
            wake = wake.min(Instant::from_millis(ms));
        }
        match select3(client.poll_header(), presses.receive(), Timer::at(wake)).await {
            Either3::First(header) => {
                let header = header.map_err(|_| "connection lost")?;
                let mut ack = None;
                if let Event::Publish(publish) = client
                    .poll_body(header)
                    .await
                    .map_err(|_| "connection lost")?
                {
                    let topic: &str = match &publish.topic {
                        TopicReference::Name(n) => n.as_ref().as_ref(),
                        _ => "",
                    };
                    let message = publish.message.as_ref();
                    #[cfg(feature = "log")]
                    ::log::debug!("received {} ({} bytes)", topic, message.len());
                    if topic == ack_topic.as_str() {
                        ack = Ack::decode(message).ok();
                    } else if topic == ota_command_topic.as_str() {
                        match ota_transfer::decode::<OtaCommand>(message) {
                            Ok(OtaCommand::Offer(offer)) => ota
                                .handle_offer(uptime_ms(), &offer, terminal)
                                .await
                                .map_err(|_| "flash error while accepting an update")?,
                            Ok(OtaCommand::Cancel { rollout }) => ota.handle_cancel(rollout),
                            Err(_) => log_warn!("undecodable OTA command"),
                        }
                    } else if topic == ota_chunk_topic.as_str() {
                        match ota_transfer::decode::<Chunk>(message) {
                            Ok(chunk) => ota
                                .handle_chunk(uptime_ms(), &chunk, terminal)
                                .await
                                .map_err(|_| "flash error while writing the update")?,
                            Err(_) => log_warn!("undecodable OTA chunk"),
                        }
                    }
                }
                // SAFETY: the event (which borrowed the buffer) is dropped.
                unsafe { client.buffer_mut().reset() };
                if let Some(ack) = ack {
                    terminal
                        .handle_ack(uptime_ms(), &ack)
                        .await
                        .map_err(|_| "flash error while releasing acked presses")?;
                    board.presses_released(&ack, terminal.queue_len());
                }
            }
            Either3::Second(button) => queue_press(board, terminal, button).await,
            Either3::Third(()) => {}
        }
    }
}
