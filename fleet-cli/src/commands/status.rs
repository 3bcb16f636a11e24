//! `fleet status`: one line per site.

use serde::Serialize;
use time::OffsetDateTime;

use super::{exit, Outcome};
use crate::client::{for_each_site, NotificationChannel};
use crate::render::{finish, table};
use crate::sites::Site;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteStatus {
    pub site: String,
    pub url: String,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub gateway_version: Option<String>,
    pub terminals: usize,
    pub online: usize,
    pub offline: usize,
    pub alerts_open: usize,
    pub alerts_critical: usize,
    pub presses_today: u64,
    pub forward_pending: u64,
    /// `null` when the gateway has no upstream configured.
    pub upstream_connected: Option<bool>,
    /// Why the upstream connection fails, while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_error: Option<String>,
    /// The upstream broker (node of a cluster) it is on, or trying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_broker: Option<String>,
    pub storage_full: bool,
    /// Alert notification channels configured at the site.
    pub notification_channels: usize,
    /// Those whose last delivery failed, with the error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failing_channels: Vec<FailingChannel>,
    /// Those holding notifications their receiver rejected for good.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parked_channels: Vec<ParkedChannel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailingChannel {
    pub channel: String,
    pub pending: u64,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedChannel {
    pub channel: String,
    pub parked: u64,
    /// The receiver's last answer.
    pub error: String,
}

fn failing(channels: &[NotificationChannel]) -> Vec<FailingChannel> {
    channels
        .iter()
        .filter(|c| c.failing)
        .map(|c| FailingChannel {
            channel: c.channel.clone(),
            pending: c.pending,
            error: c.last_error.clone().unwrap_or_default(),
        })
        .collect()
}

fn parked(channels: &[NotificationChannel]) -> Vec<ParkedChannel> {
    channels
        .iter()
        .filter(|c| c.parked > 0)
        .map(|c| ParkedChannel {
            channel: c.channel.clone(),
            parked: c.parked,
            error: c.last_error.clone().unwrap_or_default(),
        })
        .collect()
}

pub fn collect(sites: &[Site]) -> Vec<SiteStatus> {
    for_each_site(sites, |gw| {
        let stats = gw.stats()?;
        let terminals = gw.terminals()?;
        let alerts = gw.alerts(true)?;
        Ok::<_, crate::client::ClientError>((stats, terminals, alerts))
    })
    .into_iter()
    .map(|(site, result)| match result {
        Ok((stats, terminals, alerts)) => SiteStatus {
            site: site.name,
            url: site.url,
            reachable: true,
            error: None,
            gateway_version: Some(stats.version),
            terminals: terminals.len(),
            online: terminals.iter().filter(|t| t.online).count(),
            offline: terminals.iter().filter(|t| !t.online).count(),
            alerts_open: alerts.len(),
            alerts_critical: alerts
                .iter()
                .filter(|a| a.severity == pressline_protocol::upstream::Severity::Critical)
                .count(),
            presses_today: stats.presses_today,
            forward_pending: stats.forward_pending,
            upstream_connected: stats.upstream_connected,
            upstream_error: stats
                .upstream_error
                .filter(|_| stats.upstream_connected == Some(false)),
            upstream_broker: stats.upstream_broker,
            storage_full: stats.storage_full,
            notification_channels: stats.notification_channels.len(),
            failing_channels: failing(&stats.notification_channels),
            parked_channels: parked(&stats.notification_channels),
        },
        Err(e) => SiteStatus {
            site: site.name,
            url: site.url,
            reachable: false,
            error: Some(e.to_string()),
            gateway_version: None,
            terminals: 0,
            online: 0,
            offline: 0,
            alerts_open: 0,
            alerts_critical: 0,
            presses_today: 0,
            forward_pending: 0,
            upstream_connected: None,
            upstream_error: None,
            upstream_broker: None,
            storage_full: false,
            notification_channels: 0,
            failing_channels: Vec::new(),
            parked_channels: Vec::new(),
        },
    })
    .collect()
}

pub fn render(rows: &[SiteStatus], _now: OffsetDateTime) -> String {
    let mut t = table(&[
        "SITE",
        "TERMINALS",
        "ONLINE",
        "OFFLINE",
        "ALERTS",
        "CRITICAL",
        "PRESSES TODAY",
        "BACKLOG",
        "UPSTREAM",
        "NOTIFICATIONS",
    ]);
    for r in rows {
        if !r.reachable {
            t.add_row(vec![
                r.site.clone(),
                "unreachable".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        let upstream = match (r.upstream_connected, r.storage_full) {
            (_, true) => "STORAGE FULL".to_string(),
            (Some(true), _) => match &r.upstream_broker {
                Some(broker) => format!("connected to {broker}"),
                None => "connected".into(),
            },
            (Some(false), _) => "DOWN".into(),
            (None, _) => "none".into(),
        };
        t.add_row(vec![
            r.site.clone(),
            r.terminals.to_string(),
            r.online.to_string(),
            r.offline.to_string(),
            r.alerts_open.to_string(),
            r.alerts_critical.to_string(),
            r.presses_today.to_string(),
            r.forward_pending.to_string(),
            upstream,
            notifications(r),
        ]);
    }
    finish(t)
}

/// The NOTIFICATIONS column: `none`, `ok`, or the channels in trouble.
fn notifications(r: &SiteStatus) -> String {
    if r.notification_channels == 0 {
        return "none".into();
    }
    let failing = r
        .failing_channels
        .iter()
        .map(|c| format!("FAILING: {}", c.channel));
    let parked = r
        .parked_channels
        .iter()
        .map(|c| format!("PARKED: {} ({})", c.channel, c.parked));
    let trouble: Vec<String> = failing.chain(parked).collect();
    if trouble.is_empty() {
        "ok".into()
    } else {
        trouble.join("; ")
    }
}

/// Exit 1 when any site is unreachable, has a critical alert open, or
/// cannot deliver alert notifications (failing or parked).
pub fn exit_code(rows: &[SiteStatus]) -> u8 {
    if rows.iter().any(|r| {
        !r.reachable
            || r.alerts_critical > 0
            || !r.failing_channels.is_empty()
            || !r.parked_channels.is_empty()
    }) {
        exit::PROBLEM
    } else {
        exit::OK
    }
}

pub fn run(sites: &[Site], json: bool, now: OffsetDateTime) -> anyhow::Result<Outcome> {
    let rows = collect(sites);
    let mut warnings: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            r.error.clone().or_else(|| {
                r.upstream_error
                    .as_ref()
                    .map(|e| format!("site {}: upstream down: {e}", r.site))
            })
        })
        .collect();
    for r in &rows {
        for c in &r.failing_channels {
            warnings.push(format!(
                "site {}: notification channel {:?} failing ({} waiting): {}",
                r.site, c.channel, c.pending, c.error
            ));
        }
        for c in &r.parked_channels {
            warnings.push(format!(
                "site {}: notification channel {:?} has {} notification(s) its receiver rejects ({}); see the gateway's log for the document",
                r.site, c.channel, c.parked, c.error
            ));
        }
    }
    let stdout = if json {
        format!("{}\n", serde_json::to_string_pretty(&rows)?)
    } else {
        render(&rows, now)
    };
    Ok(Outcome {
        stdout,
        warnings,
        code: exit_code(&rows),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(site: &str, online: usize, offline: usize, critical: usize) -> SiteStatus {
        SiteStatus {
            site: site.into(),
            url: format!("http://{site}:8080"),
            reachable: true,
            error: None,
            gateway_version: Some("0.1.0".into()),
            terminals: online + offline,
            online,
            offline,
            alerts_open: critical + 1,
            alerts_critical: critical,
            presses_today: 1532,
            forward_pending: 0,
            upstream_connected: Some(true),
            upstream_error: None,
            upstream_broker: None,
            storage_full: false,
            notification_channels: 1,
            failing_channels: Vec::new(),
            parked_channels: Vec::new(),
        }
    }

    #[test]
    fn status_table_and_exit_codes() {
        let mut down = row("mall", 0, 0, 0);
        down.reachable = false;
        down.error = Some("unreachable".into());
        let mut up_down = row("airport", 12, 0, 0);
        up_down.upstream_connected = Some(false);
        up_down.forward_pending = 420;
        up_down.failing_channels = vec![FailingChannel {
            channel: "floor".into(),
            pending: 2,
            error: "HTTP 503 from the receiver".into(),
        }];
        let mut rejected = row("stadium", 40, 0, 0);
        rejected.parked_channels = vec![ParkedChannel {
            channel: "ops".into(),
            parked: 1,
            error: "HTTP 422 from the receiver: unknown field".into(),
        }];
        let rows = vec![row("arena", 23, 1, 1), up_down, rejected, down];
        insta::assert_snapshot!(render(&rows, OffsetDateTime::UNIX_EPOCH));
        assert_eq!(exit_code(&rows), exit::PROBLEM);
        assert_eq!(exit_code(&rows[1..2]), exit::PROBLEM, "a failing channel");
        assert_eq!(
            exit_code(&rows[2..3]),
            exit::PROBLEM,
            "a parked notification"
        );
        let mut fine = rows[1].clone();
        fine.failing_channels.clear();
        assert_eq!(exit_code(&[fine]), exit::OK);
        assert_eq!(exit_code(&rows[..1]), exit::PROBLEM, "a critical alert");
    }
}
