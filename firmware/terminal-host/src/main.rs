//! `terminal-host`: the Pressline terminal application on Linux, the same
//! code the Pico W firmware runs (`pressline-terminal-app` over
//! embassy-net), with a TAP device for its network, a file for its flash,
//! standard input for its buttons and re-exec for its resets.
//!
//! ```text
//! terminal-host --tap NAME --address CIDR --broker IP:PORT --flash FILE \
//!               (--terminal ID | --provisioning FILE) [--ota-public-key FILE] [--exit-when-acked]
//! ```
//!
//! Standard input: a line `1`-`4` is a press of that button; `hang` makes a
//! task spin forever (the watchdog then resets the terminal). Standard
//! output: `queued BOOT SEQ` once a press is in flash (`not-queued` when
//! it could not be: a full queue or a flash error, counted as dropped),
//! `acked BOOT FIRST LAST` for each durable ack. Killing the process is a
//! power cut;
//! starting it again on the same `--flash` file is the next boot.
//!
//! # Layout
//! - [`flash`]: NOR flash in a file, and the partition map.
//! - [`image`]: the version an image in ACTIVE declares.
//! - [`board`]: stdin presses, the watchdog, the board hooks.
//! - [`reset`]: resets as re-exec.
//! - this file: arguments, the bootloader step, the tasks.

mod board;
mod flash;
mod image;
mod reset;

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use embassy_boot::{BootLoader, BootLoaderConfig, FirmwareUpdater, FirmwareUpdaterConfig, State};
use embassy_executor::{Executor, Spawner};
use embassy_net::{Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_net_tuntap::TunTapDevice;
use embedded_storage::nor_flash::{NorFlash as _, ReadNorFlash as _};
use pressline_protocol::power::{PowerMode, PowerSettings};
use pressline_protocol::provisioning::ProvisioningRecord;
use pressline_protocol::{FirmwareVersion, ResetReason};
use pressline_terminal_app::{Liveness, Settings};
use pressline_terminal_core::ota::{OtaConfig, OtaReceiver};
use pressline_terminal_core::{DurableTerminal, FlashLayout, Origin, SessionConfig};
use static_cell::StaticCell;

use crate::board::{HostBoard, HostFeedback, Shared, PRESSES};
use crate::flash::FileFlash;

#[derive(Debug, Parser)]
#[command(
    name = "terminal-host",
    version,
    about = "The Pressline terminal application on Linux: a TAP device, a flash file, presses from stdin"
)]
struct Args {
    /// TAP device to use (it must exist: `ip tuntap add NAME mode tap`).
    #[arg(long, value_name = "NAME")]
    tap: String,
    /// This terminal's address on the TAP network, e.g. 10.77.0.10/24.
    #[arg(long, value_name = "CIDR")]
    address: String,
    /// The gateway's MQTT 5 listener (IP:PORT); default: the provisioning
    /// record's.
    #[arg(long, value_name = "IP:PORT")]
    broker: Option<SocketAddrV4>,
    /// The flash file (created erased, with a factory image, if missing).
    #[arg(long, value_name = "FILE")]
    flash: PathBuf,
    /// Run unprovisioned as this terminal id (open-mode gateways).
    #[arg(
        long,
        value_name = "ID",
        conflicts_with = "provisioning",
        required_unless_present = "provisioning"
    )]
    terminal: Option<String>,
    /// Run as the terminal in this record (`fleet provision --to-file`):
    /// its id, its login and press signatures.
    #[arg(long, value_name = "FILE")]
    provisioning: Option<PathBuf>,
    /// The release signing key updates must carry (`signing.pub` from
    /// `fleet keys generate`); without it every offer is refused.
    #[arg(long, value_name = "FILE")]
    ota_public_key: Option<PathBuf>,
    /// Exit 0 once standard input is closed and every press read from it
    /// has been durably acked by the gateway.
    #[arg(long)]
    exit_when_acked: bool,
    /// A file holding the battery voltage in millivolts (read at every
    /// heartbeat, as a board reads its ADC): write it to play a battery
    /// running down. Without it the terminal reports mains power.
    #[arg(long, value_name = "FILE")]
    battery_mv: Option<PathBuf>,
    /// Seconds a trial image must run, connected, with a heartbeat and a
    /// durable ack, before it is kept (a reset before then reverts it).
    #[arg(long, value_name = "SECONDS", default_value_t = pressline_terminal_app::settings::DEFAULT_TRIAL_WINDOW_MS / 1000)]
    trial_window_secs: u64,
    /// Power mode, instead of the provisioning record's: `mains` (always
    /// connected) or `battery` (radio off between uploads).
    #[arg(long, value_name = "MODE", value_parser = ["mains", "battery"])]
    power: Option<String>,
    /// Battery mode: presses reach the gateway within this many seconds.
    #[arg(long, value_name = "SECONDS")]
    upload_delay_secs: Option<u16>,
    /// Battery mode: a heartbeat at least this often.
    #[arg(long, value_name = "SECONDS")]
    heartbeat_every_secs: Option<u16>,
    /// Battery mode: this many unhappy presses in a row go out at once (0:
    /// never).
    #[arg(long, value_name = "PRESSES")]
    unhappy_run: Option<u8>,
}

