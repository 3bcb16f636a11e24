//! Secrets on disk: the API token, the store holding terminal secrets, TLS
//! keys and the upstream password.
//!
//! What the gateway creates is owner-only from the first byte (never
//! created readable and tightened afterwards). What the operator provides is
//! checked: a key file every user of the machine can read is refused at
//! start-up with the command that fixes it, because a venue PC or a shared
//! Raspberry Pi often has more accounts than the operator thinks.
//! Group-readable is allowed, as Debian's `ssl-cert` group convention needs.

use std::path::Path;

use anyhow::Context;

pub use pressline_host::secret_files::refuse_world_readable;

/// Creates a new file only its owner can read and write, and syncs it.
/// Fails if the file exists (a secret is never silently replaced).
pub fn write_new_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// Creates the data directory owner-only (it holds the terminal secrets and
/// the API token), or tightens an existing one that others could enter.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("cannot read data directory {}", dir.display()))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))
                .with_context(|| {
                    format!(
                        "data directory {} is open to other users (mode {mode:o}) and cannot be tightened; run `chmod 700 {}`",
                        dir.display(),
                        dir.display()
                    )
                })?;
            tracing::warn!(
                dir = %dir.display(),
                "data directory was open to other users (mode {mode:o}); made it owner-only, as it holds terminal secrets"
            );
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn world_readable_secrets_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("upstream.key");
        std::fs::write(&key, "k").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = refuse_world_readable(&key, "upstream client key")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("readable by every user") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        refuse_world_readable(&key, "upstream client key").unwrap();
    }

    #[test]
    fn created_secrets_and_the_data_dir_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        prepare_data_dir(&data).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_data_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        let token = data.join("api-token");
        write_new_private(&token, "secret").unwrap();
        assert_eq!(mode(&token), 0o600);
        assert!(write_new_private(&token, "other").is_err());
    }
}
