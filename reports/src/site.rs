//! One site's page beyond the ranking: its index week by week, its
//! unhappiest hours, how fast alerts were acknowledged and recovered, and
//! its terminals' health.

use std::collections::BTreeMap;

use serde::Serialize;
use time::{Date, Duration, OffsetDateTime};

use crate::counts::{fmt_date, round1, Counts, Period};
use crate::fetch::Source;
use crate::ranking::HourCell;

/// One week (Monday to Sunday, the site's local days) of the trend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Week {
    #[serde(serialize_with = "iso")]
    pub from: Date,
    pub presses: u64,
    pub happy_index: Option<f64>,
}

fn iso<S: serde::Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&fmt_date(*d))
}

/// The `weeks` weeks up to the one holding `to` (cut at `to`).
pub fn trend_span(to: Date, weeks: u32) -> Period {
    let monday = to
        .checked_sub(Duration::days(i64::from(
            to.weekday().number_days_from_monday(),
        )))
        .unwrap_or(Date::MIN);
    Period {
        from: monday
            .checked_sub(Duration::weeks(i64::from(weeks.max(1)) - 1))
            .unwrap_or(Date::MIN),
        to,
    }
}

/// Every week of the span, empty ones included, so a chart shows the gap.
pub fn weeks_of(span: Period, counts: &BTreeMap<Date, Counts>) -> Vec<Week> {
    let mut out = Vec::new();
    let mut next = Some(span.from);
    while let Some(from) = next.filter(|f| *f <= span.to) {
        let c = counts.get(&from).copied().unwrap_or_default();
        out.push(Week {
            from,
            presses: c.total(),
            happy_index: c.happy_index().map(round1),
        });
        next = from.checked_add(Duration::weeks(1));
    }
    out
}

/// The index per week over the span of `sites` together (empty: every
/// site): weeks of each site's local days, from `press_hours` or from
/// every press.
pub async fn trend(
    client: &tokio_postgres::Client,
    source: Source,
    sites: &[String],
    span: Period,
) -> Result<Vec<Week>, tokio_postgres::Error> {
    let only = "(cardinality($1::text[]) = 0 OR p.site = ANY($1::text[]))";
    let sql = match source {
        Source::Rollups => format!(
            "SELECT date_trunc('week', p.hour)::date, sum(p.very_unhappy)::int8, sum(p.unhappy)::int8, \
                    sum(p.happy)::int8, sum(p.very_happy)::int8 \
             FROM press_hours p WHERE {only} AND p.counted \
               AND p.hour >= $2::text::date::timestamp AND p.hour < ($3::text::date + 1)::timestamp \
             GROUP BY 1"
        ),
        Source::Presses => {
            let at = "coalesce(p.pressed_at, p.received_at)";
            let local = format!("({at} AT TIME ZONE press_zone(s.time_zone))");
            format!(
                "SELECT date_trunc('week', {local})::date, \
                        count(*) FILTER (WHERE p.score = 1), count(*) FILTER (WHERE p.score = 2), \
                        count(*) FILTER (WHERE p.score = 3), count(*) FILTER (WHERE p.score = 4) \
                 FROM presses p LEFT JOIN sites s USING (site) WHERE {only} AND p.counted \
                   AND {at} >= ($2::text::date - 1)::timestamp AT TIME ZONE 'UTC' \
                   AND {at} < ($3::text::date + 2)::timestamp AT TIME ZONE 'UTC' \
                   AND {local} >= $2::text::date::timestamp AND {local} < ($3::text::date + 1)::timestamp \
                 GROUP BY 1"
            )
        }
    };
    let rows = client
        .query(&sql, &[&sites, &fmt_date(span.from), &fmt_date(span.to)])
        .await?;
    let counts = rows
        .iter()
        .map(|r| (r.get::<_, Date>(0), Counts::from_row(r, 1)))
        .collect();
    Ok(weeks_of(span, &counts))
}

