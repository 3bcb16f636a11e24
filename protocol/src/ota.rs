//! Signed firmware artifacts (`.pota`), verified by the gateway on upload
//! and again by terminals before they switch.
//!
//! Layout: `"POTA"`, format version (1), manifest length (u16 LE), the
//! postcard [`Manifest`], an ed25519 signature (64 bytes) over
//! `"pressline ota v1\0" ‖ manifest`, then the image. The manifest carries
//! the image's SHA-256 and size, so the signature covers the image too.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::FirmwareVersion;

pub const MAGIC: [u8; 4] = *b"POTA";
pub const FORMAT_VERSION: u8 = 1;
/// What the signature is over, before the manifest bytes.
pub const SIGNING_CONTEXT: &[u8] = b"pressline ota v1\0";
/// Boards this build knows.
pub const BOARDS: &[&str] = &["pico-w"];

/// What an artifact claims to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest<'a> {
    pub version: FirmwareVersion,
    pub board: &'a str,
    pub size: u32,
    pub sha256: [u8; 32],
    /// First 8 bytes of SHA-256 of the signing public key (which key to use).
    pub key_id: [u8; 8],
}

/// A parsed (not yet verified) artifact.
#[derive(Debug, Clone)]
pub struct Artifact<'a> {
    pub manifest: Manifest<'a>,
    pub manifest_bytes: &'a [u8],
    pub signature: [u8; 64],
    pub image: &'a [u8],
}

/// Why an artifact is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtaError {
    NotAnArtifact,
    UnknownFormat(u8),
    Malformed,
    /// The image is not what the manifest says (size or SHA-256): tampered
    /// or truncated.
    ImageMismatch,
    /// No trusted key has the artifact's key id.
    UntrustedKey,
    /// The signature does not verify: the manifest was altered.
    BadSignature,
}

impl OtaError {
    pub const fn describe(self) -> &'static str {
        match self {
            OtaError::NotAnArtifact => "not a Pressline OTA artifact (made with `fleet ota pack`)",
            OtaError::UnknownFormat(_) => "artifact format from a newer version of Pressline",
            OtaError::Malformed => "artifact is damaged (manifest does not decode)",
            OtaError::ImageMismatch => {
                "image does not match its signed manifest (tampered or truncated)"
            }
            OtaError::UntrustedKey => "signed by a key that is not trusted here",
            OtaError::BadSignature => "signature does not verify (manifest altered, or wrong key)",
        }
    }
}

impl core::fmt::Display for OtaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.describe())
    }
}

