//! `fleet alerts`: open alerts (or all with `--all`), newest first.

use pressline_protocol::upstream::Alert;
use time::OffsetDateTime;

use super::{gather, list_outcome, Outcome};
use crate::render::{ago, finish, table};
use crate::sites::Site;

pub fn render(rows: &[Alert], now: OffsetDateTime) -> String {
    if rows.is_empty() {
        return "no alerts\n".into();
    }
    let mut t = table(&[
        "SITE", "TERMINAL", "KIND", "SEVERITY", "STATE", "RAISED", "CLEARED", "DETAIL",
    ]);
    for a in rows {
        t.add_row(vec![
            a.site.clone(),
            match &a.zone {
                Some(zone) => format!("zone {zone}"),
                None => a.terminal.clone(),
            },
            a.kind.clone(),
            a.severity.clone(),
            a.state.clone(),
            ago(&a.raised_at, now),
            a.cleared_at
                .as_deref()
                .map_or_else(|| "-".into(), |c| ago(c, now)),
            a.detail.clone(),
        ]);
    }
    finish(t)
}

pub fn run(sites: &[Site], all: bool, json: bool, now: OffsetDateTime) -> anyhow::Result<Outcome> {
    let (mut rows, warnings) = gather(sites, |gw| gw.alerts(!all));
    rows.sort_by(|a, b| b.raised_at.cmp(&a.raised_at));
    list_outcome(&rows, warnings, json, |rows| render(rows, now))
}

#[cfg(test)]
mod tests {
    use super::*;
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
            kind: kind.into(),
            severity: severity.into(),
            state: if cleared.is_some() {
                "cleared".into()
            } else {
                "raised".into()
            },
            raised_at: "2026-11-22T11:50:00Z".into(),
            cleared_at: cleared.map(str::to_string),
            detail: detail.into(),
            zone: None,
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
