//! The dashboard in a real headless Chromium (Debian's `chromium`): zone
//! figures and an unhappiness alert appear and update live.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "Chromium is missing: the test command installs it (apt-get install chromium)"
    );
    path
}

/// Loads the page in headless Chromium, lets its scripts run, and returns
/// the DOM; also writes a screenshot when asked.
fn render(url: &str, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args(common::browser::HEADLESS)
        .args([
            "--window-size=1280,1000",
            "--virtual-time-budget=5000",
            "--timeout=20000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={}", path.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The number inside `<span class="{class}">` of the zone card `zone`.
fn zone_number(dom: &str, zone: &str, class: &str) -> Option<u64> {
    let card = dom.split(&format!("data-zone=\"{zone}\"")).nth(1)?;
    let card = card.split("data-zone=").next()?;
    let after = card.split(&format!("class=\"{class}\">")).nth(1)?;
    after.split('<').next()?.trim().parse().ok()
}

#[test]
fn zone_figures_and_an_unhappiness_alert_appear_and_update_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[misuse]
response_interval_secs = 0.05
burst_max = 10000
[scores]
min_presses = 5
[zones.food]
name = "North stand food court"
terminals = ["z000", "z001"]
[zones.bar]
name = "South stand bar"
terminals = ["z002", "z003"]
"#;
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "stadium".into(),
            config_toml: Some(config.into()),
            ..Default::default()
        },
    );
    // Food court visitors are unhappy; the bar's are happy. Presses keep
    // coming for a while so the page has something to update.
    let _sim = Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "4",
            "--presses",
            "150",
            "--rate",
            "8",
            "--unhappy",
            "2",
            "--id-prefix",
            "z",
            "--duration",
            "120",
        ],
    );
    wait_until("the food court turns unhappy", || {
        gateway
            .get("/api/v1/alerts?open=true")
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "zone_unhappy" && a["zone"] == "food")
    });

    // The wall screen's token: a viewer's reads everything the page shows.
    let url = format!(
        "{}/?token={}",
        gateway.url(),
        gateway.token_in("viewer-token")
    );
    let first = render(&url, None);
    assert!(
        first.contains("North stand food court") && first.contains("South stand bar"),
        "zones shown:\n{first}"
    );
    assert!(
        first.contains("data-kind=\"zone_unhappy\""),
        "alert banner shown:\n{first}"
    );
    assert!(
        first.contains("class=\"card zone unhappy\" data-zone=\"food\""),
        "food court card marked unhappy"
    );
    let food_today = zone_number(&first, "food", "today-counted").expect("food court count");
    assert!(food_today > 0);

    // On a supervisor's phone (the operator's token, which may
    // acknowledge): nothing runs off the right edge, and the alert's
    // acknowledge button is on the screen.
    let mut browser =
        common::browser::Browser::open(&format!("{}/?token={}", gateway.url(), gateway.token()));
    browser.watch_console();
    let ack = "document.querySelector('#alerts [data-kind=zone_unhappy] button[data-ack]')";
    browser.wait_for("the alert's acknowledge button", &format!("!!{ack}"));
    let artifacts = bin("gateway").parent().unwrap().to_path_buf();
    browser.check_widths("dashboard", &artifacts);
    let right = browser.eval(&format!("{ack}.getBoundingClientRect().right"));
    assert!(
        right.as_f64().is_some_and(|r| r > 0.0 && r <= 390.0),
        "acknowledge button within the phone's width: right edge at {right}"
    );
    drop(browser);

    // Live: later renders show more presses for the same zone.
    wait_until("the page updates", || {
        zone_number(&render(&url, None), "food", "today-counted").is_some_and(|n| n > food_today)
    });

    // Without a token the page asks for one instead of showing data.
    let signed_out = render(&gateway.url(), None);
    assert!(
        signed_out.contains("id=\"login\" class=\"card\""),
        "login form shown:\n{signed_out}"
    );

    // A screenshot as a test artifact, next to the test binaries.
    let artifact = bin("gateway").parent().unwrap().join("dashboard.png");
    render(&url, Some(&artifact));
    assert!(
        std::fs::metadata(&artifact)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "screenshot written"
    );
    eprintln!("dashboard screenshot: {}", artifact.display());
}

#[test]
fn scores_hourly_report_and_metrics_answer_with_the_token_only() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "shop".into(),
            ..Default::default()
        },
    );
    Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "2",
            "--presses",
            "10",
            "--rate",
            "0",
            "--id-prefix",
            "s",
        ],
    )
    .expect_all_acked();
    wait_until("scores see the presses", || {
        let v = gateway.get("/api/v1/scores?window=today");
        v["site"]["counted"].as_u64().unwrap_or(0) + v["site"]["not_counted"].as_u64().unwrap_or(0)
            == 20
    });
    // Unthrottled presses land within the response interval: most are repeats.
    let today = gateway.get("/api/v1/scores?window=today");
    assert!(
        today["site"]["not_counted"].as_u64().unwrap() >= 10,
        "{today}"
    );
    assert_eq!(today["zones"][0]["zone"], "unassigned");
    let hourly = gateway.get("/api/v1/report/hourly");
    assert_eq!(hourly["cells"].as_array().unwrap().len(), 7 * 24);
    let metrics = ureq::get(&format!("{}/metrics", gateway.url()))
        .set("Authorization", &format!("Bearer {}", gateway.token()))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(metrics.contains("# TYPE pressline_presses_total counter"));
    assert!(metrics.contains("pressline_presses_total{site=\"shop\",zone=\"unassigned\""));
    assert!(metrics.contains("pressline_terminals{site=\"shop\",state=\"online\"}"));
    match ureq::get(&format!("{}/metrics", gateway.url())).call() {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("metrics without a token: {other:?}"),
    }
    match ureq::get(&format!("{}/api/v1/scores?window=week", gateway.url()))
        .set("Authorization", &format!("Bearer {}", gateway.token()))
        .call()
    {
        Err(ureq::Error::Status(400, _)) => {}
        other => panic!("unknown window: {other:?}"),
    }
}
