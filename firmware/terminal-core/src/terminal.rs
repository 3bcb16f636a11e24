//! The durable terminal: the [`Session`] logic with its press queue and boot
//! counter in flash (sequential-storage over `embedded-storage-async` NOR
//! flash), so a power cut loses nothing.
//!
//! Guarantees, each tested by cutting power at every word operation of a
//! workload ([`crate::selftest`]):
//! - A press is reported queued only after it is in flash; after a power cut
//!   it comes back with its identity and is resent.
//! - The boot counter is incremented in flash *before* any press of that
//!   boot is numbered, so a `(boot, seq)` identity is never reused.
//! - sequential-storage repairs interrupted writes, so the queue stays
//!   readable.
//! - A full queue keeps the oldest presses; the refused ones are counted
//!   (persisted) and reported in heartbeats.
//!
//! A press released by an ack may reappear after a power cut in the middle
//! of its removal; it is resent and the gateway acks it as a duplicate.

use core::ops::Range;

use embedded_storage_async::nor_flash::MultiwriteNorFlash;
use pressline_protocol::{Ack, Button, FirmwareVersion, Heartbeat, Press, PressId, ResetReason};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};
use sequential_storage::queue::{QueueConfig, QueueStorage};
use serde::{Deserialize, Serialize};

use crate::generation::{next_boot, Origin};
use crate::{Millis, QueueFull, Session, SessionConfig, SessionCounters};

/// No caching: state is read back from flash on each operation, so a power
/// cut can never leave a cache out of step with the flash.
type NoCache<K> = Cache<Uncached, Uncached, Uncached, K>;

/// Where the terminal keeps its state in flash. Both ranges must be whole
/// pages; `state` needs at least 2 pages, `queue` at least 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashLayout {
    /// Boot counter and dropped-press count (a sequential-storage map).
    pub state: Range<u32>,
    /// The press queue (a sequential-storage queue).
    pub queue: Range<u32>,
}

/// A queued press as stored in flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct StoredPress {
    boot: u32,
    seq: u32,
    button: u8,
}

const KEY_BOOT: u8 = 0;
const KEY_DROPPED: u8 = 1;
/// The firmware update in progress or last finished ([`crate::ota`]).
const KEY_OTA: u8 = 2;
/// The identity the boot counter counts for ([`crate::generation`]).
const KEY_IDENTITY: u8 = 3;
const BUF: usize = 32;
/// Map operations read every item on the way to the one asked for, so the
/// buffer must hold the largest item (the OTA record).
const MAP_BUF: usize = crate::ota::RECORD_BUF_LEN + 16;

/// Storage failure (the flash's own error, or sequential-storage's).
pub type StorageError<E> = sequential_storage::Error<E>;

/// Why a press was not queued.
#[derive(Debug, PartialEq)]
pub enum PressError<E> {
    /// The queue (RAM or flash) is full: counted as dropped.
    Full,
    /// The flash failed (e.g. power is going): the press is not queued.
    Storage(StorageError<E>),
}

/// What the device reports about itself in heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStatus {
    pub firmware: FirmwareVersion,
    pub battery_mv: Option<u16>,
    pub rssi_dbm: Option<i8>,
    pub reset_reason: ResetReason,
    pub unix_time_ms: Option<u64>,
}

/// A terminal whose press queue and boot counter live in flash.
pub struct DurableTerminal<F, const N: usize> {
    flash: F,
    layout: FlashLayout,
    session: Session<N>,
    dropped: u32,
    restored: usize,
}

