//! What the network overview adds to the ranking, per site: alerts whose
//! condition still holds and terminals offline.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SiteState {
    pub open_alerts: u64,
    pub terminals: u64,
    pub terminals_offline: u64,
}

/// Every site's state now (`only_sites` empty: every site).
pub async fn states(
    client: &tokio_postgres::Client,
    only_sites: &[String],
) -> Result<BTreeMap<String, SiteState>, tokio_postgres::Error> {
    let mut out: BTreeMap<String, SiteState> = BTreeMap::new();
    let only = "(cardinality($1::text[]) = 0 OR site = ANY($1::text[]))";
    for row in client
        .query(
            &format!(
                "SELECT site, count(*) FROM alerts WHERE state = 'raised' AND {only} GROUP BY 1"
            ),
            &[&only_sites],
        )
        .await?
    {
        out.entry(row.get(0)).or_default().open_alerts = row.get::<_, i64>(1).max(0) as u64;
    }
    for row in client
        .query(
            &format!(
                "SELECT site, count(*), count(*) FILTER (WHERE NOT online) \
                 FROM terminal_health WHERE {only} GROUP BY 1"
            ),
            &[&only_sites],
        )
        .await?
    {
        let s = out.entry(row.get(0)).or_default();
        s.terminals = row.get::<_, i64>(1).max(0) as u64;
        s.terminals_offline = row.get::<_, i64>(2).max(0) as u64;
    }
    Ok(out)
}
