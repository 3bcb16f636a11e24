//! The terminal's MQTT connection: options (identity, last will, TLS) and
//! the event-loop task, which reconnects with jittered backoff and hands
//! the boot what it needs as [`LinkEvent`]s.

use std::time::Duration;

use pressline_protocol::backoff::Backoff;
use pressline_protocol::heartbeat::WILL_OFFLINE;
use pressline_protocol::topic::TerminalStatusTopic;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rumqttc::{Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use crate::{SimConfig, SimIdentity};

/// What the event-loop task tells the terminal.
pub(super) enum LinkEvent {
    ConnAck,
    SubAck,
    Publish {
        topic: String,
        payload: Vec<u8>,
    },
    /// A publish went out with this packet id (PUBACK mode only).
    Sent(u16),
    /// The broker PUBACKed this packet id (PUBACK mode only).
    PubAck(u16),
    Down,
}

/// The connection options of terminal `id`: clean session, its login when
/// registered, its last will, TLS when configured.
pub(super) fn options(config: &SimConfig, id: &str, identity: Option<&SimIdentity>) -> MqttOptions {
    let mut options = MqttOptions::new(id, &config.broker_host, config.broker_port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_session(true);
    if let Some(identity) = identity {
        options.set_credentials(
            id,
            pressline_protocol::auth::mqtt_password(&identity.secret).as_str(),
        );
    }
    options.set_last_will(LastWill::new(
        TerminalStatusTopic(id).to_string(),
        WILL_OFFLINE,
        QoS::AtLeastOnce,
        false,
    ));
    if let Some(tls) = &config.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    options
}

/// Polls the MQTT event loop forever, reconnecting with jittered exponential
/// backoff, and forwards what the terminal logic needs.
pub(super) async fn drive_eventloop(
    mut eventloop: rumqttc::EventLoop,
    events: mpsc::Sender<LinkEvent>,
    seed: u64,
    puback_mode: bool,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut backoff = Backoff::new(100, 5_000);
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                LinkEvent::ConnAck
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => LinkEvent::SubAck,
            Ok(Event::Incoming(Packet::Publish(p))) => LinkEvent::Publish {
                topic: p.topic,
                payload: p.payload.to_vec(),
            },
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) if puback_mode => {
                LinkEvent::Sent(pkid)
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) if puback_mode => LinkEvent::PubAck(ack.pkid),
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(_) => {
                if events.send(LinkEvent::Down).await.is_err() {
                    return;
                }
                // Retry backoff (not synchronisation): a real terminal waits
                // before reconnecting so a recovering gateway is not stampeded.
                let base = Duration::from_millis(backoff.next_ms());
                tokio::time::sleep(base.mul_f64(0.5 + rng.gen::<f64>())).await;
                continue;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}
