//! Stopping and starting the gateway as a season does (upgrades, power
//! cuts to the gateway itself, `systemctl stop` under full traffic): it
//! pages nobody for terminals that were there all along, stops in seconds
//! whatever the press rate, says `offline` upstream, and loses nothing it
//! acked.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pressline_protocol::upstream::GatewayState;

/// Open offline alerts, by terminal.
fn offline_alerts(gateway: &Gateway) -> Vec<String> {
    gateway
        .get("/api/v1/alerts?open=true")
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "offline")
        .map(|a| a["terminal"].as_str().unwrap().to_string())
        .collect()
}

fn online(gateway: &Gateway, prefix: &str) -> usize {
    gateway
        .get("/api/v1/terminals")
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["id"].as_str().unwrap().starts_with(prefix) && t["online"] == true)
        .count()
}

/// A gateway down for twice `offline_after_secs` (an upgrade, a power cut
/// to it) under heartbeating terminals raises no offline alert for them:
/// silence counts from its own start. A terminal that really stays away
/// still gets its alert.
#[test]
fn a_restart_longer_than_the_offline_time_pages_nobody_but_for_a_terminal_that_stays_away() {
    let dir = tempfile::tempdir().unwrap();
    let options = GatewayOptions {
        site: "venue".into(),
        // Terminals in a zone are known to the site: their silence pages.
        config_toml: Some(
            "[health]\noffline_after_secs = 10\n[zones.hall]\nname = \"Hall\"\nterminals = [\"here-000\", \"here-001\", \"here-002\", \"here-003\", \"here-004\", \"away-000\"]\n"
                .into(),
        ),
        ..Default::default()
    };
    let mut gateway = Gateway::start(dir.path(), options.clone());
    let heartbeating = |prefix: &str, terminals: &str| {
        Sim::spawn(
            &gateway.broker(),
            &[
                "--terminals",
                terminals,
                "--presses",
                "3",
                "--heartbeat-secs",
                "1",
                "--duration",
                "600",
                "--id-prefix",
                prefix,
            ],
        )
    };
    let here = heartbeating("here-", "5");
    let away = heartbeating("away-", "1");
    wait_until("every terminal online", || {
        online(&gateway, "here-") == 5 && online(&gateway, "away-") == 1
    });
    // The gateway goes down; one terminal goes away for good meanwhile.
    gateway.terminate();
    away.pull_the_plug();
    std::thread::sleep(Duration::from_secs(20)); // the outage itself
    gateway.restart_with(options);
    wait_until("the terminal that stayed away alerted", || {
        offline_alerts(&gateway) == ["away-000"]
    });
    assert_eq!(online(&gateway, "here-"), 5, "the others are back");
    assert_eq!(
        offline_alerts(&gateway),
        ["away-000"],
        "and nobody else paged"
    );
    drop(here);
}

/// `systemctl stop` (SIGTERM) at 500 presses a second: the gateway stops
/// taking presses, commits and acks what it took, publishes its retained
/// `offline` status and exits 0 well inside systemd's stop timeout (30 s).
/// Every press a terminal was told is stored is there at the next start.
#[test]
fn a_stop_under_full_traffic_ends_in_seconds_says_offline_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path());
    let consumer = Consumer::start(mosquitto.port, "analytics-stop");
    let options = GatewayOptions {
        site: "stand".into(),
        upstream: Some(mosquitto.url()),
        ..Default::default()
    };
    let mut gateway = Gateway::start(dir.path(), options.clone());
    let (terminals, presses) = (20, 1_500u32);
    let sim = Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "20",
            "--presses",
            &presses.to_string(),
            "--rate",
            "500",
            "--id-prefix",
            "till",
        ],
    );
    wait_until("steady traffic", || gateway.stat("presses_stored") > 2_000);
    wait_until("online upstream", || {
        consumer
            .last_status()
            .is_some_and(|s| s.state == GatewayState::Online)
    });
    let asked = Instant::now();
    let status = gateway.terminate();
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(20), "stopped after {took:?}");
    wait_until("offline retained upstream", || {
        consumer
            .last_status()
            .is_some_and(|s| s.state == GatewayState::Offline && s.since.is_some())
    });
    let log = gateway.log();
    assert!(log.contains("gateway stopped cleanly"), "{log}");
    // Back: the terminals' unacked presses come in; every press once.
    gateway.restart_with(options);
    let report = sim.expect_all_acked();
    let total = u64::from(presses) * terminals;
    assert_eq!(report["acked"], total, "{report}");
    assert_eq!(
        gateway.stat("presses_stored"),
        total,
        "once each, none lost"
    );
    let expected = expected_ids("stand", "till", terminals as usize, presses, 0);
    wait_until("every press upstream", || consumer.ids() == expected);
    println!("stop under traffic: exit 0 after {took:?}; {total} acked, {total} stored");
}
