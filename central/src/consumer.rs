//! The consume loop: deliveries → batch → one PostgreSQL transaction →
//! one multiple-ack up to the batch's last delivery tag.
//!
//! The ack is sent only after the commit, so a consumer killed at any
//! point leaves its unacked messages to be redelivered (to itself or
//! another consumer on the same queue), and the press id as primary key
//! makes the second delivery harmless: exactly once in the tables. While the
//! database is down the batch in hand is retried and no more is taken than
//! the prefetch allows; a lost broker node means the next node in the list.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::batching::Batcher;
use crate::database::{CommitError, Committed, Database};
use crate::documents::{self, Document, DocumentKind};
use crate::metrics::Metrics;
use crate::queue;
use pressline_protocol::backoff::Backoff;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How the consumer runs.
#[derive(Clone)]
pub struct ConsumerConfig {
    /// Broker nodes, tried in turn.
    pub amqp: Vec<String>,
    /// PEM of a private CA for `amqps://` nodes.
    pub amqp_ca: Option<String>,
    pub postgres: String,
    pub postgres_tls: MakeRustlsConnect,
    /// The queue, its delivery limit and dead-letter target.
    pub topology: queue::Topology,
    /// Most rows in one transaction.
    pub batch: usize,
    /// Longest a message waits for its batch to fill.
    pub batch_wait: Duration,
    /// Most unacknowledged messages the broker sends ahead.
    pub prefetch: u16,
}

/// Backoff between attempts: 250 ms doubling to 10 s.
fn backoff() -> Backoff {
    Backoff::new(250, 10_000)
}

/// Backoff between retries of a batch that conflicted with another
/// consumer's: 250 ms doubling to 1 s.
fn conflict_backoff() -> Backoff {
    Backoff::new(250, 1_000)
}

/// Sleeps, or returns `true` early when shutdown is requested.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// A database connection that is made again when lost.
struct Postgres {
    url: String,
    tls: MakeRustlsConnect,
    db: Option<Database>,
    backoff: Backoff,
    failing_since: Option<Instant>,
}

impl Postgres {
    fn new(url: String, tls: MakeRustlsConnect) -> Postgres {
        Postgres {
            url,
            tls,
            db: None,
            backoff: backoff(),
            failing_since: None,
        }
    }

