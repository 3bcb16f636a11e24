//! HTTP API (axum).
//!
//! - `GET /healthz`: `ok` while the gateway runs.
//! - `GET /api/v1/stats`: counters as JSON ([`crate::stats::StatsSnapshot`]).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;

use crate::stats::{Stats, StatsSnapshot};
use crate::store::Store;

#[derive(Clone)]
pub struct ApiState {
    pub site: String,
    pub stats: Arc<Stats>,
    pub store: Store,
    pub started: Instant,
    pub upstream_configured: bool,
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

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/stats", get(stats))
        .with_state(state)
}

async fn stats(State(state): State<ApiState>) -> Json<StatsSnapshot> {
    Json(state.snapshot())
}

/// Serves until shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    mut shutdown: watch::Receiver<bool>,
) {
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP server failed");
    }
}
