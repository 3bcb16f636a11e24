//! The alert lifecycle, as transitions of one [`Alert`] document (pure: the
//! time comes in; [`crate::terminals::health::Fleet`] owns the alerts and
//! calls these).
//!
//! ```text
//!            ack                    condition recovers
//! raised ──────────▶ acknowledged ──────────────────────▶ recovered ──▶ closed
//!    │                                                    ▲   │  (quiet for
//!    └──────────────── condition recovers ────────────────┘   │  close_after)
//!                                 condition returns before closing: reopened
//! ```
//!
//! - Acknowledging records who and when (and an optional note); a second
//!   acknowledgement changes nothing. A recovered alert can still be
//!   acknowledged (who handled it), a closed one cannot.
//! - A recovered alert whose condition comes back before it closes is
//!   reopened (same id, `reopened` + 1): a flapping condition stays one
//!   alert and one thread of notifications.
//! - Escalation is a fact about the alert (`escalated_at`), decided by the
//!   routing rules ([`super::routing`]).
//!
//! Every transition bumps `revision` and names itself in `event`.

use pressline_protocol::upstream::lifecycle::*;
use pressline_protocol::upstream::Alert;

use crate::clock::rfc3339_ms;

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("alert {0} does not exist (or was closed long ago and forgotten)")]
    Unknown(u64),
    #[error("alert {0} is already closed")]
    Closed(u64),
    #[error("say who acknowledges: a name of at most 80 characters")]
    BadName,
    #[error("the note is longer than 500 characters")]
    NoteTooLong,
}

fn transition(alert: &mut Alert, event: &str) {
    alert.revision = alert.revision.saturating_add(1);
    alert.event = Some(event.to_string());
}

/// A new alert's first document.
pub fn start(alert: &mut Alert) {
    alert.state = "raised".into();
    alert.lifecycle = RAISED.into();
    alert.revision = 0;
    transition(alert, RAISED);
}

/// Records an acknowledgement. `Ok(false)`: it was already acknowledged
/// (nothing changes; the first one stands).
pub fn acknowledge(
    alert: &mut Alert,
    now_ms: i64,
    by: &str,
    note: Option<&str>,
) -> Result<bool, AckError> {
    let by = by.trim();
    if by.is_empty() || by.chars().count() > 80 || by.chars().any(char::is_control) {
        return Err(AckError::BadName);
    }
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > 500) {
        return Err(AckError::NoteTooLong);
    }
    if alert.lifecycle == CLOSED {
        return Err(AckError::Closed(alert.id));
    }
    if alert.acknowledged_at.is_some() {
        return Ok(false);
    }
    alert.acknowledged_at = Some(rfc3339_ms(now_ms));
    alert.acknowledged_by = Some(by.to_string());
    alert.ack_note = note.map(str::to_string);
    if alert.lifecycle == RAISED {
        alert.lifecycle = ACKNOWLEDGED.into();
    }
    transition(alert, ACKNOWLEDGED);
    Ok(true)
}

/// The condition recovered.
pub fn recover(alert: &mut Alert, now_ms: i64) {
    alert.state = "cleared".into();
    alert.cleared_at = Some(rfc3339_ms(now_ms));
    alert.lifecycle = RECOVERED.into();
    transition(alert, RECOVERED);
}

/// The condition came back before the recovered alert closed.
pub fn reopen(alert: &mut Alert, detail: String) {
    alert.state = "raised".into();
    alert.cleared_at = None;
    alert.detail = detail;
    alert.lifecycle = if alert.acknowledged_at.is_some() {
        ACKNOWLEDGED
    } else {
        RAISED
    }
    .into();
    alert.reopened = alert.reopened.saturating_add(1);
    transition(alert, REOPENED);
}

/// Nobody acknowledged in time: the escalation channels are told.
pub fn escalate(alert: &mut Alert, now_ms: i64) {
    alert.escalated_at = Some(rfc3339_ms(now_ms));
    transition(alert, ESCALATED);
}

/// Recovered and quiet for long enough: done.
pub fn close(alert: &mut Alert, now_ms: i64) {
    alert.lifecycle = CLOSED.into();
    alert.closed_at = Some(rfc3339_ms(now_ms));
    transition(alert, CLOSED);
}

