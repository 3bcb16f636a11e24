//! The terminal's OTA receiver driven by whatever the network delivers:
//! genuine and forged offers, chunks at any offset with any length, CRC and
//! data, cancels, time passing, reconnects, verification, confirmation and
//! reboots through embassy-boot's real bootloader, on RAM flash.
//!
//! Never panics, and the bootloader never runs anything but the factory
//! image or the one genuinely signed release: forged or damaged bytes may
//! land in the DFU partition, but they are never swapped in.
#![no_main]
use std::sync::OnceLock;

use embassy_boot::{BootLoader, BootLoaderConfig, FirmwareUpdater, FirmwareUpdaterConfig};
use embassy_futures::block_on;
use embedded_storage_async::nor_flash::{NorFlash, ReadNorFlash};
use libfuzzer_sys::fuzz_target;
use pressline_protocol::ota::{pack, Artifact};
use pressline_protocol::ota_transfer::{chunk_crc, Chunk, Offer};
use pressline_protocol::FirmwareVersion;
use pressline_terminal_core::ota::{MemJournal, OtaConfig, OtaReceiver};
use pressline_terminal_core::ram_flash::RamFlash;

type Active = RamFlash<{ 16 * 1024 }, 4096>;
type Dfu = RamFlash<{ 20 * 1024 }, 4096>;
type BootState = RamFlash<4096, 4096>;

const FACTORY: u8 = 0xA5;

/// The one genuine release: signed by the key built into the "firmware".
struct Release {
    image: Vec<u8>,
    manifest: Vec<u8>,
    signature: [u8; 64],
    image_signature: [u8; 64],
    public_key: [u8; 32],
}

fn release() -> &'static Release {
    static RELEASE: OnceLock<Release> = OnceLock::new();
    RELEASE.get_or_init(|| {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let image: Vec<u8> = (0..10_001u32).map(|i| (i as u8).wrapping_mul(31) ^ 0x5a).collect();
        let version = FirmwareVersion::parse("1.1.0").expect("literal version");
        let artifact = pack(version, "pico-w", &image, &key).expect("packs");
        let parsed = Artifact::parse(&artifact).expect("parses");
        Release {
            manifest: parsed.manifest_bytes.to_vec(),
            signature: parsed.signature,
            image_signature: parsed.image_signature,
            public_key: key.verifying_key().to_bytes(),
            image,
        }
    })
}

/// The fuzz input, read a few bytes at a time; zeros once it runs out.
struct Input<'a>(std::slice::Iter<'a, u8>);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    fn done(&self) -> bool {
        self.0.len() == 0
    }
}

