//! `fleet alerts`: open alerts (or all with `--all`), newest first;
//! `fleet alerts ack`: acknowledge one.

use pressline_protocol::upstream::{Alert, Lifecycle};
use time::OffsetDateTime;

use super::{gather, list_outcome, Outcome};
use crate::render::{ago, finish, table};
use crate::sites::Site;

pub fn render(rows: &[Alert], now: OffsetDateTime) -> String {
    if rows.is_empty() {
        return "no alerts\n".into();
    }
    let mut t = table(&[
        "SITE",
        "ID",
        "TERMINAL",
        "KIND",
        "SEVERITY",
        "STATE",
        "RAISED",
        "ACKNOWLEDGED",
        "RECOVERED",
        "DETAIL",
    ]);
    for a in rows {
        let state = match &a.lifecycle {
            None => a.state.to_string(),
            Some(Lifecycle::Raised) if a.escalated_at.is_some() => "raised, escalated".into(),
            Some(lifecycle) => lifecycle.to_string(),
        };
        t.add_row(vec![
            a.site.clone(),
            a.id.to_string(),
            match &a.zone {
                Some(zone) => format!("zone {zone}"),
                None => a.terminal.clone(),
            },
            a.kind.to_string(),
            a.severity.to_string(),
            state,
            ago(&a.raised_at, now),
            match (&a.acknowledged_by, &a.acknowledged_at) {
                (Some(by), Some(at)) => format!("{by}, {}", ago(at, now)),
                _ => "-".into(),
            },
            a.cleared_at
                .as_deref()
                .map_or_else(|| "-".into(), |c| ago(c, now)),
            a.detail.clone(),
        ]);
    }
    finish(t)
}

/// What `fleet alerts ack` prints.
pub fn acknowledged(alert: &Alert, json: bool) -> anyhow::Result<Outcome> {
    let stdout = if json {
        serde_json::to_string_pretty(alert)? + "\n"
    } else {
        format!(
            "alert {} at {} acknowledged by {} at {}{}\n",
            alert.id,
            alert.site,
            alert.acknowledged_by.as_deref().unwrap_or("?"),
            alert.acknowledged_at.as_deref().unwrap_or("?"),
            match alert.lifecycle {
                Some(Lifecycle::Recovered) => " (it had already recovered)",
                _ => "",
            }
        )
    };
    Ok(Outcome {
        stdout,
        warnings: vec![],
        code: super::exit::OK,
    })
}

pub fn run(sites: &[Site], all: bool, json: bool, now: OffsetDateTime) -> anyhow::Result<Outcome> {
    let (mut rows, warnings) = gather(sites, |gw| gw.alerts(!all));
    rows.sort_by(|a, b| b.raised_at.cmp(&a.raised_at));
    list_outcome(&rows, warnings, json, |rows| render(rows, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pressline_protocol::upstream::{AlertKind, AlertState, Severity};
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn alerts_table() {
        let now = OffsetDateTime::parse("2026-11-22T12:00:00Z", &Rfc3339).unwrap();
        let alert = |id,
                     terminal: &str,
                     kind: &str,
                     severity: &str,
                     cleared: Option<&str>,
                     detail: &str| Alert {
            schema: "pressline.alert.v1".into(),
            id,
            site: "arena".into(),
            terminal: terminal.into(),
            kind: AlertKind::parse(kind),
            severity: Severity::parse(severity),
            state: if cleared.is_some() {
                AlertState::Cleared
            } else {
                AlertState::Raised
            },
            raised_at: "2026-11-22T11:50:00Z".into(),
            cleared_at: cleared.map(str::to_string),
            detail: detail.into(),
            lifecycle: Some(match (cleared.is_some(), id == 6) {
                (true, _) => Lifecycle::Closed,
                (false, true) => Lifecycle::Acknowledged,
                (false, false) => Lifecycle::Raised,
            }),
            acknowledged_by: (id == 6).then(|| "Anna".into()),
            acknowledged_at: (id == 6).then(|| "2026-11-22T11:55:00Z".into()),
            ..Alert::default()
        };
        let rows = vec![
            alert(
                7,
                "south-01",
                "offline",
                "critical",
                None,
                "not heard from since 2026-11-22T10:12:00Z",
            ),
            alert(
                6,
                "north-02",
                "low_battery",
                "warning",
                None,
                "battery 3310 mV (threshold 3500 mV)",
            ),
            alert(
                5,
                "gate-4",
                "stuck_button",
                "warning",
                Some("2026-11-22T11:58:00Z"),
                "60 presses in a row of very_unhappy",
            ),
        ];
        insta::assert_snapshot!(render(&rows, now));
    }
}
