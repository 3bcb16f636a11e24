//! JSON presses and acks (third-party terminals): no panics; the first
//! byte picks the terminal id the topic would carry.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pressline_protocol::json;

fuzz_target!(|data: &[u8]| {
    let (topic_terminal, payload) = match data.split_first() {
        Some((b, rest)) if b % 2 == 0 => ("k1", rest),
        Some((_, rest)) => ("gate-07", rest),
        None => ("k1", data),
    };
    if let Ok(press) = json::decode_press(topic_terminal, payload) {
        let encoded = json::encode_press(topic_terminal, &press);
        assert_eq!(json::decode_press(topic_terminal, &encoded), Ok(press));
    }
    let _ = json::decode_ack(payload);
});
