//! PostgreSQL: the schema's migrations, and one transaction per batch of
//! documents. Presses go in by COPY; a batch that meets a press already
//! stored (a consumer killed after the commit, before its ack) goes in
//! again without the ids already held (`press_ids`), so every press is
//! stored once; the latest health, an alert's transitions and the
//! site's status are upserts that never go back in time.
//!
//! # Layout
//! - this file: connections, migrations, commits and how their errors
//!   are classified;
//! - [`rows`]: a batch sorted into each table's rows (pure);
//! - [`presses`]: presses by binary COPY;
//! - [`partitions`]: the months of `presses`, made before a batch needs
//!   them, dropped past the retention setting;
//! - [`upserts`]: health, alerts, sites, OTA events, rejected messages.

use anyhow::Context;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::documents::Document;
use rows::Rows;

pub mod partitions;
mod presses;
mod rows;
mod upserts;

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
    /// Months of `presses` known to have their partition.
    months: partitions::Months,
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
            // Class 22 (data exception), 23 (integrity constraint) and 54
            // (program limit: a value too long for its index, 54000): a
            // document, not the database. Committed one by one, only the
            // documents refused alone are kept aside.
            Some(c)
                if ["22", "23", "54"]
                    .iter()
                    .any(|class| c.code().starts_with(class)) =>
            {
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
            months: partitions::Months::default(),
        })
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Brings the schema to this version (under an advisory lock, so
    /// consumers started together do not race). Returns the migrations
    /// applied now.
    pub async fn migrate(&mut self) -> anyhow::Result<Vec<String>> {
        self.migrate_to(None).await
    }

    /// Applies the migrations up to `version` (every one when `None`).
    pub async fn migrate_to(&mut self, version: Option<u32>) -> anyhow::Result<Vec<String>> {
        self.client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .context("cannot take the migration lock")?;
        let target = match version {
            Some(v) => refinery::Target::Version(v as _),
            None => refinery::Target::Latest,
        };
        let report = embedded::migrations::runner()
            .set_target(target)
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
        // Before the transaction: making a partition locks `presses`
        // whole, which is brief on its own but would last the batch.
        self.months
            .ensure(&self.client, press_times(batch))
            .await
            .map_err(CommitError::from_postgres)?;
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

    /// The connection alone, for a reader that writes nothing.
    pub fn into_client(self) -> Client {
        self.client
    }
}

/// When the batch's presses were received (those that are times at all:
/// the rest fail in [`write`] with their reason).
fn press_times<'a>(
    batch: &'a [(&str, &[u8], &Document)],
) -> impl Iterator<Item = time::OffsetDateTime> + 'a {
    batch
        .iter()
        .flat_map(|(_, _, document)| match document {
            Document::Press(p) => std::slice::from_ref(p),
            Document::Presses(presses) => presses.as_slice(),
            _ => &[],
        })
        .filter_map(|p| crate::documents::parse_time(&p.received_at))
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
    let rows = Rows::sort(batch);
    let stored = write_rows(tx, &rows).await.map_err(|e| match e {
        WriteError::Postgres(e) => CommitError::from_postgres(e),
        WriteError::BadTime(reason) => CommitError::Refused(reason),
        WriteError::Conflict(reason) => CommitError::Conflict(reason),
    })?;
    Ok(Committed {
        presses_inserted: stored.inserted,
        presses_duplicate: rows.presses_seen - stored.inserted,
        rejected: rows.rejected.len() as u64,
        newest_received_ms: rows.newest_received_ms,
        refused: Vec::new(),
    })
}

/// Every table's rows of one batch, in one transaction. The order of the
/// statements is fixed (and each table's rows sorted), so two consumers'
/// transactions take row locks in one order: no deadlocks between them.
/// Sites come first: a site's new time zone locks its `press_hours`
/// before this transaction touches any (schema version 4). Two batches
/// that change two sites' zones and carry each other's presses can still
/// deadlock on those locks: PostgreSQL detects it and the batch is
/// retried as any conflict.
async fn write_rows(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &Rows<'_>,
) -> Result<presses::Stored, WriteError> {
    upserts::sites(tx, &rows.statuses).await?;
    let stored = presses::insert(tx, &rows.presses).await?;
    upserts::health(tx, &rows.health).await?;
    upserts::alerts(tx, &rows.alerts).await?;
    upserts::ota_events(tx, &rows.ota).await?;
    upserts::rejected(tx, &rows.rejected).await?;
    Ok(stored)
}

/// Why writing rows failed.
enum WriteError {
    Postgres(tokio_postgres::Error),
    /// A time the database would refuse, found before it saw it.
    BadTime(String),
    /// Another transaction stored the same press meanwhile: retry.
    Conflict(String),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        WriteError::Postgres(e)
    }
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