/// The power settings: the record's (or mains), then the flags.
fn power_settings(args: &Args, from_record: PowerSettings) -> Result<PowerSettings, String> {
    let mut power = match args.power.as_deref() {
        Some("battery") if from_record.mode != PowerMode::Battery => PowerSettings::BATTERY,
        Some("mains") => PowerSettings::MAINS,
        _ => from_record,
    };
    if let Some(secs) = args.upload_delay_secs {
        power.upload_delay_secs = secs;
    }
    if let Some(secs) = args.heartbeat_every_secs {
        power.heartbeat_every_secs = secs;
    }
    if let Some(run) = args.unhappy_run {
        power.unhappy_run = run;
    }
    power
        .validate()
        .map_err(|e| format!("power settings: {e}"))?;
    Ok(power)
}

/// Everything the main task needs, prepared before the executor starts.
struct Setup {
    args: Args,
    settings: Settings,
    flash: FileFlash,
    running: FirmwareVersion,
    public_key: [u8; 32],
    reset_reason: ResetReason,
}

const QUEUE_CAPACITY: usize = 512;
/// Chunks asked for at a time (as on the Pico W: fits the MQTT buffers).
const OTA_CHUNK: u32 = 1024;

type Terminal = DurableTerminal<FileFlash, QUEUE_CAPACITY>;
type Ota = OtaReceiver<'static, FileFlash, FileFlash>;

static LIVENESS: Liveness = Liveness::new();
static SHARED: StaticCell<Shared> = StaticCell::new();

fn settings(args: &Args) -> Result<Settings, String> {
    match (&args.provisioning, &args.terminal) {
        (Some(path), _) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read --provisioning {}: {e}", path.display()))?;
            let record = ProvisioningRecord::decode(&bytes)
                .map_err(|e| format!("--provisioning {}: {e}", path.display()))?;
            let mut settings = Settings::from_record(&record)
                .ok_or_else(|| format!("--provisioning {}: a field is too long", path.display()))?;
            if let Some(broker) = args.broker {
                settings.gateway_host.clear();
                let _ = settings.gateway_host.push_str(&broker.ip().to_string());
                settings.gateway_port = broker.port();
            }
            Ok(settings)
        }
        (None, Some(id)) => {
            let broker = args
                .broker
                .ok_or("--terminal needs --broker IP:PORT (the gateway's MQTT 5 listener)")?;
            Settings::unprovisioned(id, "host", &broker.ip().to_string(), broker.port())
                .ok_or_else(|| format!("--terminal {id:?} is not a valid terminal id"))
        }
        (None, None) => Err("give --terminal ID or --provisioning FILE".into()),
    }
}

