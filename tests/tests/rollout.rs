//! Firmware rollouts end to end: real gateway, simulated terminals running
//! the real OTA receiver over embassy-boot, the `fleet` CLI, and (for
//! rollout events) a real upstream Mosquitto.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

/// A site with a gateway that trusts the release key, a fleet profile for
/// it, and helpers to pack, upload and roll out.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    gateway: Gateway,
}

impl Site {
    fn start(extra_toml: &str, upstream: Option<String>) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sites.toml");
        let keys = dir.path().join("keys");
        assert_eq!(
            fleet(
                &config,
                &["keys", "generate", "--out", keys.to_str().unwrap()]
            )
            .0,
            0
        );
        let stranger = dir.path().join("stranger");
        assert_eq!(
            fleet(
                &config,
                &["keys", "generate", "--out", stranger.to_str().unwrap()]
            )
            .0,
            0
        );
        let gateway = Gateway::start(
            dir.path(),
            GatewayOptions {
                site: "arena".into(),
                upstream,
                config_toml: Some(format!(
                    "[ota]\ntrusted_keys = [\"{}\", \"{}\"]\n{extra_toml}",
                    keys.join("signing.pub").display(),
                    stranger.join("signing.pub").display(),
                )),
                ..Default::default()
            },
        );
        add_site(&config, "arena", &gateway);
        Site {
            dir,
            config,
            gateway,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The public key built into the simulated terminals' firmware.
    fn terminal_key(&self) -> String {
        self.path("keys/signing.pub").to_string_lossy().into()
    }

    fn fleet(&self, args: &[&str]) -> (i32, String, String) {
        fleet(&self.config, args)
    }

    /// Packs an image of `size` bytes as `version` signed by `key_dir`'s
    /// key, and uploads it.
    fn release(&self, version: &str, size: usize, key_dir: &str) {
        let image: Vec<u8> = (0..size as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let image_path = self.path(&format!("image-{version}.bin"));
        std::fs::write(&image_path, image).unwrap();
        let artifact = self.path(&format!("{version}.pota"));
        let key = self.path(&format!("{key_dir}/signing.key"));
        let (code, out, err) = self.fleet(&[
            "ota",
            "pack",
            "--version",
            version,
            "--key",
            key.to_str().unwrap(),
            image_path.to_str().unwrap(),
            "-o",
            artifact.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, err) = self.fleet(&[
            "ota",
            "upload",
            artifact.to_str().unwrap(),
            "--site",
            "arena",
        ]);
        assert_eq!(code, 0, "{out}{err}");
    }

    /// Simulated terminals on firmware 1.0.0 with the release key built in.
    fn terminals(&self, prefix: &str, n: usize, extra: &[&str]) -> Sim {
        let n = n.to_string();
        let key = self.terminal_key();
        let mut args = vec![
            "--terminals",
            &n,
            "--id-prefix",
            prefix,
            "--presses",
            "0",
            "--duration",
            "3600",
            "--timeout",
            "3600",
            "--heartbeat-secs",
            "1",
            "--firmware-version",
            "1.0.0",
            "--ota-public-key",
            &key,
            "--ota-max-image",
            "1200000",
        ];
        args.extend_from_slice(extra);
        Sim::spawn(&self.gateway.broker(), &args)
    }

    fn wait_for_terminals(&self, n: usize) {
        wait_until(&format!("{n} terminals reporting"), || {
            self.gateway
                .get("/api/v1/terminals")
                .as_array()
                .unwrap()
                .len()
                == n
        });
    }

    /// Starts a rollout with `fleet ota rollout start --json`; returns its id.
    fn start_rollout(&self, args: &[&str]) -> String {
        let mut all = vec!["ota", "rollout", "start", "--site", "arena", "--version"];
        all.extend_from_slice(args);
        all.push("--json");
        let (code, out, err) = self.fleet(&all);
        assert_eq!(code, 0, "{out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["state"], "running");
        v["id"].as_u64().unwrap().to_string()
    }

    fn status(&self, id: &str) -> Value {
        let (_, out, err) =
            self.fleet(&["ota", "rollout", "status", id, "--site", "arena", "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("status JSON: {out}{err}"))
    }

    fn wait_for_state(&self, id: &str, state: &str) -> Value {
        let mut last = Value::Null;
        wait_until(&format!("rollout {id} {state}"), || {
            last = self.status(id);
            last["state"] == state
        });
        last
    }

    fn firmware_of(&self, terminal: &str) -> String {
        self.gateway.get(&format!("/api/v1/terminals/{terminal}"))["firmware"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn terminals_in<'a>(status: &'a Value, prefix: &str) -> Vec<&'a Value> {
    status["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["id"].as_str().unwrap().starts_with(prefix))
        .collect()
}

#[test]
fn a_1_mib_release_reaches_100_terminals_through_canary_and_waves() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(dir.path());
    let consumer = Consumer::start(mosquitto.port, "ota-events");
    let site = Site::start("max_concurrent_downloads = 25\n", Some(mosquitto.url()));
    site.release("1.1.0", 1 << 20, "keys");
    let _sim = site.terminals("t-", 100, &[]);
    site.wait_for_terminals(100);

    let id = site.start_rollout(&[
        "1.1.0",
        "--all",
        "--canary",
        "2",
        "--waves",
        "25%,100%",
        "--max-failure-rate",
        "10%",
    ]);
    // Someone watches it with progress bars (no TTY here: the final state).
    let watcher = {
        let config = site.config.clone();
        let id = id.clone();
        std::thread::spawn(move || {
            fleet(
                &config,
                &[
                    "ota", "rollout", "status", &id, "--site", "arena", "--watch", "--json",
                ],
            )
        })
    };
    let done = site.wait_for_state(&id, "completed");
    assert_eq!(done["counts"]["confirmed"], 100, "{done}");
    assert_eq!(done["stages"], 3);
    for t in done["terminals"].as_array().unwrap() {
        assert_eq!(t["running"], "1.1.0", "{t}");
        assert_eq!(t["percent"], 100);
    }
    let (code, watched, _) = watcher.join().unwrap();
    assert_eq!(code, 0);
    let watched: Value = serde_json::from_str(&watched).unwrap();
    assert_eq!(watched["state"], "completed");

    // The terminals say so themselves: heartbeats from the new image.
    wait_until("every heartbeat reporting 1.1.0", || {
        site.gateway
            .get("/api/v1/terminals")
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["firmware"] == "1.1.0")
    });
    // Analytics saw the rollout happen.
    wait_until("rollout events upstream", || {
        let events = consumer.others_on("/arena/ota");
        events.iter().any(|(_, e)| e["event"] == "completed")
            && events
                .iter()
                .filter(|(_, e)| e["event"] == "wave_started")
                .count()
                == 3
            && events
                .iter()
                .filter(|(_, e)| e["state"] == "confirmed")
                .count()
                == 100
    });
    let started = consumer.others_on("/arena/ota");
    assert_eq!(started[0].1["schema"], "pressline.ota.v1");
    assert_eq!(started[0].1["event"], "started");
}

#[test]
fn a_failing_canary_halts_the_rollout_and_no_other_terminal_is_touched() {
    let site = Site::start("", None);
    site.release("1.1.0", 200_000, "keys");
    // The canaries (first ids in order) get an image that crashes in its
    // trial boot; the bootloader rolls them back.
    let _canaries = site.terminals("a-", 2, &["--ota-fail-trial-boot", "2"]);
    let _others = site.terminals("b-", 6, &[]);
    site.wait_for_terminals(8);
    let id = site.start_rollout(&[
        "1.1.0",
        "--all",
        "--canary",
        "2",
        "--max-failure-rate",
        "10%",
    ]);
    let halted = site.wait_for_state(&id, "halted");
    assert!(
        halted["halt_reason"]
            .as_str()
            .unwrap()
            .contains("exceeds 10%"),
        "{halted}"
    );
    let canaries = terminals_in(&halted, "a-");
    assert!(
        canaries.iter().any(|t| t["state"] == "rolled_back"),
        "{halted}"
    );
    for t in canaries.iter().filter(|t| t["state"] == "rolled_back") {
        assert!(t["detail"].as_str().unwrap().contains("trial boot"), "{t}");
        assert_eq!(t["running"], "1.0.0");
    }
    for t in terminals_in(&halted, "b-") {
        assert_eq!(t["state"], "pending", "{t}");
        assert_eq!(t["bytes_served"], 0, "{t}");
    }
    // Still on the old image, which they say in their heartbeats.
    wait_until("the canaries running 1.0.0 again", || {
        site.firmware_of("a-000") == "1.0.0" && site.firmware_of("a-001") == "1.0.0"
    });
    // `status` exits 1 and says what to do; a halt is not undone by resume.
    let (code, out, _) = site.fleet(&["ota", "rollout", "status", &id, "--site", "arena"]);
    assert_eq!(code, 1);
    assert!(out.contains("retry-failed"), "{out}");
    let (code, _, err) = site.fleet(&["ota", "rollout", "resume", &id, "--site", "arena"]);
    assert_ne!(code, 0);
    assert!(err.contains("halted"), "{err}");
    let (code, out, err) = site.fleet(&["ota", "rollout", "abort", &id, "--site", "arena"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("aborted"), "{out}");
    // Nothing was downloaded by the others, even after the abort.
    let after = site.status(&id);
    for t in terminals_in(&after, "b-") {
        assert_eq!(t["bytes_served"], 0, "{t}");
        assert_eq!(site.firmware_of(t["id"].as_str().unwrap()), "1.0.0");
    }
}

#[test]
fn a_rollout_continues_after_the_gateway_is_killed_mid_download() {
    let mut site = Site::start("max_concurrent_downloads = 6\n", None);
    site.release("1.1.0", 1 << 20, "keys");
    let _sim = site.terminals("t-", 6, &[]);
    site.wait_for_terminals(6);
    let id = site.start_rollout(&["1.1.0", "--all", "--canary", "0", "--waves", "100%"]);
    wait_until("downloads under way", || {
        let s = site.status(&id);
        s["terminals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["state"] == "downloading" && t["percent"].as_u64().unwrap() >= 10)
    });
    site.gateway.restart_after_crash();
    assert!(site
        .gateway
        .log()
        .contains("continuing rollout after restart"));
    let done = site.wait_for_state(&id, "completed");
    assert_eq!(done["counts"]["confirmed"], 6, "{done}");
    // Terminals resumed where their flash said, rather than starting over:
    // at most a few chunks per terminal were served twice.
    for t in done["terminals"].as_array().unwrap() {
        let served = t["bytes_served"].as_u64().unwrap();
        assert!(served < (1 << 20) + 16 * 4096, "{t}");
    }
}

#[test]
fn interrupted_and_damaged_downloads_resume_rather_than_restart() {
    let site = Site::start("", None);
    let size = 512 * 1024;
    site.release("1.1.0", size, "keys");
    let sim = site.terminals(
        "t-",
        4,
        &[
            "--ota-interrupt-rate",
            "0.03",
            "--ota-corrupt-rate",
            "0.03",
            "--seed",
            "7",
        ],
    );
    site.wait_for_terminals(4);
    let id = site.start_rollout(&["1.1.0", "--all", "--canary", "1", "--waves", "100%"]);
    let done = site.wait_for_state(&id, "completed");
    assert_eq!(done["counts"]["confirmed"], 4, "{done}");
    let report = sim.stop_and_report();
    let interruptions = report["ota_interruptions"].as_u64().unwrap();
    assert!(interruptions > 0, "{report}");
    assert!(
        report["ota_damaged_chunks"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(report["ota_resumes"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["ota_confirmed"], 4);
    // Every byte written once, except the chunk in flight at each power
    // loss: resumed, not restarted.
    let written = report["ota_bytes"].as_u64().unwrap();
    assert!(
        written <= 4 * size as u64 + interruptions * 4096,
        "{written} bytes written for {interruptions} interruptions: {report}"
    );
}

#[test]
fn a_release_signed_by_a_key_the_terminal_does_not_trust_is_refused_by_the_terminal() {
    // The gateway trusts the stranger's key (say, a compromised or wrong
    // key in its config), but the terminals' firmware does not.
    let site = Site::start("", None);
    site.release("1.1.0", 100_000, "stranger");
    let _sim = site.terminals("t-", 1, &[]);
    site.wait_for_terminals(1);
    let id = site.start_rollout(&["1.1.0", "--all", "--canary", "0", "--waves", "100%"]);
    let halted = site.wait_for_state(&id, "halted");
    let t = &halted["terminals"][0];
    assert_eq!(t["state"], "failed", "{halted}");
    assert!(
        t["detail"].as_str().unwrap().contains("does not trust"),
        "{t}"
    );
    assert_eq!(t["bytes_served"], 0, "refused before downloading: {t}");
    assert_eq!(site.firmware_of("t-000"), "1.0.0");
}

#[test]
fn a_terminal_that_goes_silent_fails_after_the_timeout_and_the_rest_complete() {
    let site = Site::start("silent_timeout_secs = 3\nreoffer_secs = 1\n", None);
    site.release("1.1.0", 100_000, "keys");
    let _gone = site.terminals("a-", 1, &["--ota-vanish", "1"]);
    let _sim = site.terminals("b-", 3, &[]);
    site.wait_for_terminals(4);
    let id = site.start_rollout(&[
        "1.1.0",
        "--all",
        "--canary",
        "0",
        "--waves",
        "100%",
        "--max-failure-rate",
        "30%",
    ]);
    let done = site.wait_for_state(&id, "completed");
    assert_eq!(done["counts"]["confirmed"], 3, "{done}");
    let gone = &terminals_in(&done, "a-")[0];
    assert_eq!(gone["state"], "failed");
    assert!(
        gone["detail"].as_str().unwrap().contains("silent"),
        "{gone}"
    );
    // Completed, but with a failure: exit 1 for scripts.
    let (code, _, _) = site.fleet(&["ota", "rollout", "status", &id, "--site", "arena"]);
    assert_eq!(code, 1);
}
