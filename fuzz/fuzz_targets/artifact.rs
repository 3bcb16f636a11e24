//! Release artifacts (uploaded over HTTP, read from disk): parse and
//! verify never panic, and nothing forged verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pressline_protocol::ota::{verify_manifest, Artifact};

fuzz_target!(|data: &[u8]| {
    // Any fixed key: a random input must not verify under it.
    let trusted = [[7u8; 32]];
    if let Ok(artifact) = Artifact::parse(data) {
        assert!(artifact.verify(&trusted).is_err());
    }
    if data.len() > 64 {
        let (sig, manifest) = data.split_at(64);
        let sig: [u8; 64] = sig.try_into().expect("64 bytes");
        assert!(verify_manifest(manifest, &sig, &trusted).is_err());
    }
});
