//! Firmware transfer over the site broker: the messages between the
//! gateway's rollout orchestrator and a terminal's OTA receiver.
//!
//! The terminal pulls; the gateway never pushes image bytes unasked:
//! 1. gateway → `gw/{t}/ota/command`: [`OtaCommand::Offer`] (the signed
//!    manifest and both signatures; no image bytes), or `Cancel`.
//! 2. terminal → `term/{t}/ota/request`: [`ChunkRequest`] for the next
//!    offset it needs, at its own pace (one outstanding request).
//! 3. gateway → `gw/{t}/ota/chunk`: [`Chunk`] with a CRC-32, so a damaged
//!    chunk is asked for again instead of poisoning the image.
//! 4. terminal → `term/{t}/ota/status`: [`OtaStatus`] on every transition,
//!    on every (re)connect, and as download progress.
//!
//! Because the terminal names the offset, a download resumes from what it
//! has durably written after a disconnect, a reboot or a gateway restart.
//! Framing: one version byte ([`OTA_WIRE_VERSION`]) + postcard, like every
//! native payload, but allowed up to [`MAX_OTA_PAYLOAD`] bytes.

use serde::{Deserialize, Serialize};

use crate::{DecodeError, FirmwareVersion};

/// Version byte of the OTA messages.
pub const OTA_WIRE_VERSION: u8 = 1;
/// The largest chunk a gateway serves (terminals ask for less if they like).
pub const MAX_CHUNK: u32 = 8192;
/// The largest OTA payload either side accepts.
pub const MAX_OTA_PAYLOAD: usize = MAX_CHUNK as usize + 64;
/// Room for an encoded [`OtaCommand`] (a manifest is at most 256 bytes).
pub const COMMAND_BUF_LEN: usize = 512;
/// Room for an encoded [`ChunkRequest`] or [`OtaStatus`].
pub const SMALL_BUF_LEN: usize = 64;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// CRC-32 (ISO-HDLC) of a chunk's data.
pub fn chunk_crc(data: &[u8]) -> u32 {
    CRC.checksum(data)
}

/// Gateway → terminal, on `pressline/v1/gw/{t}/ota/command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtaCommand<'a> {
    /// Update to the release in the manifest.
    #[serde(borrow)]
    Offer(Offer<'a>),
    /// Stop the download for this rollout (the rollout was aborted or
    /// paused); keep what is written, in case it is offered again.
    Cancel { rollout: u32 },
}

/// A signed release offered to a terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer<'a> {
    /// The gateway's rollout id; echoed in requests and status.
    pub rollout: u32,
    /// Bumped when an operator retries failed terminals: a terminal that
    /// failed or rolled back this rollout tries again only for a new
    /// attempt (a repeated offer just gets its outcome reported again).
    pub attempt: u32,
    /// The postcard [`crate::ota::Manifest`] exactly as signed.
    pub manifest: &'a [u8],
    /// 64 bytes: the manifest signature.
    pub manifest_signature: &'a [u8],
    /// 64 bytes: the image signature (over SHA-512 of the image).
    pub image_signature: &'a [u8],
}

impl Offer<'_> {
    /// The signatures as arrays (`None` if either is not 64 bytes).
    pub fn signatures(&self) -> Option<([u8; 64], [u8; 64])> {
        Some((
            self.manifest_signature.try_into().ok()?,
            self.image_signature.try_into().ok()?,
        ))
    }
}

/// Terminal → gateway, on `pressline/v1/term/{t}/ota/request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    pub rollout: u32,
    pub offset: u32,
    pub len: u32,
}

/// Gateway → terminal, on `pressline/v1/gw/{t}/ota/chunk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk<'a> {
    pub rollout: u32,
    pub offset: u32,
    /// [`chunk_crc`] of `data`.
    pub crc32: u32,
    pub data: &'a [u8],
}

