//! The CYW43439 Wi-Fi chip's firmware, CLM and NVRAM blobs.
//!
//! Their licence (Infineon's, as shipped by embassy and the `cyw43-firmware`
//! crate) does not clearly allow redistribution, so by default they are not
//! linked in: `pack-wifi-blobs.py` packs them into one image that is flashed
//! once at [`crate::flash_map::WIFI_BLOBS`], and read from there through XIP.
//! With the `embed-wifi-firmware` feature they are linked in from
//! `$CYW43_FIRMWARE_DIR` instead.
//!
//! Packed image: `"PLWF"`, then the firmware, CLM and NVRAM lengths (u32 LE
//! each); the blobs follow from offset 16, each padded to 4 bytes.

use cyw43::{Aligned, A4};

/// Why the Wi-Fi chip's firmware is not there to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
#[allow(dead_code)] // `embed-wifi-firmware` builds never fail to load.
pub enum BlobsError {
    Missing,
    Damaged,
}

impl BlobsError {
    /// What to do about it.
    pub const fn as_str(self) -> &'static str {
        match self {
            BlobsError::Missing => {
                "no Wi-Fi firmware at 0x10100000: flash it with pack-wifi-blobs.py (see README)"
            }
            BlobsError::Damaged => "Wi-Fi firmware image at 0x10100000 is damaged: flash it again",
        }
    }
}

pub struct Blobs {
    pub firmware: &'static Aligned<A4, [u8]>,
    pub clm: &'static [u8],
    pub nvram: &'static Aligned<A4, [u8]>,
}

#[cfg(feature = "embed-wifi-firmware")]
pub fn load() -> Result<Blobs, BlobsError> {
    Ok(Blobs {
        firmware: cyw43::aligned_bytes!(concat!(env!("CYW43_FIRMWARE_DIR"), "/43439A0.bin")),
        clm: include_bytes!(concat!(env!("CYW43_FIRMWARE_DIR"), "/43439A0_clm.bin")),
        nvram: cyw43::aligned_bytes!(concat!(env!("CYW43_FIRMWARE_DIR"), "/nvram_rp2040.bin")),
    })
}

#[cfg(not(feature = "embed-wifi-firmware"))]
pub fn load() -> Result<Blobs, BlobsError> {
    use crate::flash_map::{xip, WIFI_BLOBS};
    const REGION: usize = 256 * 1024;
    let base = xip(WIFI_BLOBS) as *const u8;
    // SAFETY: the region is inside the Pico W's 2 MiB flash, which is
    // memory-mapped (XIP) and never written while the firmware runs.
    let region: &'static [u8] = unsafe { core::slice::from_raw_parts(base, REGION) };
    if region[..4] != *b"PLWF" {
        return Err(BlobsError::Missing);
    }
    let len = |i: usize| {
        u32::from_le_bytes([
            region[4 + 4 * i],
            region[5 + 4 * i],
            region[6 + 4 * i],
            region[7 + 4 * i],
        ]) as usize
    };
    let (fw_len, clm_len, nvram_len) = (len(0), len(1), len(2));
    let pad = |n: usize| (n + 3) & !3;
    let fw_at = 16;
    let clm_at = fw_at + pad(fw_len);
    let nvram_at = clm_at + pad(clm_len);
    if nvram_at + nvram_len > REGION || fw_len == 0 || clm_len == 0 || nvram_len == 0 {
        return Err(BlobsError::Damaged);
    }
    let aligned = |at: usize, n: usize| -> &'static Aligned<A4, [u8]> {
        let slice: &'static [u8] = &region[at..at + n];
        // SAFETY: `at` is a multiple of 4 from a 4-aligned base, and
        // `Aligned<A4, [u8]>` is a `repr(C)` wrapper of `[u8]` with 4-byte
        // alignment, so the cast keeps size, alignment and validity.
        unsafe { &*(slice as *const [u8] as *const Aligned<A4, [u8]>) }
    };
    Ok(Blobs {
        firmware: aligned(fw_at, fw_len),
        clm: &region[clm_at..clm_at + clm_len],
        nvram: aligned(nvram_at, nvram_len),
    })
}
