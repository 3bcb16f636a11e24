//! The gateway's durable application ack.
//!
//! MQTT PUBACK from the site broker only means "in the broker's memory". The
//! gateway publishes an [`Ack`] to a terminal after the presses it names are
//! committed to disk. An ack names one contiguous range of sequence numbers
//! within one boot; the gateway sends one per contiguous run it committed,
//! and acks duplicates too, so a lost ack is repaired by the next resend.
//!
//! Wire form: version byte, then postcard of [`AckWireV1`].

use serde::{Deserialize, Serialize};

use crate::{press::DecodeError, PressId};

/// "Presses `boot`/`first_seq..=last_seq` of this terminal are stored."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub boot: u32,
    pub first_seq: u32,
    pub last_seq: u32,
}

/// Postcard body of a version-1 ack (same fields as [`Ack`]).
pub type AckWireV1 = Ack;

/// Room for any encoded ack.
pub const ACK_BUF_LEN: usize = 24;

impl Ack {
    /// Whether this ack releases the press `id`.
    pub fn covers(&self, id: PressId) -> bool {
        id.boot == self.boot && (self.first_seq..=self.last_seq).contains(&id.seq)
    }

    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], postcard::Error> {
        crate::envelope::encode(self, buf)
    }

    pub fn decode(payload: &[u8]) -> Result<Ack, DecodeError> {
        crate::envelope::decode::<Ack>(payload)?.checked()
    }

    /// The ack, if its range is a range (`first_seq` ≤ `last_seq`).
    pub fn checked(self) -> Result<Ack, DecodeError> {
        if self.first_seq > self.last_seq {
            return Err(DecodeError::Malformed);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_coverage() {
        let ack = Ack {
            boot: 2,
            first_seq: 10,
            last_seq: 20,
        };
        let mut buf = [0u8; ACK_BUF_LEN];
        let bytes = ack.encode(&mut buf).unwrap();
        assert_eq!(Ack::decode(bytes), Ok(ack));
        assert!(ack.covers(PressId { boot: 2, seq: 10 }));
        assert!(ack.covers(PressId { boot: 2, seq: 20 }));
        assert!(!ack.covers(PressId { boot: 2, seq: 21 }));
        assert!(!ack.covers(PressId { boot: 1, seq: 15 }));
    }

    #[test]
    fn rejects_inverted_ranges_and_garbage() {
        let mut buf = [0u8; ACK_BUF_LEN];
        let bytes = Ack {
            boot: 0,
            first_seq: 5,
            last_seq: 4,
        }
        .encode(&mut buf)
        .unwrap();
        assert_eq!(Ack::decode(bytes), Err(DecodeError::Malformed));
        assert_eq!(Ack::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            Ack::decode(&[2, 0, 0, 0]),
            Err(DecodeError::UnknownVersion(2))
        );
        assert_eq!(Ack::decode(&[1, 0xFF]), Err(DecodeError::Malformed));
    }
}
