//! The site's local time: an IANA time zone (daylight saving included) or
//! a fixed offset from UTC. Days, quarters of an hour, the hour × weekday
//! table and rollout windows are reckoned in it, so staffing figures read
//! in the venue's own hours.

use anyhow::Context;

/// How Unix time maps to the site's wall clock.
#[derive(Debug, Clone)]
pub enum SiteTime {
    /// `scores.utc_offset_minutes`, the same all year.
    Fixed { offset_ms: i64 },
    /// `scores.time_zone`, from the system's tz database.
    Zone(jiff::tz::TimeZone),
}

impl SiteTime {
    /// From the configuration: the zone name when set, else the offset.
    pub fn from_config(
        time_zone: Option<&str>,
        utc_offset_minutes: i32,
    ) -> anyhow::Result<SiteTime> {
        match time_zone {
            Some(name) => jiff::tz::TimeZone::get(name)
                .map(SiteTime::Zone)
                .with_context(|| {
                    format!(
                        "scores.time_zone {name:?} is not a time zone in this system's tz \
                         database (an IANA name such as \"Europe/London\"; install the \
                         tzdata package if names are missing)"
                    )
                }),
            None => Ok(SiteTime::Fixed {
                offset_ms: i64::from(utc_offset_minutes) * 60_000,
            }),
        }
    }

    pub fn utc() -> SiteTime {
        SiteTime::Fixed { offset_ms: 0 }
    }

    /// The site's offset from UTC at a Unix time (ms).
    pub fn offset_ms(&self, unix_ms: i64) -> i64 {
        match self {
            SiteTime::Fixed { offset_ms } => *offset_ms,
            SiteTime::Zone(tz) => match jiff::Timestamp::from_millisecond(unix_ms) {
                Ok(t) => i64::from(tz.to_offset(t).seconds()) * 1000,
                Err(_) => 0,
            },
        }
    }

    /// Wall-clock milliseconds (local time read as if it were UTC).
    pub fn local_ms(&self, unix_ms: i64) -> i64 {
        unix_ms + self.offset_ms(unix_ms)
    }

    /// The Unix time of a wall-clock time. In the hour a clock goes back
    /// (two instants), the later; in the hour it skips, shifted by it.
    pub fn unix_ms(&self, local_ms: i64) -> i64 {
        let guess = local_ms - self.offset_ms(local_ms);
        local_ms - self.offset_ms(guess)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_fixed_offset_is_the_same_all_year() {
        let t = SiteTime::from_config(None, 60).unwrap();
        assert_eq!(t.local_ms(0), HOUR);
        assert_eq!(t.unix_ms(HOUR), 0);
    }

    #[test]
    fn a_zone_follows_daylight_saving() {
        let london = SiteTime::from_config(Some("Europe/London"), 0).unwrap();
        // 2026-03-29 01:00 UTC: clocks go forward to 02:00 BST.
        let change = 1_774_746_000_000;
        assert_eq!(london.offset_ms(change - 1), 0);
        assert_eq!(london.offset_ms(change), HOUR);
        assert_eq!(london.local_ms(change + HOUR), change + 2 * HOUR);
        assert_eq!(london.unix_ms(change + 2 * HOUR), change + HOUR);
        // Midsummer and midwinter.
        assert_eq!(london.offset_ms(1_782_000_000_000), HOUR);
        assert_eq!(london.offset_ms(1_798_000_000_000), 0);
    }

    #[test]
    fn an_unknown_zone_is_a_clear_error() {
        let e = SiteTime::from_config(Some("Mars/Olympus"), 0).unwrap_err();
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
    }
}
