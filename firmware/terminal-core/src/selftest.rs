//! Behaviour checks of the durable terminal, written once and run twice: as
//! host unit tests and on an emulated Cortex-M (`firmware/qemu-tests`).
//!
//! Each check is an `async fn` returning `Err(what failed)`; the caller
//! provides the executor (any `block_on`).

use pressline_protocol::{Ack, Button, PressId};

use crate::generation::{first_boot, Origin};
use crate::ram_flash::RamFlash;
use crate::{DurableTerminal, FlashLayout, PressError, SessionConfig};

/// Flash used by the checks: 2 state pages and 6 queue pages of 1 KiB.
pub type TestFlash = RamFlash<8192, 1024>;
/// A small terminal over [`TestFlash`].
pub type TestTerminal<'f> = DurableTerminal<&'f mut TestFlash, 64>;

pub fn layout() -> FlashLayout {
    FlashLayout {
        state: 0..2048,
        queue: 2048..8192,
    }
}

/// A layout whose queue is a single page, to fill it quickly.
pub fn tiny_layout() -> FlashLayout {
    FlashLayout {
        state: 0..2048,
        queue: 2048..3072,
    }
}

const CONFIG: SessionConfig = SessionConfig {
    ack_timeout_ms: 1_000,
    max_in_flight: 8,
};

/// The terminal the checks run as (a fixed "random" value: checks are
/// reproducible).
const ORIGIN: Origin = Origin {
    identity: 0x5e1f_7e57,
    entropy: 77,
};

/// The outcome of one check.
pub type Check = Result<(), &'static str>;

fn ensure(cond: bool, what: &'static str) -> Check {
    if cond {
        Ok(())
    } else {
        Err(what)
    }
}

/// The names of the checks, in the order [`run_all`] runs them.
pub const NAMES: [&str; 7] = [
    "unacked presses are resent on reconnect and after the ack timeout",
    "a bouncing button counts once",
    "presses survive a reboot with their identity",
    "boot numbers are never reused",
    "a full queue keeps the oldest and counts the rest",
    "a power cut at any word loses no queued press",
    "a flash provisioned as another terminal starts a new generation",
];

/// Runs every check on a fresh flash, reporting each result.
pub async fn run_all(flash: &mut TestFlash, mut report: impl FnMut(&str, Check)) {
    report(NAMES[0], resends());
    report(NAMES[1], debounce());
    *flash = TestFlash::new();
    report(NAMES[2], presses_survive_a_reboot(flash).await);
    *flash = TestFlash::new();
    report(NAMES[3], boot_numbers_are_never_reused(flash).await);
    *flash = TestFlash::new();
    report(NAMES[4], a_full_queue_keeps_the_oldest(flash).await);
    *flash = TestFlash::new();
    report(NAMES[5], power_cut_at_every_word(flash).await);
    *flash = TestFlash::new();
    report(
        NAMES[6],
        another_terminal_starts_a_new_generation(flash).await,
    );
}

/// The session's resend rules.
pub fn resends() -> Check {
    let mut s: crate::Session<8> = crate::Session::new(0, CONFIG);
    s.handle_press(0, Button::Happy).map_err(|_| "press")?;
    ensure(
        s.poll_transmit(0).is_none(),
        "nothing is sent while disconnected",
    )?;
    s.handle_connected(1);
    ensure(s.poll_transmit(1).is_some(), "sent after connect")?;
    ensure(
        s.poll_transmit(500).is_none(),
        "not resent before the ack timeout",
    )?;
    ensure(
        s.poll_transmit(1_001).is_some(),
        "resent after the ack timeout",
    )?;
    s.handle_disconnected(1_100);
    s.handle_connected(1_200);
    ensure(s.poll_transmit(1_200).is_some(), "resent after a reconnect")?;
    ensure(
        s.handle_ack(
            1_300,
            &Ack {
                boot: 0,
                first_seq: 0,
                last_seq: 0,
            },
        ) == 1,
        "the ack releases it",
    )?;
    ensure(
        s.poll_transmit(5_000).is_none(),
        "an acked press is never resent",
    )
}

/// Debouncing.
pub fn debounce() -> Check {
    let mut d = crate::Debouncer::default();
    let mut presses = 0;
    for (t, level) in [1, 0, 1, 0, 1].iter().enumerate() {
        presses += d.handle_level(t as u64, *level == 1) as u32;
    }
    for t in 5..200 {
        presses += d.handle_level(t, true) as u32;
    }
    for t in 200..400 {
        presses += d.handle_level(t, false) as u32;
    }
    ensure(presses == 1, "one press per push")
}

