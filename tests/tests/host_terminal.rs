//! The terminal firmware's own application code (`pressline-terminal-app`:
//! embassy-net TCP, the rust-mqtt MQTT 5 session, durable acks,
//! heartbeats, login and press signing, the OTA receiver) running as
//! `terminal-host` on a TAP device, against a real gateway. Every test
//! enters a network namespace of its own (see `common::host`).

mod common;

use std::collections::BTreeSet;

use common::host::*;
use common::*;
use serde_json::Value;

/// A gateway on the lab network (the MQTT 5 listener the firmware uses).
fn lab_gateway(dir: &std::path::Path, site: &str, options: GatewayOptions) -> Gateway {
    Gateway::start(
        dir,
        GatewayOptions {
            site: site.into(),
            mqtt_bind: Some(GATEWAY_IP),
            ..options
        },
    )
}

fn host(
    lab: &mut NetLab,
    dir: &std::path::Path,
    gateway: &Gateway,
    id: &str,
    exit_when_acked: bool,
) -> HostOptions {
    let (tap, address) = lab.tap();
    HostOptions {
        tap,
        address,
        broker: gateway.broker_v5(),
        flash: flash_file(dir, id),
        identity: Identity::Terminal(id.into()),
        ota_public_key: None,
        exit_when_acked,
        // Short, so a rollout here does not wait long for each terminal to
        // keep its new image.
        trial_window_secs: 2,
        battery_mv: None,
        extra_args: Vec::new(),
    }
}

/// A gateway that hangs (its kernel still acknowledges TCP, so the socket
/// looks alive) is found out by the keep-alive: the PINGREQ goes
/// unanswered, the terminal ends the session and connects again once the
/// gateway is back; a press made meanwhile waits in flash and arrives.
#[test]
fn a_hung_gateway_is_found_out_by_the_keep_alive_and_left_for_a_new_session() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gateway = lab_gateway(dir.path(), "lab", GatewayOptions::default());
    let options = host(&mut lab, dir.path(), &gateway, "host-1", true);
    let mut terminal = HostTerminal::start(&options);
    terminal.press(3);
    wait_until("the first press stored", || {
        gateway.stat("presses_stored") == 1
    });
    gateway.freeze();
    terminal.press(4);
    wait_until("the hung gateway found out", || {
        terminal.log().contains("did not answer a PINGREQ")
    });
    gateway.thaw();
    terminal.close_stdin();
    assert!(terminal.wait_exit().success(), "{}", terminal.log());
    assert_eq!(gateway.stat("presses_stored"), 2);
}

/// The battery the firmware reads goes out in its heartbeats: below the
/// gateway's threshold the terminal's low-battery alert is raised, and a
/// reading that is not a voltage is left out, not sent as one.
#[test]
fn a_battery_running_down_raises_the_low_battery_alert_from_the_firmwares_heartbeat() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gateway = lab_gateway(dir.path(), "lab", GatewayOptions::default());
    let battery = dir.path().join("battery");
    std::fs::write(&battery, "not a number\n").unwrap();
    let mut options = host(&mut lab, dir.path(), &gateway, "host-1", false);
    options.battery_mv = Some(battery.clone());
    let terminal = HostTerminal::start(&options);
    wait_until("a heartbeat", || {
        gateway
            .get("/api/v1/terminals")
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "host-1" && !t["last_heartbeat"].is_null())
    });
    let health = gateway.get("/api/v1/terminals/host-1");
    assert!(health["battery_mv"].is_null(), "{health}");
    wait_until("the bad reading logged", || {
        terminal.log().contains("not a voltage")
    });
    // Run down below the threshold (3500 mV by default); the next boot's
    // first heartbeat reads it.
    std::fs::write(&battery, "3300\n").unwrap();
    drop(terminal);
    let _again = HostTerminal::start(&options);
    wait_until("the low-battery alert of host-1", || {
        gateway
            .get("/api/v1/alerts")
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "low_battery" && a["terminal"] == "host-1")
    });
    assert_eq!(gateway.get("/api/v1/terminals/host-1")["battery_mv"], 3300);
}

