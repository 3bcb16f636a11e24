//! The central web view (`pressline-central web`) against a real
//! PostgreSQL and a real headless Chromium: every figure on its pages is
//! the one `fleet report --json` gives for the same period, its CSV files
//! are `fleet report --csv`'s, only viewers get in, and each page reads on
//! a phone.

mod common;

use common::browser::Browser;
use common::central::{self, as_page, field, section, WebView};
use common::pg_server::Postgres;
use common::*;
use serde_json::Value;

/// Alerts and terminal health at the London site of the report fixture:
/// two food-court alerts (acknowledged after 2 and 5 minutes, one
/// recovered after 10), a terminal offline for an hour nobody
/// acknowledged, and one raised after the period.
const ALERTS_AND_HEALTH: &str = "
INSERT INTO alerts (site, id, terminal, zone, kind, severity, state, raised_at, cleared_at,
                    acknowledged_at, detail, document) VALUES
  ('london', 1, '', 'food', 'zone_unhappy', 'critical', 'cleared',
   '2026-10-25T00:10Z', '2026-10-25T00:20Z', '2026-10-25T00:12Z', 'unhappy', '{}'),  -- Sun 01:10 BST
  ('london', 2, '', 'food', 'zone_unhappy', 'critical', 'raised',
   '2026-10-20T11:00Z', NULL, '2026-10-20T11:05Z', 'unhappy', '{}'),                 -- Tue 12:00 BST
  ('london', 3, 't2', NULL, 'offline', 'critical', 'cleared',
   '2026-10-22T09:00Z', '2026-10-22T10:00Z', NULL, 'silent', '{}'),                  -- Thu 10:00 BST
  ('london', 4, 't1', NULL, 'low_battery', 'warning', 'raised',
   '2026-10-26T09:00Z', NULL, NULL, 'battery', '{}');                                -- after the period
INSERT INTO terminal_health (site, terminal, online, last_seen, firmware, battery_mv, rssi_dbm, document) VALUES
  ('london', 't1', true,  '2026-10-26T09:00Z', '0.3.1', 3310, -61, '{}'),
  ('london', 't2', false, '2026-10-25T23:40Z', '0.3.1', NULL, -80, '{}');
";

const PERIOD: &[&str] = &[
    "--to",
    "2026-10-25",
    "--days",
    "7",
    "--weeks",
    "1",
    "--prior-presses",
    "10",
];
const QUERY: &str = "to=2026-10-25&days=7&weeks=1&prior=10";

fn report(pg: &Postgres, format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let mut args = vec!["report", "--postgres", &url];
    args.extend_from_slice(PERIOD);
    args.push(format);
    let (code, out, err) = fleet(&dir.path().join("fleet.toml"), &args);
    assert_eq!(code, 0, "{err}");
    out
}

fn fixture() -> (Postgres, WebView) {
    let pg = Postgres::start();
    central::database_command(&pg.url(), &["migrate"]);
    pg.psql(central::REPORT_FIXTURE);
    pg.psql(ALERTS_AND_HEALTH);
    let web = WebView::start(&pg.url());
    (pg, web)
}

