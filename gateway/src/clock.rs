//! The wall clock: now as Unix milliseconds, UTC days, RFC 3339 text.
//!
//! One place for it, at the bottom floor of the crate, so every subsystem
//! can tell the time without depending on the press path.

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, as Unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The UTC day number of a Unix time in ms.
pub fn utc_day(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(86_400_000)
}

/// Unix milliseconds as RFC 3339 UTC with millisecond precision,
/// e.g. `2026-11-22T11:07:04.123Z`.
/// Unix milliseconds of an RFC 3339 time (as written by [`rfc3339_ms`]).
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

pub fn rfc3339_ms(unix_ms: i64) -> String {
    let nanos = (unix_ms as i128) * 1_000_000;
    let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let t = t
        .replace_nanosecond((unix_ms.rem_euclid(1000) as u32) * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_with_milliseconds() {
        assert_eq!(
            super::rfc3339_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(super::rfc3339_ms(0), "1970-01-01T00:00:00Z");
    }
}