/// A terminal on batteries turns its radio off between uploads: presses
/// wait in flash and reach the gateway within the upload delay (60 s), a
/// run of three unhappy presses goes out at once, the counters in its
/// heartbeat show the radio off most of the time with an estimated battery
/// life, and the low battery it reads raises the alert.
#[test]
fn a_terminal_on_batteries_uploads_within_its_delay_with_the_radio_mostly_off() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gateway = lab_gateway(dir.path(), "lab", GatewayOptions::default());
    let battery = dir.path().join("battery");
    std::fs::write(&battery, "3300\n").unwrap();
    let mut options = host(&mut lab, dir.path(), &gateway, "host-1", false);
    options.battery_mv = Some(battery);
    options.extra_args = ["--power", "battery", "--upload-delay-secs", "60"]
        .map(String::from)
        .to_vec();
    let mut terminal = HostTerminal::start(&options);
    // The boot session (a heartbeat), then the radio goes off.
    terminal.wait_for_line("the radio off after the boot session", "radio off");
    wait_until("the low-battery alert of host-1", || {
        gateway
            .get("/api/v1/alerts")
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "low_battery" && a["terminal"] == "host-1")
    });
    let pressed = std::time::Instant::now();
    terminal.press(4);
    terminal.press(3);
    wait_until("two presses in flash", || terminal.queued().len() == 2);
    assert_eq!(gateway.stat("presses_stored"), 0, "the radio is off");
    wait_until("the two presses at the gateway", || {
        gateway.stat("presses_stored") == 2
    });
    let waited = pressed.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(90),
        "stored {waited:?} after the presses (upload delay 60 s)"
    );
    wait_until("the radio off again", || {
        terminal.lines_starting("radio off").len() == 2
    });
    // Three unhappy presses in a row: out at once, not after 60 s.
    let unhappy = std::time::Instant::now();
    for score in [1, 2, 1] {
        terminal.press(score);
    }
    wait_until("the unhappy run at the gateway", || {
        gateway.stat("presses_stored") == 5
    });
    assert!(
        unhappy.elapsed() < std::time::Duration::from_secs(45),
        "an unhappy run waited {:?}",
        unhappy.elapsed()
    );
    // One more press once the radio is off again: its upload's heartbeat
    // comes after a minute up, long enough for an estimate.
    wait_until("the radio off after the unhappy run", || {
        terminal.lines_starting("radio off").len() == 3
    });
    terminal.press(3);
    wait_until("the last press at the gateway", || {
        gateway.stat("presses_stored") == 6
    });
    let health = gateway.get("/api/v1/terminals/host-1");
    let energy = &health["energy"];
    assert_eq!(energy["mode"], "battery", "{health}");
    let uptime_ms = health["uptime_secs"].as_f64().unwrap() * 1000.0;
    let radio_share = energy["radio_on_ms"].as_f64().unwrap() / uptime_ms;
    assert!(
        radio_share < 0.25,
        "radio on {radio_share:.2} of the time: {health}"
    );
    assert_eq!(energy["joins"], 4, "{health}");
    let lives = energy["battery_life_days"].as_array().unwrap();
    assert_eq!(lives.len(), 2, "{health}");
    assert!(health["open_alerts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k != "offline"));
}

/// A mains terminal switched to batteries from `fleet`: the gateway sends
/// the settings at its next heartbeat, the firmware turns its radio off
/// once everything is acked, and its next upload reports the new mode. A
/// viewer token may not change them, and bad settings are refused.
#[test]
fn fleet_switches_a_terminal_to_batteries_through_the_gateway() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gateway = lab_gateway(dir.path(), "lab", GatewayOptions::default());
    let options = host(&mut lab, dir.path(), &gateway, "host-1", false);
    let mut terminal = HostTerminal::start(&options);
    wait_until("a heartbeat on mains", || {
        gateway
            .get("/api/v1/terminals")
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "host-1" && t["energy"]["mode"] == "mains")
    });
    let path = "/api/v1/terminals/host-1/power";
    let body = r#"{"mode": "battery"}"#;
    let (status, _) = gateway.request("POST", path, &gateway.token_in("viewer-token"), body);
    assert_eq!(status, 403, "a viewer token changes nothing");
    let (status, answer) = gateway.request(
        "POST",
        path,
        &gateway.token_in("api-token"),
        r#"{"mode": "battery", "upload_delay_secs": 0}"#,
    );
    assert_eq!(status, 400, "{answer}");
    let config = dir.path().join("sites.toml");
    add_site(&config, "lab", &gateway);
    let (code, out, err) = fleet(
        &config,
        &[
            "terminals",
            "power",
            "host-1",
            "--site",
            "lab",
            "--mode",
            "battery",
            "--upload-delay-secs",
            "20",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("battery (upload delay 20 s"), "{out}");
    terminal.wait_for_line("the radio off on batteries", "radio off");
    assert!(terminal.log().contains("power mode battery"));
    terminal.press(4);
    wait_until("the press at the gateway", || {
        gateway.stat("presses_stored") == 1
    });
    wait_until("the new mode in its heartbeat", || {
        let energy = &gateway.get("/api/v1/terminals/host-1")["energy"];
        energy["mode"] == "battery" && energy["upload_delay_secs"] == 20
    });
    assert_eq!(
        gateway.get(path)["wanted"]["mode"],
        "battery",
        "the wish is kept"
    );
}

