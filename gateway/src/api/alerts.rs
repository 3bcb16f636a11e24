//! The alert handlers: the list, acknowledging (API and signed links) and
//! response figures.
//!
//! - `GET /api/v1/alerts[?open=true]`: alerts, newest first (open: the
//!   condition still holds).
//! - `POST /api/v1/alerts/{id}/ack` `{"by", "note"?}`: acknowledge.
//! - `GET /api/v1/alerts/response[?days=7]`: time to acknowledge and to
//!   recover ([`crate::alerting::response`]).
//! - `GET /ack/{id}?exp&by&sig`: a signed link's confirmation page (no
//!   token: the signature is the permission); `POST /ack/{id}` (its form)
//!   acknowledges. `GET` changes nothing, since chat apps open links to
//!   preview them.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use pressline_protocol::upstream::Alert;
use serde::Deserialize;

use super::routes::error;
use super::state::ApiState;
use crate::alerting::lifecycle::AckError;
use crate::clock::unix_ms_now;

#[derive(Deserialize)]
pub struct AlertQuery {
    #[serde(default)]
    open: bool,
}

pub async fn list(State(state): State<ApiState>, Query(q): Query<AlertQuery>) -> Json<Vec<Alert>> {
    let monitor = state.registry.monitor();
    Json(
        monitor
            .alerts()
            .iter()
            .filter(|a| !q.open || a.is_open())
            .cloned()
            .collect(),
    )
}

#[derive(Deserialize)]
pub struct AckRequest {
    by: String,
    #[serde(default)]
    note: Option<String>,
}

fn ack_error(e: AckError) -> Response {
    let status = match e {
        AckError::Unknown(_) => StatusCode::NOT_FOUND,
        AckError::Closed(_) => StatusCode::CONFLICT,
        AckError::BadName | AckError::NoteTooLong => StatusCode::BAD_REQUEST,
        AckError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string())
}

pub async fn acknowledge(
    State(state): State<ApiState>,
    Path(id): Path<u64>,
    body: Result<Json<AckRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(r)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON {\"by\": \"who is acknowledging\", \"note\": optional}",
        );
    };
    match state
        .registry
        .acknowledge(id, &r.by, r.note.as_deref())
        .await
    {
        Ok(alert) => Json(alert).into_response(),
        Err(e) => ack_error(e),
    }
}

#[derive(Deserialize)]
pub struct ResponseQuery {
    days: Option<u32>,
}

pub async fn response(State(state): State<ApiState>, Query(q): Query<ResponseQuery>) -> Response {
    let days = q.days.unwrap_or(7);
    if !(1..=400).contains(&days) {
        return error(StatusCode::BAD_REQUEST, "days must be 1-400");
    }
    Json(response_figures(&state, days)).into_response()
}

/// Figures over the alerts raised in the last `days` days.
pub fn response_figures(state: &ApiState, days: u32) -> crate::alerting::response::ResponseFigures {
    let since = unix_ms_now() - i64::from(days) * 86_400_000;
    let alerts: Vec<(Alert, Option<String>)> = {
        let monitor = state.registry.monitor();
        monitor.alerts().iter().cloned().collect::<Vec<_>>()
    }
    .into_iter()
    .map(|a| {
        let zone = state.registry.zone_of(&a);
        (a, zone)
    })
    .collect();
    crate::alerting::response::figures(
        alerts.iter().map(|(a, z)| (a, z.as_deref())),
        &state.site_time,
        since,
    )
}

#[derive(Deserialize)]
pub struct LinkQuery {
    exp: i64,
    by: String,
    sig: String,
}

