//! The central side on a clustered engine: gateways forwarding to a real
//! three-node RabbitMQ cluster (Debian's `rabbitmq-server` with its MQTT
//! plugin, started by `deploy/rabbitmq-cluster.sh`), `pressline-central`
//! consumers putting everything into a real PostgreSQL exactly once.

mod common;

use std::collections::BTreeSet;

use common::central::{self, Central};
use common::pg_server::Postgres;
use common::rabbitmq::RabbitCluster;
use common::*;

/// Every press id in the table, and the row count (equal when each is
/// there once: the primary key says so, the count double-checks).
fn stored_ids(pg: &Postgres) -> (BTreeSet<String>, usize) {
    let mut client = pg.client();
    let rows = client.query("SELECT id FROM presses", &[]).unwrap();
    let ids = relative_boots(rows.iter().map(|r| r.get::<_, String>(0)));
    (ids, rows.len())
}

fn press_count(pg: &Postgres) -> i64 {
    // The schema appears with the first consumer's migration.
    match pg.client().query_one("SELECT count(*) FROM presses", &[]) {
        Ok(row) => row.get(0),
        Err(_) => 0,
    }
}

fn sim(gateway: &Gateway, prefix: &str, terminals: usize, presses: u32, rate: u32) -> Sim {
    Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            &terminals.to_string(),
            "--presses",
            &presses.to_string(),
            "--rate",
            &rate.to_string(),
            "--id-prefix",
            prefix,
        ],
    )
}

/// A gateway of `site` forwarding to the cluster's first node, connected.
fn gateway_upstream(dir: &std::path::Path, site: &str, cluster: &RabbitCluster) -> Gateway {
    let gateway = Gateway::start(
        dir,
        GatewayOptions {
            site: site.into(),
            upstream: Some(cluster.url(1)),
            ..Default::default()
        },
    );
    wait_until("the gateway upstream", || {
        gateway.stats()["upstream_connected"] == true
    });
    gateway
}

#[test]
fn two_gateways_through_the_cluster_reach_postgresql_exactly_once_though_a_consumer_dies() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RabbitCluster::start(dir.path());
    let pg = Postgres::start();
    let amqp = |order: [usize; 3]| order.map(|i| cluster.amqp_url(i)).to_vec();
    central::declare(&amqp([3, 1, 2]));
    // Batches that wait a while to fill, so the kill below lands while a
    // consumer holds unacknowledged deliveries.
    let slow_batches = ["--batch", "400", "--batch-wait-ms", "400"];
    let mut first = Central::start(&amqp([1, 2, 3]), &pg.url(), &slow_batches);
    let second = Central::start(&amqp([2, 3, 1]), &pg.url(), &slow_batches);

    // North sends presses in batch messages, south one message a press:
    // the consumers take both.
    let north_config = "site = \"north\"\n[upstream]\npress_batch = 25\n\
        [scores]\ntime_zone = \"Europe/London\"\n\
        [zones.food]\nname = \"Food court\"\nterminals = [\"nq000\", \"nq001\"]\n";
    let north = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "north".into(),
            upstream: Some(format!(
                "{},{},{}",
                cluster.url(1),
                cluster.url(2),
                cluster.url(3)
            )),
            config_toml: Some(north_config.into()),
            ..Default::default()
        },
    );
    let south = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "south".into(),
            upstream: Some(format!(
                "{},{},{}",
                cluster.url(2),
                cluster.url(3),
                cluster.url(1)
            )),
            ..Default::default()
        },
    );
    for g in [&north, &south] {
        wait_until("both gateways upstream", || {
            g.stats()["upstream_connected"] == true
        });
    }

    let sims = [
        sim(&north, "nq", 4, 200, 100),
        sim(&south, "sq", 4, 200, 100),
    ];
    wait_until("the first presses in PostgreSQL", || {
        press_count(&pg) >= 200
    });
    // Mid-batch: it has committed some, holds more unacknowledged.
    first.kill9();
    let replacement = Central::start(&amqp([1, 2, 3]), &pg.url(), &[]);

    let mut acked = BTreeSet::new();
    for s in sims {
        s.expect_all_acked();
    }
    acked.extend(expected_ids("north", "nq", 4, 200, 0));
    acked.extend(expected_ids("south", "sq", 4, 200, 0));
    wait_until("every acked press in PostgreSQL", || {
        press_count(&pg) >= acked.len() as i64
    });
    let (ids, rows) = stored_ids(&pg);
    assert_eq!(
        ids, acked,
        "the stored ids are exactly the presses terminals had acked"
    );
    assert_eq!(rows, acked.len(), "each press once");

    // The columns analysts read.
    let row = pg.psql(
        "SELECT site, terminal, zone, score BETWEEN 1 AND 4, received_at IS NOT NULL \
         FROM presses WHERE terminal = 'nq000' AND seq = 7",
    );
    assert_eq!(row, "north|nq000|food|t|t");
    assert_eq!(
        pg.psql("SELECT count(*) FROM presses WHERE site = 'south' AND zone IS NULL"),
        "800"
    );
    wait_until("both sites in the sites table", || {
        pg.psql("SELECT string_agg(site || ':' || coalesce(time_zone, '-'), ',' ORDER BY site) FROM sites")
            == "north:Europe/London,south:-"
    });
    assert_eq!(
        pg.psql("SELECT zone || ':' || name FROM zones WHERE site = 'north'"),
        "food:Food court"
    );

    let redelivered: u64 = [&second, &replacement]
        .iter()
        .map(|c| c.stats()["presses_duplicate"].as_u64().unwrap())
        .sum();
    let metrics = replacement.metrics();
    assert!(
        metrics.contains("pressline_central_presses_inserted_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pressline_central_up{dependency=\"postgres\"} 1"),
        "{metrics}"
    );
    wait_until("the queue drained", || {
        replacement.stats()["queue_messages"] == 0
    });
    eprintln!("presses redelivered after the kill and stored once: {redelivered}");
    // Counted once each, in local hours of each site's zone, whichever
    // reached the database first, the site's status or its presses.
    assert_eq!(pg.psql(HOURS_COUNT_EVERY_PRESS), "t");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fleet.toml");
    let (url, to) = (
        pg.url(),
        pg.psql("SELECT (now() AT TIME ZONE 'UTC')::date + 1"),
    );
    let report = |source: &str| {
        let args = [
            "report",
            "--postgres",
            &url,
            "--to",
            &to,
            "--days",
            "3",
            "--json",
            "--source",
            source,
        ];
        let (code, out, err) = fleet(&config, &args);
        assert_eq!(code, 0, "{err}");
        out
    };
    assert_eq!(report("rollups"), report("presses"));
    // The web view's overview and site pages show what fleet reports of
    // what came through the pipeline.
    let web = central::WebView::start(&url);
    let json: serde_json::Value = serde_json::from_str(&report("rollups")).unwrap();
    central::assert_overview_matches(&web, &json, &format!("to={to}&days=3"));
}