/// Numbers this boot in flash before any press of it is numbered;
/// returns it and the dropped-press count. A new generation under another
/// terminal id first empties the queue (those presses were made as that
/// terminal), counting them as dropped, so a power cut anywhere here never
/// sends them as this one.
async fn number_boot<F: MultiwriteNorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    origin: Origin,
) -> Result<(u32, u32), StorageError<F::Error>> {
    let mut buf = [0u8; MAP_BUF];
    let mut map: MapStorage<u8, &mut F, NoCache<u8>> = MapStorage::new(
        &mut *flash,
        MapConfig::new(layout.state.clone()),
        Cache::new_uncached(),
    );
    let previous: Option<u32> = map.fetch_item(&mut buf, &KEY_BOOT).await?;
    let counted_for: Option<u32> = map.fetch_item(&mut buf, &KEY_IDENTITY).await?;
    let mut dropped: u32 = map.fetch_item(&mut buf, &KEY_DROPPED).await?.unwrap_or(0);
    let next = next_boot(previous, counted_for, origin);
    drop(map);
    if next.drop_queue {
        dropped = dropped.saturating_add(empty_queue(flash, layout).await?);
    }
    let mut map: MapStorage<u8, &mut F, NoCache<u8>> = MapStorage::new(
        &mut *flash,
        MapConfig::new(layout.state.clone()),
        Cache::new_uncached(),
    );
    if next.drop_queue {
        map.store_item_generic(&mut buf, &KEY_DROPPED, &dropped)
            .await?;
    }
    map.store_item_generic(&mut buf, &KEY_BOOT, &next.boot)
        .await?;
    if counted_for != Some(origin.identity) {
        map.store_item_generic(&mut buf, &KEY_IDENTITY, &origin.identity)
            .await?;
    }
    Ok((next.boot, dropped))
}

/// Removes every queued press; returns how many.
async fn empty_queue<F: MultiwriteNorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
) -> Result<u32, StorageError<F::Error>> {
    let mut buf = [0u8; BUF];
    let mut queue: QueueStorage<&mut F, NoCache<()>> = QueueStorage::new(
        flash,
        QueueConfig::new(layout.queue.clone()),
        Cache::new_uncached(),
    );
    let mut removed = 0u32;
    while queue.pop(&mut buf).await?.is_some() {
        removed = removed.saturating_add(1);
    }
    Ok(removed)
}

impl<F: MultiwriteNorFlash, const N: usize> DurableTerminal<F, N> {
    /// Starts a boot: numbers it in flash (a new generation when the
    /// flash holds no counter, or one counted for another terminal id:
    /// see [`crate::generation`]), then restores every press still queued
    /// from earlier boots.
    pub async fn boot(
        mut flash: F,
        layout: FlashLayout,
        config: SessionConfig,
        origin: Origin,
    ) -> Result<Self, StorageError<F::Error>> {
        let (boot, dropped) = number_boot(&mut flash, &layout, origin).await?;
        let mut buf = [0u8; MAP_BUF];
        let mut session = Session::new(boot, config);
        let mut restored = 0;
        {
            let mut queue: QueueStorage<&mut F, NoCache<()>> = QueueStorage::new(
                &mut flash,
                QueueConfig::new(layout.queue.clone()),
                Cache::new_uncached(),
            );
            let mut iter = queue.iter().await?;
            while let Some(entry) = iter.next(&mut buf).await? {
                // An undecodable record cannot be a press we wrote; skip it.
                if let Ok(p) = postcard::from_bytes::<StoredPress>(&entry) {
                    if let Some(button) = Button::from_score(p.button) {
                        if session
                            .restore(
                                PressId {
                                    boot: p.boot,
                                    seq: p.seq,
                                },
                                button,
                            )
                            .is_err()
                        {
                            break;
                        }
                        restored += 1;
                    }
                }
            }
        }
        Ok(DurableTerminal {
            flash,
            layout,
            session,
            dropped,
            restored,
        })
    }

    /// A visitor pressed `button`. The press is in flash when this returns
    /// `Ok`.
    pub async fn handle_press(
        &mut self,
        now: Millis,
        button: Button,
    ) -> Result<PressId, PressError<F::Error>> {
        if self.session.queue_len() >= self.session.queue_capacity() {
            return self.count_dropped().await;
        }
        let id = self.session.next_id();
        let record = StoredPress {
            boot: id.boot,
            seq: id.seq,
            button: button.score(),
        };
        let mut bytes = [0u8; BUF];
        let encoded = postcard::to_slice(&record, &mut bytes).map_err(|_| PressError::Full)?;
        let pushed = {
            let mut queue: QueueStorage<&mut F, NoCache<()>> = QueueStorage::new(
                &mut self.flash,
                QueueConfig::new(self.layout.queue.clone()),
                Cache::new_uncached(),
            );
            queue.push(encoded, false).await
        };
        match pushed {
            Ok(()) => {}
            Err(sequential_storage::Error::FullStorage) => return self.count_dropped().await,
            Err(e) => return Err(PressError::Storage(e)),
        }
        match self.session.handle_press(now, button) {
            Ok(assigned) => Ok(assigned),
            Err(QueueFull) => Err(PressError::Full),
        }
    }

