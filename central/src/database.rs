//! PostgreSQL: the schema's migrations, and one transaction per batch of
//! documents. Presses are inserted with `ON CONFLICT (id) DO NOTHING`, so a
//! message delivered twice (a consumer killed after the commit, before its
//! ack) is stored once; the latest health, an alert's clearing and the
//! site's status are upserts that never go back in time.

use std::collections::BTreeMap;

use anyhow::Context;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::documents::Document;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Serialises migrations between consumers starting at once.
const MIGRATION_LOCK: i64 = 0x7072_6573_736c_696e; // "presslin"

/// One connection to the database.
pub struct Database {
    client: Client,
    /// The session's staging table exists.
    staging: bool,
}

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    pub presses_inserted: u64,
    pub presses_duplicate: u64,
    pub rejected: u64,
    /// Unix ms of the newest press `received_at` in the batch.
    pub newest_received_ms: Option<i64>,
    /// Positions in the batch of documents the database refused (kept in
    /// `rejected_messages`).
    pub refused: Vec<usize>,
}

/// Why a commit failed, and so what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The connection is gone or the server is unavailable: reconnect and
    /// try the same batch again.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A conflict with another consumer's transaction: try again.
    #[error("the transaction conflicted with another consumer's: {0}")]
    Conflict(String),
    /// A document the database refused (a value out of range, a NUL byte):
    /// commit the batch document by document to find it.
    #[error("the database refused a document: {0}")]
    Refused(String),
}

impl CommitError {
    fn from_postgres(e: tokio_postgres::Error) -> CommitError {
        let text = describe(&e);
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                CommitError::Conflict(text)
            }
            // Class 22 (data exception) and 23 (integrity constraint): the
            // document, not the database.
            Some(c) if c.code().starts_with("22") || c.code().starts_with("23") => {
                CommitError::Refused(text)
            }
            _ => CommitError::Unavailable(text),
        }
    }
}

/// A database error with the server's code and message ("db error" alone
/// says nothing).
pub fn describe(e: &tokio_postgres::Error) -> String {
    {
        match e.as_db_error() {
            Some(db) => match db.detail() {
                Some(detail) => format!("{}: {} ({detail})", db.code().code(), db.message()),
                None => format!("{}: {}", db.code().code(), db.message()),
            },
            None => match std::error::Error::source(&e) {
                Some(source) => format!("{e}: {source}"),
                None => e.to_string(),
            },
        }
    }
}

