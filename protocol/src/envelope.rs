//! The framing every native payload shares: one version byte
//! ([`crate::WIRE_VERSION`]), then a postcard body with nothing after it.
//! A new incompatible body gets a new version byte.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{DecodeError, MAX_PRESS_PAYLOAD, WIRE_VERSION};

/// Writes `value` into `buf` behind the version byte; returns the used prefix.
pub fn encode<'b, T: Serialize>(
    value: &T,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], postcard::Error> {
    let (version, body) = buf
        .split_first_mut()
        .ok_or(postcard::Error::SerializeBufferFull)?;
    *version = WIRE_VERSION;
    let used = postcard::to_slice(value, body)?.len();
    Ok(&mut buf[..=used])
}

/// Reads a payload written by [`encode`]: rejects oversized, empty,
/// unknown-version, undecodable and trailing-byte payloads.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    if payload.len() > MAX_PRESS_PAYLOAD {
        return Err(DecodeError::Oversized(payload.len()));
    }
    let (&version, body) = payload.split_first().ok_or(DecodeError::Empty)?;
    if version != WIRE_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|_| DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed);
    }
    Ok(value)
}
