//! Reports by e-mail (`pressline-central mail`) through a real SMTP relay
//! (aiosmtpd from PyPI) from a real PostgreSQL: one report per recipient
//! and period, with two senders at once and across a restart; the figures
//! are `fleet report`'s, the charts real PNG images.

mod common;

use std::process::{Command, Output};

use common::central;
use common::pg_server::Postgres;
use common::smtp::SmtpServer;
use common::*;
use serde_json::Value;

/// Monday 26 October 2026, 07:00 in London (GMT): the week of the 19th is
/// due, and September for the monthly report.
const AT: &str = "2026-10-26T07:00:00Z";

fn config(smtp_port: u16) -> String {
    format!(
        r#"
smtp_url = "smtp://127.0.0.1:{smtp_port}"
from = "Pressline reports <reports@example.com>"
web_url = "https://reports.example.com"
send_after = "06:00"

[[subscription]]
name = "london-weekly"
every = "weekly"
sites = ["london"]
to = ["anna@example.com", "ben@example.com"]
time_zone = "Europe/London"

[[subscription]]
name = "network-monthly"
every = "monthly"
to = ["cx@example.com"]
"#
    )
}

fn sender(pg: &Postgres, config: &std::path::Path) -> Command {
    let mut cmd = Command::new(bin("pressline-central"));
    cmd.args(["mail", "--once", "--at", AT, "--postgres", &pg.url()])
        .arg("--config")
        .arg(config);
    cmd
}

