//! The receiver against the real embassy-boot bootloader, on RAM flash.

extern crate std;

use std::vec::Vec;

use embassy_boot::{BootLoader, BootLoaderConfig, FirmwareUpdater, FirmwareUpdaterConfig};
use embassy_futures::block_on;
use pressline_protocol::ota::{pack, pack_with, Artifact};
use pressline_protocol::ota_transfer::{chunk_crc, Chunk, Offer, OtaFailure, OtaState};
use pressline_protocol::FirmwareVersion;

use super::*;
use crate::ram_flash::RamFlash;

type Active = RamFlash<{ 16 * 1024 }, 4096>;
type Dfu = RamFlash<{ 20 * 1024 }, 4096>;
type BootState = RamFlash<4096, 4096>;

/// A terminal's flash: active and DFU partitions, bootloader state, and the
/// OTA journal (kept in RAM here; the state map in the real terminal).
struct Device {
    active: Active,
    dfu: Dfu,
    state: BootState,
    journal: MemJournal,
    running: FirmwareVersion,
    chunk_size: u32,
}

fn v(s: &str) -> FirmwareVersion {
    FirmwareVersion::parse(s).unwrap()
}

fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

fn config() -> OtaConfig {
    OtaConfig {
        public_key: key(1).verifying_key().to_bytes(),
        board: "pico-w",
        max_image: 16 * 1024,
        chunk_size: 4096,
        request_timeout_ms: 2_000,
        progress_step: 10,
    }
}

/// An image that is not a multiple of the write size (padding is tested).
fn image(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

fn offer_of(artifact: &[u8]) -> (Vec<u8>, [u8; 64], [u8; 64]) {
    let a = Artifact::parse(artifact).unwrap();
    (a.manifest_bytes.to_vec(), a.signature, a.image_signature)
}

impl Device {
    fn new() -> Device {
        let mut d = Device {
            active: Active::new(),
            dfu: Dfu::new(),
            state: BootState::new(),
            journal: MemJournal::default(),
            running: v("1.0.0"),
            chunk_size: 4096,
        };
        // The factory image.
        block_on(async {
            use embedded_storage_async::nor_flash::NorFlash;
            d.active.write(0, &[0xA5; 4096]).await.unwrap();
        });
        d
    }

    /// Runs one boot of the application: `f` gets the receiver.
    fn boot<R>(
        &mut self,
        f: impl AsyncFnOnce(&mut OtaReceiver<&mut Dfu, &mut BootState>, &mut MemJournal) -> R,
    ) -> R {
        let mut aligned = [0u8; 4];
        let updater = FirmwareUpdater::new(
            FirmwareUpdaterConfig {
                dfu: &mut self.dfu,
                state: &mut self.state,
            },
            &mut aligned,
        );
        let journal = &mut self.journal;
        let config = OtaConfig {
            chunk_size: self.chunk_size,
            ..config()
        };
        block_on(async {
            let mut rx = OtaReceiver::boot(updater, config, self.running, journal)
                .await
                .unwrap();
            rx.handle_connected(0);
            f(&mut rx, journal).await
        })
    }

    /// Power cycle: the bootloader runs (swap or revert) before the app.
    fn reboot(&mut self) -> embassy_boot::State {
        let mut buf = [0u8; 4096];
        let state = BootLoader::new(BootLoaderConfig {
            active: &mut self.active,
            dfu: &mut self.dfu,
            state: &mut self.state,
        })
        .prepare_boot(&mut buf)
        .unwrap();
        self.dfu.power_cycle();
        state
    }

    fn active_starts_with(&self, bytes: &[u8]) -> bool {
        let mut read = std::vec![0u8; bytes.len()];
        let mut active = self.active.clone();
        block_on(async {
            use embedded_storage_async::nor_flash::ReadNorFlash;
            active.read(0, &mut read).await.unwrap();
        });
        read == bytes
    }
}

/// Answers every request from `image` until none is due; returns bytes sent.
async fn serve<D: NorFlash, S: NorFlash>(
    rx: &mut OtaReceiver<'_, D, S>,
    journal: &mut MemJournal,
    image: &[u8],
    rollout: u32,
    now: Millis,
) -> usize {
    serve_chunks(rx, journal, image, rollout, now, usize::MAX).await
}

/// Answers at most `chunks` requests from `image`; returns bytes sent.
async fn serve_chunks<D: NorFlash, S: NorFlash>(
    rx: &mut OtaReceiver<'_, D, S>,
    journal: &mut MemJournal,
    image: &[u8],
    rollout: u32,
    now: Millis,
    chunks: usize,
) -> usize {
    let mut sent = 0;
    for _ in 0..chunks {
        let Some(req) = rx.poll_request(now) else {
            break;
        };
        assert_eq!(req.rollout, rollout);
        let data = &image[req.offset as usize..(req.offset + req.len) as usize];
        sent += data.len();
        rx.handle_chunk(
            now,
            &Chunk {
                rollout,
                offset: req.offset,
                crc32: chunk_crc(data),
                data,
            },
            journal,
        )
        .await
        .unwrap();
    }
    sent
}

fn offer<'a>(parts: &'a (Vec<u8>, [u8; 64], [u8; 64]), rollout: u32, attempt: u32) -> Offer<'a> {
    Offer {
        rollout,
        attempt,
        manifest: &parts.0,
        manifest_signature: &parts.1,
        image_signature: &parts.2,
    }
}

