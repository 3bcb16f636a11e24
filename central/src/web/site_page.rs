//! A site's page (`/sites/{site}`): its rank, zones, index per week over the
//! last year, hour × weekday map in its own time zone, unhappiest hours,
//! how fast its alerts were answered, and its terminals' health.

use axum::extract::{Path, Query, State};
use axum::response::{Html, Response};
use pressline_reports::export::text_cell;
use pressline_reports::ranking::SiteHours;
use pressline_reports::site::{self, AlertResponse, Response as Answered, TerminalHealth, Week};
use pressline_reports::{build, fetch_hours, fetch_totals, fetch_totals_on, fmt_date, Report};

use super::charts;
use super::filters::{encode, FilterQuery, Filters};
use super::html::{change, duration, escape, filter_form, frame, index};
use super::overview::filters;
use super::{csv_response, PageError, Web};

/// Weeks of the trend chart: a year.
pub const TREND_WEEKS: u32 = 52;
/// Hour cells with fewer presses are not called unhappy.
const UNHAPPY_HOUR_MIN_PRESSES: u64 = 10;

/// Everything the page shows.
pub struct SitePage {
    pub site: String,
    /// Its IANA zone as the database knows it (UTC when none).
    pub time_zone: String,
    pub report: Report,
    pub trend: Vec<Week>,
    pub alerts: AlertResponse,
    pub health: Vec<TerminalHealth>,
}

/// The site's figures; the ranking is the whole network's, so its rank
/// and "ranked by" are those of the overview and `fleet report`.
pub async fn load(web: &Web, site: &str, f: &Filters) -> Result<SitePage, PageError> {
    let period = f.period();
    let only = [site.to_string()];
    // The network's ranking on two connections, the site's own figures on
    // a third, side by side.
    let ranking = async {
        let (a, b) = (web.reader.client().await?, web.reader.client().await?);
        Ok::<_, PageError>(fetch_totals_on([&a, &b], f.source, period, &[]).await?)
    };
    let own = async {
        let client = web.reader.client().await?;
        let mut hours = pressline_reports::Figures::default();
        fetch_hours(&client, f.source, period, f.weeks, &only, &mut hours).await?;
        let span = site::trend_span(f.to, TREND_WEEKS);
        let trend = site::trend(&client, f.source, &only, span).await?;
        let alerts = site::alert_response(&site::alerts(&client, site, period).await?);
        let health = site::health(&client, site).await?;
        let listed = client
            .query_opt("SELECT 1 FROM sites WHERE site = $1", &[&site])
            .await?
            .is_some();
        Ok::<_, PageError>((hours.hours, trend, alerts, health, listed))
    };
    let (mut figures, (hours, trend, alerts, health, listed)) =
        futures_util::future::try_join(ranking, own).await?;
    let known =
        listed || figures.sites.contains_key(site) || figures.previous_sites.contains_key(site);
    if !known {
        return Err(PageError::NotFound(format!("No site is called {site:?}.")));
    }
    figures.hours = hours;
    let report = build(&figures, period, f.weeks, f.prior_presses);
    let time_zone = figures
        .time_zones
        .get(site)
        .cloned()
        .unwrap_or_else(|| "UTC".into());
    Ok(SitePage {
        site: site.to_string(),
        time_zone,
        report,
        trend,
        alerts,
        health,
    })
}

pub async fn page(
    State(web): State<Web>,
    Path(site): Path<String>,
    Query(q): Query<FilterQuery>,
) -> Result<Html<String>, PageError> {
    let f = filters(&q)?;
    let page = load(&web, &site, &f).await?;
    Ok(Html(render(&page, &f)))
}

fn zone_name(report: &Report, site: &str, zone: &str) -> String {
    if zone.is_empty() {
        return "Unassigned terminals".into();
    }
    report
        .zones
        .iter()
        .find(|z| z.site == site && z.zone == zone)
        .map_or_else(|| zone.to_string(), |z| z.name.clone())
}

fn answered_cells(r: &Answered) -> String {
    format!(
        "<td data-field=\"alerts\">{}</td><td data-field=\"acknowledged\">{}</td><td>{}</td><td>{}</td><td>{}</td>",
        r.alerts,
        r.acknowledged,
        duration(r.median_ack_secs),
        r.recovered,
        duration(r.median_recover_secs)
    )
}

const ANSWERED_HEAD: &str =
    "<th>Alerts</th><th>Acknowledged</th><th>Median to acknowledge</th><th>Recovered</th><th>Median to recover</th>";

