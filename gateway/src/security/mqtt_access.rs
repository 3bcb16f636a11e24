//! Who may connect to the site broker and what they may publish.
//!
//! The login check itself is [`crate::terminals::identity`]; this module is
//! the broker-facing side: refused connections counted by reason and logged
//! once per client (a terminal with a wrong secret retries every few
//! seconds, and one WARN line says all there is to say), and in closed mode
//! the topic rule: a terminal publishes only on its own topics, and its last
//! will names only itself.

use pressline_host::sync::LockExt;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use pressline_protocol::topic::{parse_terminal_topic, TerminalTopic};
use rumqttd::Refusal;

use crate::broker::{LINK_CLIENT_ID, OTA_LINK_CLIENT_ID};
use crate::stats::Stats;

/// Clients remembered as already logged; past this the memory starts over
/// (a flood of random client ids must not grow the gateway).
const WARNED_CLIENTS_MAX: usize = 4096;

/// Whether `client_id` may publish on `topic` in closed mode.
///
/// The gateway's own links publish acks and OTA traffic; a terminal, logged
/// in as itself (client id = terminal id), publishes only on
/// `pressline/v1/term/{its id}/…`.
pub fn closed_mode_may_publish(client_id: &str, topic: &str) -> bool {
    if client_id == LINK_CLIENT_ID || client_id == OTA_LINK_CLIENT_ID {
        return true;
    }
    match parse_terminal_topic(topic) {
        Ok(
            TerminalTopic::Press(t)
            | TerminalTopic::PressJson(t)
            | TerminalTopic::Heartbeat(t)
            | TerminalTopic::Status(t)
            | TerminalTopic::OtaRequest(t)
            | TerminalTopic::OtaStatus(t),
        ) => t == client_id,
        Err(_) => false,
    }
}

/// Counts and logs what the site broker refuses.
pub struct MqttAccess {
    stats: Arc<Stats>,
    warned: Mutex<HashSet<(String, &'static str)>>,
}

impl MqttAccess {
    pub fn new(stats: Arc<Stats>) -> Arc<MqttAccess> {
        Arc::new(MqttAccess {
            stats,
            warned: Mutex::new(HashSet::new()),
        })
    }

    /// True the first time `client` is seen with `what` (then false).
    fn first_time(&self, client: &str, what: &'static str) -> bool {
        let mut warned = self.warned.locked();
        if warned.len() >= WARNED_CLIENTS_MAX {
            warned.clear();
        }
        warned.insert((client.to_owned(), what))
    }

    /// A connection refused before it became a session.
    pub fn connection_refused(
        &self,
        refusal: Refusal,
        client_id: Option<&str>,
        peer: Option<SocketAddr>,
    ) {
        let reason = refusal.as_str();
        self.stats.refuse_connection(reason);
        // Without a client id (no CONNECT read) the peer's address is the
        // best name there is.
        let who = match (client_id, peer) {
            (Some(id), _) => id.to_owned(),
            (None, Some(peer)) => peer.ip().to_string(),
            (None, None) => String::new(),
        };
        if self.first_time(&who, reason) {
            tracing::warn!(
                reason,
                client_id = client_id.unwrap_or(""),
                peer = peer.map(|p| p.to_string()).unwrap_or_default(),
                hint = hint(refusal),
                "MQTT connection refused (logged once per client and reason; counted in connections_refused)"
            );
        }
    }

    /// Closed mode's publish rule, counting and logging what it refuses.
    pub fn authorize_publish(&self, client_id: &str, topic: &str) -> bool {
        if closed_mode_may_publish(client_id, topic) {
            return true;
        }
        self.stats.refuse_publish();
        if self.first_time(client_id, "publish") {
            tracing::warn!(
                client_id,
                topic,
                "publish refused: in closed mode a terminal publishes only on pressline/v1/term/{{its own id}}/… (logged once per client; counted in publishes_refused)"
            );
        }
        false
    }
}

/// What an operator can do about a refusal.
fn hint(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::BadCredentials => "the terminal's secret does not match its registration: re-provision it with `fleet provision`",
        Refusal::NotAuthorized => "closed mode: the client sent no login; register it with `fleet provision`, or run the gateway with --open for trials",
        Refusal::WillNotAuthorized => "the last will names another terminal's topic",
        Refusal::ProtocolVersion => "the terminal listener speaks MQTT 3.1.1 (mqtt.listen) and MQTT 5 (mqtt.listen_v5)",
        Refusal::ClientIdNotValid => "client ids may not contain + # / $ nor be the gateway's own (pressline-gateway…), and a persistent session needs one",
        Refusal::ServerUnavailable => "at mqtt.max_terminals connections; raise it if the site has more terminals",
        Refusal::ConnectTimeout => "the client opened a connection and sent no CONNECT in time",
        Refusal::MalformedConnect | Refusal::NotConnect => "not an MQTT client, or a broken one",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_publishes_only_on_its_own_topics() {
        for topic in [
            "pressline/v1/term/t-1/press",
            "pressline/v1/term/t-1/press/json",
            "pressline/v1/term/t-1/heartbeat",
            "pressline/v1/term/t-1/status",
            "pressline/v1/term/t-1/ota/request",
            "pressline/v1/term/t-1/ota/status",
        ] {
            assert!(closed_mode_may_publish("t-1", topic), "{topic}");
            assert!(!closed_mode_may_publish("t-2", topic), "{topic}");
        }
        for topic in [
            "pressline/v1/gw/t-1/ack",
            "pressline/v1/term/t-1/other",
            "pressline/v1/site/t-1/press",
            "anything/else",
            "",
        ] {
            assert!(!closed_mode_may_publish("t-1", topic), "{topic}");
        }
        assert!(closed_mode_may_publish(
            LINK_CLIENT_ID,
            "pressline/v1/gw/t-1/ack"
        ));
    }

    #[test]
    fn refusals_are_counted_every_time_and_logged_once_per_client() {
        let stats = Arc::new(Stats::default());
        let access = MqttAccess::new(stats.clone());
        for _ in 0..3 {
            access.connection_refused(Refusal::BadCredentials, Some("t-9"), None);
        }
        assert!(!access.first_time("t-9", "bad_credentials"));
        assert!(access.first_time("t-10", "bad_credentials"));
        assert!(!access.authorize_publish("t-1", "pressline/v1/term/t-2/press"));
        let snap = stats.snapshot("s", std::time::Instant::now(), false, 0, None);
        assert_eq!(snap.connections_refused["bad_credentials"], 3);
        assert_eq!(snap.publishes_refused, 1);
    }
}
