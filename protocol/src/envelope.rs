//! The framing every native payload shares: one version byte, then a
//! postcard body with nothing after it. A new incompatible body gets a new
//! version byte ([`crate::WIRE_VERSION`] is 1; a press with a MAC is 2).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{DecodeError, MAX_PRESS_PAYLOAD, WIRE_VERSION};

/// Writes `value` into `buf` behind version byte 1; returns the used prefix.
pub fn encode<'b, T: Serialize>(
    value: &T,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], postcard::Error> {
    encode_as(WIRE_VERSION, value, buf)
}

/// [`encode`] with another version byte (a payload with several versions).
pub fn encode_as<'b, T: Serialize>(
    version_byte: u8,
    value: &T,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], postcard::Error> {
    let (version, body) = buf
        .split_first_mut()
        .ok_or(postcard::Error::SerializeBufferFull)?;
    *version = version_byte;
    let used = postcard::to_slice(value, body)?.len();
    Ok(&mut buf[..=used])
}

/// The version byte of a payload, after the size checks.
pub fn version(payload: &[u8]) -> Result<u8, DecodeError> {
    if payload.len() > MAX_PRESS_PAYLOAD {
        return Err(DecodeError::Oversized(payload.len()));
    }
    payload.first().copied().ok_or(DecodeError::Empty)
}

/// Reads a version-1 payload written by [`encode`]: rejects oversized, empty,
/// unknown-version, undecodable and trailing-byte payloads.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    decode_as(WIRE_VERSION, payload)
}

/// [`decode`] expecting version byte `expected`.
pub fn decode_as<T: DeserializeOwned>(expected: u8, payload: &[u8]) -> Result<T, DecodeError> {
    let version = version(payload)?;
    if version != expected {
        return Err(DecodeError::UnknownVersion(version));
    }
    let (value, rest) =
        postcard::take_from_bytes(&payload[1..]).map_err(|_| DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed);
    }
    Ok(value)
}
