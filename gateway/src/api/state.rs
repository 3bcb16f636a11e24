//! What every API handler shares: the gateway's parts the API reads and
//! commands, and the counters as one snapshot.

use std::sync::Arc;
use std::time::Instant;

use crate::ota::releases::Releases;
use crate::ota::service::Rollouts;
use crate::stats::{Stats, StatsSnapshot};
use crate::store::Store;
use crate::terminals::identity::Identities;
use crate::terminals::registry::Registry;

/// Handed to every handler (cheap to clone: handles and `Arc`s).
#[derive(Clone)]
pub struct ApiState {
    pub site: String,
    pub stats: Arc<Stats>,
    pub store: Store,
    pub registry: Registry,
    pub identities: Identities,
    /// Power settings wanted per terminal.
    pub power: crate::terminals::power::PowerPlans,
    pub releases: Releases,
    pub rollouts: Rollouts,
    pub started: Instant,
    pub upstream_configured: bool,
    /// The bearer tokens, one per scope.
    pub tokens: crate::api::token::ApiTokens,
    /// Notification channels' figures, and the acknowledge link checker.
    pub notifier: crate::alerting::delivery::Notifier,
    pub site_time: crate::site_time::SiteTime,
}

impl ApiState {
    /// The counters, with the database's size on disk.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut snapshot = self.stats.snapshot(
            &self.site,
            self.started,
            self.upstream_configured,
            self.store.size_on_disk(),
            self.store.fault(),
        );
        snapshot.notification_channels = self.notifier.status();
        snapshot
    }
}
