//! A batch of documents sorted into each table's rows (pure): one row per
//! press id, per terminal's health, per alert, per site; the newest of
//! several for one row; each table's rows in key order.

use std::collections::BTreeMap;

use pressline_protocol::upstream::{
    Alert, AlertState, GatewayStatus, OtaEvent, TerminalHealth, UpstreamPress,
};

use crate::documents::Document;

/// The rows of one batch.
#[derive(Debug, Default)]
pub(super) struct Rows<'a> {
    /// By id (a press sent twice in a batch is one row).
    pub presses: BTreeMap<&'a str, &'a UpstreamPress>,
    /// Presses in the batch, counting repeats.
    pub presses_seen: u64,
    /// Unix ms of the newest press `received_at`.
    pub newest_received_ms: Option<i64>,
    /// (site, terminal) → the latest health document, and its JSON.
    pub health: BTreeMap<(&'a str, &'a str), (&'a TerminalHealth, &'a serde_json::Value)>,
    /// (site, alert id) → the latest transition, and its JSON.
    pub alerts: BTreeMap<(&'a str, u64), (&'a Alert, &'a serde_json::Value)>,
    /// site → its latest status.
    pub statuses: BTreeMap<&'a str, &'a GatewayStatus>,
    pub ota: Vec<(&'a OtaEvent, &'a serde_json::Value)>,
    /// (routing key, body) → why it was rejected.
    pub rejected: BTreeMap<(&'a str, &'a [u8]), &'a str>,
}

impl<'a> Rows<'a> {
    /// Sorts `(routing key, body, document)`s into rows.
    pub fn sort(batch: &'a [(&'a str, &'a [u8], &'a Document)]) -> Rows<'a> {
        let mut rows = Rows::default();
        for &(key, body, document) in batch {
            rows.add(key, body, document);
        }
        rows
    }

    fn add(&mut self, key: &'a str, body: &'a [u8], document: &'a Document) {
        match document {
            Document::Press(p) => {
                self.add_presses(std::slice::from_ref(p));
            }
            Document::Presses(batch) => self.add_presses(batch),
            Document::Health(h, doc) => {
                // Of two for one terminal in a batch, the later one.
                let slot = self
                    .health
                    .entry((h.site.as_str(), h.id.as_str()))
                    .or_insert((h, doc));
                if slot.0.last_seen <= h.last_seen {
                    *slot = (h, doc);
                }
            }
            Document::Alert(a, doc) => {
                let slot = self
                    .alerts
                    .entry((a.site.as_str(), a.id))
                    .or_insert((a, doc));
                if supersedes(a, slot.0) {
                    *slot = (a, doc);
                }
            }
            Document::Status(s) => {
                self.statuses.insert(s.site.as_str(), s);
            }
            Document::Ota(o, doc) => self.ota.push((o, doc)),
            Document::Rejected { reason } => {
                self.rejected.insert((key, body), reason.as_str());
            }
        }
    }

    fn add_presses(&mut self, presses: &'a [UpstreamPress]) {
        self.presses_seen += presses.len() as u64;
        for p in presses {
            self.presses.insert(p.id.as_str(), p);
        }
        // RFC 3339 UTC ("…Z") as the gateway writes it sorts as text:
        // parsed once, not per press.
        if let Some(newest) = presses.iter().map(|p| p.received_at.as_str()).max() {
            self.newest_received_ms = self
                .newest_received_ms
                .max(crate::documents::unix_ms(newest));
        }
    }
}

/// Whether alert document `a` is a later transition than `b`: the higher
/// revision; for documents from before the lifecycle (revision 0 both),
/// cleared over raised.
pub(super) fn supersedes(a: &Alert, b: &Alert) -> bool {
    let cleared = |x: &Alert| x.state == AlertState::Cleared;
    (a.revision, cleared(a)) > (b.revision, cleared(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(id: &str, received_at: &str) -> UpstreamPress {
        serde_json::from_value(serde_json::json!({
            "schema": "pressline.press.v1", "id": id, "site": "arena", "terminal": "t1",
            "boot": 1, "seq": 1, "button": "happy", "score": 3,
            "received_at": received_at,
        }))
        .unwrap()
    }

    fn alert(revision: u32, state: AlertState) -> (Alert, serde_json::Value) {
        let a = Alert {
            id: 7,
            site: "arena".into(),
            revision,
            state,
            ..Alert::default()
        };
        let json = serde_json::to_value(&a).unwrap();
        (a, json)
    }

    #[test]
    fn a_press_sent_twice_is_one_row_and_counted_twice() {
        let docs = [
            Document::Press(press("arena:t1:1:1", "2026-11-01T12:00:00.000Z")),
            Document::Presses(vec![
                press("arena:t1:1:1", "2026-11-01T12:00:00.000Z"),
                press("arena:t1:1:2", "2026-11-01T12:00:05.000Z"),
            ]),
        ];
        let batch: Vec<(&str, &[u8], &Document)> = docs
            .iter()
            .map(|d| ("pressline.v1.arena.presses", &b""[..], d))
            .collect();
        let rows = Rows::sort(&batch);
        assert_eq!(rows.presses.len(), 2);
        assert_eq!(rows.presses_seen, 3);
        assert_eq!(
            rows.newest_received_ms,
            crate::documents::unix_ms("2026-11-01T12:00:05.000Z")
        );
    }

    #[test]
    fn the_latest_transition_of_an_alert_wins_whatever_the_order() {
        let (raised, raised_json) = alert(1, AlertState::Raised);
        let (recovered, recovered_json) = alert(3, AlertState::Cleared);
        let docs = [
            Document::Alert(recovered.clone(), recovered_json),
            Document::Alert(raised, raised_json),
        ];
        let batch: Vec<(&str, &[u8], &Document)> = docs
            .iter()
            .map(|d| ("pressline.v1.arena.alert", &b""[..], d))
            .collect();
        let rows = Rows::sort(&batch);
        assert_eq!(rows.alerts[&("arena", 7)].0.revision, 3);
        // Before the lifecycle (revision 0): cleared over raised.
        assert!(supersedes(
            &alert(0, AlertState::Cleared).0,
            &alert(0, AlertState::Raised).0
        ));
        assert!(!supersedes(
            &alert(0, AlertState::Raised).0,
            &alert(0, AlertState::Cleared).0
        ));
    }

    #[test]
    fn a_rejected_message_delivered_twice_is_kept_once() {
        let docs = [
            Document::Rejected {
                reason: "not JSON".into(),
            },
            Document::Rejected {
                reason: "not JSON".into(),
            },
        ];
        let batch: Vec<(&str, &[u8], &Document)> = docs
            .iter()
            .map(|d| ("pressline.v1.arena.x", &b"{"[..], d))
            .collect();
        assert_eq!(Rows::sort(&batch).rejected.len(), 1);
    }
}