#[derive(Deserialize)]
pub struct LinkForm {
    exp: i64,
    by: String,
    sig: String,
    #[serde(default)]
    name: String,
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;\
             margin:2rem auto;padding:0 1rem;background:#0f1419;color:#e6e9ec}}\
             button{{font-size:1.2rem;padding:.8rem 1.4rem;border:0;border-radius:6px;\
             background:#2e9e5b;color:#fff}}input{{font-size:1.1rem;padding:.5rem;width:100%;\
             box-sizing:border-box;margin:.4rem 0 1rem}}.muted{{color:#8a96a3}}</style></head>\
             <body><h1>{title}</h1>{body}</body></html>"
        )),
    )
        .into_response()
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn checked(state: &ApiState, id: u64, exp: i64, by: &str, sig: &str) -> Result<(), Response> {
    state
        .notifier
        .signer
        .verify(id, exp, by, sig, unix_ms_now())
        .map_err(|e| {
            tracing::warn!(alert = id, error = %e, "acknowledge link refused");
            page(
                StatusCode::FORBIDDEN,
                "Link not accepted",
                &format!("<p>{}</p>", esc(&e.to_string())),
            )
        })
}

fn describe(alert: &Alert) -> String {
    let (title, text) = crate::alerting::channels::summary(alert);
    let title = title
        .strip_prefix("Escalated, nobody has acknowledged: ")
        .unwrap_or(&title)
        .to_string();
    format!(
        "<p><strong>{}</strong></p><p>{}</p>",
        esc(&title),
        esc(&text)
    )
}

pub async fn link_page(
    State(state): State<ApiState>,
    Path(id): Path<u64>,
    Query(q): Query<LinkQuery>,
) -> Response {
    if let Err(page) = checked(&state, id, q.exp, &q.by, &q.sig) {
        return page;
    }
    let Some(alert) = state.registry.monitor().alerts().get(id).cloned() else {
        return page(
            StatusCode::NOT_FOUND,
            "Alert not found",
            "<p>It was closed long ago.</p>",
        );
    };
    if let (Some(by), Some(at)) = (&alert.acknowledged_by, &alert.acknowledged_at) {
        return page(
            StatusCode::OK,
            "Already acknowledged",
            &format!("{}<p>By {} at {}.</p>", describe(&alert), esc(by), esc(at)),
        );
    }
    page(
        StatusCode::OK,
        "Acknowledge this alert?",
        &format!(
            "{}<form method=\"post\" action=\"/ack/{id}\">\
             <input type=\"hidden\" name=\"exp\" value=\"{}\">\
             <input type=\"hidden\" name=\"by\" value=\"{}\">\
             <input type=\"hidden\" name=\"sig\" value=\"{}\">\
             <label for=\"name\">Your name</label>\
             <input id=\"name\" name=\"name\" maxlength=\"80\" autocomplete=\"name\" placeholder=\"{}\">\
             <button type=\"submit\">I'm on it</button></form>\
             <p class=\"muted\">Sent to {}.</p>",
            describe(&alert),
            q.exp,
            esc(&q.by),
            esc(&q.sig),
            esc(&q.by),
            esc(&q.by),
        ),
    )
}

pub async fn link_acknowledge(
    State(state): State<ApiState>,
    Path(id): Path<u64>,
    form: Result<Form<LinkForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return page(
            StatusCode::BAD_REQUEST,
            "Link not accepted",
            "<p>The form was incomplete.</p>",
        );
    };
    if let Err(page) = checked(&state, id, f.exp, &f.by, &f.sig) {
        return page;
    }
    let name = f.name.trim();
    let by = if name.is_empty() {
        f.by.clone()
    } else {
        name.to_string()
    };
    let note = format!("acknowledged from the link sent to {}", f.by);
    match state.registry.acknowledge(id, &by, Some(&note)).await {
        Ok(alert) => page(
            StatusCode::OK,
            "Acknowledged",
            &format!(
                "{}<p>By {}. Thank you.</p>",
                describe(&alert),
                esc(alert.acknowledged_by.as_deref().unwrap_or(&by))
            ),
        ),
        Err(e) => page(
            match e {
                AckError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::CONFLICT,
            },
            "Not acknowledged",
            &format!("<p>{}</p>", esc(&e.to_string())),
        ),
    }
}
