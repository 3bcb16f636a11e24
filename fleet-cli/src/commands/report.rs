//! `fleet report`: satisfaction across sites, from the central PostgreSQL
//! (filled by `pressline-central`).
//!
//! - **Happy Index**: the mean counted press on a 0–100 scale (very
//!   unhappy 0, unhappy 33.3, happy 66.7, very happy 100). Presses the
//!   gateway's misuse filter did not count are left out.
//! - **Ranking**: sites ordered by their index shrunk toward the network's
//!   (`(n·index + k·network) / (n + k)`, `k` = `--prior-presses`), so a
//!   site with a handful of presses cannot top or bottom the table by luck.
//! - **Hour × weekday** over `--weeks`, each site in its own IANA time
//!   zone (daylight saving included; PostgreSQL's `AT TIME ZONE`).
//! - **Change**: index points against the period of the same length just
//!   before.
//!
//! Periods are whole local days at each site: `--to` (inclusive) and
//! `--days` back from it. A press counts at `pressed_at`, or `received_at`
//! when the terminal could not tell.
//!
//! Fetching is I/O ([`fetch`]); everything after is pure ([`build`]).

use std::collections::BTreeMap;

use serde::Serialize;
use time::{Date, Duration};

use super::{exit, Outcome};
use crate::render::{finish, table};

/// Presses per score (1–4).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts([u64; 4]);

impl Counts {
    pub fn add(&mut self, score: i16, n: u64) {
        if (1..=4).contains(&score) {
            self.0[(score - 1) as usize] += n;
        }
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// 0–100; `None` without presses.
    pub fn happy_index(&self) -> Option<f64> {
        let n = self.total();
        (n > 0).then(|| {
            let points: u64 = self.0.iter().enumerate().map(|(i, c)| i as u64 * c).sum();
            points as f64 * 100.0 / 3.0 / n as f64
        })
    }
    fn merge(&mut self, other: &Counts) {
        for i in 0..4 {
            self.0[i] += other.0[i];
        }
    }
}

/// Days `[from, to]`, inclusive, in each site's own time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Period {
    #[serde(serialize_with = "iso_date")]
    pub from: Date,
    #[serde(serialize_with = "iso_date")]
    pub to: Date,
}

fn iso_date<S: serde::Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&fmt_date(*d))
}

fn fmt_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

impl Period {
    pub fn ending(to: Date, days: u32) -> Period {
        Period {
            from: to - Duration::days(i64::from(days.max(1)) - 1),
            to,
        }
    }
    pub fn days(&self) -> i64 {
        (self.to - self.from).whole_days() + 1
    }
    pub fn previous(&self) -> Period {
        Period {
            from: self.from - Duration::days(self.days()),
            to: self.from - Duration::days(1),
        }
    }
}

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

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub period: Period,
    pub previous: Period,
    pub prior_presses: u32,
    pub network: Row,
    pub sites: Vec<SiteRow>,
    pub zones: Vec<ZoneRow>,
    pub hours: Hours,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub presses: u64,
    pub happy_index: Option<f64>,
    pub previous_presses: u64,
    pub previous_happy_index: Option<f64>,
    /// Index points against the previous period.
    pub change: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct SiteRow {
    pub rank: usize,
    pub site: String,
    pub time_zone: String,
    /// The index shrunk toward the network's, which orders the ranking.
    pub ranking_index: Option<f64>,
    #[serde(flatten)]
    pub figures: Row,
}

#[derive(Debug, Serialize)]
pub struct ZoneRow {
    pub site: String,
    pub zone: String,
    pub name: String,
    #[serde(flatten)]
    pub figures: Row,
}

#[derive(Debug, Serialize)]
pub struct Hours {
    pub weeks: u32,
    pub period: Period,
    pub sites: Vec<SiteHours>,
}

#[derive(Debug, Serialize)]
pub struct SiteHours {
    pub site: String,
    pub time_zone: String,
    pub cells: Vec<HourCell>,
}

