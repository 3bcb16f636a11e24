//! The API's routes, and its handlers for stats, terminals, alerts, scores
//! and the dashboard (axum); the OTA handlers are in [`super::ota`].
//!
//! - `GET /healthz`: `ok` while the gateway runs and its store works; 503
//!   naming the fault while the store is being reopened (no token).
//! - `GET /api/v1/stats`: counters ([`crate::stats::StatsSnapshot`]).
//! - `GET /api/v1/terminals`: every known terminal's health.
//! - `GET /api/v1/terminals/{id}`: one terminal's health.
//! - `POST /api/v1/terminals` `{"id", "secret" (64 hex), "zone"?}`: register
//!   a provisioned terminal (201 new, 200 re-registered).
//! - `POST /api/v1/terminals/{id}/revoke`: refuse its login and presses.
//! - `GET|POST /api/v1/terminals/{id}/power` `{"mode": "mains"|"battery"|null,
//!   "upload_delay_secs"?, "heartbeat_every_secs"?, "unhappy_run"?}`: the
//!   power settings the site wants it to use (null: no wish; the terminal
//!   keeps what it runs with until it restarts with its provisioned ones).
//! - `GET /api/v1/alerts[?open=true]`, `POST /api/v1/alerts/{id}/ack`,
//!   `GET /api/v1/alerts/response`, and the signed links' `GET|POST
//!   /ack/{id}`: in [`super::alerts`].
//! - `GET /api/v1/ota/releases`, `POST /api/v1/ota/releases[?allow_downgrade=true]`
//!   (body: a `.pota` artifact): firmware releases.
//! - `GET|POST /api/v1/ota/rollouts`: list, or start a rollout
//!   ([`super::ota::RolloutRequest`]); `GET /api/v1/ota/rollouts/{id}`: one rollout with
//!   per-terminal progress; `POST /api/v1/ota/rollouts/{id}/{pause|resume|abort|retry-failed}`.
//! - `GET /api/v1/scores?window=5m|1h|today`: satisfaction per zone and terminal.
//! - `GET /api/v1/report/hourly`: weekday × hour-of-day table (site local time).
//! - `GET /api/v1/dashboard`: everything the dashboard shows, in one document.
//! - `GET /api/v1/events`: the same document as server-sent events, every 2 s.
//! - `GET /metrics`: Prometheus text exposition.
//! - `GET /`: the dashboard page (its data comes from the API).
//!
//! Everything except `/healthz` and the (data-free) dashboard page needs
//! `Authorization: Bearer TOKEN`, of a scope that covers the request
//! ([`super::token`]: reads `viewer`, acknowledging and rollouts
//! `operator`, the rest `admin`); a token of too small a scope gets 403.

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pressline_protocol::upstream::TerminalHealth;
use serde::Deserialize;

use super::alerts;
use super::ota;
use super::state::ApiState;
use super::token::required_scope;
use crate::clock::unix_ms_now;
use crate::insight::scores::Window;
use crate::stats::StatsSnapshot;
use crate::store::StoreError;
use pressline_protocol::power::PowerSettings;

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/terminals", get(terminals).post(register))
        .route("/api/v1/terminals/{id}/revoke", axum::routing::post(revoke))
        .route(
            "/api/v1/terminals/{id}/power",
            get(power_wanted).post(set_power),
        )
        .route("/api/v1/terminals/{id}", get(terminal))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/response", get(alerts::response))
        .route(
            "/api/v1/alerts/{id}/ack",
            axum::routing::post(alerts::acknowledge),
        )
        .route(
            "/api/v1/ota/releases",
            get(ota::list_releases)
                .post(ota::upload_release)
                .layer(axum::extract::DefaultBodyLimit::max(4 << 20)),
        )
        .route(
            "/api/v1/ota/rollouts",
            get(ota::list_rollouts).post(ota::start_rollout),
        )
        .route("/api/v1/ota/rollouts/{id}", get(ota::get_rollout))
        .route(
            "/api/v1/ota/rollouts/{id}/{command}",
            axum::routing::post(ota::rollout_command),
        )
        .route("/api/v1/scores", get(scores))
        .route("/api/v1/report/hourly", get(hourly))
        .route("/api/v1/dashboard", get(dashboard))
        .route("/api/v1/events", get(events))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        // Signed links carry their own permission (see `alerts`).
        .route(
            "/ack/{id}",
            get(alerts::link_page).post(alerts::link_acknowledge),
        )
        .route(
            "/",
            get(|| async { axum::response::Html(crate::api::dashboard::PAGE) }),
        )
        .merge(api)
        .with_state(state)
}

/// `ok`, or 503 with the reason while the press store is unavailable
/// (terminals' presses are then not acked: a supervisor or load balancer
/// should know).
async fn healthz(State(state): State<ApiState>) -> Response {
    match state.store.fault() {
        None => "ok\n".into_response(),
        Some(fault) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {fault}\n"),
        )
            .into_response(),
    }
}

/// Admits a request whose token's scope covers what it asks
/// ([`super::token::required_scope`]). A refusal closes the connection:
/// the request's body is left unread, so the connection cannot carry
/// another request, and a client that pooled it would send its next
/// request into a closing socket.
async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match refusal(&state, &request) {
        Some(mut refused) => {
            refused.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            refused
        }
        None => next.run(request).await,
    }
}

