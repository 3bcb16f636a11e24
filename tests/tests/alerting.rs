//! Alerts reaching people: notifications to a real HTTP receiver (the
//! `deploy/webhook-receiver.py` an operator tries the demo with) in the
//! generic webhook, Slack, Teams and ntfy shapes; escalation,
//! acknowledgement from `fleet`, a signed link and the dashboard in a real
//! Chromium; a receiver that is down; a gateway killed with notifications
//! pending.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use common::browser::Browser;
use common::smtp::SmtpServer;
use common::*;
use serde_json::Value;

/// `deploy/webhook-receiver.py` on a port of its own, logging to a file.
struct Receiver {
    port: u16,
    log: PathBuf,
    /// Its misbehaviour options (`--reject`, `--hold-while`).
    options: Vec<String>,
    child: Option<Child>,
}

impl Receiver {
    fn start(dir: &Path) -> Receiver {
        Receiver::misbehaving(dir, "received", &[])
    }

    /// A receiver logging to `{name}.jsonl`, started with `options`.
    fn misbehaving(dir: &Path, name: &str, options: &[&str]) -> Receiver {
        let mut r = Receiver {
            port: free_port(),
            log: dir.join(format!("{name}.jsonl")),
            options: options.iter().map(|o| o.to_string()).collect(),
            child: None,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/webhook-receiver.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["--port", &self.port.to_string()])
            .arg("--log")
            .arg(&self.log)
            .args(&self.options);
        self.child = Some(start_listening(cmd, self.port, "the webhook receiver"));
    }

    /// The answers given to the notification `key` on `path`, in order.
    fn answers(&self, path: &str, key: &str) -> Vec<u64> {
        self.received()
            .iter()
            .filter(|r| r["path"] == path && r["headers"]["idempotency-key"] == key)
            .filter_map(|r| r["status"].as_u64())
            .collect()
    }