/// The bootloader's part of a boot: swap in a verified update, or revert
/// a trial that was never confirmed (embassy-boot, as on the Pico W).
/// Returns the version the image in ACTIVE declares.
fn bootloader(flash: &FileFlash, created: bool) -> Result<FirmwareVersion, String> {
    let mut active = flash.partition(flash::ACTIVE);
    let mut dfu = flash.partition(flash::DFU);
    let mut state = flash.partition(flash::BOOT_STATE);
    if created {
        let mut factory = image::factory();
        factory.resize(factory.len().next_multiple_of(4), 0xFF);
        active
            .write(0, &factory)
            .map_err(|e| format!("cannot write the factory image: {e:?}"))?;
    }
    let mut page = [0u8; flash::SECTOR as usize];
    let mut loader = BootLoader::new(BootLoaderConfig {
        active: &mut active,
        dfu: &mut dfu,
        state: &mut state,
    });
    let before = loader
        .prepare_boot(&mut page)
        .map_err(|e| format!("bootloader: {e:?}"))?;
    let after = loader
        .read_state(&mut page)
        .map_err(|e| format!("bootloader: {e:?}"))?;
    match (before, after) {
        (State::Swap, State::Swap) => {
            log::info!("bootloader: swapped in the update for a trial boot")
        }
        (State::Swap, State::Revert) => {
            log::warn!("bootloader: the trial was never confirmed; previous image restored")
        }
        _ => {}
    }
    let mut head = [0u8; 128];
    active
        .read(0, &mut head)
        .map_err(|e| format!("cannot read the active image: {e:?}"))?;
    image::version_of(&head).ok_or_else(|| "the image in ACTIVE is not a host image".into())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    let settings = match settings(&args).and_then(|s| {
        Ok(Settings {
            trial_window_ms: args.trial_window_secs.saturating_mul(1000),
            power: power_settings(&args, s.power)?,
            ..s
        })
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("terminal-host: {e}");
            return ExitCode::from(2);
        }
    };
    let public_key = match &args.ota_public_key {
        None => [0; 32],
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| pressline_protocol::ota::parse_public_key(&t).map_err(str::to_string))
        {
            Ok(key) => key,
            Err(e) => {
                eprintln!("terminal-host: --ota-public-key {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let (flash, created) = match FileFlash::open(&args.flash) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("terminal-host: --flash {}: {e}", args.flash.display());
            return ExitCode::from(2);
        }
    };
    let reset_reason = reset::reason();
    let running = match bootloader(&flash, created) {
        Ok(v) => v,
        Err(e) => {
            // What a board does with an image that does not start: the
            // watchdog resets it, and the bootloader reverts the trial.
            log::error!("{e}; resetting when the watchdog fires");
            std::thread::sleep(board::WATCHDOG);
            let error = reset::reset(ResetReason::Watchdog);
            eprintln!("terminal-host: cannot reset: {error}");
            return ExitCode::from(70);
        }
    };
    let shared: &'static Shared = SHARED.init(Shared::new(args.exit_when_acked));
    shared.feed();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(|| shared.read_stdin())
        .expect("a thread for standard input");
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(|| shared.watchdog())
        .expect("a thread for the watchdog");
    static EXECUTOR: StaticCell<Executor> = StaticCell::new();
    let setup = Setup {
        args,
        settings,
        flash,
        running,
        public_key,
        reset_reason,
    };
    EXECUTOR.init(Executor::new()).run(move |spawner| {
        spawner.spawn(main_task(spawner, setup, shared).expect("the main task"));
    })
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, TunTapDevice>) -> ! {
    runner.run().await
}

/// Feeds the watchdog while the application checks in (see
/// `pressline_terminal_app::liveness`), and ends the process once every
/// press was acked (`--exit-when-acked`).
#[embassy_executor::task]
async fn watchdog_task(shared: &'static Shared) -> ! {
    loop {
        if LIVENESS.should_feed(pressline_terminal_app::uptime_ms()) {
            shared.feed();
        }
        shared.exit_if_all_acked();
        embassy_time::Timer::after_millis(pressline_terminal_app::liveness::FEED_EVERY_MS).await;
    }
}

/// Fault injection (a `hang` line): spins forever without yielding, as a
/// task stuck in a loop would, so the whole executor stops.
#[embassy_executor::task]
async fn fault_task(shared: &'static Shared) {
    loop {
        if shared.hang.load(std::sync::atomic::Ordering::SeqCst) {
            loop {
                std::hint::spin_loop();
            }
        }
        embassy_time::Timer::after_millis(100).await;
    }
}

/// A locally administered unicast MAC address, stable for a terminal id
/// (FNV-1a of the id).
fn mac_of(terminal: &str) -> [u8; 6] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in terminal.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let h = hash.to_be_bytes();
    [0x02, h[3], h[4], h[5], h[6], h[7]]
}

fn fail(why: String) -> ! {
    log::error!("{why}");
    std::process::exit(1);
}

