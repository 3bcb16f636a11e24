//! The network overview (`/`): sites ranked by the shrunk Happy Index, with
//! their change, presses, open alerts and terminals offline.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::{Html, Response};
use pressline_reports::network::{self, SiteState};
use pressline_reports::{build, fetch, fetch_totals_on, Report};

use super::filters::{encode, FilterQuery, Filters};
use super::html::{change, escape, filter_form, frame, index};
use super::{PageError, Web};

/// Today in UTC: the default last day, as `fleet report`'s.
pub fn today() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}

pub fn filters(q: &FilterQuery) -> Result<Filters, PageError> {
    Filters::from_query(q, today()).map_err(PageError::BadRequest)
}

/// The ranking without hour cells, over every site (or the chosen ones):
/// the period and the one before read side by side.
pub async fn ranking(web: &Web, f: &Filters) -> Result<Report, PageError> {
    let (a, b) = (web.reader.client().await?, web.reader.client().await?);
    let figures = fetch_totals_on([&a, &b], f.source, f.period(), &f.sites).await?;
    Ok(build(&figures, f.period(), f.weeks, f.prior_presses))
}

pub async fn page(
    State(web): State<Web>,
    Query(q): Query<FilterQuery>,
) -> Result<Html<String>, PageError> {
    let f = filters(&q)?;
    let (report, states) = futures_util::future::try_join(ranking(&web, &f), async {
        let client = web.reader.client().await?;
        Ok::<_, PageError>(network::states(&client, &f.sites).await?)
    })
    .await?;
    Ok(Html(render(&report, &states, &f)))
}

/// What `fleet report --csv` prints for the same filters.
pub async fn csv(
    State(web): State<Web>,
    Query(q): Query<FilterQuery>,
) -> Result<Response, PageError> {
    let f = filters(&q)?;
    let client = web.reader.client().await?;
    let figures = fetch(&client, f.source, f.period(), f.weeks, &f.sites).await?;
    let report = build(&figures, f.period(), f.weeks, f.prior_presses);
    let body = pressline_reports::export::csv(&report)?;
    Ok(super::csv_response(
        &format!("pressline-report-{}.csv", pressline_reports::fmt_date(f.to)),
        body,
    ))
}

fn card(title: &str, figure: &str, note: &str) -> String {
    format!(
        "<div class=\"card\"><h2>{title}</h2><div class=\"figure\">{figure}</div>\
         <div class=\"muted\">{note}</div></div>"
    )
}

pub fn render(report: &Report, states: &BTreeMap<String, SiteState>, f: &Filters) -> String {
    let open: u64 = states.values().map(|s| s.open_alerts).sum();
    let offline: u64 = states.values().map(|s| s.terminals_offline).sum();
    let terminals: u64 = states.values().map(|s| s.terminals).sum();
    let n = &report.network;
    let period = format!(
        "{} – {}",
        pressline_reports::fmt_date(report.period.from),
        pressline_reports::fmt_date(report.period.to)
    );
    let sites_input = format!(
        "<label>Sites (comma-separated, empty: all)<input type=\"text\" name=\"sites\" value=\"{}\"></label>",
        escape(&f.sites.join(","))
    );
    let mut body = format!(
        "<h1>Network · {period}</h1>{}<div class=\"cards\">{}{}{}{}</div>",
        filter_form("/", f, &sites_input),
        card(
            "Happy Index",
            &format!(
                "<span data-field=\"happy_index\">{}</span>",
                index(n.happy_index)
            ),
            &format!(
                "<span data-field=\"change\">{}</span> against the {} days before",
                change(n.change),
                report.period.days()
            ),
        ),
        card(
            "Presses",
            &format!("<span data-field=\"presses\">{}</span>", n.presses),
            &format!("{} before", n.previous_presses),
        ),
        card(
            "Open alerts",
            &open.to_string(),
            "conditions that still hold"
        ),
        card(
            "Terminals offline",
            &offline.to_string(),
            &format!("of {terminals} reporting health"),
        ),
    );
    body.push_str(
        "<div class=\"cards\"><div class=\"card wide\"><h2>Sites ranked</h2><div class=\"scroll\"><table id=\"ranking\">\
         <thead><tr><th>Rank</th><th class=\"text\">Site</th><th>Presses</th><th>Index</th>\
         <th>Ranked by</th><th>Change</th><th>Open alerts</th><th>Offline</th><th class=\"text\">Time zone</th></tr></thead><tbody>",
    );
    for s in &report.sites {
        let state = states.get(&s.site).copied().unwrap_or_default();
        body.push_str(&format!(
            "<tr data-site=\"{site}\"><td data-field=\"rank\">{rank}</td>\
             <td class=\"text\"><a href=\"/sites/{link}?{q}\">{site}</a></td>\
             <td data-field=\"presses\">{presses}</td><td data-field=\"happy_index\">{idx}</td>\
             <td data-field=\"ranking_index\">{ranked}</td><td data-field=\"change\">{chg}</td>\
             <td data-field=\"open_alerts\">{open}</td><td data-field=\"offline\">{off} / {all}</td>\
             <td class=\"text\">{tz}</td></tr>",
            site = escape(&s.site),
            link = encode(&s.site),
            q = escape(&f.period_query()),
            rank = s.rank,
            presses = s.figures.presses,
            idx = index(s.figures.happy_index),
            ranked = index(s.ranking_index),
            chg = change(s.figures.change),
            open = state.open_alerts,
            off = state.terminals_offline,
            all = state.terminals,
            tz = escape(&s.time_zone),
        ));
    }
    if report.sites.is_empty() {
        body.push_str("<tr><td colspan=\"9\" class=\"text\">No presses in this period or the one before.</td></tr>");
    }
    body.push_str(&format!(
        "</tbody></table></div><p class=\"muted\">Ranked by: the index shrunk toward the network's by {} presses' weight, so a site with few presses ranks near the average.</p>\
         {}<a class=\"download\" href=\"/report.csv?{}\">Download CSV (ranking, zones, hours)</a></div></div>",
        report.prior_presses,
        if f.sites.is_empty() {
            ""
        } else {
            "<p class=\"muted\">Ranked among the chosen sites only (as <code>fleet report --site</code>); each site's own page ranks it in the whole network.</p>"
        },
        escape(&f.full_query())
    ));
    frame(&format!("Network · {period}"), &f.period_query(), &body)
}
