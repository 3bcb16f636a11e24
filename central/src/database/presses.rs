//! Presses by binary COPY: straight into `presses` (PostgreSQL's fastest
//! way in) and, only for a batch that meets a press already stored, through
//! the session's staging table, leaving out the ids `press_ids` holds.

use std::collections::BTreeMap;

use pressline_protocol::upstream::UpstreamPress;
use tokio_postgres::error::SqlState;

use super::WriteError;

/// What the presses of a batch did.
pub(super) struct Stored {
    /// New rows (the rest were stored already).
    pub inserted: u64,
}

/// Inserts the batch's presses (by id, in id order).
pub(super) async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    presses: &BTreeMap<&str, &UpstreamPress>,
) -> Result<Stored, WriteError> {
    if presses.is_empty() {
        return Ok(Stored { inserted: 0 });
    }
    let mut rows = Vec::with_capacity(presses.len());
    for p in presses.values() {
        rows.push(PressRow {
            press: p,
            pressed_at: p.pressed_at.as_deref().map(time_of).transpose()?,
            received_at: time_of(&p.received_at)?,
        });
    }
    // Optimistic: straight into `presses` by COPY. A message delivered
    // again (a consumer killed after its commit, before its ack) makes the
    // COPY fail on `press_ids` (its trigger holds every id once); only
    // then do the rows go through the staging table, leaving out the ids
    // already held, which costs about twice the work per row. The
    // savepoint keeps the rest of the batch.
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
            // In id order, so two consumers' transactions take row locks
            // in one order. A press another consumer inserted meanwhile
            // fails this statement (23505): a conflict, retried, which then
            // finds it held, not the document's fault.
            let fallback = tx
                .execute(
                    "INSERT INTO presses (id, site, terminal, zone, boot, seq, button, score, \
                     pressed_at, received_at, counted, not_counted_reason) \
                 SELECT id, site, terminal, zone, boot, seq, button, score, pressed_at, \
                     received_at, counted, not_counted_reason \
                 FROM incoming_presses i \
                 WHERE NOT EXISTS (SELECT 1 FROM press_ids p WHERE p.id = i.id) \
                 ORDER BY id",
                    &[],
                )
                .await;
            match fallback {
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    return Err(WriteError::Conflict(super::describe(&e)))
                }
                other => other?,
            }
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Stored { inserted })
}

const PRESS_COLUMNS: &str = "(id, site, terminal, zone, boot, seq, button, score, pressed_at, \
     received_at, counted, not_counted_reason)";
const COPY_INTO_PRESSES: &str = "presses";
const COPY_INTO_STAGING: &str = "incoming_presses";

/// A press as its row: times parsed (and so checked) once.
struct PressRow<'a> {
    press: &'a UpstreamPress,
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
