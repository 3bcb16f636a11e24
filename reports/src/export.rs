//! The report as one CSV table, for spreadsheets.

use crate::ranking::{Report, Row};

/// A name from a gateway (site, zone, terminal, firmware) made safe for a
/// spreadsheet: one starting like a formula (`= + - @`, tab, CR) gets a
/// leading `'`, which spreadsheets show as text.
pub fn text_cell(name: &str) -> String {
    match name.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{name}"),
        _ => name.to_string(),
    }
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
            &text_cell(&s.site),
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
            "zone",
            "",
            &text_cell(&z.site),
            &text_cell(&z.zone),
            &text_cell(&z.name),
            "",
            "",
            &p,
            &i,
            "",
            &pp,
            &pi,
            &c,
        ])?;
    }
    for s in &report.hours.sites {
        for c in &s.cells {
            w.write_record([
                "hour",
                "",
                &text_cell(&s.site),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_looks_like_a_formula_stays_text_in_a_spreadsheet() {
        assert_eq!(text_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(text_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(text_cell("north-stand"), "north-stand");
    }
}
