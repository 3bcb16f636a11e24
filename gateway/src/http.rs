//! HTTP API (axum).
//!
//! - `GET /healthz`: `ok` while the gateway runs (no token).
//! - `GET /api/v1/stats`: counters ([`crate::stats::StatsSnapshot`]).
//! - `GET /api/v1/terminals`: every known terminal's health.
//! - `GET /api/v1/terminals/{id}`: one terminal's health.
//! - `POST /api/v1/terminals` `{"id", "secret" (64 hex), "zone"?}`: register
//!   a provisioned terminal (201 new, 200 re-registered).
//! - `POST /api/v1/terminals/{id}/revoke`: refuse its login and presses.
//! - `GET /api/v1/alerts[?open=true]`: alerts, newest first.
//! - `GET /api/v1/ota/releases`, `POST /api/v1/ota/releases[?allow_downgrade=true]`
//!   (body: a `.pota` artifact): firmware releases.
//! - `GET|POST /api/v1/ota/rollouts`: list, or start a rollout
//!   ([`RolloutRequest`]); `GET /api/v1/ota/rollouts/{id}`: one rollout with
//!   per-terminal progress; `POST /api/v1/ota/rollouts/{id}/{pause|resume|abort|retry-failed}`.
//! - `GET /api/v1/scores?window=5m|1h|today`: satisfaction per zone and terminal.
//! - `GET /api/v1/report/hourly`: weekday × hour-of-day table (site local time).
//! - `GET /api/v1/dashboard`: everything the dashboard shows, in one document.
//! - `GET /api/v1/events`: the same document as server-sent events, every 2 s.
//! - `GET /metrics`: Prometheus text exposition.
//! - `GET /`: the dashboard page (its data comes from the API).
//!
//! Everything except `/healthz` and the (data-free) dashboard page needs
//! `Authorization: Bearer TOKEN`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pressline_protocol::upstream::{Alert, TerminalHealth};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ingest::unix_ms_now;
use crate::registry::Registry;
use crate::scores::Window;
use crate::stats::{Stats, StatsSnapshot};
use crate::store::Store;

#[derive(Clone)]
pub struct ApiState {
    pub site: String,
    pub stats: Arc<Stats>,
    pub store: Store,
    pub registry: Registry,
    pub identities: crate::identity::Identities,
    pub releases: crate::releases::Releases,
    pub rollouts: crate::rollouts::Rollouts,
    pub started: Instant,
    pub upstream_configured: bool,
    pub token: Arc<str>,
}

impl ApiState {
    pub fn snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot(
            &self.site,
            self.started,
            self.upstream_configured,
            self.store.size_on_disk(),
        )
    }
}

/// The API token: the configured one, or the one in `<data_dir>/api-token`,
/// generated there on first start. Returns the token and where it came from.
pub fn api_token(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<(String, String)> {
    if let Some(t) = configured {
        return Ok((t.to_string(), "the config (http.api_token)".into()));
    }
    let path = data_dir.join("api-token");
    if path.exists() {
        crate::secret_files::refuse_world_readable(&path, "API token file")?;
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
    crate::secret_files::write_new_private(&path, &token)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((token, format!("{} (generated)", path.display())))
}

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/terminals", get(terminals).post(register))
        .route("/api/v1/terminals/{id}/revoke", axum::routing::post(revoke))
        .route("/api/v1/terminals/{id}", get(terminal))
        .route("/api/v1/alerts", get(alerts))
        .route(
            "/api/v1/ota/releases",
            get(list_releases)
                .post(upload_release)
                .layer(axum::extract::DefaultBodyLimit::max(4 << 20)),
        )
        .route(
            "/api/v1/ota/rollouts",
            get(list_rollouts).post(start_rollout),
        )
        .route("/api/v1/ota/rollouts/{id}", get(get_rollout))
        .route(
            "/api/v1/ota/rollouts/{id}/{command}",
            axum::routing::post(rollout_command),
        )
        .route("/api/v1/scores", get(scores))
        .route("/api/v1/report/hourly", get(hourly))
        .route("/api/v1/dashboard", get(dashboard))
        .route("/api/v1/events", get(events))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/",
            get(|| async { axum::response::Html(crate::dashboard::PAGE) }),
        )
        .merge(api)
        .with_state(state)
}

