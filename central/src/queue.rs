//! The central queue on RabbitMQ: one durable quorum queue bound to
//! `amq.topic` (where RabbitMQ's MQTT plugin publishes) with
//! `pressline.v1.#`. It must exist before gateways publish: RabbitMQ
//! acknowledges and drops a publish that matches no queue.
//!
//! Beside it, for every supported RabbitMQ (3.10 to 4.x):
//! - an explicit delivery limit ([`DEFAULT_DELIVERY_LIMIT`]). RabbitMQ 4
//!   gives quorum queues a limit of 20 and *drops* a message past it when
//!   no dead-letter target is set; a consumer lost while holding a message
//!   counts as a delivery, so a crash loop or a flapping link could drop
//!   presses. The consumer never rejects or requeues a message itself.
//! - a dead-letter exchange and quorum queue (`{queue}.dead`), reached
//!   with the at-least-once strategy (the source queue keeps a message
//!   until the dead-letter queue has it). Nobody consumes it, so it keeps
//!   what it gets; dead-lettered messages keep their routing key.
//! - a replay exchange (`{queue}.replay`), bound to the queue alone, so
//!   `pressline-central dead-letters --replay` puts messages back without
//!   copying them to anything else bound to `amq.topic`.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// Every upstream topic of protocol version 1 (`pressline/v1/...`).
pub const BINDING: &str = "pressline.v1.#";
/// The exchange RabbitMQ's MQTT plugin publishes to by default.
pub const EXCHANGE: &str = "amq.topic";
/// The queue's default name.
pub const DEFAULT_QUEUE: &str = "pressline.v1";
/// Deliveries a message may have before it is dead-lettered: only a
/// consumer lost while holding it counts, so this many losses in a row
/// means the message itself brings the consumer down.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 100;

/// The queue and what is declared beside it.
#[derive(Debug, Clone)]
pub struct Topology {
    pub queue: String,
    pub delivery_limit: u32,
}

impl Topology {
    /// The dead-letter exchange's and queue's name.
    pub fn dead_letters(&self) -> String {
        format!("{}.dead", self.queue)
    }

    /// The replay exchange's name.
    pub fn replay(&self) -> String {
        format!("{}.replay", self.queue)
    }

    fn queue_arguments(&self) -> FieldTable {
        let mut arguments = quorum();
        let limit = i64::from(self.delivery_limit);
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
        let dead = self.dead_letters();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dead.as_str().into()),
        );
        arguments.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        // At-least-once dead-lettering requires it (nothing sets a length
        // limit, so nothing is ever refused for it).
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        arguments
    }

    /// The `rabbitmqctl` policy that gives an existing queue, declared
    /// before these settings, the same limit and dead-letter target.
    pub fn policy_command(&self) -> String {
        format!(
            "rabbitmqctl set_policy --apply-to quorum_queues pressline-dead-letters '^{}$' \
             '{{\"delivery-limit\":{},\"dead-letter-exchange\":\"{}\",\"dead-letter-strategy\":\"at-least-once\",\"overflow\":\"reject-publish\"}}'",
            regex_escape(&self.queue),
            self.delivery_limit,
            self.dead_letters()
        )
    }
}

fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    // Replicated on a majority of nodes: a node's loss loses nothing.
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments
}

fn regex_escape(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            let escape = !(c.is_ascii_alphanumeric() || c == '_' || c == '-');
            escape.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

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

/// What [`declare`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    /// Messages ready in the queue.
    pub ready: u32,
    /// The queue existed with other arguments (declared before the
    /// delivery limit and dead-letter target): it is used as it is.
    pub other_arguments: bool,
}

/// Declares the dead-letter and replay exchanges, the dead-letter queue,
/// the quorum queue and their bindings (idempotent).
pub async fn declare(
    connection: &Connection,
    topology: &Topology,
) -> Result<Declared, lapin::Error> {
    let channel = connection.create_channel().await?;
    let dead = topology.dead_letters();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (exchange, kind) in [
        (dead.as_str(), ExchangeKind::Fanout),
        (topology.replay().as_str(), ExchangeKind::Topic),
    ] {
        channel
            .exchange_declare(exchange.into(), kind, durable, FieldTable::default())
            .await?;
    }
    channel
        .queue_declare(
            dead.as_str().into(),
            QueueDeclareOptions::durable(),
            quorum(),
        )
        .await?;
    bind(&channel, &dead, &dead, "").await?;
    let queue = topology.queue.as_str();
    let declared = match channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            topology.queue_arguments(),
        )
        .await
    {
        Ok(q) => Declared {
            ready: q.message_count(),
            other_arguments: false,
        },
        // The refusal closed the channel; the queue is used as it is.
        Err(e) if is_precondition_failed(&e) => {
            let channel = connection.create_channel().await?;
            let (ready, _) = sample(&channel, queue).await?;
            tracing::error!(
                queue,
                refused = %e,
                policy = %topology.policy_command(),
                "the queue exists with other arguments than these (declared before the delivery limit and \
                 dead-letter target, or with another --delivery-limit); it is used as it is. Without a \
                 dead-letter target RabbitMQ 4 drops a message delivered 20 times: apply this policy once \
                 (deploy/README.md, \"Delivery limit and dead letters\")"
            );
            Declared {
                ready,
                other_arguments: true,
            }
        }
        Err(e) => return Err(e),
    };
    let channel = connection.create_channel().await?;
    bind(&channel, queue, EXCHANGE, BINDING).await?;
    bind(&channel, queue, &topology.replay(), BINDING).await?;
    let _ = channel.close(200, "declared".into()).await;
    Ok(declared)
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), lapin::Error> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

fn is_precondition_failed(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_for_an_existing_queue_names_it_exactly() {
        let topology = Topology {
            queue: "pressline.v1".into(),
            delivery_limit: 100,
        };
        let command = topology.policy_command();
        assert!(command.contains("'^pressline\\.v1$'"), "{command}");
        assert!(command.contains("\"delivery-limit\":100"), "{command}");
        assert!(
            command.contains("\"dead-letter-exchange\":\"pressline.v1.dead\""),
            "{command}"
        );
    }
}