    fn stop(&mut self) {
        stop(&mut self.child);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request received so far.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Idempotency keys received on `path`, in order (a digest carries
    /// several, comma-separated).
    fn keys(&self, path: &str) -> Vec<String> {
        self.received()
            .iter()
            .filter(|r| r["path"] == path)
            .flat_map(|r| {
                r["headers"]["idempotency-key"]
                    .as_str()
                    .unwrap_or("")
                    .split(',')
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn bodies(&self, path: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r["path"] == path)
            .map(|r| r["body"].clone())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(receiver: &Receiver, extra: &str) -> String {
    format!(
        r#"
[health]
offline_after_secs = 2
{ENTRANCES}
[alerting]
public_url = "https://gateway.arena.example"
[alerting.delivery]
retry_min_secs = 1
retry_max_secs = 2
timeout_secs = 5
[alerting.channels.ops]
kind = "webhook"
url = "{ops}"
[alerting.channels.techs]
kind = "ntfy"
url = "{techs}"
[alerting.channels.managers]
kind = "teams"
url = "{managers}"
[alerting.channels.floor]
kind = "slack"
url = "{floor}"
{extra}
"#,
        ops = receiver.url("/ops"),
        techs = receiver.url("/arena-techs"),
        managers = receiver.url("/managers"),
        floor = receiver.url("/floor"),
    )
}

/// The terminals these tests silence, placed in a zone: only a terminal
/// the site knows (registered, or in a zone) raises `offline`.
const ENTRANCES: &str = r#"
[zones.entrances]
name = "Entrances"
terminals = ["door-1", "door-2", "t-1", "t-2", "t-3"]
"#;

fn press(gateway: &Gateway, terminal: &str, seq: u32) {
    mosquitto_pub(
        gateway.mqtt_port,
        &format!("pressline/v1/term/{terminal}/press/json"),
        &format!(r#"{{"seq": {seq}, "button": "happy"}}"#),
    );
}

/// A native heartbeat from `terminal` (mains, nothing queued).
fn heartbeat(gateway: &Gateway, terminal: &str, dir: &Path) {
    let hb = pressline_protocol::Heartbeat {
        boot: 1,
        uptime_ms: 60_000,
        firmware: pressline_protocol::FirmwareVersion {
            major: 1,
            minor: 0,
            patch: 0,
        },
        battery_mv: None,
        rssi_dbm: None,
        queue_depth: 0,
        queue_capacity: 512,
        dropped_presses: 0,
        reset_reason: 1,
        unix_time_ms: None,
    };
    let mut buf = [0u8; pressline_protocol::heartbeat::HEARTBEAT_BUF_LEN];
    let file = dir.join(format!("{terminal}.heartbeat"));
    std::fs::write(&file, hb.encode(&mut buf).unwrap()).unwrap();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &gateway.mqtt_port.to_string()])
        .args(["-t", &format!("pressline/v1/term/{terminal}/heartbeat")])
        .arg("-f")
        .arg(&file)
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub of a heartbeat failed");
}

fn alert(gateway: &Gateway, id: u64) -> Value {
    gateway
        .get("/api/v1/alerts")
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

fn channel(gateway: &Gateway, name: &str) -> Value {
    gateway.stats()["notification_channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == name)
        .cloned()
        .unwrap()
}

#[test]
fn an_alert_is_notified_escalated_acknowledged_and_recovered_and_a_receiver_outage_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start(dir.path());
    let routes = r#"
[[alerting.routes]]
name = "technicians"
kinds = ["offline"]
channels = ["ops", "techs"]
escalate_to = ["managers"]
escalate_after_secs = 3
"#;
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "arena".into(),
            config_toml: Some(config(&receiver, routes)),
            ..Default::default()
        },
    );

    // A terminal presses once, then goes silent: offline.
    press(&gateway, "door-1", 1);
    wait_until(
        "the raised notification reaches ops and the technicians",
        || receiver.keys("/ops") == ["arena:1:1"] && receiver.keys("/") == ["arena:1:1"],
    );
    let raised = &receiver.bodies("/ops")[0];
    assert_eq!(raised["schema"], "pressline.notification.v1");
    assert_eq!(raised["idempotency_key"], "arena:1:1");
    assert_eq!(raised["event"], "raised");
    assert_eq!(raised["channel"], "ops");
    assert_eq!(raised["title"], "Critical at arena");
    assert!(
        raised["text"]
            .as_str()
            .unwrap()
            .starts_with("terminal door-1: offline"),
        "{raised}"
    );
    assert_eq!(raised["alert"]["schema"], "pressline.alert.v1");
    assert_eq!(raised["alert"]["kind"], "offline");
    assert_eq!(raised["alert"]["lifecycle"], "raised");
    let link = raised["ack_url"].as_str().unwrap();
    assert!(
        link.starts_with("https://gateway.arena.example/ack/1?exp="),
        "{link}"
    );
    // ntfy: JSON publishing to the server root, the topic inside.
    let ntfy = &receiver.bodies("/")[0];
    assert_eq!(ntfy["topic"], "arena-techs");
    assert_eq!(ntfy["priority"], 5);
    assert_eq!(ntfy["actions"][0]["label"], "Acknowledge");
    // Slack's channel is on no route: it hears nothing.
    assert!(receiver.keys("/floor").is_empty());

    // Nobody acknowledges within 3 s: the managers' Teams channel hears.
    wait_until("the escalation reaches the managers", || {
        receiver.keys("/managers") == ["arena:1:2"]
    });
    let card = &receiver.bodies("/managers")[0];
    assert_eq!(
        card["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let texts = card["attachments"][0]["content"]["body"].to_string();
    assert!(
        texts.contains("Escalated, nobody has acknowledged"),
        "{texts}"
    );
    assert_eq!(alert(&gateway, 1)["event"], "escalated");

    // Acknowledged from the fleet CLI: everyone told so far hears who.
    let fleet_config = dir.path().join("fleet.toml");
    add_site(&fleet_config, "arena", &gateway);
    let (code, out, err) = fleet(
        &fleet_config,
        &[
            "alerts",
            "ack",
            "1",
            "--site",
            "arena",
            "--by",
            "Anna",
            "--note",
            "on my way",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("alert 1 at arena acknowledged by Anna"),
        "{out}"
    );
    wait_until(
        "the acknowledgement reaches ops, technicians and managers",
        || {
            receiver.keys("/ops").contains(&"arena:1:3".to_string())
                && receiver.keys("/").contains(&"arena:1:3".to_string())
                && receiver
                    .keys("/managers")
                    .contains(&"arena:1:3".to_string())
        },
    );
    let ack = receiver.bodies("/ops").pop().unwrap();
    assert_eq!(ack["event"], "acknowledged");
    assert_eq!(ack["title"], "Acknowledged by Anna at arena");
    assert!(ack["ack_url"].is_null(), "no link once acknowledged");
    let (_, listed, _) = fleet(&fleet_config, &["alerts"]);
    assert!(
        listed.contains("acknowledged") && listed.contains("Anna"),
        "{listed}"
    );

    // The receiver goes down; the terminal comes back: the recovery waits.
    receiver.stop();
    press(&gateway, "door-1", 2);
    wait_until("the ops channel reports failing", || {
        let c = channel(&gateway, "ops");
        c["failing"] == true && c["pending"].as_u64() == Some(1)
    });
    let error = channel(&gateway, "ops")["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("cannot reach the receiver"), "{error}");
    assert!(gateway.metrics().contains(
        "pressline_notification_channel_failing{site=\"arena\",channel=\"ops\",kind=\"webhook\"} 1"
    ));
    let (code, status, warnings) = fleet(&fleet_config, &["status"]);
    assert!(status.contains("FAILING: "), "{status}");
    assert!(
        warnings.contains("notification channel \"ops\" failing"),
        "{warnings}"
    );
    assert_eq!(code, 1, "a failing channel is a problem for scripts too");
    assert_eq!(alert(&gateway, 1)["lifecycle"], "recovered");

    // Back up: the retries deliver it, once per channel.
    receiver.restart();
    wait_until("the recovery is delivered after the outage", || {
        ["/ops", "/", "/managers"]
            .iter()
            .all(|p| receiver.keys(p).contains(&"arena:1:4".to_string()))
    });
    wait_until("the channel is healthy again", || {
        channel(&gateway, "ops")["failing"] == false
    });
    for path in ["/ops", "/", "/managers"] {
        let keys = receiver.keys(path);
        let mut unique = keys.clone();
        unique.dedup();
        assert_eq!(keys, unique, "{path}: each transition once, in order");
    }
    assert_eq!(
        receiver.keys("/ops"),
        ["arena:1:1", "arena:1:3", "arena:1:4"]
    );
    assert_eq!(
        receiver.keys("/managers"),
        ["arena:1:2", "arena:1:3", "arena:1:4"]
    );
    let recovered = receiver.bodies("/ops").pop().unwrap();
    assert_eq!(
        (
            recovered["event"].as_str(),
            recovered["alert"]["lifecycle"].as_str()
        ),
        (Some("recovered"), Some("recovered"))
    );

    // Response figures: acknowledged and recovered, in the API and metrics.
    let response = gateway.get("/api/v1/alerts/response");
    assert_eq!(response["overall"]["alerts"], 1);
    assert_eq!(response["overall"]["acknowledged"], 1);
    assert_eq!(response["overall"]["recovered"], 1);
    assert!(response["overall"]["ack_median_secs"].as_f64().unwrap() >= 3.0);
    assert!(gateway
        .metrics()
        .contains("pressline_alert_ack_seconds_count{site=\"arena\",zone=\"all\"} 1"));

    // A second terminal goes offline; its signed link acknowledges it.
    press(&gateway, "door-2", 1);
    wait_until("the second alert's notification", || {
        receiver.keys("/ops").contains(&"arena:2:1".to_string())
    });
    let body = receiver
        .bodies("/ops")
        .into_iter()
        .find(|b| b["idempotency_key"] == "arena:2:1")
        .unwrap();
    let link = body["ack_url"]
        .as_str()
        .unwrap()
        .replace("https://gateway.arena.example", &gateway.url());
    let page = ureq::get(&link).call().unwrap().into_string().unwrap();
    assert!(
        page.contains("Acknowledge this alert?") && page.contains("door-2"),
        "{page}"
    );
    assert_eq!(
        alert(&gateway, 2)["lifecycle"],
        "raised",
        "opening the link changes nothing"
    );
    let url = url_parts(&link);
    let tampered = ureq::post(&format!("{}/ack/2", gateway.url())).send_form(&[
        ("exp", &url["exp"]),
        ("by", "someone else"),
        ("sig", &url["sig"]),
        ("name", "Mallory"),
    ]);
    assert!(matches!(tampered, Err(ureq::Error::Status(403, _))));
    let done = ureq::post(&format!("{}/ack/2", gateway.url()))
        .send_form(&[
            ("exp", &url["exp"]),
            ("by", &url["by"]),
            ("sig", &url["sig"]),
            ("name", "Ben"),
        ])
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        done.contains("Acknowledged") && done.contains("By Ben"),
        "{done}"
    );
    let second = alert(&gateway, 2);
    assert_eq!(second["acknowledged_by"], "Ben");
    assert_eq!(second["ack_note"], "acknowledged from the link sent to ops");
    // An API acknowledgement of an unknown alert is a clear 404.
    let unknown = ureq::post(&format!("{}/api/v1/alerts/99/ack", gateway.url()))
        .set("Authorization", &format!("Bearer {}", gateway.token()))
        .send_json(serde_json::json!({"by": "Anna"}));
    assert!(matches!(unknown, Err(ureq::Error::Status(404, _))));
}

#[test]
fn a_slow_or_rejecting_receiver_delays_only_its_own_channel() {
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold-slow-receiver");
    std::fs::write(&hold, "").unwrap();
    let slow = Receiver::misbehaving(
        dir.path(),
        "slow",
        &["--hold-while", hold.to_str().unwrap()],
    );
    let picky = Receiver::misbehaving(dir.path(), "picky", &["--reject", "arena:1:1=422"]);
    let fast = Receiver::misbehaving(dir.path(), "fast", &[]);
    let config = format!(
        r#"
[health]
offline_after_secs = 2
{ENTRANCES}
[alerting.delivery]
retry_min_secs = 1
retry_max_secs = 2
timeout_secs = 600
[alerting.channels.slow]
kind = "webhook"
url = "{slow}"
[alerting.channels.picky]
kind = "webhook"
url = "{picky}"
[alerting.channels.fast]
kind = "webhook"
url = "{fast}"
[[alerting.routes]]
name = "everyone"
channels = ["slow", "picky", "fast"]
"#,
        slow = slow.url("/slow"),
        picky = picky.url("/picky"),
        fast = fast.url("/fast"),
    );
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "arena".into(),
            config_toml: Some(config),
            ..Default::default()
        },
    );

    // Alert 1: the slow receiver takes it and holds on; the picky one
    // rejects it for good.
    press(&gateway, "door-1", 1);
    wait_until("the first alert reaches the fast channel", || {
        fast.keys("/fast") == ["arena:1:1"]
    });
    wait_until("the slow receiver is holding the first alert", || {
        slow.keys("/slow") == ["arena:1:1"]
    });
    wait_until("the rejected document is parked", || {
        channel(&gateway, "picky")["parked"] == 1
    });
    assert_eq!(picky.answers("/picky", "arena:1:1"), [422, 422, 422]);
    assert_eq!(channel(&gateway, "picky")["pending"], 0);

    // Alert 2 while the slow receiver still holds alert 1: the other
    // channels hear of it, the picky one past its parked document.
    press(&gateway, "door-2", 1);
    wait_until(
        "the second alert reaches the fast and the picky channel",
        || {
            fast.keys("/fast") == ["arena:1:1", "arena:2:1"]
                && picky.answers("/picky", "arena:2:1") == [200]
        },
    );
    assert!(hold.exists());
    assert_eq!(
        slow.keys("/slow"),
        ["arena:1:1"],
        "the slow one is still held"
    );

    // Parked is counted and shown: stats, /metrics, fleet status, the
    // dashboard in a browser.
    assert!(gateway.metrics().contains(
        "pressline_notifications_parked{site=\"arena\",channel=\"picky\",kind=\"webhook\"} 1"
    ));
    assert!(channel(&gateway, "picky")["last_error"]
        .as_str()
        .unwrap()
        .contains("HTTP 422"));
    let fleet_config = dir.path().join("fleet.toml");
    add_site(&fleet_config, "arena", &gateway);
    let (code, status, warnings) = fleet(&fleet_config, &["status"]);
    assert!(status.contains("PARKED: picky (1)"), "{status}");
    assert!(
        warnings
            .contains("notification channel \"picky\" has 1 notification(s) its receiver rejects"),
        "{warnings}"
    );
    assert_eq!(
        code, 1,
        "an undelivered notification is a problem for scripts"
    );
    let mut browser = Browser::open(&format!("{}/?token={}", gateway.url(), gateway.token()));
    browser.wait_for(
        "the channel table shows the parked notification",
        "document.querySelector('#channels [data-channel=\"picky\"] [data-parked=\"1\"]') !== null",
    );

    // Released, the slow receiver gets everything, in order.
    std::fs::remove_file(&hold).unwrap();
    wait_until("the slow channel catches up", || {
        slow.keys("/slow") == ["arena:1:1", "arena:2:1"]
    });
    wait_until("the slow channel has nothing waiting", || {
        channel(&gateway, "slow")["pending"] == 0
    });
    assert_eq!(channel(&gateway, "slow")["failing"], false);
}

/// Fills the filesystem holding `dir` with a file in it.
fn fill_up(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file
        .write_all(&chunk)
        .and_then(|()| file.sync_all())
        .is_ok()
    {}
    filler
}

/// The data directory on a real filesystem that fills up: an
/// acknowledgement the store cannot save is answered with an error, by the
/// API and by the signed link, and changes nothing; an alert raised
/// meanwhile is saved and notified once space returns.
#[test]
fn an_acknowledgement_the_store_cannot_save_is_answered_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("data-arena"), 16 * 1024) else {
        return;
    };
    let receiver = Receiver::start(dir.path());
    let routes = "[[alerting.routes]]\nname = \"ops\"\nchannels = [\"ops\"]\n";
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "arena".into(),
            config_toml: Some(config(&receiver, routes)),
            ..Default::default()
        },
    );
    press(&gateway, "door-1", 1);
    wait_until("the alert is notified", || {
        receiver.keys("/ops") == ["arena:1:1"]
    });
    let link = receiver.bodies("/ops")[0]["ack_url"]
        .as_str()
        .unwrap()
        .replace("https://gateway.arena.example", &gateway.url());

    // The disk fills; presses of a second terminal make the store fail.
    let filler = fill_up(fs.path());
    let mut seq = 0;
    wait_until("the store reports the full disk", || {
        let batch: String = (0..200)
            .map(|_| {
                seq += 1;
                format!("{{\"seq\": {seq}, \"button\": \"happy\"}}\n")
            })
            .collect();
        mosquitto_pub_lines(
            gateway.mqtt_port,
            "pressline/v1/term/door-2/press/json",
            &batch,
        );
        gateway.stats()["storage_fault_reason"] == "no_space"
    });

    let by_api = ureq::post(&format!("{}/api/v1/alerts/1/ack", gateway.url()))
        .set("Authorization", &format!("Bearer {}", gateway.token()))
        .send_json(serde_json::json!({"by": "Anna"}));
    let Err(ureq::Error::Status(503, answer)) = by_api else {
        panic!("the API must answer 503: {by_api:?}");
    };
    let answer = answer.into_string().unwrap();
    assert!(answer.contains("could not be saved"), "{answer}");
    let url = url_parts(&link);
    let by_link = ureq::post(&format!("{}/ack/1", gateway.url())).send_form(&[
        ("exp", &url["exp"]),
        ("by", &url["by"]),
        ("sig", &url["sig"]),
        ("name", "Ben"),
    ]);
    let Err(ureq::Error::Status(503, page)) = by_link else {
        panic!("the link must answer 503: {by_link:?}");
    };
    assert!(page.into_string().unwrap().contains("Not acknowledged"));
    let alert_1 = alert(&gateway, 1);
    assert_eq!(alert_1["lifecycle"], "raised", "nothing changed: {alert_1}");
    assert!(alert_1["acknowledged_by"].is_null());

    // Meanwhile the second terminal goes silent: its alert waits for the
    // store, then is saved and notified. (Its heartbeat makes it heard
    // from whether or not a press of it was stored before the disk filled:
    // the monitor learns of presses only once they are committed.)
    heartbeat(&gateway, "door-2", dir.path());
    let mut offline = 0;
    wait_until("the second terminal's offline alert is raised", || {
        let alerts = gateway.get("/api/v1/alerts");
        let found = alerts.as_array().unwrap().iter().find(|a| {
            a["terminal"] == "door-2" && a["kind"] == "offline" && a["lifecycle"] == "raised"
        });
        offline = found.and_then(|a| a["id"].as_u64()).unwrap_or(0);
        offline != 0
    });
    std::fs::remove_file(&filler).unwrap();
    wait_until("the store reopened by itself", || {
        gateway.stats()["storage_fault"].is_null()
    });
    wait_until("the alert raised during the outage is notified", || {
        receiver
            .keys("/ops")
            .contains(&format!("arena:{offline}:1"))
    });
    let acked = ureq::post(&format!("{}/api/v1/alerts/1/ack", gateway.url()))
        .set("Authorization", &format!("Bearer {}", gateway.token()))
        .send_json(serde_json::json!({"by": "Anna"}))
        .unwrap()
        .into_json::<Value>()
        .unwrap();
    assert_eq!(acked["acknowledged_by"], "Anna");
    wait_until("the acknowledgement is notified", || {
        receiver.keys("/ops").contains(&"arena:1:2".to_string())
    });
}

fn url_parts(link: &str) -> BTreeMap<String, String> {
    let query = link.split_once('?').unwrap().1;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v.replace('+', " ");
            // The values here are hex, digits and channel names.
            let v = v.replace("%20", " ");
            (k.to_string(), v)
        })
        .collect()
}