#[test]
fn every_figure_on_the_pages_is_fleet_reports_across_a_daylight_saving_change() {
    let (pg, web) = fixture();
    let json: Value = serde_json::from_str(&report(&pg, "--json")).unwrap();

    // The network overview: the network and every site's row, from the
    // rollups and from every press alike.
    central::assert_overview_matches(&web, &json, QUERY);
    central::assert_overview_matches(&web, &json, &format!("{QUERY}&source=presses"));
    let overview = web.get(&format!("/?{QUERY}"));
    let london_row = section(&overview, "data-site=\"london\"");
    // Alerts whose condition holds now, whenever raised.
    assert_eq!(field(london_row, "open_alerts"), "2");
    assert_eq!(field(london_row, "offline"), "1 / 2");

    // London's page: its rank in the whole network, its zones, its hour ×
    // weekday cells in London time (the two presses at 01:30 on the night
    // the clocks went back are both in the 01:00 cell).
    let page = web.get(&format!("/sites/london?{QUERY}"));
    let london = json["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == "london")
        .unwrap();
    let header = section(&page, "id=\"site\"");
    assert_eq!(field(header, "presses"), london["presses"].to_string());
    assert_eq!(
        field(header, "happy_index"),
        as_page(&london["happy_index"], false)
    );
    assert_eq!(field(header, "change"), as_page(&london["change"], true));
    assert_eq!(
        field(header, "ranking_index"),
        as_page(&london["ranking_index"], false)
    );
    let sites = json["sites"].as_array().unwrap().len();
    assert_eq!(
        field(header, "rank"),
        format!("{} of {sites}", london["rank"])
    );
    for zone in json["zones"].as_array().unwrap() {
        if zone["site"] != "london" {
            continue;
        }
        let row = section(
            &page,
            &format!("<tr data-zone=\"{}\"", zone["zone"].as_str().unwrap()),
        );
        assert_eq!(field(row, "presses"), zone["presses"].to_string());
        assert_eq!(
            field(row, "happy_index"),
            as_page(&zone["happy_index"], false)
        );
        assert_eq!(field(row, "change"), as_page(&zone["change"], true));
    }
    let hours = json["hours"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == "london")
        .unwrap();
    let cells = hours["cells"].as_array().unwrap();
    for c in cells {
        let title = format!(
            "{} {:02}:00: {:.1} ({} presses)",
            c["weekday"].as_str().unwrap(),
            c["hour"].as_u64().unwrap(),
            c["happy_index"].as_f64().unwrap(),
            c["presses"]
        );
        assert!(page.contains(&title), "heat map cell {title}");
    }
    assert!(
        page.contains("sun 01:00: 33.3 (2 presses)"),
        "both 01:30s in one cell"
    );
    assert_eq!(page.matches("presses)</title><rect").count(), cells.len());

    // Alert response, worked out by hand: food court acknowledged after 2
    // and 5 minutes (median 3.5 → "3 min"), recovered once after 10; the
    // offline terminal recovered after an hour, never acknowledged.
    let food = section(
        &page,
        "<tr data-zone=\"food\"><td class=\"text\">Food court</td><td data-field=\"alerts\"",
    );
    assert!(
        food.contains(
            ">2</td><td data-field=\"acknowledged\">2</td><td>3 min</td><td>1</td><td>10 min</td>"
        ),
        "{food}"
    );
    let alert_zones = &page[page.find("id=\"alert-zones\"").unwrap()..];
    let terminals = section(
        alert_zones,
        "<tr data-zone=\"\"><td class=\"text\">Unassigned terminals</td>",
    );
    assert!(
        terminals.contains(
            ">1</td><td data-field=\"acknowledged\">0</td><td>–</td><td>1</td><td>1 h 00 min</td>"
        ),
        "{terminals}"
    );
    for (hour, n) in [("1", 1), ("10", 1), ("12", 1)] {
        let row = section(&page, &format!("<tr data-hour=\"{hour}\">"));
        assert_eq!(
            field(row, "alerts"),
            n.to_string(),
            "alerts raised at {hour}:00"
        );
    }
    assert!(
        !page.contains("<tr data-hour=\"9\">"),
        "hours are London's, not UTC"
    );
    let t2 = section(&page, "<tr data-terminal=\"t2\">");
    assert!(t2.contains("offline") && t2.contains("-80 dBm"), "{t2}");

    // Side by side: the same figures as the ranking.
    let compare = web.get(&format!(
        "/compare?{QUERY}&sites=london,ny&zones=london:food"
    ));
    let presses = section(&compare, "<tr data-field=\"presses\">");
    let ny = json["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == "ny")
        .unwrap();
    assert!(
        presses.contains(&format!(
            "<td>{}</td><td>{}</td>",
            london["presses"], ny["presses"]
        )),
        "{presses}"
    );

    // Downloads: the report's CSV is fleet's, byte for byte; the trend's
    // week of the period holds the period's presses.
    assert_eq!(
        web.get(&format!("/report.csv?{QUERY}")),
        report(&pg, "--csv")
    );
    let trend = web.get(&format!("/sites/london/trend.csv?{QUERY}"));
    let mut rows = csv::Reader::from_reader(trend.as_bytes());
    let weeks: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(weeks.len(), 52);
    let last = weeks.last().unwrap();
    assert_eq!(&last[1], "2026-10-19");
    assert_eq!(last[2], london["presses"].to_string());
    assert_eq!(&last[3], &as_page(&london["happy_index"], false));
    assert_eq!(
        web.get(&format!("/sites/london/trend.csv?{QUERY}&source=presses")),
        trend,
        "the year's weeks from every press"
    );
    let zones_csv = web.get(&format!("/sites/london/zones.csv?{QUERY}"));
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(zones_csv.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    let london_zones: Vec<&Value> = json["zones"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|z| z["site"] == "london")
        .collect();
    assert_eq!(rows.len(), london_zones.len());
    for (row, z) in rows.iter().zip(&london_zones) {
        assert_eq!(&row[1], z["zone"].as_str().unwrap());
        assert_eq!(&row[2], z["name"].as_str().unwrap());
        assert_eq!(row[3], z["presses"].to_string());
        assert_eq!(row[4], as_page(&z["happy_index"], false));
    }
    let hours_csv = web.get(&format!("/sites/london/hours.csv?{QUERY}"));
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(hours_csv.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), cells.len());
    for (row, c) in rows.iter().zip(cells) {
        assert_eq!(&row[1], c["weekday"].as_str().unwrap());
        assert_eq!(row[2], c["hour"].to_string());
        assert_eq!(row[3], c["presses"].to_string());
        assert_eq!(row[4], as_page(&c["happy_index"], false));
    }
    let compared = web.get(&format!(
        "/compare.csv?{QUERY}&sites=london,ny&zones=london:food"
    ));
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(compared.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[0][1], "london");
    assert_eq!(rows[0][4], london["presses"].to_string());
    let alerts = web.get(&format!("/sites/london/alerts.csv?{QUERY}"));
    assert!(
        alerts.contains("london,zone,food,2,2,210,1,600"),
        "{alerts}"
    );
    let terminals = web.get("/sites/london/terminals.csv");
    assert!(
        terminals.contains("london,t2,false,2026-10-25T23:40:00Z,0.3.1,,-80"),
        "{terminals}"
    );

    // A site nobody has heard of is a 404 page, a wrong filter a 400 that
    // says what is wrong.
    let get = |path: &str| -> (u16, String) {
        match ureq::get(&format!("{}{path}", web.url()))
            .set("Authorization", &format!("Bearer {}", web.token))
            .call()
        {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("GET {path}: {e}"),
        }
    };
    assert_eq!(get("/sites/atlantis").0, 404);
    let (code, body) = get("/?to=25/10/2026");
    assert_eq!(code, 400);
    assert!(body.contains("YYYY-MM-DD"), "{body}");
}

#[test]
fn only_a_viewer_gets_in_and_a_removed_one_no_longer_does() {
    let (pg, web) = fixture();
    let url = web.url();
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    // No token: a script gets 401, a browser the sign-in form.
    match agent.get(&format!("{url}/report.csv")).call() {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("no token: {other:?}"),
    }
    let browser = agent
        .get(&format!("{url}/sites/london?days=7"))
        .set("Accept", "text/html")
        .call()
        .unwrap();
    assert_eq!(browser.status(), 303);
    assert_eq!(
        browser.header("Location"),
        Some("/login?next=%2Fsites%2Flondon%3Fdays%3D7")
    );
    // A wrong token, or the database's password, is not a viewer's.
    for wrong in ["plv_0000", "postgres", ""] {
        match agent
            .get(&format!("{url}/"))
            .set("Authorization", &format!("Bearer {wrong}"))
            .call()
        {
            Err(ureq::Error::Status(401, _)) => {}
            other => panic!("token {wrong:?}: {other:?}"),
        }
    }
    // Signing in sets an HttpOnly cookie that opens the pages.
    let signed_in = agent
        .post(&format!("{url}/login"))
        .send_form(&[("token", &web.token), ("next", "/compare")])
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.header("Location"), Some("/compare"));
    let cookie = signed_in.header("Set-Cookie").unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let page = agent
        .get(&format!("{url}/compare"))
        .set("Cookie", pair)
        .call()
        .unwrap();
    assert_eq!(page.status(), 200);
    // Nothing can be changed through the web view, whoever asks.
    match agent
        .post(&format!("{url}/"))
        .set("Authorization", &format!("Bearer {}", web.token))
        .call()
    {
        Err(ureq::Error::Status(405, _)) => {}
        other => panic!("POST /: {other:?}"),
    }
    // A viewer removed is out at once, cookie and bearer alike.
    central::database_command(&pg.url(), &["viewers", "remove", "area-managers"]);
    match agent
        .get(&format!("{url}/compare"))
        .set("Cookie", pair)
        .call()
    {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("removed viewer's cookie: {other:?}"),
    }
    // Refused sign-ins are logged once a minute at most: 200 attempts
    // cannot flood the log (checked by the count of refusals answered).
    for _ in 0..200 {
        match agent
            .post(&format!("{url}/login"))
            .send_form(&[("token", "plv_guess")])
        {
            Err(ureq::Error::Status(401, _)) => {}
            other => panic!("guess: {other:?}"),
        }
    }
}

#[test]
fn each_page_reads_on_a_desktop_and_a_phone_in_a_real_browser() {
    let (_pg, web) = fixture();
    let url = web.url();
    let artifacts = bin("gateway").parent().unwrap().to_path_buf();
    // Signing in as a person does: the form, then the page asked for.
    let mut browser = Browser::open(&format!(
        "{url}/login?next=%2F%3F{}",
        QUERY.replace('&', "%26").replace('=', "%3D")
    ));
    browser.watch_console();
    browser.wait_for(
        "the sign-in form",
        "document.readyState === 'complete' && !!document.querySelector('input[name=token]')",
    );
    browser.check_widths("central-login", &artifacts);
    let token = serde_json::to_string(&web.token).unwrap();
    browser.eval(&format!(
        "document.querySelector('input[name=token]').value = {token}; \
         document.querySelector('form[action=\"/login\"]').submit(); true"
    ));
    browser.wait_for(
        "the overview after signing in",
        "location.pathname === '/' && document.readyState === 'complete' && !!document.getElementById('ranking')",
    );
    browser.check_widths("central-overview", &artifacts);
    let ranked = browser.eval("document.querySelectorAll('#ranking tbody tr').length");
    assert_eq!(ranked, 3);
    for (name, path) in [
        ("central-site", format!("/sites/london?{QUERY}")),
        (
            "central-compare",
            format!("/compare?{QUERY}&sites=london,ny,nowhere&zones=london:food"),
        ),
    ] {
        browser.navigate(&format!("{url}{path}"));
        browser.check_widths(name, &artifacts);
    }
    // The charts are drawn: a line of the year's weeks and the heat map.
    browser.navigate(&format!("{url}/sites/london?{QUERY}"));
    assert_eq!(
        browser.eval("document.querySelectorAll('svg.chart').length"),
        2
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('svg.chart path').length"),
        1
    );
}

#[test]
fn the_pages_are_served_over_https_when_given_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    central::database_command(&pg.url(), &["migrate"]);
    pg.psql(central::REPORT_FIXTURE);
    let ca = common::pki::Ca::new(dir.path(), "reports-ca");
    let issued = ca.server("reports", &["127.0.0.1"], common::pki::Validity::Current);
    let web = WebView::start_with(&pg.url(), Some((&issued, &ca.cert_file)));
    assert!(web.url().starts_with("https://"));
    let page = web.get(&format!("/?{QUERY}"));
    assert!(page.contains("id=\"ranking\""), "{page}");
    // The sign-in cookie is Secure: it never crosses plain HTTP.
    let signed_in = ureq::AgentBuilder::new()
        .redirects(0)
        .tls_config(std::sync::Arc::new({
            use rustls::pki_types::{pem::PemObject, CertificateDer};
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&ca.cert_file).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }))
        .build()
        .post(&format!("{}/login", web.url()))
        .send_form(&[("token", &web.token)])
        .unwrap();
    let cookie = signed_in.header("Set-Cookie").unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    // Plain HTTP to the HTTPS port gets no page.
    assert!(ureq::get(&format!("http://127.0.0.1:{}/healthz", web.port))
        .call()
        .is_err());
    // A key every user can read is refused, with the fix.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&issued.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(bin("pressline-central"))
        .args([
            "web",
            "--postgres",
            &pg.url(),
            "--http",
            "127.0.0.1:0",
            "--tls-cert",
        ])
        .arg(&issued.cert)
        .arg("--tls-key")
        .arg(&issued.key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}

