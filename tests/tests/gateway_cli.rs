//! The `gateway` command line: defaults, and clear errors for bad input.

mod common;

use std::process::Command;

use common::bin;

#[test]
fn generate_config_prints_the_documented_defaults() {
    let out = Command::new(bin("gateway"))
        .arg("generate-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("site = \"demo-site\""));
    assert!(text.contains("[upstream]"));
    // It is a valid config file: running with it gets as far as validation.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        text.replace("site = \"demo-site\"", "site = \"bad site\""),
    )
    .unwrap();
    let out = Command::new(bin("gateway"))
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("site \"bad site\""));
}

#[test]
fn bad_configuration_is_a_clear_error_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        "[mqtt]\nlisten = \"0.0.0.0:1883\"\nmax_terminal = 5\n",
    )
    .unwrap();
    let out = Command::new(bin("gateway"))
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_terminal") && err.contains("gateway.toml"),
        "{err}"
    );

    let out = Command::new(bin("gateway"))
        .args([
            "run",
            "--upstream",
            "mqtts://central:8883",
            "--upstream-ca",
            "/nonexistent/ca.pem",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read upstream CA file /nonexistent/ca.pem"),
        "{err}"
    );
    // Nothing was started or created before the mistake was found.
    assert!(!dir.path().join("data").exists());

    let out = Command::new(bin("gateway"))
        .args([
            "run",
            "--upstream",
            "mqtt://central:1883",
            "--upstream-ca",
            "ca.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use an mqtts:// url"));

    let out = Command::new(bin("gateway"))
        .args(["run", "--config", "/nonexistent/gw.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn a_busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("gateway"))
        .args([
            "run",
            "--mqtt-listen",
            &format!("127.0.0.1:{port}"),
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen for terminals on 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn terminal_sim_rejects_bad_arguments_with_exit_code_2() {
    let out = Command::new(bin("terminal-sim"))
        .args(["--broker", "nohost", "--presses", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST:PORT"));
    let out = Command::new(bin("terminal-sim"))
        .args(["--dup-rate", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn terminal_sim_gives_up_after_its_timeout_when_no_gateway_answers() {
    let port = common::free_port();
    let out = Command::new(bin("terminal-sim"))
        .args([
            "--broker",
            &format!("127.0.0.1:{port}"),
            "--terminals",
            "2",
            "--presses",
            "3",
            "--timeout",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["complete"], false);
    assert_eq!(report["acked"], 0);
}