#[derive(Debug, Serialize)]
pub struct HourCell {
    pub weekday: &'static str,
    pub hour: u8,
    pub presses: u64,
    pub happy_index: Option<f64>,
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
/// Zone id of presses from terminals in no zone.
const NO_ZONE: &str = "";

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn row(now: Counts, before: Counts) -> Row {
    let (a, b) = (now.happy_index(), before.happy_index());
    Row {
        presses: now.total(),
        happy_index: a.map(round1),
        previous_presses: before.total(),
        previous_happy_index: b.map(round1),
        change: a.zip(b).map(|(a, b)| round1(a - b)),
    }
}

/// The report from grouped figures. Pure.
pub fn build(figures: &Figures, period: Period, weeks: u32, prior_presses: u32) -> Report {
    let mut network = Counts::default();
    let mut previous_network = Counts::default();
    figures.sites.values().for_each(|c| network.merge(c));
    figures
        .previous_sites
        .values()
        .for_each(|c| previous_network.merge(c));
    let network_index = network.happy_index();
    let tz = |site: &str| {
        figures
            .time_zones
            .get(site)
            .cloned()
            .unwrap_or_else(|| "UTC".into())
    };

    let names: std::collections::BTreeSet<&String> = figures
        .sites
        .keys()
        .chain(figures.previous_sites.keys())
        .collect();
    let k = f64::from(prior_presses);
    let mut sites: Vec<SiteRow> = names
        .into_iter()
        .map(|site| {
            let now = figures.sites.get(site).copied().unwrap_or_default();
            let before = figures
                .previous_sites
                .get(site)
                .copied()
                .unwrap_or_default();
            let n = now.total() as f64;
            let ranking_index = match (now.happy_index(), network_index) {
                (Some(x), Some(m)) => Some((n * x + k * m) / (n + k)),
                _ => None,
            };
            SiteRow {
                rank: 0,
                site: site.clone(),
                time_zone: tz(site),
                ranking_index,
                figures: row(now, before),
            }
        })
        .collect();
    // Best first; sites without presses this period last, by name.
    sites.sort_by(|a, b| match (a.ranking_index, b.ranking_index) {
        (Some(x), Some(y)) => y.total_cmp(&x).then_with(|| a.site.cmp(&b.site)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.site.cmp(&b.site),
    });
    for (i, s) in sites.iter_mut().enumerate() {
        s.rank = i + 1;
        s.ranking_index = s.ranking_index.map(round1);
    }

    let zone_keys: std::collections::BTreeSet<&(String, String)> = figures
        .zones
        .keys()
        .chain(figures.previous_zones.keys())
        .collect();
    let zones = zone_keys
        .into_iter()
        .map(|key| ZoneRow {
            site: key.0.clone(),
            zone: key.1.clone(),
            name: if key.1 == NO_ZONE {
                "Unassigned terminals".into()
            } else {
                figures
                    .zone_names
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| key.1.clone())
            },
            figures: row(
                figures.zones.get(key).copied().unwrap_or_default(),
                figures.previous_zones.get(key).copied().unwrap_or_default(),
            ),
        })
        .collect();

    let mut by_site: BTreeMap<&str, Vec<HourCell>> = BTreeMap::new();
    for ((site, weekday, hour), c) in &figures.hours {
        by_site.entry(site).or_default().push(HourCell {
            weekday: WEEKDAYS[(weekday.clamp(&1, &7) - 1) as usize],
            hour: *hour,
            presses: c.total(),
            happy_index: c.happy_index().map(round1),
        });
    }
    Report {
        schema: "pressline.report.v1",
        period,
        previous: period.previous(),
        prior_presses,
        network: row(network, previous_network),
        sites,
        zones,
        hours: Hours {
            weeks,
            period: Period::ending(period.to, weeks * 7),
            sites: by_site
                .into_iter()
                .map(|(site, cells)| SiteHours {
                    site: site.to_string(),
                    time_zone: tz(site),
                    cells,
                })
                .collect(),
        },
    }
}

/// Where the figures are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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

/// Presses per score from a row's four columns starting at `first`.
fn counts(row: &postgres::Row, first: usize) -> Counts {
    let mut c = Counts::default();
    for score in 1..=4i16 {
        let n: i64 = row.get(first + score as usize - 1);
        c.add(score, n.max(0) as u64);
    }
    c
}

/// Reads the grouped figures for the period, the one before it, and the
/// hour × weekday weeks.
pub fn fetch(
    client: &mut postgres::Client,
    source: Source,
    period: Period,
    weeks: u32,
    only_sites: &[String],
) -> Result<Figures, postgres::Error> {
    // Compiling these short scans costs more than it saves: with JIT a
    // week's totals over 10M presses' rows take 150 ms, without 40 ms.
    client.batch_execute("SET jit = off")?;
    let mut figures = Figures::default();
    for row in client.query(
        "SELECT site, time_zone FROM sites WHERE time_zone IS NOT NULL",
        &[],
    )? {
        figures.time_zones.insert(row.get(0), row.get(1));
    }
    for row in client.query("SELECT site, zone, name FROM zones", &[])? {
        figures
            .zone_names
            .insert((row.get(0), row.get(1)), row.get(2));
    }
    let queries = source.queries();
    for (span, sites, zones) in [
        (period, &mut figures.sites, &mut figures.zones),
        (
            period.previous(),
            &mut figures.previous_sites,
            &mut figures.previous_zones,
        ),
    ] {
        let rows = client.query(
            &queries.totals,
            &[&fmt_date(span.from), &fmt_date(span.to), &only_sites],
        )?;
        for row in rows {
            let (site, zone): (String, String) = (row.get(0), row.get(1));
            let c = counts(&row, 2);
            sites.entry(site.clone()).or_default().merge(&c);
            zones.entry((site, zone)).or_default().merge(&c);
        }
    }
    let hours_span = Period::ending(period.to, weeks * 7);
    for row in client.query(
        &queries.hourly,
        &[
            &fmt_date(hours_span.from),
            &fmt_date(hours_span.to),
            &only_sites,
        ],
    )? {
        let (site, weekday, hour): (String, i16, i16) = (row.get(0), row.get(1), row.get(2));
        figures
            .hours
            .entry((site, weekday as u8, hour as u8))
            .or_default()
            .merge(&counts(&row, 3));
    }
    Ok(figures)
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn change(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:+.1}"))
}

/// The human rendering.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "Happy Index {} – {} (each site's local days); change against {} – {}\n\
         Network: {} presses, index {} ({})\n\n",
        fmt_date(report.period.from),
        fmt_date(report.period.to),
        fmt_date(report.previous.from),
        fmt_date(report.previous.to),
        report.network.presses,
        cell(report.network.happy_index),
        change(report.network.change),
    );
    if report.sites.is_empty() {
        out.push_str("no presses in this period or the one before\n");
        return out;
    }
    let mut t = table(&[
        "RANK",
        "SITE",
        "PRESSES",
        "INDEX",
        "RANKED BY",
        "CHANGE",
        "TIME ZONE",
    ]);
    for s in &report.sites {
        t.add_row(vec![
            s.rank.to_string(),
            s.site.clone(),
            s.figures.presses.to_string(),
            cell(s.figures.happy_index),
            cell(s.ranking_index),
            change(s.figures.change),
            s.time_zone.clone(),
        ]);
    }
    out.push_str(&finish(t));
    out.push_str(&format!(
        "RANKED BY: the index shrunk toward the network's by {} presses' weight\n\n",
        report.prior_presses
    ));
    let mut t = table(&["SITE", "ZONE", "PRESSES", "INDEX", "CHANGE"]);
    for z in &report.zones {
        t.add_row(vec![
            z.site.clone(),
            z.name.clone(),
            z.figures.presses.to_string(),
            cell(z.figures.happy_index),
            change(z.figures.change),
        ]);
    }
    out.push_str(&finish(t));
    for site in &report.hours.sites {
        out.push_str(&format!(
            "\n{}: Happy Index by hour, {} weeks to {} ({})\n",
            site.site,
            report.hours.weeks,
            fmt_date(report.hours.period.to),
            site.time_zone
        ));
        let hours: Vec<u8> = {
            let lo = site.cells.iter().map(|c| c.hour).min().unwrap_or(0);
            let hi = site.cells.iter().map(|c| c.hour).max().unwrap_or(23);
            (lo..=hi).collect()
        };
        let mut header = vec!["".to_string()];
        header.extend(hours.iter().map(|h| format!("{h:02}")));
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut t = table(&header);
        for (i, day) in WEEKDAYS.iter().enumerate() {
            let mut cells = vec![day.to_string()];
            for h in &hours {
                cells.push(
                    site.cells
                        .iter()
                        .find(|c| c.weekday == *day && c.hour == *h)
                        .and_then(|c| c.happy_index)
                        .map_or_else(|| ".".into(), |v| format!("{v:.0}")),
                );
            }
            let _ = i;
            t.add_row(cells);
        }
        out.push_str(&finish(t));
    }
    out
}

