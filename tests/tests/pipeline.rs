//! The durable press pipeline, end to end against real processes: what a
//! venue operator and an analytics team rely on.

mod common;

use std::collections::BTreeSet;

use common::*;
use pressline_protocol::upstream::GatewayState;

#[test]
fn every_unique_press_is_stored_once_and_arrives_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path());
    let consumer = Consumer::start(mosquitto.port, "analytics-e2e");
    let mut gateway = upstream_gateway(dir.path(), "arena", &mosquitto);

    // 8 terminals x 50 presses, unthrottled, 30% published twice, two of
    // them speaking the JSON form.
    let report = Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "8",
            "--presses",
            "50",
            "--rate",
            "0",
            "--dup-rate",
            "0.3",
            "--json-terminals",
            "2",
            "--id-prefix",
            "t",
        ],
    )
    .expect_all_acked();
    assert_eq!(report["acked"], 400);
    assert!(report["deliberate_duplicates"].as_u64().unwrap() > 0);

    let expected = expected_ids("arena", "t", 8, 50, 0);
    wait_until("all presses upstream", || consumer.ids() == expected);
    wait_until("forward backlog drained", || {
        gateway.stat("forward_pending") == 0
    });
    let stats = gateway.stats();
    assert_eq!(stats["presses_stored"], 400, "{stats}");
    assert_eq!(stats["presses_forwarded"], 400, "{stats}");
    assert!(
        stats["presses_duplicate"].as_u64().unwrap()
            >= report["deliberate_duplicates"].as_u64().unwrap() / 2,
        "{stats}"
    );
    assert_eq!(stats["payloads_rejected"], 0);

    // Upstream documents carry the contract's fields.
    let presses = consumer.presses.lock().unwrap().clone();
    let one = presses
        .iter()
        .find(|p| p.terminal == "t000" && p.seq == 0)
        .unwrap();
    assert_eq!(one.schema, "pressline.press.v1");
    assert_eq!(
        one.id,
        format!("arena:t000:{}:0", one.boot),
        "site:terminal:boot:seq"
    );
    assert_eq!(one.site, "arena");
    assert!((1..=4).contains(&one.score));
    assert_eq!(
        pressline_protocol::Button::from_name(&one.button)
            .unwrap()
            .score(),
        one.score
    );
    assert!(one.received_at.ends_with('Z') && one.pressed_at.is_some());

    // Graceful shutdown: exit 0, and consumers see the retained status go offline.
    assert_eq!(consumer.last_status().unwrap().state, GatewayState::Online);
    let status = gateway.terminate();
    assert!(status.success(), "gateway exit status {status}");
    wait_until("offline status upstream", || {
        consumer
            .last_status()
            .is_some_and(|s| s.state == GatewayState::Offline)
    });
}

#[test]
fn an_upstream_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut mosquitto = Mosquitto::start(dir.path());
    let consumer = Consumer::start(mosquitto.port, "analytics-outage");
    let gateway = upstream_gateway(dir.path(), "airport", &mosquitto);

    let sim = Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "6",
            "--presses",
            "100",
            "--rate",
            "150",
            "--id-prefix",
            "gate",
        ],
    );
    wait_until("some presses forwarded", || {
        gateway.stat("presses_forwarded") >= 50
    });

    mosquitto.stop();
    wait_until("gateway notices the outage", || {
        gateway.stats()["upstream_connected"] == false
    });
    let stored_at_outage = gateway.stat("presses_stored");
    // Presses keep being stored and acked while upstream is down.
    wait_until("presses stored during the outage", || {
        gateway.stat("presses_stored") >= stored_at_outage + 100
    });
    assert!(gateway.stat("forward_pending") > 0);

    mosquitto.restart();
    sim.expect_all_acked();
    let expected = expected_ids("airport", "gate", 6, 100, 0);
    wait_until("every press upstream after the outage", || {
        consumer.ids() == expected
    });
    wait_until("backlog drained", || gateway.stat("forward_pending") == 0);
    assert_eq!(gateway.stat("presses_stored"), 600);
}

