//! The OTA part of the API: firmware releases (upload, list) and rollouts
//! (start, follow, pause, resume, abort, retry).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::routes::error;
use super::state::ApiState;
use crate::clock::unix_ms_now;

pub(super) async fn list_releases(
    State(state): State<ApiState>,
) -> Json<Vec<crate::ota::releases::Release>> {
    Json(state.releases.list())
}

#[derive(Deserialize)]
pub(super) struct UploadQuery {
    #[serde(default)]
    allow_downgrade: bool,
}

pub(super) async fn upload_release(
    State(state): State<ApiState>,
    Query(q): Query<UploadQuery>,
    body: axum::body::Bytes,
) -> Response {
    use crate::ota::releases::UploadError;
    match state.releases.upload(
        &body,
        q.allow_downgrade,
        crate::clock::rfc3339_ms(unix_ms_now()),
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

pub use pressline_protocol::api::{Rollout as RolloutView, RolloutTerminal as RolloutTerminalView};

impl From<&crate::ota::rollout::Rollout> for RolloutView {
    fn from(r: &crate::ota::rollout::Rollout) -> Self {
        RolloutView {
            id: r.id,
            version: r.plan.version.clone(),
            board: r.plan.board.clone(),
            state: r.state,
            halt_reason: r.halt_reason.clone(),
            attempt: r.attempt,
            stage: r.stage,
            stages: r.stages,
            canary: r.plan.canary,
            waves: r.plan.waves.clone(),
            max_failure_rate: r.plan.max_failure_rate * 100.0,
            failure_rate: r.failure_rate() * 100.0,
            window: r.plan.window.map(|w| w.to_string()),
            created_at: crate::clock::rfc3339_ms(r.created_at_ms),
            updated_at: crate::clock::rfc3339_ms(r.updated_at_ms),
            counts: r.counts(),
            terminals: r
                .terminals
                .iter()
                .map(|(id, p)| RolloutTerminalView {
                    id: id.clone(),
                    stage: p.stage,
                    state: p.state,
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

fn rollout_error(e: crate::ota::service::RolloutError) -> Response {
    use crate::ota::service::RolloutError as E;
    let status = match &e {
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::Busy(..) | E::Command(_) => StatusCode::CONFLICT,
        E::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        E::UnknownRelease { .. } | E::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error(status, &e.to_string())
}

pub(super) async fn list_rollouts(State(state): State<ApiState>) -> Json<Vec<RolloutView>> {
    Json(
        state
            .rollouts
            .list()
            .iter()
            .map(RolloutView::from)
            .collect(),
    )
}

pub(super) async fn get_rollout(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<u32>,
) -> Response {
    match state.rollouts.get(id) {
        Some(r) => Json(RolloutView::from(&r)).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no rollout {id}")),
    }
}

pub(super) async fn rollout_command(
    State(state): State<ApiState>,
    axum::extract::Path((id, command)): axum::extract::Path<(u32, String)>,
) -> Response {
    match state.rollouts.command(id, &command, unix_ms_now()) {
        Ok(r) => Json(RolloutView::from(&r)).into_response(),
        Err(e) => rollout_error(e),
    }
}

pub(super) async fn start_rollout(
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
fn plan_of(state: &ApiState, req: RolloutRequest) -> Result<crate::ota::rollout::Plan, String> {
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
        .monitor()
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
        .map(crate::ota::rollout::Window::parse)
        .transpose()?;
    Ok(crate::ota::rollout::Plan {
        version: req.version,
        board,
        targets,
        canary: req.canary,
        waves: req.waves,
        max_failure_rate: req.max_failure_rate / 100.0,
        window,
    })
}
