//! One simulated terminal: the real durable terminal core (queue and boot
//! counter in a RAM flash) driven by a timer and an MQTT connection.
//!
//! The rumqttc event loop runs in its own task and hands events over a
//! channel. `EventLoop::poll` is never raced in a `select!`: cancelling it in
//! the middle of a write would corrupt the stream.
//!
//! With a kill rate, a terminal loses power at random moments: a power cut
//! is armed inside its next flash operations, its connection drops without
//! an MQTT DISCONNECT (so the broker publishes its last will), its RAM is
//! gone, and it boots again from what the flash holds.
//!
//! With a release key ([`crate::SimOta`]), a terminal also runs the real
//! OTA receiver over simulated update partitions ([`crate::device`]):
//! embassy-boot swaps the image in at the next boot, the terminal confirms
//! once connected (or, when told to fail its trial boot, crashes first and
//! is reverted), and faults can be injected (power loss after a chunk,
//! damaged chunks, vanishing).

//!
//! # Layout
//! - this file: boots one after another (the bootloader between them);
//! - [`boot`]: one boot, from the flash to how it ends;
//! - [`link`]: the MQTT connection and its event-loop task.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pressline_protocol::{Ack, Button, PressId, ResetReason};
use pressline_terminal_core::ram_flash::RamFlash;
use pressline_terminal_core::{FlashLayout, SessionCounters};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::device::{BootAction, UpdateHardware};
use crate::{SimConfig, SimCounters};

mod boot;
mod link;

/// Queue capacity of a simulated terminal (in RAM; the flash holds more).
pub const QUEUE_CAPACITY: usize = 1024;
/// A simulated terminal's flash: 64 KiB in 4 KiB pages.
pub type SimFlash = RamFlash<{ 64 * 1024 }, 4096>;

/// Flash layout of a simulated terminal: 2 state pages, 14 queue pages.
pub fn flash_layout() -> FlashLayout {
    FlashLayout {
        state: 0..8192,
        queue: 8192..65536,
    }
}

/// How one boot of a terminal ended.
pub(super) enum BootEnd {
    /// Every press made and acked (true), or stopped early (false).
    Finished(bool),
    /// Power was cut: boot again from flash.
    PowerCut,
    /// A deliberate reset (to install an update): disconnect cleanly first.
    Reboot,
    /// A crash (a new image failing its trial): no clean disconnect.
    Crash,
    /// Gone for good (fault injection).
    Vanished,
}

/// Runs terminal `index` to completion. Returns whether every press it made
/// was acked (false when stopped early).
pub async fn run(
    index: usize,
    config: Arc<SimConfig>,
    counters: Arc<SimCounters>,
    stop: watch::Receiver<bool>,
) -> bool {
    let mut rng = SmallRng::seed_from_u64(
        config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(index as u64),
    );
    let mut flash = Box::new(SimFlash::new());
    let mut hardware = config
        .ota
        .as_ref()
        .map(|o| UpdateHardware::new(o.max_image, config.firmware));
    let mut remaining = config.presses;
    let started = Instant::now();
    let mut reset_reason = ResetReason::PowerOn;
    loop {
        if let Some(hw) = hardware.as_mut() {
            match hw.run_bootloader() {
                Ok(BootAction::Swapped) => {
                    tracing::info!(terminal = %config.terminal_id(index), version = %hw.active_version, "bootloader: swapped in the new image for a trial boot");
                    reset_reason = ResetReason::FirmwareUpdate;
                }
                Ok(BootAction::Reverted) => {
                    tracing::warn!(terminal = %config.terminal_id(index), version = %hw.active_version, "bootloader: trial not confirmed, previous image restored");
                }
                Ok(BootAction::None) => {}
                Err(e) => {
                    tracing::error!(terminal = %config.terminal_id(index), error = ?e, "bootloader failed");
                    return false;
                }
            }
        }
        let start = boot::BootStart {
            index,
            config: &config,
            counters: &counters,
            flash: &mut flash,
            remaining: &mut remaining,
            rng: &mut rng,
            started,
            reset_reason,
            hardware: hardware.as_mut(),
        };
        let end = boot::run_boot(start, stop.clone()).await;
        match end {
            BootEnd::Finished(done) => return done,
            BootEnd::Vanished => return false,
            BootEnd::PowerCut => {
                counters.power_cuts.fetch_add(1, Relaxed);
                flash.power_cycle();
                reset_reason = ResetReason::Brownout;
            }
            BootEnd::Reboot => reset_reason = ResetReason::Software,
            BootEnd::Crash => reset_reason = ResetReason::Watchdog,
        }
    }
}

/// Records press-to-release latency for the presses an ack covers (each
/// once: a repeated ack finds nothing left to time).
pub(super) fn release_latencies(
    pressed_at: &mut HashMap<PressId, Instant>,
    ack: &Ack,
    counters: &SimCounters,
) {
    if ack.last_seq < ack.first_seq {
        return;
    }
    let now = Instant::now();
    let span = u64::from(ack.last_seq - ack.first_seq) + 1;
    if span as usize > pressed_at.len() {
        pressed_at.retain(|id, at| {
            let covered = ack.covers(*id);
            if covered {
                counters.record_ack_latency(now - *at);
            }
            !covered
        });
    } else {
        for seq in ack.first_seq..=ack.last_seq {
            if let Some(at) = pressed_at.remove(&PressId {
                boot: ack.boot,
                seq,
            }) {
                counters.record_ack_latency(now - at);
            }
        }
    }
}

/// Adds what changed since the last report to the shared counters.
pub(super) fn publish_counters(
    counters: &SimCounters,
    reported: &mut SessionCounters,
    now: SessionCounters,
) {
    counters
        .transmissions
        .fetch_add(now.transmissions - reported.transmissions, Relaxed);
    counters
        .resends
        .fetch_add(now.resends - reported.resends, Relaxed);
    counters
        .acked
        .fetch_add(now.acked - reported.acked, Relaxed);
    counters
        .dropped
        .fetch_add(now.dropped - reported.dropped, Relaxed);
    *reported = now;
}

pub(super) fn pick_button(rng: &mut SmallRng, weights: &[u32; 4], total: u32) -> Button {
    let mut roll = rng.gen_range(0..total);
    for (button, &w) in Button::ALL.iter().zip(weights) {
        if roll < w {
            return *button;
        }
        roll -= w;
    }
    Button::Happy
}