/// The README's screenshots, from `scripts/report-demo.sql`: run with
/// `cargo test -p pressline-e2e --test central_web -- --ignored readme`
/// (after `cargo build --workspace --bins`); they are written to
/// `docs/screenshots/`.
#[test]
#[ignore = "writes the README's screenshots"]
fn readme_screenshots() {
    let pg = Postgres::start();
    central::database_command(&pg.url(), &["migrate"]);
    pg.psql(include_str!("../../scripts/report-demo.sql"));
    let web = WebView::start(&pg.url());
    let url = web.url();
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    let mut browser = Browser::open(&format!("{url}/login"));
    browser.wait_for(
        "the sign-in form",
        "!!document.querySelector('input[name=token]')",
    );
    let token = serde_json::to_string(&web.token).unwrap();
    browser.eval(&format!(
        "document.querySelector('input[name=token]').value = {token}; \
         document.querySelector('form[action=\"/login\"]').submit(); true"
    ));
    browser.wait_for(
        "signed in",
        "location.pathname === '/' && document.readyState === 'complete'",
    );
    let q = "to=2026-12-06&days=7&weeks=8";
    for (name, path, width) in [
        ("central-overview", format!("/?{q}"), 1280),
        ("central-site", format!("/sites/arena?{q}"), 1280),
        ("central-site-phone", format!("/sites/arena?{q}"), 390),
        (
            "central-compare",
            format!("/compare?{q}&sites=arena,station,museum&zones=arena:food,arena:toilets"),
            1280,
        ),
    ] {
        browser.set_width(width, width < 600);
        browser.navigate(&format!("{url}{path}"));
        browser.screenshot(&docs.join(format!("{name}.png")));
    }
}