/// Constant-time comparison, so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if same(t.trim().as_bytes(), state.token.as_bytes()) => next.run(request).await,
        Some(_) => error(StatusCode::UNAUTHORIZED, "invalid API token"),
        None => error(
            StatusCode::UNAUTHORIZED,
            "missing API token: send 'Authorization: Bearer TOKEN'",
        ),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn stats(State(state): State<ApiState>) -> Json<StatsSnapshot> {
    Json(state.snapshot())
}

async fn terminals(State(state): State<ApiState>) -> Json<Vec<TerminalHealth>> {
    let fleet = state.registry.fleet();
    Json(
        fleet
            .terminals()
            .filter_map(|t| fleet.health(&t.id))
            .collect(),
    )
}

async fn terminal(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match state.registry.fleet().health(&id) {
        Some(h) => Json(h).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("unknown terminal {id:?} at site {}", state.site),
        ),
    }
}

async fn list_releases(State(state): State<ApiState>) -> Json<Vec<crate::releases::Release>> {
    Json(state.releases.list())
}

#[derive(Deserialize)]
struct UploadQuery {
    #[serde(default)]
    allow_downgrade: bool,
}

async fn upload_release(
    State(state): State<ApiState>,
    Query(q): Query<UploadQuery>,
    body: axum::body::Bytes,
) -> Response {
    use crate::releases::UploadError;
    match state.releases.upload(
        &body,
        q.allow_downgrade,
        crate::time::rfc3339_ms(unix_ms_now()),
    ) {
        Ok((release, new)) => {
            tracing::info!(board = %release.board, version = %release.version, new, "firmware release uploaded");
            (
                if new {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                Json(release),
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "firmware release refused");
            let status = match e {
                UploadError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
                UploadError::Conflict { .. } => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            error(status, &e.to_string())
        }
    }
}

/// `POST /api/v1/ota/rollouts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    pub version: String,
    /// Needed only when the version exists for several boards.
    #[serde(default)]
    pub board: Option<String>,
    /// Exactly one of `terminals`, `zone`, `all`.
    #[serde(default)]
    pub terminals: Option<Vec<String>>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub canary: usize,
    /// Cumulative percentages, e.g. `[25, 100]`.
    #[serde(default = "default_waves")]
    pub waves: Vec<u8>,
    /// Percent (0–100).
    #[serde(default = "default_max_failure_rate")]
    pub max_failure_rate: f64,
    /// `HH:MM-HH:MM`, site local time.
    #[serde(default)]
    pub window: Option<String>,
}

fn default_waves() -> Vec<u8> {
    vec![100]
}

fn default_max_failure_rate() -> f64 {
    10.0
}

/// A rollout as the API shows it.
#[derive(Debug, Serialize)]
pub struct RolloutView {
    pub id: u32,
    pub version: String,
    pub board: String,
    pub state: &'static str,
    pub halt_reason: Option<String>,
    pub attempt: u32,
    /// The stage being rolled out (0 = canary) of `stages`.
    pub stage: usize,
    pub stages: usize,
    pub canary: usize,
    pub waves: Vec<u8>,
    pub max_failure_rate: f64,
    pub failure_rate: f64,
    pub window: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub counts: std::collections::BTreeMap<&'static str, usize>,
    pub terminals: Vec<RolloutTerminalView>,
}

#[derive(Debug, Serialize)]
pub struct RolloutTerminalView {
    pub id: String,
    pub stage: usize,
    pub state: &'static str,
    pub percent: u8,
    pub written: u32,
    pub size: u32,
    pub bytes_served: u64,
    pub running: Option<String>,
    pub detail: Option<String>,
}

impl From<&crate::rollout::Rollout> for RolloutView {
    fn from(r: &crate::rollout::Rollout) -> Self {
        RolloutView {
            id: r.id,
            version: r.plan.version.clone(),
            board: r.plan.board.clone(),
            state: r.state.label(),
            halt_reason: r.halt_reason.clone(),
            attempt: r.attempt,
            stage: r.stage,
            stages: r.stages,
            canary: r.plan.canary,
            waves: r.plan.waves.clone(),
            max_failure_rate: r.plan.max_failure_rate * 100.0,
            failure_rate: r.failure_rate() * 100.0,
            window: r.plan.window.map(|w| w.to_string()),
            created_at: crate::time::rfc3339_ms(r.created_at_ms),
            updated_at: crate::time::rfc3339_ms(r.updated_at_ms),
            counts: r.counts(),
            terminals: r
                .terminals
                .iter()
                .map(|(id, p)| RolloutTerminalView {
                    id: id.clone(),
                    stage: p.stage,
                    state: p.state.label(),
                    percent: p.percent(),
                    written: p.written,
                    size: p.size,
                    bytes_served: p.bytes_served,
                    running: p.running.clone(),
                    detail: p.detail.clone(),
                })
                .collect(),
        }
    }
}

fn rollout_error(e: crate::rollouts::RolloutError) -> Response {
    use crate::rollouts::RolloutError as E;
    let status = match &e {
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::Busy(..) | E::Command(_) => StatusCode::CONFLICT,
        E::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        E::UnknownRelease { .. } | E::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error(status, &e.to_string())
}

async fn list_rollouts(State(state): State<ApiState>) -> Json<Vec<RolloutView>> {
    Json(
        state
            .rollouts
            .list()
            .iter()
            .map(RolloutView::from)
            .collect(),
    )
}

async fn get_rollout(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<u32>,
) -> Response {
    match state.rollouts.get(id) {
        Some(r) => Json(RolloutView::from(&r)).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no rollout {id}")),
    }
}

async fn rollout_command(
    State(state): State<ApiState>,
    axum::extract::Path((id, command)): axum::extract::Path<(u32, String)>,
) -> Response {
    match state.rollouts.command(id, &command, unix_ms_now()) {
        Ok(r) => Json(RolloutView::from(&r)).into_response(),
        Err(e) => rollout_error(e),
    }
}

async fn start_rollout(
    State(state): State<ApiState>,
    body: Result<Json<RolloutRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("bad rollout request: {e}"),
            )
        }
    };
    let plan = match plan_of(&state, req) {
        Ok(p) => p,
        Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, &message),
    };
    match state.rollouts.start(plan, unix_ms_now()) {
        Ok(r) => (StatusCode::CREATED, Json(RolloutView::from(&r))).into_response(),
        Err(e) => rollout_error(e),
    }
}

