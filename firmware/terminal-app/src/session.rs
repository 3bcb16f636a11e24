//! One MQTT 5 session with the gateway (rust-mqtt over an embassy-net TCP
//! socket): connect (logging in with the terminal's secret when it has
//! one), subscribe to `pressline/v1/gw/{terminal}/#`, then until the
//! connection fails: publish what the terminal core wants out (signed),
//! apply durable acks and power settings, serve the OTA receiver,
//! heartbeat. On batteries the session ends once everything is acked and
//! nothing else is going on ([`crate::power`]). The terminal
//! core is locked only for each core call, never across network I/O:
//! presses go on into flash meanwhile ([`crate::intake`]).

use core::fmt::Write as _;
use core::num::NonZero;

use embassy_futures::select::{select3, Either3};
use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpAddress, Stack};
use embassy_time::{with_timeout, Duration, Instant, Timer};
use embedded_storage_async::nor_flash::{MultiwriteNorFlash, NorFlash};
use heapless::String;
use pressline_protocol::heartbeat::{HEARTBEAT_BUF_LEN, WILL_OFFLINE};
use pressline_protocol::ota_transfer::{self, Chunk, OtaCommand, SMALL_BUF_LEN};
use pressline_protocol::power::PowerSettings;
use pressline_protocol::press::PRESS_BUF_LEN;
use pressline_protocol::topic::{
    AckTopic, HeartbeatTopic, OtaChunkTopic, OtaCommandTopic, OtaRequestTopic, OtaStatusTopic,
    PowerTopic, PressTopic, TerminalStatusTopic,
};
use pressline_protocol::Ack;
use pressline_terminal_core::ota::OtaReceiver;
use pressline_terminal_core::DeviceStatus;
use rust_mqtt::buffer::BumpBuffer;
use rust_mqtt::client::event::Event;
use rust_mqtt::client::options::{
    ConnectOptions, DisconnectOptions, PublicationOptions, SubscriptionOptions, TopicReference,
    WillOptions,
};
use rust_mqtt::client::Client;
use rust_mqtt::config::KeepAlive;
use rust_mqtt::types::{MqttBinary, MqttString, TopicFilter, TopicName};

use crate::board::Board;
use crate::intake::SharedTerminal;
use crate::liveness::Liveness;
use crate::log::{log_info, log_warn};
use crate::power::Power;
use crate::settings::Settings;
use crate::uptime_ms;

/// On batteries, a session with nothing left to do stays this long after
/// its last message in either direction: the gateway's answer to the
/// heartbeat (power settings, an update offer) comes in it.
const LINGER: Duration = Duration::from_secs(2);
/// On batteries, a session ends after this long whatever is left (an
/// update that stalls, a press the gateway never acks): the radio must not
/// stay on for good. What is left goes on at the next upload.
const BATTERY_SESSION_MAX: Duration = Duration::from_secs(180);
/// The main loop wakes at least this often (to check in, see
/// [`crate::liveness`]).
const CHECK_IN_EVERY: Duration = Duration::from_secs(5);
/// Bound on every network step before the session runs (name lookup, TCP
/// connect, MQTT connect and subscribe).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// A socket that moves nothing for this long is dead (the MQTT keep-alive
/// is 30 s).
const SOCKET_TIMEOUT: Duration = Duration::from_secs(45);
/// The keep-alive asked for in CONNECT (an MQTT 5 gateway may set
/// another in CONNACK, which is then the one kept: [`ping_when_idle`]).
const KEEP_ALIVE_SECS: u16 = 30;
/// A PINGREQ unanswered this long: the gateway is hung (its kernel still
/// acknowledges TCP), the session is ended and made again.
const PING_ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// Unacknowledged QoS 1 publishes rust-mqtt keeps (its `SEND_MAXIMUM`).
const SEND_MAXIMUM: usize = 16;

