//! Transport security, end to end: a gateway forwarding to a real Mosquitto
//! over mutual TLS, certificate mistakes named clearly with nothing lost,
//! terminals over TLS, the API over HTTPS with `fleet` trusting a private
//! CA, and secrets on disk kept private.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::pki::{Ca, Validity};
use common::*;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Upstream options for the gateway: `mqtts://` plus CA and client cert.
fn upstream_args(url: String, ca: &std::path::Path, client: Option<&pki::Issued>) -> Vec<String> {
    let mut args = vec![
        "--upstream".to_string(),
        url,
        "--upstream-ca".to_string(),
        ca.display().to_string(),
    ];
    if let Some(c) = client {
        args.extend([
            "--upstream-cert".to_string(),
            c.cert.display().to_string(),
            "--upstream-key".to_string(),
            c.key.display().to_string(),
        ]);
    }
    args
}

fn upstream_error(gateway: &Gateway) -> String {
    gateway.stats()["upstream_error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until the gateway reports an upstream error containing `needle`.
fn wait_for_upstream_error(gateway: &Gateway, needle: &str) -> String {
    let mut last = String::new();
    wait_until(&format!("upstream error mentioning {needle:?}"), || {
        last = upstream_error(gateway);
        last.contains(needle)
    });
    eprintln!("upstream_error: {last}");
    last
}

#[test]
fn presses_reach_a_mosquitto_that_requires_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(&dir.path().join("pki"), "central");
    // The ACL of deploy/mosquitto-central.acl: a gateway, named by its
    // certificate's common name, may write only its own site's topics.
    let acl = dir.path().join("central.acl");
    std::fs::write(
        &acl,
        "topic read pressline/v1/#\npattern write pressline/v1/%u/#\n",
    )
    .unwrap();
    let mosquitto = Mosquitto::start_with(
        dir.path(),
        Some(MosquittoTls {
            ca_file: ca.cert_file.clone(),
            server: ca.server("broker", &["localhost", "127.0.0.1"], Validity::Current),
            require_certificate: true,
            acl_file: Some(acl),
            password_file: None,
        }),
    );
    let consumer = Consumer::start(mosquitto.port, "analytics-tls");
    // Common name = site id.
    let client = ca.client("arena", Validity::Current);
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "arena".into(),
            args: upstream_args(mosquitto.tls_url("localhost"), &ca.cert_file, Some(&client)),
            ..Default::default()
        },
    );
    Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "4",
            "--presses",
            "50",
            "--rate",
            "0",
            "--id-prefix",
            "t",
        ],
    )
    .expect_all_acked();
    let expected = expected_ids("arena", "t", 4, 50, 0);
    wait_until("every press upstream over mutual TLS", || {
        consumer.ids() == expected
    });
    let stats = gateway.stats();
    assert_eq!(stats["upstream_connected"], true, "{stats}");
    assert_eq!(stats["upstream_error"], serde_json::Value::Null, "{stats}");
    assert!(
        gateway
            .log()
            .contains("mutual TLS with a client certificate"),
        "{}",
        gateway.log()
    );
}

#[test]
fn a_username_and_password_over_tls_and_the_system_roots_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(&dir.path().join("pki"), "central");
    let passwords = dir.path().join("central.passwd");
    let made = std::process::Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwords)
        .args(["depot", "correct horse battery staple"])
        .status()
        .expect("mosquitto_passwd is installed with mosquitto");
    assert!(made.success());
    let mosquitto = Mosquitto::start_with(
        dir.path(),
        Some(MosquittoTls {
            ca_file: ca.cert_file.clone(),
            server: ca.server("broker", &["localhost"], Validity::Current),
            require_certificate: false,
            acl_file: None,
            password_file: Some(passwords),
        }),
    );
    let consumer = Consumer::start(mosquitto.port, "analytics-password");
    let password_file = dir.path().join("upstream-password");
    pki::write_private_key(&password_file, "wrong password\n");
    // No upstream.ca_file: the system's roots, which here hold the test CA
    // (SSL_CERT_FILE points the system-roots loader at it, as a machine
    // with the CA installed in /etc/ssl/certs would).
    let config = |password_file: &std::path::Path| GatewayOptions {
        site: "depot".into(),
        config_toml: Some(format!(
            "[upstream]\nurl = \"{}\"\nusername = \"depot\"\npassword_file = \"{}\"\n",
            mosquitto.tls_url("localhost"),
            password_file.display()
        )),
        env: vec![("SSL_CERT_FILE".into(), ca.cert_file.display().to_string())],
        ..Default::default()
    };
    let mut gateway = Gateway::start(dir.path(), config(&password_file));
    Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "2",
            "--presses",
            "25",
            "--rate",
            "0",
            "--id-prefix",
            "d",
        ],
    )
    .expect_all_acked();
    let error = wait_for_upstream_error(&gateway, "refused the login");
    assert!(error.contains("upstream.password_file"), "{error}");
    let secret = "correct horse battery staple";
    pki::write_private_key(&password_file, &format!("{secret}\n"));
    gateway.restart_with(config(&password_file));
    let expected = expected_ids("depot", "d", 2, 25, 0);
    wait_until("every press upstream with the right password", || {
        consumer.ids() == expected
    });
    assert!(
        !gateway.log().contains(secret),
        "the password is never logged"
    );
}