#[test]
fn a_signed_image_is_downloaded_verified_swapped_and_confirmed() {
    let img = image(10_001, 3);
    let artifact = pack(v("1.1.0"), "pico-w", &img, &key(1)).unwrap();
    let parts = offer_of(&artifact);
    let mut d = Device::new();
    let states = d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts, 7, 1), j).await.unwrap();
        let mut states = Vec::new();
        states.push(rx.poll_status().unwrap().state);
        assert_eq!(serve(rx, j, &img, 7, 1).await, img.len());
        assert!(rx.needs_verify());
        states.push(rx.poll_status().unwrap().state);
        rx.verify(j).await.unwrap();
        assert!(rx.wants_reboot());
        states.push(rx.poll_status().unwrap().state);
        states
    });
    assert_eq!(
        states,
        [OtaState::Offered, OtaState::Verifying, OtaState::Rebooting]
    );
    assert_eq!(d.reboot(), embassy_boot::State::Swap);
    assert!(d.active_starts_with(&img));
    d.running = v("1.1.0");
    let status = d.boot(async |rx, j| {
        assert!(rx.is_trial());
        assert_eq!(rx.poll_status().unwrap().state, OtaState::Rebooting);
        rx.confirm(j).await.unwrap();
        rx.poll_status().unwrap()
    });
    assert_eq!(status.state, OtaState::Confirmed);
    assert_eq!(status.running, v("1.1.0"));
    // Confirmed for good: the next boot keeps the new image.
    assert_eq!(d.reboot(), embassy_boot::State::Boot);
    assert!(d.active_starts_with(&img));
}

#[test]
fn a_trial_boot_that_never_confirms_is_rolled_back_and_reported() {
    let img = image(9_000, 5);
    let artifact = pack(v("1.1.0"), "pico-w", &img, &key(1)).unwrap();
    let parts = offer_of(&artifact);
    let mut d = Device::new();
    d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts, 2, 1), j).await.unwrap();
        serve(rx, j, &img, 2, 1).await;
        rx.verify(j).await.unwrap();
        assert!(rx.wants_reboot());
    });
    assert_eq!(d.reboot(), embassy_boot::State::Swap);
    d.running = v("1.1.0");
    // The new image crashes before it is healthy: no confirm.
    d.boot(async |rx, _| assert!(rx.is_trial()));
    assert_eq!(d.reboot(), embassy_boot::State::Swap); // the bootloader reverts
    assert!(d.active_starts_with(&[0xA5; 4096]));
    d.running = v("1.0.0");
    let status = d.boot(async |rx, _| {
        assert!(!rx.is_trial());
        rx.poll_status().unwrap()
    });
    assert_eq!(status.state, OtaState::RolledBack);
    assert_eq!(status.failure, Some(OtaFailure::TrialBootFailed));
    assert_eq!(status.running, v("1.0.0"));
    assert_eq!(status.target, Some(v("1.1.0")));
    // Reported again after a reconnect, and a repeated offer of the same
    // attempt does not start it over.
    let status = d.boot(async |rx, j| {
        rx.handle_offer(5, &offer(&parts, 2, 1), j).await.unwrap();
        assert_eq!(rx.poll_request(5), None);
        rx.poll_status().unwrap()
    });
    assert_eq!(status.state, OtaState::RolledBack);
}

