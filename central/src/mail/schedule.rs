//! Which period a subscription's report is due for. Pure.
//!
//! A report covers the last whole period (day; Monday to Sunday; calendar
//! month) in the subscription's time zone and goes out once the local
//! clock has passed `send_after` on the day after it ended. Only the
//! latest due period is sent: a sender that was stopped for a while sends
//! the current report, not a backlog.

use pressline_reports::Period;
use time::{Duration, PrimitiveDateTime, Time};

use super::config::Every;

/// The period due at local time `now`.
pub fn due(every: Every, now: PrimitiveDateTime, send_after: Time) -> Period {
    // Before `send_after`, today is not yet a sending day: the period is
    // the one that was due yesterday.
    let today = if now.time() >= send_after {
        now.date()
    } else {
        now.date() - Duration::days(1)
    };
    match every {
        Every::Daily => Period::ending(today - Duration::days(1), 1),
        Every::Weekly => {
            let since_monday = i64::from(today.weekday().number_days_from_monday());
            let sunday = today - Duration::days(since_monday + 1);
            Period::ending(sunday, 7)
        }
        Every::Monthly => {
            let first = today.replace_day(1).unwrap_or(today);
            let end = first - Duration::days(1);
            let start = end.replace_day(1).unwrap_or(end);
            Period {
                from: start,
                to: end,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime, time};

    const SIX: Time = time!(06:00);

    #[test]
    fn a_daily_report_covers_yesterday_once_the_morning_has_come() {
        let p = due(Every::Daily, datetime!(2026-10-27 07:00), SIX);
        assert_eq!(
            (p.from, p.to),
            (date!(2026 - 10 - 26), date!(2026 - 10 - 26))
        );
        let early = due(Every::Daily, datetime!(2026-10-27 05:59), SIX);
        assert_eq!(early.to, date!(2026 - 10 - 25));
    }

    #[test]
    fn a_weekly_report_covers_monday_to_sunday_and_goes_out_on_monday_morning() {
        // Monday 26 October 2026, after six: the week of the 19th.
        let p = due(Every::Weekly, datetime!(2026-10-26 06:00), SIX);
        assert_eq!(
            (p.from, p.to),
            (date!(2026 - 10 - 19), date!(2026 - 10 - 25))
        );
        // Before six on Monday it is still the week before.
        let p = due(Every::Weekly, datetime!(2026-10-26 05:00), SIX);
        assert_eq!(p.to, date!(2026 - 10 - 18));
        // Any day of the week after: the same week.
        let p = due(Every::Weekly, datetime!(2026-11-01 23:00), SIX);
        assert_eq!(p.to, date!(2026 - 10 - 25));
    }

    #[test]
    fn a_monthly_report_covers_the_calendar_month_before() {
        let p = due(Every::Monthly, datetime!(2026-03-01 06:30), SIX);
        assert_eq!(
            (p.from, p.to),
            (date!(2026 - 02 - 01), date!(2026 - 02 - 28))
        );
        let p = due(Every::Monthly, datetime!(2026-03-01 05:30), SIX);
        assert_eq!(
            (p.from, p.to),
            (date!(2026 - 01 - 01), date!(2026 - 01 - 31))
        );
    }
}
