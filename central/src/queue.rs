//! The central queue on RabbitMQ: one durable quorum queue bound to
//! `amq.topic` (where RabbitMQ's MQTT plugin publishes) with
//! `pressline.v1.#`. It must exist before gateways publish: RabbitMQ
//! acknowledges and drops a publish that matches no queue.

use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};

/// Every upstream topic of protocol version 1 (`pressline/v1/...`).
pub const BINDING: &str = "pressline.v1.#";
/// The exchange RabbitMQ's MQTT plugin publishes to by default.
pub const EXCHANGE: &str = "amq.topic";
/// The queue's default name.
pub const DEFAULT_QUEUE: &str = "pressline.v1";

/// Connects to one node; for `amqps://`, trusting the system's store and
/// the private CA's PEM when given.
pub async fn connect(uri: &str, ca_pem: Option<&str>) -> Result<Connection, lapin::Error> {
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: ca_pem.map(str::to_string),
    };
    Connection::connect_with_config(
        uri,
        ConnectionProperties::default(),
        tls,
        lapin::runtime::default_runtime()?,
    )
    .await
}

/// Declares the quorum queue and its binding (idempotent). Returns the
/// messages ready in it.
pub async fn declare(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    let mut arguments = FieldTable::default();
    // Replicated on a majority of nodes: a node's loss loses nothing.
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let declared = channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
        .await?;
    channel
        .queue_bind(
            queue.into(),
            EXCHANGE.into(),
            BINDING.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(declared.message_count())
}

/// Messages ready and consumers, without changing anything.
pub async fn sample(channel: &Channel, queue: &str) -> Result<(u32, u32), lapin::Error> {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((q.message_count(), q.consumer_count()))
}

/// The URI without its password, for logs and stats.
pub fn redact(uri: &str) -> String {
    crate::database::redact(uri)
}
