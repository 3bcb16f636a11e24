//! Signed firmware artifacts (`.pota`), verified by the gateway on upload
//! and again by terminals before they switch.
//!
//! Layout: `"POTA"`, format version (2), manifest length (u16 LE), the
//! postcard [`Manifest`], the *manifest signature* (ed25519, 64 bytes, over
//! `"pressline ota v1\0" ‖ manifest`), the *image signature* (ed25519, 64
//! bytes, over the SHA-512 digest of the image), then the image.
//!
//! Two signatures by the same key, because two parties check different
//! things: the manifest signature lets a gateway, and a terminal before it
//! downloads anything, trust the version, board and size it is offered; the
//! image signature is exactly what embassy-boot's `verify_and_mark_updated`
//! checks over the bytes in the terminal's DFU partition before it lets the
//! bootloader swap. The manifest also carries the image's SHA-256, so the
//! manifest signature alone covers the image for the gateway.
//! (Format 1, with one signature, never left development.)

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::FirmwareVersion;

pub const MAGIC: [u8; 4] = *b"POTA";
pub const FORMAT_VERSION: u8 = 2;
/// What the signature is over, before the manifest bytes.
pub const SIGNING_CONTEXT: &[u8] = b"pressline ota v1\0";
/// Boards this build knows.
pub const BOARDS: &[&str] = &["pico-w", "host"];

/// What an artifact claims to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest<'a> {
    pub version: FirmwareVersion,
    pub board: &'a str,
    pub size: u32,
    pub sha256: [u8; 32],
    /// First 8 bytes of SHA-256 of the signing public key (which key to use).
    pub key_id: [u8; 8],
    /// A terminal running a newer version may take this one (a roll-back
    /// the release engineer signed). One trailing byte, absent in
    /// manifests made before it (read as `false`); terminals that predate
    /// it ignore it.
    pub allow_downgrade: bool,
}

/// A manifest's fields before `allow_downgrade`.
#[derive(Deserialize)]
struct ManifestFields<'a> {
    version: FirmwareVersion,
    board: &'a str,
    size: u32,
    sha256: [u8; 32],
    key_id: [u8; 8],
}

impl<'a> Manifest<'a> {
    /// Decodes manifest bytes (with or without the trailing
    /// `allow_downgrade` byte; anything else after them is refused).
    pub fn decode(bytes: &'a [u8]) -> Result<Manifest<'a>, OtaError> {
        let (f, rest): (ManifestFields<'a>, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|_| OtaError::Malformed)?;
        let allow_downgrade = match rest {
            [] | [0] => false,
            [1] => true,
            _ => return Err(OtaError::Malformed),
        };
        Ok(Manifest {
            version: f.version,
            board: f.board,
            size: f.size,
            sha256: f.sha256,
            key_id: f.key_id,
            allow_downgrade,
        })
    }
}

/// A parsed (not yet verified) artifact.
#[derive(Debug, Clone)]
pub struct Artifact<'a> {
    pub manifest: Manifest<'a>,
    pub manifest_bytes: &'a [u8],
    /// Over `SIGNING_CONTEXT ‖ manifest_bytes`.
    pub signature: [u8; 64],
    /// Over SHA-512 of the image (embassy-boot's form).
    pub image_signature: [u8; 64],
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
    /// The image signature does not verify: the image was altered after
    /// signing, or signed by another key than the manifest.
    BadImageSignature,
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
            OtaError::BadImageSignature => {
                "image signature does not verify (image altered, or signed by another key)"
            }
        }
    }
}

impl core::fmt::Display for OtaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.describe())
    }
}

/// A release public key as `fleet keys generate` writes it (`signing.pub`:
/// 64 hex characters, surrounding white space ignored).
pub fn parse_public_key(text: &str) -> Result<[u8; 32], &'static str> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return Err("not 64 hex characters (use the signing.pub from `fleet keys generate`)");
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| "not hex")?;
    }
    Ok(key)
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

/// SHA-512 of an image: what the image signature signs (embassy-boot hashes
/// the DFU partition the same way).
pub fn image_sha512(image: &[u8]) -> [u8; 64] {
    Sha512::digest(image).into()
}

