//! The terminal's press queue and MQTT session logic.
//!
//! A press is numbered `(boot, seq)` when it enters the queue and stays there
//! until the gateway's durable application ack names it. MQTT PUBACK is not
//! enough (the site broker acks before anything is on disk), so:
//! - after every (re)connect, every queued press is sent again;
//! - on a live connection, a press whose ack has not come within
//!   [`SessionConfig::ack_timeout_ms`] is sent again (the broker can lose a
//!   message after its PUBACK, and acks travel at QoS 0);
//! - at most [`SessionConfig::max_in_flight`] presses await an ack at once,
//!   so a terminal coming back from a long outage does not flood the site.
//!
//! When the queue is full the oldest presses are kept (they are the ones the
//! venue has not heard about yet) and new ones are counted as dropped; the
//! count travels in heartbeats.

use heapless::Deque;
use pressline_protocol::{Ack, Button, Press, PressId};

use crate::Millis;

/// Tunables of the session logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Resend a press whose durable ack has not arrived after this long.
    pub ack_timeout_ms: Millis,
    /// Most presses awaiting an ack at once.
    pub max_in_flight: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ack_timeout_ms: 3_000,
            max_in_flight: 32,
        }
    }
}

/// Running totals, for heartbeats and the simulator's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Presses accepted into the queue.
    pub queued: u64,
    /// Transmissions, first sends and resends together.
    pub transmissions: u64,
    /// Transmissions that were resends of an already sent press.
    pub resends: u64,
    /// Presses released by a durable ack.
    pub acked: u64,
    /// Presses that did not fit the full queue.
    pub dropped: u64,
    /// Acks naming nothing queued (duplicates, or for presses already released).
    pub stale_acks: u64,
}

/// The queue refused a press because it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// Sentinel for "no time" in [`Entry`] (an `Option<u64>` would double the
/// entry's size, and the queue lives in a microcontroller's RAM).
const NEVER: Millis = Millis::MAX;

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: PressId,
    /// [`NEVER`] for presses restored from flash after a reboot (their age
    /// on the previous boot's clock is unknown).
    pressed_at: Millis,
    /// When it was last handed out for transmission on the current
    /// connection; [`NEVER`] = due now.
    sent_at: Millis,
    button: Button,
    /// Whether it was ever transmitted (to count resends).
    ever_sent: bool,
}

impl Entry {
    fn sent_at(&self) -> Option<Millis> {
        (self.sent_at != NEVER).then_some(self.sent_at)
    }
}

/// Press queue plus session logic for one terminal, holding up to `N` presses.
#[derive(Debug)]
pub struct Session<const N: usize> {
    config: SessionConfig,
    boot: u32,
    next_seq: u32,
    queue: Deque<Entry, N>,
    connected: bool,
    counters: SessionCounters,
}

impl<const N: usize> Session<N> {
    /// A session for boot number `boot` (a counter the terminal increments
    /// durably on every start, so `(boot, seq)` is never reused).
    pub fn new(boot: u32, config: SessionConfig) -> Self {
        Session {
            config,
            boot,
            next_seq: 0,
            queue: Deque::new(),
            connected: false,
            counters: SessionCounters::default(),
        }
    }

