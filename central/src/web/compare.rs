//! Chosen sites and zones side by side (`/compare?sites=a,b&zones=a:food`):
//! their figures from the network's ranking, and the sites' weekly index on
//! one chart.

use axum::extract::{Query, State};
use axum::response::{Html, Response};
use pressline_reports::export::text_cell;
use pressline_reports::ranking::{Row, SiteRow, ZoneRow};
use pressline_reports::site;
use pressline_reports::Report;

use super::charts;
use super::filters::{FilterQuery, Filters};
use super::html::{change, escape, filter_form, frame, index};
use super::overview::{filters, ranking};
use super::site_page::TREND_WEEKS;
use super::{csv_response, PageError, Web};

/// Lines a chart can still tell apart.
const MOST_SITES_CHARTED: usize = 6;

/// The ranking over every site (so ranks are the overview's), and the
/// chosen rows of it.
async fn chosen(web: &Web, f: &Filters) -> Result<(Report, Filters), PageError> {
    let all = Filters {
        sites: vec![],
        ..f.clone()
    };
    Ok((ranking(web, &all).await?, f.clone()))
}

fn site_rows<'a>(report: &'a Report, f: &Filters) -> Vec<&'a SiteRow> {
    f.sites
        .iter()
        .filter_map(|s| report.sites.iter().find(|r| &r.site == s))
        .collect()
}

fn zone_rows<'a>(report: &'a Report, f: &Filters) -> Vec<&'a ZoneRow> {
    f.zones
        .iter()
        .filter_map(|(s, z)| report.zones.iter().find(|r| &r.site == s && &r.zone == z))
        .collect()
}

pub async fn page(
    State(web): State<Web>,
    Query(q): Query<FilterQuery>,
) -> Result<Html<String>, PageError> {
    let f = filters(&q)?;
    let (report, f) = chosen(&web, &f).await?;
    let client = web.reader.client().await?;
    let mut series = Vec::new();
    for s in site_rows(&report, &f).iter().take(MOST_SITES_CHARTED) {
        let weeks = site::trend(
            &client,
            f.source,
            std::slice::from_ref(&s.site),
            site::trend_span(f.to, TREND_WEEKS),
        )
        .await?;
        series.push((s.site.clone(), weeks));
    }
    Ok(Html(render(&report, &f, &series)))
}

fn figure_rows(columns: &[(&str, &Row, Option<String>)]) -> String {
    let mut out = String::new();
    let line = |label: &str, field: &str, cell: &dyn Fn(&Row, &Option<String>) -> String| {
        let mut tr = format!("<tr data-field=\"{field}\"><th class=\"text\">{label}</th>");
        for (_, row, extra) in columns {
            tr.push_str(&format!("<td>{}</td>", cell(row, extra)));
        }
        tr.push_str("</tr>");
        tr
    };
    out.push_str(&line("Presses", "presses", &|r, _| r.presses.to_string()));
    out.push_str(&line("Happy Index", "happy_index", &|r, _| {
        index(r.happy_index)
    }));
    out.push_str(&line("Change", "change", &|r, _| change(r.change)));
    out.push_str(&line("Index before", "previous_happy_index", &|r, _| {
        index(r.previous_happy_index)
    }));
    out.push_str(&line("Presses before", "previous_presses", &|r, _| {
        r.previous_presses.to_string()
    }));
    if columns.iter().any(|(_, _, extra)| extra.is_some()) {
        out.push_str(&line("Rank · ranked by", "rank", &|_, e| {
            e.clone().unwrap_or_else(|| "–".into())
        }));
    }
    out
}