/// The key id of a public key.
pub fn key_id(public_key: &[u8; 32]) -> [u8; 8] {
    let digest = Sha256::digest(public_key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

/// SHA-256 of an image.
pub fn image_sha256(image: &[u8]) -> [u8; 32] {
    Sha256::digest(image).into()
}

impl<'a> Artifact<'a> {
    /// Splits an artifact into its parts (no trust decided yet).
    pub fn parse(bytes: &'a [u8]) -> Result<Artifact<'a>, OtaError> {
        if bytes.len() < 7 || bytes[..4] != MAGIC {
            return Err(OtaError::NotAnArtifact);
        }
        if bytes[4] != FORMAT_VERSION {
            return Err(OtaError::UnknownFormat(bytes[4]));
        }
        let len = u16::from_le_bytes([bytes[5], bytes[6]]) as usize;
        let manifest_end = 7 + len;
        let signature_end = manifest_end + 64;
        if bytes.len() < signature_end {
            return Err(OtaError::Malformed);
        }
        let manifest_bytes = &bytes[7..manifest_end];
        let manifest: Manifest<'a> =
            postcard::from_bytes(manifest_bytes).map_err(|_| OtaError::Malformed)?;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[manifest_end..signature_end]);
        Ok(Artifact {
            manifest,
            manifest_bytes,
            signature,
            image: &bytes[signature_end..],
        })
    }

    /// Checks the image against the manifest and the signature against the
    /// trusted key with the artifact's key id.
    pub fn verify(&self, trusted: &[[u8; 32]]) -> Result<(), OtaError> {
        if self.image.len() != self.manifest.size as usize
            || image_sha256(self.image) != self.manifest.sha256
        {
            return Err(OtaError::ImageMismatch);
        }
        let key = trusted
            .iter()
            .find(|k| key_id(k) == self.manifest.key_id)
            .ok_or(OtaError::UntrustedKey)?;
        let key = VerifyingKey::from_bytes(key).map_err(|_| OtaError::UntrustedKey)?;
        let signature = Signature::from_bytes(&self.signature);
        // Verify over context ‖ manifest without allocating: ed25519 signs
        // the message as given, so the signer used the same concatenation.
        let mut message = [0u8; 256];
        let total = SIGNING_CONTEXT.len() + self.manifest_bytes.len();
        let message = message.get_mut(..total).ok_or(OtaError::Malformed)?;
        message[..SIGNING_CONTEXT.len()].copy_from_slice(SIGNING_CONTEXT);
        message[SIGNING_CONTEXT.len()..].copy_from_slice(self.manifest_bytes);
        key.verify(message, &signature)
            .map_err(|_| OtaError::BadSignature)
    }
}

/// Builds a signed artifact (the `fleet ota pack` side).
#[cfg(feature = "std")]
pub fn pack(
    version: FirmwareVersion,
    board: &str,
    image: &[u8],
    signing_key: &ed25519_dalek::SigningKey,
) -> Result<std::vec::Vec<u8>, OtaError> {
    use ed25519_dalek::Signer;
    let public = signing_key.verifying_key().to_bytes();
    let manifest = Manifest {
        version,
        board,
        size: u32::try_from(image.len()).map_err(|_| OtaError::Malformed)?,
        sha256: image_sha256(image),
        key_id: key_id(&public),
    };
    let mut manifest_buf = [0u8; 256];
    let manifest_bytes = postcard::to_slice(&manifest, &mut manifest_buf)
        .map_err(|_| OtaError::Malformed)?
        .to_vec();
    let len = u16::try_from(manifest_bytes.len()).map_err(|_| OtaError::Malformed)?;
    let mut message = SIGNING_CONTEXT.to_vec();
    message.extend_from_slice(&manifest_bytes);
    let signature = signing_key.sign(&message);
    let mut out = std::vec::Vec::with_capacity(7 + manifest_bytes.len() + 64 + image.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&manifest_bytes);
    out.extend_from_slice(&signature.to_bytes());
    out.extend_from_slice(image);
    Ok(out)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    fn key(seed: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
    }

    fn v(s: &str) -> FirmwareVersion {
        FirmwareVersion::parse(s).unwrap()
    }

    #[test]
    fn a_packed_artifact_verifies_with_its_key_only() {
        let image: std::vec::Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let bytes = pack(v("1.2.3"), "pico-w", &image, &key(1)).unwrap();
        let artifact = Artifact::parse(&bytes).unwrap();
        assert_eq!(artifact.manifest.version, v("1.2.3"));
        assert_eq!(artifact.manifest.board, "pico-w");
        assert_eq!(artifact.image, &image[..]);
        let trusted = key(1).verifying_key().to_bytes();
        assert_eq!(
            artifact.verify(&[key(9).verifying_key().to_bytes(), trusted]),
            Ok(())
        );
        assert_eq!(
            artifact.verify(&[key(9).verifying_key().to_bytes()]),
            Err(OtaError::UntrustedKey)
        );
    }

    #[test]
    fn tampering_anywhere_is_detected() {
        let image = [7u8; 1000];
        let bytes = pack(v("1.0.0"), "pico-w", &image, &key(1)).unwrap();
        let trusted = [key(1).verifying_key().to_bytes()];
        // A flipped image byte.
        let mut t = bytes.clone();
        *t.last_mut().unwrap() ^= 1;
        assert_eq!(
            Artifact::parse(&t).unwrap().verify(&trusted),
            Err(OtaError::ImageMismatch)
        );
        // A truncated image.
        assert_eq!(
            Artifact::parse(&bytes[..bytes.len() - 1])
                .unwrap()
                .verify(&trusted),
            Err(OtaError::ImageMismatch)
        );
        // An altered manifest (the board name's last byte): the signature breaks.
        let mut t = bytes.clone();
        let at = t.windows(6).position(|w| w == b"pico-w").unwrap() + 5;
        t[at] = b'x';
        assert_eq!(
            Artifact::parse(&t).unwrap().verify(&trusted),
            Err(OtaError::BadSignature)
        );
        // Not an artifact at all.
        assert!(matches!(
            Artifact::parse(b"ELF..."),
            Err(OtaError::NotAnArtifact)
        ));
        let mut t = bytes;
        t[4] = 9;
        assert!(matches!(
            Artifact::parse(&t),
            Err(OtaError::UnknownFormat(9))
        ));
    }
}
