//! Messages the queue dead-lettered (delivered more times than its
//! delivery limit without an acknowledgement: consumers lost while holding
//! them). They wait in `{queue}.dead` until an operator, once the cause is
//! fixed, puts them back with `pressline-central dead-letters --replay`.
//!
//! A replayed message is published, with publisher confirms, to the
//! replay exchange under its own routing key, and only then removed from
//! the dead-letter queue: a replay cut short leaves a message in both
//! queues at worst, and the press id as primary key stores it once.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Confirmation, Connection};

use crate::queue::{self, Topology};

/// Messages waiting in the dead-letter queue.
pub async fn count(connection: &Connection, topology: &Topology) -> Result<u32, lapin::Error> {
    let channel = connection.create_channel().await?;
    let (ready, _) = queue::sample(&channel, &topology.dead_letters()).await?;
    let _ = channel.close(200, "counted".into()).await;
    Ok(ready)
}

/// Moves the dead-lettered messages back to the queue, at most `up_to`
/// (those there when counted: one that is dead-lettered again meanwhile
/// waits for the next replay); returns how many.
pub async fn replay(
    connection: &Connection,
    topology: &Topology,
    up_to: u32,
) -> anyhow::Result<u64> {
    // The replay exchange and its binding exist before anything is moved
    // through them (a binding is not compared with the queue's arguments,
    // so this works whatever --delivery-limit the queue was declared with).
    queue::declare_replay(connection, topology).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let (dead, replay) = (topology.dead_letters(), topology.replay());
    let mut moved = 0u64;
    while moved < u64::from(up_to) {
        let Some(message) = channel
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let delivery = message.delivery;
        // Mandatory: a message no queue takes comes back instead of being
        // confirmed and lost.
        let confirmation = channel
            .basic_publish(
                replay.as_str().into(),
                delivery.routing_key.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &delivery.data,
                delivery.properties.clone(),
            )
            .await?
            .await?;
        // Unacknowledged, the message stays in the dead-letter queue. (One
        // publish in flight at a time: lapin pairs a returned message with
        // the next confirmation, not by delivery tag.)
        anyhow::ensure!(
            matches!(confirmation, Confirmation::Ack(None)),
            "the broker did not take a replayed message into {} (routing key {}); it stays in {dead}",
            topology.queue,
            delivery.routing_key
        );
        channel
            .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
            .await?;
        moved += 1;
    }
    // A round trip, so the last acknowledgement is in before the channel
    // closes.
    queue::sample(&channel, &dead).await?;
    let _ = channel.close(200, "replayed".into()).await;
    Ok(moved)
}