/// Checks a manifest's signature against the trusted keys and decodes it.
/// This is what a terminal does with an offer before downloading anything.
pub fn verify_manifest<'a>(
    manifest_bytes: &'a [u8],
    signature: &[u8; 64],
    trusted: &[[u8; 32]],
) -> Result<(Manifest<'a>, [u8; 32]), OtaError> {
    let manifest = Manifest::decode(manifest_bytes)?;
    let key = *trusted
        .iter()
        .find(|k| key_id(k) == manifest.key_id)
        .ok_or(OtaError::UntrustedKey)?;
    let verifying = VerifyingKey::from_bytes(&key).map_err(|_| OtaError::UntrustedKey)?;
    // Verify over context ‖ manifest without allocating: ed25519 signs the
    // message as given, so the signer used the same concatenation.
    let mut message = [0u8; 256];
    let total = SIGNING_CONTEXT.len() + manifest_bytes.len();
    let message = message.get_mut(..total).ok_or(OtaError::Malformed)?;
    message[..SIGNING_CONTEXT.len()].copy_from_slice(SIGNING_CONTEXT);
    message[SIGNING_CONTEXT.len()..].copy_from_slice(manifest_bytes);
    verifying
        .verify(message, &Signature::from_bytes(signature))
        .map_err(|_| OtaError::BadSignature)?;
    Ok((manifest, key))
}

/// Checks an image signature over a SHA-512 digest (host side; terminals
/// let embassy-boot do this over their DFU partition).
pub fn verify_image_digest(
    digest: &[u8; 64],
    signature: &[u8; 64],
    key: &[u8; 32],
) -> Result<(), OtaError> {
    let key = VerifyingKey::from_bytes(key).map_err(|_| OtaError::UntrustedKey)?;
    key.verify(digest, &Signature::from_bytes(signature))
        .map_err(|_| OtaError::BadImageSignature)
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
        let image_signature_end = signature_end + 64;
        if bytes.len() < image_signature_end {
            return Err(OtaError::Malformed);
        }
        let manifest_bytes = &bytes[7..manifest_end];
        let manifest = Manifest::decode(manifest_bytes)?;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[manifest_end..signature_end]);
        let mut image_signature = [0u8; 64];
        image_signature.copy_from_slice(&bytes[signature_end..image_signature_end]);
        Ok(Artifact {
            manifest,
            manifest_bytes,
            signature,
            image_signature,
            image: &bytes[image_signature_end..],
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
        let (_, key) = verify_manifest(self.manifest_bytes, &self.signature, trusted)?;
        verify_image_digest(&image_sha512(self.image), &self.image_signature, &key)
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
    pack_with(version, board, image, signing_key, false)
}

/// [`pack`], saying whether terminals on a newer version may take it.
#[cfg(feature = "std")]
pub fn pack_with(
    version: FirmwareVersion,
    board: &str,
    image: &[u8],
    signing_key: &ed25519_dalek::SigningKey,
    allow_downgrade: bool,
) -> Result<std::vec::Vec<u8>, OtaError> {
    use ed25519_dalek::Signer;
    let public = signing_key.verifying_key().to_bytes();
    let manifest = Manifest {
        version,
        board,
        size: u32::try_from(image.len()).map_err(|_| OtaError::Malformed)?,
        sha256: image_sha256(image),
        key_id: key_id(&public),
        allow_downgrade,
    };
    let mut manifest_buf = [0u8; 256];
    let manifest_bytes = postcard::to_slice(&manifest, &mut manifest_buf)
        .map_err(|_| OtaError::Malformed)?
        .to_vec();
    let len = u16::try_from(manifest_bytes.len()).map_err(|_| OtaError::Malformed)?;
    let mut message = SIGNING_CONTEXT.to_vec();
    message.extend_from_slice(&manifest_bytes);
    let signature = signing_key.sign(&message);
    let image_signature = signing_key.sign(&image_sha512(image));
    let mut out = std::vec::Vec::with_capacity(7 + manifest_bytes.len() + 128 + image.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&manifest_bytes);
    out.extend_from_slice(&signature.to_bytes());
    out.extend_from_slice(&image_signature.to_bytes());
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
    fn a_manifest_without_the_downgrade_byte_reads_as_no_downgrade() {
        let image = [7u8; 100];
        let bytes = pack_with(v("1.0.0"), "pico-w", &image, &key(1), true).unwrap();
        let a = Artifact::parse(&bytes).unwrap();
        assert!(a.manifest.allow_downgrade);
        let (last, before) = a.manifest_bytes.split_last().unwrap();
        assert_eq!(*last, 1);
        // As manifests were made before the flag: no trailing byte.
        let old = Manifest::decode(before).unwrap();
        assert!(!old.allow_downgrade);
        assert_eq!(old.version, v("1.0.0"));
        // Anything else after it is not a manifest.
        let mut longer = a.manifest_bytes.to_vec();
        longer.push(0);
        assert_eq!(Manifest::decode(&longer), Err(OtaError::Malformed));
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
        // A swapped image signature (from another build by the same key).
        let other = pack(v("1.0.0"), "pico-w", &[8u8; 1000], &key(1)).unwrap();
        let mut t = bytes.clone();
        let at = t.len() - image.len() - 64;
        t[at..at + 64].copy_from_slice(&other[at..at + 64]);
        assert_eq!(
            Artifact::parse(&t).unwrap().verify(&trusted),
            Err(OtaError::BadImageSignature)
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