/// One long table (a `section` column), for spreadsheets.
pub fn csv(report: &Report) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "section",
        "rank",
        "site",
        "zone",
        "name",
        "weekday",
        "hour",
        "presses",
        "happy_index",
        "ranking_index",
        "previous_presses",
        "previous_happy_index",
        "change",
    ])?;
    let num = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.1}"));
    let figures = |r: &Row| [r.presses.to_string(), num(r.happy_index)];
    let before = |r: &Row| {
        [
            r.previous_presses.to_string(),
            num(r.previous_happy_index),
            num(r.change),
        ]
    };
    let n = &report.network;
    let [p, i] = figures(n);
    let [pp, pi, c] = before(n);
    w.write_record(["network", "", "", "", "", "", "", &p, &i, "", &pp, &pi, &c])?;
    for s in &report.sites {
        let [p, i] = figures(&s.figures);
        let [pp, pi, c] = before(&s.figures);
        w.write_record([
            "site",
            &s.rank.to_string(),
            &s.site,
            "",
            "",
            "",
            "",
            &p,
            &i,
            &num(s.ranking_index),
            &pp,
            &pi,
            &c,
        ])?;
    }
    for z in &report.zones {
        let [p, i] = figures(&z.figures);
        let [pp, pi, c] = before(&z.figures);
        w.write_record([
            "zone", "", &z.site, &z.zone, &z.name, "", "", &p, &i, "", &pp, &pi, &c,
        ])?;
    }
    for s in &report.hours.sites {
        for c in &s.cells {
            w.write_record([
                "hour",
                "",
                &s.site,
                "",
                "",
                c.weekday,
                &c.hour.to_string(),
                &c.presses.to_string(),
                &num(c.happy_index),
                "",
                "",
                "",
                "",
            ])?;
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// How to print the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Csv,
}

pub struct ReportArgs<'a> {
    pub postgres: &'a str,
    pub postgres_ca: Option<&'a std::path::Path>,
    pub to: Date,
    pub days: u32,
    pub weeks: u32,
    pub prior_presses: u32,
    pub sites: &'a [String],
    pub format: Format,
    pub source: Source,
}

