//! Terminal identity: what a terminal proves with its per-terminal secret.
//!
//! The 32-byte secret is generated at provisioning, stored in the terminal's
//! provisioning record and registered with the gateway. It never travels
//! itself:
//! - the MQTT login is user = client id = terminal id, password =
//!   [`mqtt_password`] (HMAC-SHA256 of a fixed label, hex, 32 characters);
//! - every press carries [`press_mac`]: HMAC-SHA256 over the terminal id and
//!   the press's identity and button, truncated to 8 bytes. The site broker
//!   has no per-topic access control, so this is what stops a device with a
//!   valid login from publishing as another terminal.

use core::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Button, PressId};

/// Length of a press MAC.
pub const MAC_LEN: usize = 8;

/// A terminal's secret.
pub type Secret = [u8; 32];

fn hmac(secret: &Secret, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The MQTT password of the terminal holding `secret` (32 hex characters).
pub fn mqtt_password(secret: &Secret) -> heapless::String<32> {
    let digest = hmac(secret, &[b"pressline mqtt password v1"]);
    let mut out = heapless::String::new();
    for b in &digest[..16] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The MAC of press `id` with `button` from `terminal`.
pub fn press_mac(secret: &Secret, terminal: &str, id: PressId, button: Button) -> [u8; MAC_LEN] {
    let digest = hmac(
        secret,
        &[
            b"pressline press v1\0",
            terminal.as_bytes(),
            b"\0",
            &id.boot.to_be_bytes(),
            &id.seq.to_be_bytes(),
            &[button.score()],
        ],
    );
    let mut mac = [0u8; MAC_LEN];
    mac.copy_from_slice(&digest[..MAC_LEN]);
    mac
}

/// The MAC of a heartbeat (its postcard `body`) from `terminal`.
pub fn heartbeat_mac(secret: &Secret, terminal: &str, body: &[u8]) -> [u8; MAC_LEN] {
    let digest = hmac(
        secret,
        &[
            b"pressline heartbeat v1\0",
            terminal.as_bytes(),
            b"\0",
            body,
        ],
    );
    let mut mac = [0u8; MAC_LEN];
    mac.copy_from_slice(&digest[..MAC_LEN]);
    mac
}

/// Constant-time comparison of two MACs.
pub fn same_mac(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivations_are_stable_and_bound_to_their_inputs() {
        let secret = [7u8; 32];
        let id = PressId { boot: 1, seq: 2 };
        let mac = press_mac(&secret, "t1", id, Button::Happy);
        assert_eq!(mac, press_mac(&secret, "t1", id, Button::Happy));
        assert_ne!(
            mac,
            press_mac(&secret, "t2", id, Button::Happy),
            "bound to the terminal"
        );
        assert_ne!(
            mac,
            press_mac(&secret, "t1", PressId { boot: 1, seq: 3 }, Button::Happy),
            "bound to the identity"
        );
        assert_ne!(
            mac,
            press_mac(&secret, "t1", id, Button::Unhappy),
            "bound to the button"
        );
        assert_ne!(
            mac,
            press_mac(&[8u8; 32], "t1", id, Button::Happy),
            "bound to the secret"
        );
        let password = mqtt_password(&secret);
        assert_eq!(password.len(), 32);
        assert!(password.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(password, mqtt_password(&[8u8; 32]));
        assert!(same_mac(&mac, &mac));
        assert!(!same_mac(&mac, &[0; MAC_LEN]));
    }
}