#[test]
fn certificate_mistakes_are_named_and_nothing_is_lost_until_they_are_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(&dir.path().join("pki"), "central");
    let stranger = Ca::new(&dir.path().join("pki"), "stranger");
    let mut mosquitto = Mosquitto::start_with(
        dir.path(),
        Some(MosquittoTls {
            ca_file: ca.cert_file.clone(),
            server: ca.server("broker", &["localhost"], Validity::Current),
            require_certificate: true,
            acl_file: None,
            password_file: None,
        }),
    );
    let consumer = Consumer::start(mosquitto.port, "analytics-mistakes");
    let good_client = ca.client("gateway-mall", Validity::Current);
    let options = |args: Vec<String>| GatewayOptions {
        site: "mall".into(),
        args,
        ..Default::default()
    };

    // 1. The broker's certificate comes from a CA the gateway was not told
    //    to trust. Presses are still acked and kept.
    let mut gateway = Gateway::start(
        dir.path(),
        options(upstream_args(
            mosquitto.tls_url("localhost"),
            &stranger.cert_file,
            Some(&good_client),
        )),
    );
    Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "3",
            "--presses",
            "40",
            "--rate",
            "0",
            "--id-prefix",
            "a",
        ],
    )
    .expect_all_acked();
    let error = wait_for_upstream_error(&gateway, "not signed by a trusted CA");
    assert!(error.contains("--upstream-ca"), "{error}");
    assert!(gateway.log().contains("not signed by a trusted CA"));
    assert_eq!(gateway.stat("forward_pending"), 120);
    // An engineer sees it from anywhere with `fleet status`.
    let sites = dir.path().join("sites.toml");
    add_site(&sites, "mall", &gateway);
    let (_, _, err) = fleet(&sites, &["status"]);
    assert!(
        err.contains("site mall: upstream down") && err.contains("not signed by a trusted CA"),
        "{err}"
    );

    // 2. Right CA, but no client certificate: the broker demands one.
    gateway.restart_with(options(upstream_args(
        mosquitto.tls_url("localhost"),
        &ca.cert_file,
        None,
    )));
    let error = wait_for_upstream_error(&gateway, "client certificate");
    assert!(error.contains("--upstream-cert"), "{error}");

    // 3. The right certificates, but an address the broker's certificate is
    //    not issued for.
    gateway.restart_with(options(upstream_args(
        mosquitto.tls_url("127.0.0.1"),
        &ca.cert_file,
        Some(&good_client),
    )));
    wait_for_upstream_error(&gateway, "not valid for that host name");

    // 4. Both certificates have expired: the broker's (seen first) and the
    //    gateway's own (named at start-up). Presses keep being acked.
    let renewable = ca.client("gateway-mall", Validity::Expired);
    let broker_tls = |server| MosquittoTls {
        ca_file: ca.cert_file.clone(),
        server,
        require_certificate: true,
        acl_file: None,
        password_file: None,
    };
    mosquitto.tls = Some(broker_tls(ca.server(
        "broker-2020",
        &["localhost"],
        Validity::Expired,
    )));
    mosquitto.restart();
    gateway.restart_with(options(upstream_args(
        mosquitto.tls_url("localhost"),
        &ca.cert_file,
        Some(&renewable),
    )));
    wait_for_upstream_error(&gateway, "has expired");
    let log = gateway.log();
    assert!(
        log.contains(&format!(
            "the upstream client certificate {} expired on",
            renewable.cert.display()
        )),
        "{log}"
    );
    Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "2",
            "--presses",
            "30",
            "--rate",
            "0",
            "--id-prefix",
            "b",
        ],
    )
    .expect_all_acked();
    assert_eq!(gateway.stat("forward_pending"), 180);
    assert_eq!(
        consumer.ids().len(),
        0,
        "nothing got through a bad certificate"
    );

    // 5. The broker's certificate is renewed: now the broker refuses the
    //    gateway's expired one.
    mosquitto.tls = Some(broker_tls(ca.server(
        "broker-renewed",
        &["localhost"],
        Validity::Current,
    )));
    mosquitto.restart();
    let error = wait_for_upstream_error(&gateway, "refused our client certificate");
    assert!(error.contains("expired"), "{error}");

    // 6. The gateway's certificate is renewed in place (as a renewal job
    //    does): picked up at the next attempt, no restart. Everything kept
    //    is delivered.
    let renewed = ca.client("gateway-mall", Validity::Current);
    assert_eq!(renewed.cert, renewable.cert);
    let mut expected = expected_ids("mall", "a", 3, 40, 0);
    expected.extend(expected_ids("mall", "b", 2, 30, 0));
    wait_until("every kept press upstream once TLS is right", || {
        consumer.ids() == expected
    });
    wait_until("outbox empty", || gateway.stat("forward_pending") == 0);
    assert_eq!(gateway.stats()["upstream_error"], serde_json::Value::Null);
    assert_eq!(gateway.stat("presses_stored"), 180);
}

