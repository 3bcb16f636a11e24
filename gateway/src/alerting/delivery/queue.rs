//! One channel's queue as decisions without I/O: what a round sends, in
//! which messages, and what an answer does to each notification. The
//! worker ([`super::worker`]) reads the queue, sends and saves; tests drive
//! this with a virtual clock.
//!
//! A channel keeps its notifications in order (a recovery never arrives
//! before its alert), so a failed message holds back the ones after it,
//! with one exception: a document the receiver rejects for good (HTTP
//! 400/413/415/422, an SMTP 5xx) is *parked* after [`PARK_AFTER`] tries.
//! Parked notifications leave the line, so the rest flows; they are
//! counted and shown, retried alone at the slowest pace (a receiver fixed
//! later still gets them) and dropped with everything else after
//! `give_up_after_hours`.

use pressline_protocol::backoff::Backoff;
use serde::{Deserialize, Serialize};

use super::super::config::{ChannelKind, DeliveryConfig};
use super::super::routing::Notification;

/// Permanent rejections of one document before it is parked: one could
/// be a receiver's bad moment, three are its verdict.
pub const PARK_AFTER: u32 = 3;

/// Notifications in one digest message at most: Slack takes 50 blocks a
/// message, ntfy 4 KiB, Teams about 28 KiB.
pub const DIGEST_MAX: usize = 10;

/// A notification in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub notification: Notification,
    pub created_ms: i64,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    /// Rejected for good [`PARK_AFTER`] times: out of the channel's line.
    #[serde(default)]
    pub parked: bool,
    /// Answers that rejected this notification alone (not in a digest).
    #[serde(default)]
    pub rejections: u32,
    /// In a digest the receiver rejected: sent alone from now on, so one
    /// bad document does not take the others with it.
    #[serde(default)]
    pub alone: bool,
}

impl Queued {
    pub fn new(notification: Notification, now_ms: i64) -> Queued {
        Queued {
            notification,
            created_ms: now_ms,
            attempts: 0,
            next_attempt_ms: now_ms,
            last_error: None,
            parked: false,
            rejections: 0,
            alone: false,
        }
    }
}

/// How a message fared.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The receiver refused this document and would refuse it again.
    Rejected(String),
    /// Unreachable, timed out, 5xx, 429, a bad token: worth retrying.
    Failed(String),
}

/// The delivery limits of [`DeliveryConfig`] in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    first_retry_ms: u64,
    max_retry_ms: u64,
    give_up_ms: i64,
    coalesce_above: usize,
}

impl Policy {
    pub fn new(config: &DeliveryConfig) -> Policy {
        Policy {
            first_retry_ms: config.retry_min_secs.max(1).saturating_mul(1000),
            max_retry_ms: config.retry_max_secs.max(1).saturating_mul(1000),
            give_up_ms: (config.give_up_after_hours.max(1) as i64).saturating_mul(3_600_000),
            coalesce_above: config.coalesce_above,
        }
    }

    /// The wait before try `attempts + 1`.
    pub fn backoff_ms(&self, attempts: u32) -> i64 {
        let first = self.first_retry_ms.min(self.max_retry_ms);
        Backoff::after_attempts(first, self.max_retry_ms, attempts).min(i64::MAX as u64) as i64
    }
}

/// One message: one notification, or a digest of several.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub items: Vec<(u64, Queued)>,
    /// Part of the ordered line (a failure holds back what follows), not
    /// a parked notification's retry.
    pub in_line: bool,
}

impl Message {
    pub fn keys(&self) -> Vec<u64> {
        self.items.iter().map(|(k, _)| *k).collect()
    }
}

/// What one round of a channel does.
#[derive(Debug, Default, PartialEq)]
pub struct Round {
    /// Undelivered for longer than `give_up_after_hours`: to drop.
    pub expired: Vec<(u64, Queued)>,
    /// To send, in order.
    pub messages: Vec<Message>,
    /// Waiting in line (due or not), after this round's drops.
    pub pending: u64,
    /// Parked, after this round's drops.
    pub parked: u64,
}

