//! `pressline-central` processes: consumers from the RabbitMQ cluster into
//! PostgreSQL.

use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub struct Central {
    child: Child,
    pub http_port: u16,
}

/// `pressline-central declare`: the queue and its binding, before any
/// gateway publishes.
pub fn declare(amqp: &[String]) {
    command(amqp, &["declare"]);
}

/// `pressline-central SUBCOMMAND --amqp … ARGS…`: its output, whatever
/// its exit.
pub fn run(amqp: &[String], args: &[&str]) -> std::process::Output {
    Command::new(super::bin("pressline-central"))
        .args(&args[..1])
        .args(["--amqp", &amqp.join(",")])
        .args(&args[1..])
        .output()
        .unwrap()
}

/// `pressline-central SUBCOMMAND --amqp … ARGS…`, which must succeed;
/// its standard output.
pub fn command(amqp: &[String], args: &[&str]) -> String {
    let out = run(amqp, args);
    assert!(
        out.status.success(),
        "pressline-central {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Central {
    pub fn start(amqp: &[String], postgres: &str, extra: &[&str]) -> Central {
        let http_port = super::free_port();
        let child = Command::new(super::bin("pressline-central"))
            .args(["run", "--amqp", &amqp.join(","), "--postgres", postgres])
            .arg("--http")
            .arg(format!("127.0.0.1:{http_port}"))
            .args(extra)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("pressline-central starts");
        let central = Central { child, http_port };
        super::wait_until("pressline-central consuming and connected", || {
            ureq::get(&format!("http://127.0.0.1:{http_port}/healthz"))
                .call()
                .is_ok()
        });
        central
    }

    pub fn stats(&self) -> Value {
        ureq::get(&format!("http://127.0.0.1:{}/api/v1/stats", self.http_port))
            .call()
            .expect("central stats")
            .into_json()
            .unwrap()
    }

    pub fn metrics(&self) -> String {
        ureq::get(&format!("http://127.0.0.1:{}/metrics", self.http_port))
            .call()
            .expect("central metrics")
            .into_string()
            .unwrap()
    }

    /// The process dies at once, whatever it holds (SIGKILL).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fixed presses around the end of British Summer Time (Sunday
/// 2026-10-25, 02:00 BST → 01:00 GMT), at sites in London, New York and
/// one the database has no time zone for (UTC).
pub const REPORT_FIXTURE: &str = "
INSERT INTO sites (site, time_zone, state, version) VALUES
  ('london', 'Europe/London', 'online', '0.1.0'),
  ('ny', 'America/New_York', 'online', '0.1.0');
INSERT INTO zones VALUES ('london', 'food', 'Food court');
INSERT INTO presses (id, site, terminal, zone, boot, seq, button, score, pressed_at, received_at, counted) VALUES
  -- London, in the period (local days 2026-10-19 to 2026-10-25):
  ('L1', 'london', 't1', 'food', 0, 1, 'very_happy',   4, '2026-10-24T23:30Z', '2026-10-24T23:30Z', true), -- Sun 00:30 BST
  ('L2', 'london', 't1', 'food', 0, 2, 'very_unhappy', 1, '2026-10-25T00:30Z', '2026-10-25T00:30Z', true), -- Sun 01:30 BST
  ('L3', 'london', 't2', NULL,   0, 1, 'happy',        3, '2026-10-25T01:30Z', '2026-10-25T01:30Z', true), -- Sun 01:30 GMT
  ('L4', 'london', 't2', NULL,   0, 2, 'very_happy',   4, '2026-10-25T23:30Z', '2026-10-25T23:30Z', true), -- Sun 23:30 GMT
  ('L6', 'london', 't1', 'food', 0, 3, 'unhappy',      2, '2026-10-18T23:30Z', '2026-10-18T23:30Z', true), -- Mon 00:30 BST
  ('L9', 'london', 't2', NULL,   0, 4, 'unhappy',      2, NULL,                '2026-10-20T12:00Z', true), -- Tue 13:00 BST
  -- London, not in it:
  ('L5', 'london', 't2', NULL,   0, 3, 'very_unhappy', 1, '2026-10-26T00:30Z', '2026-10-26T00:30Z', true), -- Mon 26th
  ('L7', 'london', 't1', 'food', 0, 5, 'very_happy',   4, '2026-10-18T22:30Z', '2026-10-18T22:30Z', true), -- previous period
  ('L8', 'london', 't2', NULL,   0, 5, 'very_happy',   4, '2026-10-20T12:00Z', '2026-10-20T12:00Z', false), -- not counted
  -- New York (EDT, UTC-4, all period):
  ('N1', 'ny', 'n1', NULL, 0, 1, 'very_happy',   4, '2026-10-20T03:00Z', '2026-10-20T03:00Z', true), -- Mon 23:00
  ('N2', 'ny', 'n1', NULL, 0, 2, 'happy',        3, '2026-10-26T03:30Z', '2026-10-26T03:30Z', true), -- Sun 23:30
  ('N3', 'ny', 'n1', NULL, 0, 3, 'very_unhappy', 1, '2026-10-19T03:00Z', '2026-10-19T03:00Z', true), -- previous period
  -- A site with no time zone known: UTC.
  ('W1', 'nowhere', 'w1', NULL, 0, 1, 'very_happy', 4, '2026-10-22T10:00Z', '2026-10-22T10:00Z', true);
";

/// `pressline-central SUBCOMMAND ARGS… --postgres URL`, which must
/// succeed; its standard output.
pub fn database_command(postgres: &str, args: &[&str]) -> String {
    let out = Command::new(super::bin("pressline-central"))
        .args(args)
        .args(["--postgres", postgres])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pressline-central {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `pressline-central web` on a free loopback port, with a viewer made
/// for it.
pub struct WebView {
    child: Child,
    pub port: u16,
    pub token: String,
    /// HTTPS, trusting this CA.
    ca: Option<std::path::PathBuf>,
    pub agent: ureq::Agent,
}

impl WebView {
    pub fn start(postgres: &str) -> WebView {
        WebView::start_with(postgres, None)
    }

    /// Over HTTPS with `issued`, signed by the CA in `ca`, when given.
    pub fn start_with(
        postgres: &str,
        tls: Option<(&super::pki::Issued, &std::path::Path)>,
    ) -> WebView {
        let token = database_command(postgres, &["viewers", "add", "area-managers"])
            .trim()
            .to_string();
        assert!(token.starts_with("plv_"), "a viewer token: {token}");
        let port = super::free_port();
        let mut cmd = Command::new(super::bin("pressline-central"));
        cmd.args(["web", "--postgres", postgres, "--http"])
            .arg(format!("127.0.0.1:{port}"));
        if let Some((issued, _)) = tls {
            cmd.arg("--tls-cert")
                .arg(&issued.cert)
                .arg("--tls-key")
                .arg(&issued.key);
        }
        let child = cmd
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("pressline-central web starts");
        let ca = tls.map(|(_, ca)| ca.to_path_buf());
        let agent = super::http_agent(ca.as_deref());
        let web = WebView {
            child,
            port,
            token,
            ca,
            agent,
        };
        super::wait_until("the web view answering", || {
            web.agent
                .get(&format!("{}/healthz", web.url()))
                .call()
                .is_ok()
        });
        web
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `path` as the viewer; the body of a 200.
    pub fn get(&self, path: &str) -> String {
        self.agent
            .get(&format!("{}{path}", self.url()))
            .set("Authorization", &format!("Bearer {}", self.token))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .into_string()
            .unwrap()
    }
}

impl Drop for WebView {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of the element after `data-field="{field}"` within `html`,
/// tags stripped (`–` for none).
pub fn field(html: &str, field: &str) -> String {
    let after = html
        .split(&format!("data-field=\"{field}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no {field} in {html}"));
    let inner = &after[after.find('>').unwrap() + 1..];
    // Up to the element's end: its text and any spans inside it.
    let mut text = String::new();
    let mut depth = 0;
    let mut in_tag = false;
    let mut tag = String::new();
    for c in inner.chars() {
        match c {
            '<' => {
                in_tag = true;
                tag.clear();
            }
            '>' if in_tag => {
                in_tag = false;
                if tag.starts_with('/') {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                } else {
                    depth += 1;
                }
            }
            c if in_tag => tag.push(c),
            c => text.push(c),
        }
    }
    text.trim().to_string()
}

/// The part of `html` from the element marked `marker` (e.g.
/// `data-site="arena"`) to the end of its table row or card.
pub fn section<'a>(html: &'a str, marker: &str) -> &'a str {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the page"));
    let rest = &html[start..];
    let end = rest.find("</tr>").unwrap_or(rest.len());
    &rest[..end]
}

/// A figure of `fleet report --json` as the pages print it.
pub fn as_page(v: &Value, signed: bool) -> String {
    match v.as_f64() {
        None => "–".into(),
        Some(x) if signed => format!("{x:+.1}"),
        Some(x) if v.is_u64() => format!("{x}"),
        Some(x) => format!("{x:.1}"),
    }
}

/// The overview at `query` shows, for the network and every site, the
/// figures `fleet report --json` gives for the same period; so does each
/// site's page.
pub fn assert_overview_matches(web: &WebView, report: &Value, query: &str) {
    let page = web.get(&format!("/?{query}"));
    let (cards, table) = page.split_once("id=\"ranking\"").expect("a ranking table");
    let network = &report["network"];
    assert_eq!(field(cards, "presses"), network["presses"].to_string());
    assert_eq!(
        field(cards, "happy_index"),
        as_page(&network["happy_index"], false)
    );
    assert_eq!(field(cards, "change"), as_page(&network["change"], true));
    let sites = report["sites"].as_array().unwrap();
    for s in sites {
        let site = s["site"].as_str().unwrap();
        let row = section(table, &format!("data-site=\"{site}\""));
        assert_eq!(field(row, "rank"), s["rank"].to_string(), "{site}");
        assert_eq!(field(row, "presses"), s["presses"].to_string(), "{site}");
        assert_eq!(
            field(row, "happy_index"),
            as_page(&s["happy_index"], false),
            "{site}"
        );
        assert_eq!(
            field(row, "ranking_index"),
            as_page(&s["ranking_index"], false),
            "{site}"
        );
        assert_eq!(field(row, "change"), as_page(&s["change"], true), "{site}");
    }
    assert_eq!(table.matches("<tr data-site=").count(), sites.len());
    for s in sites {
        assert_site_page_matches(web, report, s["site"].as_str().unwrap(), query);
    }
}

/// A site's page at `query` shows its row and zones of `fleet report
/// --json` for the same period, its rank among all the report's sites.
pub fn assert_site_page_matches(web: &WebView, report: &Value, site: &str, query: &str) {
    let page = web.get(&format!("/sites/{site}?{query}"));
    let sites = report["sites"].as_array().unwrap();
    let row = sites.iter().find(|s| s["site"] == site).unwrap();
    let header = section(&page, "id=\"site\"");
    assert_eq!(
        field(header, "presses"),
        row["presses"].to_string(),
        "{site}"
    );
    assert_eq!(
        field(header, "happy_index"),
        as_page(&row["happy_index"], false),
        "{site}"
    );
    assert_eq!(
        field(header, "change"),
        as_page(&row["change"], true),
        "{site}"
    );
    assert_eq!(
        field(header, "ranking_index"),
        as_page(&row["ranking_index"], false),
        "{site}"
    );
    assert_eq!(
        field(header, "rank"),
        format!("{} of {}", row["rank"], sites.len()),
        "{site}"
    );
    let zones = &page[page.find("id=\"zones\"").expect("a zones table")..];
    for z in report["zones"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|z| z["site"] == site)
    {
        let zone_row = section(
            zones,
            &format!("<tr data-zone=\"{}\"", z["zone"].as_str().unwrap()),
        );
        assert_eq!(
            field(zone_row, "presses"),
            z["presses"].to_string(),
            "{site}/{}",
            z["zone"]
        );
        assert_eq!(
            field(zone_row, "happy_index"),
            as_page(&z["happy_index"], false),
            "{site}/{}",
            z["zone"]
        );
        assert_eq!(
            field(zone_row, "change"),
            as_page(&z["change"], true),
            "{site}/{}",
            z["zone"]
        );
    }
}