#[test]
fn a_gateway_killed_with_notifications_pending_delivers_each_transition_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The receiver is down from the start: everything queues.
    let mut receiver = Receiver::start(dir.path());
    receiver.stop();
    let routes = r#"
[[alerting.routes]]
name = "ops"
channels = ["ops", "floor"]
"#;
    let mut gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "arena".into(),
            config_toml: Some(config(&receiver, routes)),
            ..Default::default()
        },
    );
    let terminals = ["t-1", "t-2", "t-3"];
    for t in terminals {
        press(&gateway, t, 1);
    }
    wait_until("three offline alerts", || {
        gateway
            .get("/api/v1/alerts?open=true")
            .as_array()
            .unwrap()
            .len()
            == 3
    });
    for t in terminals {
        press(&gateway, t, 2);
    }
    // Raised and recovered, for two channels: twelve notifications queued
    // (the queue, read from the store, is what `pending` counts).
    wait_until("twelve notifications pending in the store", || {
        channel(&gateway, "ops")["pending"] == 6 && channel(&gateway, "floor")["pending"] == 6
    });
    gateway.kill9();

    receiver.restart();
    gateway.restart_after_crash();
    let expected: Vec<String> = (1..=3)
        .flat_map(|id| [format!("arena:{id}:1"), format!("arena:{id}:2")])
        .collect();
    wait_until(
        "every pending transition delivered after the restart",
        || {
            ["/ops", "/floor"].iter().all(|p| {
                let keys = receiver.keys(p);
                expected.iter().all(|k| keys.contains(k))
            })
        },
    );
    for path in ["/ops", "/floor"] {
        let keys = receiver.keys(path);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for k in &keys {
            *counts.entry(k).or_default() += 1;
        }
        assert!(
            counts.values().all(|&n| n == 1),
            "{path}: each key once: {keys:?}"
        );
    }
    // Slack got six at once: more than coalesce_above (3), one digest.
    let slack = receiver.bodies("/floor");
    assert!(
        slack.iter().any(|b| b["blocks"][0]["type"] == "header"),
        "a digest: {slack:?}"
    );
    // The generic webhook is never coalesced: one document per transition.
    assert!(receiver
        .bodies("/ops")
        .iter()
        .all(|b| b["idempotency_key"].is_string()));
}