/// Sessions waiting for a lock: consumers' commits behind the test's lock
/// on `presses` (a killed consumer's session waits on: PostgreSQL notices
/// the client is gone only when it next talks to it).
fn commits_waiting_for_the_lock(pg: &Postgres) -> i64 {
    let row = pg
        .client()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
            &[],
        )
        .unwrap();
    row.get(0)
}

#[test]
fn a_consumer_killed_25_times_holding_a_window_drops_nothing_and_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RabbitCluster::start(dir.path());
    let pg = Postgres::start();
    let amqp: Vec<String> = (1..=3).map(|i| cluster.amqp_url(i)).collect();
    // A low limit, so the crash loop passes it: what RabbitMQ 4 does to a
    // queue without a dead-letter target (drop) must not happen here.
    let limit = ["--delivery-limit", "10"];
    let declared = central::command(&amqp, &["declare", limit[0], limit[1]]);
    assert!(
        declared.contains("delivery limit 10, dead letters to pressline.v1.dead"),
        "{declared}"
    );
    // Another limit is refused, not consumed from as it is.
    let other = central::run(&amqp, &["declare"]);
    let said = String::from_utf8_lossy(&other.stderr);
    assert!(
        !other.status.success() && said.contains("give every consumer the --delivery-limit"),
        "{said}"
    );
    let window = [
        "--delivery-limit",
        "10",
        "--prefetch",
        "60",
        "--batch",
        "30",
    ];
    let mut consumer = Central::start(&amqp, &pg.url(), &window);
    let gateway = gateway_upstream(dir.path(), "loop", &cluster);
    wait_until("the schema", || {
        let row = pg
            .client()
            .query_one("SELECT to_regclass('presses') IS NOT NULL", &[]);
        row.is_ok_and(|r| r.get::<_, bool>(0))
    });
    // Every commit waits behind this lock until the test lets go.
    let mut locker = pg.client();
    let mut lock = locker.transaction().unwrap();
    lock.batch_execute("LOCK TABLE presses IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    sim(&gateway, "cl", 4, 50, 200).expect_all_acked();
    wait_until("every press forwarded", || {
        gateway.stats()["forward_pending"] == 0
    });
    for killed in 0..25 {
        wait_until("the consumer holding a window, its commit waiting", || {
            commits_waiting_for_the_lock(&pg) > killed
        });
        consumer.kill9();
        consumer = Central::start(&amqp, &pg.url(), &window);
    }
    // Held through more losses than the limit: dead-lettered, kept.
    wait_until("messages in the dead-letter queue", || {
        consumer.stats()["dead_letter_messages"]
            .as_i64()
            .unwrap_or(0)
            > 0
    });
    assert!(consumer
        .metrics()
        .contains("pressline_central_dead_letter_messages"));
    lock.rollback().unwrap();
    let waiting = central::command(&amqp, &["dead-letters"]);
    assert!(
        waiting.contains(" messages in pressline.v1.dead;"),
        "{waiting}"
    );
    let replayed = central::command(&amqp, &["dead-letters", "--replay"]);
    let moved: u64 = replayed.split(' ').next().unwrap().parse().unwrap();
    assert!(moved > 0, "{replayed}");
    let acked = expected_ids("loop", "cl", 4, 50, 0);
    wait_until("every acked press in PostgreSQL", || {
        press_count(&pg) >= acked.len() as i64
    });
    let (ids, rows) = stored_ids(&pg);
    assert_eq!(ids, acked);
    assert_eq!(rows, acked.len());
    // The rollups counted each press once through the consumer's COPY,
    // its savepoint and its ON CONFLICT path alike.
    assert_eq!(pg.psql(HOURS_COUNT_EVERY_PRESS), "t");
    let empty = central::command(&amqp, &["dead-letters"]);
    assert!(empty.contains("pressline.v1.dead is empty"), "{empty}");
}

