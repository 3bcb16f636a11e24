//! Pressline terminal firmware for the Raspberry Pi Pico W.
//!
//! Four buttons on GP2–GP5 (very unhappy … very happy, to ground, internal
//! pull-ups). Presses go through the shared terminal core
//! ([`pressline_terminal_core::DurableTerminal`]): numbered, queued in flash
//! before anything else happens, published at QoS 1 over MQTT 5 (rust-mqtt)
//! to the site gateway, and forgotten only when the gateway's durable ack
//! names them. Heartbeats every 30 s; an MQTT last will announces the
//! terminal's disappearance.
//!
//! Firmware updates: the terminal-core OTA receiver pulls an offered release
//! into the DFU partition in 1 KiB chunks, embassy-boot checks its signature
//! with the release key built in at compile time (`PRESSLINE_OTA_PUBLIC_KEY`,
//! the hex `signing.pub`) and marks it; after the reboot the bootloader runs
//! it as a trial, and the firmware confirms it once it is back on the
//! gateway. A trial that never gets there is reverted at the next reset.
//!
//! # Layout
//! - [`flash_map`]: where everything lives in flash.
//! - [`settings`]: provisioning record (or build-time fallback).
//! - [`wifi_firmware`]: the CYW43439 blobs.
//! - this file: tasks (Wi-Fi driver, network stack, buttons) and the MQTT
//!   session loop.
#![no_std]
#![no_main]

mod flash_map;
mod settings;
mod wifi_firmware;

use core::fmt::Write as _;
use core::num::NonZero;

use cyw43::JoinOptions;
use cyw43_pio::{PioSpi, DEFAULT_CLOCK_DIVIDER};
use defmt::{error, info, warn, Display2Format};
use embassy_boot_rp::{FirmwareUpdater, FirmwareUpdaterConfig};
use embassy_embedded_hal::flash::partition::Partition;
use embassy_executor::Spawner;
use embassy_futures::select::{select3, Either3};
use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::TcpSocket;
use embassy_net::{Config as NetConfig, IpAddress, Stack, StackResources};
use embassy_rp::flash::{Async, Flash};
use embassy_rp::gpio::{Input, Level, Output, Pull};
use embassy_rp::peripherals::{DMA_CH0, DMA_CH1, FLASH, PIO0};
use embassy_rp::pio::{InterruptHandler as PioInterruptHandler, Pio};
use embassy_rp::watchdog::{ResetReason as RpResetReason, Watchdog};
use embassy_rp::{bind_interrupts, dma};
use embassy_sync::blocking_mutex::raw::{CriticalSectionRawMutex, NoopRawMutex};
use embassy_sync::channel::Channel;
use embassy_sync::mutex::Mutex;
use embassy_time::{Duration, Instant, Timer};
use heapless::String;
use pressline_protocol::heartbeat::{HEARTBEAT_BUF_LEN, WILL_OFFLINE};
use pressline_protocol::ota_transfer::{self, Chunk, OtaCommand, SMALL_BUF_LEN};
use pressline_protocol::press::PRESS_BUF_LEN;
use pressline_protocol::topic::{
    AckTopic, HeartbeatTopic, OtaChunkTopic, OtaCommandTopic, OtaRequestTopic, OtaStatusTopic,
    PressTopic, TerminalStatusTopic,
};
use pressline_protocol::{Ack, Button, FirmwareVersion, ResetReason};
use pressline_terminal_core::ota::{OtaConfig, OtaReceiver};
use pressline_terminal_core::{
    Debouncer, DeviceStatus, DurableTerminal, FlashLayout, PressError, SessionConfig,
};
use rust_mqtt::buffer::BumpBuffer;
use rust_mqtt::client::event::Event;
use rust_mqtt::client::options::{
    ConnectOptions, PublicationOptions, SubscriptionOptions, TopicReference, WillOptions,
};
use rust_mqtt::client::Client;
use rust_mqtt::config::KeepAlive;
use rust_mqtt::types::{MqttBinary, MqttString, TopicFilter, TopicName};
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

use crate::flash_map::{FLASH_SIZE, PRESS_QUEUE, PROVISIONING, TERMINAL_STATE};
use crate::settings::Settings;

bind_interrupts!(struct Irqs {
    PIO0_IRQ_0 => PioInterruptHandler<PIO0>;
    DMA_IRQ_0 => dma::InterruptHandler<DMA_CH0>, dma::InterruptHandler<DMA_CH1>;
});