#[test]
fn an_alert_is_acknowledged_from_the_dashboard_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let routes = r#"
[[alerting.routes]]
name = "ops"
channels = ["ops"]
"#;
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "arena".into(),
            config_toml: Some(config(&receiver, routes)),
            ..Default::default()
        },
    );
    press(&gateway, "door-1", 1);
    wait_until("an open alert", || {
        alert(&gateway, 1)["lifecycle"] == "raised"
    });

    let mut browser = Browser::open(&format!("{}/?token={}", gateway.url(), gateway.token()));
    browser.wait_for(
        "the alert with its Acknowledge button",
        "!!document.querySelector('[data-alert=\"1\"] button[data-ack=\"1\"]')",
    );
    // Without a name the page asks for one and acknowledges nothing.
    browser.eval("document.querySelector('button[data-ack=\"1\"]').click(); true");
    browser.wait_for(
        "the name is asked for",
        "document.getElementById('ack-error').textContent.includes('name')",
    );
    assert_eq!(alert(&gateway, 1)["lifecycle"], "raised");
    browser.eval(
        "document.getElementById('ack-name').value = 'Chloe'; \
         document.querySelector('button[data-ack=\"1\"]').click(); true",
    );
    wait_until("the gateway records the acknowledgement", || {
        alert(&gateway, 1)["acknowledged_by"] == "Chloe"
    });
    browser.wait_for(
        "the page shows who is on it",
        "document.querySelector('[data-alert=\"1\"]').textContent.includes('acknowledged by Chloe')",
    );
    wait_until("the acknowledgement is notified", || {
        receiver.keys("/ops") == ["arena:1:1", "arena:1:2"]
    });
    assert_eq!(
        browser.eval("localStorage.getItem('pressline-name')"),
        "Chloe",
        "remembered"
    );
    browser.wait_for(
        "the channel table",
        "document.querySelector('#channels [data-channel=\"ops\"]') !== null",
    );
    browser.wait_for(
        "the by-hour response row",
        "[...document.querySelectorAll('#response-hours td')].some((td) => td.textContent.endsWith(' s'))",
    );
    // A later live update from the gateway counts the acknowledgement.
    browser.wait_for(
        "the response table counts the acknowledgement",
        "document.querySelector('#response tr:nth-child(2) td:nth-child(3)').textContent === '1'",
    );

    let artifact = bin("gateway")
        .parent()
        .unwrap()
        .join("dashboard-acknowledged.png");
    browser.screenshot(&artifact);
    assert!(std::fs::metadata(&artifact)
        .map(|m| m.len() > 10_000)
        .unwrap_or(false));
    eprintln!("dashboard screenshot: {}", artifact.display());
}

