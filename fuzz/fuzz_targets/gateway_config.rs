//! The gateway's TOML configuration: a bad file gets an error, never a
//! panic (parse, then the checks `gateway run` makes).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = pressline_gateway::config::Config::from_toml(text) {
            let _ = config.validate();
            let _ = config.upstream_addr();
        }
    }
});
