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
            "rabbitmqctl set_policy --apply-to queues pressline-dead-letters '^{}$' \
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

/// Queue names are checked to be [`valid_queue_name`]s, so only `.` needs
/// escaping, and nothing breaks the shell quoting around the pattern.
fn regex_escape(name: &str) -> String {
    name.replace('.', "\\.")
}

/// 1 to 200 of `A-Z a-z 0-9 . _ -`: a name that is safe in a policy
/// pattern and a shell command.
pub fn valid_queue_name(name: &str) -> Result<String, String> {
    let ok = (1..=200).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(name.to_string())
    } else {
        Err("1 to 200 of A-Z a-z 0-9 . _ -".to_string())
    }
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
    /// The queue was declared before the delivery limit and dead-letter
    /// target (a durable quorum queue, nothing else): it is used as it is
    /// and the policy that gives it both is logged. Arguments cannot be
    /// read over AMQP, so this stays true after the policy is applied.
    pub legacy: bool,
}

/// The queue exists with arguments this consumer must not work with: a
/// configuration to fix, not a node to retry (the consumer exits).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct QueueMismatch(String);

/// After a refused declare: accepts the queue only if it is exactly what
/// earlier versions declared; a classic, transient or otherwise different
/// queue, or another delivery limit, is an error to fix, not to consume.
async fn declare_legacy(
    connection: &Connection,
    topology: &Topology,
    refused: &lapin::Error,
) -> anyhow::Result<Declared> {
    let queue = topology.queue.as_str();
    let channel = connection.create_channel().await?;
    match channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), quorum())
        .await
    {
        Ok(q) => {
            tracing::error!(
                queue,
                policy = %topology.policy_command(),
                "the queue was declared by an earlier version, without a delivery limit and dead-letter target: \
                 on RabbitMQ 4 a message delivered 20 times is dropped. Apply this policy once and check it with \
                 `rabbitmqctl list_queues name effective_policy_definition` (deploy/README.md, \
                 \"Delivery limit and dead letters\"); this is logged while the queue has no such arguments"
            );
            Ok(Declared {
                ready: q.message_count(),
                legacy: true,
            })
        }
        Err(e) if is_precondition_failed(&e) => Err(QueueMismatch(format!(
            "the queue {queue} exists with other arguments than a durable quorum queue with delivery limit {} \
             and dead letters to {} ({refused}); give every consumer the --delivery-limit the queue was \
             declared with (`rabbitmqctl list_queues name arguments` shows them)",
            topology.delivery_limit,
            topology.dead_letters()
        ))
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// Declares the dead-letter and replay exchanges, the dead-letter queue,
/// the quorum queue and their bindings (idempotent). Refuses a queue that
/// exists with other arguments, except one declared before the delivery
/// limit and dead-letter target (see [`Declared::legacy`]).
pub async fn declare(connection: &Connection, topology: &Topology) -> anyhow::Result<Declared> {
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
    // Its own limit, as high as RabbitMQ takes (4.x gives every quorum
    // queue 20 and drops past it; -1 for "none" is 4.x only): each replay
    // that fails counts a delivery.
    let mut dead_arguments = quorum();
    dead_arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(i32::MAX)),
    );
    channel
        .queue_declare(
            dead.as_str().into(),
            QueueDeclareOptions::durable(),
            dead_arguments,
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
            legacy: false,
        },
        Err(e) if is_precondition_failed(&e) => declare_legacy(connection, topology, &e).await?,
        Err(e) => return Err(e.into()),
    };
    let channel = connection.create_channel().await?;
    bind(&channel, queue, EXCHANGE, BINDING).await?;
    bind(&channel, queue, &topology.replay(), BINDING).await?;
    let _ = channel.close(200, "declared".into()).await;
    Ok(declared)
}

/// The replay exchange and its binding to the queue, which must exist.
pub async fn declare_replay(connection: &Connection, topology: &Topology) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            topology.replay().as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    bind(&channel, &topology.queue, &topology.replay(), BINDING).await?;
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
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