/// Press ids as the gateway forwards them: `{site}:{terminal}:{boot}:{seq}`.
fn ids(site: &str, terminal: &str, queued: &[(u32, u32)]) -> BTreeSet<String> {
    queued
        .iter()
        .map(|(boot, seq)| format!("{site}:{terminal}:{boot}:{seq}"))
        .collect()
}

#[test]
fn presses_from_the_firmware_code_are_stored_once_and_released_from_flash() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gateway = lab_gateway(dir.path(), "lab", GatewayOptions::default());
    let options = host(&mut lab, dir.path(), &gateway, "host-1", true);
    let mut terminal = HostTerminal::start(&options);
    for i in 0..30 {
        terminal.press(1 + i % 4);
    }
    terminal.close_stdin();
    assert!(terminal.wait_exit().success(), "{}", terminal.log());
    assert_eq!(terminal.queued().len(), 30);
    assert_eq!(gateway.stat("presses_stored"), 30);
    let health = gateway.get("/api/v1/terminals/host-1");
    assert_eq!(health["firmware"], env!("CARGO_PKG_VERSION"), "{health}");
    // Released from the flash file: the next boot restores nothing.
    let mut again = HostTerminal::start(&options);
    again.close_stdin();
    assert!(again.wait_exit().success(), "{}", again.log());
    assert_eq!(
        boot_of(&again),
        boot_of(&terminal) + 1,
        "the next boot of this flash"
    );
    let booted = again.lines_starting("booted ");
    assert!(booted[0].contains("restored 0"), "{booted:?}");
}