#[test]
fn a_queue_declared_by_an_earlier_version_is_consumed_and_the_policy_it_needs_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RabbitCluster::start(dir.path());
    let pg = Postgres::start();
    let amqp: Vec<String> = (1..=3).map(|i| cluster.amqp_url(i)).collect();
    // As versions before the delivery limit declared it: a durable quorum
    // queue with no other argument, holding a press already.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use lapin::options::{QueueBindOptions, QueueDeclareOptions};
        use lapin::types::{AMQPValue, FieldTable};
        let connection = lapin::Connection::connect(
            &cluster.amqp_url(1),
            lapin::ConnectionProperties::default(),
        )
        .await
        .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut quorum = FieldTable::default();
        quorum.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        channel
            .queue_declare(
                "pressline.v1".into(),
                QueueDeclareOptions::durable(),
                quorum,
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                "pressline.v1".into(),
                "amq.topic".into(),
                "pressline.v1.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "declared".into()).await;
    });
    let press = |seq: u32| {
        format!(
            r#"{{"schema":"pressline.press.v1","id":"old:t1:0:{seq}","site":"old","terminal":"t1","boot":0,"seq":{seq},"button":"happy","score":3,"received_at":"2026-11-22T14:03:12.530Z"}}"#
        )
    };
    let publish = |payload: &str| {
        let out = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &cluster.mqtt_ports[0].to_string()])
            .args(["-q", "1", "-t", "pressline/v1/old/t1/press", "-m", payload])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    publish(&press(1));
    let declared = central::command(&amqp, &["declare"]);
    assert!(
        declared.contains("declared by an earlier version"),
        "{declared}"
    );
    // Consumed as it is, with the queue's state in /metrics.
    let consumer = Central::start(&amqp, &pg.url(), &[]);
    publish(&press(2));
    wait_until("both presses stored", || press_count(&pg) == 2);
    assert!(
        consumer
            .metrics()
            .contains("pressline_central_queue_legacy 1"),
        "{}",
        consumer.metrics()
    );
}

#[test]
fn the_primary_killed_and_its_standby_promoted_mid_run_every_acked_press_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RabbitCluster::start(dir.path());
    let primary = Postgres::start();
    let standby = primary.start_standby();
    // Both hosts, as deploy/README.md says: the consumer takes whichever
    // accepts writes.
    let url = format!(
        "postgres://pressline@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let amqp: Vec<String> = (1..=3).map(|i| cluster.amqp_url(i)).collect();
    central::declare(&amqp);
    let consumer = Central::start(&amqp, &url, &["--batch", "100", "--prefetch", "100"]);
    let gateway = gateway_upstream(dir.path(), "fail", &cluster);
    let presses = sim(&gateway, "fo", 4, 250, 100);
    // Read on the standby: what the primary committed is there too.
    wait_until("the first presses on the standby", || {
        press_count(&standby) >= 100
    });
    primary.kill9();
    wait_until("the consumer sees the primary gone", || {
        consumer.stats()["postgres_connected"] == false
    });
    standby.promote();
    presses.expect_all_acked();
    let acked = expected_ids("fail", "fo", 4, 250, 0);
    wait_until("every acked press on the promoted standby", || {
        press_count(&standby) >= acked.len() as i64
    });
    let (ids, rows) = stored_ids(&standby);
    assert_eq!(ids, acked);
    assert_eq!(rows, acked.len());
    assert_eq!(consumer.stats()["postgres_connected"], true);
}

#[test]
fn postgresql_stopped_and_started_mid_run_loses_nothing_and_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RabbitCluster::start(dir.path());
    let pg = Postgres::start();
    let amqp: Vec<String> = (1..=3).map(|i| cluster.amqp_url(i)).collect();
    // A small prefetch: what the consumer cannot commit stays in the queue.
    let consumer = Central::start(&amqp, &pg.url(), &["--batch", "100", "--prefetch", "100"]);
    let gateway = gateway_upstream(dir.path(), "dock", &cluster);
    let presses = sim(&gateway, "pg", 4, 250, 100);
    wait_until("the first presses in PostgreSQL", || {
        press_count(&pg) >= 100
    });
    pg.stop_server();
    wait_until("the consumer sees the database gone", || {
        consumer.stats()["postgres_connected"] == false
    });
    // Healthz tells a supervisor.
    let health = ureq::get(&format!("http://127.0.0.1:{}/healthz", consumer.http_port)).call();
    assert!(
        matches!(health, Err(ureq::Error::Status(503, _))),
        "{health:?}"
    );
    wait_until("the rest waiting in the queue meanwhile", || {
        consumer.stats()["queue_messages"].as_i64().unwrap_or(0) > 0
    });
    pg.start_server();
    presses.expect_all_acked();
    let acked = expected_ids("dock", "pg", 4, 250, 0);
    wait_until("every acked press in PostgreSQL", || {
        press_count(&pg) >= acked.len() as i64
    });
    let (ids, rows) = stored_ids(&pg);
    assert_eq!(ids, acked);
    assert_eq!(rows, acked.len());
    let stats = consumer.stats();
    assert_eq!(stats["postgres_connected"], true, "{stats}");
    assert!(stats["postgres_errors"].as_u64().unwrap() > 0, "{stats}");
}