/// How a session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Ended {
    /// An update asks for a reboot.
    Reboot,
    /// On batteries: everything acked, the radio may go off.
    Idle,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SessionError {
    LookupTimedOut,
    NameDoesNotResolve,
    NameHasNoAddress,
    ConnectTimedOut,
    Unreachable,
    /// A provisioning setting does not fit MQTT (too long, bad characters).
    Setting(Setting),
    MqttConnectTimedOut,
    MqttConnectRefused,
    SubscribeFailed,
    LostBeforeSuback,
    SubscribeTimedOut,
    PublishFailed,
    ConnectionLost,
    /// The gateway did not answer a PINGREQ in time.
    PingUnanswered,
    /// The flash failed under the terminal core or the OTA receiver.
    Flash(FlashStep),
}

/// A provisioning setting that does not fit MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Setting {
    Topic,
    Will,
    KeepAlive,
    UserName,
    Password,
    ClientId,
}

/// What the flash was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FlashStep {
    VerifyingUpdate,
    AcceptingUpdate,
    WritingUpdate,
    ReleasingAcked,
}

impl SessionError {
    /// Words for the log.
    pub const fn as_str(self) -> &'static str {
        match self {
            SessionError::LookupTimedOut => "gateway name lookup timed out",
            SessionError::NameDoesNotResolve => "gateway name does not resolve",
            SessionError::NameHasNoAddress => "gateway name has no address",
            SessionError::ConnectTimedOut => "gateway connect timed out",
            SessionError::Unreachable => "cannot reach the gateway",
            SessionError::Setting(Setting::Topic) => "a topic does not fit MQTT (terminal id?)",
            SessionError::Setting(Setting::Will) => "the last will does not fit MQTT",
            SessionError::Setting(Setting::KeepAlive) => "keep-alive setting",
            SessionError::Setting(Setting::UserName) => {
                "the terminal id does not fit as a user name"
            }
            SessionError::Setting(Setting::Password) => "the password does not fit MQTT",
            SessionError::Setting(Setting::ClientId) => {
                "the terminal id does not fit as a client id"
            }
            SessionError::MqttConnectTimedOut => "MQTT connect timed out",
            SessionError::MqttConnectRefused => "MQTT connect refused",
            SessionError::SubscribeFailed => "subscribe failed",
            SessionError::LostBeforeSuback => "connection lost before SUBACK",
            SessionError::SubscribeTimedOut => "subscribe timed out",
            SessionError::PublishFailed => "publish failed",
            SessionError::ConnectionLost => "connection lost",
            SessionError::PingUnanswered => "the gateway did not answer a PINGREQ (hung?)",
            SessionError::Flash(FlashStep::VerifyingUpdate) => {
                "flash error while verifying the update"
            }
            SessionError::Flash(FlashStep::AcceptingUpdate) => {
                "flash error while accepting an update"
            }
            SessionError::Flash(FlashStep::WritingUpdate) => "flash error while writing the update",
            SessionError::Flash(FlashStep::ReleasingAcked) => {
                "flash error while releasing acked presses"
            }
        }
    }
}

type Mqtt<'a, 'c, 's> =
    Client<'a, 'c, TcpSocket<'s>, BumpBuffer<'c>, 1, 8, SEND_MAXIMUM, 0, 0, 0, 0>;

/// The topics of one terminal.
struct Topics {
    status: String<64>,
    ack: String<64>,
    press: String<64>,
    heartbeat: String<64>,
    ota_command: String<64>,
    ota_chunk: String<64>,
    ota_request: String<64>,
    ota_status: String<64>,
    power: String<64>,
    /// Everything the gateway sends this terminal: acks and OTA messages.
    gateway: String<64>,
}

impl Topics {
    fn of(id: &str) -> Topics {
        Topics {
            status: topic(TerminalStatusTopic(id)),
            ack: topic(AckTopic(id)),
            press: topic(PressTopic(id)),
            heartbeat: topic(HeartbeatTopic(id)),
            ota_command: topic(OtaCommandTopic(id)),
            ota_chunk: topic(OtaChunkTopic(id)),
            ota_request: topic(OtaRequestTopic(id)),
            ota_status: topic(OtaStatusTopic(id)),
            power: topic(PowerTopic(id)),
            gateway: topic(GatewayFilter(id)),
        }
    }
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

fn name(topic: &str) -> Result<TopicName<'_>, SessionError> {
    let bad = SessionError::Setting(Setting::Topic);
    TopicName::new(MqttString::try_from(topic).map_err(|_| bad)?).ok_or(bad)
}

