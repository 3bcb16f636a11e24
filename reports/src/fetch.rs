//! The grouped figures of a report, read from PostgreSQL.

use std::collections::BTreeMap;

use crate::counts::{fmt_date, Counts, Period};

/// What the database says, grouped.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub time_zones: BTreeMap<String, String>,
    pub zone_names: BTreeMap<(String, String), String>,
    pub sites: BTreeMap<String, Counts>,
    pub previous_sites: BTreeMap<String, Counts>,
    pub zones: BTreeMap<(String, String), Counts>,
    pub previous_zones: BTreeMap<(String, String), Counts>,
    /// (site, ISO weekday 1–7, hour 0–23).
    pub hours: BTreeMap<(String, u8, u8), Counts>,
}

/// Where the figures are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Source {
    /// `press_hours`: presses counted per site, zone, terminal and local
    /// hour, kept by the database as presses are inserted.
    Rollups,
    /// `presses`, every row: the same figures, slower; kept to check the
    /// rollups (within the months the retention keeps).
    Presses,
}

/// The SQL of one source: rows of (keys…, presses per score 1–4), counted
/// presses only, `$1`/`$2` the first and last local day, `$3` the sites
/// (empty: all).
struct Queries {
    /// (site, zone, scores).
    totals: String,
    /// (site, ISO weekday, hour, scores).
    hourly: String,
}

impl Source {
    fn queries(self) -> Queries {
        // Each site's local days [from 00:00, to + 1 day 00:00), compared
        // as wall-clock times in its zone: what a press's local hour is.
        let (from, local, scores, bounds) = match self {
            Source::Rollups => (
                "press_hours p",
                "p.hour",
                "sum(p.very_unhappy)::int8, sum(p.unhappy)::int8, \
                 sum(p.happy)::int8, sum(p.very_happy)::int8",
                // The hour leads the key: only the period is read.
                "",
            ),
            Source::Presses => (
                "presses p LEFT JOIN sites s USING (site)",
                // Plain AT TIME ZONE, not press_zone() (schema version 4):
                // this check also reads databases of earlier versions.
                "(coalesce(p.pressed_at, p.received_at) AT TIME ZONE coalesce(s.time_zone, 'UTC'))",
                "count(*) FILTER (WHERE p.score = 1), count(*) FILTER (WHERE p.score = 2), \
                 count(*) FILTER (WHERE p.score = 3), count(*) FILTER (WHERE p.score = 4)",
                // A day wider in UTC holds every zone's local days.
                "AND coalesce(p.pressed_at, p.received_at) >= ($1::text::date - 1)::timestamp AT TIME ZONE 'UTC' \
                 AND coalesce(p.pressed_at, p.received_at) < ($2::text::date + 2)::timestamp AT TIME ZONE 'UTC'",
            ),
        };
        let zone = match self {
            Source::Rollups => "p.zone",
            Source::Presses => "coalesce(p.zone, '')",
        };
        let filter = format!(
            "FROM {from} WHERE p.counted \
               AND (cardinality($3::text[]) = 0 OR p.site = ANY($3::text[])) \
               AND {local} >= $1::text::date::timestamp \
               AND {local} < ($2::text::date + 1)::timestamp {bounds}"
        );
        Queries {
            totals: format!("SELECT p.site, {zone}, {scores} {filter} GROUP BY 1, 2"),
            // date_part, not extract: a double, not a numeric, per row
            // (a third of the time over a month of press_hours).
            hourly: format!(
                "SELECT p.site, date_part('isodow', {local})::int2, \
                 date_part('hour', {local})::int2, {scores} {filter} GROUP BY 1, 2, 3"
            ),
        }
    }
}

/// Reads the grouped figures for the period, the one before it, and the
/// hour × weekday weeks (`only_sites` empty: every site).
pub async fn fetch(
    client: &tokio_postgres::Client,
    source: Source,
    period: Period,
    weeks: u32,
    only_sites: &[String],
) -> Result<Figures, tokio_postgres::Error> {
    let mut figures = fetch_totals(client, source, period, only_sites).await?;
    fetch_hours(client, source, period, weeks, only_sites, &mut figures).await?;
    Ok(figures)
}