#[test]
fn a_message_that_cannot_be_read_is_kept_aside_and_the_rest_flow() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RabbitCluster::start(dir.path());
    let pg = Postgres::start();
    let consumer = Central::start(&[cluster.amqp_url(2)], &pg.url(), &[]);
    // Ordinary presses from a real gateway all the while.
    let gateway = gateway_upstream(dir.path(), "real", &cluster);
    let ordinary = sim(&gateway, "rq", 2, 100, 50);
    let broker = format!("127.0.0.1:{}", cluster.mqtt_ports[0]);
    let publish = |topic: &str, payload: &str| {
        let out = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &cluster.mqtt_ports[0].to_string()])
            .args(["-q", "1", "-t", topic, "-m", payload])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mosquitto_pub to {broker}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let good = |seq: u32| {
        format!(
            r#"{{"schema":"pressline.press.v1","id":"x:t1:0:{seq}","site":"x","terminal":"t1","boot":0,"seq":{seq},"button":"happy","score":3,"received_at":"2026-11-22T14:03:12.530Z"}}"#
        )
    };
    publish("pressline/v1/x/t1/press", &good(1));
    publish("pressline/v1/x/t1/press", "not json");
    publish(
        "pressline/v1/x/t1/press",
        &good(2).replace("\"score\":3", "\"score\":9"),
    );
    publish(
        "pressline/v1/x/t1/press",
        &good(3).replace("2026-11-22T14", "2026-13-45T99"),
    );
    // The database refuses this one (PostgreSQL text cannot hold NUL):
    // found by committing its batch one by one.
    publish(
        "pressline/v1/x/t1/press",
        &good(5).replace(
            "\"score\":3",
            "\"score\":3,\"counted\":false,\"not_counted_reason\":\"a\\u0000b\"",
        ),
    );
    // Another site's press id, claimed: the real press would be dropped
    // as a duplicate when it came.
    publish(
        "pressline/v1/x/t1/press",
        &good(7).replace("\"id\":\"x:t1:0:7\"", "\"id\":\"arena:door-1:0:7\""),
    );
    // An id too long for the primary-key index (PostgreSQL would refuse
    // the batch it is in, error 54000), a terminal id longer than the
    // protocol's, and a press on another terminal's key.
    let long_id = format!("x:t1:0:8{}", "0".repeat(3000));
    publish(
        "pressline/v1/x/t1/press",
        &good(8).replace("\"id\":\"x:t1:0:8\"", &format!("\"id\":\"{long_id}\"")),
    );
    let long = "t".repeat(40);
    publish(
        &format!("pressline/v1/x/{long}/press"),
        &good(10).replace("t1", &long),
    );
    publish("pressline/v1/x/t1/press", &good(9).replace("t1", "t2"));
    // A gateway whose clock is years ahead, and one from before the kept
    // history: no partition is made for either.
    pg.psql("UPDATE press_retention SET keep_months = 120");
    publish(
        "pressline/v1/x/t1/press",
        &good(11).replace("2026-11-22T14", "2041-11-22T14"),
    );
    publish(
        "pressline/v1/x/t1/press",
        &good(12).replace("2026-11-22T14", "2001-11-22T14"),
    );
    publish("pressline/v1/x/t1/press", &good(4));
    publish("pressline/v1/x/t1/press", &good(1));
    let site_x = || pg.psql("SELECT count(*) FROM presses WHERE site = 'x'");
    wait_until("the good presses stored", || site_x() == "2");
    ordinary.expect_all_acked();
    wait_until("the gateway's presses stored", || press_count(&pg) == 202);
    wait_until("the bad ones kept with their reasons", || {
        pg.psql("SELECT count(*) FROM rejected_messages") == "10"
    });
    let reasons =
        pg.psql("SELECT string_agg(reason, ' | ' ORDER BY reason) FROM rejected_messages");
    assert!(reasons.contains("not JSON"), "{reasons}");
    assert!(reasons.contains("outside 1-4"), "{reasons}");
    assert!(reasons.contains("not an RFC 3339 time"), "{reasons}");
    assert!(reasons.contains("refused by the database"), "{reasons}");
    assert!(
        reasons.contains("the id of what the press says"),
        "{reasons}"
    );
    assert!(reasons.contains("terminal \"tttt"), "{reasons}");
    assert!(reasons.contains("press of terminal \"t2\""), "{reasons}");
    assert!(reasons.contains("more than a day ahead"), "{reasons}");
    assert!(reasons.contains("before the kept history"), "{reasons}");
    wait_until("counted", || consumer.stats()["messages"]["rejected"] == 10);
    // (At least: the gateway's own resends count too.)
    assert!(consumer.stats()["presses_duplicate"].as_u64() >= Some(1));
    // Each was the document's fault, found without losing the database
    // connection: no reconnects, no backoff.
    assert_eq!(consumer.stats()["postgres_errors"], 0);

    // A press already in the table, again, next to a new one: the batch's
    // COPY meets the primary key and the batch goes in again with
    // ON CONFLICT; the new press is stored, the old one not twice.
    // One connection, one message per line (`-l`): they arrive together.
    let mut pub_lines = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &cluster.mqtt_ports[0].to_string()])
        .args(["-q", "1", "-t", "pressline/v1/x/t1/press", "-l"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = pub_lines.stdin.take().unwrap();
        writeln!(stdin, "{}\n{}", good(1), good(6)).unwrap();
    }
    assert!(pub_lines.wait().unwrap().success(), "mosquitto_pub -l");
    wait_until("the new press stored", || site_x() == "3");
    wait_until("the old one counted as a duplicate", || {
        consumer.stats()["presses_duplicate"].as_u64() >= Some(2)
    });
    assert_eq!(
        pg.psql("SELECT string_agg(seq::text, ',' ORDER BY seq) FROM presses WHERE site = 'x'"),
        "1,4,6"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM presses WHERE site NOT IN ('x', 'real')"),
        "0"
    );
}

#[test]
fn a_rabbitmq_node_killed_under_the_gateway_loses_nothing() {
    // One message a press, and presses in batch messages.
    for press_batch in [1, 20] {
        node_killed_under_the_gateway(press_batch);
    }
}

fn node_killed_under_the_gateway(press_batch: u16) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RabbitCluster::start(dir.path());
    // Analytics on node 3 with a persistent session: a quorum queue, bound
    // before anything is published (RabbitMQ drops what matches no queue).
    let consumer = Consumer::start(cluster.mqtt_ports[2], "analytics-central");
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "dock".into(),
            config_toml: Some(format!("[upstream]\npress_batch = {press_batch}\n")),
            upstream: Some(format!(
                "{},{},{}",
                cluster.url(1),
                cluster.url(2),
                cluster.url(3)
            )),
            ..Default::default()
        },
    );
    wait_until("the gateway on node 1", || {
        gateway.stats()["upstream_connected"] == true
    });
    assert_eq!(gateway.stats()["upstream_broker"], cluster.url(1));

    let sim = Sim::spawn(
        &gateway.broker(),
        &[
            "--terminals",
            "5",
            "--presses",
            "120",
            "--rate",
            "100",
            "--id-prefix",
            "quay",
        ],
    );
    wait_until("some presses through node 1", || {
        consumer.ids().len() >= 100
    });
    // RabbitMQ says "no session present" to a client without
    // subscriptions, and rumqttc then forgets what it had in flight: the
    // outbox, not rumqttc, decides what is sent again.
    cluster.kill9(1);
    sim.expect_all_acked();
    let expected = expected_ids("dock", "quay", 5, 120, 0);
    wait_until("every press at the consumer", || consumer.ids() == expected);
    wait_until("nothing pending", || gateway.stat("forward_pending") == 0);
    let stats = gateway.stats();
    assert_ne!(stats["upstream_broker"], cluster.url(1), "{stats}");
    assert_eq!(stats["upstream_connected"], true, "{stats}");
    assert_eq!(gateway.stat("presses_stored"), 600);
}