fn header(page: &SitePage, f: &Filters) -> String {
    let r = &page.report;
    let row = r.sites.iter().find(|s| s.site == page.site);
    let tz = page.time_zone.as_str();
    let (rank, presses, idx, chg, ranked) = match row {
        Some(s) => (
            format!("{} of {}", s.rank, r.sites.len()),
            s.figures.presses,
            index(s.figures.happy_index),
            change(s.figures.change),
            index(s.ranking_index),
        ),
        None => ("–".into(), 0, index(None), change(None), index(None)),
    };
    format!(
        "<h1>{site}</h1><p class=\"muted\">{from} – {to}, local days in {tz}</p>{form}\
         <div class=\"cards\" id=\"site\" data-site=\"{site}\">\
         <div class=\"card\"><h2>Happy Index</h2><div class=\"figure\" data-field=\"happy_index\">{idx}</div>\
         <div class=\"muted\"><span data-field=\"change\">{chg}</span> against the {days} days before</div></div>\
         <div class=\"card\"><h2>Presses</h2><div class=\"figure\" data-field=\"presses\">{presses}</div></div>\
         <div class=\"card\"><h2>Rank</h2><div class=\"figure\" data-field=\"rank\">{rank}</div>\
         <div class=\"muted\">ranked by <span data-field=\"ranking_index\">{ranked}</span></div></div></div>",
        site = escape(&page.site),
        from = fmt_date(r.period.from),
        to = fmt_date(r.period.to),
        tz = escape(tz),
        form = filter_form(&format!("/sites/{}", encode(&page.site)), f, ""),
        days = r.period.days(),
    )
}

fn zones(page: &SitePage, f: &Filters) -> String {
    let mut out = String::from(
        "<div class=\"card wide\"><h2>Zones</h2><div class=\"scroll\"><table id=\"zones\"><thead><tr>\
         <th class=\"text\">Zone</th><th>Presses</th><th>Index</th><th>Change</th></tr></thead><tbody>",
    );
    for z in page.report.zones.iter().filter(|z| z.site == page.site) {
        out.push_str(&format!(
            "<tr data-zone=\"{}\"><td class=\"text\">{}</td><td data-field=\"presses\">{}</td>\
             <td data-field=\"happy_index\">{}</td><td data-field=\"change\">{}</td></tr>",
            escape(&z.zone),
            escape(&z.name),
            z.figures.presses,
            index(z.figures.happy_index),
            change(z.figures.change)
        ));
    }
    out.push_str(&format!(
        "</tbody></table></div><a class=\"download\" href=\"/sites/{}/zones.csv?{}\">Download CSV</a></div>",
        escape(&encode(&page.site)),
        escape(&f.period_query())
    ));
    out
}

fn hours(page: &SitePage, f: &Filters) -> String {
    let empty = SiteHours {
        site: page.site.clone(),
        time_zone: String::new(),
        cells: vec![],
    };
    let h = page
        .report
        .hours
        .sites
        .iter()
        .find(|s| s.site == page.site)
        .unwrap_or(&empty);
    let mut worst = String::from(
        "<div class=\"scroll\"><table id=\"unhappiest\"><thead><tr><th class=\"text\">When</th><th>Index</th><th>Presses</th></tr></thead><tbody>",
    );
    for c in site::unhappiest_hours(&h.cells, UNHAPPY_HOUR_MIN_PRESSES, 5) {
        worst.push_str(&format!(
            "<tr data-weekday=\"{}\" data-hour=\"{}\"><td class=\"text\">{} {:02}:00–{:02}:00</td>\
             <td data-field=\"happy_index\">{}</td><td data-field=\"presses\">{}</td></tr>",
            c.weekday,
            c.hour,
            c.weekday,
            c.hour,
            (c.hour + 1) % 24,
            index(c.happy_index),
            c.presses
        ));
    }
    worst.push_str("</tbody></table></div>");
    format!(
        "<div class=\"card wide\"><h2>By hour and weekday, {weeks} weeks to {to}</h2>{map}\
         <h2 style=\"margin-top:1rem\">Unhappiest hours (at least {min} presses)</h2>{worst}\
         <a class=\"download\" href=\"/sites/{site}/hours.csv?{q}\">Download CSV</a></div>",
        weeks = page.report.hours.weeks,
        to = fmt_date(page.report.hours.period.to),
        map = charts::heat_map(&h.cells),
        min = UNHAPPY_HOUR_MIN_PRESSES,
        q = escape(&f.period_query()),
        site = escape(&encode(&page.site)),
    )
}