/// Plans a round of one channel's queue (oldest first) at `now_ms`.
pub fn plan_round(
    kind: ChannelKind,
    queue: Vec<(u64, Queued)>,
    now_ms: i64,
    policy: &Policy,
) -> Round {
    let mut round = Round::default();
    let mut line = Vec::new();
    let mut parked_due = Vec::new();
    let mut line_blocked = false;
    for (key, q) in queue {
        if now_ms.saturating_sub(q.created_ms) > policy.give_up_ms {
            round.expired.push((key, q));
        } else if q.parked {
            round.parked += 1;
            if q.next_attempt_ms <= now_ms {
                parked_due.push((key, q));
            }
        } else {
            round.pending += 1;
            // Only a due prefix goes: order is kept.
            line_blocked |= q.next_attempt_ms > now_ms;
            if !line_blocked {
                line.push((key, q));
            }
        }
    }
    round.messages = batches(kind, line, policy.coalesce_above, |(_, q)| q.alone)
        .into_iter()
        .map(|items| Message {
            items,
            in_line: true,
        })
        .chain(parked_due.into_iter().map(|item| Message {
            items: vec![item],
            in_line: false,
        }))
        .collect();
    round
}

/// How due notifications go out, in order: one request each, or (a burst
/// on a channel read by people) digests of at most [`DIGEST_MAX`], except
/// those that must go `alone`.
pub fn batches<T>(
    kind: ChannelKind,
    due: Vec<T>,
    coalesce_above: usize,
    alone: impl Fn(&T) -> bool,
) -> Vec<Vec<T>> {
    if !(kind.is_chat() && due.len() > coalesce_above.max(1)) {
        return due.into_iter().map(|d| vec![d]).collect();
    }
    let mut messages: Vec<Vec<T>> = Vec::new();
    let mut digest: Vec<T> = Vec::new();
    for item in due {
        if alone(&item) {
            if !digest.is_empty() {
                messages.push(std::mem::take(&mut digest));
            }
            messages.push(vec![item]);
            continue;
        }
        digest.push(item);
        if digest.len() == DIGEST_MAX {
            messages.push(std::mem::take(&mut digest));
        }
    }
    if !digest.is_empty() {
        messages.push(digest);
    }
    messages
}

/// What an unsuccessful try did to a message's notifications.
#[derive(Debug, Default, PartialEq)]
pub struct Retry {
    /// The notifications, updated, to save.
    pub updated: Vec<(u64, Queued)>,
    /// Notifications parked by this try.
    pub newly_parked: u64,
    /// The channel's line must wait (a notification of the line is still
    /// in it): later messages of the round are not sent.
    pub holds_line: bool,
}

/// Records a failed or rejected try of `message` at `now_ms`.
pub fn record_failure(message: Message, outcome: &Outcome, now_ms: i64, policy: &Policy) -> Retry {
    let (error, permanent) = match outcome {
        Outcome::Delivered => return Retry::default(),
        Outcome::Rejected(e) => (e, true),
        Outcome::Failed(e) => (e, false),
    };
    let mut retry = Retry::default();
    // A rejected digest says one of its documents is refused, not which.
    let digest = message.items.len() > 1;
    for (key, mut q) in message.items {
        q.attempts = q.attempts.saturating_add(1);
        q.last_error = Some(error.clone());
        if permanent && digest {
            q.alone = true;
        } else if permanent {
            q.rejections = q.rejections.saturating_add(1);
        }
        if !q.parked && q.rejections >= PARK_AFTER {
            q.parked = true;
            retry.newly_parked += 1;
        }
        q.next_attempt_ms = now_ms.saturating_add(if q.parked {
            policy.max_retry_ms as i64
        } else {
            policy.backoff_ms(q.attempts)
        });
        retry.holds_line |= message.in_line && !q.parked;
        retry.updated.push((key, q));
    }
    retry
}

#[cfg(test)]
mod tests {
    use super::*;
    use pressline_protocol::upstream::Alert;

