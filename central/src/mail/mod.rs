//! Reports by e-mail (`pressline-central mail`): each subscription's
//! daily, weekly or monthly report to each of its recipients through the
//! operator's SMTP relay, with the web view's charts as images and a link
//! to the same view.
//!
//! Sending is recorded in PostgreSQL (`report_mailings`): a report is
//! claimed before it is sent and marked after, so it goes out once per
//! recipient and period across restarts and however many senders run.
//!
//! # Layout
//! - [`config`]: the relay, the web view's address, the subscriptions.
//! - [`schedule`]: which period is due at a local time. Pure.
//! - [`ledger`]: claims and marks in `report_mailings`.
//! - [`content`]: the figures a report shows (the shared report code).
//! - [`compose`]: subject, HTML and text, charts as SVG. Pure.
//! - [`png`]: the charts drawn as PNG.

pub mod compose;
pub mod config;
pub mod content;
pub mod ledger;
pub mod png;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, MultiPart, SinglePart};
use lettre::{Message, Transport};
use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::web::reader::Reader;
use config::{MailConfig, Subscription};

/// How often a running sender looks for reports due.
pub const PASS_EVERY: Duration = Duration::from_secs(60);
/// Longest one conversation with the relay may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(60);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub sent: u32,
    /// Sent before (or being sent by another sender).
    pub already: u32,
    pub failed: u32,
}

/// A message ready for any recipient of its subscription.
struct Ready {
    subject: String,
    html: String,
    text: String,
    images: Vec<(&'static str, Vec<u8>)>,
}

impl Ready {
    fn message(&self, from: &lettre::message::Mailbox, to: &str) -> anyhow::Result<Message> {
        let png = ContentType::parse("image/png")?;
        let mut related = MultiPart::related().singlepart(SinglePart::html(self.html.clone()));
        for (cid, bytes) in &self.images {
            related = related.singlepart(
                Attachment::new_inline(cid.to_string()).body(bytes.clone(), png.clone()),
            );
        }
        Ok(Message::builder()
            .from(from.clone())
            .to(to.parse()?)
            .subject(self.subject.clone())
            .multipart(
                MultiPart::alternative()
                    .singlepart(SinglePart::plain(self.text.clone()))
                    .multipart(related),
            )?)
    }
}

async fn prepare(
    client: &Client,
    config: &MailConfig,
    sub: &Subscription,
    period: pressline_reports::Period,
) -> anyhow::Result<Ready> {
    let content = content::gather(client, sub, period).await.map_err(|e| {
        anyhow::anyhow!("cannot read the figures: {}", crate::database::describe(&e))
    })?;
    let composed = compose::compose(&content, &config.web_url);
    let mut images = Vec::new();
    for (cid, svg) in &composed.charts {
        images.push((*cid, png::svg_to_png(svg)?));
    }
    Ok(Ready {
        subject: composed.subject,
        html: composed.html,
        text: composed.text,
        images,
    })
}

/// The local time in `zone`, as PostgreSQL's time zone database says.
async fn local_time(
    client: &Client,
    at: OffsetDateTime,
    zone: &str,
) -> anyhow::Result<time::PrimitiveDateTime> {
    let row = client
        .query_one("SELECT ($1::timestamptz AT TIME ZONE $2)", &[&at, &zone])
        .await
        .map_err(|e| anyhow::anyhow!("time zone {zone:?}: {}", crate::database::describe(&e)))?;
    Ok(row.try_get(0)?)
}

/// Every subscription's time zone, checked against the database's zone
/// names (abbreviations such as `BST` and POSIX strings such as `UTC+2`,
/// which PostgreSQL also takes, are refused: they do not follow daylight
/// saving, and `UTC+2` means two hours *behind*).
pub async fn check_time_zones(client: &Client, config: &MailConfig) -> anyhow::Result<()> {
    for sub in &config.subscriptions {
        let known = client
            .query_opt(
                "SELECT 1 FROM pg_timezone_names WHERE name = $1",
                &[&sub.time_zone],
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the time zone names: {}",
                    crate::database::describe(&e)
                )
            })?
            .is_some();
        anyhow::ensure!(
            known,
            "subscription {:?}: time_zone = {:?} is not an IANA zone name this database knows (e.g. \"Europe/London\")",
            sub.name,
            sub.time_zone
        );
    }
    Ok(())
}