    pub fn boot(&self) -> u32 {
        self.boot
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn queue_capacity(&self) -> usize {
        N
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn counters(&self) -> SessionCounters {
        self.counters
    }

    /// A visitor pressed `button` at `now`. Returns the press's identity, or
    /// [`QueueFull`] (counted as dropped) when the queue has no room.
    pub fn handle_press(&mut self, now: Millis, button: Button) -> Result<PressId, QueueFull> {
        if self.queue.is_full() {
            self.counters.dropped += 1;
            return Err(QueueFull);
        }
        let id = PressId {
            boot: self.boot,
            seq: self.next_seq,
        };
        // Numbering only advances for presses that were queued, so sequence
        // numbers within a boot are contiguous.
        self.next_seq = self.next_seq.wrapping_add(1);
        let entry = Entry {
            id,
            button,
            pressed_at: now.min(NEVER - 1),
            sent_at: NEVER,
            ever_sent: false,
        };
        self.queue.push_back(entry).map_err(|_| QueueFull)?;
        self.counters.queued += 1;
        Ok(id)
    }

    /// The identity the next press will get.
    pub fn next_id(&self) -> PressId {
        PressId {
            boot: self.boot,
            seq: self.next_seq,
        }
    }

    /// Puts back a press that survived a reboot in flash. It keeps its
    /// identity (from an earlier boot) and is resent as usual.
    pub fn restore(&mut self, id: PressId, button: Button) -> Result<(), QueueFull> {
        let entry = Entry {
            id,
            button,
            pressed_at: NEVER,
            sent_at: NEVER,
            ever_sent: true,
        };
        self.queue.push_back(entry).map_err(|_| QueueFull)
    }

    /// Whether `id` is still waiting for its ack.
    pub fn contains(&self, id: PressId) -> bool {
        self.queue.iter().any(|e| e.id == id)
    }

    /// The MQTT session is up and subscribed to this terminal's ack topic:
    /// everything queued is due again.
    pub fn handle_connected(&mut self, _now: Millis) {
        self.connected = true;
        for entry in self.queue.iter_mut() {
            entry.sent_at = NEVER;
        }
    }

    /// The MQTT session is gone. Nothing is forgotten.
    pub fn handle_disconnected(&mut self, _now: Millis) {
        self.connected = false;
    }

    /// A durable ack arrived: release the presses it names. Returns how many
    /// were released.
    pub fn handle_ack(&mut self, _now: Millis, ack: &Ack) -> usize {
        let before = self.queue.len();
        // Acks usually release a prefix; rotate through once to keep order.
        for _ in 0..before {
            if let Some(entry) = self.queue.pop_front() {
                if !ack.covers(entry.id) {
                    // Cannot fail: we just made room by popping.
                    let _ = self.queue.push_back(entry);
                }
            }
        }
        let released = before - self.queue.len();
        if released == 0 {
            self.counters.stale_acks += 1;
        }
        self.counters.acked += released as u64;
        released
    }

    fn in_flight(&self, now: Millis) -> usize {
        self.queue
            .iter()
            .filter(|e| {
                e.sent_at()
                    .is_some_and(|t| now < t + self.config.ack_timeout_ms)
            })
            .count()
    }

    /// The next press to publish now, if any. The caller publishes it (QoS 1)
    /// and calls again until `None`.
    pub fn poll_transmit(&mut self, now: Millis) -> Option<Press> {
        if !self.connected || self.in_flight(now) >= self.config.max_in_flight {
            return None;
        }
        let timeout = self.config.ack_timeout_ms;
        let entry = self
            .queue
            .iter_mut()
            .find(|e| e.sent_at().is_none_or(|t| now >= t + timeout))?;
        if entry.ever_sent {
            self.counters.resends += 1;
        }
        entry.sent_at = now.min(NEVER - 1);
        entry.ever_sent = true;
        self.counters.transmissions += 1;
        let age_ms = (entry.pressed_at != NEVER)
            .then(|| u32::try_from(now.saturating_sub(entry.pressed_at)).unwrap_or(u32::MAX));
        // The caller adds the MAC (it holds the secret; the session does not).
        Some(Press {
            id: entry.id,
            button: entry.button,
            age_ms,
            mac: None,
        })
    }

    /// When [`Session::poll_transmit`] may next have something to send
    /// (an ack timeout expiring), if nothing else happens first.
    pub fn poll_timeout(&self) -> Option<Millis> {
        if !self.connected {
            return None;
        }
        self.queue
            .iter()
            .filter_map(|e| e.sent_at().map(|t| t + self.config.ack_timeout_ms))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: SessionConfig = SessionConfig {
        ack_timeout_ms: 1_000,
        max_in_flight: 4,
    };

    fn drain<const N: usize>(s: &mut Session<N>, now: Millis) -> heapless::Vec<PressId, 64> {
        let mut out = heapless::Vec::new();
        while let Some(p) = s.poll_transmit(now) {
            out.push(p.id).unwrap();
        }
        out
    }

    fn ids(boot: u32, seqs: core::ops::Range<u32>) -> heapless::Vec<PressId, 64> {
        seqs.map(|seq| PressId { boot, seq }).collect()
    }

    #[test]
    fn presses_are_numbered_contiguously_within_a_boot() {
        let mut s: Session<8> = Session::new(7, CFG);
        for seq in 0..3 {
            assert_eq!(
                s.handle_press(0, Button::Happy),
                Ok(PressId { boot: 7, seq })
            );
        }
    }

    #[test]
    fn nothing_is_sent_while_disconnected_and_everything_after_connect() {
        let mut s: Session<8> = Session::new(0, CFG);
        s.handle_press(0, Button::Happy).unwrap();
        s.handle_press(5, Button::Unhappy).unwrap();
        assert_eq!(s.poll_transmit(10), None);
        s.handle_connected(20);
        let p = s.poll_transmit(20).unwrap();
        assert_eq!(p.id, PressId { boot: 0, seq: 0 });
        assert_eq!(p.age_ms, Some(20));
        assert_eq!(s.poll_transmit(20).unwrap().id, PressId { boot: 0, seq: 1 });
        assert_eq!(s.poll_transmit(20), None);
    }

    #[test]
    fn only_a_durable_ack_releases_a_press() {
        let mut s: Session<8> = Session::new(0, CFG);
        s.handle_connected(0);
        for _ in 0..3 {
            s.handle_press(0, Button::Happy).unwrap();
        }
        assert_eq!(drain(&mut s, 0), ids(0, 0..3));
        assert_eq!(
            s.handle_ack(
                1,
                &Ack {
                    boot: 0,
                    first_seq: 0,
                    last_seq: 1
                }
            ),
            2
        );
        assert_eq!(s.queue_len(), 1);
        // An ack for another boot releases nothing.
        assert_eq!(
            s.handle_ack(
                1,
                &Ack {
                    boot: 1,
                    first_seq: 0,
                    last_seq: 9
                }
            ),
            0
        );
        assert_eq!(s.counters().stale_acks, 1);
        assert_eq!(s.queue_len(), 1);
    }

    #[test]
    fn unacked_presses_are_resent_after_the_ack_timeout_on_a_live_connection() {
        let mut s: Session<8> = Session::new(0, CFG);
        s.handle_connected(0);
        s.handle_press(0, Button::Happy).unwrap();
        assert_eq!(drain(&mut s, 0), ids(0, 0..1));
        assert_eq!(s.poll_timeout(), Some(1_000));
        assert_eq!(drain(&mut s, 999), ids(0, 0..0));
        assert_eq!(drain(&mut s, 1_000), ids(0, 0..1));
        assert_eq!(s.counters().resends, 1);
    }

    #[test]
    fn a_reconnect_resends_everything_unacked_at_once() {
        let mut s: Session<8> = Session::new(0, CFG);
        s.handle_connected(0);
        s.handle_press(0, Button::Happy).unwrap();
        s.handle_press(0, Button::Happy).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 2);
        s.handle_disconnected(10);
        assert_eq!(s.poll_timeout(), None);
        s.handle_connected(20);
        assert_eq!(drain(&mut s, 20), ids(0, 0..2));
    }

    #[test]
    fn in_flight_is_bounded() {
        let mut s: Session<16> = Session::new(0, CFG);
        s.handle_connected(0);
        for _ in 0..10 {
            s.handle_press(0, Button::Happy).unwrap();
        }
        assert_eq!(drain(&mut s, 0), ids(0, 0..4));
        s.handle_ack(
            1,
            &Ack {
                boot: 0,
                first_seq: 0,
                last_seq: 1,
            },
        );
        assert_eq!(drain(&mut s, 1), ids(0, 4..6));
    }

    #[test]
    fn a_full_queue_keeps_the_oldest_and_counts_the_rest() {
        let mut s: Session<2> = Session::new(0, CFG);
        s.handle_press(0, Button::Happy).unwrap();
        s.handle_press(1, Button::Happy).unwrap();
        assert_eq!(s.handle_press(2, Button::VeryUnhappy), Err(QueueFull));
        assert_eq!(s.counters().dropped, 1);
        s.handle_connected(3);
        assert_eq!(drain(&mut s, 3), ids(0, 0..2));
        // Numbering did not skip for the dropped press.
        s.handle_ack(
            4,
            &Ack {
                boot: 0,
                first_seq: 0,
                last_seq: 1,
            },
        );
        assert_eq!(
            s.handle_press(5, Button::Happy),
            Ok(PressId { boot: 0, seq: 2 })
        );
    }

    #[test]
    fn out_of_order_acks_release_exactly_what_they_name() {
        let mut s: Session<8> = Session::new(3, CFG);
        s.handle_connected(0);
        for _ in 0..5 {
            s.handle_press(0, Button::Happy).unwrap();
        }
        drain(&mut s, 0);
        assert_eq!(
            s.handle_ack(
                1,
                &Ack {
                    boot: 3,
                    first_seq: 2,
                    last_seq: 3
                }
            ),
            2
        );
        s.handle_disconnected(2);
        s.handle_connected(3);
        let left = drain(&mut s, 3);
        assert_eq!(
            left.as_slice(),
            &[
                PressId { boot: 3, seq: 0 },
                PressId { boot: 3, seq: 1 },
                PressId { boot: 3, seq: 4 }
            ]
        );
    }
}

#[cfg(test)]
mod properties {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    #[derive(Debug, Clone)]
    enum Step {
        Press(u8),
        Connect,
        Disconnect,
        Advance(u16),
        /// The gateway acks a random subset of what was transmitted.
        AckSome(u32, u32),
        Transmit,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u8..=4).prop_map(Step::Press),
            Just(Step::Connect),
            Just(Step::Disconnect),
            any::<u16>().prop_map(Step::Advance),
            (0u32..40, 0u32..5).prop_map(|(a, n)| Step::AckSome(a, n)),
            Just(Step::Transmit),
        ]
    }

