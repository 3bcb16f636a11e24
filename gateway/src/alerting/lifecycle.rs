//! The alert lifecycle, as transitions of one [`Alert`] document (pure: the
//! time comes in; [`super::book::AlertBook`] owns the alerts and calls
//! these).
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

use pressline_protocol::upstream::{Alert, AlertEvent, AlertState, Lifecycle};

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
    /// The store refused to save it; try again.
    #[error("the acknowledgement could not be saved ({0}); try again")]
    Storage(String),
}

fn transition(alert: &mut Alert, event: AlertEvent) {
    alert.revision = alert.revision.saturating_add(1);
    alert.event = Some(event);
}

/// A new alert's first document.
pub fn start(alert: &mut Alert) {
    alert.state = AlertState::Raised;
    alert.lifecycle = Some(Lifecycle::Raised);
    alert.revision = 0;
    transition(alert, AlertEvent::Raised);
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
    if alert.lifecycle == Some(Lifecycle::Closed) {
        return Err(AckError::Closed(alert.id));
    }
    if alert.acknowledged_at.is_some() {
        return Ok(false);
    }
    alert.acknowledged_at = Some(rfc3339_ms(now_ms));
    alert.acknowledged_by = Some(by.to_string());
    alert.ack_note = note.map(str::to_string);
    if alert.lifecycle == Some(Lifecycle::Raised) {
        alert.lifecycle = Some(Lifecycle::Acknowledged);
    }
    transition(alert, AlertEvent::Acknowledged);
    Ok(true)
}

/// The condition recovered.
pub fn recover(alert: &mut Alert, now_ms: i64) {
    alert.state = AlertState::Cleared;
    alert.cleared_at = Some(rfc3339_ms(now_ms));
    alert.lifecycle = Some(Lifecycle::Recovered);
    transition(alert, AlertEvent::Recovered);
}

/// The condition came back before the recovered alert closed.
pub fn reopen(alert: &mut Alert, detail: String) {
    alert.state = AlertState::Raised;
    alert.cleared_at = None;
    alert.detail = detail;
    alert.lifecycle = Some(if alert.acknowledged_at.is_some() {
        Lifecycle::Acknowledged
    } else {
        Lifecycle::Raised
    });
    alert.reopened = alert.reopened.saturating_add(1);
    transition(alert, AlertEvent::Reopened);
}

/// Nobody acknowledged in time: the escalation channels are told.
pub fn escalate(alert: &mut Alert, now_ms: i64) {
    alert.escalated_at = Some(rfc3339_ms(now_ms));
    transition(alert, AlertEvent::Escalated);
}

/// Recovered and quiet for long enough: done.
pub fn close(alert: &mut Alert, now_ms: i64) {
    alert.lifecycle = Some(Lifecycle::Closed);
    alert.closed_at = Some(rfc3339_ms(now_ms));
    transition(alert, AlertEvent::Closed);
}

/// Alerts saved before the lifecycle existed: open ones are `raised`,
/// cleared ones `closed`.
pub fn upgrade(alert: &mut Alert) {
    if alert.lifecycle.is_some() {
        return;
    }
    if alert.is_open() {
        alert.lifecycle = Some(Lifecycle::Raised);
        alert.revision = 1;
    } else {
        alert.lifecycle = Some(Lifecycle::Closed);
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
            kind: pressline_protocol::upstream::AlertKind::ZoneUnhappy,
            raised_at: rfc3339_ms(T0),
            ..Alert::default()
        };
        start(&mut a);
        a
    }

    #[test]
    fn a_new_alert_is_raised_at_revision_one() {
        let a = alert();
        assert_eq!(
            (a.state.clone(), a.lifecycle.clone()),
            (AlertState::Raised, Some(Lifecycle::Raised))
        );
        assert_eq!((a.revision, a.event.clone()), (1, Some(AlertEvent::Raised)));
        assert_eq!(a.transition_key(), "arena:4:1");
    }

    #[test]
    fn acknowledge_then_recover_then_close() {
        let mut a = alert();
        assert_eq!(
            acknowledge(&mut a, T0 + 60_000, " Anna ", Some("on my way")),
            Ok(true)
        );
        assert_eq!(a.lifecycle, Some(Lifecycle::Acknowledged));
        assert_eq!(a.acknowledged_by.as_deref(), Some("Anna"));
        assert_eq!(a.ack_note.as_deref(), Some("on my way"));
        assert!(a.is_open());
        recover(&mut a, T0 + 120_000);
        assert_eq!(
            (a.state.clone(), a.lifecycle.clone()),
            (AlertState::Cleared, Some(Lifecycle::Recovered))
        );
        close(&mut a, T0 + 1_000_000);
        assert_eq!(a.lifecycle, Some(Lifecycle::Closed));
        assert_eq!(a.revision, 4);
        assert_eq!(a.event, Some(AlertEvent::Closed));
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
            a.lifecycle,
            Some(Lifecycle::Recovered),
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
            (a.state.clone(), a.lifecycle.clone()),
            (AlertState::Raised, Some(Lifecycle::Acknowledged))
        );
        assert_eq!((a.reopened, a.cleared_at.as_deref()), (1, None));
        assert_eq!(a.event, Some(AlertEvent::Reopened));
    }

    #[test]
    fn alerts_saved_before_the_lifecycle_are_upgraded() {
        let mut open = Alert {
            state: AlertState::Raised,
            ..Alert::default()
        };
        upgrade(&mut open);
        assert_eq!(
            (open.lifecycle, open.revision),
            (Some(Lifecycle::Raised), 1)
        );
        let mut old = Alert {
            state: AlertState::Cleared,
            cleared_at: Some("2026-01-01T00:00:00Z".into()),
            ..Alert::default()
        };
        upgrade(&mut old);
        assert_eq!(
            (old.lifecycle.clone(), old.revision),
            (Some(Lifecycle::Closed), 2)
        );
        assert_eq!(old.closed_at, old.cleared_at);
    }
}