/// Half the keep-alive in force (the gateway's from CONNACK, else ours):
/// how long the session may send nothing before a PINGREQ.
fn ping_when_idle(client: &Mqtt<'_, '_, '_>) -> Duration {
    let secs = match client.shared_config().keep_alive {
        KeepAlive::Seconds(s) => s.get(),
        KeepAlive::Infinite => KEEP_ALIVE_SECS,
    };
    Duration::from_millis(u64::from(secs) * 500)
}

/// Whether a QoS 1 publish fits now with `spare` slots left over:
/// rust-mqtt refuses one more than it (and the gateway's Receive Maximum)
/// allows, and the session would end. The terminal core can hand out 16
/// presses at once and the OTA receiver reports besides, so publishing
/// waits for PUBACKs to free slots instead.
fn room(client: &Mqtt<'_, '_, '_>, spare: usize) -> bool {
    let limit = SEND_MAXIMUM.min(usize::from(client.server_config().receive_maximum.get()));
    usize::from(client.session().active_outbound_publishes()) + spare < limit
}

/// Publishes `payload` on `topic` (QoS 1 when `reliable`, else QoS 0).
async fn publish(
    client: &mut Mqtt<'_, '_, '_>,
    topic: &str,
    payload: &[u8],
    reliable: bool,
) -> Result<(), SessionError> {
    let options = PublicationOptions::new(TopicReference::Name(name(topic)?));
    let options = if reliable {
        options.at_least_once()
    } else {
        options
    };
    client
        .publish(&options, payload.into())
        .await
        .map_err(|_e| {
            #[cfg(feature = "log")]
            ::log::debug!("publish failed: {:?}", _e);
            SessionError::PublishFailed
        })?;
    Ok(())
}

async fn resolve(stack: Stack<'_>, host: &str) -> Result<IpAddress, SessionError> {
    if let Ok(ip) = host.parse::<core::net::Ipv4Addr>() {
        return Ok(IpAddress::Ipv4(ip));
    }
    let found = with_timeout(STEP_TIMEOUT, stack.dns_query(host, DnsQueryType::A))
        .await
        .map_err(|_| SessionError::LookupTimedOut)?
        .map_err(|_| SessionError::NameDoesNotResolve)?;
    found.first().copied().ok_or(SessionError::NameHasNoAddress)
}

/// What a session works with.
pub struct Parts<
    'p,
    't,
    'o,
    B,
    F: MultiwriteNorFlash,
    DFU: NorFlash,
    STATE: NorFlash,
    const Q: usize,
> {
    pub board: &'p mut B,
    pub terminal: &'p SharedTerminal<'t, F, Q>,
    pub ota: &'p mut OtaReceiver<'o, DFU, STATE>,
    pub settings: &'p Settings,
    pub liveness: &'p Liveness,
    pub power: &'p Power,
}

/// Runs one session until the connection fails (the error says why), an
/// update asks for a reboot, or a terminal on batteries is done.
pub async fn run<B, F, DFU, STATE, const Q: usize>(
    parts: Parts<'_, '_, '_, B, F, DFU, STATE, Q>,
    stack: Stack<'_>,
) -> Result<Ended, SessionError>
where
    B: Board,
    F: MultiwriteNorFlash,
    DFU: NorFlash,
    STATE: NorFlash,
{
    let settings = parts.settings;
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
    .map_err(|_| SessionError::ConnectTimedOut)?
    .map_err(|_| SessionError::Unreachable)?;
    parts.liveness.check_in(uptime_ms());

    let topics = Topics::of(settings.terminal.as_str());
    let mut buffer = [0u8; 2048];
    let mut bump = BumpBuffer::new(&mut buffer);
    let mut client: Mqtt<'_, '_, '_> = Client::new(&mut bump);
    connect(&mut client, socket, settings, &topics).await?;
    subscribe(&mut client, &topics).await?;
    log_info!(
        "connected to the gateway at {}:{}",
        settings.gateway_host.as_str(),
        settings.gateway_port
    );
    let mut session = Session {
        parts,
        client,
        topics,
        next_heartbeat: Instant::now(),
        heartbeat_sent: false,
        acked: false,
        last_sent: Instant::now(),
        last_received: Instant::now(),
        started_at: Instant::now(),
        ping_sent_at: None,
    };
    session.started().await;
    session.serve().await
}