fn alerts(page: &SitePage, f: &Filters) -> String {
    let mut out = format!(
        "<div class=\"card wide\"><h2>Alert response</h2><div class=\"scroll\"><table id=\"alert-zones\"><thead><tr>\
         <th class=\"text\">Zone</th>{ANSWERED_HEAD}</tr></thead><tbody>"
    );
    for z in &page.alerts.by_zone {
        out.push_str(&format!(
            "<tr data-zone=\"{}\"><td class=\"text\">{}</td>{}</tr>",
            escape(&z.zone),
            escape(&zone_name(&page.report, &page.site, &z.zone)),
            answered_cells(&z.response)
        ));
    }
    out.push_str(&format!(
        "</tbody></table></div><h2 style=\"margin-top:1rem\">By hour raised</h2><div class=\"scroll\"><table id=\"alert-hours\">\
         <thead><tr><th class=\"text\">Hour</th>{ANSWERED_HEAD}</tr></thead><tbody>"
    ));
    for h in &page.alerts.by_hour {
        out.push_str(&format!(
            "<tr data-hour=\"{}\"><td class=\"text\">{:02}:00</td>{}</tr>",
            h.hour,
            h.hour,
            answered_cells(&h.response)
        ));
    }
    out.push_str(&format!(
        "</tbody></table></div><a class=\"download\" href=\"/sites/{}/alerts.csv?{}\">Download CSV</a></div>",
        escape(&encode(&page.site)),
        escape(&f.period_query())
    ));
    out
}

fn terminals(page: &SitePage) -> String {
    let mut out = String::from(
        "<div class=\"card wide\"><h2>Terminals</h2><div class=\"scroll\"><table id=\"terminals\"><thead><tr>\
         <th class=\"text\">Terminal</th><th class=\"text\">State</th><th class=\"text\">Last seen (UTC)</th>\
         <th class=\"text\">Firmware</th><th>Battery</th><th>Wi-Fi</th></tr></thead><tbody>",
    );
    for t in &page.health {
        out.push_str(&format!(
            "<tr data-terminal=\"{}\"><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td>\
             <td class=\"text\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.terminal),
            escape(&t.terminal),
            if t.online { "online" } else { "<span class=\"down\">offline</span>" },
            t.last_seen
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            escape(t.firmware.as_deref().unwrap_or("–")),
            t.battery_mv.map_or("–".into(), |mv| format!("{mv} mV")),
            t.rssi_dbm.map_or("–".into(), |db| format!("{db} dBm")),
        ));
    }
    out.push_str(&format!(
        "</tbody></table></div><a class=\"download\" href=\"/sites/{}/terminals.csv\">Download CSV</a></div>",
        escape(&encode(&page.site))
    ));
    out
}

pub fn render(page: &SitePage, f: &Filters) -> String {
    let trend = format!(
        "<div class=\"card wide\"><h2>Happy Index per week, last {TREND_WEEKS} weeks</h2>{}\
         <a class=\"download\" href=\"/sites/{}/trend.csv?{}\">Download CSV</a></div>",
        charts::trend(&[(page.site.clone(), page.trend.clone())]),
        escape(&encode(&page.site)),
        escape(&f.period_query())
    );
    let body = format!(
        "{}<div class=\"cards\">{trend}{}{}{}{}</div>",
        header(page, f),
        zones(page, f),
        hours(page, f),
        alerts(page, f),
        terminals(page)
    );
    frame(&page.site, &f.period_query(), &body)
}