impl Chunk<'_> {
    /// The data arrived as the gateway sent it.
    pub fn is_intact(&self) -> bool {
        chunk_crc(self.data) == self.crc32
    }
}

/// Where a terminal is with an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OtaState {
    /// No update in progress.
    Idle,
    /// An offer was accepted; the download has not started.
    Offered,
    /// Writing the image to the DFU partition.
    Downloading,
    /// Checking the image signature over the DFU partition.
    Verifying,
    /// Verified and marked: rebooting into a trial boot of the new image.
    Rebooting,
    /// Running the new image, healthy, and marked booted for good.
    Confirmed,
    /// The update was refused or could not complete (see the reason).
    Failed,
    /// The new image did not confirm its trial boot: the bootloader
    /// restored the previous one.
    RolledBack,
}

impl OtaState {
    /// Stable lower-case label (API, upstream events, CLI).
    pub const fn label(self) -> &'static str {
        match self {
            OtaState::Idle => "idle",
            OtaState::Offered => "offered",
            OtaState::Downloading => "downloading",
            OtaState::Verifying => "verifying",
            OtaState::Rebooting => "rebooting",
            OtaState::Confirmed => "confirmed",
            OtaState::Failed => "failed",
            OtaState::RolledBack => "rolled_back",
        }
    }
}

/// Why a terminal failed or rolled back an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OtaFailure {
    /// The manifest is signed by a key not built into this firmware.
    UntrustedKey,
    /// The manifest signature does not verify.
    BadManifestSignature,
    /// The offer is malformed.
    MalformedOffer,
    /// The release is for another board.
    WrongBoard,
    /// The image does not fit the DFU partition.
    TooLarge,
    /// The image signature does not verify over the downloaded bytes.
    ImageSignature,
    /// The flash failed while writing or marking.
    Flash,
    /// The new image did not confirm its trial boot.
    TrialBootFailed,
    /// The downloaded image is not the one the signed manifest names (its
    /// SHA-256 differs): another release's image behind this manifest.
    ImageHash,
    /// The release is older than the running firmware and its signed
    /// manifest does not allow a downgrade.
    Downgrade,
}

impl OtaFailure {
    /// Stable label.
    pub const fn label(self) -> &'static str {
        match self {
            OtaFailure::UntrustedKey => "untrusted_key",
            OtaFailure::BadManifestSignature => "bad_manifest_signature",
            OtaFailure::MalformedOffer => "malformed_offer",
            OtaFailure::WrongBoard => "wrong_board",
            OtaFailure::TooLarge => "too_large",
            OtaFailure::ImageSignature => "image_signature",
            OtaFailure::Flash => "flash_error",
            OtaFailure::TrialBootFailed => "trial_boot_failed",
            OtaFailure::ImageHash => "image_hash",
            OtaFailure::Downgrade => "downgrade",
        }
    }

    /// What it means, for people.
    pub const fn describe(self) -> &'static str {
        match self {
            OtaFailure::UntrustedKey => {
                "the release is signed by a key this terminal's firmware does not trust"
            }
            OtaFailure::BadManifestSignature => "the release manifest's signature does not verify",
            OtaFailure::MalformedOffer => "the offer is malformed",
            OtaFailure::WrongBoard => "the release is for another board",
            OtaFailure::TooLarge => "the image does not fit the terminal's update partition",
            OtaFailure::ImageSignature => {
                "the downloaded image's signature does not verify (corrupted or tampered)"
            }
            OtaFailure::Flash => "the terminal's flash failed during the update",
            OtaFailure::TrialBootFailed => {
                "the new image did not confirm its trial boot; the bootloader restored the previous image"
            }
            OtaFailure::ImageHash => {
                "the downloaded image is not the one its signed manifest names (corrupted, or another release's image)"
            }
            OtaFailure::Downgrade => {
                "the release is older than the running firmware and not signed as a roll-back (fleet ota pack --allow-downgrade)"
            }
        }
    }
}

