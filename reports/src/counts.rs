//! Presses per face, the Happy Index, and the periods reports cover.

use serde::Serialize;
use time::{Date, Duration};

/// Presses per score (1–4).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts(pub [u64; 4]);

impl Counts {
    pub fn add(&mut self, score: i16, n: u64) {
        if (1..=4).contains(&score) {
            self.0[(score - 1) as usize] += n;
        }
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// 0–100; `None` without presses.
    pub fn happy_index(&self) -> Option<f64> {
        let n = self.total();
        (n > 0).then(|| {
            let points: u64 = self.0.iter().enumerate().map(|(i, c)| i as u64 * c).sum();
            points as f64 * 100.0 / 3.0 / n as f64
        })
    }
    pub fn merge(&mut self, other: &Counts) {
        for i in 0..4 {
            self.0[i] += other.0[i];
        }
    }
    /// Presses per score from a row's four columns starting at `first`.
    pub fn from_row(row: &tokio_postgres::Row, first: usize) -> Counts {
        let mut c = Counts::default();
        for score in 1..=4i16 {
            let n: i64 = row.get(first + score as usize - 1);
            c.add(score, n.max(0) as u64);
        }
        c
    }
}

/// Figures as reports show them: one decimal.
pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Days `[from, to]`, inclusive, in each site's own time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Period {
    #[serde(serialize_with = "iso_date")]
    pub from: Date,
    #[serde(serialize_with = "iso_date")]
    pub to: Date,
}

fn iso_date<S: serde::Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&fmt_date(*d))
}

/// `YYYY-MM-DD`.
pub fn fmt_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// A `YYYY-MM-DD` date, `None` when it is not one.
pub fn parse_date(text: &str) -> Option<Date> {
    Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()
}

impl Period {
    /// The `days` days ending with `to` (cut at the calendar's first day).
    pub fn ending(to: Date, days: u32) -> Period {
        Period {
            from: to
                .checked_sub(Duration::days(i64::from(days.max(1)) - 1))
                .unwrap_or(Date::MIN),
            to,
        }
    }
    pub fn days(&self) -> i64 {
        (self.to - self.from).whole_days() + 1
    }
    pub fn previous(&self) -> Period {
        Period {
            from: self
                .from
                .checked_sub(Duration::days(self.days()))
                .unwrap_or(Date::MIN),
            to: self.from.previous_day().unwrap_or(Date::MIN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn counts(c: [u64; 4]) -> Counts {
        Counts(c)
    }

    #[test]
    fn the_happy_index_weighs_the_four_faces_evenly_from_0_to_100() {
        assert_eq!(counts([1, 0, 0, 0]).happy_index(), Some(0.0));
        assert_eq!(counts([0, 0, 0, 5]).happy_index(), Some(100.0));
        // (0 + 1 + 2 + 3) / 4 / 3 × 100
        assert_eq!(counts([1, 1, 1, 1]).happy_index(), Some(50.0));
        assert_eq!(counts([0, 0, 0, 0]).happy_index(), None);
    }

    #[test]
    fn periods_are_whole_days_and_the_previous_one_is_as_long() {
        let p = Period::ending(date!(2026 - 11 - 29), 7);
        assert_eq!((p.from, p.days()), (date!(2026 - 11 - 23), 7));
        let b = p.previous();
        assert_eq!(
            (b.from, b.to),
            (date!(2026 - 11 - 16), date!(2026 - 11 - 22))
        );
    }

    #[test]
    fn dates_parse_only_in_iso_form() {
        assert_eq!(parse_date("2026-03-29"), Some(date!(2026 - 03 - 29)));
        assert_eq!(parse_date("29/03/2026"), None);
        assert_eq!(parse_date("2026-02-30"), None);
    }
}
