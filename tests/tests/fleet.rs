//! Fleet health across sites, end to end: two real gateways feeding one
//! Mosquitto, simulated terminals that stop, run low on battery or get a
//! stuck button, and the real `fleet` CLI reporting each correctly.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn fleet_json(config: &Path, args: &[&str]) -> (i32, Value) {
    let (code, stdout, stderr) = fleet(config, args);
    let value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("fleet {args:?} JSON: {e}\n{stdout}\n{stderr}"));
    (code, value)
}

/// Fast offline alerts, for the terminals the sites know: only a
/// terminal registered or placed in a zone raises `offline`.
const FAST_HEALTH: &str = r#"
[health]
offline_after_secs = 4
[zones.stands]
name = "Stands"
terminals = ["n000", "n001", "n002", "n003", "s000", "s001", "s002", "x000", "x001"]
"#;

#[test]
fn fleet_reports_terminals_batteries_stuck_buttons_and_outages_across_two_sites() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path());
    let consumer = Consumer::start(mosquitto.port, "analytics-fleet");
    let site = |name: &str| {
        Gateway::start(
            dir.path(),
            GatewayOptions {
                site: name.into(),
                upstream: Some(mosquitto.url()),
                config_toml: Some(FAST_HEALTH.into()),
                ..Default::default()
            },
        )
    };
    let north = site("north");
    let south = site("south");

    // North: 4 terminals, n000 has a nearly empty battery, n003 a stuck button.
    let _north_sim = Sim::spawn(
        &north.broker(),
        &[
            "--terminals",
            "4",
            "--presses",
            "20",
            "--rate",
            "20",
            "--id-prefix",
            "n",
            "--heartbeat-secs",
            "1",
            "--duration",
            "600",
            "--low-battery",
            "1",
            "--stuck-button",
            "1",
        ],
    );
    // South: 3 terminals that stay, 2 that a cleaner unplugs.
    let _south_sim = Sim::spawn(
        &south.broker(),
        &[
            "--terminals",
            "3",
            "--presses",
            "5",
            "--rate",
            "10",
            "--id-prefix",
            "s",
            "--heartbeat-secs",
            "1",
            "--duration",
            "600",
        ],
    );
    let unplugged = Sim::spawn(
        &south.broker(),
        &[
            "--terminals",
            "2",
            "--presses",
            "5",
            "--rate",
            "10",
            "--id-prefix",
            "x",
            "--heartbeat-secs",
            "1",
            "--duration",
            "600",
        ],
    );
    wait_until("all terminals registered", || {
        north.get("/api/v1/terminals").as_array().unwrap().len() == 4
            && south.get("/api/v1/terminals").as_array().unwrap().len() == 5
    });
    unplugged.pull_the_plug();

    let config = dir.path().join("sites.toml");
    let token_file = |g: &Gateway| g.data_dir.join("api-token");
    for (name, g) in [("north", &north), ("south", &south)] {
        let (code, out, err) = fleet(
            &config,
            &[
                "site",
                "add",
                name,
                "--url",
                &g.url(),
                "--token-file",
                token_file(g).to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, _) = fleet(&config, &["site", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("north") && out.contains("south") && !out.contains(&north.token()));

    // Every condition shows up in `fleet alerts`.
    let open_alerts = || {
        let (_, v) = fleet_json(&config, &["alerts", "--all-sites", "--json"]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["terminal"].as_str().unwrap().to_string(),
                    a["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    wait_until("low battery, stuck button and two offline alerts", || {
        let open = open_alerts();
        [
            "n000:low_battery",
            "n003:stuck_button",
            "x000:offline",
            "x001:offline",
        ]
        .iter()
        .all(|want| {
            let (t, k) = want.split_once(':').unwrap();
            open.contains(&(t.to_string(), k.to_string()))
        })
    });
    let (code, alerts) = fleet_json(&config, &["alerts", "--json"]);
    assert_eq!(code, 0);
    for a in alerts.as_array().unwrap() {
        assert!(
            a["raised_at"].is_string() && a["cleared_at"].is_null(),
            "{a}"
        );
        let expected = if a["kind"] == "offline" {
            "critical"
        } else {
            "warning"
        };
        assert_eq!(a["severity"], expected, "{a}");
    }
    let kinds: Vec<_> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(
        !kinds.contains(&"weak_wifi") && !kinds.contains(&"clock_skew"),
        "no false alarms: {kinds:?}"
    );

    // `fleet terminals`: all nine, right state, battery and firmware.
    let (code, terminals) = fleet_json(&config, &["terminals", "--json"]);
    assert_eq!(code, 0);
    let terminals = terminals.as_array().unwrap();
    assert_eq!(terminals.len(), 9);
    let by_id = |id: &str| {
        terminals
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing"))
    };
    assert_eq!(by_id("n000")["battery_mv"], 3300);
    assert_eq!(by_id("n000")["site"], "north");
    assert_eq!(by_id("x001")["online"], false);
    assert_eq!(by_id("x001")["site"], "south");
    assert_eq!(by_id("s002")["online"], true);
    for t in terminals {
        assert!(
            t["last_seen"].is_string() && t["rssi_dbm"].is_number() && t["firmware"] == "0.1.0",
            "{t}"
        );
    }

    // `fleet status`: both sites, the outage counted, exit 1 for the critical alerts.
    let (code, status) = fleet_json(&config, &["status", "--all-sites", "--json"]);
    assert_eq!(code, 1, "critical alerts open: {status}");
    let status = status.as_array().unwrap();
    let south_row = status.iter().find(|s| s["site"] == "south").unwrap();
    assert_eq!(
        (south_row["online"].as_u64(), south_row["offline"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(south_row["alerts_critical"], 2);
    let north_row = status.iter().find(|s| s["site"] == "north").unwrap();
    assert_eq!(north_row["presses_today"], 80);
    assert_eq!(north_row["reachable"], true);
    let (code, out, _) = fleet(&config, &["status", "--site", "north"]);
    assert_eq!(code, 0, "north has only warnings:\n{out}");
    assert!(out.contains("TERMINALS") && out.contains("north"));

    // `fleet health`: one terminal, found without naming its site.
    let (code, health) = fleet_json(&config, &["health", "n000", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(health["terminal"]["battery_mv"], 3300);
    assert!(health["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["kind"] == "low_battery"));
    let (code, _, err) = fleet(&config, &["health", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("not known"), "{err}");

    // Errors say what to do next, with exit codes scripts can use.
    let ghost_port = free_port();
    fleet(
        &config,
        &[
            "site",
            "add",
            "ghost",
            "--url",
            &format!("http://127.0.0.1:{ghost_port}"),
            "--token",
            "t",
        ],
    );
    let (code, out, err) = fleet(&config, &["status", "--all-sites"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("ghost") && out.contains("unreachable") && err.contains("unreachable"),
        "{out}{err}"
    );
    fleet(
        &config,
        &[
            "site",
            "add",
            "wrongtoken",
            "--url",
            &north.url(),
            "--token",
            "not-the-token",
        ],
    );
    let (code, _, err) = fleet(&config, &["terminals", "--site", "wrongtoken"]);
    assert_eq!(code, 1);
    assert!(err.contains("refused the API token"), "{err}");
    let (code, _, err) = fleet(&config, &["status", "--site", "atlantis"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown site") && err.contains("north"),
        "{err}"
    );

    // Analytics see both sites upstream: presses, retained health, alerts.
    wait_until("presses from both sites upstream", || {
        let ids = consumer.ids();
        ids.iter().any(|i| i.starts_with("north:"))
            && ids.iter().filter(|i| i.starts_with("south:s")).count() == 15
    });
    wait_until("alert events upstream", || {
        let alerts = consumer.others_on("/alert");
        alerts.iter().any(|(t, a)| {
            t == "pressline/v1/south/alert"
                && a["kind"] == "offline"
                && a["schema"] == "pressline.alert.v1"
        }) && alerts
            .iter()
            .any(|(t, a)| t == "pressline/v1/north/alert" && a["kind"] == "low_battery")
    });
    wait_until("retained health upstream", || {
        consumer
            .others_on("/health")
            .iter()
            .any(|(t, h)| t == "pressline/v1/north/n000/health" && h["battery_mv"] == 3300)
    });
}

#[test]
fn the_registry_survives_a_gateway_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "hall".into(),
            ..Default::default()
        },
    );
    Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "2",
            "--presses",
            "3",
            "--rate",
            "0",
            "--low-battery",
            "1",
            "--id-prefix",
            "h",
        ],
    )
    .expect_all_acked();
    wait_until("registered", || {
        gateway.get("/api/v1/terminals").as_array().unwrap().len() == 2
    });
    wait_until("low battery alert", || {
        gateway
            .get("/api/v1/alerts?open=true")
            .as_array()
            .unwrap()
            .len()
            == 1
    });
    assert!(gateway.terminate().success());
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "hall".into(),
            ..Default::default()
        },
    );
    let terminals = gateway.get("/api/v1/terminals");
    assert_eq!(terminals.as_array().unwrap().len(), 2, "{terminals}");
    let h000 = gateway.get("/api/v1/terminals/h000");
    assert_eq!(h000["presses_total"], 3);
    assert_eq!(h000["open_alerts"], serde_json::json!(["low_battery"]));
    assert_eq!(
        gateway
            .get("/api/v1/alerts?open=true")
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(gateway.stat("presses_today"), 6);
    // Without the token, only /healthz answers.
    let url = format!("{}/api/v1/terminals", gateway.url());
    match ureq::get(&url).call() {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("expected 401 without a token, got {other:?}"),
    }
    match ureq::get(&url)
        .set("Authorization", "Bearer wrong-token-wrong-token")
        .call()
    {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("expected 401 with a wrong token, got {other:?}"),
    }
    match ureq::get(&format!("{}/api/v1/terminals/nobody", gateway.url()))
        .set("Authorization", &format!("Bearer {}", gateway.token()))
        .call()
    {
        Err(ureq::Error::Status(404, _)) => {}
        other => panic!("expected 404 for an unknown terminal, got {other:?}"),
    }
}

/// A manager's profile holds a viewer token: `fleet status` works, and a
/// change is refused with the name of the token that makes it.
#[test]
fn a_site_with_a_viewer_token_reads_and_is_told_which_token_changes_need() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "lobby".into(),
            ..Default::default()
        },
    );
    let config = dir.path().join("sites.toml");
    let viewer = gateway.data_dir.join("viewer-token");
    let (code, out, err) = fleet(
        &config,
        &[
            "site",
            "add",
            "lobby",
            "--url",
            &gateway.url(),
            "--token-file",
            viewer.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = fleet(&config, &["status", "--site", "lobby"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = fleet(
        &config,
        &["terminals", "revoke", "door-1", "--site", "lobby"],
    );
    assert_ne!(code, 0, "{out}");
    // Not "refused the token": the token is good, its scope is too small.
    assert!(
        err.contains("this is a viewer token")
            && err.contains("api-token")
            && err.contains("--token-file FILE")
            && !err.contains("refused the API token"),
        "{err}"
    );
}
