//! Retention: presses older than `storage.retention_days` are deleted from
//! the site store, hourly, so a busy site's disk use levels off instead of
//! growing until the disk cap refuses new presses. Upstream has had every
//! one of them since it was made; the gateway keeps them only for
//! deduplication, scores and local reports.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::stats::Stats;
use crate::store::Store;

const EVERY: Duration = Duration::from_secs(3600);
const DAY_MS: i64 = 86_400_000;

/// Prunes now and then every hour until shutdown (nothing if `days` is 0).
pub async fn run(store: Store, stats: Arc<Stats>, days: u32, mut shutdown: watch::Receiver<bool>) {
    if days == 0 {
        return;
    }
    loop {
        let cutoff = crate::clock::unix_ms_now() - i64::from(days) * DAY_MS;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.prune_presses_before(cutoff)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                stats.presses_stored.fetch_sub(n, Relaxed);
                tracing::info!(
                    pruned = n,
                    retention_days = days,
                    "deleted presses past the retention period"
                );
            }
            Ok(Err(e)) => tracing::error!(error = %e, "retention pass failed; retrying in an hour"),
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}
