//! `fleet site add|list|remove`.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;

use super::{exit, Outcome};
use crate::render::{finish, table};
use crate::sites::{validate_url, Site, SitesFile};

pub fn add(
    path: &Path,
    name: &str,
    url: &str,
    token: Option<&str>,
    token_file: Option<&Path>,
    ca_file: Option<&Path>,
) -> anyhow::Result<Outcome> {
    pressline_protocol::ident::validate_id(name)
        .map_err(|e| anyhow::anyhow!("site name {name:?}: {e}"))?;
    let url = validate_url(url)?;
    let token = match (token, token_file) {
        (Some(t), None) => t.trim().to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read --token-file {}", f.display()))?
            .trim()
            .to_string(),
        _ => bail!("give exactly one of --token TOKEN or --token-file FILE (the gateway's <data-dir>/api-token)"),
    };
    if token.is_empty() {
        bail!("the token is empty");
    }
    let ca_file = match ca_file {
        Some(ca) => {
            if !url.starts_with("https://") {
                bail!("--ca only applies to an https:// gateway URL");
            }
            crate::tls::load_ca(ca)?;
            // Absolute, so the profile works from any directory.
            Some(
                std::fs::canonicalize(ca)
                    .with_context(|| format!("cannot resolve --ca {}", ca.display()))?,
            )
        }
        None => None,
    };
    let mut file = SitesFile::load(path)?;
    let replaced = file.upsert(Site {
        name: name.into(),
        url: url.clone(),
        token,
        ca_file,
    });
    file.save(path)?;
    Ok(Outcome {
        stdout: format!(
            "{} site {name} ({url}) in {}; check it with `fleet status --site {name}`\n",
            if replaced { "updated" } else { "added" },
            path.display()
        ),
        warnings: vec![],
        code: exit::OK,
    })
}

pub fn remove(path: &Path, name: &str) -> anyhow::Result<Outcome> {
    let mut file = SitesFile::load(path)?;
    if !file.remove(name) {
        bail!("unknown site {name:?} (see `fleet site list`)");
    }
    file.save(path)?;
    Ok(Outcome {
        stdout: format!("removed site {name}\n"),
        warnings: vec![],
        code: exit::OK,
    })
}

#[derive(Serialize)]
struct SiteRow<'a> {
    name: &'a str,
    url: &'a str,
}

pub fn list(path: &Path, json: bool) -> anyhow::Result<Outcome> {
    let file = SitesFile::load(path)?;
    let stdout = if json {
        let rows: Vec<_> = file
            .sites
            .iter()
            .map(|s| SiteRow {
                name: &s.name,
                url: &s.url,
            })
            .collect();
        format!("{}\n", serde_json::to_string_pretty(&rows)?)
    } else {
        render(&file.sites)
    };
    Ok(Outcome {
        stdout,
        warnings: vec![],
        code: exit::OK,
    })
}

/// Tokens are never printed.
pub fn render(sites: &[Site]) -> String {
    if sites.is_empty() {
        return "no sites yet: add one with `fleet site add NAME --url http://GATEWAY:8080 --token-file FILE`\n".into();
    }
    let mut t = table(&["SITE", "GATEWAY", "TOKEN"]);
    for s in sites {
        t.add_row(vec![s.name.as_str(), s.url.as_str(), "(set)"]);
    }
    finish(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_list_never_shows_tokens() {
        let sites = vec![
            Site {
                name: "arena".into(),
                url: "http://10.20.0.2:8080".into(),
                token: "secret-1".into(),
                ca_file: None,
            },
            Site {
                name: "airport-t2".into(),
                url: "http://10.30.0.2:8080".into(),
                token: "secret-2".into(),
                ca_file: None,
            },
        ];
        let out = render(&sites);
        assert!(!out.contains("secret"));
        insta::assert_snapshot!(out);
    }
}
