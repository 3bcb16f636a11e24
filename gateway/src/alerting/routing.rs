//! Who hears about which alert, and when: routes, quiet hours and
//! escalation, as a sans-IO rule book. [`Routing::handle_transition`] turns
//! one alert transition into notifications; [`Routing::poll`] (every
//! second) finds alerts whose quiet hours ended or whose escalation is due.
//! Nothing here does I/O or reads a clock: tests drive it with a virtual one.
//!
//! - `raised` / `reopened`: every matching route outside its quiet hours;
//!   the channels told are recorded on the alert (`notified`).
//! - `acknowledged` / `recovered`: the channels told about the alert, so
//!   whoever heard of it hears it is handled; nobody else.
//! - `escalated`: the `escalate_to` channels of the matching routes.
//! - `closed`: nobody (it is on the dashboard and upstream).

use pressline_protocol::upstream::Alert;
use pressline_protocol::upstream::{AlertEvent, AlertKind, Lifecycle};

use super::config::{AlertingConfig, QuietHours};
use crate::site_time::SiteTime;

/// One message to send: an alert transition for one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub channel: String,
    /// `{site}:{alert id}:{revision}`: the same for every delivery attempt
    /// (and every channel) of one transition.
    pub idempotency_key: String,
    /// The alert as of the transition.
    pub alert: Alert,
}

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
struct Route {
    name: String,
    kinds: Vec<AlertKind>,
    zones: Vec<String>,
    channels: Vec<String>,
    escalate_to: Vec<String>,
    escalate_after_ms: Option<i64>,
    quiet: Option<QuietHours>,
}

/// The routing rules of one site.
#[derive(Debug, Clone)]
pub struct Routing {
    routes: Vec<Route>,
    site_time: SiteTime,
}

/// What [`Routing::poll`] found.
#[derive(Debug, Default, PartialEq)]
pub struct Due {
    /// Alerts to mark escalated (then [`Routing::handle_transition`]).
    pub escalate: Vec<u64>,
    /// Late notifications of open alerts (a route's quiet hours ended).
    pub notify: Vec<Notification>,
}

impl Routing {
    /// From a validated configuration.
    pub fn new(config: &AlertingConfig, site_time: SiteTime) -> Routing {
        let routes = config
            .routes
            .iter()
            .map(|r| Route {
                name: r.name.clone(),
                kinds: r.kinds.clone(),
                zones: r.zones.clone(),
                channels: r.channels.clone(),
                escalate_to: r.escalate_to.clone(),
                escalate_after_ms: r
                    .escalate_after_secs
                    .map(|s| s.saturating_mul(1000).min(i64::MAX as u64) as i64),
                quiet: r
                    .quiet_hours
                    .as_deref()
                    .and_then(|q| QuietHours::parse(q).ok()),
            })
            .collect();
        Routing { routes, site_time }
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    fn matching<'a>(
        &'a self,
        alert: &'a Alert,
        zone: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Route> {
        self.routes.iter().filter(move |r| {
            (r.kinds.is_empty() || r.kinds.iter().any(|k| *k == alert.kind))
                && (r.zones.is_empty() || zone.is_some_and(|z| r.zones.iter().any(|rz| rz == z)))
        })
    }

    fn quiet(&self, route: &Route, now_ms: i64) -> bool {
        route.quiet.is_some_and(|q| {
            let minute = self.site_time.local_ms(now_ms).rem_euclid(86_400_000) / 60_000;
            q.contains(minute as u32)
        })
    }

    /// Channels of the matching routes outside quiet hours, not yet told.
    fn raise_channels(&self, now_ms: i64, alert: &Alert, zone: Option<&str>) -> Vec<String> {
        let mut channels: Vec<String> = Vec::new();
        for route in self
            .matching(alert, zone)
            .filter(|r| !self.quiet(r, now_ms))
        {
            for c in &route.channels {
                if !alert.notified.contains(c) && !channels.contains(c) {
                    channels.push(c.clone());
                }
            }
        }
        channels
    }

    /// The notifications one transition causes. `zone` is the alert's
    /// zone, or its terminal's.
    pub fn handle_transition(
        &self,
        now_ms: i64,
        alert: &Alert,
        zone: Option<&str>,
    ) -> Vec<Notification> {
        let channels: Vec<String> = match &alert.event {
            Some(event @ (AlertEvent::Raised | AlertEvent::Reopened)) => {
                let mut c = if *event == AlertEvent::Reopened {
                    alert.notified.clone()
                } else {
                    Vec::new()
                };
                for n in self.raise_channels(now_ms, alert, zone) {
                    if !c.contains(&n) {
                        c.push(n);
                    }
                }
                c
            }
            Some(AlertEvent::Acknowledged | AlertEvent::Recovered) => alert.notified.clone(),
            Some(AlertEvent::Escalated) => {
                let mut c: Vec<String> = Vec::new();
                for route in self.matching(alert, zone) {
                    for n in &route.escalate_to {
                        if !c.contains(n) {
                            c.push(n.clone());
                        }
                    }
                }
                c
            }
            _ => Vec::new(),
        };
        channels
            .into_iter()
            .map(|channel| Notification {
                channel,
                idempotency_key: alert.transition_key(),
                alert: alert.clone(),
            })
            .collect()
    }

    /// Every second: escalations due and notifications held by quiet hours.
    /// `alerts` with the zone each belongs to.
    pub fn poll<'a>(
        &self,
        now_ms: i64,
        alerts: impl Iterator<Item = (&'a Alert, Option<&'a str>)>,
    ) -> Due {
        let mut due = Due::default();
        for (alert, zone) in alerts {
            // Someone is on it, or it recovered: nothing more to chase.
            if alert.lifecycle != Some(Lifecycle::Raised) {
                continue;
            }
            for channel in self.raise_channels(now_ms, alert, zone) {
                due.notify.push(Notification {
                    channel,
                    idempotency_key: alert.transition_key(),
                    alert: alert.clone(),
                });
            }
            let raised = crate::clock::parse_rfc3339_ms(&alert.raised_at).unwrap_or(now_ms);
            let escalation_due = alert.escalated_at.is_none()
                && self.matching(alert, zone).any(|r| {
                    r.escalate_after_ms
                        .is_some_and(|after| now_ms - raised >= after)
                        && !self.quiet(r, now_ms)
                        && r.channels.iter().any(|c| alert.notified.contains(c))
                });
            if escalation_due {
                due.escalate.push(alert.id);
            }
        }
        due
    }

