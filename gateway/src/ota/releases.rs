//! Firmware releases uploaded to the gateway for over-the-air updates.
//!
//! An upload is accepted only if it is a Pressline artifact whose image
//! matches its manifest, signed by a key this gateway trusts, for a board it
//! knows, and (unless explicitly allowed) not older than the newest release
//! for that board. Accepted artifacts are kept in `<data-dir>/ota/` and
//! listed in sled; the rollout service serves them to terminals.

use std::path::{Path, PathBuf};

use pressline_protocol::ota::{key_id, Artifact, OtaError, BOARDS};
use pressline_protocol::FirmwareVersion;
use serde::{Deserialize, Serialize};

use crate::store::Store;

/// `[ota]` in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtaConfig {
    /// Public keys (files of 64 hex characters, from `fleet keys generate`)
    /// whose signatures this gateway accepts.
    pub trusted_keys: Vec<PathBuf>,
    /// Accept releases older than the newest one for their board.
    pub allow_downgrade: bool,
    /// Terminals downloading at once on this site (the venue Wi-Fi is for
    /// visitors too).
    pub max_concurrent_downloads: usize,
    /// An offered or downloading terminal silent this long has failed.
    pub silent_timeout_secs: u64,
    /// A terminal that has not confirmed this long after its download
    /// completed has failed (its bootloader will have rolled it back).
    pub confirm_timeout_secs: u64,
    /// An offer not answered is repeated after this long.
    pub reoffer_secs: u64,
}

impl Default for OtaConfig {
    fn default() -> Self {
        OtaConfig {
            trusted_keys: Vec::new(),
            allow_downgrade: false,
            max_concurrent_downloads: 10,
            silent_timeout_secs: 600,
            confirm_timeout_secs: 300,
            reoffer_secs: 30,
        }
    }
}

impl OtaConfig {
    pub fn limits(&self) -> crate::ota::rollout::Limits {
        crate::ota::rollout::Limits {
            max_concurrent: self.max_concurrent_downloads.max(1),
            silent_timeout_ms: (self.silent_timeout_secs * 1000) as i64,
            confirm_timeout_ms: (self.confirm_timeout_secs * 1000) as i64,
            reoffer_after_ms: (self.reoffer_secs * 1000) as i64,
        }
    }
}

/// A stored release (also what the API lists).
pub use pressline_protocol::api::Release;

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    Artifact(String),
    #[error("board {0:?} is not one this gateway serves (known: pico-w)")]
    UnknownBoard(String),
    #[error("version {new} is older than {newest}, the newest {board} release here: upload with allow_downgrade to roll back on purpose")]
    Downgrade {
        new: String,
        newest: String,
        board: String,
    },
    #[error("release {board} {version} exists with different contents: give the new build a new version")]
    Conflict { board: String, version: String },
    #[error("cannot store the release: {0}")]
    Storage(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a public key file (64 hex characters).
pub fn read_public_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read trusted key {}: {e}", path.display()))?;
    pressline_protocol::ota::parse_public_key(&text)
        .map_err(|e| anyhow::anyhow!("trusted key {}: {e}", path.display()))
}

#[derive(Clone)]
pub struct Releases {
    store: Store,
    dir: PathBuf,
    trusted: Vec<[u8; 32]>,
    allow_downgrade: bool,
}

impl Releases {
    pub fn new(
        store: Store,
        data_dir: &Path,
        trusted: Vec<[u8; 32]>,
        allow_downgrade: bool,
    ) -> Releases {
        Releases {
            store,
            dir: data_dir.join("ota"),
            trusted,
            allow_downgrade,
        }
    }

    pub fn trusted_key_ids(&self) -> Vec<String> {
        self.trusted.iter().map(|k| hex(&key_id(k))).collect()
    }

    pub fn list(&self) -> Vec<Release> {
        let mut releases: Vec<Release> = self.store.load_releases();
        releases.sort_by(|a, b| {
            (a.board.as_str(), version_key(&a.version))
                .cmp(&(b.board.as_str(), version_key(&b.version)))
        });
        releases
    }

    /// The stored artifact of a release (as uploaded, verified then).
    pub fn load_artifact(&self, board: &str, version: &str) -> anyhow::Result<Vec<u8>> {
        let file = self.dir.join(format!("{board}-{version}.pota"));
        let bytes = std::fs::read(&file)
            .map_err(|e| anyhow::anyhow!("cannot read release {}: {e}", file.display()))?;
        // Re-checked: the file may have been damaged on disk since upload.
        Artifact::parse(&bytes)
            .and_then(|a| a.verify(&self.trusted))
            .map_err(|e| anyhow::anyhow!("release {} is no longer valid: {e}", file.display()))?;
        Ok(bytes)
    }

    /// Verifies and stores an uploaded artifact.
    pub fn upload(
        &self,
        bytes: &[u8],
        allow_downgrade: bool,
        now: String,
    ) -> Result<(Release, bool), UploadError> {
        let artifact = Artifact::parse(bytes).map_err(|e| UploadError::Artifact(e.to_string()))?;
        artifact.verify(&self.trusted).map_err(|e| match e {
            OtaError::UntrustedKey if self.trusted.is_empty() => UploadError::Artifact(
                "this gateway trusts no signing key yet: add one with [ota] trusted_keys or --trusted-key".into(),
            ),
            e => UploadError::Artifact(e.to_string()),
        })?;
        let m = &artifact.manifest;
        if !BOARDS.contains(&m.board) {
            return Err(UploadError::UnknownBoard(m.board.to_string()));
        }
        let release = Release {
            version: m.version.to_string(),
            board: m.board.to_string(),
            size: m.size,
            sha256: hex(&m.sha256),
            key_id: hex(&m.key_id),
            uploaded_at: now,
        };
        let existing = self.list();
        if let Some(same) = existing
            .iter()
            .find(|r| r.board == release.board && r.version == release.version)
        {
            return if same.sha256 == release.sha256 {
                Ok((same.clone(), false))
            } else {
                Err(UploadError::Conflict {
                    board: release.board,
                    version: release.version,
                })
            };
        }
        if !(allow_downgrade || self.allow_downgrade) {
            if let Some(newest) = existing
                .iter()
                .filter(|r| r.board == release.board)
                .max_by_key(|r| version_key(&r.version))
            {
                if version_key(&release.version) < version_key(&newest.version) {
                    return Err(UploadError::Downgrade {
                        new: release.version,
                        newest: newest.version.clone(),
                        board: release.board,
                    });
                }
            }
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| UploadError::Storage(e.to_string()))?;
        let file = self
            .dir
            .join(format!("{}-{}.pota", release.board, release.version));
        write_durably(&file, bytes).map_err(|e| UploadError::Storage(e.to_string()))?;
        self.store
            .save_release(&format!("{}/{}", release.board, release.version), &release)
            .map_err(|e| UploadError::Storage(e.to_string()))?;
        Ok((release, true))
    }
}

/// Writes a file and fsyncs it before it is listed: a power cut must not
/// leave a listed release with a truncated file.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("pota.part");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn version_key(v: &str) -> Option<FirmwareVersion> {
    FirmwareVersion::parse(v)
}