impl Database {
    /// Connects (`postgres://user:pass@host:port/db` or key=value form).
    pub async fn connect(url: &str, tls: &MakeRustlsConnect) -> anyhow::Result<Database> {
        let (client, connection) = tokio_postgres::connect(url, tls.clone())
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(url)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %describe(&e), "PostgreSQL connection closed");
            }
        });
        Ok(Database {
            client,
            staging: false,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Brings the schema to this version (under an advisory lock, so
    /// consumers started together do not race). Returns the migrations
    /// applied now.
    pub async fn migrate(&mut self) -> anyhow::Result<Vec<String>> {
        self.client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .context("cannot take the migration lock")?;
        let report = embedded::migrations::runner()
            .run_async(&mut self.client)
            .await;
        let _ = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        let report = report.context("cannot migrate the schema")?;
        Ok(report
            .applied_migrations()
            .iter()
            .map(|m| m.to_string())
            .collect())
    }

    /// Stores a batch in one transaction. On [`CommitError::Refused`] call
    /// [`Database::commit_each`].
    pub async fn commit(
        &mut self,
        batch: &[(&str, &[u8], &Document)],
    ) -> Result<Committed, CommitError> {
        if !self.staging {
            // Presses arrive by binary COPY into this session's own
            // temporary table, then one INSERT ... ON CONFLICT moves them:
            // COPY is PostgreSQL's fastest way in, and the conflict rule
            // still makes a redelivered press a no-op.
            self.client
                .batch_execute(
                    "CREATE TEMPORARY TABLE IF NOT EXISTS incoming_presses \
                     (LIKE presses INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
                )
                .await
                .map_err(CommitError::from_postgres)?;
            self.staging = true;
        }
        let tx = self
            .client
            .transaction()
            .await
            .map_err(CommitError::from_postgres)?;
        let committed = write(&tx, batch).await?;
        tx.commit().await.map_err(CommitError::from_postgres)?;
        Ok(committed)
    }

    /// Stores a batch document by document; one the database refuses goes
    /// to `rejected_messages` with the database's reason.
    pub async fn commit_each(
        &mut self,
        batch: &[(&str, &[u8], &Document)],
    ) -> Result<Committed, CommitError> {
        let mut total = Committed::default();
        for (position, &item) in batch.iter().enumerate() {
            let one = match self.commit(&[item]).await {
                Err(CommitError::Refused(reason)) => {
                    total.refused.push(position);
                    let rejected = Document::Rejected {
                        reason: format!("refused by the database: {reason}"),
                    };
                    self.commit(&[(item.0, item.1, &rejected)]).await?
                }
                other => other?,
            };
            total.presses_inserted += one.presses_inserted;
            total.presses_duplicate += one.presses_duplicate;
            total.rejected += one.rejected;
            total.newest_received_ms = total.newest_received_ms.max(one.newest_received_ms);
        }
        Ok(total)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn write(
    tx: &tokio_postgres::Transaction<'_>,
    batch: &[(&str, &[u8], &Document)],
) -> Result<Committed, CommitError> {
    write_rows(tx, batch).await.map_err(|e| match e {
        WriteError::Postgres(e) => CommitError::from_postgres(e),
        WriteError::BadTime(reason) => CommitError::Refused(reason),
    })
}

enum WriteError {
    Postgres(tokio_postgres::Error),
    BadTime(String),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        WriteError::Postgres(e)
    }
}

/// One row of COPY's text format: tab-separated, `\N` for NULL, and
/// backslash, tab, newline and carriage return escaped.
fn copy_row(out: &mut String, fields: &[Option<&str>]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match field {
            None => out.push_str("\\N"),
            Some(text) => {
                for c in text.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\t' => out.push_str("\\t"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        c => out.push(c),
                    }
                }
            }
        }
    }
    out.push('\n');
}

fn time_of(at: &str) -> Result<time::OffsetDateTime, WriteError> {
    crate::documents::parse_time(at)
        .ok_or_else(|| WriteError::BadTime(format!("{at:?} is not an RFC 3339 time")))
}

