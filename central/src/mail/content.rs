//! What a subscription's report says, read from PostgreSQL with the report
//! code `fleet report` and the web view use.

use std::collections::BTreeMap;

use pressline_reports::ranking::{HourCell, SiteRow, WEEKDAYS};
use pressline_reports::site::{self, Response, Week};
use pressline_reports::{
    build, fetch_hours, fetch_totals, Counts, Figures, Period, Report, Source,
};
use tokio_postgres::Client;

use super::config::{Every, Subscription};

/// Weeks of hour × weekday cells in a report: a month, whatever its
/// cadence, so a daily report's map is not a single sparse day.
pub const HOUR_WEEKS: u32 = 4;
/// Hour cells with fewer presses are not called unhappy.
const UNHAPPY_HOUR_MIN_PRESSES: u64 = 10;

pub struct Content {
    pub period: Period,
    pub every: Every,
    /// The subscription's sites (empty: the network).
    pub sites: Vec<String>,
    /// The whole network's ranking (ranks as everywhere else).
    pub network: Report,
    /// The subscription's sites together (the network's own figures when
    /// it has none).
    pub group: Report,
    /// The trend of the group: a quarter of weeks, a year for monthly.
    pub trend: Vec<Week>,
    /// Hour × weekday over [`HOUR_WEEKS`], the group's sites together.
    pub cells: Vec<HourCell>,
    /// The unhappiest (site, cell)s, lowest first.
    pub worst: Vec<(String, HourCell)>,
    /// Alerts raised in the period, per site, and how they were answered.
    pub alerts: BTreeMap<String, Response>,
}

impl Content {
    /// The ranking rows of the subscription's sites (every site for the
    /// network), in rank order.
    pub fn rows(&self) -> Vec<&SiteRow> {
        self.network
            .sites
            .iter()
            .filter(|s| self.sites.is_empty() || self.sites.contains(&s.site))
            .collect()
    }
}

fn cell(weekday: u8, hour: u8, c: &Counts) -> HourCell {
    HourCell {
        weekday: WEEKDAYS[usize::from(weekday.clamp(1, 7) - 1)],
        hour,
        presses: c.total(),
        happy_index: c.happy_index().map(pressline_reports::counts::round1),
    }
}

/// Cells of all sites summed per local weekday and hour; and the
/// unhappiest cells of single sites.
fn hours(figures: &Figures) -> (Vec<HourCell>, Vec<(String, HourCell)>) {
    let mut together: BTreeMap<(u8, u8), Counts> = BTreeMap::new();
    let mut each = Vec::new();
    for ((site, weekday, hour), c) in &figures.hours {
        together.entry((*weekday, *hour)).or_default().merge(c);
        each.push((site.clone(), cell(*weekday, *hour, c)));
    }
    let cells = together.iter().map(|((w, h), c)| cell(*w, *h, c)).collect();
    let mut worst: Vec<(String, HourCell)> = each
        .into_iter()
        .filter(|(_, c)| c.presses >= UNHAPPY_HOUR_MIN_PRESSES)
        .collect();
    worst.sort_by(|a, b| {
        let (x, y) = (
            a.1.happy_index.unwrap_or(0.0),
            b.1.happy_index.unwrap_or(0.0),
        );
        x.total_cmp(&y).then(b.1.presses.cmp(&a.1.presses))
    });
    worst.truncate(5);
    (cells, worst)
}

/// Reads everything the report of `sub` for `period` shows.
pub async fn gather(
    client: &Client,
    sub: &Subscription,
    period: Period,
) -> Result<Content, tokio_postgres::Error> {
    let all = fetch_totals(client, Source::Rollups, period, &[]).await?;
    let network = build(&all, period, HOUR_WEEKS, sub.prior_presses);
    let mut figures = if sub.sites.is_empty() {
        all
    } else {
        fetch_totals(client, Source::Rollups, period, &sub.sites).await?
    };
    fetch_hours(
        client,
        Source::Rollups,
        period,
        HOUR_WEEKS,
        &sub.sites,
        &mut figures,
    )
    .await?;
    let group = build(&figures, period, HOUR_WEEKS, sub.prior_presses);
    let weeks = if sub.every == Every::Monthly { 52 } else { 13 };
    let trend = site::trend(
        client,
        Source::Rollups,
        &sub.sites,
        site::trend_span(period.to, weeks),
    )
    .await?;
    let (cells, worst) = hours(&figures);
    let alerts = site::alerts_by_site(client, &sub.sites, period)
        .await?
        .into_iter()
        .map(|(s, a)| (s, site::response(a.iter())))
        .collect();
    Ok(Content {
        period,
        every: sub.every,
        sites: sub.sites.clone(),
        network,
        group,
        trend,
        cells,
        worst,
        alerts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_add_up_across_sites_and_the_worst_are_single_sites_hours() {
        let mut f = Figures::default();
        f.hours.insert(("a".into(), 6, 12), Counts([10, 0, 0, 0]));
        f.hours.insert(("b".into(), 6, 12), Counts([0, 0, 0, 10]));
        f.hours.insert(("b".into(), 7, 9), Counts([0, 1, 0, 0]));
        let (cells, worst) = hours(&f);
        let sat_noon = cells
            .iter()
            .find(|c| c.weekday == "sat" && c.hour == 12)
            .unwrap();
        assert_eq!((sat_noon.presses, sat_noon.happy_index), (20, Some(50.0)));
        // Sunday 09:00 has one press: too few to call it unhappy.
        let named: Vec<(&str, Option<f64>)> = worst
            .iter()
            .map(|(s, c)| (s.as_str(), c.happy_index))
            .collect();
        assert_eq!(named, [("a", Some(0.0)), ("b", Some(100.0))]);
    }
}
