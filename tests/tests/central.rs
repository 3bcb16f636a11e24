//! The central side on a clustered engine: gateways forwarding to a real
//! three-node RabbitMQ cluster (Debian's `rabbitmq-server` with its MQTT
//! plugin, started by `deploy/rabbitmq-cluster.sh`).

mod common;

use common::rabbitmq::RabbitCluster;
use common::*;

#[test]
fn a_rabbitmq_node_killed_under_the_gateway_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RabbitCluster::start(dir.path());
    // Analytics on node 3 with a persistent session: a quorum queue, bound
    // before anything is published (RabbitMQ drops what matches no queue).
    let consumer = Consumer::start(cluster.mqtt_ports[2], "analytics-central");
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "dock".into(),
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