/// Resolves a request into a plan: which release, which terminals.
fn plan_of(state: &ApiState, req: RolloutRequest) -> Result<crate::rollout::Plan, String> {
    let boards: Vec<String> = state
        .releases
        .list()
        .into_iter()
        .filter(|r| r.version == req.version)
        .map(|r| r.board)
        .filter(|b| req.board.as_ref().is_none_or(|want| want == b))
        .collect();
    let board = match boards.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(format!(
                "no release {} on this gateway: upload it first with `fleet ota upload`",
                req.version
            ))
        }
        _ => {
            return Err(format!(
                "release {} exists for several boards ({}): say which with board",
                req.version,
                boards.join(", ")
            ))
        }
    };
    let known: Vec<String> = state
        .registry
        .fleet()
        .terminals()
        .map(|t| t.id.clone())
        .collect();
    let chosen = [req.terminals.is_some(), req.zone.is_some(), req.all]
        .iter()
        .filter(|x| **x)
        .count();
    if chosen != 1 {
        return Err("choose the terminals with exactly one of terminals, zone, all".into());
    }
    let targets = if let Some(list) = req.terminals {
        let unknown: Vec<&String> = list.iter().filter(|t| !known.contains(t)).collect();
        if !unknown.is_empty() {
            return Err(format!(
                "unknown terminals (never reported to this gateway): {}",
                unknown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        list
    } else if let Some(zone) = &req.zone {
        let scores = state.registry.scores();
        let members: Vec<String> = known
            .iter()
            .filter(|t| scores.zone_of(t) == zone)
            .cloned()
            .collect();
        if members.is_empty() {
            return Err(format!("no known terminal is in zone {zone:?}"));
        }
        members
    } else {
        known
    };
    let window = req
        .window
        .as_deref()
        .map(crate::rollout::Window::parse)
        .transpose()?;
    Ok(crate::rollout::Plan {
        version: req.version,
        board,
        targets,
        canary: req.canary,
        waves: req.waves,
        max_failure_rate: req.max_failure_rate / 100.0,
        window,
    })
}

#[derive(Deserialize)]
struct Registration {
    id: String,
    secret: String,
    #[serde(default)]
    zone: Option<String>,
}

async fn register(
    State(state): State<ApiState>,
    body: Result<Json<Registration>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(r)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON {\"id\": ..., \"secret\": 64 hex characters, \"zone\": optional}",
        );
    };
    if let Err(e) = pressline_protocol::ident::validate_id(&r.id) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("terminal id {:?}: {e}", r.id),
        );
    }
    if let Some(z) = &r.zone {
        if let Err(e) = pressline_protocol::ident::validate_id(z) {
            return error(StatusCode::BAD_REQUEST, &format!("zone {z:?}: {e}"));
        }
    }
    let Some(secret) = crate::identity::parse_secret(&r.secret) else {
        return error(
            StatusCode::BAD_REQUEST,
            "secret must be 64 hex characters (32 bytes)",
        );
    };
    match state.identities.register(
        &r.id,
        secret,
        r.zone.clone(),
        crate::time::rfc3339_ms(unix_ms_now()),
    ) {
        Ok(new) => {
            if let Some(zone) = &r.zone {
                state.registry.scores().assign(&r.id, zone);
            }
            tracing::info!(terminal = %r.id, zone = ?r.zone, new, "terminal registered");
            let status = if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (
                status,
                Json(serde_json::json!({ "id": r.id, "registered": true, "new": new })),
            )
                .into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot store the registration: {e}"),
        ),
    }
}