fn finished(out: Output) -> String {
    assert!(
        out.status.success(),
        "pressline-central mail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A received message, decoded by Python's `email` package: its
/// recipients, subject, text and HTML parts, and each PNG part decoded
/// (chunks checked, image data inflated to its full size), kept as test
/// artifacts in `artifacts` when given.
fn decode(message: &str, artifacts: Option<&std::path::Path>) -> Value {
    const SCRIPT: &str = r#"
import email, email.policy, json, struct, sys, zlib
m = email.message_from_string(sys.stdin.read(), policy=email.policy.default)
out = {"to": m["To"], "subject": m["Subject"], "text": "", "html": "", "images": []}
for part in m.walk():
    kind = part.get_content_type()
    if kind == "text/plain": out["text"] = part.get_content()
    elif kind == "text/html": out["html"] = part.get_content()
    elif kind == "image/png":
        data = part.get_content()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
        pos, idat, ihdr = 8, b"", None
        while pos < len(data):
            length, tag = struct.unpack(">I4s", data[pos:pos + 8])
            body = data[pos + 8:pos + 8 + length]
            assert zlib.crc32(tag + body) == struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0], "chunk CRC"
            if tag == b"IHDR": ihdr = struct.unpack(">IIBB", body[:10])
            if tag == b"IDAT": idat += body
            pos += 12 + length
        width, height, depth, colour = ihdr
        channels = {6: 4, 2: 3, 0: 1, 4: 2}[colour]
        raw = zlib.decompress(idat)
        assert len(raw) == height * (1 + width * channels * depth // 8), "image data size"
        cid = part["Content-ID"].strip("<>")
        if len(sys.argv) > 1:
            open(f"{sys.argv[1]}/report-mail-{cid}.png", "wb").write(data)
        out["images"].append({"cid": cid, "width": width, "height": height})
print(json.dumps(out))
"#;
    let mut child = Command::new(SmtpServer::python())
        .args(["-c", SCRIPT])
        .args(artifacts)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "decoding the message: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn each_recipient_gets_one_report_per_period_with_two_senders_and_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    central::database_command(&pg.url(), &["migrate"]);
    pg.psql(central::REPORT_FIXTURE);
    let smtp = SmtpServer::start(dir.path());
    let config_file = dir.path().join("reports.toml");
    std::fs::write(&config_file, config(smtp.port)).unwrap();

    // Two senders at once: each report goes out once between them.
    let (a, b) = (
        sender(&pg, &config_file).output(),
        sender(&pg, &config_file).output(),
    );
    let first = [finished(a.unwrap()), finished(b.unwrap())];
    let sent: u32 = first
        .iter()
        .map(|o| o.split(' ').next().unwrap().parse::<u32>().unwrap())
        .sum();
    assert_eq!(sent, 3, "{first:?}");
    wait_until("three messages at the relay", || smtp.messages().len() == 3);

    // A sender started again later sends nothing twice.
    let again = finished(sender(&pg, &config_file).output().unwrap());
    assert_eq!(again.trim(), "0 sent, 3 sent before, 0 failed");
    assert_eq!(smtp.messages().len(), 3);
    assert_eq!(
        pg.psql("SELECT count(*) FROM report_mailings WHERE sent_at IS NOT NULL"),
        "3"
    );

    // The London report: fleet's figures for the week, the charts as PNG,
    // a link to the same view.
    let artifacts = bin("gateway").parent().unwrap().to_path_buf();
    let messages: Vec<Value> = smtp
        .messages()
        .iter()
        .map(|m| decode(m, m.contains("To: anna@").then_some(artifacts.as_path())))
        .collect();
    let mut to: Vec<&str> = messages.iter().map(|m| m["to"].as_str().unwrap()).collect();
    to.sort();
    assert_eq!(
        to,
        ["anna@example.com", "ben@example.com", "cx@example.com"]
    );
    let (code, out, err) = fleet(
        &dir.path().join("fleet.toml"),
        &[
            "report",
            "--postgres",
            &pg.url(),
            "--to",
            "2026-10-25",
            "--days",
            "7",
            "--site",
            "london",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let anna = messages
        .iter()
        .find(|m| m["to"] == "anna@example.com")
        .unwrap();
    let subject = anna["subject"].as_str().unwrap();
    let headline = format!(
        "Happy Index {:.1} ({:+.1})",
        report["network"]["happy_index"].as_f64().unwrap(),
        report["network"]["change"].as_f64().unwrap()
    );
    assert!(
        subject.starts_with("Pressline weekly report, london: 2026-10-19 – 2026-10-25")
            && subject.ends_with(&headline),
        "{subject} / {headline}"
    );
    let text = anna["text"].as_str().unwrap();
    assert!(
        text.contains("https://reports.example.com/sites/london?to=2026-10-25&days=7"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Presses: {} ", report["network"]["presses"])),
        "{text}"
    );
    let images = anna["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{anna}");
    for image in images {
        assert!(image["width"].as_u64().unwrap() >= 1000, "{image}");
        let cid = image["cid"].as_str().unwrap();
        assert!(
            anna["html"]
                .as_str()
                .unwrap()
                .contains(&format!("cid:{cid}")),
            "{cid}"
        );
    }
    // The network's monthly report covers September.
    let cx = messages
        .iter()
        .find(|m| m["to"] == "cx@example.com")
        .unwrap();
    assert!(
        cx["subject"]
            .as_str()
            .unwrap()
            .starts_with("Pressline monthly report, the network: 2026-09-01 – 2026-09-30"),
        "{cx}"
    );
}

#[test]
fn a_relay_that_refuses_is_tried_again_and_nothing_is_marked_sent() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    central::database_command(&pg.url(), &["migrate"]);
    pg.psql(central::REPORT_FIXTURE);
    // Nothing listens on this port yet.
    let port = free_port();
    let config_file = dir.path().join("reports.toml");
    std::fs::write(&config_file, config(port)).unwrap();
    let out = sender(&pg, &config_file).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("0 sent, 0 sent before, 3 failed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM report_mailings WHERE sent_at IS NOT NULL"),
        "0"
    );
    // Once the relay is there, the next pass sends all three.
    let smtp = SmtpServer::start_on(dir.path(), port);
    let again = finished(sender(&pg, &config_file).output().unwrap());
    assert_eq!(again.trim(), "3 sent, 0 sent before, 0 failed");
    wait_until("three messages", || smtp.messages().len() == 3);
}

#[test]
fn a_time_zone_that_is_not_an_iana_name_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let config_file = dir.path().join("reports.toml");
    // PostgreSQL takes "UTC+2" (two hours behind UTC) and "BST" (no
    // daylight saving); neither is what an operator means.
    for zone in ["UTC+2", "BST", "Europe/Londn"] {
        let text = config(free_port()).replace(
            "time_zone = \"Europe/London\"",
            &format!("time_zone = \"{zone}\""),
        );
        std::fs::write(&config_file, text).unwrap();
        let out = sender(&pg, &config_file).output().unwrap();
        assert!(!out.status.success(), "{zone} taken");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("IANA zone name"), "{zone}: {err}");
    }
}