    async fn count_dropped(&mut self) -> Result<PressId, PressError<F::Error>> {
        self.count_missed(1).await?;
        Err(PressError::Full)
    }

    /// `n` presses the board saw but could not hand over (its intake was
    /// full): counted as dropped, in flash, so the gateway hears of them.
    pub async fn count_missed(&mut self, n: u32) -> Result<(), PressError<F::Error>> {
        if n == 0 {
            return Ok(());
        }
        self.dropped = self.dropped.saturating_add(n);
        let mut buf = [0u8; MAP_BUF];
        let mut map: MapStorage<u8, &mut F, NoCache<u8>> = MapStorage::new(
            &mut self.flash,
            MapConfig::new(self.layout.state.clone()),
            Cache::new_uncached(),
        );
        map.store_item_generic(&mut buf, &KEY_DROPPED, &self.dropped)
            .await
            .map_err(PressError::Storage)
    }

    /// A durable ack arrived: release what it names, in RAM and in flash.
    pub async fn handle_ack(
        &mut self,
        now: Millis,
        ack: &Ack,
    ) -> Result<usize, StorageError<F::Error>> {
        let released = self.session.handle_ack(now, ack);
        if released == 0 {
            return Ok(0);
        }
        let mut buf = [0u8; BUF];
        let mut queue: QueueStorage<&mut F, NoCache<()>> = QueueStorage::new(
            &mut self.flash,
            QueueConfig::new(self.layout.queue.clone()),
            Cache::new_uncached(),
        );
        let mut iter = queue.iter().await?;
        let mut removed = 0;
        while let Some(entry) = iter.next(&mut buf).await? {
            let covered = postcard::from_bytes::<StoredPress>(&entry)
                .map(|p| {
                    ack.covers(PressId {
                        boot: p.boot,
                        seq: p.seq,
                    })
                })
                .unwrap_or(false);
            if covered {
                entry.pop().await?;
                removed += 1;
                if removed == released {
                    break;
                }
            }
        }
        Ok(released)
    }

    pub fn handle_connected(&mut self, now: Millis) {
        self.session.handle_connected(now)
    }

    pub fn handle_disconnected(&mut self, now: Millis) {
        self.session.handle_disconnected(now)
    }

    pub fn poll_transmit(&mut self, now: Millis) -> Option<Press> {
        self.session.poll_transmit(now)
    }

    pub fn poll_timeout(&self) -> Option<Millis> {
        self.session.poll_timeout()
    }

    pub fn boot_number(&self) -> u32 {
        self.session.boot()
    }

    pub fn queue_len(&self) -> usize {
        self.session.queue_len()
    }

    pub fn queue_capacity(&self) -> usize {
        self.session.queue_capacity()
    }

    pub fn is_connected(&self) -> bool {
        self.session.is_connected()
    }

    pub fn counters(&self) -> SessionCounters {
        self.session.counters()
    }

    /// Presses lost to a full queue since the flash was first used.
    pub fn dropped_total(&self) -> u32 {
        self.dropped
    }

    /// Presses restored from flash at boot.
    pub fn restored(&self) -> usize {
        self.restored
    }

    /// Whether `id` is still queued.
    pub fn is_queued(&self, id: PressId) -> bool {
        self.session.contains(id)
    }

    /// The heartbeat to publish now.
    pub fn heartbeat(&self, now: Millis, device: DeviceStatus) -> Heartbeat {
        Heartbeat {
            boot: self.session.boot(),
            uptime_ms: now,
            firmware: device.firmware,
            battery_mv: device.battery_mv,
            rssi_dbm: device.rssi_dbm,
            queue_depth: self.session.queue_len() as u32,
            queue_capacity: self.session.queue_capacity() as u32,
            dropped_presses: self.dropped,
            reset_reason: device.reset_reason as u8,
            unix_time_ms: device.unix_time_ms,
        }
    }