/// A board erased and reflashed (its flash file deleted here) starts
/// over under the same id: a new generation of boot numbers, so every
/// press of it is stored and forwarded, none taken for a resend.
#[test]
fn a_terminal_whose_flash_starts_over_has_every_new_press_stored_and_forwarded() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path());
    let consumer = Consumer::start(mosquitto.port, "analytics-host-erased");
    let gateway = lab_gateway(
        dir.path(),
        "lab",
        GatewayOptions {
            upstream: Some(mosquitto.url()),
            ..Default::default()
        },
    );
    let options = host(&mut lab, dir.path(), &gateway, "host-1", true);
    let mut runs = Vec::new();
    for run in 0..2 {
        if run == 1 {
            std::fs::remove_file(&options.flash).unwrap();
        }
        let mut terminal = HostTerminal::start(&options);
        for i in 0..10u8 {
            terminal.press(1 + i % 4);
        }
        terminal.close_stdin();
        assert!(terminal.wait_exit().success(), "{}", terminal.log());
        runs.push((boot_of(&terminal), terminal.queued()));
    }
    assert_ne!(runs[0].0, runs[1].0, "a new generation, not boot 0 again");
    let expected: BTreeSet<String> = runs
        .iter()
        .flat_map(|(_, queued)| ids("lab", "host-1", queued))
        .collect();
    assert_eq!(expected.len(), 20);
    wait_until("every press upstream", || consumer.raw_ids() == expected);
    assert_eq!(
        gateway.stat("presses_stored"),
        20,
        "none taken for a resend"
    );
}

/// Presses made while the terminal is still trying a gateway that does not
/// answer are in flash at once, not when the attempt gives up (10 s): the
/// power cut that follows loses none of them.
#[test]
fn presses_made_while_the_gateway_does_not_answer_are_in_flash_at_once() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gateway = lab_gateway(dir.path(), "lab", GatewayOptions::default());
    let mut options = host(&mut lab, dir.path(), &gateway, "host-1", true);
    let reachable = options.broker.clone();
    // An address on the lab network where nothing answers.
    options.broker = "10.77.0.250:1883".into();
    let mut terminal = HostTerminal::start(&options);
    terminal.wait_for_line("the terminal booted", "booted ");
    // Twenty presses over 4 s, each in flash before the next is made,
    // all while the first connection attempt (10 s) is still waiting.
    for i in 0..20 {
        terminal.press(1 + i % 4);
        wait_until("the press in flash", || {
            terminal.queued().len() == i as usize + 1
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let log = terminal.log();
    assert!(
        !log.contains("gateway session ended"),
        "the presses waited for the connection attempt to give up:\n{log}"
    );
    terminal.kill9();
    // Power back, the gateway reachable: the twenty are restored from
    // flash and delivered (it exits once all are acked).
    options.broker = reachable;
    let mut again = HostTerminal::start(&options);
    again.close_stdin();
    assert!(again.wait_exit().success(), "{}", again.log());
    let booted = again.lines_starting("booted ");
    assert!(booted[0].contains("restored 20"), "{booted:?}");
    assert_eq!(gateway.stat("presses_stored"), 20);
}

#[test]
fn a_gateway_killed_mid_run_loses_nothing_and_stores_nothing_twice() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path());
    let consumer = Consumer::start(mosquitto.port, "analytics-host-gw-crash");
    let mut gateway = lab_gateway(
        dir.path(),
        "lab",
        GatewayOptions {
            upstream: Some(mosquitto.url()),
            ..Default::default()
        },
    );
    let options = host(&mut lab, dir.path(), &gateway, "host-1", true);
    let mut terminal = HostTerminal::start(&options);
    for round in 0..4u32 {
        for i in 0..25u32 {
            terminal.press(1 + ((round + i) % 4) as u8);
        }
        let target = 25 * (round as usize + 1);
        wait_until("presses queued in flash", || {
            terminal.queued().len() >= target
        });
        if round < 3 {
            // The gateway dies while presses are in flight, and comes back.
            gateway.restart_after_crash();
        }
    }
    terminal.close_stdin();
    assert!(terminal.wait_exit().success(), "{}", terminal.log());
    let queued = terminal.queued();
    assert_eq!(queued.len(), 100);
    let expected = ids("lab", "host-1", &queued);
    assert_eq!(expected.len(), 100, "no (boot, seq) used twice");
    wait_until("every press upstream", || consumer.raw_ids() == expected);
    assert_eq!(gateway.stat("presses_stored"), 100, "stored once each");
}