/// The figures without hour × weekday cells: what a ranking needs.
pub async fn fetch_totals(
    client: &tokio_postgres::Client,
    source: Source,
    period: Period,
    only_sites: &[String],
) -> Result<Figures, tokio_postgres::Error> {
    fetch_totals_on([client, client], source, period, only_sites).await
}

/// [`fetch_totals`] with the period and the one before read on two
/// connections, side by side (on one, they run one after the other).
pub async fn fetch_totals_on(
    clients: [&tokio_postgres::Client; 2],
    source: Source,
    period: Period,
    only_sites: &[String],
) -> Result<Figures, tokio_postgres::Error> {
    let [first, second] = clients;
    let queries = source.queries();
    let (names, now, before) = futures_util::future::try_join3(
        names(first),
        period_totals(first, &queries.totals, period, only_sites),
        period_totals(second, &queries.totals, period.previous(), only_sites),
    )
    .await?;
    let (time_zones, zone_names) = names;
    let mut figures = Figures {
        time_zones,
        zone_names,
        ..Figures::default()
    };
    for (rows, sites, zones) in [
        (now, &mut figures.sites, &mut figures.zones),
        (
            before,
            &mut figures.previous_sites,
            &mut figures.previous_zones,
        ),
    ] {
        for row in rows {
            let (site, zone): (String, String) = (row.get(0), row.get(1));
            let c = Counts::from_row(&row, 2);
            sites.entry(site.clone()).or_default().merge(&c);
            zones.entry((site, zone)).or_default().merge(&c);
        }
    }
    Ok(figures)
}

type Names = (BTreeMap<String, String>, BTreeMap<(String, String), String>);

/// Sites' time zones and zones' names.
async fn names(client: &tokio_postgres::Client) -> Result<Names, tokio_postgres::Error> {
    let mut time_zones = BTreeMap::new();
    for row in client
        .query(
            "SELECT site, time_zone FROM sites WHERE time_zone IS NOT NULL",
            &[],
        )
        .await?
    {
        time_zones.insert(row.get(0), row.get(1));
    }
    let mut zone_names = BTreeMap::new();
    for row in client
        .query("SELECT site, zone, name FROM zones", &[])
        .await?
    {
        zone_names.insert((row.get(0), row.get(1)), row.get(2));
    }
    Ok((time_zones, zone_names))
}

async fn period_totals(
    client: &tokio_postgres::Client,
    sql: &str,
    span: Period,
    only_sites: &[String],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    // Compiling these short scans costs more than it saves: with JIT a
    // week's totals over 10M presses' rows take 150 ms, without 40 ms.
    client.batch_execute("SET jit = off").await?;
    client
        .query(
            sql,
            &[&fmt_date(span.from), &fmt_date(span.to), &only_sites],
        )
        .await
}

/// Adds the hour × weekday cells of the `weeks` weeks ending with the
/// period's last day, for `only_sites` (empty: every site).
pub async fn fetch_hours(
    client: &tokio_postgres::Client,
    source: Source,
    period: Period,
    weeks: u32,
    only_sites: &[String],
    figures: &mut Figures,
) -> Result<(), tokio_postgres::Error> {
    let hours_span = Period::ending(period.to, weeks * 7);
    for row in client
        .query(
            &source.queries().hourly,
            &[
                &fmt_date(hours_span.from),
                &fmt_date(hours_span.to),
                &only_sites,
            ],
        )
        .await?
    {
        let (site, weekday, hour): (String, i16, i16) = (row.get(0), row.get(1), row.get(2));
        figures
            .hours
            .entry((site, weekday as u8, hour as u8))
            .or_default()
            .merge(&Counts::from_row(&row, 3));
    }
    Ok(())
}
