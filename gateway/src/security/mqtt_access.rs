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
use rumqttd::{Refusal, SubscribeRequest, SubscribeVerdict};

use crate::stats::Stats;
use crate::terminals::identity::{Identities, SecurityMode};

/// Clients remembered as already logged; past this the memory starts over
/// (a flood of random client ids must not grow the gateway).
const WARNED_CLIENTS_MAX: usize = 4096;

/// WARN lines one source address (for refused publishes and
/// subscriptions: all clients together) may cause per [`LOG_WINDOW`].
pub const LINES_PER_SOURCE: u32 = 10;
pub const LOG_WINDOW: Duration = Duration::from_secs(600);
/// WARN lines all sources together may cause per [`LOG_WINDOW`] (a
/// network of many addresses is a source too).
pub const LINES_OVERALL: u32 = 100;

/// Longest client id, topic or filter written to the log.
const LOGGED_MAX: usize = 64;

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
/// (`ack`, `ack/json`, `ota/command`, `ota/chunk`, `power`). A terminal's filters
/// are built from these and wildcards only, so the filters one terminal can
/// create are few, whatever it sends.
const GATEWAY_TOPIC_WORDS: [&str; 8] =
    ["ack", "json", "ota", "command", "chunk", "power", "+", "#"];

/// How many filters the broker holds for subscribers.
#[derive(Debug, Clone, Copy)]
pub struct FilterLimits {
    /// Per client at once (`mqtt.max_subscriptions_per_client`).
    pub per_client: usize,
    /// Distinct filters the router keeps a log for: it never frees them,
    /// so clients that subscribe, unsubscribe and reconnect with new
    /// filters must not add them without bound.
    pub in_broker: usize,
}

/// What the subscribe rule decided, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeDecision {
    Grant,
    NotAuthorized,
    TooManyFilters,
    BrokerFiltersFull,
}

impl SubscribeDecision {
    /// The SUBACK's verdict.
    pub fn verdict(self) -> SubscribeVerdict {
        match self {
            SubscribeDecision::Grant => SubscribeVerdict::Grant,
            SubscribeDecision::NotAuthorized => SubscribeVerdict::NotAuthorized,
            SubscribeDecision::TooManyFilters | SubscribeDecision::BrokerFiltersFull => {
                SubscribeVerdict::QuotaExceeded
            }
        }
    }

    /// The counter's reason.
    pub fn reason(self) -> &'static str {
        match self {
            SubscribeDecision::Grant => "granted",
            SubscribeDecision::NotAuthorized => "not_authorized",
            SubscribeDecision::TooManyFilters => "too_many_filters",
            SubscribeDecision::BrokerFiltersFull => "broker_filters_full",
        }
    }
}

