use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::{
    scheduler::{PauseReason, Tracker},
    ConnectionEvents,
};

/// Pressline patch: the sessions of disconnected clients, at most `max`
/// (the oldest saved goes first, logged). Upstream kept every client id
/// ever seen, clean sessions included, for the life of the process: a
/// client connecting under ever new ids grew it without bound.
pub struct Graveyard {
    connections: HashMap<String, SavedState>,
    /// Save order → client id, to drop the oldest.
    order: BTreeMap<u64, String>,
    next: u64,
    max: usize,
    /// Filter (its log) → saved sessions reading it.
    readers: HashMap<String, usize>,
}

impl Graveyard {
    pub fn new(max: usize) -> Graveyard {
        Graveyard {
            connections: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            max,
            readers: HashMap::new(),
        }
    }

    /// Add a new connection.
    /// Return tracker of previous connection if connection id already exists
    pub fn retrieve(&mut self, id: &str) -> Option<SavedState> {
        let saved = self.connections.remove(id)?;
        self.order.remove(&saved.seq);
        self.count_readers(&saved, false);
        Some(saved)
    }

    fn count_readers(&mut self, saved: &SavedState, add: bool) {
        let Some(state) = &saved.session_state else {
            return;
        };
        for path in &state.subscriptions {
            let filter = super::log_of(path);
            if add {
                *self.readers.entry(filter.to_string()).or_default() += 1;
            } else if let Some(n) = self.readers.get_mut(filter) {
                *n -= 1;
                if *n == 0 {
                    self.readers.remove(filter);
                }
            }
        }
    }

    /// Whether a saved session reads the log of `filter`.
    pub fn reads(&self, filter: &str) -> bool {
        self.readers.contains_key(filter)
    }

    /// Saves a session; returns the sessions dropped to stay in bound.
    fn insert(
        &mut self,
        id: String,
        session_state: Option<SessionState>,
        metrics: ConnectionEvents,
    ) -> Vec<SavedState> {
        let mut dropped_sessions = Vec::new();
        self.retrieve(&id);
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, id.clone());
        let saved = SavedState {
            session_state,
            metrics,
            seq,
        };
        self.count_readers(&saved, true);
        self.connections.insert(id, saved);
        while self.connections.len() > self.max {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(dropped) = self.connections.remove(&oldest) {
                self.count_readers(&dropped, false);
                dropped_sessions.push(dropped);
            }
            // debug: a client inventing ids would otherwise flood the log.
            tracing::debug!(client_id = %oldest.chars().take(64).collect::<String>(), "persistent session dropped: more disconnected sessions than the broker keeps");
        }
        dropped_sessions
    }

    /// Save connection tracker; returns the sessions dropped to stay in
    /// bound.
    pub fn save_state(
        &mut self,
        mut tracker: Tracker,
        subscriptions: HashSet<String>,
        metrics: ConnectionEvents,
        unacked_pubrels: VecDeque<u16>,
        redelivery: crate::router::iobufs::Redelivery,
    ) -> Vec<SavedState> {
        tracker.pause(PauseReason::Busy);
        let id = tracker.id.clone();

        let session_state = SessionState {
            tracker,
            subscriptions,
            unacked_pubrels,
            redelivery,
        };
        self.insert(id, Some(session_state), metrics)
    }

    /// Sessions kept (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.connections.len()
    }
}

impl SavedState {
    /// The subscription paths of the saved session, if any.
    pub fn subscriptions(&self) -> impl Iterator<Item = &String> {
        self.session_state
            .iter()
            .flat_map(|state| state.subscriptions.iter())
    }
}

#[derive(Debug)]
pub struct SavedState {
    pub session_state: Option<SessionState>,
    pub metrics: ConnectionEvents,
    seq: u64,
}

#[derive(Debug)]
pub struct SessionState {
    pub tracker: Tracker,
    pub subscriptions: HashSet<String>,
    // used for pubrel in qos2
    pub unacked_pubrels: VecDeque<u16>,
    /// Pressline patch: the publishes in flight at disconnect, resent with
    /// DUP and their original packet ids (MQTT 3.1.1 §4.4, MQTT 5 §4.4).
    pub redelivery: crate::router::iobufs::Redelivery,
}