/// Presses queued before a reboot come back with their identity.
pub async fn presses_survive_a_reboot(flash: &mut TestFlash) -> Check {
    let mut t: TestTerminal = DurableTerminal::boot(&mut *flash, layout(), CONFIG, ORIGIN)
        .await
        .map_err(|_| "first boot")?;
    let first_boot = t.boot_number();
    let mut ids = [PressId { boot: 0, seq: 0 }; 5];
    for (i, id) in ids.iter_mut().enumerate() {
        *id = t
            .handle_press(i as u64, Button::Happy)
            .await
            .map_err(|_| "press")?;
    }
    t.handle_connected(10);
    while t.poll_transmit(10).is_some() {}
    let ack = Ack {
        boot: first_boot,
        first_seq: 0,
        last_seq: 1,
    };
    ensure(
        t.handle_ack(11, &ack).await.map_err(|_| "ack")? == 2,
        "ack releases two",
    )?;
    drop(t);
    flash.power_cycle();
    let mut t: TestTerminal = DurableTerminal::boot(&mut *flash, layout(), CONFIG, ORIGIN)
        .await
        .map_err(|_| "second boot")?;
    ensure(t.boot_number() == first_boot + 1, "boot number incremented")?;
    ensure(t.restored() == 3, "three presses restored")?;
    for id in &ids[2..] {
        ensure(t.is_queued(*id), "unacked press restored with its identity")?;
    }
    for id in &ids[..2] {
        ensure(!t.is_queued(*id), "acked press stays released")?;
    }
    t.handle_connected(0);
    let p = t.poll_transmit(0).ok_or("restored press is resent")?;
    ensure(p.age_ms.is_none(), "age of a restored press is unknown")?;
    let new = t
        .handle_press(1, Button::Unhappy)
        .await
        .map_err(|_| "press after reboot")?;
    ensure(
        new == PressId {
            boot: first_boot + 1,
            seq: 0,
        },
        "numbering restarts in the new boot",
    )
}

/// Every boot gets a new number.
pub async fn boot_numbers_are_never_reused(flash: &mut TestFlash) -> Check {
    let mut last = None;
    for _ in 0..5 {
        let t: TestTerminal = DurableTerminal::boot(&mut *flash, layout(), CONFIG, ORIGIN)
            .await
            .map_err(|_| "boot")?;
        let b = t.boot_number();
        ensure(last.is_none_or(|l| b > l), "boot number increases")?;
        last = Some(b);
    }
    Ok(())
}

/// A full queue refuses new presses, keeps the old ones, and counts the
/// refused ones durably.
pub async fn a_full_queue_keeps_the_oldest(flash: &mut TestFlash) -> Check {
    let mut t: TestTerminal = DurableTerminal::boot(&mut *flash, tiny_layout(), CONFIG, ORIGIN)
        .await
        .map_err(|_| "boot")?;
    let mut queued = 0u32;
    let mut refused = 0u32;
    for i in 0..200u64 {
        match t.handle_press(i, Button::VeryUnhappy).await {
            Ok(_) => queued += 1,
            Err(PressError::Full) => refused += 1,
            Err(PressError::Storage(_)) => return Err("storage error while filling"),
        }
    }
    ensure(queued > 0 && refused > 0, "the queue fills up")?;
    ensure(t.dropped_total() == refused, "refused presses are counted")?;
    ensure(
        t.is_queued(PressId {
            boot: t.boot_number(),
            seq: 0,
        }),
        "the oldest press is kept",
    )?;
    drop(t);
    flash.power_cycle();
    let t: TestTerminal = DurableTerminal::boot(&mut *flash, tiny_layout(), CONFIG, ORIGIN)
        .await
        .map_err(|_| "reboot")?;
    ensure(
        t.dropped_total() == refused,
        "the dropped count survives a reboot",
    )?;
    ensure(
        t.restored() == queued as usize,
        "every queued press survives",
    )?;
    let hb = t.heartbeat(
        5,
        crate::DeviceStatus {
            firmware: pressline_protocol::FirmwareVersion {
                major: 1,
                minor: 0,
                patch: 0,
            },
            battery_mv: Some(3700),
            rssi_dbm: Some(-60),
            reset_reason: pressline_protocol::ResetReason::PowerOn,
            unix_time_ms: None,
        },
    );
    ensure(
        hb.dropped_presses == refused && hb.queue_depth == queued,
        "heartbeat reports queue and drops",
    )
}

/// What one run of the power-cut workload observed before the cut.
struct Observed {
    /// Boot number of the interrupted boot, if booting completed.
    boot: Option<u32>,
    /// Presses confirmed queued (in flash).
    queued: heapless::Vec<PressId, 16>,
    /// Presses the gateway acked (safe at the gateway).
    released: heapless::Vec<PressId, 16>,
}