    /// The flash (tests use it to cut power under a live terminal).
    fn map(&mut self) -> MapStorage<u8, &mut F, NoCache<u8>> {
        MapStorage::new(
            &mut self.flash,
            MapConfig::new(self.layout.state.clone()),
            Cache::new_uncached(),
        )
    }

    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Takes the flash back (for a simulated power cut and reboot).
    pub fn into_flash(self) -> F {
        self.flash
    }
}

/// The OTA receiver keeps its record in the same state map as the boot
/// counter, so one flash region holds everything that must survive a boot.
impl<F: MultiwriteNorFlash, const N: usize> crate::ota::OtaJournal for DurableTerminal<F, N> {
    type Error = StorageError<F::Error>;

    async fn load_ota(&mut self) -> Result<Option<crate::ota::OtaRecord>, Self::Error> {
        let mut buf = [0u8; MAP_BUF];
        let bytes: Option<&[u8]> = self.map().fetch_item(&mut buf, &KEY_OTA).await?;
        // A record this build cannot decode is treated as none: the next
        // offer starts over.
        Ok(bytes.and_then(|b| postcard::from_bytes(b).ok()))
    }

    async fn save_ota(&mut self, record: &crate::ota::OtaRecord) -> Result<(), Self::Error> {
        let mut encoded = [0u8; crate::ota::RECORD_BUF_LEN];
        let Ok(bytes) = postcard::to_slice(record, &mut encoded) else {
            return Err(sequential_storage::Error::BufferTooSmall(
                crate::ota::RECORD_BUF_LEN,
            ));
        };
        let mut buf = [0u8; MAP_BUF];
        let bytes: &[u8] = bytes;
        self.map()
            .store_item_generic::<&[u8]>(&mut buf, &KEY_OTA, &bytes)
            .await
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use embassy_futures::block_on;

    use crate::selftest::{self, TestFlash};

    fn check(f: impl FnOnce(&mut TestFlash) -> selftest::Check) {
        let mut flash = TestFlash::new();
        if let Err(what) = f(&mut flash) {
            panic!("{what}");
        }
    }

    #[test]
    fn presses_survive_a_reboot_with_their_identity() {
        check(|f| block_on(selftest::presses_survive_a_reboot(f)));
    }

    #[test]
    fn boot_numbers_are_never_reused() {
        check(|f| block_on(selftest::boot_numbers_are_never_reused(f)));
    }

    #[test]
    fn a_full_queue_keeps_the_oldest_and_counts_the_rest() {
        check(|f| block_on(selftest::a_full_queue_keeps_the_oldest(f)));
    }

    #[test]
    fn the_ota_record_lives_in_the_state_map_beside_the_boot_counter() {
        use crate::ota::{OtaJournal, OtaRecord, Phase};
        use crate::DurableTerminal;
        use pressline_protocol::{Button, FirmwareVersion};
        let record = OtaRecord {
            rollout: 3,
            attempt: 1,
            target: FirmwareVersion::parse("1.2.0").unwrap(),
            previous: FirmwareVersion::parse("1.1.0").unwrap(),
            size: 123_456,
            sha256: [7; 32],
            image_signature: [[8; 32], [9; 32]],
            written: 4096,
            phase: Phase::Downloading,
        };
        let mut flash = TestFlash::new();
        block_on(async {
            let config = pressline_terminal_config();
            let mut t: DurableTerminal<_, 8> =
                DurableTerminal::boot(&mut flash, selftest::layout(), config, ORIGIN)
                    .await
                    .unwrap();
            assert_eq!(t.load_ota().await.unwrap(), None);
            t.save_ota(&record).await.unwrap();
            t.handle_press(0, Button::Happy).await.unwrap();
            // Many progress updates: the map compacts, nothing is lost.
            for written in (0..200u32).map(|i| i * 4096) {
                t.save_ota(&OtaRecord { written, ..record }).await.unwrap();
            }
            drop(t);
            let mut t: DurableTerminal<_, 8> =
                DurableTerminal::boot(&mut flash, selftest::layout(), config, ORIGIN)
                    .await
                    .unwrap();
            assert_eq!(
                t.load_ota().await.unwrap(),
                Some(OtaRecord {
                    written: 199 * 4096,
                    ..record
                })
            );
            assert_eq!(t.queue_len(), 1);
            assert_eq!(
                t.boot_number(),
                crate::generation::first_boot(ORIGIN.entropy) + 1
            );
        });
    }

    const ORIGIN: crate::Origin = crate::Origin {
        identity: 1,
        entropy: 2,
    };

    fn pressline_terminal_config() -> crate::SessionConfig {
        crate::SessionConfig {
            ack_timeout_ms: 1_000,
            max_in_flight: 8,
        }
    }

    #[test]
    fn a_power_cut_at_any_word_loses_no_queued_press() {
        check(|f| block_on(selftest::power_cut_at_every_word(f)));
    }

    #[test]
    fn a_flash_provisioned_as_another_terminal_starts_a_new_generation() {
        check(|f| block_on(selftest::another_terminal_starts_a_new_generation(f)));
    }
}

#[cfg(test)]
mod properties {
    extern crate std;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    use embassy_futures::block_on;
    use pressline_protocol::{Ack, Button, PressId};
    use proptest::prelude::*;