async fn write_rows(
    tx: &tokio_postgres::Transaction<'_>,
    batch: &[(&str, &[u8], &Document)],
) -> Result<Committed, WriteError> {
    let mut committed = Committed::default();
    // Sorted, so two consumers' transactions take row locks in one order
    // (no deadlocks between them).
    let mut presses: BTreeMap<&str, &pressline_protocol::upstream::UpstreamPress> = BTreeMap::new();
    let mut health = BTreeMap::new();
    let mut alerts = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    let mut ota = Vec::new();
    let mut rejected = BTreeMap::new();
    for &(key, body, document) in batch {
        match document {
            Document::Press(p) => {
                presses.insert(p.id.as_str(), p);
                committed.newest_received_ms = committed
                    .newest_received_ms
                    .max(crate::documents::unix_ms(&p.received_at));
            }
            Document::Health(h, doc) => {
                // Of two for one terminal in a batch, the later one.
                let slot = health
                    .entry((h.site.as_str(), h.id.as_str()))
                    .or_insert((h, doc));
                if slot.0.last_seen <= h.last_seen {
                    *slot = (h, doc);
                }
            }
            Document::Alert(a, doc) => {
                let slot = alerts.entry((a.site.as_str(), a.id)).or_insert((a, doc));
                // The latest transition wins (revision; before the
                // lifecycle, cleared over raised).
                if (a.revision, a.state == "cleared") > (slot.0.revision, slot.0.state == "cleared")
                {
                    *slot = (a, doc);
                }
            }
            Document::Status(s) => {
                statuses.insert(s.site.as_str(), s);
            }
            Document::Ota(o, doc) => ota.push((o, doc)),
            Document::Rejected { reason } => {
                rejected.insert((key, body), reason.as_str());
            }
        }
    }

    if !presses.is_empty() {
        let n = presses.len();
        // The whole batch as one COPY text buffer: one message to the
        // server, no per-row round trip through the client library.
        let mut text = String::with_capacity(n * 160);
        for p in presses.values() {
            // Checked here too: the text goes to the server as is.
            if let Some(at) = &p.pressed_at {
                time_of(at)?;
            }
            time_of(&p.received_at)?;
            copy_row(
                &mut text,
                &[
                    Some(&p.id),
                    Some(&p.site),
                    Some(&p.terminal),
                    p.zone.as_deref(),
                    Some(&p.boot.to_string()),
                    Some(&p.seq.to_string()),
                    Some(&p.button),
                    Some(&p.score.to_string()),
                    p.pressed_at.as_deref(),
                    Some(&p.received_at),
                    Some(if p.counted { "t" } else { "f" }),
                    p.not_counted_reason.as_deref(),
                ],
            );
        }
        let sink = tx
            .copy_in(
                "COPY incoming_presses (id, site, terminal, zone, boot, seq, button, score, \
                 pressed_at, received_at, counted, not_counted_reason) FROM STDIN",
            )
            .await?;
        futures_util::pin_mut!(sink);
        {
            use futures_util::SinkExt;
            sink.send(bytes::Bytes::from(text.into_bytes())).await?;
        }
        sink.finish().await?;
        // In id order, so two consumers' transactions take row locks in
        // one order.
        let inserted = tx
            .execute(
                "INSERT INTO presses (id, site, terminal, zone, boot, seq, button, score, \
                     pressed_at, received_at, counted, not_counted_reason) \
                 SELECT id, site, terminal, zone, boot, seq, button, score, pressed_at, \
                     received_at, counted, not_counted_reason \
                 FROM incoming_presses ORDER BY id \
                 ON CONFLICT (id) DO NOTHING",
                &[],
            )
            .await?;
        committed.presses_inserted = inserted;
        committed.presses_duplicate = n as u64 - inserted;
        // Documents that were the same press twice in one batch.
        committed.presses_duplicate += batch
            .iter()
            .filter(|(_, _, d)| matches!(d, Document::Press(_)))
            .count() as u64
            - n as u64;
    }

    for ((site, terminal), (h, doc)) in health {
        tx.execute(
            "INSERT INTO terminal_health (site, terminal, online, last_seen, firmware, \
                 battery_mv, rssi_dbm, document) \
             VALUES ($1, $2, $3, $4::text::timestamptz, $5, $6, $7, $8) \
             ON CONFLICT (site, terminal) DO UPDATE SET online = EXCLUDED.online, \
                 last_seen = EXCLUDED.last_seen, firmware = EXCLUDED.firmware, \
                 battery_mv = EXCLUDED.battery_mv, rssi_dbm = EXCLUDED.rssi_dbm, \
                 document = EXCLUDED.document, updated_at = now() \
             WHERE terminal_health.last_seen <= EXCLUDED.last_seen",
            &[
                &site,
                &terminal,
                &h.online,
                &h.last_seen,
                &h.firmware,
                &h.battery_mv.map(i32::from),
                &h.rssi_dbm.map(i32::from),
                doc,
            ],
        )
        .await?;
    }

    for ((site, id), (a, doc)) in alerts {
        tx.execute(
            "INSERT INTO alerts (site, id, terminal, zone, kind, severity, state, raised_at, \
                 cleared_at, detail, document, lifecycle, revision, acknowledged_at, \
                 acknowledged_by, ack_note, escalated_at, closed_at, reopened) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::timestamptz, \
                 $9::text::timestamptz, $10, $11, NULLIF($12, ''), $13, $14::text::timestamptz, \
                 $15, $16, $17::text::timestamptz, $18::text::timestamptz, $19) \
             ON CONFLICT (site, id) DO UPDATE SET state = EXCLUDED.state, \
                 cleared_at = EXCLUDED.cleared_at, detail = EXCLUDED.detail, \
                 document = EXCLUDED.document, lifecycle = EXCLUDED.lifecycle, \
                 revision = EXCLUDED.revision, acknowledged_at = EXCLUDED.acknowledged_at, \
                 acknowledged_by = EXCLUDED.acknowledged_by, ack_note = EXCLUDED.ack_note, \
                 escalated_at = EXCLUDED.escalated_at, closed_at = EXCLUDED.closed_at, \
                 reopened = EXCLUDED.reopened \
             WHERE alerts.revision < EXCLUDED.revision \
                OR (EXCLUDED.revision = 0 AND alerts.revision = 0 AND alerts.state <> 'cleared')",
            &[
                &site,
                &(id as i64),
                &a.terminal,
                &a.zone,
                &a.kind,
                &a.severity,
                &a.state,
                &a.raised_at,
                &a.cleared_at,
                &a.detail,
                doc,
                &a.lifecycle,
                &(a.revision.min(i32::MAX as u32) as i32),
                &a.acknowledged_at,
                &a.acknowledged_by,
                &a.ack_note,
                &a.escalated_at,
                &a.closed_at,
                &(a.reopened.min(i32::MAX as u32) as i32),
            ],
        )
        .await?;
    }

    for (site, s) in statuses {
        tx.execute(
            "INSERT INTO sites (site, time_zone, state, version, status_since) \
             VALUES ($1, $2, $3, $4, $5::text::timestamptz) \
             ON CONFLICT (site) DO UPDATE SET \
                 time_zone = COALESCE(EXCLUDED.time_zone, sites.time_zone), \
                 state = EXCLUDED.state, version = EXCLUDED.version, \
                 status_since = COALESCE(EXCLUDED.status_since, sites.status_since), \
                 updated_at = now() \
             WHERE EXCLUDED.status_since IS NULL OR sites.status_since IS NULL \
                 OR sites.status_since <= EXCLUDED.status_since",
            &[&site, &s.time_zone, &s.state, &s.version, &s.since],
        )
        .await?;
        for zone in &s.zones {
            tx.execute(
                "INSERT INTO zones (site, zone, name) VALUES ($1, $2, $3) \
                 ON CONFLICT (site, zone) DO UPDATE SET name = EXCLUDED.name",
                &[&site, &zone.id, &zone.name],
            )
            .await?;
        }
    }

    for (o, doc) in ota {
        tx.execute(
            "INSERT INTO ota_events (site, rollout, event, terminal, state, at, document) \
             VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz, $7) ON CONFLICT DO NOTHING",
            &[
                &o.site,
                &i64::from(o.rollout),
                &o.event,
                &o.terminal.as_deref().unwrap_or(""),
                &o.state.as_deref().unwrap_or(""),
                &o.at,
                doc,
            ],
        )
        .await?;
    }

    for ((key, body), reason) in rejected {
        tx.execute(
            "INSERT INTO rejected_messages (routing_key, reason, body) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[&key, &reason, &body],
        )
        .await?;
        committed.rejected += 1;
    }
    Ok(committed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_rows_escape_what_copy_text_format_reserves() {
        let mut out = String::new();
        super::copy_row(&mut out, &[Some("a\tb\\c\nd\re"), None, Some("plain")]);
        assert_eq!(out, "a\\tb\\\\c\\nd\\re\t\\N\tplain\n");
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            super::redact("postgres://central:s3cret@db:5432/pressline"),
            "postgres://central:***@db:5432/pressline"
        );
        assert_eq!(super::redact("host=/tmp dbname=x"), "host=/tmp dbname=x");
    }
}
