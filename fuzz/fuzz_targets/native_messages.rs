//! Every native (postcard) payload a terminal or gateway receives: no
//! panics, and whatever decodes re-encodes to something that decodes to the
//! same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pressline_protocol::ota_transfer::{self, Chunk, ChunkRequest, OtaCommand, OtaStatus};
use pressline_protocol::{Ack, Heartbeat, Press};

fuzz_target!(|data: &[u8]| {
    if let Ok(press) = Press::decode(data) {
        let mut buf = [0u8; 64];
        let encoded = press.encode(&mut buf).expect("a decoded press encodes");
        assert_eq!(Press::decode(encoded), Ok(press));
    }
    if let Ok(ack) = Ack::decode(data) {
        let mut buf = [0u8; 64];
        let encoded = ack.encode(&mut buf).expect("a decoded ack encodes");
        assert_eq!(Ack::decode(encoded), Ok(ack));
    }
    let _ = Heartbeat::decode(data);
    let _ = ota_transfer::decode::<OtaCommand>(data);
    let _ = ota_transfer::decode::<ChunkRequest>(data);
    if let Ok(chunk) = ota_transfer::decode::<Chunk>(data) {
        let _ = chunk.is_intact();
    }
    if let Ok(status) = ota_transfer::decode::<OtaStatus>(data) {
        let _ = status.percent();
    }
});