    /// The connection, made when missing; `None` on shutdown.
    async fn get(
        &mut self,
        metrics: &Metrics,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<&mut Database> {
        if self.db.as_ref().is_some_and(Database::is_closed) {
            self.db = None;
        }
        while self.db.is_none() {
            match Database::connect(&self.url, &self.tls).await {
                Ok(db) => {
                    if let Some(since) = self.failing_since.take() {
                        tracing::info!(down_secs = since.elapsed().as_secs(), "PostgreSQL is back");
                    }
                    // The backoff is reset by a commit, not a connection:
                    // a database that takes connections and fails every
                    // commit is retried at the backoff's pace too.
                    self.db = Some(db);
                }
                Err(e) => {
                    metrics.postgres_errors.fetch_add(1, Relaxed);
                    if self.failing_since.is_none() {
                        self.failing_since = Some(Instant::now());
                        tracing::warn!(error = %format!("{e:#}"), "PostgreSQL unavailable; retrying, nothing is acknowledged meanwhile");
                    }
                    metrics.postgres_connected.store(false, Relaxed);
                    let wait = Duration::from_millis(self.backoff.next_ms());
                    if sleep_or_shutdown(wait, shutdown).await {
                        return None;
                    }
                }
            }
        }
        metrics.postgres_connected.store(true, Relaxed);
        self.db.as_mut()
    }

    /// A commit went through: the next failure starts the backoff over.
    fn committed(&mut self) {
        self.backoff.reset();
    }

    /// The connection failed a commit: dropped, and the retry waits its
    /// turn in the backoff. Returns false on shutdown.
    async fn lost_and_wait(
        &mut self,
        metrics: &Metrics,
        error: &CommitError,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        self.lost(metrics, error);
        let wait = Duration::from_millis(self.backoff.next_ms());
        !sleep_or_shutdown(wait, shutdown).await
    }

    fn lost(&mut self, metrics: &Metrics, error: &CommitError) {
        metrics.postgres_errors.fetch_add(1, Relaxed);
        metrics.postgres_connected.store(false, Relaxed);
        if self.failing_since.is_none() {
            self.failing_since = Some(Instant::now());
            tracing::warn!(error = %error, "PostgreSQL unavailable; the batch will be committed when it returns");
        }
        self.db = None;
    }
}

/// Connects to the database and migrates the schema, retrying until it is
/// available (or shutdown).
pub async fn prepare_database(
    url: &str,
    tls: &MakeRustlsConnect,
    metrics: &Metrics,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let mut pg = Postgres::new(url.to_string(), tls.clone());
    loop {
        let Some(db) = pg.get(metrics, shutdown).await else {
            return Ok(false);
        };
        match db.migrate().await {
            Ok(applied) => {
                for m in applied {
                    tracing::info!(migration = %m, "schema migrated");
                }
                return Ok(true);
            }
            Err(e) if db.is_closed() => {
                tracing::warn!(error = %format!("{e:#}"), "lost PostgreSQL while migrating; retrying");
                pg.db = None;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs until shutdown: consumes, commits, acknowledges.
pub async fn run(
    config: ConsumerConfig,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if !prepare_database(
        &config.postgres,
        &config.postgres_tls,
        &metrics,
        &mut shutdown,
    )
    .await?
    {
        return Ok(());
    }
    tokio::spawn(crate::retention::run(
        config.postgres.clone(),
        config.postgres_tls.clone(),
        shutdown.clone(),
    ));
    let mut node = 0usize;
    let mut backoff = backoff();
    loop {
        let uri = &config.amqp[node % config.amqp.len()];
        match session(
            &config,
            uri,
            &metrics,
            &config.postgres,
            &mut shutdown,
            &mut backoff,
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(e) if e.downcast_ref::<queue::QueueMismatch>().is_some() => return Err(e),
            Err(e) => {
                metrics.amqp_connected.store(false, Relaxed);
                tracing::warn!(node = %queue::redact(uri), error = %format!("{e:#}"), "broker connection lost or refused; trying the next node");
                node += 1;
                let wait = Duration::from_millis(backoff.next_ms());
                if sleep_or_shutdown(wait, &mut shutdown).await {
                    return Ok(());
                }
            }
        }
    }
}

/// One connection to one node. `Ok` means shutdown.
async fn session(
    config: &ConsumerConfig,
    uri: &str,
    metrics: &Arc<Metrics>,
    postgres: &str,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let connection = Arc::new(queue::connect(uri, config.amqp_ca.as_deref()).await?);
    let declared = queue::declare(&connection, &config.topology).await?;
    metrics.queue_legacy.store(declared.legacy, Relaxed);
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    let tag = format!("pressline-central-{}", std::process::id());
    let consumer = channel
        .basic_consume(
            config.topology.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    metrics.amqp_connects.fetch_add(1, Relaxed);
    metrics.amqp_connected.store(true, Relaxed);
    metrics.set_node(&queue::redact(uri));
    backoff.reset();
    tracing::info!(node = %queue::redact(uri), queue = %config.topology.queue, "consuming");

    // Queue depths for /metrics, on a channel of its own (a failed passive
    // declare closes its channel: the next tick opens another).
    let sampler = {
        let connection = connection.clone();
        let (metrics, topology) = (metrics.clone(), config.topology.clone());
        tokio::spawn(async move { sample_queues(&connection, &metrics, &topology).await })
    };
    /// Ends a task with the session (a lost connection, an error).
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _sampler = AbortOnDrop(sampler.abort_handle());

    // Commits run in a task of their own, so the next batch fills while
    // the last one is being written; two batches may wait for it (then
    // receiving waits too, and the prefetch holds the rest at the broker).
    // One committer keeps acknowledgements in delivery order.
    let (to_commit, batches) = tokio::sync::mpsc::channel::<Vec<(Delivery, Document)>>(2);
    let committer = tokio::spawn(commit_batches(
        channel.clone(),
        batches,
        metrics.clone(),
        postgres.to_string(),
        config.postgres_tls.clone(),
        shutdown.clone(),
    ));
    // A committer left behind would hold a database connection and retry
    // a batch whose channel is gone; its unacked messages are redelivered
    // to the next session anyway.
    let _committer = AbortOnDrop(committer.abort_handle());
    let batcher = Batcher::new(config.batch, config.prefetch, config.batch_wait);
    let ended = receive(consumer, batcher, to_commit, committer, shutdown).await;
    if ended.is_ok() {
        let _ = connection.close(200, "shutting down".into()).await;
    }
    ended
}

/// Samples the queue and the dead-letter queue every 2 s until the session
/// ends; a failed sample is logged and shown as unknown, never as zero.
async fn sample_queues(
    connection: &lapin::Connection,
    metrics: &Metrics,
    topology: &queue::Topology,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut dead_before = 0;
    let mut channel: Option<lapin::Channel> = None;
    loop {
        tick.tick().await;
        if channel.as_ref().is_none_or(|c| !c.status().connected()) {
            channel = connection.create_channel().await.ok();
        }
        let Some(c) = &channel else { continue };
        let sampled = async {
            let main = queue::sample(c, &topology.queue).await?;
            let dead = queue::sample(c, &topology.dead_letters()).await?;
            Ok::<_, lapin::Error>((main, dead.0))
        };
        match sampled.await {
            Ok(((ready, consumers), dead)) => {
                metrics.queue_messages.store(i64::from(ready), Relaxed);
                metrics.queue_consumers.store(i64::from(consumers), Relaxed);
                metrics.dead_letter_messages.store(i64::from(dead), Relaxed);
                warn_of_dead_letters(topology, dead_before, dead);
                dead_before = dead;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot sample the queue depths; shown as unknown");
                for gauge in [
                    &metrics.queue_messages,
                    &metrics.queue_consumers,
                    &metrics.dead_letter_messages,
                ] {
                    gauge.store(-1, Relaxed);
                }
                channel = None;
            }
        }
    }
}

/// Says so when messages reach the dead-letter queue (at start, and each
/// time more arrive): nothing consumes it, so someone has to act.
fn warn_of_dead_letters(topology: &queue::Topology, before: u32, now: u32) {
    if now > before {
        tracing::warn!(
            dead_letters = now,
            queue = %topology.dead_letters(),
            delivery_limit = topology.delivery_limit,
            "messages were dead-lettered: each was delivered more times than the delivery limit without an \
             acknowledgement (consumers lost while holding it, or holding it past the broker's consumer_timeout \
             during a long database outage); find the cause, then run `pressline-central dead-letters --replay`"
        );
    }
}

/// Reads messages as they arrive (while the last batch is being written)
/// into batches for the committer, until shutdown (`Ok`) or the session
/// fails.
async fn receive(
    mut consumer: lapin::Consumer,
    mut batch: Batcher<(Delivery, Document)>,
    to_commit: tokio::sync::mpsc::Sender<Vec<(Delivery, Document)>>,
    mut committer: tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        let flush_at = batch
            .deadline()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let full = tokio::select! {
            delivery = consumer.next() => match delivery {
                Some(Ok(d)) => {
                    let document = documents::read(d.routing_key.as_str(), &d.data);
                    let rows = document.rows();
                    batch.push((d, document), rows, std::time::Instant::now())
                }
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("the broker cancelled the consumer"),
            },
            _ = tokio::time::sleep_until(flush_at), if batch.deadline().is_some() => true,
            ended = &mut committer => return ended?,
            _ = shutdown.changed() => {
                // What is in hand is committed and acked; unacked messages
                // beyond it go back to the queue when the channel closes.
                if !batch.is_empty() {
                    let _ = to_commit.send(batch.take()).await;
                }
                drop(to_commit);
                return committer.await?;
            }
        };
        if full && !batch.is_empty() && to_commit.send(batch.take()).await.is_err() {
            return committer.await?;
        }
    }
}

/// The committer: batches in, one transaction and one acknowledgement each.
async fn commit_batches(
    channel: lapin::Channel,
    mut batches: tokio::sync::mpsc::Receiver<Vec<(Delivery, Document)>>,
    metrics: Arc<Metrics>,
    postgres: String,
    tls: MakeRustlsConnect,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut pg = Postgres::new(postgres, tls);
    while let Some(mut batch) = batches.recv().await {
        if !flush(&channel, &mut batch, &metrics, &mut pg, &mut shutdown).await? {
            return Ok(());
        }
    }
    Ok(())
}

/// Commits the batch and acknowledges it. `Ok(false)`: shutdown while the
/// database was away (nothing acked; the broker redelivers).
async fn flush(
    channel: &lapin::Channel,
    batch: &mut Vec<(Delivery, Document)>,
    metrics: &Metrics,
    pg: &mut Postgres,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let Some(last) = batch.last().map(|(d, _)| d.delivery_tag) else {
        return Ok(true);
    };
    let items: Vec<(&str, &[u8], &Document)> = batch
        .iter()
        .map(|(d, doc)| (d.routing_key.as_str(), d.data.as_slice(), doc))
        .collect();
    let mut conflict_backoff = conflict_backoff();
    let committed: Committed = loop {
        let stop = *shutdown.borrow();
        let Some(db) = pg.get(metrics, shutdown).await else {
            return Ok(false);
        };
        let started = std::time::Instant::now();
        let result = match db.commit(&items).await {
            Err(CommitError::Refused(reason)) => {
                tracing::warn!(reason = %reason, "a document was refused; committing the batch one by one");
                db.commit_each(&items).await
            }
            other => other,
        };
        metrics
            .commit_micros
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        match result {
            Ok(c) => {
                pg.committed();
                break c;
            }
            Err(e @ CommitError::Conflict(_)) => {
                metrics.batch_retries.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, "retrying the batch");
                tokio::time::sleep(Duration::from_millis(conflict_backoff.next_ms())).await;
            }
            Err(e) => {
                metrics.batch_retries.fetch_add(1, Relaxed);
                if stop || !pg.lost_and_wait(metrics, &e, shutdown).await {
                    return Ok(false);
                }
            }
        }
    };
    for (position, (_, d)) in batch.iter().enumerate() {
        if committed.refused.contains(&position) {
            metrics.count(DocumentKind::Rejected);
            tracing::warn!(
                routing_key = items[position].0,
                "the database refused a message; kept in rejected_messages"
            );
        } else {
            if let Document::Rejected { reason } = d {
                tracing::warn!(routing_key = items[position].0, reason = %reason, "message kept in rejected_messages");
            }
            metrics.count(d.kind());
        }
    }
    metrics
        .presses_inserted
        .fetch_add(committed.presses_inserted, Relaxed);
    metrics
        .presses_duplicate
        .fetch_add(committed.presses_duplicate, Relaxed);
    metrics.batches.fetch_add(1, Relaxed);
    if let Some(newest) = committed.newest_received_ms {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        metrics.lag_ms.store((now - newest).max(0), Relaxed);
    }
    batch.clear();
    channel
        .basic_ack(last, BasicAckOptions { multiple: true })
        .await?;
    Ok(true)
}