/// Presses the queue holds (RAM mirror of the flash queue, 32 bytes each;
/// the 64 KiB flash queue itself has room for more).
const QUEUE_CAPACITY: usize = 512;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);

type TerminalFlash = Flash<'static, FLASH, Async, FLASH_SIZE>;
/// The flash shared by the press queue and the update partitions.
type SharedFlash = Partition<'static, NoopRawMutex, TerminalFlash>;
type Terminal = DurableTerminal<SharedFlash, QUEUE_CAPACITY>;
type Ota = OtaReceiver<'static, SharedFlash, SharedFlash>;

/// The bootloader state buffer: the flash's write and read sizes.
const STATE_ALIGN: usize = {
    let w = <SharedFlash as embedded_storage_async::nor_flash::NorFlash>::WRITE_SIZE;
    let r = <SharedFlash as embedded_storage_async::nor_flash::ReadNorFlash>::READ_SIZE;
    if w > r {
        w
    } else {
        r
    }
};

/// Chunks asked for at a time: fits the MQTT receive buffer.
const OTA_CHUNK: u32 = 1024;

/// The release signing key built in at compile time (all zeros when none
/// was given: every offer is then refused as untrusted, and says so).
const OTA_PUBLIC_KEY: [u8; 32] = match option_env!("PRESSLINE_OTA_PUBLIC_KEY") {
    Some(hex) => parse_key(hex.as_bytes()),
    None => [0; 32],
};

const fn parse_key(hex: &[u8]) -> [u8; 32] {
    assert!(
        hex.len() >= 64,
        "PRESSLINE_OTA_PUBLIC_KEY: 64 hex characters"
    );
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("PRESSLINE_OTA_PUBLIC_KEY: not hex"),
        }
    }
    let mut key = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        key[i] = nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]);
        i += 1;
    }
    key
}

fn firmware_version() -> FirmwareVersion {
    FirmwareVersion::parse(env!("CARGO_PKG_VERSION")).unwrap_or(FirmwareVersion {
        major: 0,
        minor: 0,
        patch: 0,
    })
}

/// Debounced presses from the button task to the session loop.
static PRESSES: Channel<CriticalSectionRawMutex, Button, 32> = Channel::new();

fn uptime_ms() -> u64 {
    Instant::now().as_millis()
}

#[embassy_executor::task]
async fn wifi_task(
    runner: cyw43::Runner<'static, cyw43::SpiBus<Output<'static>, PioSpi<'static, PIO0, 0>>>,
) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, cyw43::NetDriver<'static>>) -> ! {
    runner.run().await
}