#[test]
fn an_image_signed_by_an_untrusted_key_is_refused_before_download() {
    let img = image(5_000, 1);
    let artifact = pack(v("1.1.0"), "pico-w", &img, &key(9)).unwrap();
    let parts = offer_of(&artifact);
    let mut d = Device::new();
    let status = d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts, 3, 1), j).await.unwrap();
        assert_eq!(rx.poll_request(0), None);
        rx.poll_status().unwrap()
    });
    assert_eq!(status.state, OtaState::Failed);
    assert_eq!(status.failure, Some(OtaFailure::UntrustedKey));
    assert_eq!(status.target, Some(v("1.1.0")));
}

#[test]
fn a_tampered_image_fails_verification_and_is_never_marked() {
    let img = image(8_000, 2);
    let artifact = pack(v("1.1.0"), "pico-w", &img, &key(1)).unwrap();
    let parts = offer_of(&artifact);
    let mut bad = img.clone();
    bad[100] ^= 0x40; // altered in transit after the CRC was computed
    let mut d = Device::new();
    let status = d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts, 4, 1), j).await.unwrap();
        serve(rx, j, &bad, 4, 0).await;
        rx.verify(j).await.unwrap();
        assert!(!rx.wants_reboot());
        rx.poll_status().unwrap()
    });
    assert_eq!(status.failure, Some(OtaFailure::ImageHash));
    assert_eq!(d.reboot(), embassy_boot::State::Boot);
    assert!(d.active_starts_with(&[0xA5; 4096]));
}

/// Another image the release key signed (an older release, say), with its
/// own valid image signature, behind this release's manifest: refused, as
/// a downgrade in disguise.
#[test]
fn another_signed_image_behind_a_manifest_is_refused_and_never_marked() {
    let (new, old) = (image(8_000, 2), image(8_000, 9));
    let new_artifact = pack(v("1.1.0"), "pico-w", &new, &key(1)).unwrap();
    let old_artifact = pack(v("0.9.0"), "pico-w", &old, &key(1)).unwrap();
    let (manifest, signature, _) = offer_of(&new_artifact);
    let (_, _, old_image_signature) = offer_of(&old_artifact);
    let parts = (manifest, signature, old_image_signature);
    let mut d = Device::new();
    let status = d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts, 5, 1), j).await.unwrap();
        serve(rx, j, &old, 5, 0).await;
        rx.verify(j).await.unwrap();
        assert!(!rx.wants_reboot());
        rx.poll_status().unwrap()
    });
    assert_eq!(status.failure, Some(OtaFailure::ImageHash));
    assert_eq!(d.reboot(), embassy_boot::State::Boot);
    assert!(d.active_starts_with(&[0xA5; 4096]));
}

/// The manifest's image, with another image's signature: the signature
/// check still stands behind the hash.
#[test]
fn the_right_image_with_another_images_signature_is_refused() {
    let (new, other) = (image(8_000, 2), image(8_000, 9));
    let new_artifact = pack(v("1.1.0"), "pico-w", &new, &key(1)).unwrap();
    let other_artifact = pack(v("1.1.0"), "pico-w", &other, &key(1)).unwrap();
    let (manifest, signature, _) = offer_of(&new_artifact);
    let (_, _, other_image_signature) = offer_of(&other_artifact);
    let parts = (manifest, signature, other_image_signature);
    let mut d = Device::new();
    let status = d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts, 6, 1), j).await.unwrap();
        serve(rx, j, &new, 6, 0).await;
        rx.verify(j).await.unwrap();
        rx.poll_status().unwrap()
    });
    assert_eq!(status.failure, Some(OtaFailure::ImageSignature));
    assert_eq!(d.reboot(), embassy_boot::State::Boot);
}

/// An older release is refused before any download unless its signed
/// manifest says it is a roll-back.
#[test]
fn an_older_release_is_refused_unless_signed_as_a_roll_back() {
    let img = image(6_000, 4);
    let plain = pack(v("0.9.0"), "pico-w", &img, &key(1)).unwrap();
    let roll_back = pack_with(v("0.9.0"), "pico-w", &img, &key(1), true).unwrap();
    let (plain, roll_back) = (offer_of(&plain), offer_of(&roll_back));
    let mut d = Device::new();
    let status = d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&plain, 8, 1), j).await.unwrap();
        assert!(rx.poll_request(0).is_none(), "nothing downloaded");
        rx.poll_status().unwrap()
    });
    assert_eq!(status.state, OtaState::Failed);
    assert_eq!(status.failure, Some(OtaFailure::Downgrade));
    let wants_reboot = d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&roll_back, 9, 1), j)
            .await
            .unwrap();
        assert_eq!(serve(rx, j, &img, 9, 0).await, img.len());
        rx.verify(j).await.unwrap();
        rx.wants_reboot()
    });
    assert!(wants_reboot, "a signed roll-back is taken");
    assert_eq!(d.reboot(), embassy_boot::State::Swap);
}