/// Alerts saved before the lifecycle existed: open ones are `raised`,
/// cleared ones `closed`.
pub fn upgrade(alert: &mut Alert) {
    if !alert.lifecycle.is_empty() {
        return;
    }
    if alert.state == "raised" {
        alert.lifecycle = RAISED.into();
        alert.revision = 1;
    } else {
        alert.lifecycle = CLOSED.into();
        alert.closed_at = alert.cleared_at.clone();
        alert.revision = 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_790_000_000_000;

    fn alert() -> Alert {
        let mut a = Alert {
            id: 4,
            site: "arena".into(),
            kind: "zone_unhappy".into(),
            raised_at: rfc3339_ms(T0),
            ..Alert::default()
        };
        start(&mut a);
        a
    }

    #[test]
    fn a_new_alert_is_raised_at_revision_one() {
        let a = alert();
        assert_eq!((a.state.as_str(), a.lifecycle.as_str()), ("raised", RAISED));
        assert_eq!((a.revision, a.event.as_deref()), (1, Some(RAISED)));
        assert_eq!(a.transition_key(), "arena:4:1");
    }

    #[test]
    fn acknowledge_then_recover_then_close() {
        let mut a = alert();
        assert_eq!(
            acknowledge(&mut a, T0 + 60_000, " Anna ", Some("on my way")),
            Ok(true)
        );
        assert_eq!(a.lifecycle, ACKNOWLEDGED);
        assert_eq!(a.acknowledged_by.as_deref(), Some("Anna"));
        assert_eq!(a.ack_note.as_deref(), Some("on my way"));
        assert!(a.is_open());
        recover(&mut a, T0 + 120_000);
        assert_eq!(
            (a.state.as_str(), a.lifecycle.as_str()),
            ("cleared", RECOVERED)
        );
        close(&mut a, T0 + 1_000_000);
        assert_eq!(a.lifecycle, CLOSED);
        assert_eq!(a.revision, 4);
        assert_eq!(a.event.as_deref(), Some(CLOSED));
    }

    #[test]
    fn the_first_acknowledgement_stands() {
        let mut a = alert();
        acknowledge(&mut a, T0 + 1, "Anna", None).unwrap();
        let before = a.clone();
        assert_eq!(acknowledge(&mut a, T0 + 2, "Ben", None), Ok(false));
        assert_eq!(a, before);
    }

    #[test]
    fn a_recovered_alert_can_be_acknowledged_but_a_closed_one_cannot() {
        let mut a = alert();
        recover(&mut a, T0 + 1);
        assert_eq!(acknowledge(&mut a, T0 + 2, "Anna", None), Ok(true));
        assert_eq!(
            a.lifecycle, RECOVERED,
            "still recovered, now with who handled it"
        );
        close(&mut a, T0 + 3);
        assert_eq!(
            acknowledge(&mut a, T0 + 4, "Ben", None),
            Err(AckError::Closed(4))
        );
    }

    #[test]
    fn acknowledgements_need_a_plain_name_and_a_short_note() {
        let mut a = alert();
        assert_eq!(acknowledge(&mut a, T0, "  ", None), Err(AckError::BadName));
        assert_eq!(
            acknowledge(&mut a, T0, "a\nb", None),
            Err(AckError::BadName)
        );
        assert_eq!(
            acknowledge(&mut a, T0, "Anna", Some(&"x".repeat(501))),
            Err(AckError::NoteTooLong)
        );
        assert_eq!(a.revision, 1, "refusals change nothing");
    }

    #[test]
    fn a_reopened_alert_remembers_its_acknowledgement() {
        let mut a = alert();
        acknowledge(&mut a, T0 + 1, "Anna", None).unwrap();
        recover(&mut a, T0 + 2);
        reopen(&mut a, "again".into());
        assert_eq!(
            (a.state.as_str(), a.lifecycle.as_str()),
            ("raised", ACKNOWLEDGED)
        );
        assert_eq!((a.reopened, a.cleared_at.as_deref()), (1, None));
        assert_eq!(a.event.as_deref(), Some(REOPENED));
    }

    #[test]
    fn alerts_saved_before_the_lifecycle_are_upgraded() {
        let mut open = Alert {
            state: "raised".into(),
            ..Alert::default()
        };
        upgrade(&mut open);
        assert_eq!((open.lifecycle.as_str(), open.revision), (RAISED, 1));
        let mut old = Alert {
            state: "cleared".into(),
            cleared_at: Some("2026-01-01T00:00:00Z".into()),
            ..Alert::default()
        };
        upgrade(&mut old);
        assert_eq!((old.lifecycle.as_str(), old.revision), (CLOSED, 2));
        assert_eq!(old.closed_at, old.cleared_at);
    }
}
