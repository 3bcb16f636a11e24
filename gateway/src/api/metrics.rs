//! Prometheus text exposition (`GET /metrics`), conventional names:
//! `pressline_` prefix, `_total` for counters, base units.

use std::fmt::Write as _;

use crate::api::state::ApiState;
use crate::stats::StatsSnapshot;
use pressline_protocol::upstream::AlertKind;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric. Label values are ids validated at the edge
/// (sites, zones, terminals) or fixed strings, so they need no escaping.
pub fn render(state: &ApiState) -> String {
    let s = state.snapshot();
    let site = &state.site;
    let mut out = String::with_capacity(4096);
    presses(&mut out, state, &s);
    storage(&mut out, site, &s);
    terminals_and_alerts(&mut out, state);
    notifications(&mut out, site, &s.notification_channels);
    response(
        &mut out,
        site,
        &crate::api::alerts::response_figures(state, 7),
    );
    out
}

/// Presses by zone and button, and the press path's counters.
fn presses(out: &mut String, state: &ApiState, s: &StatsSnapshot) {
    let site = &state.site;
    family(out, "pressline_presses_total", "counter", "Presses stored since the gateway started, by zone, button and whether they counted as opinions.");
    for (zone, button, counted, n) in state.registry.scores().totals() {
        let _ = writeln!(out, "pressline_presses_total{{site=\"{site}\",zone=\"{zone}\",button=\"{}\",counted=\"{counted}\"}} {n}", button.name());
    }
    let counters = [
        (
            "pressline_presses_received_total",
            "Press publishes received from terminals (including duplicates).",
            s.presses_received,
        ),
        (
            "pressline_presses_duplicate_total",
            "Press publishes that were already stored (resends).",
            s.presses_duplicate,
        ),
        (
            "pressline_presses_forwarded_total",
            "Presses acknowledged by the upstream broker.",
            s.presses_forwarded,
        ),
        (
            "pressline_presses_refused_storage_full_total",
            "New presses refused (not acked) because the storage limit was reached.",
            s.presses_refused_storage_full,
        ),
        (
            "pressline_acks_sent_total",
            "Durable acks published to terminals.",
            s.acks_sent,
        ),
        (
            "pressline_heartbeats_received_total",
            "Terminal heartbeats received.",
            s.heartbeats_received,
        ),
        (
            "pressline_storage_errors_total",
            "Commits that failed on a storage error (nothing acked; terminals resend).",
            s.storage_errors,
        ),
        (
            "pressline_mqtt_publishes_refused_total",
            "Publishes refused in closed mode (a terminal outside its own topics).",
            s.publishes_refused,
        ),
    ];
    for (name, help, value) in counters {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name}{{site=\"{site}\"}} {value}");
    }
    let by_reason = [
        (
            "pressline_payloads_rejected_total",
            "Publishes rejected as bad input, by reason.",
            &s.rejected_by_reason,
        ),
        (
            "pressline_mqtt_connections_refused_total",
            "MQTT connections the site broker refused, by reason.",
            &s.connections_refused,
        ),
        (
            "pressline_mqtt_subscriptions_refused_total",
            "MQTT subscriptions the site broker refused, by reason.",
            &s.subscriptions_refused,
        ),
    ];
    for (name, help, counts) in by_reason {
        family(out, name, "counter", help);
        for (reason, n) in counts {
            let _ = writeln!(out, "{name}{{site=\"{site}\",reason=\"{reason}\"}} {n}");
        }
    }
}

/// The store, the backlog upstream and the upstream connection.
fn storage(out: &mut String, site: &str, s: &StatsSnapshot) {
    let gauges = [
        (
            "pressline_presses_stored",
            "Presses in the database.",
            s.presses_stored as f64,
        ),
        (
            "pressline_forward_backlog",
            "Presses stored but not yet acknowledged upstream.",
            s.forward_pending as f64,
        ),
        (
            "pressline_storage_full",
            "1 while the storage limit is reached.",
            s.storage_full as u8 as f64,
        ),
        (
            "pressline_storage_bytes",
            "Size of the database on disk.",
            s.disk_bytes as f64,
        ),
        (
            "pressline_storage_available",
            "0 while the press store is unavailable (a full disk, an I/O error) and being reopened.",
            s.storage_fault.is_none() as u8 as f64,
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help);
        let _ = writeln!(out, "{name}{{site=\"{site}\"}} {value}");
    }
    if let Some(up) = s.upstream_connected {
        let name = "pressline_upstream_connected";
        family(
            out,
            name,
            "gauge",
            "1 while connected to the upstream broker (absent without one).",
        );
        let _ = writeln!(out, "{name}{{site=\"{site}\"}} {}", up as u8);
    }
    if let Some(reason) = s.storage_fault_reason {
        family(
            out,
            "pressline_storage_fault",
            "gauge",
            "1 with the reason while the press store is unavailable.",
        );
        let _ = writeln!(
            out,
            "pressline_storage_fault{{site=\"{site}\",reason=\"{}\"}} 1",
            reason.label()
        );
    }
}