#[test]
fn gateway_demo_posts_alerts_to_a_local_webhook_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    // The README's demo, with a lower bar for the zone rule so the demo's
    // unhappy food court alarms within seconds.
    let config = dir.path().join("demo.toml");
    std::fs::write(&config, "[scores]\nmin_presses = 3\n").unwrap();
    let http = free_port();
    let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
    let mut demo = Command::new(bin("gateway"))
        .args([
            "demo",
            "--terminals",
            "6",
            "--webhook",
            &receiver.url("/hook"),
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--mqtt-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--mqtt-v5-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{http}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // (With so low a bar, another zone may alarm by chance as well.)
    let food = |b: &Value| {
        b["alert"]["kind"] == "zone_unhappy"
            && b["alert"]["zone"] == "north-food"
            && b["event"] == "raised"
    };
    wait_until(
        "the demo's unhappy food court is posted to the receiver",
        || receiver.bodies("/hook").iter().any(food),
    );
    let raised = receiver.bodies("/hook").into_iter().find(food).unwrap();
    assert_eq!(raised["title"], "Unhappy zone at demo-site");
    // The link points back at the demo's own HTTP address, and works.
    let link = raised["ack_url"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("http://127.0.0.1:{http}/ack/")),
        "{link}"
    );
    let page = ureq::get(link).call().unwrap().into_string().unwrap();
    assert!(page.contains("North stand food court"), "{page}");
    let _ = demo.kill();
    let _ = demo.wait();
}