    proptest! {
        /// Whatever the network does, a press leaves the queue only when an
        /// ack names it, and every queued press is eventually transmitted
        /// once connected.
        #[test]
        fn no_press_is_lost_and_every_release_was_acked(steps in proptest::collection::vec(step(), 1..200)) {
            let mut s: Session<16> = Session::new(1, SessionConfig { ack_timeout_ms: 500, max_in_flight: 4 });
            let mut now: Millis = 0;
            let mut queued = BTreeSet::new();
            let mut acked = BTreeSet::new();
            let mut transmitted = BTreeSet::new();
            for st in steps {
                match st {
                    Step::Press(b) => {
                        if let Ok(id) = s.handle_press(now, Button::from_score(b).unwrap()) {
                            prop_assert!(queued.insert(id.seq), "sequence reused");
                        }
                    }
                    Step::Connect => s.handle_connected(now),
                    Step::Disconnect => s.handle_disconnected(now),
                    Step::Advance(ms) => now += ms as Millis,
                    Step::AckSome(first, n) => {
                        let ack = Ack { boot: 1, first_seq: first, last_seq: first + n };
                        let ackable: Vec<u32> = (first..=first + n).filter(|q| transmitted.contains(q)).collect();
                        let before = s.queue_len();
                        // Only ack what was transmitted, as a gateway would.
                        if ackable.len() as u32 == n + 1 {
                            let released = s.handle_ack(now, &ack);
                            prop_assert!(released <= before);
                            acked.extend(ackable);
                        }
                    }
                    Step::Transmit => {
                        while let Some(p) = s.poll_transmit(now) {
                            transmitted.insert(p.id.seq);
                        }
                    }
                }
                prop_assert_eq!(s.queue_len(), queued.difference(&acked).count());
            }
            // Reconnect and keep transmitting/acking: the queue drains completely.
            s.handle_connected(now);
            for _ in 0..100 {
                now += 1_000;
                while let Some(p) = s.poll_transmit(now) {
                    s.handle_ack(now, &Ack { boot: 1, first_seq: p.id.seq, last_seq: p.id.seq });
                }
            }
            prop_assert_eq!(s.queue_len(), 0);
        }
    }
}
