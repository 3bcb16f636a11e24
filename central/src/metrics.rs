//! Progress and lag, served at `/metrics` (Prometheus text) and
//! `/api/v1/stats` (JSON), with `/healthz` for supervisors and load
//! balancers.

use pressline_host::sync::LockExt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::documents::DocumentKind;

/// Counters shared by the consumer and the HTTP server.
#[derive(Debug, Default)]
pub struct Metrics {
    pub presses: AtomicU64,
    pub statuses: AtomicU64,
    pub health: AtomicU64,
    pub alerts: AtomicU64,
    pub ota: AtomicU64,
    pub press_batches: AtomicU64,
    pub rejected: AtomicU64,
    pub presses_inserted: AtomicU64,
    pub presses_duplicate: AtomicU64,
    pub batches: AtomicU64,
    pub batch_retries: AtomicU64,
    /// Time spent in database transactions (µs).
    pub commit_micros: AtomicU64,
    pub postgres_errors: AtomicU64,
    pub amqp_connects: AtomicU64,
    pub amqp_connected: AtomicBool,
    pub postgres_connected: AtomicBool,
    /// Messages ready in the queue (sampled), -1 before the first sample.
    pub queue_messages: AtomicI64,
    /// Consumers on the queue (sampled).
    pub queue_consumers: AtomicI64,
    /// Messages in the dead-letter queue (sampled).
    pub dead_letter_messages: AtomicI64,
    /// The queue was declared by an earlier version, without a delivery
    /// limit and dead-letter target.
    pub queue_legacy: AtomicBool,
    /// Seconds between a press reaching its gateway and its commit here,
    /// for the newest press of the last batch (ms).
    pub lag_ms: AtomicI64,
    /// The AMQP node in use.
    pub node: std::sync::Mutex<String>,
}

#[derive(Serialize)]
struct Snapshot {
    messages: Messages,
    presses_inserted: u64,
    presses_duplicate: u64,
    batches: u64,
    batch_retries: u64,
    commit_seconds: f64,
    postgres_errors: u64,
    amqp_connects: u64,
    amqp_connected: bool,
    amqp_node: String,
    postgres_connected: bool,
    queue_messages: Option<i64>,
    queue_consumers: Option<i64>,
    dead_letter_messages: Option<i64>,
    queue_legacy: bool,
    lag_seconds: Option<f64>,
}

#[derive(Serialize)]
struct Messages {
    press: u64,
    press_batch: u64,
    gateway_status: u64,
    health: u64,
    alert: u64,
    ota: u64,
    rejected: u64,
}

