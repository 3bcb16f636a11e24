//! Who may connect to the site broker and what they may publish.
//!
//! The login check itself is [`crate::terminals::identity`]; this module is
//! the broker-facing side:
//! - **Logins.** A registered terminal's client id is taken only by a
//!   client logging in as that terminal, in every mode (so nobody takes
//!   over its session, and with it its last will and its acks). Closed
//!   mode admits nobody else; open mode admits other clients without a
//!   login.
//! - **Publishes and wills.** Only the gateway publishes under
//!   `pressline/v1/gw/…` (acks, OTA): a forged ack would make a terminal
//!   forget presses that were never stored. A registered terminal's topics
//!   `pressline/v1/term/{id}/…` are its own; in closed mode every terminal
//!   publishes only on its own. Clients never publish retained messages
//!   under `pressline/v1/` (nothing of the protocol is retained on the site
//!   broker, and a retained forgery would be replayed at every subscribe).
//! - **Subscriptions.** In closed mode a terminal reads only its own
//!   `pressline/v1/gw/{id}/…` topics: one terminal's secret (readable from
//!   its flash) must not read every terminal's presses, acks and firmware.
//!   Open mode, a trial mode, lets anyone read anything. In every mode a
//!   client holds at most `mqtt.max_subscriptions_per_client` filters
//!   (enforced by the broker).
//! - Refused connections are counted by reason and logged once per client
//!   (a terminal with a wrong secret retries every few seconds, and one
//!   WARN line says all there is to say), and at most
//!   [`LINES_PER_SOURCE`] lines per source address per
//!   [`LOG_WINDOW`] (anyone on the venue network can make the broker
//!   refuse them with a new client id each time).

use pressline_host::sync::LockExt;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::log_budget::{LogBudget, Take};

use pressline_protocol::topic::{parse_terminal_topic, TerminalTopic, GATEWAY_ROOT};
use rumqttd::{Refusal, SubscribeVerdict};

use crate::stats::Stats;
use crate::terminals::identity::{Identities, SecurityMode};

/// Clients remembered as already logged; past this the memory starts over
/// (a flood of random client ids must not grow the gateway).
const WARNED_CLIENTS_MAX: usize = 4096;

/// WARN lines one source address (for refused publishes and
/// subscriptions: all clients together) may cause per [`LOG_WINDOW`].
pub const LINES_PER_SOURCE: u32 = 10;
pub const LOG_WINDOW: Duration = Duration::from_secs(600);

/// Longest client id written to the log (MQTT allows 65,535 bytes).
const LOGGED_ID_MAX: usize = 64;

/// The protocol's topics (terminals', gateway's).
const PROTOCOL_ROOT: &str = "pressline/v1/";

/// Whether `client_id` may publish on `topic` (a will included):
/// `registered` says whether a terminal id is registered.
pub fn may_publish(
    mode: SecurityMode,
    registered: impl Fn(&str) -> bool,
    client_id: &str,
    topic: &str,
    retain: bool,
) -> bool {
    if crate::broker::is_gateways_client_id(client_id) {
        return true;
    }
    if topic.starts_with('$') || is_gateways(topic) {
        return false;
    }
    if retain && topic.starts_with(PROTOCOL_ROOT) {
        return false;
    }
    match (parse_terminal_topic(topic), mode) {
        (
            Ok(
                TerminalTopic::Press(t)
                | TerminalTopic::PressJson(t)
                | TerminalTopic::Heartbeat(t)
                | TerminalTopic::Status(t)
                | TerminalTopic::OtaRequest(t)
                | TerminalTopic::OtaStatus(t),
            ),
            mode,
        ) => t == client_id || (mode == SecurityMode::Open && !registered(t)),
        // Closed mode: nothing else. Open mode: other topics (third-party
        // clients' own; a wrong one under `pressline/v1/term/` reaches
        // ingest, which rejects and counts it as `wrong_topic`).
        (Err(_), SecurityMode::Closed) => false,
        (Err(_), SecurityMode::Open) => true,
    }
}

