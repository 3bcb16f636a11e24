//! The report: the network, sites ranked by their shrunk index, zones,
//! and hour × weekday cells, from grouped figures. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::counts::{round1, Counts, Period};
use crate::fetch::Figures;

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

pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
/// Zone id of presses from terminals in no zone.
pub const NO_ZONE: &str = "";

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

    let names: BTreeSet<&String> = figures
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

    let zone_keys: BTreeSet<&(String, String)> = figures
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

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn a_site_with_few_presses_is_shrunk_toward_the_network() {
        let mut f = Figures::default();
        // Big: 1000 presses at 75; mid: 1000 at 43.3; tiny: 2, both very
        // happy (100), which alone would top the table.
        f.sites.insert("big".into(), Counts([50, 150, 300, 500]));
        f.sites.insert("mid".into(), Counts([200, 400, 300, 100]));
        f.sites.insert("tiny".into(), Counts([0, 0, 0, 2]));
        f.previous_sites
            .insert("big".into(), Counts([100, 200, 300, 400]));
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
}