impl Metrics {
    pub fn count(&self, kind: DocumentKind) {
        let counter = match kind {
            DocumentKind::Press => &self.presses,
            DocumentKind::PressBatch => &self.press_batches,
            DocumentKind::GatewayStatus => &self.statuses,
            DocumentKind::Health => &self.health,
            DocumentKind::Alert => &self.alerts,
            DocumentKind::Ota => &self.ota,
            DocumentKind::Rejected => &self.rejected,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn set_node(&self, node: &str) {
        *self.node.locked() = node.to_string();
    }

    fn snapshot(&self) -> Snapshot {
        let sampled = |v: i64| (v >= 0).then_some(v);
        Snapshot {
            messages: Messages {
                press: self.presses.load(Relaxed),
                press_batch: self.press_batches.load(Relaxed),
                gateway_status: self.statuses.load(Relaxed),
                health: self.health.load(Relaxed),
                alert: self.alerts.load(Relaxed),
                ota: self.ota.load(Relaxed),
                rejected: self.rejected.load(Relaxed),
            },
            presses_inserted: self.presses_inserted.load(Relaxed),
            presses_duplicate: self.presses_duplicate.load(Relaxed),
            batches: self.batches.load(Relaxed),
            batch_retries: self.batch_retries.load(Relaxed),
            commit_seconds: self.commit_micros.load(Relaxed) as f64 / 1e6,
            postgres_errors: self.postgres_errors.load(Relaxed),
            amqp_connects: self.amqp_connects.load(Relaxed),
            amqp_connected: self.amqp_connected.load(Relaxed),
            amqp_node: self.node.locked().clone(),
            postgres_connected: self.postgres_connected.load(Relaxed),
            queue_messages: sampled(self.queue_messages.load(Relaxed)),
            queue_consumers: sampled(self.queue_consumers.load(Relaxed)),
            dead_letter_messages: sampled(self.dead_letter_messages.load(Relaxed)),
            queue_legacy: self.queue_legacy.load(Relaxed),
            lag_seconds: sampled(self.lag_ms.load(Relaxed)).map(|ms| ms as f64 / 1000.0),
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let s = self.snapshot();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |v: String| vec![(String::new(), v)];
        let m = &s.messages;
        metric(
            "pressline_central_messages_total",
            "counter",
            "Messages taken from the queue and committed, by document kind.",
            &[
                ("press", m.press),
                ("press_batch", m.press_batch),
                ("gateway_status", m.gateway_status),
                ("health", m.health),
                ("alert", m.alert),
                ("ota", m.ota),
                ("rejected", m.rejected),
            ]
            .map(|(k, v)| (format!("{{kind=\"{k}\"}}"), v.to_string())),
        );
        metric(
            "pressline_central_presses_inserted_total",
            "counter",
            "Presses new to the presses table.",
            &plain(s.presses_inserted.to_string()),
        );
        metric(
            "pressline_central_presses_duplicate_total",
            "counter",
            "Press messages whose id was already stored (redeliveries).",
            &plain(s.presses_duplicate.to_string()),
        );
        metric(
            "pressline_central_batches_total",
            "counter",
            "Transactions committed.",
            &plain(s.batches.to_string()),
        );
        metric(
            "pressline_central_batch_retries_total",
            "counter",
            "Batches tried again after a database failure or conflict.",
            &plain(s.batch_retries.to_string()),
        );
        metric(
            "pressline_central_commit_seconds_total",
            "counter",
            "Time spent in database transactions.",
            &plain(format!("{:.3}", s.commit_seconds)),
        );
        metric(
            "pressline_central_postgres_errors_total",
            "counter",
            "Failed database operations.",
            &plain(s.postgres_errors.to_string()),
        );
        metric(
            "pressline_central_amqp_connects_total",
            "counter",
            "Connections made to the broker.",
            &plain(s.amqp_connects.to_string()),
        );
        metric(
            "pressline_central_up",
            "gauge",
            "1 while connected, by dependency.",
            &[
                (
                    "{dependency=\"amqp\"}".to_string(),
                    u8::from(s.amqp_connected).to_string(),
                ),
                (
                    "{dependency=\"postgres\"}".to_string(),
                    u8::from(s.postgres_connected).to_string(),
                ),
            ],
        );
        if let Some(v) = s.queue_messages {
            metric(
                "pressline_central_queue_messages",
                "gauge",
                "Messages ready in the queue, waiting for a consumer.",
                &plain(v.to_string()),
            );
        }
        if let Some(v) = s.queue_consumers {
            metric(
                "pressline_central_queue_consumers",
                "gauge",
                "Consumers on the queue.",
                &plain(v.to_string()),
            );
        }
        if let Some(v) = s.dead_letter_messages {
            metric(
                "pressline_central_dead_letter_messages",
                "gauge",
                "Messages in the dead-letter queue: held by consumers lost more times than the delivery limit; replay them with `pressline-central dead-letters --replay`.",
                &plain(v.to_string()),
            );
        }
        metric(
            "pressline_central_queue_legacy",
            "gauge",
            "1 when the queue was declared by an earlier version, without a delivery limit and dead-letter target (deploy/README.md, \"Delivery limit and dead letters\").",
            &plain(u8::from(s.queue_legacy).to_string()),
        );
        if let Some(v) = s.lag_seconds {
            metric(
                "pressline_central_lag_seconds",
                "gauge",
                "From a press reaching its gateway to its commit here, newest press of the last batch.",
                &plain(format!("{v:.3}")),
            );
        }
        out
    }
}

/// `/metrics`, `/api/v1/stats` and `/healthz`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    m.render(),
                )
            }),
        )
        .route(
            "/api/v1/stats",
            get(|State(m): State<Arc<Metrics>>| async move { Json(m.snapshot()) }),
        )
        .route(
            "/healthz",
            get(|State(m): State<Arc<Metrics>>| async move {
                let amqp = m.amqp_connected.load(Relaxed);
                let pg = m.postgres_connected.load(Relaxed);
                if amqp && pg {
                    (StatusCode::OK, "ok\n".to_string()).into_response()
                } else {
                    let mut down = Vec::new();
                    if !amqp {
                        down.push("amqp");
                    }
                    if !pg {
                        down.push("postgres");
                    }
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("unavailable: {}\n", down.join(", ")),
                    )
                        .into_response()
                }
            }),
        )
        .with_state(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_counts_by_kind() {
        let m = Metrics {
            queue_messages: AtomicI64::new(-1),
            queue_consumers: AtomicI64::new(-1),
            dead_letter_messages: AtomicI64::new(-1),
            lag_ms: AtomicI64::new(1500),
            ..Default::default()
        };
        m.count(DocumentKind::Press);
        m.count(DocumentKind::Press);
        m.count(DocumentKind::Rejected);
        let text = m.render();
        assert!(
            text.contains("pressline_central_messages_total{kind=\"press\"} 2"),
            "{text}"
        );
        assert!(text.contains("pressline_central_messages_total{kind=\"rejected\"} 1"));
        assert!(text.contains("pressline_central_lag_seconds 1.500"));
        assert!(!text.contains("pressline_central_queue_messages"));
    }
}