/// MQTT CONNECT: clean start, keep-alive, last will, login when the
/// terminal has a secret (closed-mode gateways admit registered terminals
/// logging in as themselves).
async fn connect<'s>(
    client: &mut Mqtt<'_, '_, 's>,
    socket: TcpSocket<'s>,
    settings: &Settings,
    topics: &Topics,
) -> Result<(), SessionError> {
    let setting = SessionError::Setting;
    let id = settings.terminal.as_str();
    let will = WillOptions::new(
        name(topics.status.as_str())?,
        MqttBinary::from_slice(WILL_OFFLINE).map_err(|_| setting(Setting::Will))?,
    )
    .at_least_once();
    let password = settings
        .secret
        .as_ref()
        .map(pressline_protocol::auth::mqtt_password);
    let keep_alive = NonZero::new(KEEP_ALIVE_SECS).ok_or(setting(Setting::KeepAlive))?;
    let mut options = ConnectOptions::new()
        .clean_start()
        .keep_alive(KeepAlive::Seconds(keep_alive))
        .will(will);
    if let Some(password) = &password {
        options = options
            .user_name(MqttString::try_from(id).map_err(|_| setting(Setting::UserName))?)
            .password(
                MqttBinary::from_slice(password.as_bytes())
                    .map_err(|_| setting(Setting::Password))?,
            );
    }
    let client_id = MqttString::try_from(id).map_err(|_| setting(Setting::ClientId))?;
    with_timeout(
        STEP_TIMEOUT,
        client.connect(socket, &options, Some(client_id)),
    )
    .await
    .map_err(|_| SessionError::MqttConnectTimedOut)?
    .map_err(|_| SessionError::MqttConnectRefused)?;
    Ok(())
}

/// One SUBSCRIBE for everything the gateway sends, waited on until its
/// SUBACK.
async fn subscribe(client: &mut Mqtt<'_, '_, '_>, topics: &Topics) -> Result<(), SessionError> {
    let bad = SessionError::Setting(Setting::Topic);
    let filter = TopicFilter::new(MqttString::try_from(topics.gateway.as_str()).map_err(|_| bad)?)
        .ok_or(bad)?;
    with_timeout(STEP_TIMEOUT, async {
        client
            .subscribe(filter, &SubscriptionOptions::new().at_least_once())
            .await
            .map_err(|_| SessionError::SubscribeFailed)?;
        loop {
            let event = client
                .poll()
                .await
                .map_err(|_| SessionError::LostBeforeSuback)?;
            if let Event::Suback(_) = event {
                return Ok::<(), SessionError>(());
            }
        }
    })
    .await
    .map_err(|_| SessionError::SubscribeTimedOut)??;
    // SAFETY: no event borrowing the buffer is alive any more.
    unsafe { client.buffer_mut().reset() };
    Ok(())
}

/// Power settings from the gateway; `true` if they changed.
fn apply_power_settings(power: &Power, message: &[u8]) -> bool {
    match PowerSettings::decode(message) {
        Ok(settings) => {
            let changed = power.with(|p| p.handle_settings(settings));
            if changed {
                log_info!(
                    "power mode {} (upload delay {} s)",
                    settings.mode.name(),
                    settings.upload_delay_secs
                );
            }
            changed
        }
        Err(_) => {
            log_warn!("undecodable power settings");
            false
        }
    }
}

/// A connected session.
struct Session<
    'p,
    't,
    'o,
    'a,
    'c,
    's,
    B,
    F: MultiwriteNorFlash,
    DFU: NorFlash,
    STATE: NorFlash,
    const Q: usize,
> {
    parts: Parts<'p, 't, 'o, B, F, DFU, STATE, Q>,
    client: Mqtt<'a, 'c, 's>,
    topics: Topics,
    next_heartbeat: Instant,
    /// This session sent a heartbeat / received a durable ack (what a
    /// trial image must have done before it is kept).
    heartbeat_sent: bool,
    acked: bool,
    /// When the last packet went out (for the keep-alive).
    last_sent: Instant,
    /// When the last packet came in (a battery session lingers after it).
    last_received: Instant,
    started_at: Instant,
    /// A PINGREQ waiting for its answer (any packet from the gateway is one).
    ping_sent_at: Option<Instant>,
}

