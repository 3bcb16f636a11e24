//! `fleet keys generate`, `fleet ota pack|upload|releases`.
//!
//! A release is packed and signed once (`pack`), then uploaded to each
//! site's gateway, which checks it against the keys it trusts.

use std::path::Path;

use anyhow::{bail, Context};
use pressline_protocol::FirmwareVersion;

use super::{exit, gather, list_outcome, Outcome};
use crate::client::Gateway;
use crate::render::{finish, table};
use crate::sites::Site;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str, what: &Path) -> anyhow::Result<[u8; N]> {
    let text = text.trim();
    if text.len() != 2 * N {
        bail!("{} is not {} hex characters", what.display(), 2 * N);
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .with_context(|| format!("{} is not hex", what.display()))?;
    }
    Ok(out)
}

/// Makes `DIR/signing.key` (private, mode 0600) and `DIR/signing.pub`.
pub fn generate_keys(dir: &Path) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (private, public) = (dir.join("signing.key"), dir.join("signing.pub"));
    if private.exists() || public.exists() {
        bail!("{} already holds a key pair: refusing to overwrite it (releases signed with it would no longer verify)", dir.display());
    }
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    write_private(&private, &format!("{}\n", hex(&key.to_bytes())))?;
    std::fs::write(
        &public,
        format!("{}\n", hex(&key.verifying_key().to_bytes())),
    )
    .with_context(|| format!("cannot write {}", public.display()))?;
    let id = pressline_protocol::ota::key_id(&key.verifying_key().to_bytes());
    Ok(Outcome {
        stdout: format!(
            "wrote {} (keep it secret, offline if you can) and {} (key id {}); trust it on gateways with [ota] trusted_keys or --trusted-key\n",
            private.display(),
            public.display(),
            hex(&id)
        ),
        warnings: vec![],
        code: exit::OK,
    })
}

/// Signs `image` into a release artifact (a signed roll-back when
/// `allow_downgrade`).
pub fn pack(
    version: &str,
    board: &str,
    key: &Path,
    image: &Path,
    out: &Path,
    allow_downgrade: bool,
) -> anyhow::Result<Outcome> {
    let version = FirmwareVersion::parse(version).with_context(|| {
        format!("--version {version:?}: expected MAJOR.MINOR.PATCH, e.g. 1.4.2")
    })?;
    if !pressline_protocol::ota::BOARDS.contains(&board) {
        bail!(
            "--board {board:?}: known boards are {}",
            pressline_protocol::ota::BOARDS.join(", ")
        );
    }
    let seed: [u8; 32] = unhex(
        &std::fs::read_to_string(key)
            .with_context(|| format!("cannot read --key {}", key.display()))?,
        key,
    )?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let bytes =
        std::fs::read(image).with_context(|| format!("cannot read image {}", image.display()))?;
    if bytes.starts_with(b"\x7fELF") {
        bail!("{} is an ELF file: pack the raw image (e.g. arm-none-eabi-objcopy -O binary FIRMWARE.elf image.bin)", image.display());
    }
    let artifact =
        pressline_protocol::ota::pack_with(version, board, &bytes, &signing, allow_downgrade)
            .map_err(|e| anyhow::anyhow!("cannot pack: {e}"))?;
    std::fs::write(out, &artifact).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(Outcome {
        stdout: format!(
            "packed {board} {version} ({} bytes, sha256 {}){} into {}\n",
            bytes.len(),
            hex(&pressline_protocol::ota::image_sha256(&bytes)),
            if allow_downgrade {
                ", signed as a roll-back"
            } else {
                ""
            },
            out.display()
        ),
        warnings: vec![],
        code: exit::OK,
    })
}

/// A release as a gateway lists it, with its site.
pub type Release = crate::client::AtSite<pressline_protocol::api::Release>;

pub fn upload(site: &Site, artifact: &Path, allow_downgrade: bool) -> anyhow::Result<Outcome> {
    let bytes =
        std::fs::read(artifact).with_context(|| format!("cannot read {}", artifact.display()))?;
    // Catch an obviously wrong file before sending megabytes.
    pressline_protocol::ota::Artifact::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", artifact.display()))?;
    let release: Release = Gateway::new(site).upload_release(&bytes, allow_downgrade)?;
    Ok(Outcome {
        stdout: format!(
            "uploaded {} {} to site {} (sha256 {})\n",
            release.board, release.version, site.name, release.sha256
        ),
        warnings: vec![],
        code: exit::OK,
    })
}

pub fn render(rows: &[Release]) -> String {
    if rows.is_empty() {
        return "no releases uploaded yet: `fleet ota upload RELEASE.pota --site S`\n".into();
    }
    let mut t = table(&["SITE", "BOARD", "VERSION", "SIZE", "KEY", "UPLOADED"]);
    for r in rows {
        t.add_row(vec![
            r.site.clone(),
            r.board.clone(),
            r.version.clone(),
            r.size.to_string(),
            r.key_id.clone(),
            r.uploaded_at.clone(),
        ]);
    }
    finish(t)
}

pub fn releases(sites: &[Site], json: bool) -> anyhow::Result<Outcome> {
    let (rows, warnings) = gather(sites, |gw| gw.releases());
    list_outcome(&rows, warnings, json, render)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
