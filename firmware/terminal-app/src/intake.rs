//! Presses into flash, whatever the network is doing.
//!
//! The board's button task hands each debounced press to [`Presses`]; the
//! intake loop ([`run`]) takes it into the flash queue at once, beside the
//! network loop rather than inside it: a Wi-Fi join, a gateway that does
//! not answer or a publish waiting for room never hold a press in RAM. The
//! two loops share the terminal core through one lock that the network
//! side holds only for short core calls, never across network I/O.
//!
//! A press the board could not hand over (the intake full) is counted with
//! the dropped presses the heartbeat reports, not only logged.

use core::cell::Cell;

use embassy_sync::blocking_mutex::raw::{NoopRawMutex, RawMutex};
use embassy_sync::blocking_mutex::Mutex as BlockingMutex;
use embassy_sync::channel::Channel;
use embassy_sync::mutex::{Mutex, MutexGuard};
use embassy_sync::signal::Signal;
use embedded_storage_async::nor_flash::MultiwriteNorFlash;
use pressline_protocol::{Button, PressId};
use pressline_terminal_core::{DurableTerminal, PressError};

use crate::log::{log_error, log_info, log_warn};
use crate::power::Power;
use crate::uptime_ms;

/// The terminal core as both loops share it (one executor task).
pub struct SharedTerminal<'t, F: MultiwriteNorFlash, const Q: usize> {
    core: Mutex<NoopRawMutex, &'t mut DurableTerminal<F, Q>>,
    /// A press went into flash: the network loop has something to send.
    pressed: Signal<NoopRawMutex, ()>,
}

impl<'t, F: MultiwriteNorFlash, const Q: usize> SharedTerminal<'t, F, Q> {
    pub fn new(core: &'t mut DurableTerminal<F, Q>) -> Self {
        SharedTerminal {
            core: Mutex::new(core),
            pressed: Signal::new(),
        }
    }

    /// The core, for one call (never held across network I/O).
    pub async fn lock(&self) -> MutexGuard<'_, NoopRawMutex, &'t mut DurableTerminal<F, Q>> {
        self.core.lock().await
    }

    /// Until a press has gone into flash since the last wait.
    pub async fn pressed(&self) {
        self.pressed.wait().await
    }
}

/// What the visitor is shown of their press (a light, a sound, a line).
pub trait Feedback {
    /// The press is in the flash queue; `queued` presses are there now.
    fn press_queued(&mut self, _id: PressId, _queued: usize) {}

    /// A press could not be queued (the queue is full, or the flash
    /// failed); it is counted as dropped.
    fn press_not_queued(&mut self) {}
}

/// Presses on their way from the buttons to the intake loop.
pub struct Presses<M: RawMutex, const N: usize> {
    channel: Channel<M, Button, N>,
    /// Presses the channel had no room for, not yet counted in flash.
    missed: BlockingMutex<M, Cell<u32>>,
}

impl<M: RawMutex, const N: usize> Default for Presses<M, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: RawMutex, const N: usize> Presses<M, N> {
    pub const fn new() -> Self {
        Presses {
            channel: Channel::new(),
            missed: BlockingMutex::new(Cell::new(0)),
        }
    }

    /// A debounced press (from an interrupt or a task, never blocking).
    /// `false`: no room; the press is counted as dropped.
    pub fn press(&self, button: Button) -> bool {
        // One critical section: the intake cannot take the count between
        // the refusal and its counting.
        self.missed.lock(|m| {
            let taken = self.channel.try_send(button).is_ok();
            if !taken {
                m.set(m.get().saturating_add(1));
            }
            taken
        })
    }

    /// Whether a press fits now (for a board that would rather wait).
    pub fn has_room(&self) -> bool {
        !self.channel.is_full()
    }

    fn take_missed(&self) -> u32 {
        self.missed.lock(|m| m.replace(0))
    }
}

/// Takes presses into flash as they come; never returns.
pub async fn run<F, M, FB, const Q: usize, const N: usize>(
    shared: &SharedTerminal<'_, F, Q>,
    presses: &Presses<M, N>,
    feedback: &mut FB,
    power: &Power,
) -> !
where
    F: MultiwriteNorFlash,
    M: RawMutex,
    FB: Feedback,
{
    loop {
        let button = presses.channel.receive().await;
        let mut terminal = shared.lock().await;
        let missed = presses.take_missed();
        if missed > 0 {
            log_warn!(
                "{} presses found no room on their way to flash (counted)",
                missed
            );
            if terminal.count_missed(missed).await.is_err() {
                log_error!("flash error while counting dropped presses");
            }
        }
        match terminal.handle_press(uptime_ms(), button).await {
            Ok(id) => {
                log_info!("press {} queued as {}/{}", button.name(), id.boot, id.seq);
                feedback.press_queued(id, terminal.queue_len());
                power.with(|p| p.handle_press(uptime_ms(), button));
                shared.pressed.signal(());
            }
            Err(PressError::Full) => {
                log_warn!("press queue full: press dropped (counted)");
                feedback.press_not_queued();
            }
            Err(PressError::Storage(_)) => {
                log_error!("flash error: press not queued");
                feedback.press_not_queued();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_press_with_no_room_is_counted_once_not_lost_silently() {
        let presses: Presses<NoopRawMutex, 2> = Presses::new();
        let happy = Button::from_score(3).unwrap();
        assert!(presses.press(happy));
        assert!(presses.press(happy));
        assert!(!presses.has_room());
        assert!(!presses.press(happy));
        assert!(!presses.press(happy));
        assert_eq!(presses.take_missed(), 2);
        assert_eq!(presses.take_missed(), 0, "counted once");
    }
}