/// Samples the four buttons every 5 ms and debounces them.
#[embassy_executor::task]
async fn buttons_task(pins: [Input<'static>; 4]) -> ! {
    let mut debouncers = [Debouncer::default(); 4];
    loop {
        let now = uptime_ms();
        for ((pin, debouncer), button) in pins.iter().zip(debouncers.iter_mut()).zip(Button::ALL) {
            if debouncer.handle_level(now, pin.is_low()) && PRESSES.try_send(button).is_err() {
                warn!("press channel full; press dropped before queueing");
            }
        }
        Timer::after_millis(5).await;
    }
}

/// Halts with a log line every minute: the terminal cannot work.
async fn halt(why: &str) -> ! {
    loop {
        error!("terminal halted: {}", why);
        Timer::after_secs(60).await;
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_rp::init(Default::default());
    let reset_reason = match Watchdog::new(p.WATCHDOG).reset_reason() {
        Some(RpResetReason::TimedOut) => ResetReason::Watchdog,
        Some(RpResetReason::Forced) => ResetReason::Software,
        None => ResetReason::PowerOn,
    };
    let mut flash: TerminalFlash = Flash::new(p.FLASH, p.DMA_CH1, Irqs);

    let mut sector = [0u8; 512];
    if flash.read(PROVISIONING, &mut sector).await.is_err() {
        halt("cannot read the provisioning sector").await;
    }
    let settings = match Settings::load(&sector) {
        Ok((settings, source)) => {
            info!(
                "terminal {} at site {} ({})",
                settings.terminal.as_str(),
                settings.site.as_str(),
                source
            );
            settings
        }
        Err(e) => {
            error!("not provisioned: {}", Display2Format(&e));
            halt("provision it with `fleet provision` (or build with PRESSLINE_* variables)").await
        }
    };
    let mut uid = [0u8; 8];
    let _ = flash.blocking_unique_id(&mut uid);

    static SHARED: StaticCell<Mutex<NoopRawMutex, TerminalFlash>> = StaticCell::new();
    let shared: &'static Mutex<NoopRawMutex, TerminalFlash> = SHARED.init(Mutex::new(flash));
    // The whole chip, so the press queue keeps its absolute offsets.
    let flash = Partition::new(shared, 0, FLASH_SIZE as u32);
    let layout = FlashLayout {
        state: TERMINAL_STATE,
        queue: PRESS_QUEUE,
    };
    let config = SessionConfig {
        ack_timeout_ms: 5_000,
        max_in_flight: 16,
    };
    // The terminal lives in a static, not in this task's future (which would
    // otherwise hold its queue twice: during boot and after).
    static TERMINAL: StaticCell<Terminal> = StaticCell::new();
    let terminal: &'static mut Terminal = match DurableTerminal::boot(flash, layout, config).await {
        Ok(t) => TERMINAL.init(t),
        Err(e) => {
            error!("press queue unreadable: {}", defmt::Debug2Format(&e));
            halt("flash storage failed").await
        }
    };
    info!(
        "boot {}: {} presses restored from flash",
        terminal.boot_number(),
        terminal.restored()
    );
    static ALIGNED: StaticCell<[u8; STATE_ALIGN]> = StaticCell::new();
    let updater = FirmwareUpdater::new(
        FirmwareUpdaterConfig::from_linkerfile(shared, shared),
        ALIGNED.init([0; STATE_ALIGN]),
    );
    let ota_config = OtaConfig {
        public_key: OTA_PUBLIC_KEY,
        board: "pico-w",
        max_image: flash_map::ACTIVE.end - flash_map::ACTIVE.start,
        chunk_size: OTA_CHUNK,
        request_timeout_ms: 5_000,
        progress_step: 10,
    };
    static OTA: StaticCell<Ota> = StaticCell::new();
    let ota: &'static mut Ota =
        match OtaReceiver::boot(updater, ota_config, firmware_version(), terminal).await {
            Ok(o) => OTA.init(o),
            Err(e) => {
                error!("update state unreadable: {}", defmt::Debug2Format(&e));
                halt("flash storage failed").await
            }
        };
    if ota.is_trial() {
        info!(
            "trial boot of {}: confirming once back on the gateway",
            env!("CARGO_PKG_VERSION")
        );
    }

    let blobs = match wifi_firmware::load() {
        Ok(b) => b,
        Err(why) => halt(why).await,
    };
    let pwr = Output::new(p.PIN_23, Level::Low);
    let cs = Output::new(p.PIN_25, Level::High);
    let mut pio = Pio::new(p.PIO0, Irqs);
    let spi = PioSpi::new(
        &mut pio.common,
        pio.sm0,
        DEFAULT_CLOCK_DIVIDER,
        pio.irq0,
        cs,
        p.PIN_24,
        p.PIN_29,
        dma::Channel::new(p.DMA_CH0, Irqs),
    );
    static WIFI_STATE: StaticCell<cyw43::State> = StaticCell::new();
    let (net_device, mut control, runner) = cyw43::new(
        WIFI_STATE.init(cyw43::State::new()),
        pwr,
        spi,
        blobs.firmware,
        blobs.nvram,
    )
    .await;
    spawner.spawn(wifi_task(runner).expect("wifi task"));
    control.init(blobs.clm).await;
    control
        .set_power_management(cyw43::PowerManagementMode::PowerSave)
        .await;

    let seed = u64::from_le_bytes(uid) ^ ((terminal.boot_number() as u64) << 32);
    static RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();
    let (stack, net_runner) = embassy_net::new(
        net_device,
        NetConfig::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(net_task(net_runner).expect("net task"));
    spawner.spawn(
        buttons_task([
            Input::new(p.PIN_2, Pull::Up),
            Input::new(p.PIN_3, Pull::Up),
            Input::new(p.PIN_4, Pull::Up),
            Input::new(p.PIN_5, Pull::Up),
        ])
        .expect("buttons task"),
    );

    let mut backoff = Duration::from_secs(1);
    loop {
        if !stack.is_link_up() {
            let options = if settings.wifi_password.is_empty() {
                JoinOptions::new_open()
            } else {
                JoinOptions::new(settings.wifi_password.as_bytes())
            };
            if let Err(e) = control.join(&settings.wifi_ssid, options).await {
                warn!("Wi-Fi join failed ({}); retrying", defmt::Debug2Format(&e));
                Timer::after(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
            info!("Wi-Fi joined; waiting for DHCP");
        }
        stack.wait_config_up().await;
        match run_session(terminal, ota, &mut control, stack, &settings, reset_reason).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(why) => warn!("gateway session ended: {}", why),
        }
        terminal.handle_disconnected(uptime_ms());
        ota.handle_disconnected(uptime_ms());
        if ota.wants_reboot() {
            info!("rebooting into the new firmware");
            Timer::after_millis(200).await;
            cortex_m::peripheral::SCB::sys_reset();
        }
        // Presses keep being queued meanwhile by the button task's channel.
        Timer::after(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn resolve(stack: Stack<'static>, host: &str) -> Result<IpAddress, &'static str> {
    if let Ok(ip) = host.parse::<core::net::Ipv4Addr>() {
        return Ok(IpAddress::Ipv4(ip));
    }
    let found = stack
        .dns_query(host, DnsQueryType::A)
        .await
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

/// Publishes `$payload` on `$topic` (QoS 1 when `$reliable`, else QoS 0).
/// A macro: the client's type has too many parameters to spell out twice.
macro_rules! publish {
    ($client:expr, $topic:expr, $payload:expr, $reliable:expr) => {{
        let name = TopicName::new(MqttString::try_from($topic.as_str()).map_err(|_| "topic")?)
            .ok_or("topic")?;
        let options = PublicationOptions::new(TopicReference::Name(name));
        let options = if $reliable {
            options.at_least_once()
        } else {
            options
        };
        $client
            .publish(&options, (&$payload[..]).into())
            .await
            .map_err(|_| "publish failed")?;
    }};
}

fn topic<const N: usize>(t: impl core::fmt::Display) -> String<N> {
    let mut s = String::new();
    let _ = write!(s, "{t}");
    s
}

/// One MQTT session with the gateway: connect, subscribe to acks, then
/// queue presses, publish what the core wants out, apply acks, heartbeat.
async fn run_session(
    terminal: &mut Terminal,
    ota: &mut Ota,
    control: &mut cyw43::Control<'static>,
    stack: Stack<'static>,
    settings: &Settings,
    reset_reason: ResetReason,
) -> Result<(), &'static str> {
    let address = resolve(stack, &settings.gateway_host).await?;
    let mut rx = [0u8; 1536];
    let mut tx = [0u8; 1536];
    let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
    socket.set_timeout(Some(Duration::from_secs(90)));
    // Small request/response messages (acks, chunk requests) must not wait
    // for the gateway's delayed ACK.
    socket.set_nagle_enabled(false);
    socket
        .connect((address, settings.gateway_port))
        .await
        .map_err(|_| "cannot reach the gateway")?;

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
    let mut client: Client<'_, '_, TcpSocket<'_>, BumpBuffer<'_>, 1, 8, 16, 0, 0, 0, 0> =
        Client::new(&mut bump);

    let name = |s: &'static str| s;
    let _ = name;
    let will_topic =
        TopicName::new(MqttString::try_from(status_topic.as_str()).map_err(|_| "topic")?)
            .ok_or("topic")?;
    let will = WillOptions::new(
        will_topic,
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
        // Closed-mode gateways admit registered terminals logging in as themselves.
        options = options
            .user_name(MqttString::try_from(id).map_err(|_| "user name")?)
            .password(MqttBinary::from_slice(password.as_bytes()).map_err(|_| "password")?);
    }
    let client_id = MqttString::try_from(id).map_err(|_| "client id")?;
    client
        .connect(socket, &options, Some(client_id))
        .await
        .map_err(|_| "MQTT connect refused")?;

    let filter =
        TopicFilter::new(MqttString::try_from(gateway_filter.as_str()).map_err(|_| "topic")?)
            .ok_or("topic")?;
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
            Event::Suback(_) => break,
            _ => continue,
        }
    }
    // SAFETY: no event borrowing the buffer is alive any more.
    unsafe { client.buffer_mut().reset() };
    info!(
        "connected to the gateway at {}:{}",
        settings.gateway_host.as_str(),
        settings.gateway_port
    );
    terminal.handle_connected(uptime_ms());
    ota.handle_connected(uptime_ms());
    if ota.is_trial() {
        // Back on the gateway with the new image: keep it.
        match ota.confirm(terminal).await {
            Ok(()) => info!("new firmware {} confirmed", env!("CARGO_PKG_VERSION")),
            Err(e) => error!(
                "cannot confirm the new firmware: {}",
                defmt::Debug2Format(&e)
            ),
        }
    }
    let mut next_heartbeat = Instant::now();

    loop {
        // Publish what the core wants out (QoS 1; only its durable ack counts).
        while let Some(mut press) = terminal.poll_transmit(uptime_ms()) {
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
            let name =
                TopicName::new(MqttString::try_from(press_topic.as_str()).map_err(|_| "topic")?)
                    .ok_or("topic")?;
            client
                .publish(
                    &PublicationOptions::new(TopicReference::Name(name)).at_least_once(),
                    (&payload[..]).into(),
                )
                .await
                .map_err(|_| "publish failed")?;
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
            while let Some(status) = ota.poll_status() {
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
                // VSYS sensing shares GP29 with the Wi-Fi chip's clock; this
                // board revision reports mains power.
                battery_mv: None,
                rssi_dbm: Some(control.get_rssi().await.clamp(-128, 0) as i8),
                reset_reason,
                unix_time_ms: None,
            };
            let hb = terminal.heartbeat(uptime_ms(), device);
            let mut bytes = [0u8; HEARTBEAT_BUF_LEN];
            let encoded = match &settings.secret {
                Some(secret) => hb.encode_signed(secret, id, &mut bytes),
                None => hb.encode(&mut bytes),
            };
            if let Ok(payload) = encoded {
                let name = TopicName::new(
                    MqttString::try_from(heartbeat_topic.as_str()).map_err(|_| "topic")?,
                )
                .ok_or("topic")?;
                client
                    .publish(
                        &PublicationOptions::new(TopicReference::Name(name)),
                        (&payload[..]).into(),
                    )
                    .await
                    .map_err(|_| "heartbeat failed")?;
            }
            next_heartbeat = Instant::now() + HEARTBEAT_EVERY;
        }

        let mut wake = next_heartbeat;
        if let Some(ms) = terminal.poll_timeout() {
            wake = wake.min(Instant::from_millis(ms));
        }
        if let Some(ms) = ota.poll_timeout() {
            wake = wake.min(Instant::from_millis(ms));
        }
        match select3(client.poll_header(), PRESSES.receive(), Timer::at(wake)).await {
            Either3::First(header) => {
                let header = header.map_err(|_| "connection lost")?;
                let mut ack = None;
                if let Event::Publish(publish) = client
                    .poll_body(header)
                    .await
                    .map_err(|_| "connection lost")?
                {
                    let name: &str = match &publish.topic {
                        TopicReference::Name(n) => n.as_ref().as_ref(),
                        _ => "",
                    };
                    let message = publish.message.as_ref();
                    if name == ack_topic.as_str() {
                        ack = Ack::decode(message).ok();
                    } else if name == ota_command_topic.as_str() {
                        match ota_transfer::decode::<OtaCommand>(message) {
                            Ok(OtaCommand::Offer(offer)) => ota
                                .handle_offer(uptime_ms(), &offer, terminal)
                                .await
                                .map_err(|_| "flash error while accepting an update")?,
                            Ok(OtaCommand::Cancel { rollout }) => ota.handle_cancel(rollout),
                            Err(_) => warn!("undecodable OTA command"),
                        }
                    } else if name == ota_chunk_topic.as_str() {
                        match ota_transfer::decode::<Chunk>(message) {
                            Ok(chunk) => ota
                                .handle_chunk(uptime_ms(), &chunk, terminal)
                                .await
                                .map_err(|_| "flash error while writing the update")?,
                            Err(_) => warn!("undecodable OTA chunk"),
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
                }
            }
            Either3::Second(button) => match terminal.handle_press(uptime_ms(), button).await {
                Ok(id) => info!("press {} queued as {}/{}", button.name(), id.boot, id.seq),
                Err(PressError::Full) => warn!("press queue full: press dropped (counted)"),
                Err(PressError::Storage(_)) => error!("flash error: press not queued"),
            },
            Either3::Third(()) => {}
        }
    }
}