#[test]
fn a_terminal_killed_at_random_moments_loses_nothing_and_reuses_no_id() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path());
    let consumer = Consumer::start(mosquitto.port, "analytics-host-power");
    let gateway = lab_gateway(
        dir.path(),
        "lab",
        GatewayOptions {
            upstream: Some(mosquitto.url()),
            ..Default::default()
        },
    );
    let options = host(&mut lab, dir.path(), &gateway, "host-1", false);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut queued = Vec::new();
    let mut boots = Vec::new();
    let cuts = 8;
    for _ in 0..cuts {
        let mut terminal = HostTerminal::start(&options);
        terminal.wait_for_line("the terminal booted", "booted ");
        boots.push(boot_of(&terminal));
        // Some presses, then the plug is pulled after a random number of
        // them is in flash: mid-write, mid-publish or mid-ack.
        let presses = 5 + next(20) as usize;
        for i in 0..presses {
            terminal.press(1 + (i % 4) as u8);
        }
        let before_cut = next(presses as u64) as usize;
        wait_until("some presses queued", || {
            terminal.queued().len() >= before_cut
        });
        terminal.kill9();
        queued.extend(terminal.queued());
    }
    // The last boot sends what is left in flash.
    let mut last = HostTerminal::start(&HostOptions {
        exit_when_acked: true,
        ..options.clone()
    });
    last.close_stdin();
    assert!(last.wait_exit().success(), "{}", last.log());
    boots.push(boot_of(&last));
    wait_until("nothing left to forward", || {
        gateway.stat("forward_pending") == 0
    });
    let upstream = consumer.raw_ids();
    // Every press the terminal said was in flash arrived. (A cut between
    // the flash write and that line leaves a press in flash the test did
    // not hear about: it arrives too.)
    let reported = ids("lab", "host-1", &queued);
    assert!(
        upstream.is_superset(&reported),
        "lost: {:?}",
        reported.difference(&upstream).collect::<Vec<_>>()
    );
    // No boot number came twice, and each boot's presses are one gap-free
    // run from 0: a press lost from flash would leave a gap, and an id used
    // twice would have been taken for a resend and its press dropped.
    let distinct: BTreeSet<u32> = boots.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        boots.len(),
        "a boot number came twice: {boots:?}"
    );
    let mut per_boot: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for id in &upstream {
        let mut parts = id.rsplit(':');
        let seq: u32 = parts.next().unwrap().parse().unwrap();
        let boot: u32 = parts.next().unwrap().parse().unwrap();
        per_boot.entry(boot).or_default().push(seq);
    }
    for (boot, mut seqs) in per_boot {
        seqs.sort_unstable();
        assert!(
            seqs.iter().copied().eq(0..seqs.len() as u32),
            "boot {boot}: {seqs:?}"
        );
    }
    assert_eq!(gateway.stat("presses_stored"), upstream.len() as u64);
    println!(
        "host power cuts: {cuts} cuts, {} presses stored across {} boots ({} reported queued before the cut), none lost, none twice",
        upstream.len(),
        distinct.len(),
        queued.len(),
    );
}

/// The boot number a terminal's `booted ... boot N ...` line gives.
fn boot_of(terminal: &HostTerminal) -> u32 {
    let line = terminal.lines_starting("booted ").remove(0);
    let mut words = line.split(' ');
    words.find(|w| *w == "boot");
    words.next().unwrap().parse().unwrap()
}

