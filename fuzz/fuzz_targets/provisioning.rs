//! Provisioning records (read from flash or a file).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pressline_protocol::provisioning::ProvisioningRecord::decode(data);
});