fn csv_text(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> Result<String, PageError> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record(header).map_err(anyhow::Error::from)?;
    for row in rows {
        w.write_record(&row).map_err(anyhow::Error::from)?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(String::from_utf8(bytes).map_err(anyhow::Error::from)?)
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v:.1}"))
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

pub async fn trend_csv(
    State(web): State<Web>,
    Path(site): Path<String>,
    Query(q): Query<FilterQuery>,
) -> Result<Response, PageError> {
    let f = filters(&q)?;
    let client = web.reader.client().await?;
    let weeks = site::trend(
        &client,
        f.source,
        std::slice::from_ref(&site),
        site::trend_span(f.to, TREND_WEEKS),
    )
    .await?;
    let body = csv_text(
        &["site", "week_from", "presses", "happy_index"],
        weeks.iter().map(|w| {
            vec![
                text_cell(&site),
                fmt_date(w.from),
                w.presses.to_string(),
                num(w.happy_index),
            ]
        }),
    )?;
    Ok(csv_response(&format!("{site}-trend.csv"), body))
}

pub async fn zones_csv(
    State(web): State<Web>,
    Path(site): Path<String>,
    Query(q): Query<FilterQuery>,
) -> Result<Response, PageError> {
    let f = filters(&q)?;
    let client = web.reader.client().await?;
    let only = [site.clone()];
    let figures = fetch_totals(&client, f.source, f.period(), &only).await?;
    let report = build(&figures, f.period(), f.weeks, f.prior_presses);
    let body = csv_text(
        &[
            "site",
            "zone",
            "name",
            "presses",
            "happy_index",
            "previous_presses",
            "previous_happy_index",
            "change",
        ],
        report.zones.iter().map(|z| {
            vec![
                text_cell(&z.site),
                text_cell(&z.zone),
                text_cell(&z.name),
                z.figures.presses.to_string(),
                num(z.figures.happy_index),
                z.figures.previous_presses.to_string(),
                num(z.figures.previous_happy_index),
                num(z.figures.change),
            ]
        }),
    )?;
    Ok(csv_response(&format!("{site}-zones.csv"), body))
}

pub async fn hours_csv(
    State(web): State<Web>,
    Path(site): Path<String>,
    Query(q): Query<FilterQuery>,
) -> Result<Response, PageError> {
    let f = filters(&q)?;
    let client = web.reader.client().await?;
    let mut figures = pressline_reports::Figures::default();
    let only = [site.clone()];
    fetch_hours(&client, f.source, f.period(), f.weeks, &only, &mut figures).await?;
    let report = build(&figures, f.period(), f.weeks, f.prior_presses);
    let cells = report.hours.sites.iter().flat_map(|s| s.cells.iter());
    let body = csv_text(
        &["site", "weekday", "hour", "presses", "happy_index"],
        cells.map(|c| {
            vec![
                text_cell(&site),
                c.weekday.to_string(),
                c.hour.to_string(),
                c.presses.to_string(),
                num(c.happy_index),
            ]
        }),
    )?;
    Ok(csv_response(&format!("{site}-hours.csv"), body))
}

pub async fn alerts_csv(
    State(web): State<Web>,
    Path(site): Path<String>,
    Query(q): Query<FilterQuery>,
) -> Result<Response, PageError> {
    let f = filters(&q)?;
    let client = web.reader.client().await?;
    let r = site::alert_response(&site::alerts(&client, &site, f.period()).await?);
    let row = |group: &str, key: String, a: &Answered| {
        vec![
            text_cell(&site),
            group.to_string(),
            key,
            a.alerts.to_string(),
            a.acknowledged.to_string(),
            opt(a.median_ack_secs),
            a.recovered.to_string(),
            opt(a.median_recover_secs),
        ]
    };
    let rows: Vec<Vec<String>> = r
        .by_zone
        .iter()
        .map(|z| row("zone", text_cell(&z.zone), &z.response))
        .chain(
            r.by_hour
                .iter()
                .map(|h| row("hour", h.hour.to_string(), &h.response)),
        )
        .collect();
    let body = csv_text(
        &[
            "site",
            "group",
            "key",
            "alerts",
            "acknowledged",
            "median_ack_secs",
            "recovered",
            "median_recover_secs",
        ],
        rows.into_iter(),
    )?;
    Ok(csv_response(&format!("{site}-alerts.csv"), body))
}

pub async fn terminals_csv(
    State(web): State<Web>,
    Path(site): Path<String>,
) -> Result<Response, PageError> {
    let client = web.reader.client().await?;
    let health = site::health(&client, &site).await?;
    let body = csv_text(
        &[
            "site",
            "terminal",
            "online",
            "last_seen",
            "firmware",
            "battery_mv",
            "rssi_dbm",
        ],
        health.iter().map(|t| {
            vec![
                text_cell(&site),
                text_cell(&t.terminal),
                t.online.to_string(),
                t.last_seen
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                text_cell(t.firmware.as_deref().unwrap_or_default()),
                opt(t.battery_mv),
                opt(t.rssi_dbm),
            ]
        }),
    )?;
    Ok(csv_response(&format!("{site}-terminals.csv"), body))
}