/// Terminals online and offline; open and unacknowledged alerts.
fn terminals_and_alerts(out: &mut String, state: &ApiState) {
    let site = &state.site;
    let monitor = state.registry.monitor();
    let (online, offline) = monitor.terminals().fold((0, 0), |(on, off), t| {
        if t.online {
            (on + 1, off)
        } else {
            (on, off + 1)
        }
    });
    family(
        out,
        "pressline_terminals",
        "gauge",
        "Known terminals by state.",
    );
    let _ = writeln!(
        out,
        "pressline_terminals{{site=\"{site}\",state=\"online\"}} {online}"
    );
    let _ = writeln!(
        out,
        "pressline_terminals{{site=\"{site}\",state=\"offline\"}} {offline}"
    );
    family(
        out,
        "pressline_alerts_open",
        "gauge",
        "Open alerts by kind.",
    );
    for kind in AlertKind::ALL {
        let n = monitor
            .alerts()
            .iter()
            .filter(|a| a.is_open() && a.kind == *kind)
            .count();
        let _ = writeln!(
            out,
            "pressline_alerts_open{{site=\"{site}\",kind=\"{kind}\"}} {n}"
        );
    }
    family(
        out,
        "pressline_alerts_unacknowledged",
        "gauge",
        "Open alerts nobody has acknowledged yet.",
    );
    let waiting = monitor
        .alerts()
        .iter()
        .filter(|a| a.is_open() && a.acknowledged_at.is_none())
        .count();
    let _ = writeln!(
        out,
        "pressline_alerts_unacknowledged{{site=\"{site}\"}} {waiting}"
    );
}

fn notifications(
    out: &mut String,
    site: &str,
    channels: &[crate::alerting::delivery::ChannelStatus],
) {
    let families: [(
        &str,
        &str,
        &str,
        fn(&crate::alerting::delivery::ChannelStatus) -> u64,
    ); 6] = [
        (
            "pressline_notifications_delivered_total",
            "counter",
            "Notification requests a channel's receiver answered 2xx (a digest counts once).",
            |c| c.delivered,
        ),
        (
            "pressline_notification_failures_total",
            "counter",
            "Notification attempts that failed (retried with backoff).",
            |c| c.failed_attempts,
        ),
        (
            "pressline_notifications_dropped_total",
            "counter",
            "Notifications given up after delivery.give_up_after_hours.",
            |c| c.dropped,
        ),
        (
            "pressline_notifications_pending",
            "gauge",
            "Notifications waiting in line for delivery.",
            |c| c.pending,
        ),
        (
            "pressline_notifications_parked",
            "gauge",
            "Notifications a receiver rejected for good (HTTP 400/413/415/422, SMTP 5xx): out of line, retried slowly until given up.",
            |c| c.parked,
        ),
        (
            "pressline_notification_channel_failing",
            "gauge",
            "1 while a channel's last attempt failed.",
            |c| u64::from(c.failing),
        ),
    ];
    for (name, kind, help, value) in families {
        family(out, name, kind, help);
        for c in channels {
            let _ = writeln!(
                out,
                "{name}{{site=\"{site}\",channel=\"{}\",kind=\"{}\"}} {}",
                label(&c.channel),
                c.kind,
                value(c)
            );
        }
    }
}

/// Channel names come from the config file: escaped as label values.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn response(out: &mut String, site: &str, f: &crate::alerting::response::ResponseFigures) {
    use crate::alerting::response::Figures;
    let summary = |out: &mut String,
                   name: &str,
                   zone: &str,
                   count: u64,
                   sum: f64,
                   q50: Option<f64>,
                   q90: Option<f64>| {
        for (q, v) in [("0.5", q50), ("0.9", q90)] {
            if let Some(v) = v {
                let _ = writeln!(
                    out,
                    "{name}{{site=\"{site}\",zone=\"{zone}\",quantile=\"{q}\"}} {v}"
                );
            }
        }
        let _ = writeln!(out, "{name}_sum{{site=\"{site}\",zone=\"{zone}\"}} {sum}");
        let _ = writeln!(
            out,
            "{name}_count{{site=\"{site}\",zone=\"{zone}\"}} {count}"
        );
    };
    let zones: Vec<(&str, &Figures)> = std::iter::once(("all", &f.overall))
        .chain(f.zones.iter().map(|(z, fig)| {
            (
                if z.is_empty() {
                    "unassigned"
                } else {
                    z.as_str()
                },
                fig,
            )
        }))
        .collect();
    family(out, "pressline_alert_ack_seconds", "summary", "Seconds from raised to acknowledged, alerts raised in the last 7 days, by zone (\"all\": every alert).");
    for (zone, fig) in &zones {
        summary(
            out,
            "pressline_alert_ack_seconds",
            zone,
            fig.acknowledged,
            fig.ack_secs_sum,
            fig.ack_median_secs,
            fig.ack_p90_secs,
        );
    }
    family(
        out,
        "pressline_alert_recover_seconds",
        "summary",
        "Seconds from raised to recovered, alerts raised in the last 7 days, by zone.",
    );
    for (zone, fig) in &zones {
        summary(
            out,
            "pressline_alert_recover_seconds",
            zone,
            fig.recovered,
            fig.recover_secs_sum,
            fig.recover_median_secs,
            fig.recover_p90_secs,
        );
    }
}