    use crate::selftest::{layout, TestFlash};
    use crate::{DurableTerminal, Origin, PressError, SessionConfig};

    const ORIGIN: Origin = Origin {
        identity: 3,
        entropy: 4,
    };

    #[derive(Debug, Clone)]
    enum Step {
        Press,
        /// Ack the first `n` presses still queued (as the gateway would, in order).
        AckFirst(usize),
        /// Power cut after `n` word operations of the next step, then reboot.
        PowerCut(u32),
        Reboot,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Press),
            2 => (1usize..5).prop_map(Step::AckFirst),
            1 => (0u32..200).prop_map(Step::PowerCut),
            1 => Just(Step::Reboot),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        /// Against a model: what is confirmed and not released is always
        /// queued, identities are unique forever, the queue always reopens.
        #[test]
        fn the_flash_queue_matches_the_model(steps in proptest::collection::vec(step(), 1..40)) {
            let config = SessionConfig { ack_timeout_ms: 1_000, max_in_flight: 64 };
            let mut flash = TestFlash::new();
            let result: Result<(), TestCaseError> = block_on(async {
                let mut must_have: Vec<PressId> = Vec::new();
                let mut ever: BTreeSet<PressId> = BTreeSet::new();
                let mut t: DurableTerminal<&mut TestFlash, 64> =
                    DurableTerminal::boot(&mut flash, layout(), config, ORIGIN).await.unwrap();
                for st in steps {
                    let mut reboot = false;
                    match st {
                        Step::Press => match t.handle_press(0, Button::Happy).await {
                            Ok(id) => {
                                prop_assert!(ever.insert(id), "identity reused: {:?}", id);
                                must_have.push(id);
                            }
                            Err(PressError::Full) => {}
                            Err(PressError::Storage(_)) => prop_assert!(false, "storage error with power on"),
                        },
                        Step::AckFirst(n) => {
                            let take: Vec<PressId> = must_have.iter().copied().take(n).collect();
                            for id in take {
                                let ack = Ack { boot: id.boot, first_seq: id.seq, last_seq: id.seq };
                                t.handle_ack(0, &ack).await.unwrap();
                                must_have.retain(|m| *m != id);
                            }
                        }
                        Step::PowerCut(n) => {
                            // Power dies somewhere inside the next press.
                            t.flash_mut().cut_power_after(n);
                            if let Ok(id) = t.handle_press(0, Button::Unhappy).await {
                                prop_assert!(ever.insert(id), "identity reused: {:?}", id);
                                must_have.push(id);
                            }
                            reboot = true;
                        }
                        Step::Reboot => reboot = true,
                    }
                    if reboot {
                        let f = t.into_flash();
                        f.power_cycle();
                        t = DurableTerminal::boot(f, layout(), config, ORIGIN).await.unwrap();
                        // Restored presses keep their identities (already in `ever`).
                    }
                    for id in &must_have {
                        prop_assert!(t.is_queued(*id), "lost {:?}", id);
                    }
                }
                Ok(())
            });
            result?;
        }
    }
}
