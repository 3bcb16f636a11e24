//! `fleet report`: satisfaction across sites, from the central PostgreSQL
//! (filled by `pressline-central`). The figures are `pressline_reports`'s,
//! the same the central web view and the e-mailed reports show; this module
//! only prints them.

use pressline_reports::ranking::WEEKDAYS;
pub use pressline_reports::Source;
use pressline_reports::{build, fetch, fmt_date, Period, Report};
use time::Date;

use super::{exit, Outcome};
use crate::render::{finish, table};

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
    // The shared report code is async (the central web view serves it);
    // fleet waits for it on a runtime of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let period = Period::ending(args.to, args.days);
    let figures = runtime.block_on(async {
        let tls = crate::tls::postgres_tls(args.postgres_ca)?;
        let (client, connection) = tokio_postgres::connect(args.postgres, tls)
            .await
            .map_err(|e| {
                let cause =
                    std::error::Error::source(&e).map_or_else(String::new, |s| format!(": {s}"));
                anyhow::anyhow!(
                    "cannot connect to the central PostgreSQL: {e}{cause}\n\
                     hint: --postgres (or PRESSLINE_POSTGRES) takes the URL pressline-central writes to, \
                     e.g. postgres://reader@db.example:5432/pressline?sslmode=require; \
                     --postgres-ca trusts a private CA"
                )
            })?;
        tokio::spawn(connection);
        fetch(
            &client,
            args.source,
            period,
            args.weeks.max(1),
            args.sites,
        )
        .await
        .map_err(|e| {
            let detail = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string());
            anyhow::anyhow!(
                "cannot read the report's figures: {detail}\n\
                 hint: the schema is created by `pressline-central migrate` (or its first run)"
            )
        })
    })?;
    let report = build(&figures, period, args.weeks.max(1), args.prior_presses);
    let stdout = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Csv => pressline_reports::export::csv(&report)?,
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
    use pressline_reports::{Counts, Figures};
    use time::macros::date;

    fn counts(c: [u64; 4]) -> Counts {
        Counts(c)
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
        insta::assert_snapshot!(pressline_reports::export::csv(&r).unwrap());
    }
}