    fn policy() -> Policy {
        Policy::new(&DeliveryConfig {
            retry_min_secs: 5,
            retry_max_secs: 600,
            give_up_after_hours: 24,
            coalesce_above: 3,
            ..DeliveryConfig::default()
        })
    }

    fn queued(key: u64, now_ms: i64) -> (u64, Queued) {
        let notification = Notification {
            channel: "ops".into(),
            idempotency_key: format!("arena:{key}:1"),
            alert: Alert::default(),
        };
        (key, Queued::new(notification, now_ms))
    }

    fn keys(round: &Round) -> Vec<Vec<u64>> {
        round.messages.iter().map(Message::keys).collect()
    }

    /// Tries the round's first message with `outcome`; returns the queue
    /// as saved afterwards.
    fn try_first(
        queue: Vec<(u64, Queued)>,
        outcome: Outcome,
        now: i64,
    ) -> (Vec<(u64, Queued)>, Retry) {
        let mut round = plan_round(ChannelKind::Webhook, queue.clone(), now, &policy());
        let message = round.messages.remove(0);
        let tried = message.keys();
        let retry = record_failure(message, &outcome, now, &policy());
        let mut saved: Vec<(u64, Queued)> = queue
            .into_iter()
            .filter(|(k, _)| !tried.contains(k))
            .chain(retry.updated.iter().cloned())
            .collect();
        saved.sort_by_key(|(k, _)| *k);
        (saved, retry)
    }

    #[test]
    fn bursts_on_chat_channels_become_digests_of_at_most_ten() {
        let sizes = |kind, n: usize| -> Vec<usize> {
            batches(kind, (0..n).collect(), 3, |_| false)
                .iter()
                .map(Vec::len)
                .collect()
        };
        assert_eq!(
            sizes(ChannelKind::Slack, 3),
            [1, 1, 1],
            "at the limit: one each"
        );
        assert_eq!(sizes(ChannelKind::Ntfy, 4), [4]);
        assert_eq!(sizes(ChannelKind::Teams, 23), [10, 10, 3]);
        assert_eq!(sizes(ChannelKind::Email, 12), [10, 2]);
        assert_eq!(
            sizes(ChannelKind::Webhook, 5),
            [1, 1, 1, 1, 1],
            "machines get one each"
        );
        assert_eq!(
            batches(ChannelKind::Slack, (0..12).collect(), 3, |_| false)[1],
            [10, 11],
            "in order"
        );
    }

    #[test]
    fn a_rejected_digest_goes_out_one_by_one_and_only_the_bad_one_is_parked() {
        let queue: Vec<(u64, Queued)> = (1..=5).map(|k| queued(k, 0)).collect();
        let round = plan_round(ChannelKind::Slack, queue, 0, &policy());
        assert_eq!(keys(&round), [vec![1, 2, 3, 4, 5]], "a digest");
        let message = round.messages.into_iter().next().unwrap();
        let retry = record_failure(message, &Outcome::Rejected("HTTP 400".into()), 0, &policy());
        assert_eq!(retry.newly_parked, 0);
        assert!(retry
            .updated
            .iter()
            .all(|(_, q)| q.alone && q.rejections == 0));
        let queue: Vec<(u64, Queued)> = retry.updated;
        let round = plan_round(ChannelKind::Slack, queue, 5_000, &policy());
        assert_eq!(
            keys(&round),
            [[1], [2], [3], [4], [5]],
            "one by one, in order"
        );
    }

    #[test]
    fn only_rejections_count_towards_parking_not_earlier_failures() {
        let mut queue = vec![queued(1, 0)];
        for _ in 0..2 {
            let now = queue[0].1.next_attempt_ms;
            queue = try_first(queue, Outcome::Failed("timed out".into()), now).0;
        }
        let now = queue[0].1.next_attempt_ms;
        let (queue, retry) = try_first(queue, Outcome::Rejected("HTTP 422".into()), now);
        assert_eq!(retry.newly_parked, 0, "one rejection is not three");
        assert_eq!((queue[0].1.attempts, queue[0].1.rejections), (3, 1));
    }

