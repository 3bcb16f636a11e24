//! Who may read the reports: viewer tokens, made with `pressline-central
//! viewers add NAME` and kept only as SHA-256 hashes in `report_viewers`.
//! A browser signs in once with its token (an `HttpOnly`, `SameSite=Lax`
//! cookie, `Secure` over HTTPS); scripts send `Authorization: Bearer`.
//! The database's own credentials never reach a browser, and a viewer can
//! only read: the web view has no route that changes anything.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use pressline_host::log_limit::RateLimitedLog;
use pressline_host::sync::LockExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::html::{escape, frame};
use super::Web;

const COOKIE: &str = "pressline_viewer";
/// A signed-in browser stays signed in for 30 days.
const COOKIE_MAX_AGE_SECS: u64 = 30 * 86_400;
const TOKEN_PREFIX: &str = "plv_";

/// A new viewer token (`plv_` and 48 hex digits: 192 random bits).
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{TOKEN_PREFIX}{hex}")
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Stores a viewer; its token, shown once.
pub async fn add(client: &tokio_postgres::Client, name: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        !name.trim().is_empty() && name.len() <= 200,
        "a viewer's name is 1 to 200 characters"
    );
    let token = new_token();
    let added = client
        .execute(
            "INSERT INTO report_viewers (name, token_sha256) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &hash(&token)],
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot add the viewer: {}", crate::database::describe(&e)))?;
    anyhow::ensure!(
        added == 1,
        "a viewer named {name:?} exists; remove it first (pressline-central viewers remove {name:?}) to give it a new token"
    );
    Ok(token)
}

/// Removes a viewer: its token stops working at once. Whether it existed.
pub async fn remove(client: &tokio_postgres::Client, name: &str) -> anyhow::Result<bool> {
    let n = client
        .execute("DELETE FROM report_viewers WHERE name = $1", &[&name])
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot remove the viewer: {}",
                crate::database::describe(&e)
            )
        })?;
    Ok(n > 0)
}

/// (name, created) of every viewer.
pub async fn list(
    client: &tokio_postgres::Client,
) -> anyhow::Result<Vec<(String, time::OffsetDateTime)>> {
    let rows = client
        .query(
            "SELECT name, created_at FROM report_viewers ORDER BY name",
            &[],
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot list the viewers: {}", crate::database::describe(&e))
        })?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The viewer a token belongs to, if any.
async fn viewer(web: &Web, token: &str) -> Result<Option<String>, super::PageError> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 200 {
        return Ok(None);
    }
    let client = web.reader.client().await?;
    let row = client
        .query_opt(
            "SELECT name FROM report_viewers WHERE token_sha256 = $1",
            &[&hash(token)],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// The token a request carries: its bearer header, else its cookie.
fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// In front of every report page: a known viewer goes on; a browser
/// without one is sent to the login form, anything else gets 401.
pub async fn require_viewer(State(web): State<Web>, request: Request, next: Next) -> Response {
    let known = match presented(request.headers()) {
        Some(token) => match viewer(&web, &token).await {
            Ok(Some(_)) => true,
            Ok(None) => {
                web.refused_logins.refused(Instant::now());
                false
            }
            Err(e) => return e.into_response(),
        },
        None => false,
    };
    if known {
        return next.run(request).await;
    }
    let wants_page = request.method() == Method::GET
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
    if wants_page {
        let target = request
            .uri()
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        let location = format!("/login?next={}", super::filters::encode(&target));
        return (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a viewer token is needed (pressline-central viewers add NAME)\n",
    )
        .into_response()
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Where to go after signing in: a path on this server only.
fn safe_next(next: Option<&str>) -> String {
    // Only characters of a path and query this server makes: browsers
    // drop tabs and newlines from URLs, so "/\t/evil" would otherwise
    // become "//evil", another host.
    let plain = |n: &str| {
        n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._~%?&=,:-+".contains(&b))
    };
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && plain(n) => n.to_string(),
        _ => "/".to_string(),
    }
}

fn login_page(next: &str, error: Option<&str>) -> String {
    let error = error.map_or_else(String::new, |e| {
        format!("<p class=\"error\">{}</p>", escape(e))
    });
    let body = format!(
        "<div class=\"cards\"><div class=\"card\"><h1>Sign in</h1>{error}\
         <form method=\"post\" action=\"/login\" class=\"filters\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>Viewer token<input type=\"password\" name=\"token\" autocomplete=\"current-password\" required style=\"width:22rem\"></label>\
         <button>Sign in</button></form>\
         <p class=\"muted\">Ask the operator for a token (<code>pressline-central viewers add NAME</code>).</p>\
         </div></div>",
        escape(next)
    );
    frame("Sign in · Pressline reports", "", &body)
}

pub async fn login_form(Query(q): Query<LoginQuery>) -> Html<String> {
    Html(login_page(&safe_next(q.next.as_deref()), None))
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Unknown tokens (sign-ins and requests) are logged at most once a
/// minute, with how many there were: guessing tokens cannot fill the log.
pub struct RefusedLogins {
    log: Mutex<RateLimitedLog>,
}

impl RefusedLogins {
    pub fn new() -> RefusedLogins {
        RefusedLogins {
            log: Mutex::new(RateLimitedLog::new(Duration::from_secs(60))),
        }
    }

    fn refused(&self, now: Instant) {
        if let Some(suppressed) = self.log.locked().admit("unknown token", now) {
            tracing::warn!(
                suppressed,
                "web view: unknown token refused (sign-in or request)"
            );
        }
    }
}

impl Default for RefusedLogins {
    fn default() -> Self {
        Self::new()
    }
}

pub async fn login(
    State(web): State<Web>,
    axum::extract::Form(form): axum::extract::Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let token = form.token.trim();
    match viewer(&web, token).await {
        Err(e) => e.into_response(),
        Ok(None) => {
            web.refused_logins.refused(Instant::now());
            (
                StatusCode::UNAUTHORIZED,
                Html(login_page(&next, Some("That token is not a viewer's."))),
            )
                .into_response()
        }
        Ok(Some(name)) => {
            tracing::info!(viewer = %name, "web view: signed in");
            let secure = if web.https { "; Secure" } else { "" };
            (
                StatusCode::SEE_OTHER,
                [
                    (
                        header::SET_COOKIE,
                        format!(
                            "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={COOKIE_MAX_AGE_SECS}{secure}"
                        ),
                    ),
                    (header::LOCATION, next),
                ],
            )
                .into_response()
        }
    }
}

pub async fn logout(State(web): State<Web>) -> Response {
    let secure = if web.https { "; Secure" } else { "" };
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
            ),
            (header::LOCATION, "/login".to_string()),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_signing_in_a_browser_goes_only_to_a_page_of_this_server() {
        assert_eq!(
            safe_next(Some("/sites/arena?days=7")),
            "/sites/arena?days=7"
        );
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("/\t/evil.example")), "/");
        assert_eq!(safe_next(Some("/\n/evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn a_token_is_read_from_the_bearer_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=b; pressline_viewer=plv_x; c=d".parse().unwrap(),
        );
        assert_eq!(presented(&h).as_deref(), Some("plv_x"));
        h.insert(header::AUTHORIZATION, "Bearer plv_y".parse().unwrap());
        assert_eq!(presented(&h).as_deref(), Some("plv_y"));
    }

    #[test]
    fn tokens_are_long_random_and_recognisable() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("plv_") && a.len() == 52);
    }
}