/// Terminal → gateway, on `pressline/v1/term/{t}/ota/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtaStatus {
    /// The rollout this is about (0: none).
    pub rollout: u32,
    /// The offer's attempt this is about.
    pub attempt: u32,
    pub state: OtaState,
    /// The firmware running now.
    pub running: FirmwareVersion,
    /// The version being installed, when there is one.
    pub target: Option<FirmwareVersion>,
    /// Bytes durably written to the DFU partition.
    pub written: u32,
    /// Image size (0 when unknown).
    pub size: u32,
    pub failure: Option<OtaFailure>,
}

impl OtaStatus {
    /// Download progress, 0–100.
    pub fn percent(&self) -> u8 {
        if self.size == 0 {
            return 0;
        }
        ((u64::from(self.written.min(self.size)) * 100) / u64::from(self.size)) as u8
    }
}

/// Writes an OTA message behind its version byte; returns the used prefix.
pub fn encode<'b, T: Serialize>(
    value: &T,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], postcard::Error> {
    crate::envelope::encode_as(OTA_WIRE_VERSION, value, buf)
}

/// Reads an OTA message (borrowing from `payload`).
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, DecodeError> {
    if payload.len() > MAX_OTA_PAYLOAD {
        return Err(DecodeError::Oversized(payload.len()));
    }
    let (&version, body) = payload.split_first().ok_or(DecodeError::Empty)?;
    if version != OTA_WIRE_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|_| DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let mut buf = [0u8; COMMAND_BUF_LEN];
        let offer = OtaCommand::Offer(Offer {
            rollout: 7,
            attempt: 1,
            manifest: &[1, 2, 3],
            manifest_signature: &[4; 64],
            image_signature: &[5; 64],
        });
        let bytes = encode(&offer, &mut buf).unwrap();
        let back: OtaCommand = decode(bytes).unwrap();
        assert_eq!(back, offer);
        if let OtaCommand::Offer(o) = back {
            assert_eq!(o.signatures(), Some(([4; 64], [5; 64])));
        }

        let data = [9u8; 4096];
        let chunk = Chunk {
            rollout: 7,
            offset: 8192,
            crc32: chunk_crc(&data),
            data: &data,
        };
        let mut big = [0u8; MAX_OTA_PAYLOAD];
        let bytes = encode(&chunk, &mut big).unwrap();
        let back: Chunk = decode(bytes).unwrap();
        assert!(back.is_intact());
        assert_eq!(back, chunk);

        let status = OtaStatus {
            rollout: 7,
            attempt: 1,
            state: OtaState::Downloading,
            running: FirmwareVersion {
                major: 1,
                minor: 0,
                patch: 0,
            },
            target: FirmwareVersion::parse("1.1.0"),
            written: 512,
            size: 1024,
            failure: None,
        };
        let mut small = [0u8; SMALL_BUF_LEN];
        let bytes = encode(&status, &mut small).unwrap();
        assert_eq!(decode::<OtaStatus>(bytes).unwrap(), status);
        assert_eq!(status.percent(), 50);
    }

    #[test]
    fn damaged_messages_are_refused() {
        assert_eq!(decode::<ChunkRequest>(&[]), Err(DecodeError::Empty));
        assert_eq!(
            decode::<ChunkRequest>(&[9, 1, 1, 1]),
            Err(DecodeError::UnknownVersion(9))
        );
        assert_eq!(decode::<ChunkRequest>(&[1, 1]), Err(DecodeError::Malformed));
        assert_eq!(
            decode::<ChunkRequest>(&[1u8; MAX_OTA_PAYLOAD + 1]),
            Err(DecodeError::Oversized(MAX_OTA_PAYLOAD + 1))
        );
        let data = [1u8; 16];
        let mut chunk = Chunk {
            rollout: 1,
            offset: 0,
            crc32: chunk_crc(&data),
            data: &data,
        };
        chunk.crc32 ^= 1;
        assert!(!chunk.is_intact());
    }
}