#[test]
fn wrong_boards_and_oversized_images_are_refused() {
    let mut d = Device::new();
    for (rollout, (artifact, failure)) in (1..).zip([
        (
            pack(v("1.1.0"), "other-board", &image(100, 0), &key(1)).unwrap(),
            OtaFailure::WrongBoard,
        ),
        (
            pack(v("1.1.0"), "pico-w", &image(16 * 1024 + 1, 0), &key(1)).unwrap(),
            OtaFailure::TooLarge,
        ),
    ]) {
        let parts = offer_of(&artifact);
        let status = d.boot(async |rx, j| {
            rx.handle_offer(0, &offer(&parts, rollout, 1), j)
                .await
                .unwrap();
            rx.poll_status().unwrap()
        });
        assert_eq!(status.failure, Some(failure));
    }
}

#[test]
fn damaged_chunks_are_asked_for_again() {
    let img = image(6_000, 4);
    let artifact = pack(v("1.1.0"), "pico-w", &img, &key(1)).unwrap();
    let parts = offer_of(&artifact);
    let mut d = Device::new();
    d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts, 5, 1), j).await.unwrap();
        let req = rx.poll_request(0).unwrap();
        let data = &img[..req.len as usize];
        let mut damaged = data.to_vec();
        damaged[7] ^= 1;
        rx.handle_chunk(
            0,
            &Chunk {
                rollout: 5,
                offset: 0,
                crc32: chunk_crc(data),
                data: &damaged,
            },
            j,
        )
        .await
        .unwrap();
        assert_eq!(rx.counters().chunks_damaged, 1);
        // Asked again at once, not after the timeout.
        assert_eq!(rx.poll_request(1).map(|r| r.offset), Some(0));
        serve(rx, j, &img, 5, 5_000).await;
        rx.verify(j).await.unwrap();
        assert!(rx.wants_reboot());
    });
}

#[test]
fn an_unanswered_request_is_repeated_after_the_timeout() {
    let img = image(6_000, 4);
    let artifact = pack(v("1.1.0"), "pico-w", &img, &key(1)).unwrap();
    let parts = offer_of(&artifact);
    let mut d = Device::new();
    d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts, 5, 1), j).await.unwrap();
        assert!(rx.poll_request(0).is_some());
        assert_eq!(rx.poll_request(1_999), None);
        assert_eq!(rx.poll_timeout(), Some(2_000));
        assert_eq!(rx.poll_request(2_000).map(|r| r.offset), Some(0));
        // Disconnected: nothing is asked; reconnected: asked at once.
        rx.handle_disconnected(2_001);
        assert_eq!(rx.poll_request(9_000), None);
        rx.handle_connected(9_001);
        assert_eq!(rx.poll_request(9_001).map(|r| r.offset), Some(0));
    });
}