#[test]
fn reports_match_figures_worked_out_by_hand_across_a_daylight_saving_change() {
    let pg = Postgres::start();
    migrate(&pg, None);
    pg.psql(central::REPORT_FIXTURE);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fleet.toml");
    let url = pg.url();
    let report = |format: &[&str]| {
        let mut args = vec![
            "report",
            "--postgres",
            &url,
            "--to",
            "2026-10-25",
            "--days",
            "7",
            "--weeks",
            "1",
            "--prior-presses",
            "10",
        ];
        args.extend_from_slice(format);
        let (code, out, err) = fleet(&config, &args);
        assert_eq!(code, 0, "{err}");
        out
    };
    let json: serde_json::Value = serde_json::from_str(&report(&["--json"])).unwrap();
    let site = |name: &str| {
        json["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {json:#}"))
    };
    // London: scores 4, 1, 3, 4, 2, 2 → (3+0+2+3+1+1) / 6 / 3 = 55.6;
    // before: one very happy → 100.
    let london = site("london");
    assert_eq!(london["presses"], 6, "{london:#}");
    assert_eq!(london["happy_index"], 55.6);
    assert_eq!(london["previous_happy_index"], 100.0);
    assert_eq!(london["change"], -44.4);
    assert_eq!(london["time_zone"], "Europe/London");
    // New York: 4 and 3 → 83.3 (N2 is Sunday evening there, Monday in UTC).
    let ny = site("ny");
    assert_eq!(
        (ny["presses"].as_u64(), ny["happy_index"].as_f64()),
        (Some(2), Some(83.3))
    );
    assert_eq!(ny["change"], 83.3);
    // Network: 9 presses, 18 points → 66.7. Shrunk by 10 presses:
    // nowhere (100 + 10·66.67)/11 = 69.7, ny (166.7 + 666.7)/12 = 69.4,
    // london (333.3 + 666.7)/16 = 62.5.
    assert_eq!(json["network"]["happy_index"], 66.7);
    let ranking: Vec<(String, f64)> = json["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["site"].as_str().unwrap().into(),
                s["ranking_index"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ranking,
        [
            ("nowhere".into(), 69.7),
            ("ny".into(), 69.4),
            ("london".into(), 62.5)
        ]
    );
    // Zones: food 4, 1, 2 → 44.4; London's unzoned 3, 4, 2 → 66.7.
    let zone = |site: &str, zone: &str| {
        json["zones"]
            .as_array()
            .unwrap()
            .iter()
            .find(|z| z["site"] == site && z["zone"] == zone)
            .cloned()
            .unwrap()
    };
    assert_eq!(zone("london", "food")["happy_index"], 44.4);
    assert_eq!(zone("london", "food")["name"], "Food court");
    assert_eq!(zone("london", "")["happy_index"], 66.7);
    // Hour × weekday in local time: the hour 01:00 happened twice on
    // 25 October (BST, then GMT) and holds both presses.
    let cells: Vec<(String, u64, f64)> = json["hours"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            let site = s["site"].as_str().unwrap().to_string();
            s["cells"].as_array().unwrap().iter().map(move |c| {
                (
                    format!(
                        "{site} {} {:02}",
                        c["weekday"].as_str().unwrap(),
                        c["hour"].as_u64().unwrap()
                    ),
                    c["presses"].as_u64().unwrap(),
                    c["happy_index"].as_f64().unwrap(),
                )
            })
        })
        .collect();
    assert_eq!(
        cells,
        [
            ("london mon 00".to_string(), 1, 33.3),
            ("london tue 13".to_string(), 1, 33.3),
            ("london sun 00".to_string(), 1, 100.0),
            ("london sun 01".to_string(), 2, 33.3),
            ("london sun 23".to_string(), 1, 100.0),
            ("nowhere thu 10".to_string(), 1, 100.0),
            ("ny mon 23".to_string(), 1, 100.0),
            ("ny sun 23".to_string(), 1, 66.7),
        ]
    );
    // The same figures for spreadsheets, and for people.
    let csv = report(&["--csv"]);
    assert!(
        csv.starts_with("section,rank,site,zone,name,weekday,hour,presses,happy_index"),
        "{csv}"
    );
    assert!(
        csv.contains("\nsite,3,london,,,,,6,55.6,62.5,1,100.0,-44.4\n"),
        "{csv}"
    );
    assert!(csv.contains("\nhour,,london,,,sun,1,2,33.3,,,,\n"), "{csv}");
    let human = report(&[]);
    assert!(
        human.contains("Food court") && human.contains("America/New_York"),
        "{human}"
    );
    // Read from every press instead of the rollups: the same figures.
    let raw: serde_json::Value =
        serde_json::from_str(&report(&["--json", "--source", "presses"])).unwrap();
    assert_eq!(raw, json);
}

/// Whether `press_hours` holds each row of `presses` once.
const HOURS_COUNT_EVERY_PRESS: &str =
    "SELECT (SELECT sum(very_unhappy + unhappy + happy + very_happy) FROM press_hours) \
            = (SELECT count(*) FROM presses)";

/// `pressline-central migrate` (to `version` when given).
fn migrate(pg: &Postgres, version: Option<&str>) -> String {
    match version {
        Some(v) => central_db(pg, &["migrate", "--to-version", v]),
        None => central_db(pg, &["migrate"]),
    }
}

