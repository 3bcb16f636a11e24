//! Response figures: how long alerts waited for someone, and how long the
//! condition took to recover, overall, per zone and by the hour of day
//! (site local time) they were raised. Pure: alerts in, figures out.

use std::collections::BTreeMap;

use pressline_protocol::upstream::Alert;
use serde::{Deserialize, Serialize};

use crate::clock::parse_rfc3339_ms;
use crate::site_time::SiteTime;

/// Figures over a set of alerts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub alerts: u64,
    pub acknowledged: u64,
    /// Seconds from raised to acknowledged.
    pub ack_median_secs: Option<f64>,
    pub ack_p90_secs: Option<f64>,
    pub recovered: u64,
    /// Seconds from raised to recovered.
    pub recover_median_secs: Option<f64>,
    pub recover_p90_secs: Option<f64>,
    /// Sums, for Prometheus summaries.
    pub ack_secs_sum: f64,
    pub recover_secs_sum: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseFigures {
    /// Alerts raised from this time on.
    pub since: String,
    pub overall: Figures,
    /// Zone id (`""` for terminals in no zone) → figures.
    pub zones: BTreeMap<String, Figures>,
    /// Local hour of day raised (0–23) → figures; hours without alerts left out.
    pub hours: BTreeMap<u8, Figures>,
}

#[derive(Default)]
struct Samples {
    alerts: u64,
    ack: Vec<f64>,
    recover: Vec<f64>,
}

impl Samples {
    fn figures(mut self) -> Figures {
        let quantile = |v: &mut Vec<f64>, q: f64| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            // Nearest rank.
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            Some(v[rank - 1])
        };
        Figures {
            alerts: self.alerts,
            acknowledged: self.ack.len() as u64,
            ack_secs_sum: self.ack.iter().sum(),
            recover_secs_sum: self.recover.iter().sum(),
            ack_median_secs: quantile(&mut self.ack, 0.5),
            ack_p90_secs: quantile(&mut self.ack, 0.9),
            recovered: self.recover.len() as u64,
            recover_median_secs: quantile(&mut self.recover, 0.5),
            recover_p90_secs: quantile(&mut self.recover, 0.9),
        }
    }
}

/// Figures over the alerts raised since `since_ms`, each with its zone.
pub fn figures<'a>(
    alerts: impl Iterator<Item = (&'a Alert, Option<&'a str>)>,
    site_time: &SiteTime,
    since_ms: i64,
) -> ResponseFigures {
    let mut overall = Samples::default();
    let mut zones: BTreeMap<String, Samples> = BTreeMap::new();
    let mut hours: BTreeMap<u8, Samples> = BTreeMap::new();
    for (alert, zone) in alerts {
        let Some(raised) = parse_rfc3339_ms(&alert.raised_at) else {
            continue;
        };
        if raised < since_ms {
            continue;
        }
        let secs = |at: &Option<String>| {
            at.as_deref()
                .and_then(parse_rfc3339_ms)
                .map(|t| (t - raised).max(0) as f64 / 1000.0)
        };
        let ack = secs(&alert.acknowledged_at);
        let recover = secs(&alert.cleared_at);
        let hour = (site_time.local_ms(raised).rem_euclid(86_400_000) / 3_600_000) as u8;
        for s in [
            &mut overall,
            zones.entry(zone.unwrap_or("").to_string()).or_default(),
            hours.entry(hour).or_default(),
        ] {
            s.alerts += 1;
            s.ack.extend(ack);
            s.recover.extend(recover);
        }
    }
    ResponseFigures {
        since: crate::clock::rfc3339_ms(since_ms),
        overall: overall.figures(),
        zones: zones.into_iter().map(|(z, s)| (z, s.figures())).collect(),
        hours: hours.into_iter().map(|(h, s)| (h, s.figures())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::rfc3339_ms;

    const T0: i64 = 1_796_040_000_000; // Monday 12:00 UTC
    const MIN: i64 = 60_000;

    fn alert(raised: i64, ack_after: Option<i64>, recover_after: Option<i64>) -> Alert {
        Alert {
            raised_at: rfc3339_ms(raised),
            acknowledged_at: ack_after.map(|a| rfc3339_ms(raised + a)),
            cleared_at: recover_after.map(|r| rfc3339_ms(raised + r)),
            ..Alert::default()
        }
    }

    #[test]
    fn medians_and_ninetieth_percentiles_per_zone_and_hour() {
        let alerts = [
            (alert(T0, Some(2 * MIN), Some(10 * MIN)), Some("food")),
            (alert(T0 + 5 * MIN, Some(4 * MIN), None), Some("food")),
            (alert(T0 + 60 * MIN, None, Some(6 * MIN)), Some("bar")),
            (alert(T0 + 61 * MIN, Some(12 * MIN), Some(20 * MIN)), None),
            // Before the period: left out.
            (
                alert(T0 - 24 * 60 * MIN, Some(MIN), Some(MIN)),
                Some("food"),
            ),
        ];
        let f = figures(
            alerts.iter().map(|(a, z)| (a, *z)),
            &SiteTime::utc(),
            T0 - MIN,
        );
        assert_eq!(f.overall.alerts, 4);
        assert_eq!(f.overall.acknowledged, 3);
        assert_eq!(f.overall.ack_median_secs, Some(240.0));
        assert_eq!(f.overall.ack_p90_secs, Some(720.0));
        assert_eq!(f.overall.recovered, 3);
        assert_eq!(f.overall.recover_median_secs, Some(600.0));
        assert_eq!(f.overall.ack_secs_sum, 1080.0);
        let food = &f.zones["food"];
        assert_eq!(
            (food.alerts, food.ack_median_secs, food.recover_median_secs),
            (2, Some(120.0), Some(600.0))
        );
        assert_eq!(f.zones[""].alerts, 1, "terminals in no zone");
        assert_eq!(f.hours.keys().copied().collect::<Vec<_>>(), [12, 13]);
        assert_eq!(f.hours[&13].alerts, 2);
    }

    #[test]
    fn hours_are_the_sites_local_hours() {
        let a = alert(T0, Some(MIN), None);
        let ny = SiteTime::from_config(Some("America/New_York"), 0).unwrap();
        let f = figures(std::iter::once((&a, None)), &ny, 0);
        assert_eq!(
            f.hours.keys().copied().collect::<Vec<_>>(),
            [7],
            "12:00 UTC is 07:00 EST"
        );
    }
}
