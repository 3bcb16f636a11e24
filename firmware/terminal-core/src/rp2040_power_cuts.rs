//! Power cuts at the RP2040's flash geometry (4 KiB sectors, byte writes,
//! as embassy-rp's flash driver declares it) while the press queue rolls
//! over from page to page and wraps around: at every write and erase
//! around each rollover (cut before its first byte, half-way or before its
//! last byte, bytes written in order), and at every 100th elsewhere. After
//! each cut the terminal boots, every press it confirmed and the gateway
//! has not acked is still queued, the boot has a new number, and a new
//! press gets an identity never used.
//!
//! Host only: the QEMU runner's RAM does not hold the 24 KiB flash.

extern crate std;

use std::vec::Vec;

use embedded_storage_async::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, ReadNorFlash};
use pressline_protocol::{Ack, Button, PressId};

use crate::ram_flash::{RamFlash, RamFlashError};
use crate::{DurableTerminal, FlashLayout, Origin, SessionConfig};

const SECTOR: usize = 4096;
/// Two sectors of terminal state, four of press queue.
type Rp2040Flash = RamFlash<{ 6 * SECTOR }, SECTOR, 1>;

fn layout() -> FlashLayout {
    FlashLayout {
        state: 0..2 * SECTOR as u32,
        queue: 2 * SECTOR as u32..6 * SECTOR as u32,
    }
}

const CONFIG: SessionConfig = SessionConfig {
    ack_timeout_ms: 1_000,
    max_in_flight: 8,
};

const ORIGIN: Origin = Origin {
    identity: 0x5eed,
    entropy: 0xface,
};

/// Enough presses for the queue to cross its four pages and wrap around.
const PRESSES: u64 = 1_400;

/// One write or erase the terminal asked of the flash.
#[derive(Debug, Clone, Copy)]
struct Call {
    sector: u32,
}

/// The flash as the terminal sees it: every call logged, and power cut
/// half-way through the call numbered `cut_at`.
struct Cutting<'f> {
    inner: &'f mut Rp2040Flash,
    calls: u64,
    cut_at: Option<u64>,
    log: Vec<Call>,
}

impl Cutting<'_> {
    fn begin(&mut self, offset: u32, bytes: usize) {
        if self.cut_at == Some(self.calls) {
            // Before the first byte, half-way, or before the last one.
            let done = match self.calls % 3 {
                0 => 0,
                1 => bytes / 2,
                _ => bytes.saturating_sub(1),
            };
            self.inner.cut_power_after(done as u32);
        }
        self.calls += 1;
        self.log.push(Call {
            sector: offset / SECTOR as u32,
        });
    }
}

impl ErrorType for Cutting<'_> {
    type Error = RamFlashError;
}

impl ReadNorFlash for Cutting<'_> {
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.inner.read(offset, bytes).await
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl NorFlash for Cutting<'_> {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = SECTOR;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.begin(from, to.saturating_sub(from) as usize);
        self.inner.erase(from, to).await
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.begin(offset, bytes.len());
        self.inner.write(offset, bytes).await
    }
}

impl MultiwriteNorFlash for Cutting<'_> {}

/// What a run saw before its cut.
#[derive(Default)]
struct Observed {
    boot: Option<u32>,
    /// Presses confirmed in flash.
    queued: Vec<PressId>,
    /// Presses the gateway acked: safe there, in flash or not.
    released: Vec<PressId>,
}

/// Boot, then presses, the gateway acking each eight as they go out.
async fn workload(flash: &mut Cutting<'_>, seen: &mut Observed) -> Result<(), ()> {
    let mut t: DurableTerminal<&mut Cutting<'_>, 16> =
        DurableTerminal::boot(&mut *flash, layout(), CONFIG, ORIGIN)
            .await
            .map_err(|_| ())?;
    let boot = t.boot_number();
    seen.boot = Some(boot);
    t.handle_connected(0);
    for i in 0..PRESSES {
        let button = Button::from_score((i % 4) as u8 + 1).unwrap_or(Button::Happy);
        let id = t.handle_press(i, button).await.map_err(|_| ())?;
        seen.queued.push(id);
        if i % 8 == 7 {
            while t.poll_transmit(i).is_some() {}
            let ack = Ack {
                boot,
                first_seq: id.seq - 7,
                last_seq: id.seq,
            };
            seen.released
                .extend((ack.first_seq..=ack.last_seq).map(|seq| PressId { boot, seq }));
            t.handle_ack(i, &ack).await.map_err(|_| ())?;
        }
    }
    Ok(())
}

/// The calls at which the queue moved to another sector.
fn rollovers(log: &[Call]) -> Vec<u64> {
    let queue = layout().queue;
    let in_queue =
        |c: &Call| (queue.start / SECTOR as u32..queue.end / SECTOR as u32).contains(&c.sector);
    let mut last = None;
    let mut at = Vec::new();
    for (i, call) in log.iter().enumerate() {
        if !in_queue(call) {
            continue;
        }
        if last.is_some_and(|s| s != call.sector) {
            at.push(i as u64);
        }
        last = Some(call.sector);
    }
    at
}

fn run(cut_at: Option<u64>) -> (Rp2040Flash, Observed, Vec<Call>) {
    let mut flash = Rp2040Flash::new();
    let mut seen = Observed::default();
    let mut cutting = Cutting {
        inner: &mut flash,
        calls: 0,
        cut_at,
        log: Vec::new(),
    };
    let finished = embassy_futures::block_on(workload(&mut cutting, &mut seen));
    let log = core::mem::take(&mut cutting.log);
    match cut_at {
        None => assert!(finished.is_ok(), "the workload runs without cuts"),
        Some(cut) => assert!(
            finished.is_err() && !flash.is_powered(),
            "the power was cut at call {cut}"
        ),
    }
    (flash, seen, log)
}

#[test]
fn a_power_cut_at_any_write_across_queue_rollovers_loses_no_press() {
    let (_, _, log) = run(None);
    let rollovers = rollovers(&log);
    // Each move to another sector is a few calls (the page markers).
    let moves = 1 + rollovers.windows(2).filter(|w| w[1] - w[0] > 50).count();
    assert!(
        moves >= 4,
        "the queue crosses its four sectors and wraps around: {rollovers:?}"
    );
    let total = log.len() as u64;
    let mut cuts: Vec<u64> = rollovers
        .iter()
        .flat_map(|&r| r.saturating_sub(10)..(r + 10).min(total))
        .chain((0..total).step_by(100))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    std::eprintln!(
        "{} flash calls, rollovers at {rollovers:?}, {} cuts",
        total,
        cuts.len()
    );
    for cut in cuts {
        let (mut flash, seen, _) = run(Some(cut));
        flash.power_cycle();
        embassy_futures::block_on(async {
            let mut t: DurableTerminal<&mut Rp2040Flash, 16> =
                DurableTerminal::boot(&mut flash, layout(), CONFIG, ORIGIN)
                    .await
                    .unwrap_or_else(|e| panic!("boot after a cut at call {cut}: {e:?}"));
            for id in seen.queued.iter().filter(|id| !seen.released.contains(id)) {
                assert!(t.is_queued(*id), "cut at call {cut}: {id:?} lost");
            }
            if let Some(boot) = seen.boot {
                assert!(t.boot_number() > boot, "cut at call {cut}: boot reused");
            }
            let id = t
                .handle_press(1_000_000, Button::Happy)
                .await
                .unwrap_or_else(|e| panic!("press after a cut at call {cut}: {e:?}"));
            assert!(
                !seen.queued.contains(&id),
                "cut at call {cut}: {id:?} reused"
            );
        });
    }
}