#[test]
fn with_several_upstream_nodes_the_gateway_moves_on_when_its_node_dies() {
    let dir = tempfile::tempdir().unwrap();
    let mut node_a = Mosquitto::start(&dir.path().join("a"));
    let node_b = Mosquitto::start(&dir.path().join("b"));
    let consumer_a = Consumer::start(node_a.port, "analytics-a");
    let consumer_b = Consumer::start(node_b.port, "analytics-b");
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "harbour".into(),
            upstream: Some(format!("{},{}", node_a.url(), node_b.url())),
            ..Default::default()
        },
    );
    let sites = dir.path().join("sites.toml");
    add_site(&sites, "harbour", &gateway);

    // 4 terminals x 50 presses, all acked; returns their upstream ids.
    let press = |prefix: &str, rate: &str| {
        Sim::spawn(
            &gateway.broker(),
            &[
                "--terminals",
                "4",
                "--presses",
                "50",
                "--rate",
                rate,
                "--id-prefix",
                prefix,
            ],
        )
        .expect_all_acked();
        expected_ids("harbour", prefix, 4, 50, 0)
    };

    // The first node takes everything while it lives.
    let first = press("first", "0");
    wait_until("the first presses at node a", || consumer_a.ids() == first);
    wait_until("nothing pending", || gateway.stat("forward_pending") == 0);
    assert_eq!(gateway.stats()["upstream_broker"], node_a.url());

    // Node a's machine dies; presses keep coming.
    node_a.kill9();
    let second = press("second", "200");
    wait_until("the later presses at node b", || consumer_b.ids() == second);
    wait_until("nothing pending", || gateway.stat("forward_pending") == 0);
    let stats = gateway.stats();
    assert_eq!(stats["upstream_broker"], node_b.url(), "{stats}");
    assert_eq!(stats["upstream_connected"], true);
    assert_eq!(gateway.stat("presses_stored"), 400);
    let (code, out, err) = fleet(&sites, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("connected to {}", node_b.url())),
        "{out}"
    );
}

#[test]
fn a_gateway_crash_loses_no_acked_press_and_stores_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path());
    let consumer = Consumer::start(mosquitto.port, "analytics-crash");
    let mut gateway = upstream_gateway(dir.path(), "stadium", &mosquitto);

    let sim = Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "8",
            "--presses",
            "150",
            "--rate",
            "300",
            "--dup-rate",
            "0.1",
            "--id-prefix",
            "north",
            "--ack-timeout-ms",
            "1000",
        ],
    );
    wait_until("presses flowing before the crash", || {
        gateway.stat("presses_stored") >= 200
    });
    gateway.restart_after_crash();
    let stored_after_restart = gateway.stat("presses_stored");
    assert!(
        stored_after_restart >= 200,
        "acked presses survived kill -9: {stored_after_restart}"
    );

    // Terminals reconnect and resend; the run ends with every press acked.
    let report = sim.expect_all_acked();
    assert_eq!(report["acked"], 1200);
    assert!(report["reconnects"].as_u64().unwrap() >= 8, "{report}");
    let expected = expected_ids("stadium", "north", 8, 150, 0);
    wait_until("every press upstream after the crash", || {
        consumer.ids() == expected
    });
    // Exactly the unique presses are stored: nothing lost, nothing twice.
    assert_eq!(gateway.stat("presses_stored"), 1200);
    wait_until("backlog drained", || gateway.stat("forward_pending") == 0);
}

#[test]
fn an_overload_far_beyond_the_consumer_ends_with_every_press_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny router segments make the broker drop messages (after PUBACK)
    // whenever the gateway falls behind: resends must repair it.
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "festival".into(),
            config_toml: Some(
                "[mqtt]\nrouter_segment_bytes = 1024\nrouter_segment_count = 2\n".into(),
            ),
            ..Default::default()
        },
    );
    let report = Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "60",
            "--presses",
            "150",
            "--rate",
            "0",
            "--id-prefix",
            "stand",
            "--ack-timeout-ms",
            "1500",
            "--max-in-flight",
            "150",
        ],
    )
    .expect_all_acked();
    assert_eq!(report["acked"], 9000);
    let stats = gateway.stats();
    assert_eq!(stats["presses_stored"], 9000, "{stats}");
    assert_eq!(
        stats["forward_pending"], 9000,
        "no upstream: everything waits in the outbox"
    );
    assert_eq!(stats["upstream_connected"], serde_json::Value::Null);
    eprintln!(
        "overload: {report} / duplicates at gateway {}",
        stats["presses_duplicate"]
    );
}