#[embassy_executor::task]
async fn main_task(spawner: Spawner, setup: Setup, shared: &'static Shared) {
    let Setup {
        args,
        settings,
        flash,
        running,
        public_key,
        reset_reason,
    } = setup;
    let mut device = TunTapDevice::new(&args.tap)
        .unwrap_or_else(|e| fail(format!("cannot open TAP device {}: {e}", args.tap)));
    // embassy-net-tuntap gives every device the same MAC address; on one
    // bridge the terminals would then receive each other's frames (a board
    // has its own address too).
    device.set_hardware_address(mac_of(&settings.terminal));
    let cidr: Ipv4Cidr = args
        .address
        .parse()
        .unwrap_or_else(|_| fail(format!("--address {:?}: expected A.B.C.D/N", args.address)));
    let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: cidr,
        gateway: None,
        dns_servers: Default::default(),
    });
    let mut seed = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed));
    static RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        device,
        config,
        RESOURCES.init(StackResources::new()),
        u64::from_le_bytes(seed),
    );
    spawner.spawn(net_task(runner).expect("the network task"));

    let layout = FlashLayout {
        state: flash::TERMINAL_STATE,
        queue: flash::PRESS_QUEUE,
    };
    let session = SessionConfig {
        ack_timeout_ms: 5_000,
        max_in_flight: 16,
    };
    static TERMINAL: StaticCell<Terminal> = StaticCell::new();
    let terminal: &'static mut Terminal =
        // The OS's randomness: an erased flash file is a new generation.
        match DurableTerminal::boot(flash.clone(), layout, session, origin(&settings)).await {
            Ok(t) => TERMINAL.init(t),
            Err(e) => fail(format!(
                "the press queue in {} is unreadable: {e:?}",
                args.flash.display()
            )),
        };
    shared.set_queued(terminal.queue_len());
    println!(
        "booted {} boot {} restored {} reset {:?}",
        running,
        terminal.boot_number(),
        terminal.restored(),
        reset_reason
    );
    static ALIGNED: StaticCell<[u8; 4]> = StaticCell::new();
    let updater = FirmwareUpdater::new(
        FirmwareUpdaterConfig {
            dfu: flash.partition(flash::DFU),
            state: flash.partition(flash::BOOT_STATE),
        },
        ALIGNED.init([0; 4]),
    );
    let ota_config = OtaConfig {
        public_key,
        board: "host",
        max_image: flash::ACTIVE.end - flash::ACTIVE.start,
        chunk_size: OTA_CHUNK,
        request_timeout_ms: 5_000,
        progress_step: 10,
    };
    static OTA: StaticCell<Ota> = StaticCell::new();
    let ota: &'static mut Ota =
        match OtaReceiver::boot(updater, ota_config, running, terminal).await {
            Ok(o) => OTA.init(o),
            Err(e) => fail(format!("the update state is unreadable: {e:?}")),
        };
    if ota.is_trial() {
        log::info!("trial boot of {running}: confirming once back on the gateway");
    }
    spawner.spawn(watchdog_task(shared).expect("the watchdog task"));
    spawner.spawn(fault_task(shared).expect("the fault task"));
    log::info!(
        "terminal {} ({}) on {} as {}, gateway {}:{}",
        settings.terminal.as_str(),
        running,
        args.tap,
        args.address,
        settings.gateway_host.as_str(),
        settings.gateway_port
    );
    let mut board = HostBoard {
        shared,
        reset_reason,
        battery: args.battery_mv.clone(),
        radio_on: false,
    };
    let mut feedback = HostFeedback { shared };
    pressline_terminal_app::run(
        &mut board,
        &mut feedback,
        stack,
        terminal,
        ota,
        &settings,
        &PRESSES,
        &LIVENESS,
    )
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_terminal_has_its_own_stable_mac_address() {
        let a = super::mac_of("host-1");
        assert_eq!(a, super::mac_of("host-1"));
        assert_ne!(a, super::mac_of("host-2"));
        assert_eq!(a[0] & 0b11, 0b10, "locally administered, unicast");
    }
}

/// Who this terminal is, with the OS's random bits for a new generation.
fn origin(settings: &pressline_terminal_app::Settings) -> Origin {
    Origin::new(settings.terminal.as_str(), rand::random())
}
