//! The central web view: the network's reports in a browser, read from
//! PostgreSQL with the same code as `fleet report` (`pressline_reports`),
//! so the page and the CLI can never disagree.
//!
//! Pages are rendered on the server (HTML and SVG charts, no scripts, no
//! external requests) and read on a phone: cards stack and tables scroll
//! inside their card. Every URL carries its filters (`to`, `days`,
//! `weeks`, `prior`, `sites`, `zones`), so a view can be bookmarked and
//! shared, and every table has a CSV download.
//!
//! # Layout
//! - [`access`]: viewer tokens (kept hashed in PostgreSQL), the login form,
//!   the cookie, and the check in front of every page.
//! - [`reader`]: the read-only database connection, reconnected when lost.
//! - [`filters`]: the URL's period and site filters.
//! - [`html`]: the page frame, styles, escaping and number formats.
//! - [`charts`]: the trend line and the hour × weekday heat map as SVG.
//! - [`overview`], [`site_page`], [`compare`]: the pages and their CSV.

pub mod access;
pub mod charts;
pub mod compare;
pub mod filters;
pub mod html;
pub mod overview;
pub mod reader;
pub mod site_page;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// What every page handler shares.
#[derive(Clone)]
pub struct Web {
    pub reader: Arc<reader::Reader>,
    /// Served over HTTPS: the login cookie is `Secure`.
    pub https: bool,
    pub refused_logins: Arc<access::RefusedLogins>,
}

/// Every route; all but the login form and `/healthz` need a viewer.
pub fn router(web: Web) -> Router {
    let pages = Router::new()
        .route("/", get(overview::page))
        .route("/report.csv", get(overview::csv))
        .route("/sites/{site}", get(site_page::page))
        .route("/sites/{site}/trend.csv", get(site_page::trend_csv))
        .route("/sites/{site}/zones.csv", get(site_page::zones_csv))
        .route("/sites/{site}/hours.csv", get(site_page::hours_csv))
        .route("/sites/{site}/alerts.csv", get(site_page::alerts_csv))
        .route("/sites/{site}/terminals.csv", get(site_page::terminals_csv))
        .route("/compare", get(compare::page))
        .route("/compare.csv", get(compare::csv))
        .route_layer(axum::middleware::from_fn_with_state(
            web.clone(),
            access::require_viewer,
        ));
    Router::new()
        .merge(pages)
        .route("/login", get(access::login_form).post(access::login))
        .route("/logout", axum::routing::post(access::logout))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(web)
}

/// Why a page could not be shown, as the viewer sees it.
#[derive(Debug)]
pub enum PageError {
    /// The URL's filters are wrong: what to fix.
    BadRequest(String),
    NotFound(String),
    /// The database failed; the detail is logged, not shown.
    Database(String),
}

impl From<tokio_postgres::Error> for PageError {
    fn from(e: tokio_postgres::Error) -> Self {
        PageError::Database(crate::database::describe(&e))
    }
}

impl From<anyhow::Error> for PageError {
    fn from(e: anyhow::Error) -> Self {
        PageError::Database(format!("{e:#}"))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            PageError::Database(detail) => {
                tracing::warn!(error = %detail, "web view: cannot read the database");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The report database cannot be read just now; try again in a minute.".into(),
                )
            }
        };
        let body = html::frame(
            "Pressline reports",
            "",
            &format!("<p class=\"error\">{}</p>", html::escape(&message)),
        );
        (status, axum::response::Html(body)).into_response()
    }
}

/// A CSV download named `file` (reduced to letters, digits, `-`, `_`
/// and `.`: site names are the gateways' own).
pub fn csv_response(file: &str, body: String) -> Response {
    let file: String = file
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8".to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response()
}