#[test]
fn bad_input_is_rejected_counted_and_does_not_stop_the_pipeline() {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "mall".into(),
            ..Default::default()
        },
    );

    let mut options = MqttOptions::new("rogue", "127.0.0.1", gateway.mqtt_port);
    options.set_max_packet_size(1 << 16, 1 << 16);
    let (client, mut connection) = Client::new(options, 100);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("pressline/v1/term/k1/press", vec![1, 0x80, 0x80]), // malformed (truncated varint)
        ("pressline/v1/term/k1/press", vec![]),              // empty
        ("pressline/v1/term/k1/press", vec![9, 0, 0, 3, 0]), // unknown_version
        ("pressline/v1/term/k1/press", vec![1, 0, 0, 9, 0]), // button_out_of_range
        ("pressline/v1/term/k1/press", vec![1; 600]),        // oversized
        ("pressline/v1/term/k1/press/json", b"{\"seq\":1}".to_vec()), // malformed
        (
            "pressline/v1/term/k1/press/json",
            br#"{"seq":1,"button":7}"#.to_vec(),
        ), // button_out_of_range
        (
            "pressline/v1/term/k1/press/json",
            br#"{"terminal":"k2","seq":1,"button":1}"#.to_vec(),
        ), // terminal_mismatch
        ("pressline/v1/term/k1/presses", vec![1, 0, 0, 3, 0]), // wrong_topic
        ("pressline/v1/term/k.1/press", vec![1, 0, 0, 3, 0]), // bad_terminal_id
    ];
    for (topic, payload) in &bad {
        client
            .publish(*topic, QoS::AtLeastOnce, false, payload.clone())
            .unwrap();
    }
    let mut acked = 0;
    for event in connection.iter() {
        if let Ok(Event::Incoming(Packet::PubAck(_))) = event {
            acked += 1;
            if acked == bad.len() {
                break;
            }
        }
    }
    wait_until("all bad publishes counted", || {
        gateway.stat("payloads_rejected") == bad.len() as u64
    });
    let stats = gateway.stats();
    let reasons = &stats["rejected_by_reason"];
    for (reason, n) in [
        ("malformed", 2),
        ("empty", 1),
        ("unknown_version", 1),
        ("button_out_of_range", 2),
        ("oversized", 1),
        ("terminal_mismatch", 1),
        ("wrong_topic", 1),
        ("bad_terminal_id", 1),
    ] {
        assert_eq!(reasons[reason], n, "reason {reason}: {stats}");
    }
    assert_eq!(stats["presses_stored"], 0, "nothing rejected is stored");

    // The pipeline keeps flowing for well-behaved terminals.
    Sim::spawn(
        &gateway.broker(),
        &["--terminals", "3", "--presses", "20", "--rate", "0"],
    )
    .expect_all_acked();
    assert_eq!(gateway.stat("presses_stored"), 60);
}

