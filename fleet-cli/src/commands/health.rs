//! `fleet health TERMINAL`: everything known about one terminal.

use pressline_protocol::upstream::{Alert, TerminalHealth};
use serde::Serialize;
use time::OffsetDateTime;

use super::{exit, Outcome};
use crate::client::{for_each_site, ClientError};
use crate::render::{ago, opt};
use crate::sites::Site;

#[derive(Serialize)]
struct Report<'a> {
    terminal: &'a TerminalHealth,
    alerts: &'a [Alert],
}

pub fn render(t: &TerminalHealth, alerts: &[Alert], now: OffsetDateTime) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<16}{v}\n"));
    line("terminal", t.id.clone());
    line("site", t.site.clone());
    line("online", if t.online { "yes".into() } else { "NO".into() });
    line(
        "last seen",
        format!("{} ({})", ago(&t.last_seen, now), t.last_seen),
    );
    line("first seen", t.first_seen.clone());
    line("firmware", t.firmware.clone().unwrap_or_else(|| "-".into()));
    line("boot", opt(t.boot, ""));
    line(
        "uptime",
        t.uptime_secs.map_or_else(
            || "-".into(),
            |s| format!("{}h {}m", s / 3600, s % 3600 / 60),
        ),
    );
    line(
        "reset reason",
        t.reset_reason.clone().unwrap_or_else(|| "-".into()),
    );
    line("battery", opt(t.battery_mv, " mV"));
    line("wi-fi", opt(t.rssi_dbm, " dBm"));
    line(
        "queue",
        match (t.queue_depth, t.queue_capacity) {
            (Some(d), Some(c)) => format!(
                "{d} of {c} waiting, {} dropped",
                t.dropped_presses.unwrap_or(0)
            ),
            _ => "-".into(),
        },
    );
    line("presses", t.presses_total.to_string());
    if alerts.is_empty() {
        line("alerts", "none".into());
    } else {
        out.push_str("alerts\n");
        for a in alerts {
            let when = match &a.cleared_at {
                Some(c) => format!("raised {}, cleared {}", ago(&a.raised_at, now), ago(c, now)),
                None => format!("raised {}", ago(&a.raised_at, now)),
            };
            out.push_str(&format!(
                "  {:<14}{:<9}{:<8} {} ({when})\n",
                a.kind, a.severity, a.state, a.detail
            ));
        }
    }
    out
}

pub fn run(
    sites: &[Site],
    terminal: &str,
    json: bool,
    now: OffsetDateTime,
) -> anyhow::Result<Outcome> {
    let results = for_each_site(sites, |gw| match gw.terminal(terminal) {
        Ok(t) => gw.alerts(false).map(|a| Some((t, a))),
        Err(ClientError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    });
    let mut warnings = Vec::new();
    for (_, result) in results {
        match result {
            Ok(Some((t, all))) => {
                let alerts: Vec<Alert> = all.into_iter().filter(|a| a.terminal == t.id).collect();
                let stdout = if json {
                    format!(
                        "{}\n",
                        serde_json::to_string_pretty(&Report {
                            terminal: &t,
                            alerts: &alerts
                        })?
                    )
                } else {
                    render(&t, &alerts, now)
                };
                let code = if warnings.is_empty() {
                    exit::OK
                } else {
                    exit::PROBLEM
                };
                return Ok(Outcome {
                    stdout,
                    warnings,
                    code,
                });
            }
            Ok(None) => {}
            Err(e) => warnings.push(e.to_string()),
        }
    }
    warnings.push(format!(
        "terminal {terminal:?} is not known at {} (list them with `fleet terminals`)",
        sites
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(Outcome {
        stdout: String::new(),
        warnings,
        code: exit::PROBLEM,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn health_view() {
        let now = OffsetDateTime::parse("2026-11-22T12:00:00Z", &Rfc3339).unwrap();
        let t = crate::commands::terminals::tests::sample(
            "arena",
            "north-02",
            true,
            Some(3310),
            &["low_battery"],
        );
        let alerts = vec![Alert {
            schema: "pressline.alert.v1".into(),
            id: 6,
            site: "arena".into(),
            terminal: "north-02".into(),
            kind: pressline_protocol::upstream::AlertKind::LowBattery,
            severity: pressline_protocol::upstream::Severity::Warning,
            state: pressline_protocol::upstream::AlertState::Raised,
            raised_at: "2026-11-22T11:00:00Z".into(),
            cleared_at: None,
            detail: "battery 3310 mV (threshold 3500 mV)".into(),
            zone: None,
            ..Alert::default()
        }];
        insta::assert_snapshot!(render(&t, &alerts, now));
    }
}
