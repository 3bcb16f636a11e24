//! The power settings the site wants a terminal to use (`POST
//! /api/v1/terminals/{id}/power`, `fleet terminals power`), and their
//! delivery.
//!
//! A terminal reports the settings it runs with in every heartbeat
//! (version 3). When they differ from the ones wanted, the gateway sends
//! the wanted ones on `pressline/v1/gw/{id}/power`, at most every 10 s per
//! terminal; the terminal applies them at once. A terminal on batteries is
//! reached at its next upload (its session starts with a heartbeat and
//! lingers for the answer). Nothing is sent to a terminal the site has no
//! wish for: it keeps the settings it was provisioned with.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pressline_host::sync::LockExt;
use pressline_protocol::power::{PowerSettings, POWER_SETTINGS_BUF_LEN};
use pressline_protocol::topic::PowerTopic;
use rumqttd::local::{LinkRx, LinkTx};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// A terminal is sent its settings at most this often.
const RESEND_AFTER: Duration = Duration::from_secs(10);

/// One stored wish (the `power` tree).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wanted {
    terminal: String,
    settings: PowerSettings,
}

/// The settings wanted per terminal, and the link they are sent on.
#[derive(Clone)]
pub struct PowerPlans {
    store: Store,
    wanted: Arc<Mutex<BTreeMap<String, PowerSettings>>>,
    sender: Arc<Mutex<Sender>>,
}

struct Sender {
    /// The gateway's power link (none in tests without a broker).
    link: Option<(LinkTx, LinkRx)>,
    last_sent: HashMap<String, Instant>,
}

impl PowerPlans {
    /// The wishes stored in `store`, sent over `link`.
    pub fn load(store: &Store, link: Option<(LinkTx, LinkRx)>) -> PowerPlans {
        let wanted = store
            .load_power::<Wanted>()
            .into_iter()
            .map(|w| (w.terminal, w.settings))
            .collect();
        PowerPlans {
            store: store.clone(),
            wanted: Arc::new(Mutex::new(wanted)),
            sender: Arc::new(Mutex::new(Sender {
                link,
                last_sent: HashMap::new(),
            })),
        }
    }

    /// The settings wanted for `terminal`, if any.
    pub fn wanted(&self, terminal: &str) -> Option<PowerSettings> {
        self.wanted.locked().get(terminal).copied()
    }

    /// Stores a wish (durably, before it counts), or forgets it (`None`).
    pub fn set(&self, terminal: &str, settings: Option<PowerSettings>) -> Result<(), StoreError> {
        match settings {
            Some(settings) => {
                let record = Wanted {
                    terminal: terminal.into(),
                    settings,
                };
                self.store.save_power(terminal, &record)?;
                self.wanted.locked().insert(terminal.into(), settings);
            }
            None => {
                self.store.remove_power(terminal)?;
                self.wanted.locked().remove(terminal);
            }
        }
        // A new wish goes out at the terminal's next heartbeat.
        self.sender.locked().last_sent.remove(terminal);
        Ok(())
    }

    /// A verified heartbeat from `terminal` reports `running`: sends the
    /// wanted settings if they differ.
    pub fn handle_reported(&self, terminal: &str, running: &PowerSettings, now: Instant) {
        let Some(wanted) = self.wanted(terminal) else {
            return;
        };
        if wanted == *running {
            return;
        }
        let mut sender = self.sender.locked();
        if sender
            .last_sent
            .get(terminal)
            .is_some_and(|at| now.duration_since(*at) < RESEND_AFTER)
        {
            return;
        }
        let mut buf = [0u8; POWER_SETTINGS_BUF_LEN];
        let Ok(bytes) = wanted.encode(&mut buf) else {
            return;
        };
        let payload = bytes.to_vec();
        let Some((link, _)) = sender.link.as_mut() else {
            return;
        };
        // Never blocks the caller (the ingest thread): a full router queue
        // skips this heartbeat's answer, and the next heartbeat asks again.
        match link.try_publish(PowerTopic(terminal).to_string(), payload) {
            Ok(_) => {
                tracing::info!(
                    terminal,
                    mode = wanted.mode.name(),
                    upload_delay_secs = wanted.upload_delay_secs,
                    "sent the terminal its power settings"
                );
                sender.last_sent.insert(terminal.to_string(), now);
            }
            Err(e) => {
                tracing::warn!(terminal, error = ?e, "cannot send power settings (retried at the next heartbeat)")
            }
        }
    }
}