    /// Names of the routes an alert matches (for logs).
    pub fn route_names(&self, alert: &Alert, zone: Option<&str>) -> Vec<String> {
        self.matching(alert, zone).map(|r| r.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::lifecycle;
    use crate::clock::rfc3339_ms;

    /// 2026-11-30 12:00 UTC, a Monday.
    const NOON: i64 = 1_796_040_000_000;
    const MIN: i64 = 60_000;

    fn routing(toml_text: &str) -> Routing {
        let config: AlertingConfig = toml::from_str(toml_text).unwrap();
        config.validate().unwrap();
        Routing::new(&config, SiteTime::utc())
    }

    const CONFIG: &str = r#"
[channels.floor]
kind = "slack"
url = "https://hooks.slack.com/services/floor"
[channels.managers]
kind = "teams"
url = "https://example.org/teams"
[channels.techs]
kind = "ntfy"
url = "https://ntfy.sh/arena-techs"
[[routes]]
name = "food court staff"
kinds = ["zone_unhappy"]
zones = ["food"]
channels = ["floor"]
escalate_to = ["managers"]
escalate_after_secs = 600
[[routes]]
name = "technicians"
kinds = ["offline", "low_battery"]
channels = ["techs"]
quiet_hours = "22:00-07:00"
"#;

    fn zone_alert(at: i64) -> Alert {
        let mut a = Alert {
            id: 1,
            site: "arena".into(),
            kind: AlertKind::ZoneUnhappy,
            zone: Some("food".into()),
            raised_at: rfc3339_ms(at),
            ..Alert::default()
        };
        lifecycle::start(&mut a);
        a
    }

    fn battery_alert(at: i64) -> Alert {
        let mut a = Alert {
            id: 2,
            site: "arena".into(),
            terminal: "t-7".into(),
            kind: AlertKind::LowBattery,
            raised_at: rfc3339_ms(at),
            ..Alert::default()
        };
        lifecycle::start(&mut a);
        a
    }

    fn channels(n: &[Notification]) -> Vec<&str> {
        n.iter().map(|n| n.channel.as_str()).collect()
    }

    #[test]
    fn alerts_go_to_the_routes_they_match() {
        let r = routing(CONFIG);
        let a = zone_alert(NOON);
        let n = r.handle_transition(NOON, &a, Some("food"));
        assert_eq!(channels(&n), ["floor"]);
        assert_eq!(n[0].idempotency_key, "arena:1:1");
        // Another zone: no route.
        assert!(r.handle_transition(NOON, &a, Some("bar")).is_empty());
        // Health alerts go to the technicians whatever the zone.
        assert_eq!(
            channels(&r.handle_transition(NOON, &battery_alert(NOON), None)),
            ["techs"]
        );
    }

    #[test]
    fn acknowledgements_and_recoveries_go_to_whoever_was_told() {
        let r = routing(CONFIG);
        let mut a = zone_alert(NOON);
        a.notified = vec!["floor".into()];
        lifecycle::acknowledge(&mut a, NOON + MIN, "Anna", None).unwrap();
        assert_eq!(
            channels(&r.handle_transition(NOON + MIN, &a, Some("food"))),
            ["floor"]
        );
        lifecycle::recover(&mut a, NOON + 2 * MIN);
        let n = r.handle_transition(NOON + 2 * MIN, &a, Some("food"));
        assert_eq!(channels(&n), ["floor"]);
        assert_eq!(n[0].idempotency_key, "arena:1:3");
        lifecycle::close(&mut a, NOON + 30 * MIN);
        assert!(r
            .handle_transition(NOON + 30 * MIN, &a, Some("food"))
            .is_empty());
        // Nobody told (quiet hours): nobody hears of the recovery either.
        let mut quiet = battery_alert(NOON);
        lifecycle::recover(&mut quiet, NOON + MIN);
        assert!(r.handle_transition(NOON + MIN, &quiet, None).is_empty());
    }

    #[test]
    fn nobody_acknowledging_escalates_once_after_the_delay() {
        let r = routing(CONFIG);
        let mut a = zone_alert(NOON);
        a.notified = vec!["floor".into()];
        let poll = |a: &Alert, at| r.poll(at, std::iter::once((a, Some("food")))).escalate;
        assert!(poll(&a, NOON + 9 * MIN).is_empty());
        assert_eq!(poll(&a, NOON + 10 * MIN), [1]);
        lifecycle::escalate(&mut a, NOON + 10 * MIN);
        assert_eq!(
            channels(&r.handle_transition(NOON + 10 * MIN, &a, Some("food"))),
            ["managers"]
        );
        assert!(poll(&a, NOON + 20 * MIN).is_empty(), "once");
        // Acknowledged in time: no escalation.
        let mut b = zone_alert(NOON);
        b.notified = vec!["floor".into()];
        lifecycle::acknowledge(&mut b, NOON + 5 * MIN, "Anna", None).unwrap();
        assert!(poll(&b, NOON + 11 * MIN).is_empty());
        // Recovered by itself in time: no escalation either.
        let mut c = zone_alert(NOON);
        c.notified = vec!["floor".into()];
        lifecycle::recover(&mut c, NOON + 5 * MIN);
        assert!(poll(&c, NOON + 11 * MIN).is_empty());
    }

    #[test]
    fn quiet_hours_hold_notifications_until_they_end() {
        let r = routing(CONFIG);
        let night = NOON + 11 * 60 * MIN; // 23:00
        let morning = NOON + 19 * 60 * MIN; // 07:00 next day
        let a = battery_alert(night);
        assert!(
            r.handle_transition(night, &a, None).is_empty(),
            "silent at night"
        );
        let poll = |at| r.poll(at, std::iter::once((&a, None))).notify;
        assert!(poll(morning - MIN).is_empty());
        let late = poll(morning);
        assert_eq!(channels(&late), ["techs"]);
        assert_eq!(late[0].idempotency_key, "arena:2:1");
        // Once told, the morning poll does not repeat it.
        let mut told = a.clone();
        told.notified = vec!["techs".into()];
        assert!(r
            .poll(morning + MIN, std::iter::once((&told, None)))
            .notify
            .is_empty());
        // Acknowledged during the night: nobody is woken for it later.
        let mut handled = a.clone();
        lifecycle::acknowledge(&mut handled, night + MIN, "night shift", None).unwrap();
        assert!(r
            .poll(morning, std::iter::once((&handled, None)))
            .notify
            .is_empty());
    }

    #[test]
    fn quiet_hours_follow_the_sites_clock_across_daylight_saving() {
        let config: AlertingConfig = toml::from_str(CONFIG).unwrap();
        let london = SiteTime::from_config(Some("Europe/London"), 0).unwrap();
        let r = Routing::new(&config, london);
        // 2026-07-01 21:30 UTC is 22:30 BST: quiet in London, not in UTC.
        let summer = 1_782_941_400_000;
        assert!(r
            .handle_transition(summer, &battery_alert(summer), None)
            .is_empty());
        assert_eq!(
            channels(&routing(CONFIG).handle_transition(summer, &battery_alert(summer), None)),
            ["techs"]
        );
    }

    #[test]
    fn a_reopened_alert_goes_to_those_told_before_and_any_new_route() {
        let r = routing(CONFIG);
        let mut a = zone_alert(NOON);
        a.notified = vec!["floor".into()];
        lifecycle::recover(&mut a, NOON + MIN);
        lifecycle::reopen(&mut a, "again".into());
        let n = r.handle_transition(NOON + 2 * MIN, &a, Some("food"));
        assert_eq!(channels(&n), ["floor"]);
        assert_eq!(n[0].alert.event, Some(AlertEvent::Reopened));
    }
}