#[test]
fn a_zone_doing_very_well_is_praised_to_the_team_that_earned_it() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let extra = r#"
[scores]
min_presses = 3
praise_percent = 90
[zones.bar]
name = "South stand bar"
terminals = ["bar-1", "bar-2", "bar-3"]
[[alerting.routes]]
name = "bar team"
kinds = ["zone_happy"]
zones = ["bar"]
channels = ["floor"]
"#;
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "arena".into(),
            config_toml: Some(config(&receiver, extra)),
            ..Default::default()
        },
    );
    for t in ["bar-1", "bar-2", "bar-3"] {
        mosquitto_pub(
            gateway.mqtt_port,
            &format!("pressline/v1/term/{t}/press/json"),
            r#"{"seq": 1, "button": "very_happy"}"#,
        );
    }
    wait_until("the praise reaches the bar team's Slack", || {
        !receiver.keys("/floor").is_empty()
    });
    let slack = &receiver.bodies("/floor")[0];
    let text = slack["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "Praise: a zone doing very well at arena: South stand bar: 100% happy of 3"
        ),
        "{text}"
    );
    let praise = &gateway.get("/api/v1/alerts?open=true")[0];
    assert_eq!(
        (praise["kind"].as_str(), praise["severity"].as_str()),
        (Some("zone_happy"), Some("info"))
    );
    assert_eq!(praise["zone"], "bar");
}