#[test]
fn a_database_of_schema_version_3_moves_to_monthly_partitions_and_local_hours_in_place_and_reports_the_same(
) {
    let pg = Postgres::start();
    migrate(&pg, Some("3"));
    pg.psql(central::REPORT_FIXTURE);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fleet.toml");
    let url = pg.url();
    let report = |source: &str| -> serde_json::Value {
        let args = [
            "report",
            "--postgres",
            &url,
            "--to",
            "2026-10-25",
            "--days",
            "7",
            "--weeks",
            "1",
            "--json",
            "--source",
            source,
        ];
        let (code, out, err) = fleet(&config, &args);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let before = report("presses");
    let applied = migrate(&pg, None);
    assert!(
        applied.contains("V4__monthly_presses_and_local_hours"),
        "{applied}"
    );
    assert_eq!(report("rollups"), before);
    assert_eq!(report("presses"), before);
    assert_eq!(pg.psql(HOURS_COUNT_EVERY_PRESS), "t");
    // The table of version 3 is a partition now, up to the end of the
    // month of its newest press; rows of later months wait in the default
    // partition until their month is made.
    assert_eq!(
        pg.psql("SELECT string_agg(name || ' ' || coalesce(to_at::date::text, '-'), ',') FROM press_partitions"),
        "presses_before_v4 2026-11-01,presses_default -"
    );
    // A press inserted again (a redelivered batch) is counted once.
    let again = "INSERT INTO presses (id, site, terminal, zone, boot, seq, button, score, received_at, counted) \
        SELECT id, site, terminal, zone, boot, seq, button, score, received_at, counted FROM presses p \
        WHERE NOT EXISTS (SELECT 1 FROM press_ids i WHERE i.id = p.id)";
    pg.psql(again);
    // The same press again with another received_at (a gateway that
    // forgot it and stored it again), in another month: refused.
    let twice = pg.client().execute(
        "INSERT INTO presses (id, site, terminal, boot, seq, button, score, received_at, counted) \
         SELECT id, site, terminal, boot, seq, button, score, received_at + interval '40 days', counted \
         FROM presses LIMIT 1",
        &[],
    );
    let refused = twice.expect_err("a press held already is refused");
    assert_eq!(refused.code().map(|c| c.code()), Some("23505"), "{refused}");
    pg.psql(
        "INSERT INTO presses (id, site, terminal, boot, seq, button, score, received_at, counted) \
         VALUES ('ny:late:0:1', 'ny', 'late', 0, 1, 'happy', 3, '2026-10-24T12:00:00Z', true)",
    );
    assert_eq!(pg.psql(HOURS_COUNT_EVERY_PRESS), "t");
    // Presses a moment before and after local midnight and the hour in
    // zones 45 and 30 minutes off the hour (Kathmandu +5:45; Lord Howe
    // +11, +10:30 before its change on 2026-04-05): the same figures.
    pg.psql(
        "INSERT INTO sites (site, time_zone, state, version) VALUES \
           ('ktm', 'Asia/Kathmandu', 'online', '0.1.0'), ('lhi', 'Australia/Lord_Howe', 'online', '0.1.0'); \
         INSERT INTO presses (id, site, terminal, boot, seq, button, score, pressed_at, received_at, counted) VALUES \
           ('ktm:a:0:1', 'ktm', 'a', 0, 1, 'happy', 3, '2026-10-24T18:14:59.999Z', '2026-10-24T18:20:00Z', true), \
           ('ktm:a:0:2', 'ktm', 'a', 0, 2, 'unhappy', 2, '2026-10-24T18:15:00Z', '2026-10-24T18:20:00Z', true), \
           ('ktm:a:0:3', 'ktm', 'a', 0, 3, 'very_happy', 4, NULL, '2026-10-20T09:14:59.999Z', true), \
           ('lhi:a:0:1', 'lhi', 'a', 0, 1, 'very_unhappy', 1, '2026-10-24T12:59:59.999Z', '2026-10-24T13:00:00Z', true), \
           ('lhi:a:0:2', 'lhi', 'a', 0, 2, 'happy', 3, '2026-10-24T13:00:00Z', '2026-10-24T13:00:00Z', true)",
    );
    assert_eq!(report("rollups"), report("presses"));
}

/// `pressline-central` with `args`, against `pg`; its stdout.
fn central_db(pg: &Postgres, args: &[&str]) -> String {
    central::database_command(&pg.url(), args)
}

#[test]
fn months_past_the_retention_are_dropped_and_reports_keep_their_figures() {
    let pg = Postgres::start();
    migrate(&pg, None);
    // 40 presses in each of the last four UTC months, inserted before any
    // month has its partition (they wait in presses_default) and before
    // the site's time zone is known.
    pg.psql(
        "INSERT INTO presses (id, site, terminal, boot, seq, button, score, received_at, counted) \
         SELECT 'far:t' || m || ':0:' || i, 'far', 't' || m, 0, i, \
                (ARRAY['very_unhappy', 'unhappy', 'happy', 'very_happy'])[1 + i % 4], 1 + i % 4, \
                (date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => m)) \
                    AT TIME ZONE 'UTC' + make_interval(hours => i * 4), true \
         FROM generate_series(0, 3) m, generate_series(1, 40) i",
    );
    let month = |m: u32| {
        format!("(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '{m} months') AT TIME ZONE 'UTC'")
    };
    for m in 0..4 {
        pg.psql(&format!("SELECT press_partition_for({})", month(m)));
    }
    // Each month's rows moved to its own partition, counted once.
    assert_eq!(pg.psql("SELECT count(*) FROM presses_default"), "0");
    assert_eq!(
        pg.psql("SELECT string_agg(n::text, ',') FROM (SELECT count(*) n FROM presses GROUP BY tableoid) c"),
        "40,40,40,40"
    );
    assert_eq!(pg.psql(HOURS_COUNT_EVERY_PRESS), "t");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fleet.toml");
    let url = pg.url();
    let today = pg.psql("SELECT (now() AT TIME ZONE 'UTC')::date");
    let report = |source: &str, days: &str| -> serde_json::Value {
        let args = [
            "report",
            "--postgres",
            &url,
            "--to",
            &today,
            "--days",
            days,
            "--weeks",
            "4",
            "--json",
            "--source",
            source,
        ];
        let (code, out, err) = fleet(&config, &args);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    // The site's zone arrives after its presses: their hours are rebuilt
    // in it (Kathmandu, 5:45 ahead of UTC).
    pg.psql(
        "INSERT INTO sites (site, time_zone, state, version) \
         VALUES ('far', 'Asia/Kathmandu', 'online', '0.1.0')",
    );
    assert_eq!(report("rollups", "130"), report("presses", "130"));
    assert_eq!(report("rollups", "130")["network"]["presses"], 160);

    // Keep one whole month before the current one: the two before it go.
    let out = central_db(&pg, &["retention", "--keep-months", "1"]);
    assert_eq!(out.matches("dropped presses_").count(), 2, "{out}");
    assert!(out.contains("presses kept: 1 whole months"), "{out}");
    assert_eq!(pg.psql("SELECT count(*) FROM presses"), "80");
    assert_eq!(pg.psql("SELECT count(*) FROM press_ids"), "80");
    // Their counts stay in press_hours: reports over them keep their
    // figures; read from every press, only the months kept remain.
    assert_eq!(report("rollups", "130")["network"]["presses"], 160);
    assert_eq!(report("presses", "130")["network"]["presses"], 80);
    // A row for a dropped month (from a consumer that knew the month
    // before it went) is refused, not counted again.
    let late = pg.client().execute(
        &format!(
            "INSERT INTO presses (id, site, terminal, boot, seq, button, score, received_at, counted) \
             VALUES ('far:t3:0:1', 'far', 't3', 0, 1, 'happy', 3, {} + interval '1 hour', true)",
            month(3)
        ),
        &[],
    );
    let refused = late.expect_err("a row for a dropped month is refused");
    assert_eq!(refused.code().map(|c| c.code()), Some("22008"), "{refused}");

    // The zone changes after the drop: the hours cannot all be rebuilt,
    // so they keep the zone they were made in (every press still counted
    // once) and presses from now on take the new one.
    pg.psql("UPDATE sites SET time_zone = 'America/New_York' WHERE site = 'far'");
    assert_eq!(
        pg.psql("SELECT sum(very_unhappy + unhappy + happy + very_happy) FROM press_hours"),
        "160"
    );
    assert_eq!(
        report("rollups", "28")["network"],
        report("presses", "28")["network"]
    );
    pg.psql(
        "INSERT INTO presses (id, site, terminal, boot, seq, button, score, received_at, counted) \
         VALUES ('far:new:0:1', 'far', 'new', 0, 1, 'happy', 3, now(), true)",
    );
    assert_eq!(
        pg.psql("SELECT hour = date_trunc('hour', now() AT TIME ZONE 'America/New_York') FROM press_hours WHERE terminal = 'new'"),
        "t"
    );
    // A name the database does not know is not taken.
    pg.psql("UPDATE sites SET time_zone = 'Mars/Olympus_Mons' WHERE site = 'far'");
    assert_eq!(
        pg.psql("SELECT time_zone FROM sites WHERE site = 'far'"),
        "America/New_York"
    );
    let listed = central_db(&pg, &["retention"]);
    assert_eq!(listed.matches("presses_20").count(), 2, "{listed}");
    // Back to keeping everything: what was dropped stays dropped.
    let all = central_db(&pg, &["retention", "--keep-all"]);
    assert!(all.contains("presses kept: all"), "{all}");
    // No partition is made for a month dropped (its presses are counted
    // and their ids gone), one ahead of the database's clock, or a clock
    // reset to 1970.
    for at in [
        month(3),
        "now() + interval '3 years'".to_string(),
        "timestamptz '1970-01-01 00:00:00+00'".to_string(),
    ] {
        let refused = pg.psql(&format!(
            "DO $$ BEGIN PERFORM press_partition_for({at}); RAISE EXCEPTION 'made'; \
             EXCEPTION WHEN datetime_field_overflow THEN RAISE NOTICE 'refused'; END $$; SELECT 'refused'"
        ));
        assert_eq!(refused, "refused");
    }
}

#[test]
fn the_database_can_be_reached_over_tls_signed_by_a_private_ca() {
    use common::pki::{Ca, Validity};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(&dir.path().join("pki"), "db");
    let server = ca.server("db", &["localhost", "127.0.0.1"], Validity::Current);
    let pg = Postgres::start_tls(&server.cert, &server.key);
    let url = format!("{}?sslmode=require", pg.url());
    let migrate = |extra: &[&str], url: &str| {
        std::process::Command::new(bin("pressline-central"))
            .args(["migrate", "--postgres", url])
            .args(extra)
            .output()
            .unwrap()
    };
    // The server accepts TLS only: a plain connection is turned away.
    let plain = migrate(&[], &format!("{}?sslmode=disable", pg.url()));
    assert!(!plain.status.success());
    // Its certificate is not from a public CA: refused until trusted.
    let untrusted = migrate(&[], &url);
    assert!(!untrusted.status.success());
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains("cannot connect to PostgreSQL"), "{err}");
    let ca_file = ca.cert_file.to_str().unwrap();
    let trusted = migrate(&["--postgres-ca", ca_file], &url);
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(String::from_utf8_lossy(&trusted.stdout).contains("applied V1__initial"));
    // fleet report over the same connection.
    let config = dir.path().join("fleet.toml");
    let (code, out, err) = fleet(
        &config,
        &["report", "--postgres", &url, "--postgres-ca", ca_file],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no presses in this period"), "{out}");
    let (code, _, err) = fleet(&config, &["report", "--postgres", &url]);
    assert_ne!(code, 0);
    assert!(err.contains("--postgres-ca"), "{err}");
}

#[test]
fn consumers_reach_the_cluster_over_tls_signed_by_a_private_ca() {
    use common::pki::{Ca, Validity};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(&dir.path().join("pki"), "mq");
    let server = ca.server("mq", &["localhost", "127.0.0.1"], Validity::Current);
    let tls = dir.path().join("rabbit-tls");
    std::fs::create_dir(&tls).unwrap();
    std::fs::copy(&ca.cert_file, tls.join("ca.pem")).unwrap();
    std::fs::copy(&server.cert, tls.join("server.pem")).unwrap();
    std::fs::copy(&server.key, tls.join("server.key")).unwrap();
    let cluster = RabbitCluster::start_with(dir.path(), Some(&tls));
    let amqps: Vec<String> = cluster
        .amqps_ports
        .iter()
        .map(|p| format!("amqps://guest:guest@127.0.0.1:{p}/%2f"))
        .collect();
    let declare = |extra: &[&str]| {
        std::process::Command::new(bin("pressline-central"))
            .args(["declare", "--amqp", &amqps.join(",")])
            .args(extra)
            .output()
            .unwrap()
    };
    // A private CA's certificate is refused until trusted.
    let untrusted = declare(&[]);
    assert!(!untrusted.status.success());
    let ca_file = ca.cert_file.to_str().unwrap();
    let trusted = declare(&["--amqp-ca", ca_file]);
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );

    let pg = Postgres::start();
    let consumer = Central::start(&amqps, &pg.url(), &["--amqp-ca", ca_file]);
    assert!(consumer.stats()["amqp_node"]
        .as_str()
        .unwrap()
        .starts_with("amqps://"));
    let press = r#"{"schema":"pressline.press.v1","id":"t:t1:0:1","site":"t","terminal":"t1","boot":0,"seq":1,"button":"happy","score":3,"received_at":"2026-11-22T14:03:12.530Z"}"#;
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &cluster.mqtt_ports[1].to_string()])
        .args(["-q", "1", "-t", "pressline/v1/t/t1/press", "-m", press])
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_until("the press stored through the TLS consumer", || {
        press_count(&pg) == 1
    });

    // A gateway upstream over mqtts:// to the cluster's nodes, trusting the
    // same private CA.
    let mqtts: Vec<String> = (1..=3u16)
        .map(|i| format!("mqtts://127.0.0.1:{}", cluster.mqtt_ports[0] - 1 + 40 + i))
        .collect();
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "vault".into(),
            config_toml: Some(format!(
                "[upstream]\nurl = \"{}\"\nca_file = \"{}\"\n",
                mqtts.join(","),
                ca.cert_file.display()
            )),
            ..Default::default()
        },
    );
    wait_until("the gateway upstream over TLS", || {
        gateway.stats()["upstream_connected"] == true
    });
    sim(&gateway, "v", 2, 50, 0).expect_all_acked();
    wait_until("every press of the gateway stored", || {
        press_count(&pg) == 101
    });
    let (ids, _) = stored_ids(&pg);
    assert!(expected_ids("vault", "v", 2, 50, 0).is_subset(&ids));
}

