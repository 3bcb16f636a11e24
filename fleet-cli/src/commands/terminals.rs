//! `fleet terminals`: every terminal of the selected sites.

use pressline_protocol::upstream::TerminalHealth;
use time::OffsetDateTime;

use super::{gather, list_outcome, Outcome};
use crate::render::{ago, finish, opt, table};
use crate::sites::Site;

pub fn render(rows: &[TerminalHealth], now: OffsetDateTime) -> String {
    if rows.is_empty() {
        return "no terminals have reported yet\n".into();
    }
    let mut t = table(&[
        "SITE",
        "TERMINAL",
        "ONLINE",
        "LAST SEEN",
        "BATTERY",
        "RSSI",
        "FIRMWARE",
        "QUEUE",
        "POWER",
        "ALERTS",
    ]);
    for r in rows {
        t.add_row(vec![
            r.site.clone(),
            r.id.clone(),
            if r.online { "yes".into() } else { "NO".into() },
            ago(&r.last_seen, now),
            opt(r.battery_mv, " mV"),
            opt(r.rssi_dbm, " dBm"),
            r.firmware.clone().unwrap_or_else(|| "-".into()),
            opt(r.queue_depth, ""),
            power(r),
            if r.open_alerts.is_empty() {
                "-".into()
            } else {
                let kinds: Vec<&str> = r.open_alerts.iter().map(|k| k.as_str()).collect();
                kinds.join(",")
            },
        ]);
    }
    finish(t)
}

/// `mains`, or `battery` with the estimated life of each pack.
fn power(r: &TerminalHealth) -> String {
    let Some(energy) = &r.energy else {
        return "-".into();
    };
    if energy.battery_life_days.is_empty() || energy.mode == "mains" {
        return energy.mode.clone();
    }
    let lives: Vec<String> = energy
        .battery_life_days
        .iter()
        .map(|p| format!("{} {} d", p.pack, p.days))
        .collect();
    format!("{} ({})", energy.mode, lives.join(", "))
}

pub fn run(sites: &[Site], json: bool, now: OffsetDateTime) -> anyhow::Result<Outcome> {
    let (rows, warnings) = gather(sites, |gw| gw.terminals());
    list_outcome(&rows, warnings, json, |rows| render(rows, now))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    pub fn sample(
        site: &str,
        id: &str,
        online: bool,
        battery: Option<u16>,
        alerts: &[&str],
    ) -> TerminalHealth {
        TerminalHealth {
            schema: "pressline.health.v1".into(),
            id: id.into(),
            site: site.into(),
            online,
            first_seen: "2026-11-20T08:00:00Z".into(),
            last_seen: if online {
                "2026-11-22T11:59:40Z".into()
            } else {
                "2026-11-22T10:12:00Z".into()
            },
            last_heartbeat: Some("2026-11-22T11:59:40Z".into()),
            boot: Some(3),
            firmware: Some("1.4.2".into()),
            uptime_secs: Some(86_400),
            battery_mv: battery,
            rssi_dbm: Some(-63),
            queue_depth: Some(0),
            queue_capacity: Some(4096),
            dropped_presses: Some(0),
            reset_reason: Some("power_on".into()),
            presses_total: 5120,
            open_alerts: alerts
                .iter()
                .map(|s| pressline_protocol::upstream::AlertKind::parse(s))
                .collect(),
            energy: None,
        }
    }

    #[test]
    fn terminals_table() {
        let now = OffsetDateTime::parse("2026-11-22T12:00:00Z", &Rfc3339).unwrap();
        let rows = vec![
            sample("arena", "north-01", true, Some(3950), &[]),
            sample("arena", "north-02", true, Some(3310), &["low_battery"]),
            sample("arena", "south-01", false, None, &["offline"]),
            TerminalHealth {
                energy: Some(pressline_protocol::upstream::TerminalEnergy {
                    mode: "battery".into(),
                    upload_delay_secs: 60,
                    heartbeat_every_secs: 900,
                    awake_ms: Some(1_200),
                    radio_on_ms: 400_000,
                    wakeups: 18_000,
                    joins: 120,
                    average_ua: Some(1_900),
                    battery_life_days: vec![
                        pressline_protocol::upstream::PackLife {
                            pack: "3 x AA".into(),
                            days: 33,
                        },
                        pressline_protocol::upstream::PackLife {
                            pack: "4 x D".into(),
                            days: 214,
                        },
                    ],
                }),
                ..sample("lobby", "desk-01", true, Some(4400), &[])
            },
        ];
        insta::assert_snapshot!(render(&rows, now));
    }
}
