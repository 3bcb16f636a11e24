//! Linker setup for the RP2040: memory.x into OUT_DIR, and the link scripts
//! of cortex-m-rt, embassy-rp (boot2) and defmt.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-env-changed=CYW43_FIRMWARE_DIR");
    println!("cargo:rerun-if-env-changed=PRESSLINE_OTA_PUBLIC_KEY");
    for var in [
        "PRESSLINE_TERMINAL",
        "PRESSLINE_SITE",
        "PRESSLINE_WIFI_SSID",
        "PRESSLINE_WIFI_PASSWORD",
        "PRESSLINE_GATEWAY",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tlink-rp.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}