/// The hour × weekday cells with the lowest index among those with at
/// least `min_presses` presses (fewer say little), lowest first.
pub fn unhappiest_hours(cells: &[HourCell], min_presses: u64, n: usize) -> Vec<&HourCell> {
    let mut sure: Vec<&HourCell> = cells
        .iter()
        .filter(|c| c.presses >= min_presses.max(1) && c.happy_index.is_some())
        .collect();
    sure.sort_by(|a, b| {
        a.happy_index
            .unwrap_or(0.0)
            .total_cmp(&b.happy_index.unwrap_or(0.0))
            .then(b.presses.cmp(&a.presses))
    });
    sure.truncate(n);
    sure
}

/// One alert as the response figures need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertTimes {
    /// '' for an alert of no zone (a terminal's).
    pub zone: String,
    /// Local hour it was raised (0–23).
    pub hour: u8,
    pub ack_secs: Option<i64>,
    pub recover_secs: Option<i64>,
}

/// How a group of alerts was answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Response {
    pub alerts: u64,
    pub acknowledged: u64,
    pub recovered: u64,
    /// Median time to acknowledge, of those acknowledged.
    pub median_ack_secs: Option<i64>,
    /// Median time to recover, of those recovered.
    pub median_recover_secs: Option<i64>,
}

fn median(mut v: Vec<i64>) -> Option<i64> {
    v.sort_unstable();
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2),
    }
}

