//! Every table but `presses`: upserts that never go back in time (health
//! by `last_seen`, alerts by revision, sites by `status_since`), OTA events
//! and rejected messages kept once each.

use std::collections::BTreeMap;

use pressline_protocol::upstream::{Alert, GatewayStatus, OtaEvent, TerminalHealth};
use tokio_postgres::Transaction;

type Json = serde_json::Value;

pub(super) async fn health(
    tx: &Transaction<'_>,
    rows: &BTreeMap<(&str, &str), (&TerminalHealth, &Json)>,
) -> Result<(), tokio_postgres::Error> {
    for (&(site, terminal), &(h, doc)) in rows {
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
    Ok(())
}

pub(super) async fn alerts(
    tx: &Transaction<'_>,
    rows: &BTreeMap<(&str, u64), (&Alert, &Json)>,
) -> Result<(), tokio_postgres::Error> {
    for (&(site, id), &(a, doc)) in rows {
        tx.execute(
            "INSERT INTO alerts (site, id, terminal, zone, kind, severity, state, raised_at, \
                 cleared_at, detail, document, lifecycle, revision, acknowledged_at, \
                 acknowledged_by, ack_note, escalated_at, closed_at, reopened) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::timestamptz, \
                 $9::text::timestamptz, $10, $11, $12, $13, $14::text::timestamptz, \
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
                &a.kind.as_str(),
                &a.severity.as_str(),
                &a.state.as_str(),
                &a.raised_at,
                &a.cleared_at,
                &a.detail,
                doc,
                &a.lifecycle.as_ref().map(|l| l.as_str()),
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
    Ok(())
}

pub(super) async fn sites(
    tx: &Transaction<'_>,
    rows: &BTreeMap<&str, &GatewayStatus>,
) -> Result<(), tokio_postgres::Error> {
    for (&site, &s) in rows {
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
            &[&site, &s.time_zone, &s.state.as_str(), &s.version, &s.since],
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
    Ok(())
}

pub(super) async fn ota_events(
    tx: &Transaction<'_>,
    rows: &[(&OtaEvent, &Json)],
) -> Result<(), tokio_postgres::Error> {
    for &(o, doc) in rows {
        tx.execute(
            "INSERT INTO ota_events (site, rollout, event, terminal, state, at, document) \
             VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz, $7) ON CONFLICT DO NOTHING",
            &[
                &o.site,
                &i64::from(o.rollout),
                &o.event.as_str(),
                &o.terminal.as_deref().unwrap_or(""),
                &o.state.map_or("", |s| s.as_str()),
                &o.at,
                doc,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn rejected(
    tx: &Transaction<'_>,
    rows: &BTreeMap<(&str, &[u8]), &str>,
) -> Result<(), tokio_postgres::Error> {
    for (&(key, body), &reason) in rows {
        tx.execute(
            "INSERT INTO rejected_messages (routing_key, reason, body) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[&key, &reason, &body],
        )
        .await?;
    }
    Ok(())
}
