//! The whole gateway in one test process: started with [`gateway::start`]
//! on free loopback ports, sent a press over MQTT, acked durably once in
//! the store, and stopped cleanly.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use pressline_gateway::gateway::{self, Credentials};
use pressline_gateway::terminals::identity::SecurityMode;
use pressline_gateway::Config;
use pressline_protocol::topic::{AckTopic, PressTopic};
use pressline_protocol::{Ack, Button, Press, PressId};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

fn config(data_dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    config.mqtt.listen = free_port();
    config.mqtt.listen_v5 = None;
    config.http.listen = free_port();
    config.security.mode = SecurityMode::Open;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_is_acked_once_stored_and_the_gateway_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mqtt = config.mqtt.listen;
    let credentials = Credentials::load(&config).unwrap();
    let running = gateway::start(config, credentials, None).await.unwrap();

    let mut options = MqttOptions::new("t-1", mqtt.ip().to_string(), mqtt.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 16);
    let press = Press {
        id: PressId { boot: 1, seq: 0 },
        button: Button::Happy,
        age_ms: None,
        mac: None,
    };
    let mut buf = [0u8; 32];
    let payload = press.encode(&mut buf).unwrap().to_vec();
    let ack = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            // The broker may not listen yet: rumqttc reports and retries.
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client
                        .subscribe(AckTopic("t-1").to_string(), QoS::AtLeastOnce)
                        .await
                        .unwrap();
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let topic = PressTopic("t-1").to_string();
                    client
                        .publish(topic, QoS::AtLeastOnce, false, payload.clone())
                        .await
                        .unwrap();
                }
                Ok(Event::Incoming(Packet::Publish(p))) => return Ack::decode(&p.payload).unwrap(),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("the durable ack within a minute");
    assert!(ack.covers(press.id));
    assert_eq!(running.api.store.press_count(), 1, "acked, so stored");
    tokio::time::timeout(Duration::from_secs(60), running.stop())
        .await
        .expect("stopped within a minute")
        .expect("a clean stop");
}