#[test]
fn an_alert_row_keeps_its_latest_lifecycle_revision_whatever_order_documents_arrive_in() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RabbitCluster::start(dir.path());
    let pg = Postgres::start();
    let consumer = Central::start(&[cluster.amqp_url(1)], &pg.url(), &[]);
    let publish =
        |payload: &str| mosquitto_pub(cluster.mqtt_ports[2], "pressline/v1/arena/alert", payload);
    let base = r#""schema":"pressline.alert.v1","site":"arena","terminal":"","zone":"food","kind":"zone_unhappy","severity":"critical","raised_at":"2026-11-30T12:00:00.000Z","detail":"Food court: 62%""#;
    publish(&format!(
        r#"{{"id":7,{base},"state":"raised","lifecycle":"raised","revision":1,"event":"raised"}}"#
    ));
    publish(&format!(
        r#"{{"id":7,{base},"state":"raised","lifecycle":"acknowledged","revision":3,"event":"acknowledged","escalated_at":"2026-11-30T12:10:00.000Z","acknowledged_at":"2026-11-30T12:12:30.000Z","acknowledged_by":"Anna","ack_note":"on my way"}}"#
    ));
    // The escalation, late (another path through the cluster): ignored.
    publish(&format!(
        r#"{{"id":7,{base},"state":"raised","lifecycle":"raised","revision":2,"event":"escalated","escalated_at":"2026-11-30T12:10:00.000Z"}}"#
    ));
    // A gateway that predates the lifecycle: raised, then cleared.
    publish(&format!(r#"{{"id":8,{base},"state":"raised"}}"#));
    publish(&format!(
        r#"{{"id":8,{base},"state":"cleared","cleared_at":"2026-11-30T12:20:00.000Z"}}"#
    ));
    wait_until("five alert documents consumed", || {
        consumer.stats()["messages"]["alert"] == 5
    });
    wait_until("the rows", || pg.psql("SELECT count(*) FROM alerts") == "2");
    assert_eq!(
        pg.psql(
            "SELECT lifecycle || ' ' || revision || ' ' || acknowledged_by || ' ' || ack_note || ' ' || \
             extract(epoch FROM acknowledged_at - raised_at) || ' ' || (escalated_at IS NOT NULL) \
             FROM alerts WHERE id = 7"
        ),
        "acknowledged 3 Anna on my way 750.000000 true"
    );
    assert_eq!(
        pg.psql("SELECT state || ' ' || revision || ' ' || coalesce(lifecycle, '-') FROM alerts WHERE id = 8"),
        "cleared 0 -"
    );
}