impl<B, F, DFU, STATE, const Q: usize> Session<'_, '_, '_, '_, '_, '_, B, F, DFU, STATE, Q>
where
    B: Board,
    F: MultiwriteNorFlash,
    DFU: NorFlash,
    STATE: NorFlash,
{
    /// Connected: the core resends what is unacked.
    async fn started(&mut self) {
        let Parts { terminal, ota, .. } = &mut self.parts;
        terminal.lock().await.handle_connected(uptime_ms());
        ota.handle_connected(uptime_ms());
        if ota.is_trial() {
            log_info!(
                "trial of new firmware: kept after {} s up with a heartbeat and an ack",
                self.parts.settings.trial_window_ms / 1000
            );
        }
    }

    /// A trial image is kept once it has proven itself on this session: up
    /// for the health window, a heartbeat out, and a durable ack round trip
    /// (or nothing waiting for one). Until then a crash or a hang resets
    /// the board and the bootloader goes back to the previous image.
    async fn confirm_when_healthy(&mut self) {
        let (heartbeat_sent, acked) = (self.heartbeat_sent, self.acked);
        let Parts {
            terminal,
            ota,
            settings,
            ..
        } = &mut self.parts;
        if !ota.is_trial() || uptime_ms() < settings.trial_window_ms || !heartbeat_sent {
            return;
        }
        let mut terminal = terminal.lock().await;
        if !acked && terminal.queue_len() > 0 {
            return;
        }
        match ota.confirm(&mut **terminal).await {
            Ok(()) => log_info!("new firmware confirmed after its health window"),
            Err(_) => crate::log::log_error!("cannot confirm the new firmware (flash error)"),
        }
    }

    /// Until the connection fails, an update asks for a reboot, or a
    /// terminal on batteries is done.
    async fn serve(&mut self) -> Result<Ended, SessionError> {
        loop {
            self.parts.liveness.check_in(uptime_ms());
            self.publish_presses().await?;
            self.publish_ota().await?;
            if self.parts.ota.wants_reboot() {
                return Ok(Ended::Reboot); // the caller reboots into the new image
            }
            self.heartbeat().await?;
            self.keep_alive().await?;
            self.confirm_when_healthy().await;
            if self.done_on_battery().await {
                self.disconnect().await;
                return Ok(Ended::Idle);
            }
            let wake = self.next_wake().await;
            match select3(
                self.client.poll_header(),
                self.parts.terminal.pressed(),
                Timer::at(wake),
            )
            .await
            {
                Either3::First(header) => {
                    let header = header.map_err(|_| SessionError::ConnectionLost)?;
                    self.receive(header).await?;
                }
                // A press went into flash: out with it (above).
                Either3::Second(()) => {}
                // Only here, the socket having just had its turn (polled
                // first), is a PINGREQ past its time unanswered.
                Either3::Third(()) => {
                    if self
                        .ping_sent_at
                        .is_some_and(|sent| Instant::now() >= sent + PING_ANSWER_WITHIN)
                    {
                        return Err(SessionError::PingUnanswered);
                    }
                }
            }
        }
    }

    /// On batteries: every press acked, a heartbeat out, no update under
    /// way or on trial, nothing unacknowledged, and quiet for [`LINGER`];
    /// or up for [`BATTERY_SESSION_MAX`].
    async fn done_on_battery(&self) -> bool {
        let Parts {
            terminal,
            ota,
            power,
            ..
        } = &self.parts;
        if !power.with(|p| p.is_battery()) {
            return false;
        }
        if Instant::now() >= self.started_at + BATTERY_SESSION_MAX {
            log_warn!("battery session cut after 3 minutes; what is left goes at the next upload");
            return true;
        }
        if !self.heartbeat_sent
            || ota.is_busy()
            || ota.is_trial()
            || self.client.session().active_outbound_publishes() > 0
            || Instant::now() < self.last_sent.max(self.last_received) + LINGER
        {
            return false;
        }
        terminal.lock().await.queue_len() == 0
    }

    /// MQTT DISCONNECT (normal: the gateway publishes no last will) and
    /// the socket closed.
    async fn disconnect(&mut self) {
        if let Ok(socket) = self.client.disconnect(&DisconnectOptions::new()).await {
            let mut socket = socket;
            socket.close();
            let _ = with_timeout(Duration::from_secs(1), socket.flush()).await;
        }
    }

    /// MQTT keep-alive: a PINGREQ when nothing went out for half the
    /// keep-alive (the gateway closes a session silent for 1.5 times it).
    async fn keep_alive(&mut self) -> Result<(), SessionError> {
        let now = Instant::now();
        if self.ping_sent_at.is_none() && now >= self.last_sent + ping_when_idle(&self.client) {
            self.client
                .ping()
                .await
                .map_err(|_| SessionError::ConnectionLost)?;
            self.ping_sent_at = Some(now);
            self.last_sent = now;
        }
        Ok(())
    }

    /// What the core wants out (QoS 1; only its durable ack counts),
    /// leaving a slot for the OTA receiver's reports.
    async fn publish_presses(&mut self) -> Result<(), SessionError> {
        while room(&self.client, 1) {
            let polled = self.parts.terminal.lock().await.poll_transmit(uptime_ms());
            let Some(mut press) = polled else {
                break;
            };
            let settings = self.parts.settings;
            if let Some(secret) = &settings.secret {
                press.mac = Some(pressline_protocol::auth::press_mac(
                    secret,
                    settings.terminal.as_str(),
                    press.id,
                    press.button,
                ));
            }
            let mut bytes = [0u8; PRESS_BUF_LEN];
            let Ok(payload) = press.encode(&mut bytes) else {
                continue;
            };
            publish(&mut self.client, self.topics.press.as_str(), payload, true).await?;
            self.last_sent = Instant::now();
        }
        Ok(())
    }

    /// Firmware update traffic: chunk requests, then status (a "verifying"
    /// status goes out before the slow signature check).
    async fn publish_ota(&mut self) -> Result<(), SessionError> {
        while let Some(request) = self.parts.ota.poll_request(uptime_ms()) {
            let mut bytes = [0u8; SMALL_BUF_LEN];
            if let Ok(payload) = ota_transfer::encode(&request, &mut bytes) {
                let topic = self.topics.ota_request.as_str();
                publish(&mut self.client, topic, payload, false).await?;
                self.last_sent = Instant::now();
            }
        }
        for pass in 0..2 {
            while room(&self.client, 0) {
                let Some(status) = self.parts.ota.poll_status() else {
                    break;
                };
                let mut bytes = [0u8; SMALL_BUF_LEN];
                if let Ok(payload) = ota_transfer::encode(&status, &mut bytes) {
                    let topic = self.topics.ota_status.as_str();
                    publish(&mut self.client, topic, payload, true).await?;
                    self.last_sent = Instant::now();
                }
            }
            let Parts { terminal, ota, .. } = &mut self.parts;
            if pass == 0 && ota.needs_verify() {
                // The image is read and hashed without the core's lock.
                if let Some(checked) = ota.check_image().await {
                    ota.record_check(checked, &mut **terminal.lock().await)
                        .await
                        .map_err(|_| SessionError::Flash(FlashStep::VerifyingUpdate))?;
                }
            }
        }
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<(), SessionError> {
        if Instant::now() < self.next_heartbeat {
            return Ok(());
        }
        let Parts {
            board,
            terminal,
            ota,
            settings,
            power,
            ..
        } = &mut self.parts;
        let device = DeviceStatus {
            firmware: ota.running(),
            battery_mv: board.battery_mv(),
            rssi_dbm: board.rssi_dbm().await,
            reset_reason: board.reset_reason(),
            unix_time_ms: None,
        };
        let hb = terminal.lock().await.heartbeat(uptime_ms(), device);
        let awake_ms = board.awake_ms();
        let energy = power.with(|p| p.energy(uptime_ms(), awake_ms));
        let mut bytes = [0u8; HEARTBEAT_BUF_LEN];
        let signer = settings
            .secret
            .as_ref()
            .map(|s| (s, settings.terminal.as_str()));
        let encoded = hb.encode_with_energy(&energy, signer, &mut bytes);
        if let Ok(payload) = encoded {
            let topic = self.topics.heartbeat.as_str();
            publish(&mut self.client, topic, payload, false).await?;
            self.last_sent = Instant::now();
            self.heartbeat_sent = true;
        }
        let every = self.parts.power.with(|p| p.settings().heard_every_secs());
        self.next_heartbeat = Instant::now() + Duration::from_secs(u64::from(every));
        Ok(())
    }

    async fn next_wake(&self) -> Instant {
        let mut wake = self.next_heartbeat.min(Instant::now() + CHECK_IN_EVERY);
        if let Some(ms) = self.parts.terminal.lock().await.poll_timeout() {
            wake = wake.min(Instant::from_millis(ms));
        }
        if let Some(ms) = self.parts.ota.poll_timeout() {
            wake = wake.min(Instant::from_millis(ms));
        }
        wake = wake.min(match self.ping_sent_at {
            Some(sent) => sent + PING_ANSWER_WITHIN,
            None => self.last_sent + ping_when_idle(&self.client),
        });
        if self.parts.power.with(|p| p.is_battery()) {
            wake = wake.min(self.last_sent.max(self.last_received) + LINGER);
        }
        if self.parts.ota.is_trial() && uptime_ms() < self.parts.settings.trial_window_ms {
            wake = wake.min(Instant::from_millis(self.parts.settings.trial_window_ms));
        }
        wake
    }

    /// One message from the gateway: a durable ack, or OTA traffic.
    async fn receive(
        &mut self,
        header: rust_mqtt::header::FixedHeader,
    ) -> Result<(), SessionError> {
        let mut ack = None;
        let event = self
            .client
            .poll_body(header)
            .await
            .map_err(|_| SessionError::ConnectionLost)?;
        // Whatever the gateway sends shows it is alive (a PINGRESP too).
        self.ping_sent_at = None;
        self.last_received = Instant::now();
        if let Event::Publish(publish) = event {
            let topic: &str = match &publish.topic {
                TopicReference::Name(n) => n.as_ref().as_ref(),
                _ => "",
            };
            let message = publish.message.as_ref();
            #[cfg(feature = "log")]
            ::log::debug!("received {} ({} bytes)", topic, message.len());
            let Parts { terminal, ota, .. } = &mut self.parts;
            if topic == self.topics.ack.as_str() {
                ack = Ack::decode(message).ok();
            } else if topic == self.topics.power.as_str() {
                if apply_power_settings(self.parts.power, message) {
                    // The gateway learns them at once: its offline limit
                    // follows the heartbeat period they set.
                    self.next_heartbeat = Instant::now();
                    self.heartbeat_sent = false;
                }
            } else if topic == self.topics.ota_command.as_str() {
                match ota_transfer::decode::<OtaCommand>(message) {
                    Ok(OtaCommand::Offer(offer)) => ota
                        .handle_offer(uptime_ms(), &offer, &mut **terminal.lock().await)
                        .await
                        .map_err(|_| SessionError::Flash(FlashStep::AcceptingUpdate))?,
                    Ok(OtaCommand::Cancel { rollout }) => ota.handle_cancel(rollout),
                    Err(_) => log_warn!("undecodable OTA command"),
                }
            } else if topic == self.topics.ota_chunk.as_str() {
                match ota_transfer::decode::<Chunk>(message) {
                    Ok(chunk) => ota
                        .handle_chunk(uptime_ms(), &chunk, &mut **terminal.lock().await)
                        .await
                        .map_err(|_| SessionError::Flash(FlashStep::WritingUpdate))?,
                    Err(_) => log_warn!("undecodable OTA chunk"),
                }
            }
        }
        // SAFETY: the event (which borrowed the buffer) is dropped.
        unsafe { self.client.buffer_mut().reset() };
        if let Some(ack) = ack {
            let Parts {
                board, terminal, ..
            } = &mut self.parts;
            let mut terminal = terminal.lock().await;
            terminal
                .handle_ack(uptime_ms(), &ack)
                .await
                .map_err(|_| SessionError::Flash(FlashStep::ReleasingAcked))?;
            board.presses_released(&ack, terminal.queue_len());
            self.acked = true;
        }
        Ok(())
    }
}