#[test]
fn a_script_can_act_as_a_terminal_with_json() {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "shop".into(),
            ..Default::default()
        },
    );
    let (client, mut connection) = Client::new(
        MqttOptions::new("door-button", "127.0.0.1", gateway.mqtt_port),
        10,
    );
    client
        .subscribe("pressline/v1/gw/door/ack/json", QoS::AtLeastOnce)
        .unwrap();
    let mut acks = BTreeSet::new();
    for event in connection.iter() {
        match event.unwrap() {
            Event::Incoming(Packet::SubAck(_)) => {
                for seq in [1, 2, 2] {
                    let body = format!(r#"{{"seq":{seq},"button":"unhappy"}}"#);
                    client
                        .publish(
                            "pressline/v1/term/door/press/json",
                            QoS::AtLeastOnce,
                            false,
                            body,
                        )
                        .unwrap();
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                let ack: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                assert_eq!(ack["boot"], 0);
                for seq in ack["first_seq"].as_u64().unwrap()..=ack["last_seq"].as_u64().unwrap() {
                    acks.insert(seq);
                }
                if acks == BTreeSet::from([1, 2]) {
                    break;
                }
            }
            _ => {}
        }
    }
    wait_until("the duplicate is counted", || {
        gateway.stat("presses_duplicate") == 1
    });
    assert_eq!(gateway.stat("presses_stored"), 2);
}

#[test]
fn a_full_disk_refuses_presses_without_acking_them_and_they_arrive_later() {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "depot".into(),
            config_toml: Some("[storage]\nmax_disk_mb = 0\n".into()),
            ..Default::default()
        },
    );
    wait_until("storage reported full", || {
        gateway.stats()["storage_full"] == true
    });

    // A script terminal keeps resending its one press until it is acked.
    let (client, mut connection) = Client::new(
        MqttOptions::new("kiosk", "127.0.0.1", gateway.mqtt_port),
        10,
    );
    client
        .subscribe("pressline/v1/gw/kiosk/ack/json", QoS::AtLeastOnce)
        .unwrap();
    let press = r#"{"seq":0,"button":"very_unhappy"}"#;
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                client
                    .publish(
                        "pressline/v1/term/kiosk/press/json",
                        QoS::AtLeastOnce,
                        false,
                        press,
                    )
                    .unwrap();
            }
            // In the broker: now it is up to the gateway.
            Ok(Event::Incoming(Packet::PubAck(_))) => break,
            _ => {}
        }
    }
    wait_until("the press is refused", || {
        gateway.stat("presses_refused_storage_full") >= 1
    });
    assert_eq!(gateway.stat("presses_stored"), 0);
    assert_eq!(
        gateway.stat("acks_sent"),
        0,
        "a refused press must not be acked"
    );

    // The operator raises the limit and restarts; the terminal's resend is stored and acked.
    drop(client);
    drop(connection);
    gateway.terminate();
    let mut raised = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "depot".into(),
            ..Default::default()
        },
    );
    std::mem::swap(&mut gateway, &mut raised);
    drop(raised);
    let (client, mut connection) = Client::new(
        MqttOptions::new("kiosk", "127.0.0.1", gateway.mqtt_port),
        10,
    );
    client
        .subscribe("pressline/v1/gw/kiosk/ack/json", QoS::AtLeastOnce)
        .unwrap();
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                client
                    .publish(
                        "pressline/v1/term/kiosk/press/json",
                        QoS::AtLeastOnce,
                        false,
                        press,
                    )
                    .unwrap();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let ack: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                assert_eq!(
                    (ack["first_seq"].as_u64(), ack["last_seq"].as_u64()),
                    (Some(0), Some(0))
                );
                break;
            }
            _ => {}
        }
    }
    assert_eq!(gateway.stat("presses_stored"), 1);
}

#[test]
fn terminals_that_lose_power_mid_run_lose_no_confirmed_press() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "plaza".into(),
            ..Default::default()
        },
    );
    // Each terminal loses power about every 2 s, sometimes inside a flash
    // write; it reboots from flash, reconnects and resends.
    let press_log = dir.path().join("presses.txt");
    let report = Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "8",
            "--presses",
            "40",
            "--rate",
            "40",
            "--kill-rate",
            "0.5",
            "--id-prefix",
            "kiosk",
            "--ack-timeout-ms",
            "1000",
            "--press-log",
            press_log.to_str().unwrap(),
        ],
    )
    .expect_all_acked();
    assert!(report["power_cuts"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["presses"], 320, "{report}");
    // Every confirmed press is stored; a press that was being written when
    // power died may also have survived (a real press), so at least 320.
    let stored = gateway.stat("presses_stored");
    assert!((320..=340).contains(&stored), "stored {stored}: {report}");
    // Reboots show up as new boot numbers, counted on from the terminal's
    // first (a power cut is not a new generation).
    let mut boots: std::collections::BTreeMap<String, BTreeSet<u32>> = Default::default();
    for line in std::fs::read_to_string(&press_log).unwrap().lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        boots
            .entry(fields[0].to_string())
            .or_default()
            .insert(fields[1].parse().unwrap());
    }
    assert!(boots.values().any(|b| b.len() > 1), "{boots:?}");
    for (terminal, b) in &boots {
        let (first, last) = (b.first().unwrap(), b.last().unwrap());
        assert!(last - first < 100, "{terminal}: {b:?}");
    }
}