pub fn render(report: &Report, f: &Filters, series: &[(String, Vec<site::Week>)]) -> String {
    let inputs = format!(
        "<label>Sites (comma-separated)<input type=\"text\" name=\"sites\" value=\"{}\"></label>\
         <label>Zones (site:zone, comma-separated)<input type=\"text\" name=\"zones\" value=\"{}\"></label>",
        escape(&f.sites.join(",")),
        escape(
            &f.zones
                .iter()
                .map(|(s, z)| format!("{s}:{z}"))
                .collect::<Vec<_>>()
                .join(",")
        )
    );
    let mut body = format!(
        "<h1>Compare · {} – {}</h1>{}",
        pressline_reports::fmt_date(report.period.from),
        pressline_reports::fmt_date(report.period.to),
        filter_form("/compare", f, &inputs)
    );
    let sites = site_rows(report, f);
    let zones = zone_rows(report, f);
    if sites.is_empty() && zones.is_empty() {
        let known: Vec<String> = report.sites.iter().map(|s| escape(&s.site)).collect();
        body.push_str(&format!(
            "<div class=\"card\"><p>Choose sites or zones to compare. Sites with presses in this period or the one before: {}.</p></div>",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        ));
        return frame("Compare", &f.period_query(), &body);
    }
    body.push_str("<div class=\"cards\">");
    if !sites.is_empty() {
        let columns: Vec<(&str, &Row, Option<String>)> = sites
            .iter()
            .map(|s| {
                (
                    s.site.as_str(),
                    &s.figures,
                    Some(format!("{} · {}", s.rank, index(s.ranking_index))),
                )
            })
            .collect();
        let head: String = sites
            .iter()
            .map(|s| format!("<th data-site=\"{0}\">{0}</th>", escape(&s.site)))
            .collect();
        body.push_str(&format!(
            "<div class=\"card wide\"><h2>Sites</h2><div class=\"scroll\"><table id=\"compare-sites\">\
             <thead><tr><th></th>{head}</tr></thead><tbody>{}</tbody></table></div>{}</div>",
            figure_rows(&columns),
            charts::trend(series)
        ));
    }
    if !zones.is_empty() {
        let columns: Vec<(&str, &Row, Option<String>)> = zones
            .iter()
            .map(|z| (z.zone.as_str(), &z.figures, None))
            .collect();
        let head: String = zones
            .iter()
            .map(|z| {
                format!(
                    "<th data-zone=\"{}:{}\">{} · {}</th>",
                    escape(&z.site),
                    escape(&z.zone),
                    escape(&z.site),
                    escape(&z.name)
                )
            })
            .collect();
        body.push_str(&format!(
            "<div class=\"card wide\"><h2>Zones</h2><div class=\"scroll\"><table id=\"compare-zones\">\
             <thead><tr><th></th>{head}</tr></thead><tbody>{}</tbody></table></div></div>",
            figure_rows(&columns)
        ));
    }
    body.push_str(&format!(
        "</div><a class=\"download\" href=\"/compare.csv?{}\">Download CSV</a>",
        escape(&f.full_query())
    ));
    frame("Compare", &f.period_query(), &body)
}

pub async fn csv(
    State(web): State<Web>,
    Query(q): Query<FilterQuery>,
) -> Result<Response, PageError> {
    let f = filters(&q)?;
    let (report, f) = chosen(&web, &f).await?;
    let num = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.1}"));
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record([
        "kind",
        "site",
        "zone",
        "rank",
        "presses",
        "happy_index",
        "ranking_index",
        "previous_presses",
        "previous_happy_index",
        "change",
    ])
    .map_err(anyhow::Error::from)?;
    for s in site_rows(&report, &f) {
        let r = &s.figures;
        w.write_record([
            "site",
            &text_cell(&s.site),
            "",
            &s.rank.to_string(),
            &r.presses.to_string(),
            &num(r.happy_index),
            &num(s.ranking_index),
            &r.previous_presses.to_string(),
            &num(r.previous_happy_index),
            &num(r.change),
        ])
        .map_err(anyhow::Error::from)?;
    }
    for z in zone_rows(&report, &f) {
        let r = &z.figures;
        w.write_record([
            "zone",
            &text_cell(&z.site),
            &text_cell(&z.zone),
            "",
            &r.presses.to_string(),
            &num(r.happy_index),
            "",
            &r.previous_presses.to_string(),
            &num(r.previous_happy_index),
            &num(r.change),
        ])
        .map_err(anyhow::Error::from)?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = String::from_utf8(bytes).map_err(anyhow::Error::from)?;
    Ok(csv_response("pressline-compare.csv", body))
}
