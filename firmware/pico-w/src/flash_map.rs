//! Where things live in the Pico W's 2 MiB flash (offsets from 0x1000_0000).
//! Keep in step with memory.x and the README's "Firmware" section.

/// Total flash size of the Pico W.
pub const FLASH_SIZE: usize = 2 * 1024 * 1024;

/// The bootloader's partitions (the linker symbols in memory.x are what
/// the updater uses; these are for people and checks).
pub const ACTIVE: core::ops::Range<u32> = 0x00_7000..0x07_7000;
pub const DFU: core::ops::Range<u32> = 0x07_7000..0x0E_8000;

/// CYW43439 blobs, flashed separately (see README): a header then the
/// firmware, CLM and NVRAM blobs, each 4-byte aligned.
pub const WIFI_BLOBS: u32 = 0x10_0000;

/// The press queue (sequential-storage queue, 16 pages).
pub const PRESS_QUEUE: core::ops::Range<u32> = 0x1E_0000..0x1F_0000;

/// Boot counter and dropped-press count (sequential-storage map, 2 pages).
pub const TERMINAL_STATE: core::ops::Range<u32> = 0x1F_0000..0x1F_2000;

/// The provisioning record (one 4 KiB sector).
pub const PROVISIONING: u32 = 0x1F_F000;

/// Memory-mapped (XIP) address of a flash offset.
pub const fn xip(offset: u32) -> usize {
    0x1000_0000 + offset as usize
}

// The swap needs DFU to be one page larger than ACTIVE, and nothing may
// overlap the Wi-Fi blobs.
const _: () = assert!(DFU.end - DFU.start >= ACTIVE.end - ACTIVE.start + 4096);
const _: () = assert!(DFU.start >= ACTIVE.end && DFU.end <= WIFI_BLOBS);
