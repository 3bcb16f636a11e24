//! The record of reports sent (`report_mailings`): a claim before sending,
//! a mark after, so several senders and restarts send each report once.

use pressline_reports::{fmt_date, Period};
use tokio_postgres::Client;

/// After this long a claim whose sender never marked it sent is taken
/// over (the sender died, or its relay hung past every timeout).
pub const CLAIM_EXPIRY_SECS: i64 = 600;

/// One report to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailing<'a> {
    pub subscription: &'a str,
    pub recipient: &'a str,
    pub period: Period,
}

impl Mailing<'_> {
    fn params(&self) -> (String, String) {
        (fmt_date(self.period.from), fmt_date(self.period.to))
    }
}

/// Claims the mailing for `sender`: true when this sender is to send it
/// now (nobody sent it, and nobody else holds a live claim).
pub async fn claim(
    client: &Client,
    m: &Mailing<'_>,
    sender: &str,
) -> Result<bool, tokio_postgres::Error> {
    let (from, to) = m.params();
    let won = client
        .query_opt(
            "INSERT INTO report_mailings AS r (subscription, recipient, period_from, period_to, claimed_at, claimed_by) \
             VALUES ($1, $2, $3::text::date, $4::text::date, now(), $5) \
             ON CONFLICT (subscription, recipient, period_from, period_to) DO UPDATE \
               SET claimed_at = now(), claimed_by = EXCLUDED.claimed_by \
               WHERE r.sent_at IS NULL AND r.claimed_at < now() - make_interval(secs => $6) \
             RETURNING 1",
            &[&m.subscription, &m.recipient, &from, &to, &sender, &(CLAIM_EXPIRY_SECS as f64)],
        )
        .await?;
    Ok(won.is_some())
}

/// The mailing went out (marked whoever holds the claim now: it was sent).
pub async fn sent(client: &Client, m: &Mailing<'_>) -> Result<(), tokio_postgres::Error> {
    let (from, to) = m.params();
    client
        .execute(
            "UPDATE report_mailings SET sent_at = coalesce(sent_at, now()) \
             WHERE subscription = $1 AND recipient = $2 AND period_from = $3::text::date AND period_to = $4::text::date",
            &[&m.subscription, &m.recipient, &from, &to],
        )
        .await?;
    Ok(())
}

/// Sending failed: `sender`'s claim is let go so the next pass (of any
/// sender) tries again. A claim another sender took over meanwhile is
/// theirs and stays.
pub async fn release(
    client: &Client,
    m: &Mailing<'_>,
    sender: &str,
) -> Result<(), tokio_postgres::Error> {
    let (from, to) = m.params();
    client
        .execute(
            "UPDATE report_mailings SET claimed_at = '-infinity' \
             WHERE subscription = $1 AND recipient = $2 AND period_from = $3::text::date \
               AND period_to = $4::text::date AND sent_at IS NULL AND claimed_by = $5",
            &[&m.subscription, &m.recipient, &from, &to, &sender],
        )
        .await?;
    Ok(())
}