/// The workload: boot, six presses, ack three, three more presses.
async fn workload(flash: &mut TestFlash, seen: &mut Observed) -> Result<(), ()> {
    let mut t: TestTerminal = DurableTerminal::boot(&mut *flash, layout(), CONFIG, ORIGIN)
        .await
        .map_err(|_| ())?;
    seen.boot = Some(t.boot_number());
    for i in 0..6u64 {
        let id = t
            .handle_press(
                i,
                Button::from_score((i % 4) as u8 + 1).unwrap_or(Button::Happy),
            )
            .await
            .map_err(|_| ())?;
        let _ = seen.queued.push(id);
    }
    t.handle_connected(10);
    while t.poll_transmit(10).is_some() {}
    // Once the gateway's ack has arrived, those presses are safe at the
    // gateway whether or not their removal from flash completes.
    let ack = Ack {
        boot: t.boot_number(),
        first_seq: 0,
        last_seq: 2,
    };
    for s in 0..3 {
        let _ = seen.released.push(PressId {
            boot: ack.boot,
            seq: s,
        });
    }
    t.handle_ack(11, &ack).await.map_err(|_| ())?;
    for i in 0..3u64 {
        let id = t
            .handle_press(20 + i, Button::Happy)
            .await
            .map_err(|_| ())?;
        let _ = seen.queued.push(id);
    }
    Ok(())
}

/// Cuts power after every possible number of word operations of the
/// workload; after each cut the terminal must boot, have every press it
/// confirmed and did not release, and number new presses with a fresh boot.
pub async fn power_cut_at_every_word(flash: &mut TestFlash) -> Check {
    // Measure the workload once without a cut.
    *flash = TestFlash::new();
    let mut seen = Observed {
        boot: None,
        queued: heapless::Vec::new(),
        released: heapless::Vec::new(),
    };
    workload(flash, &mut seen)
        .await
        .map_err(|_| "workload without power cuts")?;
    let total = flash.operations() as u32;
    ensure(total > 20, "workload writes to flash")?;

    for cut in 0..=total {
        *flash = TestFlash::new();
        flash.cut_power_after(cut);
        let mut seen = Observed {
            boot: None,
            queued: heapless::Vec::new(),
            released: heapless::Vec::new(),
        };
        let _ = workload(flash, &mut seen).await;
        flash.power_cycle();
        let mut t: TestTerminal = DurableTerminal::boot(&mut *flash, layout(), CONFIG, ORIGIN)
            .await
            .map_err(|_| "boot after a power cut")?;
        for id in &seen.queued {
            if !seen.released.contains(id) {
                ensure(t.is_queued(*id), "a confirmed press survives the power cut")?;
            }
        }
        if let Some(b) = seen.boot {
            ensure(
                t.boot_number() > b,
                "the boot after a power cut has a new number",
            )?;
        }
        // The queue is readable and usable.
        let id = t
            .handle_press(100, Button::Happy)
            .await
            .map_err(|_| "press after a power cut")?;
        ensure(!seen.queued.contains(&id), "no identity is reused")?;
    }
    Ok(())
}

/// A fresh flash starts a generation at a random boot; the same terminal
/// counts on; the flash provisioned as another terminal starts another
/// generation and drops what was queued as the first (counted).
pub async fn another_terminal_starts_a_new_generation(flash: &mut TestFlash) -> Check {
    let mut t: TestTerminal = DurableTerminal::boot(&mut *flash, layout(), CONFIG, ORIGIN)
        .await
        .map_err(|_| "first boot")?;
    ensure(
        t.boot_number() == first_boot(ORIGIN.entropy),
        "a fresh flash starts a generation",
    )?;
    for i in 0..3 {
        t.handle_press(i, Button::Happy)
            .await
            .map_err(|_| "press")?;
    }
    drop(t);
    let t: TestTerminal = DurableTerminal::boot(&mut *flash, layout(), CONFIG, ORIGIN)
        .await
        .map_err(|_| "second boot")?;
    ensure(
        t.boot_number() == first_boot(ORIGIN.entropy) + 1,
        "the same terminal counts on",
    )?;
    ensure(t.restored() == 3, "its presses stay queued")?;
    drop(t);
    let spare = Origin {
        identity: ORIGIN.identity ^ 1,
        entropy: 91,
    };
    let t: TestTerminal = DurableTerminal::boot(&mut *flash, layout(), CONFIG, spare)
        .await
        .map_err(|_| "boot as another terminal")?;
    ensure(
        t.boot_number() == first_boot(91),
        "another terminal: another generation",
    )?;
    ensure(
        t.restored() == 0,
        "presses made as the first terminal are not sent as this one",
    )?;
    ensure(t.dropped_total() == 3, "and they are counted as dropped")
}
