//! Terminal identity, end to end: provisioning → registration → accepted
//! presses; a device with a valid login cannot publish as another terminal
//! (closed mode refuses it at the broker);
//! unknown and revoked terminals cannot connect (closed mode).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use pressline_protocol::auth::{mqtt_password, press_mac};
use pressline_protocol::provisioning::ProvisioningRecord;
use pressline_protocol::{Button, Press, PressId};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// Whether the broker lets `client_id` in with these credentials.
fn can_connect(port: u16, client_id: &str, login: Option<(&str, &str)>) -> bool {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    if let Some((user, pass)) = login {
        options.set_credentials(user, pass);
    }
    let (_client, mut connection) = Client::new(options, 10);
    match connection.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => true,
        Ok(Ok(other)) => panic!("unexpected first event {other:?}"),
        Ok(Err(_)) => false,
        Err(_) => panic!("no answer from the broker within 30 s"),
    }
}

fn read_record(path: &Path) -> (String, [u8; 32]) {
    let bytes = std::fs::read(path).unwrap();
    let r = ProvisioningRecord::decode(&bytes).unwrap();
    (r.terminal.to_string(), r.secret)
}

#[test]
fn provisioned_terminals_are_the_only_ones_that_get_presses_in() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "arena".into(),
            closed: true,
            ..Default::default()
        },
    );
    let config = dir.path().join("sites.toml");
    add_site(&config, "arena", &gateway);

    // Provision two terminals into record files; each is registered.
    let records = dir.path().join("records");
    std::fs::create_dir(&records).unwrap();
    let wifi = dir.path().join("wifi-password");
    std::fs::write(&wifi, "staff-only\n").unwrap();
    for (terminal, zone) in [("t-a", "food"), ("t-b", "bar")] {
        let file = records.join(format!("{terminal}.plpr"));
        let (code, out, err) = fleet(
            &config,
            &[
                "provision",
                "--site",
                "arena",
                "--terminal",
                terminal,
                "--zone",
                zone,
                "--wifi-ssid",
                "arena-staff",
                "--wifi-password-file",
                wifi.to_str().unwrap(),
                "--gateway",
                &gateway.broker(),
                "--to-file",
                file.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("registered"), "{out}");
    }
    // Refuses to overwrite another terminal's record.
    let (code, _, err) = fleet(
        &config,
        &[
            "provision",
            "--site",
            "arena",
            "--terminal",
            "t-a",
            "--wifi-ssid",
            "x",
            "--gateway",
            &gateway.broker(),
            "--to-file",
            records.join("t-a.plpr").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("refusing to overwrite"), "{err}");
    // Reading a record never shows its secrets.
    let (code, shown, _) = fleet(
        &config,
        &[
            "provision",
            "--read",
            "--from-file",
            records.join("t-a.plpr").to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        (
            shown["terminal"].as_str(),
            shown["secret"].as_str(),
            shown["wifi_password"].as_str()
        ),
        (Some("t-a"), Some("(redacted)"), Some("(set)"))
    );

    // The simulator runs the provisioned terminals: logins and signed presses accepted.
    let report = Sim::spawn(
        &gateway.broker(),
        &[
            "--provisioning",
            records.to_str().unwrap(),
            "--presses",
            "10",
            "--rate",
            "0",
        ],
    )
    .expect_all_acked();
    assert_eq!(report["terminals"], 2);
    assert_eq!(gateway.stat("presses_stored"), 20);
    wait_until("registration zones reach the scores", || {
        let scores = gateway.get("/api/v1/scores?window=today");
        scores["terminals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["terminal"] == "t-a" && t["zone"] == "food")
    });

    // Unknown devices cannot connect at all in closed mode.
    assert!(!can_connect(gateway.mqtt_port, "intruder", None));
    assert!(!can_connect(
        gateway.mqtt_port,
        "t-a",
        Some(("t-a", "not-the-password"))
    ));

    // A device with t-a's valid login cannot publish as t-b.
    let (_, secret_a) = read_record(&records.join("t-a.plpr"));
    let (_, secret_b) = read_record(&records.join("t-b.plpr"));
    let password_a = mqtt_password(&secret_a);
    assert!(can_connect(
        gateway.mqtt_port,
        "t-a",
        Some(("t-a", password_a.as_str()))
    ));
    let mut options = MqttOptions::new("t-a", "127.0.0.1", gateway.mqtt_port);
    options.set_credentials("t-a", password_a.as_str());
    let (client, mut connection) = Client::new(options, 10);
    let forged = |mac: Option<[u8; 8]>| {
        let p = Press {
            id: PressId { boot: 77, seq: 0 },
            button: Button::VeryUnhappy,
            age_ms: None,
            mac,
        };
        let mut buf = [0u8; 32];
        p.encode(&mut buf).unwrap().to_vec()
    };
    let id = PressId { boot: 77, seq: 0 };
    let signed_by_a = forged(Some(press_mac(&secret_a, "t-b", id, Button::VeryUnhappy)));
    let unsigned = forged(None);
    let fake_health = {
        let hb = pressline_protocol::Heartbeat {
            boot: 1,
            uptime_ms: 1,
            firmware: pressline_protocol::FirmwareVersion {
                major: 9,
                minor: 9,
                patch: 9,
            },
            battery_mv: Some(1),
            rssi_dbm: Some(-99),
            queue_depth: 0,
            queue_capacity: 1,
            dropped_presses: 0,
            reset_reason: 1,
            unix_time_ms: None,
        };
        let mut buf = [0u8; 96];
        hb.encode_signed(&secret_a, "t-a", &mut buf)
            .unwrap()
            .to_vec()
    };
    let mut sent = 0;
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client
                    .publish(
                        "pressline/v1/term/t-b/press",
                        QoS::AtLeastOnce,
                        false,
                        signed_by_a.clone(),
                    )
                    .unwrap();
                client
                    .publish(
                        "pressline/v1/term/t-b/press",
                        QoS::AtLeastOnce,
                        false,
                        unsigned.clone(),
                    )
                    .unwrap();
                client
                    .publish(
                        "pressline/v1/term/t-b/heartbeat",
                        QoS::AtLeastOnce,
                        false,
                        fake_health.clone(),
                    )
                    .unwrap();
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                sent += 1;
                if sent == 3 {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("rogue connection failed: {e}"),
        }
    }
    // Closed mode refuses them at the broker: t-a publishes only on its own
    // topics. (In open mode the MAC check refuses them at ingest: the
    // identity unit tests.)
    wait_until("forgeries refused", || {
        gateway.stat("publishes_refused") == 3
    });
    assert_eq!(gateway.stat("payloads_rejected"), 0, "none reached ingest");
    assert_eq!(
        gateway.stat("presses_stored"),
        20,
        "nothing forged is stored"
    );
    // A genuinely signed press from t-b's own secret would be accepted (sanity of the test).
    assert_ne!(
        press_mac(&secret_b, "t-b", id, Button::VeryUnhappy),
        press_mac(&secret_a, "t-b", id, Button::VeryUnhappy)
    );

    // Revoked terminals cannot log in any more.
    let (code, out, err) = fleet(&config, &["terminals", "revoke", "t-a", "--site", "arena"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!can_connect(
        gateway.mqtt_port,
        "t-a",
        Some(("t-a", password_a.as_str()))
    ));
    let password_b = mqtt_password(&secret_b);
    assert!(
        can_connect(gateway.mqtt_port, "t-b", Some(("t-b", password_b.as_str()))),
        "others are unaffected"
    );
    let (code, _, err) = fleet(
        &config,
        &["terminals", "revoke", "nobody", "--site", "arena"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("not registered"), "{err}");
}

#[test]
fn a_batch_of_terminals_from_a_csv_is_provisioned_and_registered() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "stadium".into(),
            closed: true,
            ..Default::default()
        },
    );
    let config = dir.path().join("sites.toml");
    add_site(&config, "stadium", &gateway);
    let csv = dir.path().join("terminals.csv");
    std::fs::write(
        &csv,
        "terminal,zone\nnorth-01,north-food\nnorth-02,north-food\ngate-1,\n",
    )
    .unwrap();
    let records = dir.path().join("records");
    let (code, out, err) = fleet(
        &config,
        &[
            "provision",
            "--batch",
            csv.to_str().unwrap(),
            "--to-dir",
            records.to_str().unwrap(),
            "--site",
            "stadium",
            "--wifi-ssid",
            "stadium-staff",
            "--gateway",
            &gateway.broker(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("batch: 3 provisioned, 0 skipped, 0 failed of 3"),
        "{out}"
    );
    let report = Sim::spawn(
        &gateway.broker(),
        &[
            "--provisioning",
            records.to_str().unwrap(),
            "--presses",
            "5",
            "--rate",
            "0",
        ],
    )
    .expect_all_acked();
    assert_eq!(report["terminals"], 3);
    assert_eq!(gateway.stat("presses_stored"), 15);

    // A bad batch file is refused before anything is provisioned.
    std::fs::write(&csv, "terminal,zone\nok-1,z\nnot ok,z\n").unwrap();
    let (code, _, err) = fleet(
        &config,
        &[
            "provision",
            "--batch",
            csv.to_str().unwrap(),
            "--to-dir",
            dir.path().join("more").to_str().unwrap(),
            "--site",
            "stadium",
            "--wifi-ssid",
            "x",
            "--gateway",
            &gateway.broker(),
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("line 3"), "{err}");
    assert!(!dir.path().join("more/ok-1.plpr").exists());
}

#[test]
fn probe_commands_without_a_probe_say_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sites.toml");
    let (code, out, _) = fleet(&config, &["probe", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("no debug probe found"), "{out}");
    let (code, out, _) = fleet(&config, &["probe", "list", "--json"]);
    assert_eq!((code, out.trim()), (0, "[]"));
    let elf = dir.path().join("firmware.elf");
    std::fs::write(&elf, b"\x7fELF").unwrap();
    let (code, _, err) = fleet(&config, &["flash", elf.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no debug probe found") && err.contains("plug one in"),
        "{err}"
    );
    let (code, _, err) = fleet(
        &config,
        &["flash", "--chip", "RP2041", elf.to_str().unwrap()],
    );
    assert_ne!(code, 0);
    assert!(err.contains("--chip RP2040"), "{err}");
    // Logs need the ELF's defmt table, checked before the probe: a host
    // binary has none.
    let (code, _, err) = fleet(
        &config,
        &["logs", "--elf", bin("gateway").to_str().unwrap()],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no defmt log table"), "{err}");
    let (code, _, err) = fleet(&config, &["provision", "--read"]);
    assert_ne!(code, 0);
    assert!(err.contains("no debug probe found"), "{err}");
}

/// Registers `terminal` with `secret` through the API, as `fleet provision`
/// does.
fn register(gateway: &Gateway, terminal: &str, secret: &[u8; 32]) {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    ureq::post(&format!("{}/api/v1/terminals", gateway.url()))
        .set("Authorization", &format!("Bearer {}", gateway.token()))
        .send_json(serde_json::json!({"id": terminal, "secret": hex}))
        .unwrap_or_else(|e| panic!("registering {terminal}: {e}"));
}

/// A connection's events until it is closed; panics if it stays open.
fn wait_closed(connection: &mut rumqttc::Connection, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match connection.recv_timeout(Duration::from_secs(1)) {
            Ok(Err(_)) => return,
            Ok(Ok(Event::Incoming(Packet::Disconnect))) => return,
            _ => {}
        }
    }
    panic!("{what}: the connection is still open after 30 s");
}

/// Open mode lets a client take an unregistered id without a login.
/// Registering the id ends that session (its will is not published: the
/// id is no longer its to speak for), and revoking the terminal ends the
/// terminal's own session.
#[test]
fn registering_or_revoking_a_terminal_ends_the_session_under_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "arena".into(),
            ..Default::default()
        },
    );
    let status = "pressline/v1/term/t-9/status";
    let mut watch = MqttOptions::new("watcher", "127.0.0.1", gateway.mqtt_port);
    watch.set_keep_alive(Duration::from_secs(5));
    let (watcher, mut watching) = Client::new(watch, 10);
    watcher.subscribe(status, QoS::AtLeastOnce).unwrap();
    watcher.subscribe("marker", QoS::AtLeastOnce).unwrap();
    let mut heard = Vec::new();
    let mut listen = |until: &str, heard: &mut Vec<String>| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
                watching.recv_timeout(Duration::from_secs(1))
            {
                heard.push(format!(
                    "{} {}",
                    p.topic,
                    String::from_utf8_lossy(&p.payload)
                ));
                if p.topic == until {
                    return;
                }
            }
        }
        panic!("nothing on {until} within 30 s: {heard:?}");
    };
    watcher
        .publish("marker", QoS::AtLeastOnce, false, "ready")
        .unwrap();
    listen("marker", &mut heard);

    // A client squats on the unregistered id, with a will on its status.
    let mut options = MqttOptions::new("t-9", "127.0.0.1", gateway.mqtt_port);
    options.set_last_will(rumqttc::LastWill::new(
        status,
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    let (_squatter, mut squatting) = Client::new(options, 10);
    assert!(matches!(
        squatting.recv_timeout(Duration::from_secs(30)),
        Ok(Ok(Event::Incoming(Packet::ConnAck(_))))
    ));
    let secret = [9u8; 32];
    // The gateway's own client ids are not terminals'.
    let reserved = ureq::post(&format!("{}/api/v1/terminals", gateway.url()))
        .set("Authorization", &format!("Bearer {}", gateway.token()))
        .send_json(serde_json::json!({"id": "pressline-gateway", "secret": "09".repeat(32)}));
    assert!(
        matches!(reserved, Err(ureq::Error::Status(400, _))),
        "{reserved:?}"
    );
    register(&gateway, "t-9", &secret);
    wait_closed(&mut squatting, "the squatter after the registration");
    watcher
        .publish("marker", QoS::AtLeastOnce, false, "after")
        .unwrap();
    heard.clear();
    listen("marker", &mut heard);
    assert_eq!(
        heard,
        ["marker after"],
        "the squatter's will is not published"
    );
    assert!(
        !can_connect(gateway.mqtt_port, "t-9", None),
        "without a login: refused"
    );

    // The terminal itself, logged in; revoked, its session ends.
    let password = mqtt_password(&secret);
    let mut options = MqttOptions::new("t-9", "127.0.0.1", gateway.mqtt_port);
    options.set_credentials("t-9", password.as_str());
    let (_terminal, mut session) = Client::new(options, 10);
    assert!(matches!(
        session.recv_timeout(Duration::from_secs(30)),
        Ok(Ok(Event::Incoming(Packet::ConnAck(_))))
    ));
    ureq::post(&format!("{}/api/v1/terminals/t-9/revoke", gateway.url()))
        .set("Authorization", &format!("Bearer {}", gateway.token()))
        .call()
        .unwrap();
    wait_closed(&mut session, "the revoked terminal");
    assert!(!can_connect(
        gateway.mqtt_port,
        "t-9",
        Some(("t-9", password.as_str()))
    ));
}

/// The screen on the wall holds a viewer token: it reads everything the
/// dashboard shows and changes nothing. An operator acknowledges and runs
/// rollouts; only the admin token registers, revokes and uploads firmware.
#[test]
fn each_api_token_does_what_its_scope_allows_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "arena".into(),
            ..Default::default()
        },
    );
    let admin = gateway.token_in("api-token");
    let operator = gateway.token_in("operator-token");
    let viewer = gateway.token_in("viewer-token");
    let secret: String = "5a".repeat(32);
    let register = format!(r#"{{"id": "door-9", "secret": "{secret}"}}"#);
    let changes = [
        ("POST", "/api/v1/terminals", register.as_str()),
        ("POST", "/api/v1/terminals/door-9/revoke", ""),
        ("POST", "/api/v1/alerts/1/ack", r#"{"by": "wall"}"#),
        ("POST", "/api/v1/ota/releases", "not a release"),
        ("POST", "/api/v1/ota/rollouts", "{}"),
        ("POST", "/api/v1/ota/rollouts/1/abort", ""),
    ];
    for token in [&viewer, &operator, &admin] {
        for path in [
            "/api/v1/stats",
            "/api/v1/dashboard",
            "/api/v1/alerts",
            "/metrics",
        ] {
            assert_eq!(gateway.request("GET", path, token, "").0, 200, "{path}");
        }
    }
    for (method, path, body) in changes {
        let (code, answer) = gateway.request(method, path, &viewer, body);
        assert_eq!(code, 403, "viewer {method} {path}: {answer}");
        assert!(answer.contains("viewer token"), "{answer}");
    }
    for (method, path, body) in &changes[..] {
        let operator_may = path.contains("/ack") || path.contains("/rollouts");
        let (code, answer) = gateway.request(method, path, &operator, body);
        assert_eq!(
            code == 403,
            !operator_may,
            "operator {method} {path}: {code} {answer}"
        );
    }
    let (code, answer) = gateway.request("POST", "/api/v1/terminals", &admin, &register);
    assert_eq!(
        code, 201,
        "the admin registers it, new: nobody else did: {answer}"
    );
    let (code, _) = gateway.request("GET", "/api/v1/stats", "not-a-token-at-all", "");
    assert_eq!(code, 401);
}
