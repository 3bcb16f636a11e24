//! Topic names from the network.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pressline_protocol::topic::parse_terminal_topic(text);
        let _ = pressline_protocol::ident::validate_id(text);
        let _ = pressline_protocol::FirmwareVersion::parse(text);
    }
});