    #[test]
    fn retries_back_off_by_doubling_up_to_the_limit() {
        let waits: Vec<i64> = (1..=10).map(|a| policy().backoff_ms(a) / 1000).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
    }

    #[test]
    fn a_failed_notification_holds_back_the_ones_after_it_until_its_retry() {
        let queue = vec![queued(1, 0), queued(2, 0)];
        let (queue, retry) = try_first(queue, Outcome::Failed("HTTP 503".into()), 0);
        assert!(retry.holds_line);
        assert_eq!(queue[0].1.next_attempt_ms, 5_000);
        let waiting = plan_round(ChannelKind::Webhook, queue.clone(), 4_999, &policy());
        assert!(
            waiting.messages.is_empty(),
            "the second waits behind the first"
        );
        assert_eq!(waiting.pending, 2);
        assert_eq!(
            keys(&plan_round(ChannelKind::Webhook, queue, 5_000, &policy())),
            [[1], [2]]
        );
    }

    #[test]
    fn a_document_rejected_three_times_is_parked_and_the_rest_flows() {
        let mut queue = vec![queued(1, 0), queued(2, 0)];
        let mut now = 0;
        for attempt in 1..=PARK_AFTER {
            let (after, retry) = try_first(queue, Outcome::Rejected("HTTP 422".into()), now);
            queue = after;
            assert_eq!(
                retry.newly_parked,
                u64::from(attempt == PARK_AFTER),
                "try {attempt}"
            );
            assert_eq!(retry.holds_line, attempt < PARK_AFTER, "try {attempt}");
            now = queue[0].1.next_attempt_ms;
        }
        assert!(queue[0].1.parked);
        let round = plan_round(ChannelKind::Webhook, queue.clone(), 15_000, &policy());
        assert_eq!(
            keys(&round),
            [[2]],
            "the second goes; the parked one waits its slow retry"
        );
        assert_eq!((round.pending, round.parked), (1, 1));
        let later = plan_round(ChannelKind::Webhook, queue, 15_000 + 600_000, &policy());
        assert_eq!(
            keys(&later),
            [[2], [1]],
            "a parked one is retried alone, after the line"
        );
        assert!(!later.messages[1].in_line);
    }

    #[test]
    fn a_parked_notification_failing_again_never_holds_the_line() {
        let (key, mut q) = queued(1, 0);
        q.parked = true;
        q.attempts = PARK_AFTER;
        let message = Message {
            items: vec![(key, q)],
            in_line: false,
        };
        let retry = record_failure(
            message,
            &Outcome::Failed("timed out".into()),
            1_000,
            &policy(),
        );
        assert!(!retry.holds_line);
        assert_eq!(retry.newly_parked, 0, "counted once");
        assert_eq!(retry.updated[0].1.next_attempt_ms, 601_000);
    }

    #[test]
    fn transient_failures_never_park() {
        let mut queue = vec![queued(1, 0)];
        for _ in 0..10 {
            let now = queue[0].1.next_attempt_ms;
            queue = try_first(queue, Outcome::Failed("HTTP 500".into()), now).0;
        }
        assert!(!queue[0].1.parked);
    }

    #[test]
    fn notifications_older_than_the_limit_are_dropped_parked_or_not() {
        let day = 24 * 3_600_000;
        let mut parked = queued(2, 0);
        parked.1.parked = true;
        let round = plan_round(
            ChannelKind::Webhook,
            vec![queued(1, 0), parked, queued(3, 1_000)],
            day + 1,
            &policy(),
        );
        let expired: Vec<u64> = round.expired.iter().map(|(k, _)| *k).collect();
        assert_eq!(expired, [1, 2]);
        assert_eq!(keys(&round), [[3]]);
    }

    #[test]
    fn queues_saved_before_parking_existed_still_read() {
        let mut json = serde_json::to_value(queued(1, 0).1).unwrap();
        json.as_object_mut().unwrap().remove("parked");
        let q: Queued = serde_json::from_value(json).unwrap();
        assert!(!q.parked);
    }
}
