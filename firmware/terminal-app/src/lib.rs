//! The Pressline terminal application, the same on every board.
//!
//! A board shell (the Pico W firmware, `terminal-host` on Linux) brings up
//! its network stack, flash, buttons and watchdog, boots the terminal core
//! ([`DurableTerminal`]: presses numbered and queued in flash) and its OTA
//! receiver, and hands them to [`run`], which never returns: it keeps a
//! session with the gateway going, reconnecting with backoff, and queues
//! presses into flash all along, connected or not.
//!
//! # Layout
//! - [`board`]: what the application needs from a board.
//! - [`session`]: one MQTT 5 session with the gateway.
//! - [`settings`]: who the terminal is (its provisioning record).
//! - [`liveness`]: the watchdog contract between this loop and the board.
#![no_std]

pub mod board;
pub mod liveness;
mod log;
pub mod session;
pub mod settings;

use embassy_futures::select::{select, Either};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::channel::Receiver;
use embassy_time::{Duration, Instant, Timer};
use embedded_storage_async::nor_flash::{MultiwriteNorFlash, NorFlash};
use pressline_protocol::backoff::Backoff;
use pressline_protocol::Button;
use pressline_terminal_core::ota::OtaReceiver;
use pressline_terminal_core::{DurableTerminal, PressError};

pub use board::{Board, NetworkError};
pub use liveness::Liveness;
pub use session::SessionError;
pub use settings::Settings;

use crate::log::{log_error, log_info, log_warn};

/// Milliseconds since boot (the terminal core's clock).
pub fn uptime_ms() -> u64 {
    Instant::now().as_millis()
}

/// Queues a press in flash (whatever the connection is doing).
async fn queue_press<B: Board, F: MultiwriteNorFlash, const Q: usize>(
    board: &mut B,
    terminal: &mut DurableTerminal<F, Q>,
    button: Button,
) {
    match terminal.handle_press(uptime_ms(), button).await {
        Ok(id) => {
            log_info!("press {} queued as {}/{}", button.name(), id.boot, id.seq);
            board.press_queued(id, terminal.queue_len());
        }
        Err(PressError::Full) => {
            log_warn!("press queue full: press dropped (counted)");
            board.press_not_queued();
        }
        Err(PressError::Storage(_)) => {
            log_error!("flash error: press not queued");
            board.press_not_queued();
        }
    }
}

/// Waits `delay`, queueing presses meanwhile and checking in.
async fn wait_queueing<B, F, M, const Q: usize, const N: usize>(
    board: &mut B,
    terminal: &mut DurableTerminal<F, Q>,
    presses: &Receiver<'_, M, Button, N>,
    liveness: &Liveness,
    delay: Duration,
) where
    B: Board,
    F: MultiwriteNorFlash,
    M: RawMutex,
{
    let until = Instant::now() + delay;
    loop {
        liveness.check_in(uptime_ms());
        let step = until.min(Instant::now() + Duration::from_secs(5));
        match select(presses.receive(), Timer::at(step)).await {
            Either::First(button) => queue_press(board, terminal, button).await,
            Either::Second(()) if Instant::now() >= until => return,
            Either::Second(()) => {}
        }
    }
}

/// Runs the terminal: sessions with the gateway one after another, with
/// backoff between failures, presses queued throughout. Reboots (through
/// the board) when a verified update is waiting.
#[allow(clippy::too_many_arguments)]
pub async fn run<B, F, DFU, STATE, M, const Q: usize, const N: usize>(
    board: &mut B,
    stack: embassy_net::Stack<'_>,
    terminal: &mut DurableTerminal<F, Q>,
    ota: &mut OtaReceiver<'_, DFU, STATE>,
    settings: &Settings,
    presses: Receiver<'_, M, Button, N>,
    liveness: &Liveness,
) -> !
where
    B: Board,
    F: MultiwriteNorFlash,
    DFU: NorFlash,
    STATE: NorFlash,
    M: RawMutex,
{
    // Between sessions: 1 s doubling to 30 s, so a gateway coming back
    // is not stampeded by every terminal of the venue at once.
    let mut backoff = Backoff::new(1_000, 30_000);
    loop {
        liveness.check_in(uptime_ms());
        if let Err(why) = board.connect_network().await {
            log_warn!("network not up ({}); retrying", why.as_str());
            let wait = Duration::from_millis(backoff.next_ms());
            wait_queueing(board, terminal, &presses, liveness, wait).await;
            continue;
        }
        if !stack.is_config_up() {
            wait_queueing(
                board,
                terminal,
                &presses,
                liveness,
                Duration::from_millis(500),
            )
            .await;
            continue;
        }
        let parts = session::Parts {
            board: &mut *board,
            terminal: &mut *terminal,
            ota: &mut *ota,
            settings,
            liveness,
        };
        match session::run(parts, stack, &presses).await {
            Ok(()) => backoff.reset(),
            Err(why) => log_warn!("gateway session ended: {}", why.as_str()),
        }
        terminal.handle_disconnected(uptime_ms());
        ota.handle_disconnected(uptime_ms());
        if ota.wants_reboot() {
            log_info!("rebooting into the new firmware");
            Timer::after_millis(200).await;
            board.reboot();
        }
        let wait = Duration::from_millis(backoff.next_ms());
        wait_queueing(board, terminal, &presses, liveness, wait).await;
    }
}