#[test]
fn an_mqtt5_terminal_like_the_pico_w_firmware_gets_durable_acks() {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{Client, Event, MqttOptions};
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "v5site".into(),
            ..Default::default()
        },
    );
    let (client, mut connection) = Client::new(
        MqttOptions::new("pico-1", "127.0.0.1", gateway.mqtt_v5_port),
        10,
    );
    client
        .subscribe("pressline/v1/gw/pico-1/ack", QoS::AtLeastOnce)
        .unwrap();
    let press = pressline_protocol::Press {
        id: pressline_protocol::PressId { boot: 4, seq: 9 },
        button: pressline_protocol::Button::Unhappy,
        age_ms: Some(120),
        mac: None,
    };
    let mut buf = [0u8; 32];
    let payload = press.encode(&mut buf).unwrap().to_vec();
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                client
                    .publish(
                        "pressline/v1/term/pico-1/press",
                        QoS::AtLeastOnce,
                        false,
                        payload.clone(),
                    )
                    .unwrap();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let ack = pressline_protocol::Ack::decode(&p.payload).unwrap();
                assert_eq!(
                    ack,
                    pressline_protocol::Ack {
                        boot: 4,
                        first_seq: 9,
                        last_seq: 9
                    }
                );
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("MQTT 5 connection failed: {e}"),
        }
    }
    assert_eq!(gateway.stat("presses_stored"), 1);
}

#[test]
fn fresh_presses_overtake_a_backlog_while_it_drains() {
    let dir = tempfile::tempdir().unwrap();
    let mut mosquitto = Mosquitto::start(dir.path());
    // Subscribed first: its persistent session queues everything published
    // after the restart, however early the gateway reconnects.
    let consumer = Consumer::start(mosquitto.port, "analytics-live-first");
    mosquitto.stop();
    // A narrow upstream window, so the drain takes a while.
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "arena".into(),
            upstream: Some(mosquitto.url()),
            config_toml: Some("[upstream]\nmax_inflight = 20\n".into()),
            ..Default::default()
        },
    );
    // A backlog builds up while upstream is down.
    Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "20",
            "--presses",
            "1000",
            "--rate",
            "0",
            "--id-prefix",
            "old",
        ],
    )
    .expect_all_acked();
    assert_eq!(gateway.stat("forward_pending"), 20_000);
    mosquitto.restart();
    wait_until("gateway back upstream", || {
        gateway.stats()["upstream_connected"] == true
    });
    assert!(gateway.stat("forward_pending") > 10_000, "still draining");
    // Visitors keep pressing while the backlog drains.
    let live = Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "2",
            "--presses",
            "5",
            "--rate",
            "20",
            "--id-prefix",
            "new",
        ],
    );
    live.expect_all_acked();
    wait_until("the backlog and the live presses upstream", || {
        consumer.ids().len() == 20_010
    });
    let order: Vec<String> = consumer
        .presses
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.terminal.clone())
        .collect();
    let first_live = order.iter().position(|t| t.starts_with("new")).unwrap();
    let last_old = order.iter().rposition(|t| t.starts_with("old")).unwrap();
    assert!(
        first_live < last_old,
        "a fresh press waited behind the whole backlog (position {first_live} of {})",
        order.len()
    );
}