#[test]
fn a_download_interrupted_by_a_power_cut_resumes_where_flash_says() {
    let img = image(14_000, 6);
    let artifact = pack(v("1.2.0"), "pico-w", &img, &key(1)).unwrap();
    let parts = offer_of(&artifact);
    let mut d = Device::new();
    // Two chunks land, then power dies inside the third chunk's write.
    d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts, 6, 1), j).await.unwrap();
        serve_chunks(rx, j, &img, 6, 0, 2).await;
    });
    assert_eq!(d.journal.0.unwrap().written, 8192);
    d.dfu.cut_power_after(700);
    d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts, 6, 1), j).await.unwrap();
        let req = rx.poll_request(0).unwrap();
        assert_eq!(req.offset, 8192);
        let data = &img[8192..8192 + req.len as usize];
        let chunk = Chunk {
            rollout: 6,
            offset: 8192,
            crc32: chunk_crc(data),
            data,
        };
        rx.handle_chunk(0, &chunk, j).await.unwrap();
        assert_eq!(rx.status().failure, Some(OtaFailure::Flash));
    });
    d.reboot(); // power comes back
                // The flash failure is this attempt's outcome; the operator's retry is
                // a new attempt, which resumes from what is durably written.
    let sent = d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts, 6, 2), j).await.unwrap();
        assert_eq!(rx.status().state, OtaState::Offered);
        let sent = serve(rx, j, &img, 6, 0).await;
        rx.verify(j).await.unwrap();
        assert!(rx.wants_reboot());
        sent
    });
    assert_eq!(
        sent,
        img.len(),
        "a retry after a flash failure starts clean"
    );

    // Now a plain reboot mid-download (no failure): the retry resumes.
    let img2 = image(14_000, 9);
    let artifact2 = pack(v("1.3.0"), "pico-w", &img2, &key(1)).unwrap();
    let parts2 = offer_of(&artifact2);
    let mut d = Device::new();
    d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts2, 8, 1), j).await.unwrap();
        serve_chunks(rx, j, &img2, 8, 0, 2).await;
    });
    let sent = d.boot(async |rx, j| {
        // No new offer needed: the record says what to continue.
        let sent = serve(rx, j, &img2, 8, 0).await;
        assert_eq!(rx.counters().resumes, 1);
        rx.verify(j).await.unwrap();
        assert!(rx.wants_reboot());
        sent
    });
    assert_eq!(sent, img2.len() - 8192, "resumed, not restarted");
    assert_eq!(d.reboot(), embassy_boot::State::Swap);
    assert!(d.active_starts_with(&img2));
}

#[test]
fn an_offer_of_the_running_version_is_confirmed_at_once() {
    let img = image(3_000, 1);
    let artifact = pack(v("1.0.0"), "pico-w", &img, &key(1)).unwrap();
    let parts = offer_of(&artifact);
    let mut d = Device::new();
    let status = d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts, 9, 1), j).await.unwrap();
        assert_eq!(rx.poll_request(0), None);
        rx.poll_status().unwrap()
    });
    assert_eq!(status.state, OtaState::Confirmed);
}

#[test]
fn a_second_download_in_the_same_boot_starts_from_a_clean_partition() {
    let first = image(6_000, 1);
    let second = image(6_000, 2);
    let a1 = pack(v("1.1.0"), "pico-w", &first, &key(1)).unwrap();
    let a2 = pack(v("1.2.0"), "pico-w", &second, &key(1)).unwrap();
    let (p1, p2) = (offer_of(&a1), offer_of(&a2));
    let mut d = Device::new();
    d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&p1, 1, 1), j).await.unwrap();
        // One chunk of the first, then the rollout is replaced.
        serve_chunks(rx, j, &first, 1, 0, 1).await;
        rx.handle_offer(1, &offer(&p2, 2, 1), j).await.unwrap();
        serve(rx, j, &second, 2, 1).await;
        rx.verify(j).await.unwrap();
        assert!(rx.wants_reboot(), "{:?}", rx.status());
    });
    d.reboot();
    assert!(d.active_starts_with(&second));
}

#[test]
fn small_chunks_resume_from_the_start_of_the_sector_after_a_reset() {
    // 1 KiB chunks (as the Pico W asks for) in 4 KiB sectors: a reset in the
    // middle of a sector must not leave that sector half erased.
    let img = image(12_345, 8);
    let artifact = pack(v("1.1.0"), "pico-w", &img, &key(1)).unwrap();
    let parts = offer_of(&artifact);
    let mut d = Device::new();
    d.chunk_size = 1024;
    d.boot(async |rx, j| {
        rx.handle_offer(0, &offer(&parts, 3, 1), j).await.unwrap();
        serve_chunks(rx, j, &img, 3, 0, 6).await;
    });
    assert_eq!(d.journal.0.unwrap().written, 6 * 1024);
    let first = d.boot(async |rx, j| {
        let first = rx.poll_request(0).unwrap().offset;
        rx.handle_disconnected(1);
        rx.handle_connected(2);
        serve(rx, j, &img, 3, 2).await;
        rx.verify(j).await.unwrap();
        assert!(rx.wants_reboot(), "{:?}", rx.status());
        first
    });
    assert_eq!(first, 4096, "back to the start of the sector");
    d.reboot();
    assert!(d.active_starts_with(&img));
}