async fn send(config: &MailConfig, message: Message) -> anyhow::Result<()> {
    let url = config.smtp_url.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let transport = lettre::SmtpTransport::from_url(&url)?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        transport.send(&message)?;
        Ok(())
    })
    .await?
}

/// Marks a mailing sent, trying a few times: once the relay accepted it,
/// an unmarked mailing would be sent again after its claim expires.
async fn mark_sent(reader: &Reader, mailing: &ledger::Mailing<'_>) -> anyhow::Result<()> {
    let mut last = None;
    for attempt in 0..5u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(attempt * 2)).await;
        }
        let outcome = async {
            Ok::<_, anyhow::Error>(ledger::sent(&*reader.client().await?, mailing).await?)
        }
        .await;
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| anyhow::anyhow!("not marked"))
        .context("sent, but not marked sent: the recipient gets it again once the claim expires"))
}

/// One subscription's due report to each recipient not yet sent it. The
/// report is composed once, when the first claim is won; if that fails,
/// the rest of the subscription waits for the next pass.
async fn subscription_pass(
    reader: &Reader,
    client: &Client,
    config: &MailConfig,
    sub: &Subscription,
    at: OffsetDateTime,
    sender: &str,
    pass: &mut Pass,
) -> anyhow::Result<()> {
    let local = local_time(client, at, &sub.time_zone).await?;
    let period = schedule::due(sub.every, local, config.send_after);
    let mut ready: Option<Ready> = None;
    for to in &sub.to {
        let mailing = ledger::Mailing {
            subscription: &sub.name,
            recipient: to,
            period,
        };
        if !ledger::claim(client, &mailing, sender).await? {
            pass.already += 1;
            continue;
        }
        if ready.is_none() {
            match prepare(client, config, sub, period).await {
                Ok(r) => ready = Some(r),
                Err(e) => {
                    ledger::release(client, &mailing, sender).await?;
                    pass.failed += 1;
                    return Err(e.context("cannot compose the report"));
                }
            }
        }
        let outcome = match ready.as_ref().map(|r| r.message(&config.from, to)) {
            Some(Ok(message)) => send(config, message).await,
            Some(Err(e)) => Err(e),
            None => Ok(()),
        };
        match outcome {
            Ok(()) => {
                mark_sent(reader, &mailing).await?;
                pass.sent += 1;
                tracing::info!(subscription = %sub.name, %to, from = %period.from, to_day = %period.to, "report sent");
            }
            Err(e) => {
                ledger::release(client, &mailing, sender).await?;
                pass.failed += 1;
                tracing::warn!(subscription = %sub.name, %to, "report not sent, tried again next pass: {e:#}");
            }
        }
    }
    Ok(())
}

/// Every subscription once, at time `at`.
pub async fn pass(
    reader: &Reader,
    config: &MailConfig,
    at: OffsetDateTime,
    sender: &str,
) -> anyhow::Result<Pass> {
    let client = reader.client().await?;
    let mut pass = Pass::default();
    for sub in &config.subscriptions {
        if let Err(e) = subscription_pass(reader, &client, config, sub, at, sender, &mut pass).await
        {
            pass.failed = pass.failed.max(1);
            tracing::warn!(subscription = %sub.name, "{e:#}");
        }
    }
    Ok(pass)
}

/// Passes every [`PASS_EVERY`] until `shutdown` (one when `once`); `at`
/// fixes the clock (a missed period sent later, or a test).
pub async fn run(
    reader: Arc<Reader>,
    config: MailConfig,
    once: bool,
    at: Option<OffsetDateTime>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Pass> {
    use rand::RngCore;
    let sender = format!(
        "pid {} #{:08x}",
        std::process::id(),
        rand::rngs::OsRng.next_u32()
    );
    tokio::pin!(shutdown);
    loop {
        let now = at.unwrap_or_else(OffsetDateTime::now_utc);
        let result = pass(&reader, &config, now, &sender).await;
        match (&result, once) {
            (_, true) => return result,
            (Ok(p), false) if p.sent > 0 || p.failed > 0 => {
                tracing::info!(sent = p.sent, failed = p.failed, "mail pass")
            }
            (Ok(_), false) => {}
            (Err(e), false) => tracing::warn!("mail pass failed, tried again in a minute: {e:#}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PASS_EVERY) => {}
            _ = &mut shutdown => return result,
        }
    }
}
