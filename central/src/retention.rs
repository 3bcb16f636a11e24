//! Retention: once an hour each consumer drops the months of presses past
//! `press_retention.keep_months` (set with `pressline-central retention`)
//! and makes the current month's partition ahead of the first batch that
//! needs it. Several consumers doing it at once is harmless: the database
//! serialises both under one advisory lock.

use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::database::{describe, partitions, Database};

/// How often the months are looked at.
pub const EVERY: Duration = Duration::from_secs(3600);

/// Runs until shutdown; a failed round is logged and tried next time.
pub async fn run(url: String, tls: MakeRustlsConnect, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = round(&url, &tls).await {
            tracing::warn!(error = %format!("{e:#}"), "retention round failed; trying again in an hour");
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One look: drops expired months, makes this month's partition.
pub async fn round(url: &str, tls: &MakeRustlsConnect) -> anyhow::Result<()> {
    let db = Database::connect(url, tls).await?;
    let client = db.client();
    // Dropping a month locks `presses` whole: behind a long reader it
    // would hold every insert queued behind it. Given up, tried next hour.
    client
        .batch_execute("SET lock_timeout = '5s'")
        .await
        .map_err(|e| anyhow::anyhow!("cannot set lock_timeout: {}", describe(&e)))?;
    let dropped = partitions::drop_expired(client)
        .await
        .map_err(|e| anyhow::anyhow!("cannot drop expired months: {}", describe(&e)))?;
    if !dropped.is_empty() {
        let keep = partitions::retention(client).await.ok().flatten();
        tracing::info!(
            ?dropped,
            keep_months = keep,
            "presses past the retention dropped"
        );
    }
    client
        .execute("SELECT press_partition_for(now())", &[])
        .await
        .map_err(|e| anyhow::anyhow!("cannot make this month's partition: {}", describe(&e)))?;
    Ok(())
}