/// The subscribe rule (see the module documentation).
pub fn may_subscribe(
    mode: SecurityMode,
    request: &SubscribeRequest<'_>,
    limits: FilterLimits,
) -> SubscribeDecision {
    if crate::broker::is_gateways_client_id(request.client_id) {
        return SubscribeDecision::Grant;
    }
    // (A shared subscription, `$share/…`, is never a terminal's own.)
    if mode == SecurityMode::Closed && !is_own_gateway_filter(request.client_id, request.filter) {
        return SubscribeDecision::NotAuthorized;
    }
    if request.held >= limits.per_client {
        return SubscribeDecision::TooManyFilters;
    }
    if request.new_filter && request.router_filters >= limits.in_broker {
        return SubscribeDecision::BrokerFiltersFull;
    }
    SubscribeDecision::Grant
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
    filter_limits: FilterLimits,
    warned: Mutex<HashSet<(String, &'static str)>>,
    /// Per source address, and for all sources together.
    budget: Mutex<(LogBudget, LogBudget)>,
}

impl MqttAccess {
    /// The registered terminals whose rights this enforces.
    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    pub fn new(
        stats: Arc<Stats>,
        identities: Identities,
        filter_limits: FilterLimits,
    ) -> Arc<MqttAccess> {
        Arc::new(MqttAccess {
            stats,
            identities,
            filter_limits,
            warned: Mutex::new(HashSet::new()),
            budget: Mutex::new((
                LogBudget::new(LINES_PER_SOURCE, LOG_WINDOW),
                LogBudget::new(LINES_OVERALL, LOG_WINDOW),
            )),
        })
    }

    /// The publish rule (see the module documentation).
    pub fn may_publish(&self, client_id: &str, topic: &str, retain: bool) -> bool {
        let registered = |t: &str| self.identities.is_registered(t);
        may_publish(self.identities.mode(), registered, client_id, topic, retain)
    }

    /// The subscribe rule, counting and logging what it refuses.
    pub fn authorize_subscribe(&self, request: &SubscribeRequest<'_>) -> SubscribeVerdict {
        let decision = may_subscribe(self.identities.mode(), request, self.filter_limits);
        if decision == SubscribeDecision::Grant {
            return SubscribeVerdict::Grant;
        }
        let reason = decision.reason();
        self.stats.refuse_subscription(reason);
        if let Some(more) = self.should_log(request.client_id, reason, "subscriptions") {
            tracing::warn!(
                client_id = cut_for_log(request.client_id),
                filter = cut_for_log(request.filter),
                reason,
                per_client = self.filter_limits.per_client,
                in_broker = self.filter_limits.in_broker,
                "subscription refused: in closed mode a terminal subscribes only to its own pressline/v1/gw/{{id}}/ topics; a client holds at most mqtt.max_subscriptions_per_client filters, and the broker at most that many per terminal (logged once per client and reason; counted in subscriptions_refused){more}"
            );
        }
        decision.verdict()
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
    /// first time for that client, within the source's budget and the
    /// budget of all sources together. Returns what to add to the line
    /// (`None`: do not log). A refusal not logged for want of budget is
    /// logged when it comes again after the window.
    fn should_log(&self, client: &str, what: &'static str, source: &str) -> Option<&'static str> {
        // The logged prefix only: a client id may be 64 KiB long.
        let key = (cut_for_log(client).to_owned(), what);
        let mut warned = self.warned.locked();
        if warned.contains(&key) {
            return None;
        }
        let now = Instant::now();
        let mut budgets = self.budget.locked();
        let (per_source, overall) = &mut *budgets;
        let take = match (per_source.take(source, now), overall.take("", now)) {
            (Take::Quiet, _) | (_, Take::Quiet) => return None,
            (Take::LogLast, _) => {
                Some(" (further refusals from this source are counted, not logged, for 10 minutes)")
            }
            (_, Take::LogLast) => {
                Some(" (further refusals are counted, not logged, for 10 minutes)")
            }
            (Take::Log, Take::Log) => Some(""),
        };
        if warned.len() >= WARNED_CLIENTS_MAX {
            warned.clear();
        }
        warned.insert(key);
        take
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
                client_id = cut_for_log(client_id.unwrap_or("")),
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
                client_id = cut_for_log(client_id),
                topic = cut_for_log(topic),
                retain,
                "publish refused: only the gateway publishes under pressline/v1/gw/, a registered terminal's topics are its own (in closed mode every terminal's are), and nothing under pressline/v1/ is retained (logged once per client; counted in publishes_refused){more}"
            );
        }
        false
    }
}

/// A client id, topic or filter as logged: at most [`LOGGED_MAX`] bytes
/// of it (MQTT allows 65,535).
fn cut_for_log(text: &str) -> &str {
    let mut end = text.len().min(LOGGED_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
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

    const LIMITS: FilterLimits = FilterLimits {
        per_client: 32,
        in_broker: 1000,
    };

    fn request<'a>(client_id: &'a str, filter: &'a str, held: usize) -> SubscribeRequest<'a> {
        SubscribeRequest {
            client_id,
            filter,
            held,
            new_filter: true,
            router_filters: 10,
        }
    }

    fn subscribe(mode: SecurityMode, client: &str, filter: &str) -> SubscribeDecision {
        may_subscribe(mode, &request(client, filter, 0), LIMITS)
    }

    #[test]
    fn in_closed_mode_a_terminal_reads_only_its_own_gateway_topics() {
        use SubscribeDecision::{Grant, NotAuthorized};
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
            // Shared: never a terminal's own (and groups mix terminals).
            "$share/g/pressline/v1/gw/t-1/ack",
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
    fn in_every_mode_a_client_and_the_broker_hold_a_bounded_number_of_filters() {
        use SubscribeDecision::{BrokerFiltersFull, Grant, TooManyFilters};
        for mode in [SecurityMode::Open, SecurityMode::Closed] {
            let filter = "pressline/v1/gw/t-1/ack";
            assert_eq!(
                may_subscribe(mode, &request("t-1", filter, 31), LIMITS),
                Grant
            );
            assert_eq!(
                may_subscribe(mode, &request("t-1", filter, 32), LIMITS),
                TooManyFilters
            );
            let full = SubscribeRequest {
                router_filters: 1000,
                ..request("t-1", filter, 0)
            };
            assert_eq!(may_subscribe(mode, &full, LIMITS), BrokerFiltersFull);
            let known = SubscribeRequest {
                new_filter: false,
                ..full
            };
            assert_eq!(may_subscribe(mode, &known, LIMITS), Grant, "adds no log");
        }
        assert_eq!(
            subscribe(SecurityMode::Open, "anyone", "#"),
            Grant,
            "open mode is a trial mode: anyone reads anything"
        );
        let link = request(LINK_CLIENT_ID, "#", 1000);
        assert_eq!(may_subscribe(SecurityMode::Open, &link, LIMITS), Grant);
    }

    #[test]
    fn refusals_are_counted_every_time_and_logged_once_per_client() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), 1 << 20).unwrap();
        let stats = Arc::new(Stats::default());
        let identities = Identities::load(SecurityMode::Closed, store);
        let access = MqttAccess::new(stats.clone(), identities, LIMITS);
        for _ in 0..3 {
            access.connection_refused(Refusal::BadCredentials, Some("t-9"), None);
        }
        assert!(access.should_log("t-9", "bad_credentials", "").is_none());
        assert!(access.should_log("t-10", "bad_credentials", "").is_some());
        assert!(!access.authorize_publish("t-1", "pressline/v1/term/t-2/press", false));
        for _ in 0..2 {
            let verdict = access.authorize_subscribe(&request("t-1", "#", 0));
            assert_eq!(verdict, SubscribeVerdict::NotAuthorized);
        }
        let verdict = access.authorize_subscribe(&request("t-1", "pressline/v1/gw/t-1/#", 32));
        assert_eq!(verdict, SubscribeVerdict::QuotaExceeded);
        let snap = stats.snapshot("s", std::time::Instant::now(), false, 0, None);
        assert_eq!(snap.connections_refused["bad_credentials"], 3);
        assert_eq!(snap.publishes_refused, 1);
        assert_eq!(snap.subscriptions_refused["not_authorized"], 2);
        assert_eq!(snap.subscriptions_refused["too_many_filters"], 1);
    }

    #[test]
    fn a_source_past_its_budget_is_logged_again_after_the_window_not_never() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), 1 << 20).unwrap();
        let identities = Identities::load(SecurityMode::Closed, store);
        let access = MqttAccess::new(Arc::new(Stats::default()), identities, LIMITS);
        let logged = (0..LINES_PER_SOURCE + 5)
            .filter(|i| {
                access
                    .should_log(&format!("c-{i}"), "not_authorized", "10.0.0.9")
                    .is_some()
            })
            .count();
        assert_eq!(logged, LINES_PER_SOURCE as usize);
        // Not marked as logged while the budget was spent.
        let warned = access.warned.locked();
        assert!(!warned.contains(&(format!("c-{}", LINES_PER_SOURCE + 1), "not_authorized")));
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
        let access = MqttAccess::new(Arc::new(Stats::default()), identities, LIMITS);
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
