//! Pressline terminal firmware for the Raspberry Pi Pico W: the board
//! shell around the terminal application (`pressline-terminal-app`, the
//! same code `terminal-host` runs on Linux).
//!
//! Four buttons on GP2–GP5 (very unhappy … very happy, to ground, internal
//! pull-ups). Every press taken into flash blinks the board's LED (on the
//! Wi-Fi chip) once, and an LED or buzzer fitted on GP15 (active high,
//! through a resistor or a driver); a press the queue could not take
//! blinks three times. Presses go through the shared terminal core
//! ([`pressline_terminal_core::DurableTerminal`]): numbered, queued in flash
//! before anything else happens, published at QoS 1 over MQTT 5 to the
//! site gateway, and forgotten only when the gateway's durable ack names
//! them. The RP2040 watchdog (8 s) is fed while the application's main
//! loop checks in, so a hung task resets the terminal; the queue survives.
//!
//! Firmware updates: the terminal-core OTA receiver pulls an offered release
//! into the DFU partition, embassy-boot checks its signature with the
//! release key built in at compile time (`PRESSLINE_OTA_PUBLIC_KEY`, the hex
//! `signing.pub`) and marks it; after the reboot the bootloader runs it as
//! a trial, and the application confirms it once it is back on the
//! gateway. A trial that never gets there is reverted at the next reset.
//!
//! # Layout
//! - [`awake`]: how long the processor runs (energy counters).
//! - [`flash_map`]: where everything lives in flash.
//! - [`settings`]: provisioning record (or build-time fallback).
//! - [`wifi_firmware`]: the CYW43439 blobs.
//! - this file: bring-up, the board ([`PicoBoard`]), and the tasks (Wi-Fi
//!   driver, network stack, buttons, watchdog, visitor feedback).
#![no_std]
#![no_main]

mod awake;
mod flash_map;
mod settings;
mod wifi_firmware;

use cyw43::JoinOptions;
use cyw43_pio::{PioSpi, DEFAULT_CLOCK_DIVIDER};
use defmt::{error, info, warn, Display2Format};
use embassy_boot_rp::{FirmwareUpdater, FirmwareUpdaterConfig};
use embassy_embedded_hal::flash::partition::Partition;
use embassy_executor::Spawner;
use embassy_futures::select::select4;
use embassy_net::{Config as NetConfig, Stack, StackResources};
use embassy_rp::adc::{self, Adc};
use embassy_rp::clocks::RoscRng;
use embassy_rp::flash::{Async, Flash};
use embassy_rp::gpio::{Input, Level, Output, Pull};
use embassy_rp::peripherals::{DMA_CH0, DMA_CH1, FLASH, PIO0};
use embassy_rp::pio::{InterruptHandler as PioInterruptHandler, Pio};
use embassy_rp::watchdog::{ResetReason as RpResetReason, Watchdog};
use embassy_rp::{bind_interrupts, dma};
use embassy_sync::blocking_mutex::raw::{CriticalSectionRawMutex, NoopRawMutex};
use embassy_sync::mutex::Mutex;
use embassy_sync::signal::Signal;
use embassy_time::{with_timeout, Duration, Timer};
use pressline_protocol::{Button, FirmwareVersion, ResetReason};
use pressline_terminal_app::{Board, Feedback, Liveness, NetworkError, Presses};
use pressline_terminal_core::ota::{OtaConfig, OtaReceiver};
use pressline_terminal_core::{Debouncer, DurableTerminal, FlashLayout, Origin, SessionConfig};
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

use crate::flash_map::{FLASH_SIZE, PRESS_QUEUE, PROVISIONING, TERMINAL_STATE};

bind_interrupts!(struct Irqs {
    PIO0_IRQ_0 => PioInterruptHandler<PIO0>;
    DMA_IRQ_0 => dma::InterruptHandler<DMA_CH0>, dma::InterruptHandler<DMA_CH1>;
});

/// Presses the queue holds (RAM mirror of the flash queue, 32 bytes each;
/// the 64 KiB flash queue itself has room for more).
const QUEUE_CAPACITY: usize = 512;

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