/// The levels that follow `pressline/v1/gw/{id}/` in the protocol's topics
/// (`ack`, `ack/json`, `ota/command`, `ota/chunk`). A terminal's filters
/// are built from these and wildcards only, so the filters one terminal can
/// create are few, whatever it sends.
const GATEWAY_TOPIC_WORDS: [&str; 7] = ["ack", "json", "ota", "command", "chunk", "+", "#"];

/// Whether `client_id` may subscribe to `filter`, holding `held` other
/// filters already (at most `limit`).
pub fn may_subscribe(
    mode: SecurityMode,
    client_id: &str,
    filter: &str,
    held: usize,
    limit: usize,
) -> SubscribeVerdict {
    if crate::broker::is_gateways_client_id(client_id) {
        return SubscribeVerdict::Grant;
    }
    if mode == SecurityMode::Closed && !is_own_gateway_filter(client_id, filter) {
        return SubscribeVerdict::NotAuthorized;
    }
    if held >= limit {
        return SubscribeVerdict::QuotaExceeded;
    }
    SubscribeVerdict::Grant
}

/// `pressline/v1/gw/{client_id}` and filters under it made of the
/// protocol's words, at most two levels deep.
fn is_own_gateway_filter(client_id: &str, filter: &str) -> bool {
    let Some(rest) = filter
        .strip_prefix(GATEWAY_ROOT)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.strip_prefix(client_id))
    else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(levels) = rest.strip_prefix('/') else {
        return false;
    };
    levels.split('/').count() <= 2 && levels.split('/').all(|l| GATEWAY_TOPIC_WORDS.contains(&l))
}