#[test]
fn alerts_are_mailed_through_an_smtp_relay_and_an_outage_of_the_relay_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut smtp = SmtpServer::start(dir.path());
    let extra = format!(
        r#"
[alerting.channels.duty]
kind = "email"
url = "smtp://127.0.0.1:{}"
from = "Pressline arena <pressline@arena.example>"
to = ["duty-manager@arena.example", "Ops <ops@arena.example>"]
[[alerting.routes]]
name = "duty manager"
kinds = ["offline"]
channels = ["duty"]
"#,
        smtp.port
    );
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "arena".into(),
            config_toml: Some(config(&receiver, &extra)),
            ..Default::default()
        },
    );
    press(&gateway, "door-1", 1);
    wait_until("the alert e-mail", || !smtp.messages().is_empty());
    let mail = &smtp.messages()[0];
    assert!(
        mail.contains("Subject: Critical at arena: terminal door-1: offline"),
        "{mail}"
    );
    assert!(mail.contains("Message-ID: <arena-1-1@pressline>"), "{mail}");
    assert!(
        mail.contains("To: duty-manager@arena.example, Ops <ops@arena.example>"),
        "{mail}"
    );
    assert!(
        mail.contains("Acknowledge: https://gateway.arena.example/ack/1?exp="),
        "{mail}"
    );

    // The relay goes away; the acknowledgement waits for it.
    smtp.stop();
    let ack = ureq::post(&format!("{}/api/v1/alerts/1/ack", gateway.url()))
        .set("Authorization", &format!("Bearer {}", gateway.token()))
        .send_json(serde_json::json!({"by": "Dana"}))
        .unwrap()
        .into_json::<Value>()
        .unwrap();
    assert_eq!(ack["lifecycle"], "acknowledged");
    wait_until("the e-mail channel reports failing", || {
        channel(&gateway, "duty")["failing"] == true
    });
    let error = channel(&gateway, "duty")["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("the SMTP relay did not take the e-mail"),
        "{error}"
    );
    smtp.restart();
    wait_until("the acknowledgement e-mail after the outage", || {
        smtp.messages().len() == 2
    });
    let second = &smtp.messages()[1];
    assert!(
        second.contains("Subject: Acknowledged by Dana at arena"),
        "{second}"
    );
    assert!(
        second.contains("Message-ID: <arena-1-2@pressline>"),
        "{second}"
    );
}