#[test]
fn a_hung_task_ends_in_a_watchdog_reset_with_nothing_lost() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = lab_gateway(dir.path(), "lab", GatewayOptions::default());
    let options = host(&mut lab, dir.path(), &gateway, "host-1", true);
    // The gateway is away: presses stay in flash, unacked.
    let gateway_options = GatewayOptions {
        site: "lab".into(),
        mqtt_bind: Some(GATEWAY_IP),
        ..Default::default()
    };
    gateway.terminate();
    let mut terminal = HostTerminal::start(&options);
    terminal.press(1);
    terminal.press(4);
    wait_until("two presses in flash", || terminal.queued().len() == 2);
    terminal.hang();
    // The watchdog resets it: the next boot restores both presses.
    wait_until("a watchdog reset", || {
        terminal
            .lines_starting("booted ")
            .iter()
            .any(|l| l.contains("restored 2 reset Watchdog"))
    });
    gateway.restart_with(gateway_options);
    terminal.close_stdin();
    assert!(terminal.wait_exit().success(), "{}", terminal.log());
    assert_eq!(gateway.stat("presses_stored"), 2);
    let health = gateway.get("/api/v1/terminals/host-1");
    assert_eq!(health["reset_reason"], "watchdog", "{health}");
}

#[test]
fn a_provisioned_terminal_logs_in_and_signs_and_a_wrong_secret_is_refused() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gateway = lab_gateway(
        dir.path(),
        "lab",
        GatewayOptions {
            closed: true,
            ..Default::default()
        },
    );
    let config = dir.path().join("sites.toml");
    add_site(&config, "lab", &gateway);
    let record = dir.path().join("host-7.plpr");
    let wifi = dir.path().join("wifi");
    std::fs::write(&wifi, "lab\n").unwrap();
    let (code, out, err) = fleet(
        &config,
        &[
            "provision",
            "--site",
            "lab",
            "--terminal",
            "host-7",
            "--wifi-ssid",
            "lab",
            "--wifi-password-file",
            wifi.to_str().unwrap(),
            "--gateway",
            &gateway.broker_v5(),
            "--to-file",
            record.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let mut options = host(&mut lab, dir.path(), &gateway, "host-7", true);
    options.identity = Identity::Provisioning(record.clone());
    let mut terminal = HostTerminal::start(&options);
    for b in [1, 2, 3, 4, 4] {
        terminal.press(b);
    }
    terminal.close_stdin();
    assert!(terminal.wait_exit().success(), "{}", terminal.log());
    assert_eq!(gateway.stat("presses_stored"), 5);

    // The same terminal with a secret that is not its own: the login is
    // refused, and nothing it presses is stored.
    let bytes = std::fs::read(&record).unwrap();
    let mut forged = pressline_protocol::provisioning::ProvisioningRecord::decode(&bytes).unwrap();
    forged.secret[0] ^= 0x5A;
    let mut buf = [0u8; pressline_protocol::provisioning::MAX_RECORD_LEN];
    let forged_file = dir.path().join("forged.plpr");
    std::fs::write(&forged_file, forged.encode(&mut buf).unwrap()).unwrap();
    let mut forged_options = host(&mut lab, dir.path(), &gateway, "host-7-forged", false);
    forged_options.identity = Identity::Provisioning(forged_file);
    let mut impostor = HostTerminal::start(&forged_options);
    for b in [1, 1, 1] {
        impostor.press(b);
    }
    wait_until("the impostor's presses in its flash", || {
        impostor.queued().len() == 3
    });
    wait_until("the impostor refused twice", || {
        impostor.log().matches("MQTT connect refused").count() >= 2
    });
    impostor.kill9();
    assert_eq!(
        gateway.stat("presses_stored"),
        5,
        "nothing of the impostor stored"
    );
}

/// The rollout's view of one terminal.
fn rollout_terminal(status: &Value, id: &str) -> Value {
    status["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// A gateway on the lab network trusting two release keys (`keys` and
/// `stranger`, made with `fleet keys generate` in `dir`), and a fleet
/// profile for it.
fn ota_lab(dir: &std::path::Path) -> (std::path::PathBuf, Gateway) {
    let p = |name: &str| dir.join(name);
    let config = p("sites.toml");
    for keys in ["keys", "stranger"] {
        let (code, out, err) = fleet(
            &config,
            &["keys", "generate", "--out", p(keys).to_str().unwrap()],
        );
        assert_eq!(code, 0, "{out}{err}");
    }
    let gateway = lab_gateway(
        dir,
        "lab",
        GatewayOptions {
            config_toml: Some(format!(
                "[ota]\ntrusted_keys = [\"{}\", \"{}\"]\n",
                p("keys/signing.pub").display(),
                p("stranger/signing.pub").display()
            )),
            ..Default::default()
        },
    );
    add_site(&config, "lab", &gateway);
    (config, gateway)
}

/// Packs a host image of `version` signed with `dir/{key}` and uploads it.
fn release(config: &std::path::Path, dir: &std::path::Path, version: &str, key: &str) {
    let p = |name: &str| dir.join(name);
    // A host image: its first line says what it is (48 KiB in all).
    let mut image = format!("pressline-terminal-host {version}\n").into_bytes();
    image.extend((0..48 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let image_path = p(&format!("host-{version}.bin"));
    std::fs::write(&image_path, image).unwrap();
    let artifact = p(&format!("host-{version}.pota"));
    let key = p(&format!("{key}/signing.key"));
    let pack = [
        "ota",
        "pack",
        "--version",
        version,
        "--board",
        "host",
        "--key",
        key.to_str().unwrap(),
        image_path.to_str().unwrap(),
        "-o",
        artifact.to_str().unwrap(),
    ];
    let (code, out, err) = fleet(config, &pack);
    assert_eq!(code, 0, "{out}{err}");
    let upload = ["ota", "upload", artifact.to_str().unwrap(), "--site", "lab"];
    let (code, out, err) = fleet(config, &upload);
    assert_eq!(code, 0, "{out}{err}");
}

/// Starts a rollout of `version` to every terminal; its id.
fn start_rollout(config: &std::path::Path, version: &str) -> String {
    let args = [
        "ota",
        "rollout",
        "start",
        "--site",
        "lab",
        "--version",
        version,
        "--all",
        "--json",
    ];
    let (code, out, err) = fleet(config, &args);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["id"].as_u64().unwrap().to_string()
}

fn rollout_status(config: &std::path::Path, id: &str) -> Value {
    let (_, out, _) = fleet(
        config,
        &["ota", "rollout", "status", id, "--site", "lab", "--json"],
    );
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

#[test]
fn a_signed_release_rolls_out_through_the_firmware_receiver_and_an_untrusted_one_is_refused() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let (config, gateway) = ota_lab(dir.path());
    let release = |version: &str, key: &str| release(&config, dir.path(), version, key);
    release("0.2.0", "keys");
    let names = ["host-1", "host-2", "host-3"];
    let mut terminals: Vec<HostTerminal> = names
        .iter()
        .map(|id| {
            let mut options = host(&mut lab, dir.path(), &gateway, id, false);
            options.ota_public_key = Some(p("keys/signing.pub"));
            HostTerminal::start(&options)
        })
        .collect();
    wait_until("three terminals reporting", || {
        gateway.get("/api/v1/terminals").as_array().unwrap().len() == 3
    });
    let start = |version: &str| start_rollout(&config, version);
    let status = |id: &str| rollout_status(&config, id);
    let id = start("0.2.0");
    let mut last = Value::Null;
    wait_until("the rollout of 0.2.0 completed", || {
        last = status(&id);
        last["state"] == "completed"
    });
    assert_eq!(last["counts"]["confirmed"], 3, "{last}");
    // Each terminal rebooted (re-exec), ran its trial and confirmed it.
    for t in &terminals {
        let booted = t.lines_starting("booted ");
        assert!(
            booted
                .iter()
                .any(|l| l.starts_with("booted 0.2.0") && l.contains("reset Software")),
            "{booted:?}"
        );
    }
    wait_until("heartbeats from 0.2.0", || {
        names
            .iter()
            .all(|id| gateway.get(&format!("/api/v1/terminals/{id}"))["firmware"] == "0.2.0")
    });

    // A release signed by a key the gateway trusts but the firmware does
    // not: the terminals refuse the offer and keep running 0.2.0.
    release("0.3.0", "stranger");
    let id = start("0.3.0");
    wait_until("the untrusted release refused", || {
        last = status(&id);
        names
            .iter()
            .all(|n| rollout_terminal(&last, n)["state"] == "failed")
            || last["state"] == "halted"
    });
    // The rollout halts on the first refusals; every terminal that
    // answered refused, for that reason, and none took the release.
    let answered: Vec<Value> = names
        .iter()
        .map(|n| rollout_terminal(&last, n))
        .filter(|t| t["state"] == "failed")
        .collect();
    assert!(!answered.is_empty(), "{last}");
    for t in &answered {
        assert!(
            t["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("does not trust"),
            "{t}"
        );
    }
    assert_eq!(last["counts"]["confirmed"], Value::Null, "{last}");
    for id in names {
        assert_eq!(
            gateway.get(&format!("/api/v1/terminals/{id}"))["firmware"],
            "0.2.0"
        );
    }
    for t in &mut terminals {
        t.kill9();
    }
}

/// A new image that dies before its health window is over (here: the
/// power goes while it runs its trial) is never kept: the next boot is the
/// previous image, and the rollout hears `rolled_back`.
#[test]
fn a_trial_image_reset_before_its_health_window_is_reverted_and_reported() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (config, gateway) = ota_lab(dir.path());
    release(&config, dir.path(), "0.2.0", "keys");
    let mut options = host(&mut lab, dir.path(), &gateway, "host-1", false);
    options.ota_public_key = Some(dir.path().join("keys/signing.pub"));
    options.trial_window_secs = 3600;
    let mut terminal = HostTerminal::start(&options);
    wait_until("the terminal reporting", || {
        gateway.get("/api/v1/terminals").as_array().unwrap().len() == 1
    });
    let id = start_rollout(&config, "0.2.0");
    // The trial boot is up and heartbeating on the new image...
    wait_until("a heartbeat from the trial of 0.2.0", || {
        gateway.get("/api/v1/terminals/host-1")["firmware"] == "0.2.0"
    });
    assert!(
        terminal.lines_starting("booted 0.2.0").len() == 1,
        "{:?}",
        terminal.lines_starting("booted")
    );
    // ...not kept yet: the power goes.
    terminal.kill9();
    let again = HostTerminal::start(&options);
    again.wait_for_line("the next boot", "booted ");
    let booted = again.lines_starting("booted ");
    assert!(
        booted[0].starts_with(&format!("booted {}", env!("CARGO_PKG_VERSION"))),
        "the previous image: {booted:?}"
    );
    wait_until("the rollout told of the roll-back", || {
        rollout_terminal(&rollout_status(&config, &id), "host-1")["state"] == "rolled_back"
    });
}

#[test]
fn twenty_host_terminals_at_once() {
    let Some(mut lab) = NetLab::enter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gateway = lab_gateway(dir.path(), "lab", GatewayOptions::default());
    let mut terminals: Vec<HostTerminal> = (0..20)
        .map(|i| {
            let options = host(
                &mut lab,
                dir.path(),
                &gateway,
                &format!("host-{i:02}"),
                true,
            );
            HostTerminal::start(&options)
        })
        .collect();
    for (i, t) in terminals.iter_mut().enumerate() {
        for j in 0..20 {
            t.press(1 + ((i + j) % 4) as u8);
        }
        t.close_stdin();
    }
    for t in &mut terminals {
        assert!(t.wait_exit().success(), "{}", t.log());
    }
    assert_eq!(gateway.stat("presses_stored"), 400);
    assert_eq!(
        gateway.get("/api/v1/terminals").as_array().unwrap().len(),
        20
    );
}
