//! Start-up, wiring and graceful shutdown, in three phases: [`start`]
//! brings every service up (or fails with nothing half-started that
//! matters), [`Running::stop`] takes them down in order, and [`run`] waits
//! between the two for the shutdown future it is given (the process's
//! signals, or a test's).
//!
//! # Layout
//! - this file: [`run`], [`Running`] and the stop sequence.
//! - [`credentials`]: secrets and certificates, read and checked first.
//! - [`services`]: each service started, in order.
//! - [`banner`]: what the start-up log says.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::api::state::ApiState;
use crate::config::Config;
use crate::pipeline::forwarder::Forwarder;
use crate::stats::Stats;
use crate::store::Store;

mod banner;
mod credentials;
mod services;

pub use credentials::Credentials;
pub use services::start;

/// Runs the gateway until `shutdown` completes, then stops it cleanly.
pub async fn run(
    config: Config,
    credentials: Credentials,
    demo_terminals: Option<usize>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start(config, credentials, demo_terminals).await?;
    shutdown.await;
    running.stop().await
}

/// A started gateway: what [`Running::stop`] takes down, and what the API
/// serves.
pub struct Running {
    pub config: Config,
    pub api: ApiState,
    stats: Arc<Stats>,
    store: Store,
    shutdown: watch::Sender<bool>,
    /// Tells ingest to take no more presses.
    stopping: Arc<AtomicBool>,
    commit_thread: JoinHandle<()>,
    registry_task: tokio::task::JoinHandle<()>,
    ota_thread: JoinHandle<()>,
    forwarder: Option<Forwarder>,
    http: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops taking presses, commits (and acks) what was taken, lets the
    /// registry see the last of them, says `offline` upstream, stops
    /// serving and flushes the store: seconds, at any press rate (ingest
    /// stops at once; what it queued is at most a few commit batches).
    pub async fn stop(self) -> anyhow::Result<()> {
        tracing::info!("shutting down: no more presses taken; committing what was");
        self.stopping.store(true, Relaxed);
        let _ = self.shutdown.send(true);
        let (commit_thread, ota_thread) = (self.commit_thread, self.ota_thread);
        let _ = tokio::task::spawn_blocking(move || commit_thread.join()).await;
        if tokio::time::timeout(Duration::from_secs(10), self.registry_task)
            .await
            .is_err()
        {
            tracing::warn!("the registry did not finish saving in 10 s; stopping anyway");
        }
        let _ = tokio::task::spawn_blocking(move || ota_thread.join()).await;
        if let Some(f) = self.forwarder {
            f.shutdown(Duration::from_secs(3)).await;
        }
        let _ = self.http.await;
        self.store
            .flush()
            .context("final flush of the press store failed")?;
        tracing::info!(
            stored = self.stats.presses_stored.load(Relaxed),
            pending_upstream = self.stats.forward_pending.load(Relaxed),
            "gateway stopped cleanly"
        );
        Ok(())
    }
}