/// `pressline/v1/gw` and everything under it.
fn is_gateways(topic: &str) -> bool {
    topic
        .strip_prefix(GATEWAY_ROOT)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Decides, counts and logs who may connect and publish.
pub struct MqttAccess {
    stats: Arc<Stats>,
    identities: Identities,
    max_subscriptions: usize,
    warned: Mutex<HashSet<(String, &'static str)>>,
    budget: Mutex<LogBudget>,
}

impl MqttAccess {
    /// The registered terminals whose rights this enforces.
    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    /// `max_subscriptions`: most filters one client holds at once.
    pub fn new(
        stats: Arc<Stats>,
        identities: Identities,
        max_subscriptions: usize,
    ) -> Arc<MqttAccess> {
        Arc::new(MqttAccess {
            stats,
            identities,
            max_subscriptions,
            warned: Mutex::new(HashSet::new()),
            budget: Mutex::new(LogBudget::new(LINES_PER_SOURCE, LOG_WINDOW)),
        })
    }

    /// The publish rule (see the module documentation).
    pub fn may_publish(&self, client_id: &str, topic: &str, retain: bool) -> bool {
        let registered = |t: &str| self.identities.is_registered(t);
        may_publish(self.identities.mode(), registered, client_id, topic, retain)
    }

    /// The subscribe rule, counting and logging what it refuses.
    pub fn authorize_subscribe(
        &self,
        client_id: &str,
        filter: &str,
        held: usize,
    ) -> SubscribeVerdict {
        let mode = self.identities.mode();
        let verdict = may_subscribe(mode, client_id, filter, held, self.max_subscriptions);
        let reason = match verdict {
            SubscribeVerdict::Grant => return verdict,
            SubscribeVerdict::NotAuthorized => "not_authorized",
            SubscribeVerdict::QuotaExceeded => "too_many_filters",
        };
        self.stats.refuse_subscription(reason);
        if let Some(more) = self.should_log(client_id, reason, "subscriptions") {
            tracing::warn!(
                client_id = logged_id(client_id),
                filter,
                reason,
                limit = self.max_subscriptions,
                "subscription refused: in closed mode a terminal subscribes only to its own pressline/v1/gw/{{id}}/ topics, and a client holds at most mqtt.max_subscriptions_per_client filters (logged once per client and reason; counted in subscriptions_refused){more}"
            );
        }
        verdict
    }

    /// A login: a registered terminal's id needs its own secret; in open
    /// mode any other client may log in with anything.
    pub fn may_log_in(&self, client_id: &str, user: &str, password: &str) -> bool {
        match self.identities.mode() {
            SecurityMode::Open if !self.identities.is_registered(client_id) => true,
            _ => self.identities.check_login(client_id, user, password),
        }
    }

    /// A CONNECT without a login: only in open mode, and never with a
    /// registered terminal's id.
    pub fn may_connect_anonymously(&self, client_id: &str) -> bool {
        self.identities.mode() == SecurityMode::Open && !self.identities.is_registered(client_id)
    }

    /// Whether to log a refusal by `client` for `what` from `source`: the
    /// first time for that client, within the source's budget. Returns
    /// what to add to the line (`None`: do not log).
    fn should_log(&self, client: &str, what: &'static str, source: &str) -> Option<&'static str> {
        if !self.first_time(client, what) {
            return None;
        }
        match self.budget.locked().take(source, Instant::now()) {
            Take::Log => Some(""),
            Take::LogLast => {
                Some(" (further refusals from this source are counted, not logged, for 10 minutes)")
            }
            Take::Quiet => None,
        }
    }

    /// True the first time `client` is seen with `what` (then false).
    fn first_time(&self, client: &str, what: &'static str) -> bool {
        let mut warned = self.warned.locked();
        if warned.len() >= WARNED_CLIENTS_MAX {
            warned.clear();
        }
        // The logged prefix only: a client id may be 64 KiB long.
        warned.insert((logged_id(client).to_owned(), what))
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
        let source = peer.map(|p| p.ip().to_string()).unwrap_or_default();
        if let Some(more) = self.should_log(&who, reason, &source) {
            tracing::warn!(
                reason,
                client_id = logged_id(client_id.unwrap_or("")),
                peer = peer.map(|p| p.to_string()).unwrap_or_default(),
                hint = hint(refusal),
                "MQTT connection refused (logged once per client and reason; counted in connections_refused){more}"
            );
        }
    }

    /// The publish rule, counting and logging what it refuses.
    pub fn authorize_publish(&self, client_id: &str, topic: &str, retain: bool) -> bool {
        if self.may_publish(client_id, topic, retain) {
            return true;
        }
        self.stats.refuse_publish();
        if let Some(more) = self.should_log(client_id, "publish", "publishes") {
            tracing::warn!(
                client_id = logged_id(client_id),
                topic,
                retain,
                "publish refused: only the gateway publishes under pressline/v1/gw/, a registered terminal's topics are its own (in closed mode every terminal's are), and nothing under pressline/v1/ is retained (logged once per client; counted in publishes_refused){more}"
            );
        }
        false
    }
}

/// A client id as logged: at most [`LOGGED_ID_MAX`] bytes of it.
fn logged_id(id: &str) -> &str {
    let mut end = id.len().min(LOGGED_ID_MAX);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}

/// What an operator can do about a refusal.
fn hint(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::BadCredentials => "the client id is a registered terminal's and the secret does not match its registration: re-provision it with `fleet provision` (another client may not use a registered terminal's id)",
        Refusal::NotAuthorized => "the client sent no login: in closed mode every client must (register it with `fleet provision`, or run the gateway with --open for trials); in open mode a registered terminal's id must",
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
    use crate::broker::LINK_CLIENT_ID;

    fn registered(t: &str) -> bool {
        t == "t-1" || t == "t-2"
    }

    fn closed(client: &str, topic: &str) -> bool {
        may_publish(SecurityMode::Closed, registered, client, topic, false)
    }

    fn open(client: &str, topic: &str, retain: bool) -> bool {
        may_publish(SecurityMode::Open, registered, client, topic, retain)
    }

    const TERMINAL_TOPICS: [&str; 6] = [
        "pressline/v1/term/t-1/press",
        "pressline/v1/term/t-1/press/json",
        "pressline/v1/term/t-1/heartbeat",
        "pressline/v1/term/t-1/status",
        "pressline/v1/term/t-1/ota/request",
        "pressline/v1/term/t-1/ota/status",
    ];

    #[test]
    fn in_closed_mode_a_terminal_publishes_only_on_its_own_topics() {
        for topic in TERMINAL_TOPICS {
            assert!(closed("t-1", topic), "{topic}");
            assert!(!closed("t-2", topic), "{topic}");
        }
        for topic in [
            "pressline/v1/gw/t-1/ack",
            "pressline/v1/term/t-1/other",
            "pressline/v1/site/t-1/press",
            "anything/else",
            "",
        ] {
            assert!(!closed("t-1", topic), "{topic}");
        }
        assert!(closed(LINK_CLIENT_ID, "pressline/v1/gw/t-1/ack"));
    }

    #[test]
    fn in_open_mode_gateway_topics_and_registered_terminals_topics_are_still_theirs() {
        for topic in [
            "pressline/v1/gw/t-1/ack",
            "pressline/v1/gw/t-9/ack/json",
            "pressline/v1/gw/t-9/ota/command",
            "pressline/v1/gw",
            "$SYS/broker",
        ] {
            assert!(!open("anyone", topic, false), "{topic}");
            assert!(!open("t-1", topic, false), "{topic}");
        }
        // A registered terminal's topics: only it (its login is checked at
        // CONNECT); an unregistered terminal's: anyone, as open mode says.
        for topic in TERMINAL_TOPICS {
            assert!(open("t-1", topic, false), "{topic}");
            assert!(!open("anyone", topic, false), "{topic}");
            let unregistered = topic.replace("t-1", "t-9");
            assert!(open("anyone", &unregistered, false), "{unregistered}");
        }
        assert!(open("anyone", "their/own/topic", false));
        // A wrong protocol topic goes on to ingest, which counts it.
        assert!(open("anyone", "pressline/v1/term/t-9/presses", false));
    }

    #[test]
    fn clients_never_publish_retained_messages_of_the_protocol() {
        assert!(!open("t-9", "pressline/v1/term/t-9/status", true));
        assert!(!open("anyone", "pressline/v1/gw/t-1/ack", true));
        assert!(open("anyone", "their/own/topic", true));
        assert!(may_publish(
            SecurityMode::Closed,
            registered,
            LINK_CLIENT_ID,
            "pressline/v1/gw/t-1/ack",
            true
        ));
    }

    fn subscribe(mode: SecurityMode, client: &str, filter: &str) -> SubscribeVerdict {
        may_subscribe(mode, client, filter, 0, 32)
    }

    #[test]
    fn in_closed_mode_a_terminal_reads_only_its_own_gateway_topics() {
        use SubscribeVerdict::{Grant, NotAuthorized};
        for filter in [
            "pressline/v1/gw/t-1/#",
            "pressline/v1/gw/t-1",
            "pressline/v1/gw/t-1/ack",
            "pressline/v1/gw/t-1/ack/json",
            "pressline/v1/gw/t-1/ota/+",
            "pressline/v1/gw/t-1/+/+",
        ] {
            assert_eq!(
                subscribe(SecurityMode::Closed, "t-1", filter),
                Grant,
                "{filter}"
            );
            assert_eq!(
                subscribe(SecurityMode::Closed, "t-2", filter),
                NotAuthorized,
                "{filter}"
            );
        }
        for filter in [
            "#",
            "pressline/#",
            "pressline/v1/gw/#",
            "pressline/v1/gw/+/ack",
            "pressline/v1/gw/t-10/ack",
            "pressline/v1/gw/t-1x",
            "pressline/v1/term/t-1/press",
            "pressline/v1/term/#",
            // Words outside the protocol's: a terminal cannot mint filters.
            "pressline/v1/gw/t-1/invented",
            "pressline/v1/gw/t-1/ack/json/more",
            "+/v1/gw/t-1/#",
            "",
        ] {
            assert_eq!(
                subscribe(SecurityMode::Closed, "t-1", filter),
                NotAuthorized,
                "{filter}"
            );
        }
        assert_eq!(
            subscribe(SecurityMode::Closed, LINK_CLIENT_ID, "pressline/v1/term/#"),
            Grant
        );
    }

    #[test]
    fn in_every_mode_a_client_holds_a_bounded_number_of_filters() {
        for mode in [SecurityMode::Open, SecurityMode::Closed] {
            let filter = "pressline/v1/gw/t-1/ack";
            assert_eq!(
                may_subscribe(mode, "t-1", filter, 31, 32),
                SubscribeVerdict::Grant
            );
            assert_eq!(
                may_subscribe(mode, "t-1", filter, 32, 32),
                SubscribeVerdict::QuotaExceeded
            );
        }
        assert_eq!(
            may_subscribe(SecurityMode::Open, "anyone", "#", 0, 32),
            SubscribeVerdict::Grant,
            "open mode is a trial mode: anyone reads anything"
        );
        assert_eq!(
            may_subscribe(SecurityMode::Open, LINK_CLIENT_ID, "#", 1000, 32),
            SubscribeVerdict::Grant
        );
    }

    #[test]
    fn refusals_are_counted_every_time_and_logged_once_per_client() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), 1 << 20).unwrap();
        let stats = Arc::new(Stats::default());
        let access = MqttAccess::new(
            stats.clone(),
            Identities::load(SecurityMode::Closed, store),
            32,
        );
        for _ in 0..3 {
            access.connection_refused(Refusal::BadCredentials, Some("t-9"), None);
        }
        assert!(!access.first_time("t-9", "bad_credentials"));
        assert!(access.first_time("t-10", "bad_credentials"));
        assert!(!access.authorize_publish("t-1", "pressline/v1/term/t-2/press", false));
        for _ in 0..2 {
            let verdict = access.authorize_subscribe("t-1", "#", 0);
            assert_eq!(verdict, SubscribeVerdict::NotAuthorized);
        }
        let verdict = access.authorize_subscribe("t-1", "pressline/v1/gw/t-1/#", 32);
        assert_eq!(verdict, SubscribeVerdict::QuotaExceeded);
        let snap = stats.snapshot("s", std::time::Instant::now(), false, 0, None);
        assert_eq!(snap.connections_refused["bad_credentials"], 3);
        assert_eq!(snap.publishes_refused, 1);
        assert_eq!(snap.subscriptions_refused["not_authorized"], 2);
        assert_eq!(snap.subscriptions_refused["too_many_filters"], 1);
    }

    #[test]
    fn a_registered_terminals_id_needs_its_login_in_every_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), 1 << 20).unwrap();
        let identities = Identities::load(SecurityMode::Open, store);
        let secret = [5u8; 32];
        identities
            .register("t-1", secret, None, "now".into())
            .unwrap();
        let access = MqttAccess::new(Arc::new(Stats::default()), identities, 32);
        let password = pressline_protocol::auth::mqtt_password(&secret);
        assert!(
            !access.may_connect_anonymously("t-1"),
            "no takeover without a login"
        );
        assert!(!access.may_log_in("t-1", "t-1", "guess"));
        assert!(access.may_log_in("t-1", "t-1", password.as_str()));
        assert!(
            access.may_connect_anonymously("script-7"),
            "open mode admits others"
        );
        assert!(access.may_log_in("script-7", "any", "thing"));
    }
}
