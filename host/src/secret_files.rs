//! Secret files an operator provides (TLS keys): one every user of the
//! machine can read is refused at start-up with the command that fixes it.
//! Group-readable is allowed, as Debian's `ssl-cert` group convention needs.

use std::path::Path;

use anyhow::{bail, Context};

/// Refuses a secret file that is readable by every user.
pub fn refuse_world_readable(path: &Path, what: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot read {what} {}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o004 != 0 {
            bail!(
                "{what} {} is readable by every user on this machine (mode {mode:o}); \
                 run `chmod 600 {}` (and `chown` it to the user the service runs as), then start again",
                path.display(),
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
    Ok(())
}
