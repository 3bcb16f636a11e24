//! The Pico W's bootloader (embassy-boot-rp).
//!
//! At every reset it runs before the firmware: if the firmware marked a
//! verified update (`verify_and_mark_updated`), it swaps the DFU partition
//! into ACTIVE and boots it for a trial; if the trial firmware never called
//! `mark_booted` before the next reset, it swaps the previous image back.
//! Swap progress is kept in the state partition, so a power cut in the
//! middle continues where it stopped. A watchdog resets a hung swap.
#![no_std]
#![no_main]

use core::cell::RefCell;

use cortex_m_rt::{entry, exception};
use embassy_boot_rp::{BootLoader, BootLoaderConfig, WatchdogFlash};
use embassy_sync::blocking_mutex::Mutex;
use embassy_time::Duration;

/// The Pico W's flash.
const FLASH_SIZE: usize = 2 * 1024 * 1024;

#[entry]
fn main() -> ! {
    let p = embassy_rp::init(Default::default());
    let flash = WatchdogFlash::<FLASH_SIZE>::start(p.FLASH, p.WATCHDOG, Duration::from_secs(8));
    let flash = Mutex::new(RefCell::new(flash));
    let config = BootLoaderConfig::from_linkerfile_blocking(&flash, &flash, &flash);
    let active_offset = config.active.offset();
    let bootloader: BootLoader = BootLoader::prepare(config);
    // SAFETY: ACTIVE holds a firmware image linked for this address (the
    // firmware's memory.x puts FLASH at the ACTIVE partition).
    unsafe { bootloader.load(embassy_rp::flash::FLASH_BASE as u32 + active_offset) }
}

#[unsafe(no_mangle)]
#[cfg_attr(target_os = "none", unsafe(link_section = ".HardFault.user"))]
unsafe extern "C" fn HardFault() {
    cortex_m::peripheral::SCB::sys_reset();
}

#[exception]
unsafe fn DefaultHandler(_: i16) -> ! {
    cortex_m::peripheral::SCB::sys_reset();
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    cortex_m::peripheral::SCB::sys_reset();
}