/// How the alerts were answered, all together.
pub fn response<'a>(alerts: impl Iterator<Item = &'a AlertTimes>) -> Response {
    let (mut n, mut acks, mut recoveries) = (0, Vec::new(), Vec::new());
    for a in alerts {
        n += 1;
        acks.extend(a.ack_secs.map(|s| s.max(0)));
        recoveries.extend(a.recover_secs.map(|s| s.max(0)));
    }
    Response {
        alerts: n,
        acknowledged: acks.len() as u64,
        recovered: recoveries.len() as u64,
        median_ack_secs: median(acks),
        median_recover_secs: median(recoveries),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneResponse {
    pub zone: String,
    #[serde(flatten)]
    pub response: Response,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HourResponse {
    pub hour: u8,
    #[serde(flatten)]
    pub response: Response,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AlertResponse {
    pub by_zone: Vec<ZoneResponse>,
    pub by_hour: Vec<HourResponse>,
}

/// Response per zone and per local hour raised. Pure.
pub fn alert_response(alerts: &[AlertTimes]) -> AlertResponse {
    let zones: std::collections::BTreeSet<&str> = alerts.iter().map(|a| a.zone.as_str()).collect();
    let hours: std::collections::BTreeSet<u8> = alerts.iter().map(|a| a.hour).collect();
    AlertResponse {
        by_zone: zones
            .into_iter()
            .map(|z| ZoneResponse {
                zone: z.to_string(),
                response: response(alerts.iter().filter(|a| a.zone == z)),
            })
            .collect(),
        by_hour: hours
            .into_iter()
            .map(|h| HourResponse {
                hour: h,
                response: response(alerts.iter().filter(|a| a.hour == h)),
            })
            .collect(),
    }
}

/// The site's alerts raised in the period (its local days).
pub async fn alerts(
    client: &tokio_postgres::Client,
    site: &str,
    period: Period,
) -> Result<Vec<AlertTimes>, tokio_postgres::Error> {
    let mut by_site = alerts_by_site(client, &[site.to_string()], period).await?;
    Ok(by_site.remove(site).unwrap_or_default())
}

/// The alerts of `sites` (empty: every site) raised in the period, each in
/// its site's local days, per site.
pub async fn alerts_by_site(
    client: &tokio_postgres::Client,
    sites: &[String],
    period: Period,
) -> Result<BTreeMap<String, Vec<AlertTimes>>, tokio_postgres::Error> {
    // press_zone(): a zone this database does not know is UTC, as in
    // press_hours, rather than an error.
    let local = "(a.raised_at AT TIME ZONE press_zone(s.time_zone))";
    let rows = client
        .query(
            &format!(
                "SELECT coalesce(a.zone, ''), date_part('hour', {local})::int2, \
                        extract(epoch FROM a.acknowledged_at - a.raised_at)::int8, \
                        extract(epoch FROM a.cleared_at - a.raised_at)::int8, a.site \
                 FROM alerts a LEFT JOIN sites s USING (site) \
                 WHERE (cardinality($1::text[]) = 0 OR a.site = ANY($1::text[])) \
                   AND a.raised_at >= ($2::text::date - 1)::timestamp AT TIME ZONE 'UTC' \
                   AND a.raised_at < ($3::text::date + 2)::timestamp AT TIME ZONE 'UTC' \
                   AND {local} >= $2::text::date::timestamp \
                   AND {local} < ($3::text::date + 1)::timestamp"
            ),
            &[&sites, &fmt_date(period.from), &fmt_date(period.to)],
        )
        .await?;
    let mut out: BTreeMap<String, Vec<AlertTimes>> = BTreeMap::new();
    for r in &rows {
        out.entry(r.get(4)).or_default().push(AlertTimes {
            zone: r.get(0),
            hour: r.get::<_, i16>(1).clamp(0, 23) as u8,
            ack_secs: r.get(2),
            recover_secs: r.get(3),
        });
    }
    Ok(out)
}

/// A terminal's latest health document, as the page lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TerminalHealth {
    pub terminal: String,
    pub online: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    pub firmware: Option<String>,
    pub battery_mv: Option<i32>,
    pub rssi_dbm: Option<i32>,
}

/// The site's terminals, offline ones first.
pub async fn health(
    client: &tokio_postgres::Client,
    site: &str,
) -> Result<Vec<TerminalHealth>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT terminal, online, last_seen, firmware, battery_mv, rssi_dbm \
             FROM terminal_health WHERE site = $1 ORDER BY online, terminal",
            &[&site],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TerminalHealth {
            terminal: r.get(0),
            online: r.get(1),
            last_seen: r.get(2),
            firmware: r.get(3),
            battery_mv: r.get(4),
            rssi_dbm: r.get(5),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn the_trend_ends_with_the_week_holding_the_last_day_and_keeps_empty_weeks() {
        // 2026-03-29 is a Sunday: its week began on Monday 23rd.
        let span = trend_span(date!(2026 - 03 - 29), 3);
        assert_eq!(span.from, date!(2026 - 03 - 09));
        let mut counts = BTreeMap::new();
        counts.insert(date!(2026 - 03 - 23), Counts([1, 0, 0, 1]));
        let weeks = weeks_of(span, &counts);
        assert_eq!(weeks.len(), 3);
        assert_eq!((weeks[0].presses, weeks[0].happy_index), (0, None));
        assert_eq!((weeks[2].presses, weeks[2].happy_index), (2, Some(50.0)));
    }

    #[test]
    fn unhappiest_hours_leave_out_cells_with_too_few_presses() {
        let cell = |hour, presses, index| HourCell {
            weekday: "sat",
            hour,
            presses,
            happy_index: Some(index),
        };
        let cells = [cell(12, 40, 60.0), cell(13, 2, 0.0), cell(14, 30, 20.0)];
        let worst: Vec<u8> = unhappiest_hours(&cells, 10, 5)
            .iter()
            .map(|c| c.hour)
            .collect();
        assert_eq!(worst, [14, 12]);
    }

    #[test]
    fn alert_response_takes_medians_of_the_alerts_that_were_answered() {
        let a = |zone: &str, hour, ack, recover| AlertTimes {
            zone: zone.into(),
            hour,
            ack_secs: ack,
            recover_secs: recover,
        };
        let alerts = [
            a("food", 12, Some(60), Some(600)),
            a("food", 12, Some(180), None),
            a("food", 19, None, Some(300)),
            a("bar", 19, Some(30), Some(90)),
        ];
        let r = alert_response(&alerts);
        let food = &r
            .by_zone
            .iter()
            .find(|z| z.zone == "food")
            .unwrap()
            .response;
        assert_eq!((food.alerts, food.acknowledged, food.recovered), (3, 2, 2));
        assert_eq!(food.median_ack_secs, Some(120));
        assert_eq!(food.median_recover_secs, Some(450));
        let evening = &r.by_hour.iter().find(|h| h.hour == 19).unwrap().response;
        assert_eq!((evening.alerts, evening.median_ack_secs), (2, Some(30)));
    }
}