pub fn run(args: ReportArgs<'_>) -> anyhow::Result<Outcome> {
    let tls = crate::tls::postgres_tls(args.postgres_ca)?;
    let mut client = postgres::Client::connect(args.postgres, tls).map_err(|e| {
        let cause = std::error::Error::source(&e).map_or_else(String::new, |s| format!(": {s}"));
        anyhow::anyhow!(
            "cannot connect to the central PostgreSQL: {e}{cause}\n\
             hint: --postgres (or PRESSLINE_POSTGRES) takes the URL pressline-central writes to, \
             e.g. postgres://reader@db.example:5432/pressline?sslmode=require; \
             --postgres-ca trusts a private CA"
        )
    })?;
    let period = Period::ending(args.to, args.days);
    let figures = fetch(
        &mut client,
        args.source,
        period,
        args.weeks.max(1),
        args.sites,
    )
    .map_err(|e| {
        let detail = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string());
        anyhow::anyhow!(
            "cannot read the report's figures: {detail}\n\
             hint: the schema is created by `pressline-central migrate` (or its first run)"
        )
    })?;
    let report = build(&figures, period, args.weeks.max(1), args.prior_presses);
    let stdout = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Csv => csv(&report)?,
        Format::Human => render(&report),
    };
    Ok(Outcome {
        stdout,
        warnings: vec![],
        code: exit::OK,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn counts(c: [u64; 4]) -> Counts {
        Counts(c)
    }

    #[test]
    fn the_happy_index_weighs_the_four_faces_evenly_from_0_to_100() {
        assert_eq!(counts([1, 0, 0, 0]).happy_index(), Some(0.0));
        assert_eq!(counts([0, 0, 0, 5]).happy_index(), Some(100.0));
        // (0 + 1 + 2 + 3) / 4 / 3 × 100
        assert_eq!(counts([1, 1, 1, 1]).happy_index(), Some(50.0));
        assert_eq!(counts([0, 0, 0, 0]).happy_index(), None);
    }

    #[test]
    fn periods_are_whole_days_and_the_previous_one_is_as_long() {
        let p = Period::ending(date!(2026 - 11 - 29), 7);
        assert_eq!((p.from, p.days()), (date!(2026 - 11 - 23), 7));
        let b = p.previous();
        assert_eq!(
            (b.from, b.to),
            (date!(2026 - 11 - 16), date!(2026 - 11 - 22))
        );
    }

    #[test]
    fn a_site_with_few_presses_is_shrunk_toward_the_network() {
        let mut f = Figures::default();
        // Big: 1000 presses at 75; mid: 1000 at 43.3; tiny: 2, both very
        // happy (100), which alone would top the table.
        f.sites.insert("big".into(), counts([50, 150, 300, 500]));
        f.sites.insert("mid".into(), counts([200, 400, 300, 100]));
        f.sites.insert("tiny".into(), counts([0, 0, 0, 2]));
        f.previous_sites
            .insert("big".into(), counts([100, 200, 300, 400]));
        let r = build(&f, Period::ending(date!(2026 - 11 - 29), 7), 4, 50);
        let order: Vec<&str> = r.sites.iter().map(|s| s.site.as_str()).collect();
        assert_eq!(order, ["big", "tiny", "mid"]);
        assert_eq!(r.sites[0].figures.happy_index, Some(75.0));
        assert_eq!(r.sites[0].figures.change, Some(8.3));
        let tiny = &r.sites[1];
        assert_eq!(tiny.figures.happy_index, Some(100.0));
        // Network points: big 150+600+1500, mid 400+600+300, tiny 6.
        let network = (2250.0 + 1300.0 + 6.0) / 2002.0 / 3.0 * 100.0;
        let expected = (2.0 * 100.0 + 50.0 * network) / 52.0;
        assert_eq!(tiny.ranking_index, Some(round1(expected)));
        assert_eq!(tiny.figures.change, None);
    }

    #[test]
    fn report_rendering() {
        let mut f = Figures::default();
        f.time_zones.insert("arena".into(), "Europe/London".into());
        f.zone_names
            .insert(("arena".into(), "food".into()), "Food court".into());
        f.sites.insert("arena".into(), counts([10, 20, 30, 40]));
        f.sites.insert("dock".into(), counts([5, 5, 0, 0]));
        f.previous_sites
            .insert("arena".into(), counts([20, 20, 30, 30]));
        f.zones
            .insert(("arena".into(), "food".into()), counts([10, 10, 10, 10]));
        f.zones
            .insert(("arena".into(), "".into()), counts([0, 10, 20, 30]));
        f.zones
            .insert(("dock".into(), "".into()), counts([5, 5, 0, 0]));
        f.hours
            .insert(("arena".into(), 6, 12), counts([1, 1, 2, 4]));
        f.hours
            .insert(("arena".into(), 6, 14), counts([4, 0, 0, 0]));
        let r = build(&f, Period::ending(date!(2026 - 11 - 29), 7), 4, 50);
        insta::assert_snapshot!(render(&r));
        insta::assert_snapshot!(csv(&r).unwrap());
    }
}
