//! A report as an e-mail: subject, HTML with the charts as inline images,
//! and a plain-text part. Pure: the charts come back as SVG for
//! [`super::png`] to draw.

use pressline_reports::fmt_date;

use super::content::Content;
use crate::web::charts;
use crate::web::filters::encode;
use crate::web::html::{duration, escape, index};

/// Content ids of the inline images.
pub const TREND_CID: &str = "trend";
pub const HOURS_CID: &str = "hours";

pub struct Composed {
    pub subject: String,
    pub html: String,
    pub text: String,
    /// (content id, SVG).
    pub charts: Vec<(&'static str, String)>,
}

/// Sites listed in a network report before "and N more".
const MOST_ROWS: usize = 50;

fn signed(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:+.1}"))
}

fn scope(c: &Content) -> String {
    match c.sites.as_slice() {
        [] => "the network".into(),
        [one] => one.clone(),
        many => format!("{} sites", many.len()),
    }
}

/// The web view's page for the same period and sites.
pub fn link(c: &Content, web_url: &str) -> String {
    let q = format!(
        "to={}&days={}&prior={}",
        fmt_date(c.period.to),
        c.period.days(),
        c.network.prior_presses
    );
    match c.sites.as_slice() {
        [one] => format!("{web_url}/sites/{}?{q}", encode(one)),
        [] => format!("{web_url}/?{q}"),
        many => format!("{web_url}/compare?{q}&sites={}", encode(&many.join(","))),
    }
}

const TD: &str = "style=\"padding:4px 8px;border-bottom:1px solid #e3e7eb;text-align:right\"";
const TDL: &str = "style=\"padding:4px 8px;border-bottom:1px solid #e3e7eb;text-align:left\"";

pub fn compose(c: &Content, web_url: &str) -> Composed {
    let n = &c.group.network;
    let period = format!("{} – {}", fmt_date(c.period.from), fmt_date(c.period.to));
    let subject = format!(
        "Pressline {} report, {}: {period}: Happy Index {} ({})",
        c.every.as_str(),
        scope(c),
        index(n.happy_index),
        signed(n.change)
    );
    let link = link(c, web_url);
    let mut text = format!(
        "{subject}\n\nPresses: {} ({} the period before)\nHappy Index: {} ({} against the period before)\n\nSites by rank in the network:\n",
        n.presses,
        n.previous_presses,
        index(n.happy_index),
        signed(n.change)
    );
    let mut html = format!(
        "<div style=\"font-family:Arial,sans-serif;color:#1d232a;max-width:760px\">\
         <h1 style=\"font-size:20px\">{} report · {} · {period}</h1>\
         <p style=\"font-size:16px\">Happy Index <b style=\"font-size:28px\">{}</b> \
         <span>{}</span> against the period before · {} presses</p>\
         <img src=\"cid:{TREND_CID}\" width=\"720\" alt=\"Happy Index per week\" style=\"max-width:100%;height:auto\">\
         <h2 style=\"font-size:16px\">Sites by rank in the network</h2><table style=\"border-collapse:collapse\">\
         <tr><th {TD}>Rank</th><th {TDL}>Site</th><th {TD}>Presses</th><th {TD}>Index</th><th {TD}>Change</th>\
         <th {TD}>Alerts</th><th {TD}>Median to acknowledge</th><th {TD}>Median to recover</th></tr>",
        escape(&capitalised(c.every.as_str())),
        escape(&scope(c)),
        index(n.happy_index),
        signed(n.change),
        n.presses
    );
    let rows = c.rows();
    for s in rows.iter().take(MOST_ROWS) {
        let a = c.alerts.get(&s.site).cloned().unwrap_or_default();
        html.push_str(&format!(
            "<tr><td {TD}>{}</td><td {TDL}>{}</td><td {TD}>{}</td><td {TD}>{}</td><td {TD}>{}</td>\
             <td {TD}>{}</td><td {TD}>{}</td><td {TD}>{}</td></tr>",
            s.rank,
            escape(&s.site),
            s.figures.presses,
            index(s.figures.happy_index),
            signed(s.figures.change),
            a.alerts,
            duration(a.median_ack_secs),
            duration(a.median_recover_secs)
        ));
        text.push_str(&format!(
            "  {:>3}. {}: index {} ({}), {} presses; {} alerts, median {} to acknowledge, {} to recover\n",
            s.rank,
            s.site,
            index(s.figures.happy_index),
            signed(s.figures.change),
            s.figures.presses,
            a.alerts,
            duration(a.median_ack_secs),
            duration(a.median_recover_secs)
        ));
    }
    if rows.len() > MOST_ROWS {
        let more = rows.len() - MOST_ROWS;
        html.push_str(&format!(
            "<tr><td colspan=\"8\" {TDL}>and {more} more in the web view</td></tr>"
        ));
        text.push_str(&format!("  and {more} more in the web view\n"));
    }
    html.push_str(&format!(
        "</table><h2 style=\"font-size:16px\">Unhappiest hours, last 4 weeks (local time)</h2>\
         <img src=\"cid:{HOURS_CID}\" width=\"720\" alt=\"Happy Index by hour and weekday\" style=\"max-width:100%;height:auto\">\
         <table style=\"border-collapse:collapse\">"
    ));
    text.push_str("\nUnhappiest hours, last 4 weeks (local time):\n");
    for (site, cell) in &c.worst {
        let when = format!(
            "{} {:02}:00–{:02}:00",
            cell.weekday,
            cell.hour,
            (cell.hour + 1) % 24
        );
        html.push_str(&format!(
            "<tr><td {TDL}>{}</td><td {TDL}>{when}</td><td {TD}>{}</td><td {TD}>{} presses</td></tr>",
            escape(site),
            index(cell.happy_index),
            cell.presses
        ));
        text.push_str(&format!(
            "  {site} {when}: {} ({} presses)\n",
            index(cell.happy_index),
            cell.presses
        ));
    }
    if c.worst.is_empty() {
        html.push_str(&format!(
            "<tr><td {TDL}>No hour had enough presses to tell.</td></tr>"
        ));
        text.push_str("  No hour had enough presses to tell.\n");
    }
    html.push_str(&format!(
        "</table><p><a href=\"{}\">Open this report in the web view</a></p></div>",
        escape(&link)
    ));
    text.push_str(&format!("\nIn the web view: {link}\n"));
    Composed {
        subject,
        html,
        text,
        charts: vec![
            (TREND_CID, charts::trend(&[(scope(c), c.trend.clone())])),
            (HOURS_CID, charts::heat_map(&c.cells)),
        ],
    }
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |f| {
        f.to_uppercase().collect::<String>() + chars.as_str()
    })
}