async fn revoke(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match state.identities.revoke(&id) {
        Ok(true) => {
            tracing::warn!(terminal = %id, "terminal revoked: its login and presses are refused from now on");
            Json(serde_json::json!({ "id": id, "revoked": true })).into_response()
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            &format!("terminal {id:?} is not registered at site {}", state.site),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot store the revocation: {e}"),
        ),
    }
}

#[derive(Deserialize)]
struct AlertQuery {
    #[serde(default)]
    open: bool,
}

async fn alerts(State(state): State<ApiState>, Query(q): Query<AlertQuery>) -> Json<Vec<Alert>> {
    let fleet = state.registry.fleet();
    Json(
        fleet
            .alerts()
            .filter(|a| !q.open || a.state == "raised")
            .cloned()
            .collect(),
    )
}

#[derive(Deserialize)]
struct ScoresQuery {
    window: Option<String>,
}

async fn scores(State(state): State<ApiState>, Query(q): Query<ScoresQuery>) -> Response {
    let name = q.window.as_deref().unwrap_or("1h");
    match Window::parse(name) {
        Some(window) => Json(state.registry.scores().window(unix_ms_now(), window)).into_response(),
        None => error(
            StatusCode::BAD_REQUEST,
            &format!("unknown window {name:?}: use 5m, 1h or today"),
        ),
    }
}

async fn hourly(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "site": state.site, "cells": state.registry.scores().hourly() }))
}

async fn dashboard(State(state): State<ApiState>) -> Json<crate::dashboard::Snapshot> {
    Json(crate::dashboard::snapshot(&state))
}

/// Server-sent events: a dashboard snapshot now and every 2 seconds.
async fn events(
    State(state): State<ApiState>,
) -> axum::response::Sse<
    impl tokio_stream::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use tokio_stream::StreamExt;
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
        std::time::Duration::from_secs(2),
    ));
    let stream = ticks.map(move |_| {
        let snapshot = crate::dashboard::snapshot(&state);
        Ok(axum::response::sse::Event::default()
            .event("snapshot")
            .json_data(snapshot)
            .unwrap_or_default())
    });
    axum::response::Sse::new(stream).keep_alive(axum::response::sse::KeepAlive::default())
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let body = crate::metrics::render(&state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Serves until shutdown.
/// Where the API is served: plain HTTP, or HTTPS when a certificate is
/// configured.
pub enum HttpListener {
    Plain(tokio::net::TcpListener),
    Tls(crate::https::TlsListener),
}

pub async fn serve(listener: HttpListener, state: ApiState, mut shutdown: watch::Receiver<bool>) {
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let result = match listener {
        HttpListener::Plain(l) => {
            axum::serve(l, router(state))
                .with_graceful_shutdown(stop)
                .await
        }
        HttpListener::Tls(l) => {
            axum::serve(l, router(state))
                .with_graceful_shutdown(stop)
                .await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP server failed");
    }
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
