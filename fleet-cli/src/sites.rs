//! The sites profile: which gateways this engineer can reach, and how.
//!
//! `~/.config/pressline/sites.toml` by default (`--config FILE` or
//! `PRESSLINE_CONFIG` override it). It holds API tokens, so it is written
//! readable by its owner only.
//!
//! ```toml
//! [[site]]
//! name = "arena"
//! url = "https://10.20.0.2:8080"
//! token = "..."
//! ca_file = "/home/me/.config/pressline/arena-ca.pem"  # optional: a private CA
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub name: String,
    /// Gateway base URL, e.g. `https://10.20.0.2:8080`.
    pub url: String,
    pub token: String,
    /// CA certificate(s) the gateway's HTTPS certificate is checked
    /// against; public roots when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SitesFile {
    #[serde(default, rename = "site")]
    pub sites: Vec<Site>,
}

/// Where the profile lives.
pub fn default_path() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("pressline/sites.toml"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set: pass --config FILE")?;
    Ok(PathBuf::from(home).join(".config/pressline/sites.toml"))
}

/// One site of the profile at `path`, by name.
pub fn load_one(path: &Path, name: &str) -> anyhow::Result<Site> {
    let mut chosen = SitesFile::load(path)?.select(Some(name), path)?;
    Ok(chosen.remove(0))
}

/// The sites of the profile at `path` a command addresses: one by name, or
/// all.
pub fn load_selected(path: &Path, name: Option<&str>) -> anyhow::Result<Vec<Site>> {
    SitesFile::load(path)?.select(name, path)
}

impl SitesFile {
    /// Loads the profile; a missing file is an empty profile.
    pub fn load(path: &Path) -> anyhow::Result<SitesFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("{} is not a valid sites file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SitesFile::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = toml::to_string_pretty(self).context("cannot serialize the sites file")?;
        let tmp = path.with_extension("toml.tmp");
        write_private(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// Adds or replaces a site.
    pub fn upsert(&mut self, site: Site) -> bool {
        match self.sites.iter_mut().find(|s| s.name == site.name) {
            Some(existing) => {
                *existing = site;
                true
            }
            None => {
                self.sites.push(site);
                false
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.sites.len();
        self.sites.retain(|s| s.name != name);
        self.sites.len() != before
    }

    /// The sites a command addresses: one by name, or all.
    pub fn select(&self, site: Option<&str>, path: &Path) -> anyhow::Result<Vec<Site>> {
        if self.sites.is_empty() {
            bail!(
                "no sites configured in {}: add one with `fleet site add NAME --url http://GATEWAY:8080 --token-file FILE`",
                path.display()
            );
        }
        match site {
            Some(name) => match self.get(name) {
                Some(s) => Ok(vec![s.clone()]),
                None => bail!(
                    "unknown site {name:?}; known sites: {} (see `fleet site list`)",
                    self.sites
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            None => Ok(self.sites.clone()),
        }
    }
}

/// Checks a gateway URL before saving it.
pub fn validate_url(url: &str) -> anyhow::Result<String> {
    let trimmed = url.trim_end_matches('/');
    if let Some(rest) = trimmed.strip_prefix("http://") {
        if rest.is_empty() {
            bail!("--url {url:?} has no host");
        }
        return Ok(trimmed.to_string());
    }
    if let Some(rest) = trimmed.strip_prefix("https://") {
        if rest.is_empty() {
            bail!("--url {url:?} has no host");
        }
        return Ok(trimmed.to_string());
    }
    bail!("--url {url:?}: expected https://HOST:PORT or http://HOST:PORT, e.g. https://10.20.0.2:8080")
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_replace_remove_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/sites.toml");
        let mut f = SitesFile::load(&path).unwrap();
        assert!(f.sites.is_empty());
        assert!(!f.upsert(Site {
            name: "arena".into(),
            url: "http://a:8080".into(),
            token: "t1".into(),
            ca_file: None,
        }));
        assert!(f.upsert(Site {
            name: "arena".into(),
            url: "http://a:9090".into(),
            token: "t2".into(),
            ca_file: None,
        }));
        f.upsert(Site {
            name: "mall".into(),
            url: "http://m:8080".into(),
            token: "t3".into(),
            ca_file: None,
        });
        f.save(&path).unwrap();
        let g = SitesFile::load(&path).unwrap();
        assert_eq!(g, f);
        assert_eq!(g.get("arena").unwrap().url, "http://a:9090");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let mut h = g.clone();
        assert!(h.remove("arena"));
        assert!(!h.remove("arena"));
    }

    #[test]
    fn selecting_an_unknown_site_names_the_known_ones() {
        let mut f = SitesFile::default();
        let p = Path::new("/x/sites.toml");
        assert!(f
            .select(None, p)
            .unwrap_err()
            .to_string()
            .contains("fleet site add"));
        f.upsert(Site {
            name: "arena".into(),
            url: "http://a".into(),
            token: "t".into(),
            ca_file: None,
        });
        let err = f.select(Some("mal"), p).unwrap_err().to_string();
        assert!(err.contains("\"mal\"") && err.contains("arena"), "{err}");
        assert_eq!(f.select(None, p).unwrap().len(), 1);
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            validate_url("http://10.0.0.2:8080/").unwrap(),
            "http://10.0.0.2:8080"
        );
        assert_eq!(validate_url("https://x/").unwrap(), "https://x");
        assert!(validate_url("https://").is_err());
        assert!(validate_url("10.0.0.2:8080")
            .unwrap_err()
            .to_string()
            .contains("expected https://"));
    }
}
