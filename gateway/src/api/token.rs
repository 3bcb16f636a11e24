//! The API's bearer tokens, one per scope, and which scope each request
//! needs.
//!
//! Three scopes, so the screen on the wall showing the dashboard does not
//! hold the key that registers terminals and pushes firmware:
//! - `viewer`: every read (dashboard, stats, terminals, alerts, reports,
//!   `/metrics`);
//! - `operator`: also acknowledges alerts and drives rollouts;
//! - `admin`: also registers and revokes terminals and uploads releases.
//!
//! Each token is configured (`http.api_token`, `http.operator_token`,
//! `http.viewer_token`) or generated once into the data directory with
//! owner-only permissions (`api-token`, the admin one; `operator-token`;
//! `viewer-token`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::http::Method;
use serde::Serialize;

/// What a token may do; each scope may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Viewer,
    Operator,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Viewer => "viewer",
            Scope::Operator => "operator",
            Scope::Admin => "admin",
        }
    }

    /// The token file in the data directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Scope::Viewer => "viewer-token",
            Scope::Operator => "operator-token",
            Scope::Admin => "api-token",
        }
    }

    /// The config key that sets it.
    pub fn config_key(self) -> &'static str {
        match self {
            Scope::Viewer => "http.viewer_token",
            Scope::Operator => "http.operator_token",
            Scope::Admin => "http.api_token",
        }
    }

    const ALL: [Scope; 3] = [Scope::Admin, Scope::Operator, Scope::Viewer];
}

/// The scope a request needs: reads need `viewer`; acknowledging an alert
/// and everything under `/api/v1/ota/rollouts` `operator`; every other
/// change (terminals, releases, anything added later elsewhere) `admin`,
/// so a new route is closed until it is placed here.
pub fn required_scope(method: &Method, path: &str) -> Scope {
    if method == Method::GET || method == Method::HEAD {
        return Scope::Viewer;
    }
    let is_ack = path
        .strip_prefix("/api/v1/alerts/")
        .is_some_and(|rest| rest.ends_with("/ack") && rest.matches('/').count() == 1);
    if is_ack || path == "/api/v1/ota/rollouts" || path.starts_with("/api/v1/ota/rollouts/") {
        return Scope::Operator;
    }
    Scope::Admin
}

/// The three tokens and where each came from (for the start-up log).
#[derive(Clone)]
pub struct ApiTokens {
    tokens: Arc<[(Scope, String)]>,
    pub sources: Vec<(Scope, String)>,
}

impl ApiTokens {
    /// Configured tokens (`configured(scope)`), or the ones in the data
    /// directory, generated there on first start.
    pub fn load(
        configured: impl Fn(Scope) -> Option<String>,
        data_dir: &Path,
    ) -> anyhow::Result<ApiTokens> {
        let mut tokens: Vec<(Scope, String)> = Vec::new();
        let mut sources = Vec::new();
        for scope in Scope::ALL {
            let (token, source) = token(scope, configured(scope).as_deref(), data_dir)?;
            if let Some((other, _)) = tokens.iter().find(|(_, t)| same(t, &token)) {
                anyhow::bail!(
                    "the {} token ({source}) is the {} token: each scope needs its own",
                    scope.as_str(),
                    other.as_str()
                );
            }
            tokens.push((scope, token));
            sources.push((scope, source));
        }
        Ok(ApiTokens {
            tokens: tokens.into(),
            sources,
        })
    }

    /// The scope of a presented token, if it is one of them.
    pub fn scope_of(&self, presented: &str) -> Option<Scope> {
        // Every token is compared, so timing does not say which matched.
        let mut found = None;
        for (scope, token) in self.tokens.iter() {
            if same(presented, token) {
                found = Some(*scope);
            }
        }
        found
    }
}

/// One scope's token: configured, or read from (or generated into) its
/// file. Returns the token and where it came from.
fn token(
    scope: Scope,
    configured: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<(String, String)> {
    if let Some(t) = configured {
        return Ok((
            t.to_string(),
            format!("the config ({})", scope.config_key()),
        ));
    }
    let path = data_dir.join(scope.file_name());
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

/// Constant-time comparison, so a token cannot be guessed byte by byte.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_generated_once_per_scope_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = ApiTokens::load(|_| None, dir.path()).unwrap();
        for (scope, source) in &first.sources {
            assert!(source.contains("generated"), "{source}");
            let token = std::fs::read_to_string(dir.path().join(scope.file_name())).unwrap();
            let token = token.trim();
            assert_eq!(token.len(), 48);
            assert_eq!(first.scope_of(token), Some(*scope));
        }
        let again = ApiTokens::load(|_| None, dir.path()).unwrap();
        assert!(again.sources.iter().all(|(_, s)| !s.contains("generated")));
        let admin = std::fs::read_to_string(dir.path().join("api-token")).unwrap();
        assert_eq!(again.scope_of(admin.trim()), Some(Scope::Admin));
        assert_eq!(again.scope_of("not-a-token"), None);
        assert_eq!(again.scope_of(""), None);
    }

    #[test]
    fn configured_tokens_win_and_must_differ() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = ApiTokens::load(
            |s| (s == Scope::Viewer).then(|| "wall-screen-token-1".to_string()),
            dir.path(),
        )
        .unwrap();
        assert_eq!(tokens.scope_of("wall-screen-token-1"), Some(Scope::Viewer));
        let same_twice = ApiTokens::load(|_| Some("one-token-for-all-1".into()), dir.path());
        let err = same_twice.err().unwrap().to_string();
        assert!(err.contains("needs its own"), "{err}");
    }

    #[test]
    fn reads_need_a_viewer_acknowledging_and_rollouts_an_operator_the_rest_an_admin() {
        let post = Method::POST;
        for path in [
            "/api/v1/stats",
            "/api/v1/dashboard",
            "/metrics",
            "/api/v1/ota/rollouts",
        ] {
            assert_eq!(required_scope(&Method::GET, path), Scope::Viewer, "{path}");
        }
        for path in [
            "/api/v1/alerts/17/ack",
            "/api/v1/ota/rollouts",
            "/api/v1/ota/rollouts/3/pause",
        ] {
            assert_eq!(required_scope(&post, path), Scope::Operator, "{path}");
        }
        for path in [
            "/api/v1/terminals",
            "/api/v1/terminals/t-1/revoke",
            "/api/v1/ota/releases",
            "/api/v1/alerts/17/ack/more",
            "/api/v1/anything-new",
        ] {
            assert_eq!(required_scope(&post, path), Scope::Admin, "{path}");
        }
        assert_eq!(
            required_scope(&Method::DELETE, "/api/v1/stats"),
            Scope::Admin
        );
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }
}