/// Why a request's token does not admit it, if it does not.
fn refusal(state: &ApiState, request: &Request) -> Option<Response> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(presented) = presented else {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "missing API token: send 'Authorization: Bearer TOKEN'",
        ));
    };
    let Some(scope) = state.tokens.scope_of(presented.trim()) else {
        return Some(error(StatusCode::UNAUTHORIZED, "invalid API token"));
    };
    let needed = required_scope(request.method(), request.uri().path());
    if scope < needed {
        let message = format!(
            "this is a {} token; {} {} needs the {} token (<data-dir>/{} on the gateway)",
            scope.as_str(),
            request.method(),
            request.uri().path(),
            needed.as_str(),
            needed.file_name()
        );
        return Some(error(StatusCode::FORBIDDEN, &message));
    }
    None
}

pub(super) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn stats(State(state): State<ApiState>) -> Json<StatsSnapshot> {
    Json(state.snapshot())
}

async fn terminals(State(state): State<ApiState>) -> Json<Vec<TerminalHealth>> {
    let monitor = state.registry.monitor();
    Json(
        monitor
            .terminals()
            .map(|t| t.document(&state.site))
            .collect(),
    )
}

async fn terminal(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match state.registry.monitor().health(&id) {
        Some(h) => Json(h).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("unknown terminal {id:?} at site {}", state.site),
        ),
    }
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
    if crate::broker::is_gateways_client_id(&r.id) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "terminal id {:?} is the gateway's own; choose another",
                r.id
            ),
        );
    }
    if let Some(z) = &r.zone {
        if let Err(e) = pressline_protocol::ident::validate_id(z) {
            return error(StatusCode::BAD_REQUEST, &format!("zone {z:?}: {e}"));
        }
    }
    let Some(secret) = crate::terminals::identity::parse_secret(&r.secret) else {
        return error(
            StatusCode::BAD_REQUEST,
            "secret must be 64 hex characters (32 bytes)",
        );
    };
    // Saved and flushed: on a blocking thread, not an async worker.
    let (identities, id, zone) = (state.identities.clone(), r.id.clone(), r.zone.clone());
    let registered = tokio::task::spawn_blocking(move || {
        identities.register(&id, secret, zone, crate::clock::rfc3339_ms(unix_ms_now()))
    })
    .await
    .unwrap_or_else(|e| {
        Err(StoreError::Unavailable(format!(
            "registration thread failed: {e}"
        )))
    });
    match registered {
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
    let (identities, terminal) = (state.identities.clone(), id.clone());
    let revoked = tokio::task::spawn_blocking(move || identities.revoke(&terminal))
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Unavailable(format!(
                "revocation thread failed: {e}"
            )))
        });
    match revoked {
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

/// A request for a terminal's power settings: the battery defaults fill
/// what is not given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PowerRequest {
    mode: Option<String>,
    upload_delay_secs: Option<u16>,
    heartbeat_every_secs: Option<u16>,
    unhappy_run: Option<u8>,
}

impl PowerRequest {
    /// The settings asked for (`None`: the terminal's own), or what is wrong.
    fn settings(&self) -> Result<Option<PowerSettings>, String> {
        let tuned = self.upload_delay_secs.is_some()
            || self.heartbeat_every_secs.is_some()
            || self.unhappy_run.is_some();
        let base = match self.mode.as_deref() {
            None if tuned => return Err("give the mode the settings are for".into()),
            None => return Ok(None),
            Some("mains") => PowerSettings::MAINS,
            Some("battery") => PowerSettings::BATTERY,
            Some(other) => return Err(format!("mode {other:?}: expected mains, battery or null")),
        };
        let settings = PowerSettings {
            upload_delay_secs: self.upload_delay_secs.unwrap_or(base.upload_delay_secs),
            heartbeat_every_secs: self
                .heartbeat_every_secs
                .unwrap_or(base.heartbeat_every_secs),
            unhappy_run: self.unhappy_run.unwrap_or(base.unhappy_run),
            ..base
        };
        settings.validate().map_err(str::to_string)?;
        Ok(Some(settings))
    }
}

/// The wish as the API shows it.
fn power_document(id: &str, wanted: Option<PowerSettings>) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "wanted": wanted.map(|s| serde_json::json!({
            "mode": s.mode.name(),
            "upload_delay_secs": s.upload_delay_secs,
            "heartbeat_every_secs": s.heartbeat_every_secs,
            "unhappy_run": s.unhappy_run,
        })),
    })
}

async fn power_wanted(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    Json(power_document(&id, state.power.wanted(&id))).into_response()
}

async fn set_power(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Result<Json<PowerRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(request)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON {\"mode\": \"mains\"|\"battery\"|null, \"upload_delay_secs\"?, \"heartbeat_every_secs\"?, \"unhappy_run\"?}",
        );
    };
    if let Err(e) = pressline_protocol::ident::validate_id(&id) {
        return error(StatusCode::BAD_REQUEST, &format!("terminal id {id:?}: {e}"));
    }
    let settings = match request.settings() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let (power, terminal) = (state.power.clone(), id.clone());
    let stored = tokio::task::spawn_blocking(move || power.set(&terminal, settings))
        .await
        .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("store thread failed: {e}"))));
    match stored {
        Ok(()) => {
            tracing::info!(terminal = %id, mode = settings.map_or("its own", |s| s.mode.name()), "power settings wanted for a terminal (sent at its next heartbeat)");
            Json(power_document(&id, settings)).into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot store the power settings: {e}"),
        ),
    }
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

async fn dashboard(State(state): State<ApiState>) -> Json<crate::api::dashboard::Snapshot> {
    Json(crate::api::dashboard::snapshot(&state))
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
        let snapshot = crate::api::dashboard::snapshot(&state);
        Ok(axum::response::sse::Event::default()
            .event("snapshot")
            .json_data(snapshot)
            .unwrap_or_default())
    });
    axum::response::Sse::new(stream).keep_alive(axum::response::sse::KeepAlive::default())
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let body = crate::api::metrics::render(&state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
