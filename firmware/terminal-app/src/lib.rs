//! The Pressline terminal application, the same on every board.
//!
//! A board shell (the Pico W firmware, `terminal-host` on Linux) brings up
//! its network stack, flash, buttons and watchdog, boots the terminal core
//! ([`DurableTerminal`]: presses numbered and queued in flash) and its OTA
//! receiver, and hands them to [`run`], which never returns: it queues
//! presses into flash as they come, connected or not, and beside that
//! keeps a session with the gateway going, reconnecting with backoff.
//!
//! # Layout
//! - [`board`]: what the application needs from a board.
//! - [`intake`]: presses from the buttons into flash, at once.
//! - [`power`]: mains or battery: when the radio is on, what it cost.
//! - [`session`]: one MQTT 5 session with the gateway.
//! - [`settings`]: who the terminal is (its provisioning record).
//! - [`liveness`]: the watchdog contract between this loop and the board.
#![no_std]

pub mod board;
pub mod intake;
pub mod liveness;
mod log;
pub mod power;
pub mod session;
pub mod settings;

use embassy_futures::join::join;
use embassy_futures::select::{select, Either};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_time::{Duration, Instant, Timer};
use embedded_storage_async::nor_flash::{MultiwriteNorFlash, NorFlash};
use pressline_protocol::backoff::Backoff;
use pressline_terminal_core::ota::OtaReceiver;
use pressline_terminal_core::DurableTerminal;

pub use board::{Board, NetworkError};
pub use intake::{Feedback, Presses, SharedTerminal};
pub use liveness::Liveness;
pub use power::Power;
pub use session::{Ended, SessionError};
pub use settings::Settings;

use crate::log::{log_info, log_warn};

/// Milliseconds since boot (the terminal core's clock).
pub fn uptime_ms() -> u64 {
    Instant::now().as_millis()
}

/// Waits `delay`, checking in.
async fn wait_checking_in(liveness: &Liveness, delay: Duration) {
    let until = Instant::now() + delay;
    loop {
        liveness.check_in(uptime_ms());
        if Instant::now() >= until {
            return;
        }
        Timer::at(until.min(Instant::now() + Duration::from_secs(5))).await;
    }
}

/// Runs the terminal: presses into flash as they come ([`intake`]) and,
/// beside that, sessions with the gateway one after another, with backoff
/// between failures. Reboots (through the board) when a verified update
/// is waiting.
#[allow(clippy::too_many_arguments)]
pub async fn run<B, FB, F, DFU, STATE, M, const Q: usize, const N: usize>(
    board: &mut B,
    feedback: &mut FB,
    stack: embassy_net::Stack<'_>,
    terminal: &mut DurableTerminal<F, Q>,
    ota: &mut OtaReceiver<'_, DFU, STATE>,
    settings: &Settings,
    presses: &Presses<M, N>,
    liveness: &Liveness,
) -> !
where
    B: Board,
    FB: Feedback,
    F: MultiwriteNorFlash,
    DFU: NorFlash,
    STATE: NorFlash,
    M: RawMutex,
{
    let terminal: SharedTerminal<'_, F, Q> = SharedTerminal::new(terminal);
    let power = Power::new(settings.power);
    let links = Links {
        terminal: &terminal,
        power: &power,
        settings,
        liveness,
    };
    let network = connect_forever(board, stack, ota, links);
    let intake = intake::run(&terminal, presses, feedback, &power);
    let (never, _) = join(network, intake).await;
    never
}

/// What the network loop shares with the rest of the terminal.
struct Links<'l, 't, F: MultiwriteNorFlash, const Q: usize> {
    terminal: &'l SharedTerminal<'t, F, Q>,
    power: &'l Power,
    settings: &'l Settings,
    liveness: &'l Liveness,
}

/// On batteries, until the radio is due on (a press waited the upload
/// delay, a run of unhappy presses, the heartbeat); at once on mains.
async fn wait_for_radio<F: MultiwriteNorFlash, const Q: usize>(links: &Links<'_, '_, F, Q>) {
    loop {
        links.liveness.check_in(uptime_ms());
        let Some(due) = links.power.with(|p| p.poll_radio()) else {
            return;
        };
        if due <= uptime_ms() {
            return;
        }
        // Woken at least every 5 s all the same, to check in.
        let until = Instant::from_millis(due).min(Instant::now() + Duration::from_secs(5));
        if let Either::First(()) = select(Timer::at(until), links.terminal.pressed()).await {
            links.power.with(|p| p.handle_wakeup());
        }
    }
}

/// Sessions with the gateway, one after another.
async fn connect_forever<B, F, DFU, STATE, const Q: usize>(
    board: &mut B,
    stack: embassy_net::Stack<'_>,
    ota: &mut OtaReceiver<'_, DFU, STATE>,
    links: Links<'_, '_, F, Q>,
) -> !
where
    B: Board,
    F: MultiwriteNorFlash,
    DFU: NorFlash,
    STATE: NorFlash,
{
    let Links {
        terminal,
        power,
        settings,
        liveness,
    } = links;
    // Between sessions: 1 s doubling to 30 s, so a gateway coming back
    // is not stampeded by every terminal of the venue at once.
    let mut backoff = Backoff::new(1_000, 30_000);
    loop {
        wait_for_radio(&links).await;
        liveness.check_in(uptime_ms());
        power.with(|p| p.radio_on(uptime_ms()));
        if let Err(why) = board.connect_network().await {
            log_warn!("network not up ({}); retrying", why.as_str());
            radio_off_on_battery(board, power).await;
            let wait = Duration::from_millis(backoff.next_ms());
            wait_checking_in(liveness, wait).await;
            continue;
        }
        if !stack.is_config_up() {
            wait_checking_in(liveness, Duration::from_millis(500)).await;
            continue;
        }
        let parts = session::Parts {
            board: &mut *board,
            terminal,
            ota: &mut *ota,
            settings,
            liveness,
            power,
        };
        let ended = session::run(parts, stack).await;
        match ended {
            Ok(Ended::Idle) => {
                backoff.reset();
                // Checked again: a press may have come after the session's
                // last look at the queue.
                let leftovers = terminal.lock().await.queue_len() > 0;
                power.with(|p| p.handle_uploaded(uptime_ms(), leftovers));
            }
            Ok(Ended::Reboot) => backoff.reset(),
            Err(why) => log_warn!("gateway session ended: {}", why.as_str()),
        }
        terminal.lock().await.handle_disconnected(uptime_ms());
        ota.handle_disconnected(uptime_ms());
        if ota.wants_reboot() {
            log_info!("rebooting into the new firmware");
            Timer::after_millis(200).await;
            board.reboot();
        }
        radio_off_on_battery(board, power).await;
        if ended.is_err() {
            let wait = Duration::from_millis(backoff.next_ms());
            wait_checking_in(liveness, wait).await;
        }
    }
}

/// A terminal on batteries turns its radio off between sessions.
async fn radio_off_on_battery<B: Board>(board: &mut B, power: &Power) {
    if power.with(|p| p.is_battery()) {
        board.disconnect_network().await;
        power.with(|p| p.radio_off(uptime_ms()));
    }
}