/// `upstream.press_batch`: presses that are ready together go upstream as
/// one `pressline.press_batch.v1` message, as PROTOCOL.md documents it,
/// read here by Mosquitto's own subscriber.
#[test]
fn batched_presses_reach_a_third_party_subscriber_whole_and_once_each() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut mosquitto = Mosquitto::start(dir.path());
    let port = mosquitto.port.to_string();
    let reader = |extra: &[&str]| {
        let mut c = std::process::Command::new("mosquitto_sub");
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-c",
            "-i",
            "batch-reader",
        ])
        .args(["-t", "pressline/v1/+/presses", "-v"])
        .args(extra);
        c
    };
    // A persistent session, so what the gateway sends is queued for it.
    let status = reader(&["-E"]).status().expect("mosquitto_sub runs");
    assert!(status.success(), "mosquitto_sub -E");

    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "quay".into(),
            upstream: Some(mosquitto.url()),
            config_toml: Some("[upstream]\npress_batch = 50\n".into()),
            ..Default::default()
        },
    );
    wait_until("upstream connected", || {
        gateway.stats()["upstream_connected"] == true
    });
    // A backlog, so presses are ready together when upstream returns.
    mosquitto.stop();
    wait_until("gateway notices the outage", || {
        gateway.stats()["upstream_connected"] == false
    });
    let sim = Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "4",
            "--presses",
            "100",
            "--rate",
            "0",
            "--id-prefix",
            "b",
        ],
    );
    sim.expect_all_acked();
    mosquitto.restart();
    wait_until("backlog delivered", || gateway.stat("forward_pending") == 0);
    assert_eq!(gateway.stat("presses_forwarded"), 400);

    let mut sub = reader(&[])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs");
    // Lines through a channel, so a missing press fails the test after a
    // generous wait instead of blocking on the pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let expected = expected_ids("quay", "b", 4, 100, 0);
    let (mut ids, mut messages, mut largest) = (Vec::new(), 0, 0);
    while ids.len() < expected.len() {
        let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(60)) else {
            break;
        };
        let (topic, payload) = line.split_once(' ').expect("topic and payload");
        assert_eq!(topic, "pressline/v1/quay/presses");
        let batch: serde_json::Value = serde_json::from_str(payload).expect("JSON");
        assert_eq!(batch["schema"], "pressline.press_batch.v1");
        assert_eq!(batch["site"], "quay");
        let presses = batch["presses"].as_array().expect("presses array");
        assert!(
            (1..=50).contains(&presses.len()),
            "{} presses",
            presses.len()
        );
        for p in presses {
            // Each element is a whole press document.
            assert_eq!(p["schema"], "pressline.press.v1");
            assert_eq!(p["site"], "quay");
            assert!(p["received_at"].is_string() && p["score"].is_u64(), "{p}");
            ids.push(p["id"].as_str().unwrap().to_string());
        }
        messages += 1;
        largest = largest.max(presses.len());
    }
    let _ = sub.kill();
    let _ = sub.wait();
    // Boot numbers start at random: compared relative to each terminal's
    // first.
    let unique = relative_boots(ids.iter().cloned());
    assert_eq!(unique, expected, "every press, in {messages} messages");
    assert_eq!(ids.len(), unique.len(), "each press once");
    assert_eq!(largest, 50, "a backlog goes in full batches");
}

/// A spare provisioned under a broken terminal's id, or a board erased and
/// reflashed, starts its boot numbers over as a new generation: each run of
/// `terminal-sim` is a fresh flash, so two runs with the same ids have
/// every press of the second stored and forwarded, none acked as a resend
/// of the first. A real resend is still a duplicate.
#[test]
fn terminals_whose_flash_starts_over_have_every_new_press_stored_and_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path());
    let consumer = Consumer::start(mosquitto.port, "analytics-generations");
    let gateway = upstream_gateway(dir.path(), "depot", &mosquitto);
    let run = || {
        Sim::spawn(
            &gateway.broker(),
            &[
                "--terminals",
                "4",
                "--presses",
                "25",
                "--rate",
                "0",
                "--dup-rate",
                "0.3",
                "--id-prefix",
                "swap",
            ],
        )
        .expect_all_acked()
    };
    let first = run();
    let second = run();
    for report in [&first, &second] {
        assert_eq!(report["acked"], 100, "{report}");
    }
    wait_until("every press upstream", || consumer.raw_ids().len() == 200);
    assert_eq!(gateway.stat("presses_stored"), 200, "the second run's too");
    wait_until("forwarded", || gateway.stat("presses_forwarded") == 200);
    // Each terminal: two generations of 25 presses each.
    let mut generations: std::collections::BTreeMap<String, BTreeSet<u32>> = Default::default();
    for press in consumer.presses.lock().unwrap().iter() {
        generations
            .entry(press.terminal.clone())
            .or_default()
            .insert(press.boot);
    }
    assert!(
        generations.values().all(|boots| boots.len() == 2),
        "{generations:?}"
    );
    // The deliberate second copies were recognised as what they are.
    let deliberate = first["deliberate_duplicates"].as_u64().unwrap()
        + second["deliberate_duplicates"].as_u64().unwrap();
    assert!(deliberate > 0);
    assert!(gateway.stat("presses_duplicate") >= deliberate / 2);
}
