//! The terminal core's checks ([`pressline_terminal_core::selftest`]) on an
//! emulated Cortex-M3: same code, real `thumbv7m` codegen, no std.
//!
//! Prints one line per check and `N passed, N failed`, and exits through
//! semihosting with a failure code if anything failed or panicked.
#![no_std]
#![no_main]

use core::cell::Cell;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use pressline_terminal_core::selftest::{self, TestFlash};

#[entry]
fn main() -> ! {
    let passed = Cell::new(0u32);
    let failed = Cell::new(0u32);
    let mut flash = TestFlash::new();
    hprintln!(
        "running {} terminal-core checks on a Cortex-M3",
        selftest::NAMES.len()
    );
    embassy_futures::block_on(selftest::run_all(&mut flash, |name, result| match result {
        Ok(()) => {
            hprintln!("ok     {}", name);
            passed.set(passed.get() + 1);
        }
        Err(what) => {
            hprintln!("FAILED {}: {}", name, what);
            failed.set(failed.get() + 1);
        }
    }));
    hprintln!("{} passed, {} failed", passed.get(), failed.get());
    debug::exit(if failed.get() == 0 {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panicked: {}", info);
    hprintln!("0 passed, 1 failed");
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
