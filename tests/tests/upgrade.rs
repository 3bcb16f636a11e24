//! Upgrading: a data directory written by an earlier store layout
//! (`tests/fixtures/datadir-v1.tar.gz` and `datadir-v2.tar.gz`, made by
//! the releases that wrote them with `tests/fixtures/make-datadir.sh`)
//! opens under the current one, migrated in place on first start, with
//! nothing lost: every stored press still deduplicates, what was waiting
//! for upstream is delivered, the figures are rebuilt, registered
//! terminals still log in and sign.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use serde_json::Value;

const SITE: &str = "fixture";

fn fixture(layout: u8, ext: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("datadir-v{layout}.{ext}"))
}

fn manifest(layout: u8) -> Value {
    let text = std::fs::read_to_string(fixture(layout, "json")).expect("fixture manifest");
    serde_json::from_str(&text).expect("fixture manifest is JSON")
}

fn ids(manifest: &Value, key: &str) -> BTreeSet<String> {
    manifest[key]
        .as_array()
        .expect("id list")
        .iter()
        .map(|v| v.as_str().expect("id").to_string())
        .collect()
}

/// Unpacks the fixture where the test harness keeps the site's data.
fn unpack(layout: u8, dir: &std::path::Path) -> std::path::PathBuf {
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(fixture(layout, "tar.gz"))
        .arg("-C")
        .arg(dir)
        .status()
        .expect("tar runs");
    assert!(status.success());
    let data = dir.join(format!("data-{SITE}"));
    std::fs::rename(dir.join("data"), &data).unwrap();
    data
}

fn counted_in_hourly(hourly: &Value) -> (u64, u64) {
    hourly["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .fold((0, 0), |(c, n), cell| {
            (
                c + cell["figures"]["counted"].as_u64().unwrap(),
                n + cell["figures"]["not_counted"].as_u64().unwrap(),
            )
        })
}

#[test]
fn a_data_directory_of_layout_1_opens_with_nothing_lost() {
    opens_with_nothing_lost(1, "migrated the press store from layout 1");
}

#[test]
fn a_data_directory_of_layout_2_opens_with_nothing_lost() {
    opens_with_nothing_lost(2, "migrated the press store from layout 2");
}

