//! The filters a page's URL carries: the period (`to`, `days`), the weeks
//! of the hour × weekday map (`weeks`), the ranking's prior (`prior`), and
//! the sites and zones chosen (`sites=a,b`, `zones=site:zone,…`).

use pressline_reports::counts::parse_date;
use pressline_reports::{fmt_date, Period, Source};
use serde::Deserialize;
use time::Date;

/// The URL's query, as typed (checked by [`Filters::from_query`]).
#[derive(Debug, Default, Deserialize)]
pub struct FilterQuery {
    pub to: Option<String>,
    pub days: Option<String>,
    pub weeks: Option<String>,
    pub prior: Option<String>,
    pub sites: Option<String>,
    pub zones: Option<String>,
    /// `presses`: the same figures from every press (slower; for
    /// checking the rollups, as `fleet report --source presses`).
    pub source: Option<String>,
}

/// `fleet report`'s defaults, so a bare URL shows what a bare command
/// prints.
pub const DEFAULT_DAYS: u32 = 7;
pub const DEFAULT_WEEKS: u32 = 4;
pub const DEFAULT_PRIOR: u32 = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filters {
    pub to: Date,
    pub days: u32,
    pub weeks: u32,
    pub prior_presses: u32,
    pub sites: Vec<String>,
    /// (site, zone); zone '' is the terminals in no zone.
    pub zones: Vec<(String, String)>,
    pub source: Source,
}

fn number(
    text: &Option<String>,
    name: &str,
    default: u32,
    (min, max): (u32, u32),
) -> Result<u32, String> {
    let Some(text) = text.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(default);
    };
    match text.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name}={text} is not a whole number from {min} to {max}"
        )),
    }
}

fn list(text: &Option<String>) -> Vec<String> {
    text.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl Filters {
    /// The checked filters; `today` is the default last day.
    pub fn from_query(q: &FilterQuery, today: Date) -> Result<Filters, String> {
        let to = match q.to.as_deref().filter(|t| !t.is_empty()) {
            None => today,
            Some(t) => parse_date(t)
                .filter(|d| (1970..=9000).contains(&d.year()))
                .ok_or_else(|| format!("to={t} is not a date from 1970 to 9000 (YYYY-MM-DD)"))?,
        };
        Ok(Filters {
            to,
            days: number(&q.days, "days", DEFAULT_DAYS, (1, 3_660))?,
            weeks: number(&q.weeks, "weeks", DEFAULT_WEEKS, (1, 520))?,
            prior_presses: number(&q.prior, "prior", DEFAULT_PRIOR, (0, 1_000_000))?,
            sites: list(&q.sites),
            zones: list(&q.zones)
                .into_iter()
                .map(|z| match z.split_once(':') {
                    Some((site, zone)) => (site.to_string(), zone.to_string()),
                    None => (z, String::new()),
                })
                .collect(),
            source: match q.source.as_deref().unwrap_or("") {
                "" | "rollups" => Source::Rollups,
                "presses" => Source::Presses,
                other => return Err(format!("source={other}: rollups (the default) or presses")),
            },
        })
    }

    pub fn period(&self) -> Period {
        Period::ending(self.to, self.days)
    }

    /// The period's query (`to`, `days`, `weeks`, `prior`), for links
    /// that keep it.
    pub fn period_query(&self) -> String {
        let source = match self.source {
            Source::Rollups => "",
            Source::Presses => "&source=presses",
        };
        format!(
            "to={}&days={}&weeks={}&prior={}{source}",
            fmt_date(self.to),
            self.days,
            self.weeks,
            self.prior_presses
        )
    }

    /// Everything, for links to the same view (CSV downloads).
    pub fn full_query(&self) -> String {
        let mut q = self.period_query();
        if !self.sites.is_empty() {
            q.push_str("&sites=");
            q.push_str(&encode(&self.sites.join(",")));
        }
        if !self.zones.is_empty() {
            let zones: Vec<String> = self.zones.iter().map(|(s, z)| format!("{s}:{z}")).collect();
            q.push_str("&zones=");
            q.push_str(&encode(&zones.join(",")));
        }
        q
    }
}

/// Percent-encoding of a query value or path segment (site names are
/// the gateways' own, so anything may be in them).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' | b':' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn query(pairs: &[(&str, &str)]) -> FilterQuery {
        let mut q = FilterQuery::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "to" => q.to = v,
                "days" => q.days = v,
                "weeks" => q.weeks = v,
                "prior" => q.prior = v,
                "sites" => q.sites = v,
                "zones" => q.zones = v,
                "source" => q.source = v,
                _ => unreachable!(),
            }
        }
        q
    }

    #[test]
    fn a_bare_url_means_what_a_bare_fleet_report_means() {
        let f = Filters::from_query(&query(&[]), date!(2026 - 12 - 07)).unwrap();
        assert_eq!(
            (f.to, f.days, f.weeks, f.prior_presses),
            (date!(2026 - 12 - 07), 7, 4, 50)
        );
        assert!(f.sites.is_empty() && f.zones.is_empty());
    }

    #[test]
    fn filters_survive_a_round_trip_through_the_url() {
        let q = query(&[
            ("to", "2026-03-29"),
            ("days", "14"),
            ("sites", "arena, dock"),
            ("zones", "arena:food,dock:"),
        ]);
        let f = Filters::from_query(&q, date!(2026 - 12 - 07)).unwrap();
        assert_eq!(f.sites, ["arena", "dock"]);
        assert_eq!(
            f.zones,
            [("arena".into(), "food".into()), ("dock".into(), "".into())]
        );
        assert_eq!(
            f.full_query(),
            "to=2026-03-29&days=14&weeks=4&prior=50&sites=arena,dock&zones=arena:food,dock:"
        );
    }

    #[test]
    fn wrong_filters_say_what_is_wrong() {
        let today = date!(2026 - 12 - 07);
        let e = Filters::from_query(&query(&[("to", "29/03/2026")]), today).unwrap_err();
        assert!(e.contains("YYYY-MM-DD"), "{e}");
        // Dates the calendar arithmetic cannot take are refused up front.
        for far in ["-9999-01-01", "0001-01-01", "9999-12-31"] {
            assert!(
                Filters::from_query(&query(&[("to", far)]), today).is_err(),
                "{far}"
            );
        }
        let e = Filters::from_query(&query(&[("days", "0")]), today).unwrap_err();
        assert!(e.contains("days=0"), "{e}");
        assert!(Filters::from_query(&query(&[("prior", "0")]), today).is_ok());
        assert!(Filters::from_query(&query(&[("weeks", "x")]), today).is_err());
        let e = Filters::from_query(&query(&[("source", "cache")]), today).unwrap_err();
        assert!(e.contains("presses"), "{e}");
    }

    #[test]
    fn names_are_encoded_in_links() {
        assert_eq!(encode("north & south/2"), "north%20%26%20south%2F2");
    }
}