/// The RP2040 watchdog's period (its counter allows at most 8.3 s).
const WATCHDOG_PERIOD: Duration = Duration::from_secs(8);

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

/// Debounced presses from the button task to the application.
static PRESSES: Presses<CriticalSectionRawMutex, 32> = Presses::new();
/// The application's check-ins (see `pressline_terminal_app::liveness`).
static LIVENESS: Liveness = Liveness::new();

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

/// Debounces the four buttons: sampled every 5 ms while a level is
/// settling, otherwise asleep until a button leaves its settled level (a
/// level-triggered wait, so no edge falls between a sample and the wait).
#[embassy_executor::task]
async fn buttons_task(mut pins: [Input<'static>; 4]) -> ! {
    let mut debouncers = [Debouncer::default(); 4];
    loop {
        let now = pressline_terminal_app::uptime_ms();
        let mut settling = false;
        for ((pin, debouncer), button) in pins.iter().zip(debouncers.iter_mut()).zip(Button::ALL) {
            if debouncer.handle_level(now, pin.is_low()) && !PRESSES.press(button) {
                warn!("press channel full; press dropped before queueing (counted)");
            }
            settling |= debouncer.poll_timeout().is_some();
        }
        if settling {
            Timer::after_millis(5).await;
            continue;
        }
        let held = debouncers.map(|d| d.is_pressed());
        let [a, b, c, d] = &mut pins;
        select4(
            level_changes(a, held[0]),
            level_changes(b, held[1]),
            level_changes(c, held[2]),
            level_changes(d, held[3]),
        )
        .await;
    }
}

/// Until `pin` leaves the settled level (`held`: pulled low).
async fn level_changes(pin: &mut Input<'static>, held: bool) {
    if held {
        pin.wait_for_high().await
    } else {
        pin.wait_for_low().await
    }
}

/// Feeds the RP2040 watchdog while the application checks in. A task that
/// spins stops the executor and this task with it; one that waits forever
/// stops the check-ins: either way the watchdog resets the chip.
#[embassy_executor::task]
async fn watchdog_task(mut watchdog: Watchdog) -> ! {
    watchdog.pause_on_debug(true);
    watchdog.start(WATCHDOG_PERIOD);
    loop {
        if LIVENESS.should_feed(pressline_terminal_app::uptime_ms()) {
            watchdog.feed(WATCHDOG_PERIOD);
        }
        Timer::after_millis(pressline_terminal_app::liveness::FEED_EVERY_MS).await;
    }
}

/// Halts with a log line every minute: the terminal cannot work.
async fn halt(why: &str) -> ! {
    loop {
        error!("terminal halted: {}", why);
        Timer::after_secs(60).await;
    }
}

/// The Wi-Fi chip's control: the board joins and leaves with it, the
/// feedback task drives the LED on the chip's GPIO 0 with it.
type SharedControl = Mutex<CriticalSectionRawMutex, cyw43::Control<'static>>;

/// The Pico W as the application sees it.
struct PicoBoard {
    control: &'static SharedControl,
    stack: Stack<'static>,
    wifi_ssid: heapless::String<32>,
    wifi_password: heapless::String<64>,
    reset_reason: ResetReason,
}

impl Board for PicoBoard {
    async fn connect_network(&mut self) -> Result<(), NetworkError> {
        if self.stack.is_link_up() {
            return Ok(());
        }
        let options = if self.wifi_password.is_empty() {
            JoinOptions::new_open()
        } else {
            JoinOptions::new(self.wifi_password.as_bytes())
        };
        // The control's lock is taken inside the bound too.
        let join = async {
            let mut control = self.control.lock().await;
            control.join(&self.wifi_ssid, options).await
        };
        match with_timeout(Duration::from_secs(20), join).await {
            Ok(Ok(())) => {
                info!("Wi-Fi joined; waiting for DHCP");
                Ok(())
            }
            Ok(Err(e)) => {
                warn!("Wi-Fi join failed: {}", defmt::Debug2Format(&e));
                Err(NetworkError::JoinFailed)
            }
            Err(_) => Err(NetworkError::JoinTimedOut),
        }
    }

    async fn rssi_dbm(&mut self) -> Option<i8> {
        Some(self.control.lock().await.get_rssi().await.clamp(-128, 0) as i8)
    }

    async fn disconnect_network(&mut self) {
        // Off the network between uploads (batteries): the CYW43439 stays
        // powered, in power save, until the next join.
        self.control.lock().await.leave().await;
    }

    fn battery_mv(&mut self) -> Option<u16> {
        // VSYS/3 is on GP29, which is also the Wi-Fi chip's SPI clock. It
        // is read only while the chip is deselected (WL_CS, GP25, high: no
        // transfer under way, and none can start before this returns, as
        // the driver runs on this executor), with the pin's digital side
        // cut off for the conversion and its pad put back after.
        let cs_high = embassy_rp::pac::SIO.gpio_out(0).value().read() & (1 << 25) != 0;
        if !cs_high {
            return None;
        }
        let pad = embassy_rp::pac::PADS_BANK0.gpio(29);
        let saved = pad.read();
        let sum = {
            // SAFETY: GP29 belongs to the PIO SPI and the ADC to nothing
            // else; both are borrowed for a few blocking conversions while
            // the bus is idle (above). The ADC is off again when `adc`
            // drops (on batteries it would draw about 150 uA).
            let pin = unsafe { embassy_rp::peripherals::PIN_29::steal() };
            let mut adc = Adc::new_blocking(
                unsafe { embassy_rp::peripherals::ADC::steal() },
                adc::Config::default(),
            );
            let mut vsys = adc::Channel::new_pin(pin, Pull::None);
            // The first conversion settles the divider's input after the
            // PIO drove the pin; the next three are averaged.
            let _ = adc.blocking_read(&mut vsys);
            (0..3).try_fold(0u32, |sum, _| {
                adc.blocking_read(&mut vsys).map(|raw| sum + u32::from(raw))
            })
        };
        pad.write_value(saved);
        let raw = sum.ok()? / 3;
        // 12 bits over 3.3 V, behind the board's 1:3 divider.
        Some((raw * 3 * 3300 / 4096) as u16)
    }

    fn awake_ms(&mut self) -> Option<u64> {
        Some(awake::awake_ms())
    }

    fn reset_reason(&self) -> ResetReason {
        self.reset_reason
    }

    fn reboot(&mut self) -> ! {
        // Through the watchdog, so the next boot reads WATCHDOG.REASON as
        // forced (a software reset); SYSRESETREQ leaves no trace there and
        // would read as power-on.
        // SAFETY: the watchdog task holds the watchdog only to feed it; this
        // resets the chip before it runs again.
        let mut watchdog = Watchdog::new(unsafe { embassy_rp::peripherals::WATCHDOG::steal() });
        watchdog.trigger_reset();
        loop {
            cortex_m::asm::nop();
        }
    }
}

/// What the visitor is shown of a press.
#[derive(Clone, Copy)]
enum Blink {
    /// In flash: one blink.
    Taken,
    /// Not taken (the queue full, the flash failed): three short ones.
    Refused,
}

/// The latest press's blink, for the feedback task.
static BLINK: Signal<CriticalSectionRawMutex, Blink> = Signal::new();

/// Hands each press's blink to [`feedback_task`] (the application's
/// feedback hooks must not wait).
struct PicoFeedback;

impl Feedback for PicoFeedback {
    fn press_queued(&mut self, _id: pressline_protocol::PressId, _queued: usize) {
        BLINK.signal(Blink::Taken);
    }

    fn press_not_queued(&mut self) {
        BLINK.signal(Blink::Refused);
    }
}

/// Blinks the external LED or buzzer on GP15 at once, and the board's LED
/// (on the Wi-Fi chip) as soon as its control is free: during a Wi-Fi join
/// it follows the join.
#[embassy_executor::task]
async fn feedback_task(control: &'static SharedControl, mut external: Output<'static>) -> ! {
    loop {
        let (times, on) = match BLINK.wait().await {
            Blink::Taken => (1, Duration::from_millis(150)),
            Blink::Refused => (3, Duration::from_millis(80)),
        };
        for _ in 0..times {
            external.set_high();
            // The chip's LED only if its control is free now (held for the
            // blink, which delays a join by as much at most).
            match with_timeout(Duration::from_millis(50), control.lock()).await {
                Ok(mut chip) => {
                    chip.gpio_set(0, true).await;
                    Timer::after(on).await;
                    chip.gpio_set(0, false).await;
                }
                Err(_) => Timer::after(on).await,
            }
            external.set_low();
            Timer::after(on).await;
        }
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_rp::init(Default::default());
    let watchdog = Watchdog::new(p.WATCHDOG);
    let reset_reason = match watchdog.reset_reason() {
        Some(RpResetReason::TimedOut) => ResetReason::Watchdog,
        Some(RpResetReason::Forced) => ResetReason::Software,
        None => ResetReason::PowerOn,
    };
    // Armed before anything that could hang (flash, Wi-Fi bring-up).
    LIVENESS.check_in(pressline_terminal_app::uptime_ms());
    spawner.spawn(watchdog_task(watchdog).expect("watchdog task"));
    let mut flash: TerminalFlash = Flash::new(p.FLASH, p.DMA_CH1, Irqs);
    let settings = read_settings(&mut flash).await;
    let mut uid = [0u8; 8];
    let _ = flash.blocking_unique_id(&mut uid);
    static SHARED: StaticCell<Mutex<NoopRawMutex, TerminalFlash>> = StaticCell::new();
    let shared: &'static Mutex<NoopRawMutex, TerminalFlash> = SHARED.init(Mutex::new(flash));
    let terminal = boot_terminal(shared, &settings).await;
    let ota = boot_ota(shared, terminal).await;

    let blobs = match wifi_firmware::load() {
        Ok(b) => b,
        Err(why) => halt(why.as_str()).await,
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

    static CONTROL: StaticCell<SharedControl> = StaticCell::new();
    let control: &'static SharedControl = CONTROL.init(Mutex::new(control));
    spawner
        .spawn(feedback_task(control, Output::new(p.PIN_15, Level::Low)).expect("feedback task"));
    let mut board = PicoBoard {
        control,
        stack,
        wifi_ssid: settings.wifi_ssid.clone(),
        wifi_password: settings.wifi_password.clone(),
        reset_reason,
    };
    pressline_terminal_app::run(
        &mut board,
        &mut PicoFeedback,
        stack,
        terminal,
        ota,
        &settings,
        &PRESSES,
        &LIVENESS,
    )
    .await
}

/// Who the terminal is: its provisioning record (or the build's
/// fallback); halts, saying how to provision it, when there is none.
async fn read_settings(flash: &mut TerminalFlash) -> pressline_terminal_app::Settings {
    let mut sector = [0u8; 512];
    if flash.read(PROVISIONING, &mut sector).await.is_err() {
        halt("cannot read the provisioning sector").await;
    }
    match settings::load(&sector) {
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
    }
}

/// The terminal core from its flash: boot counter, queued presses.
async fn boot_terminal(
    shared: &'static Mutex<NoopRawMutex, TerminalFlash>,
    settings: &pressline_terminal_app::Settings,
) -> &'static mut Terminal {
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
    // The ring oscillator's random bits: a fresh or re-provisioned flash
    // starts its boot numbers where no earlier flash of this id did.
    let origin = Origin::new(settings.terminal.as_str(), RoscRng.next_u32());
    let terminal: &'static mut Terminal =
        match DurableTerminal::boot(flash, layout, config, origin).await {
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
    terminal
}

/// The OTA receiver over the update partitions (embassy-boot's state).
async fn boot_ota(
    shared: &'static Mutex<NoopRawMutex, TerminalFlash>,
    terminal: &mut Terminal,
) -> &'static mut Ota {
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
    ota
}
