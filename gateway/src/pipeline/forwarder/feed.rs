//! The feeder: hands outbox entries to rumqttc while connected and the
//! window has room, live entries first, then the backlog.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use tokio::sync::watch;

use super::messages::{plan_messages, render};
use super::{InFlight, Shared, Window};
use crate::store::OutboxItem;

/// Runs the feeder until shutdown.
pub(super) async fn feed(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    // The outbox writes acknowledgements in bursts; this writes the last
    // of a burst when no more PUBACKs come (see `crate::store::outbox`).
    let mut persist_acks = tokio::time::interval(Duration::from_secs(1));
    persist_acks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while refill(&shared) {}
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = persist_acks.tick() => {
                if let Err(e) = shared.store.persist_outbox_acks() {
                    shared.outbox_error(
                        "cannot record upstream acknowledgements (those messages may be sent again)",
                        &e,
                    );
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Hands one round of entries over; `true` when there may be room for
/// another round right away.
fn refill(shared: &Shared) -> bool {
    let window_size = shared.config.max_inflight as usize;
    let mut window = shared.window();
    if !follow_store_generation(shared, &mut window) {
        return false;
    }
    let room = window_size.saturating_sub(window.in_flight());
    // Refill in batches of a quarter window (one outbox read per batch,
    // not per PUBACK) unless the window is nearly empty.
    if !window.connected || room == 0 || (room < window_size / 4 && window.in_flight() > 8) {
        return false;
    }
    // Up to `press_batch` presses a message: read that many entries a
    // message of room.
    let per_message = usize::from(shared.config.press_batch.max(1));
    let Some(entries) = next_entries(shared, &mut window, room * per_message) else {
        return false;
    };
    hand_over(shared, &mut window, entries, per_message, room)
}

/// After the store was reopened (a fault), what it holds is what is on
/// disk: split it again as at a reconnect; messages in flight are resent
/// at worst (same ids). `false` when the outbox cannot be read now.
fn follow_store_generation(shared: &Shared, window: &mut Window) -> bool {
    let generation = shared.store.generation();
    if !window.connected || window.generation == generation {
        return true;
    }
    match shared.store.outbox_last_key() {
        Ok(end) => {
            window.backlog_end = end;
            window.backlog_cursor = None;
            window.live_cursor = end;
            window.generation = generation;
            true
        }
        Err(e) => {
            shared.outbox_error("cannot read the upstream outbox; retrying", &e);
            false
        }
    }
}

/// Up to `room` entries `(key, is live, item)`: live ones first, then the
/// backlog. `None` when there is nothing to send (or the outbox cannot be
/// read now).
fn next_entries(
    shared: &Shared,
    window: &mut Window,
    room: usize,
) -> Option<Vec<(u64, bool, OutboxItem)>> {
    let read_failed = |e| shared.outbox_error("cannot read the upstream outbox; retrying", &e);
    let live = shared
        .store
        .outbox_after(window.live_cursor, room)
        .map_err(read_failed)
        .ok()?;
    let backlog_room = room - live.len();
    let backlog = match window.backlog_end {
        Some(end) if backlog_room > 0 && !window.backlog_done() => shared
            .store
            .outbox_between(window.backlog_cursor, end, backlog_room)
            .map_err(read_failed)
            .ok()?,
        _ => Vec::new(),
    };
    if live.is_empty() && backlog.is_empty() {
        if let Some(end) = window.backlog_end {
            // Nothing left up to `end` (acked earlier): backlog done.
            window.backlog_cursor = Some(end);
        }
        return None;
    }
    let live = live.into_iter().map(|(key, item)| (key, true, item));
    let backlog = backlog.into_iter().map(|(key, item)| (key, false, item));
    Some(live.chain(backlog).collect())
}

/// Publishes the entries as at most `room` messages; `false` when
/// rumqttc's request channel is full.
fn hand_over(
    shared: &Shared,
    window: &mut Window,
    entries: Vec<(u64, bool, OutboxItem)>,
    per_message: usize,
    room: usize,
) -> bool {
    for message in plan_messages(entries, per_message, room) {
        let (topic, payload, retain) = render(&shared.config, &message);
        window
            .handed_over
            .push_back(InFlight::Outbox(message.handed()));
        if shared
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .is_err()
        {
            window.handed_over.pop_back();
            return false;
        }
        // Entries are in key order within live and within backlog.
        for &(key, is_live) in message.entries() {
            if is_live {
                window.live_cursor = Some(key);
            } else {
                window.backlog_cursor = Some(key);
            }
        }
    }
    true
}
