//! Retention, hourly: the press log's days past `storage.retention_days`
//! are dropped whole (with the dedup state of terminals and boots that
//! have pressed nothing since), and the satisfaction aggregates' days past
//! `storage.aggregate_retention_days`, so a busy site's disk use levels
//! off instead of growing until the disk cap refuses new presses. Upstream
//! has had every press since it was made; the gateway keeps raw presses
//! for the record and deduplication, and aggregates for its reports.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::{unix_ms_now, utc_day};
use crate::insight::checkpoints;
use crate::insight::scores::Scores;
use crate::stats::Stats;
use crate::store::Store;

const EVERY: Duration = Duration::from_secs(3600);

/// Prunes now and then every hour until shutdown. `raw_days` 0 keeps raw
/// presses forever.
pub async fn run(
    store: Store,
    stats: Arc<Stats>,
    scores: Arc<Mutex<Scores>>,
    raw_days: u32,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (s, sc) = (store.clone(), scores.clone());
        let pass = tokio::task::spawn_blocking(move || {
            let now = unix_ms_now();
            let raw = match raw_days {
                0 => Ok(0),
                days => s.prune_raw_before(utc_day(now) - i64::from(days)),
            };
            (raw, checkpoints::expire(&s, &sc, now))
        })
        .await;
        match pass {
            Ok((raw, aggregates)) => {
                match raw {
                    Ok(0) => {}
                    Ok(n) => {
                        stats.presses_stored.fetch_sub(n, Relaxed);
                        tracing::info!(
                            pruned = n,
                            retention_days = raw_days,
                            "dropped presses past the retention period"
                        );
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "retention pass failed; retrying in an hour")
                    }
                }
                match aggregates {
                    Ok(0) => {}
                    Ok(days) => {
                        tracing::info!(days, "dropped satisfaction aggregates past their retention")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "aggregate retention failed; retrying in an hour")
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}