fuzz_target!(|data: &[u8]| {
    let rel = release();
    let config = OtaConfig {
        public_key: rel.public_key,
        board: "pico-w",
        max_image: 16 * 1024,
        chunk_size: 4096,
        request_timeout_ms: 2_000,
        progress_step: 10,
    };
    let (mut active, mut dfu, mut state) = (Active::new(), Dfu::new(), BootState::new());
    block_on(active.write(0, &[FACTORY; 4096])).expect("factory image");
    let mut journal = MemJournal::default();
    let mut running = FirmwareVersion::parse("1.0.0").expect("literal version");
    let mut input = Input(data.iter());
    let mut now = 0u64;

    for _boot in 0..4 {
        let mut aligned = [0u8; 4];
        let updater = FirmwareUpdater::new(
            FirmwareUpdaterConfig {
                dfu: &mut dfu,
                state: &mut state,
            },
            &mut aligned,
        );
        let Ok(mut rx) = block_on(OtaReceiver::boot(updater, config, running, &mut journal)) else {
            return;
        };
        rx.handle_connected(now);
        while !input.done() {
            match input.byte() % 9 {
                0 => {
                    let (rollout, attempt) = (u32::from(input.byte() % 4), u32::from(input.byte() % 3));
                    let offer = Offer {
                        rollout,
                        attempt,
                        manifest: &rel.manifest,
                        manifest_signature: &rel.signature,
                        image_signature: &rel.image_signature,
                    };
                    block_on(rx.handle_offer(now, &offer, &mut journal)).expect("journal");
                }
                1 => {
                    // Forged: arbitrary manifest, or the genuine one with
                    // an arbitrary image signature.
                    let len = usize::from(input.byte());
                    let manifest = if len % 2 == 0 { input.bytes(len) } else { rel.manifest.clone() };
                    let image_signature = input.bytes(64);
                    let offer = Offer {
                        rollout: u32::from(input.byte() % 4),
                        attempt: u32::from(input.byte() % 3),
                        manifest: &manifest,
                        manifest_signature: &rel.signature,
                        image_signature: &image_signature,
                    };
                    block_on(rx.handle_offer(now, &offer, &mut journal)).expect("journal");
                }
                2 | 3 => {
                    // The gateway answers what was asked, from the genuine image.
                    if let Some(req) = rx.poll_request(now) {
                        let start = (req.offset as usize).min(rel.image.len());
                        let end = (req.offset as usize + req.len as usize).min(rel.image.len());
                        let data = &rel.image[start..end];
                        let chunk = Chunk {
                            rollout: req.rollout,
                            offset: req.offset,
                            crc32: chunk_crc(data),
                            data,
                        };
                        block_on(rx.handle_chunk(now, &chunk, &mut journal)).expect("journal");
                    }
                }
                4 => {
                    // Anything at all: any offset, length, data and CRC.
                    let offset = u32::from(input.u16());
                    let len = usize::from(input.u16() % 9000);
                    let data = if input.byte() % 2 == 0 {
                        let start = (offset as usize).min(rel.image.len());
                        rel.image[start..(start + len).min(rel.image.len())].to_vec()
                    } else {
                        input.bytes(len.min(256))
                    };
                    let crc32 = if input.byte() % 2 == 0 { chunk_crc(&data) } else { u32::from(input.u16()) };
                    let chunk = Chunk {
                        rollout: u32::from(input.byte() % 4),
                        offset,
                        crc32,
                        data: &data,
                    };
                    block_on(rx.handle_chunk(now, &chunk, &mut journal)).expect("journal");
                }
                5 => rx.handle_cancel(u32::from(input.byte() % 4)),
                6 => {
                    now += u64::from(input.byte()) * 100;
                    let _ = rx.poll_request(now);
                }
                7 => {
                    if input.byte() % 2 == 0 {
                        rx.handle_disconnected(now);
                    } else {
                        rx.handle_connected(now);
                    }
                }
                _ => {
                    if rx.needs_verify() {
                        block_on(rx.verify(&mut journal)).expect("journal");
                    } else if rx.is_trial() {
                        let _ = block_on(rx.confirm(&mut journal));
                    }
                    if rx.wants_reboot() || input.byte() % 8 == 0 {
                        break; // reboot (asked for, or a power cut)
                    }
                }
            }
            let _ = rx.poll_status();
            let _ = rx.poll_timeout();
        }
        drop(rx);
        // The bootloader runs: whatever it swaps in must be the factory
        // image or the genuine release, byte for byte.
        let mut page = [0u8; 4096];
        let booted = BootLoader::new(BootLoaderConfig {
            active: &mut active,
            dfu: &mut dfu,
            state: &mut state,
        })
        .prepare_boot(&mut page);
        if booted.is_err() {
            return;
        }
        dfu.power_cycle();
        let mut head = vec![0u8; rel.image.len()];
        block_on(active.read(0, &mut head)).expect("read active");
        running = if head == rel.image {
            FirmwareVersion::parse("1.1.0").expect("literal version")
        } else {
            assert!(
                head[..4096].iter().all(|b| *b == FACTORY),
                "the bootloader swapped in an image that is neither the factory one nor the signed release"
            );
            FirmwareVersion::parse("1.0.0").expect("literal version")
        };
        if input.done() {
            return;
        }
    }
});
