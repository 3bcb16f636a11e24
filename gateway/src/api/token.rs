//! The API's bearer token: configured, or generated once into the data
//! directory with owner-only permissions.

use std::path::Path;

use anyhow::Context;

/// The API token: the configured one, or the one in `<data_dir>/api-token`,
/// generated there on first start. Returns the token and where it came from.
pub fn api_token(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<(String, String)> {
    if let Some(t) = configured {
        return Ok((t.to_string(), "the config (http.api_token)".into()));
    }
    let path = data_dir.join("api-token");
    if path.exists() {
        crate::security::secret_files::refuse_world_readable(&path, "API token file")?;
    }
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 16 => {
            return Ok((t.trim().to_string(), path.display().to_string()))
        }
        Ok(_) => anyhow::bail!(
            "{} is shorter than 16 characters: delete it to generate a new token",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::security::secret_files::write_new_private(&path, &token)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((token, format!("{} (generated)", path.display())))
}

/// Constant-time comparison, so the token cannot be guessed byte by byte.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, from) = api_token(None, dir.path()).unwrap();
        assert_eq!(t1.len(), 48);
        assert!(from.contains("generated"));
        let (t2, _) = api_token(None, dir.path()).unwrap();
        assert_eq!(t1, t2);
        let (t3, from) = api_token(Some("configured-token-123"), dir.path()).unwrap();
        assert_eq!(t3, "configured-token-123");
        assert!(from.contains("config"));
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