fn opens_with_nothing_lost(layout: u8, migrated: &str) {
    let manifest = manifest(layout);
    let before = &manifest["stats"];
    let stored = before["presses_stored"].as_u64().unwrap();
    let (delivered, pending) = (ids(&manifest, "delivered"), ids(&manifest, "pending"));
    assert_eq!(delivered.len() + pending.len(), stored as usize);

    let dir = tempfile::tempdir().unwrap();
    let data = unpack(layout, dir.path());
    let mosquitto = Mosquitto::start(dir.path());
    let consumer = Consumer::start(mosquitto.port, "analytics-upgrade");
    let mut gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: SITE.into(),
            upstream: Some(mosquitto.url()),
            // The fixture's presses are from its day: keep them whatever
            // day this runs, and the zones it was made with.
            config_toml: Some(
                "[storage]\nretention_days = 0\naggregate_retention_days = 100000\n\n\
                 [zones.north]\nname = \"North stand\"\nterminals = [\"fx-000\", \"fx-001\"]\n\n\
                 [zones.south]\nname = \"South stand\"\nterminals = [\"fx-002\"]\n"
                    .into(),
            ),
            ..Default::default()
        },
    );
    assert!(gateway.log().contains(migrated), "{}", gateway.log());
    assert!(
        data.join("presslog").read_dir().unwrap().count() > 0,
        "the press log is in day files"
    );

    // Every press is still there, once.
    assert_eq!(gateway.stat("presses_stored"), stored);
    // What was waiting for upstream goes out (with the same ids).
    wait_until("the presses the old gateway had not forwarded", || {
        consumer.ids().is_superset(&pending)
    });
    wait_until("nothing pending upstream", || {
        gateway.stat("forward_pending") == 0
    });
    let arrived = consumer.ids();
    assert!(
        arrived.is_subset(&pending),
        "only the pending presses are sent: {:?}",
        arrived.difference(&pending).take(5).collect::<Vec<_>>()
    );

    // Dedup survives: a terminal resending a press stored under the old
    // layout gets its ack, and nothing is stored again. Mosquitto's own
    // clients play the terminal.
    let (seq, boot) = (5, 0);
    assert!(delivered.contains(&format!("{SITE}:fx-000:{boot}:{seq}")));
    let ack = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &gateway.mqtt_port.to_string()])
        .args([
            "-t",
            "pressline/v1/gw/fx-000/ack/json",
            "-C",
            "1",
            "-W",
            "60",
            "-q",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs");
    let duplicates = gateway.stat("presses_duplicate");
    // The subscription is in place once the broker has routed a publish
    // to it; resend until the ack arrives (as a terminal does).
    let mut ack = Some(ack);
    let mut answer = String::new();
    wait_until("the durable ack of the resent press", || {
        mosquitto_pub(
            gateway.mqtt_port,
            "pressline/v1/term/fx-000/press/json",
            &format!(r#"{{"seq":{seq},"boot":{boot},"button":"happy"}}"#),
        );
        let child = ack.as_mut().unwrap();
        if child.try_wait().unwrap().is_some() {
            let out = ack.take().unwrap().wait_with_output().unwrap();
            answer = String::from_utf8_lossy(&out.stdout).into_owned();
            return true;
        }
        false
    });
    let answer: Value = serde_json::from_str(answer.trim()).expect("JSON ack");
    assert_eq!(
        (answer["boot"].as_u64(), answer["first_seq"].as_u64()),
        (Some(boot), Some(seq))
    );
    assert!(gateway.stat("presses_duplicate") > duplicates);
    assert_eq!(
        gateway.stat("presses_stored"),
        stored,
        "a resend is not stored again"
    );

    // The figures are rebuilt from the migrated presses.
    let hourly = gateway.get("/api/v1/report/hourly");
    assert_eq!(
        counted_in_hourly(&hourly),
        counted_in_hourly(&manifest["hourly"]),
        "the weekday x hour table"
    );

    // Terminals, alerts and the registered terminal's credential survive:
    // its signed presses are accepted (the simulator runs it from its
    // provisioning record), an unsigned one is refused.
    let terminals: BTreeSet<String> = gateway
        .get("/api/v1/terminals")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let known: BTreeSet<String> = manifest["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(terminals, known);
    assert!(!gateway.get("/api/v1/alerts").as_array().unwrap().is_empty());
    let record = data.join("reg-1.plpr");
    let report = Sim::spawn(
        &gateway.broker(),
        &[
            "--provisioning",
            record.to_str().unwrap(),
            "--presses",
            "20",
            "--rate",
            "0",
        ],
    )
    .expect_all_acked();
    assert_eq!(report["acked"], 20, "{report}");
    // Another client's unsigned press on reg-1's topic: refused by the
    // broker (a registered terminal's topics are its own), before ingest.
    let refused = gateway.stat("publishes_refused");
    mosquitto_pub(
        gateway.mqtt_port,
        "pressline/v1/term/reg-1/press/json",
        r#"{"seq":999,"boot":7,"button":"happy"}"#,
    );
    wait_until("the unsigned press refused", || {
        gateway.stat("publishes_refused") > refused
    });
    // reg-1's first 12 presses were stored under the old layout, at boot 0.
    // The simulator is a fresh flash under the same id: a new generation of
    // boot numbers, so its 20 presses are all new, none acked as a resend.
    assert_eq!(gateway.stat("presses_stored"), stored + 20);

    // The migrated store is the store: a crash and restart keep it all.
    let hourly = counted_in_hourly(&gateway.get("/api/v1/report/hourly"));
    gateway.restart_after_crash();
    assert_eq!(gateway.stat("presses_stored"), stored + 20);
    assert_eq!(
        counted_in_hourly(&gateway.get("/api/v1/report/hourly")),
        hourly
    );
}