#[test]
fn terminals_can_be_required_to_use_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(&dir.path().join("pki"), "site");
    let listener = ca.server("terminals", &["localhost", "127.0.0.1"], Validity::Current);
    let tls_port = free_port();
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "airport".into(),
            config_toml: Some(format!(
                "[mqtt]\ntls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\ntls_only = true\n",
                listener.cert.display(),
                listener.key.display()
            )),
            ..Default::default()
        },
    );
    let report = Sim::spawn(
        &format!("localhost:{tls_port}"),
        &[
            "--tls-ca",
            ca.cert_file.to_str().unwrap(),
            "--terminals",
            "5",
            "--presses",
            "40",
            "--rate",
            "0",
            "--id-prefix",
            "gate",
        ],
    )
    .expect_all_acked();
    assert_eq!(report["acked"], 200);
    assert_eq!(gateway.stat("presses_stored"), 200);
    // TLS only: the plain listener is not open.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", gateway.mqtt_port)).is_err(),
        "plain MQTT must be closed with mqtt.tls_only"
    );
    assert!(gateway.log().contains("terminals over TLS: mqtts://"));
}

#[test]
fn fleet_reaches_an_https_gateway_through_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(&dir.path().join("pki"), "ops");
    let http = ca.server(
        "gateway-http",
        &["localhost", "127.0.0.1"],
        Validity::Current,
    );
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "museum".into(),
            config_toml: Some(format!(
                "[http]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                http.cert.display(),
                http.key.display()
            )),
            https_ca: Some(ca.cert_file.clone()),
            ..Default::default()
        },
    );
    assert!(gateway.url().starts_with("https://"));
    // The generated token and the data directory are owner-only.
    assert_eq!(mode(&gateway.data_dir.join("api-token")), 0o600);
    assert_eq!(mode(&gateway.data_dir), 0o700);
    // Plain HTTP to the HTTPS port gets nowhere, and nothing is served.
    assert!(
        ureq::get(&format!("http://127.0.0.1:{}/healthz", gateway.http_port))
            .timeout(std::time::Duration::from_secs(5))
            .call()
            .is_err()
    );

    let config = dir.path().join("sites.toml");
    let token = gateway.data_dir.join("api-token");
    let add = |ca_file: Option<&std::path::Path>| {
        let mut args = vec![
            "site".to_string(),
            "add".into(),
            "museum".into(),
            "--url".into(),
            gateway.url(),
            "--token-file".into(),
            token.display().to_string(),
        ];
        if let Some(ca) = ca_file {
            args.extend(["--ca".to_string(), ca.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = fleet(&config, &args);
        assert_eq!(code, 0, "{out}{err}");
    };

    // Without the CA: a clear certificate error and the command to fix it.
    add(None);
    let (code, out, err) = fleet(&config, &["status", "--site", "museum"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("not signed by a public CA") && err.contains("--ca CA.pem"),
        "{err}"
    );

    // With the CA: it works, and the token never shows.
    add(Some(&ca.cert_file));
    let (code, out, err) = fleet(&config, &["status", "--site", "museum", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("museum"), "{out}");
    let secret = gateway.token();
    assert!(!out.contains(&secret) && !err.contains(&secret));
    let (_, list, _) = fleet(&config, &["site", "list", "--json"]);
    assert!(!list.contains(&secret), "{list}");
    assert!(
        !gateway.log().contains(&secret),
        "the token is never logged"
    );
    assert_eq!(mode(&config), 0o600);
}

#[test]
fn world_readable_keys_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(&dir.path().join("pki"), "central");
    let client = ca.client("gateway-careless", Validity::Current);
    std::fs::set_permissions(&client.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = Gateway::start_refused(
        dir.path(),
        GatewayOptions {
            site: "careless".into(),
            args: upstream_args(
                "mqtts://localhost:8883".into(),
                &ca.cert_file,
                Some(&client),
            ),
            ..Default::default()
        },
    );
    assert!(refused.contains("exit status: 2"), "{refused}");
    assert!(
        refused.contains("readable by every user")
            && refused.contains(&format!("chmod 600 {}", client.key.display())),
        "{refused}"
    );
}

/// Runs `openssl` in `dir`, as an operator following a guide would.
fn openssl(dir: &std::path::Path, args: &str) {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("openssl {args}"))
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The X.509 version line of a certificate, as `openssl x509 -text` shows it.
fn x509_version(cert: &std::path::Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| l.trim_start().starts_with("Version:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn x509_v1_certificates_from_mosquittos_guide_are_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    // Mosquitto's TLS guide: a CA from `req -x509`, then certificates signed
    // with `openssl x509 -req` and no extensions. OpenSSL 3.0 (Debian 12)
    // makes those X.509 v1.
    openssl(&pki, "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=guide-ca -keyout ca.key -out ca.crt");
    for name in ["server", "client"] {
        let cn = if name == "server" {
            "localhost"
        } else {
            "gw-guide"
        };
        openssl(&pki, &format!("req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN={cn} -keyout {name}.key -out {name}.csr"));
        openssl(&pki, &format!("x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out {name}.crt"));
        std::fs::set_permissions(
            pki.join(format!("{name}.key")),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let v1_client = pki::Issued {
        cert: pki.join("client.crt"),
        key: pki.join("client.key"),
    };
    let guide_version = x509_version(&v1_client.cert);

    // deploy/README.md's recipe (with -extfile) makes v3 on the same OpenSSL.
    openssl(&pki, "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=gw-readme -keyout readme.key -out readme.csr");
    openssl(&pki, "x509 -req -in readme.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile <(printf \"basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth\") -out readme.crt");
    assert!(x509_version(&pki.join("readme.crt")).starts_with("Version: 3"));

    if guide_version.starts_with("Version: 1") {
        // 1. A v1 client certificate: refused at start, named, with the fix.
        let refused = Gateway::start_refused(
            dir.path(),
            GatewayOptions {
                site: "guide".into(),
                args: upstream_args(
                    "mqtts://localhost:8883".into(),
                    &pki.join("ca.crt"),
                    Some(&v1_client),
                ),
                ..Default::default()
            },
        );
        assert!(refused.contains("exit status: 2"), "{refused}");
        assert!(
            refused.contains("X.509 v1")
                && refused.contains("-extfile")
                && refused.contains("client.crt"),
            "{refused}"
        );
        assert!(!refused.contains("does not match"), "{refused}");
    } else {
        eprintln!("this OpenSSL issues {guide_version} without -extfile; the v1 client case needs OpenSSL 3.0");
    }

    // 2. A broker (real Mosquitto) serving a v1 certificate: the gateway's
    //    upstream error says so and how to fix it; presses are kept.
    let server = pki::Issued {
        cert: pki.join("server.crt"),
        key: pki.join("server.key"),
    };
    let server_is_v1 = x509_version(&server.cert).starts_with("Version: 1");
    let mosquitto = Mosquitto::start_with(
        dir.path(),
        Some(MosquittoTls {
            ca_file: pki.join("ca.crt"),
            server,
            require_certificate: false,
            acl_file: None,
            password_file: None,
        }),
    );
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "guide".into(),
            args: upstream_args(mosquitto.tls_url("localhost"), &pki.join("ca.crt"), None),
            ..Default::default()
        },
    );
    Sim::spawn(
        &gateway.broker(),
        &["--terminals", "1", "--presses", "5", "--rate", "0"],
    )
    .expect_all_acked();
    if server_is_v1 {
        let error = wait_for_upstream_error(&gateway, "X.509 v1");
        assert!(error.contains("-extfile"), "{error}");
        assert_eq!(gateway.stat("forward_pending"), 5);
    }
}
