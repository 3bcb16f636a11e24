//! PostgreSQL: the schema's migrations, and one transaction per batch of
//! documents. Presses go in by COPY; a batch that meets a press already
//! stored (a consumer killed after the commit, before its ack) goes in
//! again with `ON CONFLICT (id) DO NOTHING`, so every press is stored once; the latest health, an alert's clearing and the
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

const PRESS_COLUMNS: &str = "(id, site, terminal, zone, boot, seq, button, score, pressed_at, \
     received_at, counted, not_counted_reason)";
const COPY_INTO_PRESSES: &str = "presses";
const COPY_INTO_STAGING: &str = "incoming_presses";

/// A press as its row: times parsed (and so checked) once.
struct PressRow<'a> {
    press: &'a pressline_protocol::upstream::UpstreamPress,
    pressed_at: Option<time::OffsetDateTime>,
    received_at: time::OffsetDateTime,
}

/// COPYs rows into `table` in PostgreSQL's binary format (no text to
/// escape, no times to parse on the server); returns how many went in.
async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    rows: &[PressRow<'_>],
) -> Result<u64, tokio_postgres::Error> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;
    let sink = tx
        .copy_in(&format!(
            "COPY {table} {PRESS_COLUMNS} FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::INT2,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::BOOL,
        Type::TEXT,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures_util::pin_mut!(writer);
    for row in rows {
        let p = row.press;
        let (boot, seq, score) = (i64::from(p.boot), i64::from(p.seq), i16::from(p.score));
        writer
            .as_mut()
            .write(&[
                &p.id,
                &p.site,
                &p.terminal,
                &p.zone,
                &boot,
                &seq,
                &p.button,
                &score,
                &row.pressed_at,
                &row.received_at,
                &p.counted,
                &p.not_counted_reason,
            ])
            .await?;
    }
    writer.finish().await
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
    let mut presses_seen = 0u64;
    for &(key, body, document) in batch {
        match document {
            Document::Press(p) => {
                presses_seen += 1;
                presses.insert(p.id.as_str(), p);
                committed.newest_received_ms = committed
                    .newest_received_ms
                    .max(crate::documents::unix_ms(&p.received_at));
            }
            Document::Presses(batch) => {
                presses_seen += batch.len() as u64;
                for p in batch {
                    presses.insert(p.id.as_str(), p);
                }
                let newest = batch.iter().map(|p| p.received_at.as_str()).max();
                if let Some(newest) = newest {
                    // RFC 3339 UTC ("…Z") as the gateway writes it sorts
                    // as text; parsed once, not per press.
                    committed.newest_received_ms = committed
                        .newest_received_ms
                        .max(crate::documents::unix_ms(newest));
                }
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
        let mut rows = Vec::with_capacity(n);
        for p in presses.values() {
            let pressed_at = p.pressed_at.as_deref().map(time_of).transpose()?;
            rows.push(PressRow {
                press: p,
                pressed_at,
                received_at: time_of(&p.received_at)?,
            });
        }
        // Optimistic: straight into `presses` by COPY, PostgreSQL's
        // fastest way in. A message delivered again (a consumer killed
        // after its commit, before its ack) makes the COPY fail on the
        // primary key; only then do the rows go through the staging table
        // and `ON CONFLICT (id) DO NOTHING`, which costs about twice the
        // index work per row. The savepoint keeps the rest of the batch.
        tx.batch_execute("SAVEPOINT presses_copy").await?;
        let inserted = match copy_in(tx, COPY_INTO_PRESSES, &rows).await {
            Ok(inserted) => {
                tx.batch_execute("RELEASE SAVEPOINT presses_copy").await?;
                inserted
            }
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT presses_copy")
                    .await?;
                copy_in(tx, COPY_INTO_STAGING, &rows).await?;
                // In id order, so two consumers' transactions take row
                // locks in one order.
                tx.execute(
                    "INSERT INTO presses (id, site, terminal, zone, boot, seq, button, score, \
                         pressed_at, received_at, counted, not_counted_reason) \
                     SELECT id, site, terminal, zone, boot, seq, button, score, pressed_at, \
                         received_at, counted, not_counted_reason \
                     FROM incoming_presses ORDER BY id \
                     ON CONFLICT (id) DO NOTHING",
                    &[],
                )
                .await?
            }
            Err(e) => return Err(e.into()),
        };
        committed.presses_inserted = inserted;
        committed.presses_duplicate = n as u64 - inserted;
        // Documents that were the same press twice in one batch.
        committed.presses_duplicate += presses_seen - n as u64;
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
    fn passwords_are_not_shown() {
        assert_eq!(
            super::redact("postgres://central:s3cret@db:5432/pressline"),
            "postgres://central:***@db:5432/pressline"
        );
        assert_eq!(super::redact("host=/tmp dbname=x"), "host=/tmp dbname=x");
    }
}
