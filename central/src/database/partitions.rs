//! `presses` is partitioned by UTC month of `received_at` (schema version
//! 4). A partition cannot be made by the insert that needs it, so each
//! batch's months are made first ([`Months::ensure`]); whole months past
//! the retention setting are dropped by [`drop_expired`]. The SQL side
//! (`press_partition_for`, `press_partitions_drop_expired`) is in
//! `migrations/V4__monthly_presses_and_local_hours.sql`.

use std::collections::BTreeSet;

use tokio_postgres::Client;

/// A UTC month, as (year, month).
pub type Month = (i32, u8);

/// The month of a time.
pub fn month_of(at: time::OffsetDateTime) -> Month {
    let utc = at.to_offset(time::UtcOffset::UTC);
    (utc.year(), u8::from(utc.month()))
}

/// The months this connection has made sure of: asked once each, not
/// once a batch.
#[derive(Debug, Default)]
pub struct Months(BTreeSet<Month>);

impl Months {
    /// Makes the partitions for `times`' months that are not known yet.
    /// A month the database refuses (SQLSTATE 22008: more than a day
    /// ahead, or before the kept history) is the error of the press
    /// carrying it.
    pub async fn ensure(
        &mut self,
        client: &Client,
        times: impl IntoIterator<Item = time::OffsetDateTime>,
    ) -> Result<(), tokio_postgres::Error> {
        let mut missing = std::collections::BTreeMap::new();
        for at in times {
            let month = month_of(at);
            if !self.0.contains(&month) {
                missing.entry(month).or_insert(at);
            }
        }
        for (month, at) in missing {
            client
                .execute("SELECT press_partition_for($1)", &[&at])
                .await?;
            self.0.insert(month);
        }
        Ok(())
    }
}

/// The retention setting: whole months kept before the current one
/// (`None`: every press is kept).
pub async fn retention(client: &Client) -> Result<Option<i32>, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT keep_months FROM press_retention", &[])
        .await?;
    Ok(row.get(0))
}

pub async fn set_retention(
    client: &Client,
    keep_months: Option<i32>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE press_retention SET keep_months = $1",
            &[&keep_months],
        )
        .await?;
    Ok(())
}

/// Drops the partitions wholly before the kept months; their names.
pub async fn drop_expired(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT press_partitions_drop_expired()", &[])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A partition of `presses` and its range: `from` is `None` for the one
/// holding an earlier version's presses, both are for `presses_default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub from: Option<time::OffsetDateTime>,
    pub to: Option<time::OffsetDateTime>,
}

/// Every partition, oldest first.
pub async fn list(client: &Client) -> Result<Vec<Partition>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT name, from_at, to_at FROM press_partitions", &[])
        .await?;
    // try_get: a bound beyond what `time` holds is an error, not a panic.
    rows.iter()
        .map(|r| {
            Ok(Partition {
                name: r.try_get(0)?,
                from: r.try_get(1)?,
                to: r.try_get(2)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_is_the_utc_one() {
        let at = |s| crate::documents::parse_time(s).unwrap();
        assert_eq!(month_of(at("2026-11-30T23:59:59.999Z")), (2026, 11));
        // 23:30 on 30 November in New York is December in UTC.
        assert_eq!(month_of(at("2026-11-30T23:30:00-05:00")), (2026, 12));
        assert_eq!(month_of(at("2027-01-01T00:30:00+01:00")), (2026, 12));
    }
}
