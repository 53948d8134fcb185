//! Exactly-once mode (`kafka.exactly_once`): kept spans and input offsets
//! commit together, in one Kafka transaction per commit interval.
//!
//! Workers write a partition's messages and the offset that follows them into
//! the open transaction in one step ([`Transaction::write`]); a commit waits
//! for writes in progress and holds new ones back, so no commit falls between
//! a message and its offset. A crash leaves the open transaction uncommitted:
//! `read_committed` readers never see its messages, and the input is read
//! again from the offsets of the last committed one.
//!
//! A transaction that cannot be committed is aborted and the process stops
//! with an error, without committing; its restart resumes from the last
//! committed transaction. Retriable errors (a broker away) are retried for
//! up to two minutes in all, holding the writers back (they wait without
//! holding a runtime thread; the blocking calls run off the runtime), so
//! Kafka keeps the input.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::TopicPartitionList;
use tokio::sync::{watch, RwLock};
use tokio_util::sync::CancellationToken;

use super::consumer::InputConsumer;
use super::producer::{self, KafkaOutput};
use crate::metrics as m;
use crate::pipeline::{Destination, Outgoing, ProduceError, ProduceErrorKind, Transaction};

/// What the open transaction holds besides its messages.
#[derive(Default)]
struct Open {
    /// Per partition, the next offset to read, committed with the transaction.
    offsets: BTreeMap<i32, i64>,
    /// Messages written since the transaction began.
    messages: u64,
    /// Partitions assigned to this instance, each with the lease of its
    /// current assignment: only a writer holding that lease may write for
    /// it (see [`Leased`]).
    owned: HashMap<i32, u64>,
    /// The last lease handed out; each assignment of a partition takes the
    /// next, so no two assignments share one.
    leases: u64,
}

/// The transactional producer and the offsets of its open transaction.
pub struct Transactions {
    output: KafkaOutput,
    consumer: Arc<InputConsumer>,
    input_topic: String,
    timeout: Duration,
    /// Writes share it; a commit takes it alone.
    gate: RwLock<()>,
    open: Mutex<Open>,
    failed: watch::Sender<Option<TransactionError>>,
}

/// Why the exactly-once transactions cannot go on: the process stops
/// without committing, and its restart reads again from the last committed
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// The producer could not register its transactional id or begin.
    #[error("cannot begin a Kafka transaction: {0}")]
    Begin(String),
    /// A message could not be written into the open transaction.
    #[error("cannot write into the transaction: {0}")]
    Write(String),
    /// The commit failed (after retrying what could be retried) and the
    /// transaction was aborted.
    #[error("the transaction was aborted ({0}); stopping without committing, so the restart reads again from the last committed transaction")]
    Aborted(String),
}

impl TransactionError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Begin(_) => "begin",
            Self::Write(_) => "write",
            Self::Aborted(_) => "aborted",
        }
    }
}

/// Why a commit did not go through, and so what is left to do.
enum CommitFailure {
    /// Sending the offsets or committing failed: the transaction is still
    /// open, and is aborted.
    Open(String),
    /// The transaction is over, or a call is stuck on the producer: an
    /// abort would fail, or wait on the stuck call.
    Stuck(String),
}

/// How long one transactional call may take before it is retried or fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a commit retries retriable errors before the transaction is given up.
const RETRY_FOR: Duration = Duration::from_secs(120);
/// A commit that takes longer is logged (the writers wait for it).
const SLOW_COMMIT: Duration = Duration::from_secs(2);
/// The most a commit's blocking calls may take in all before the
/// transaction is given up: the retries and one call's timeout past them.
/// librdkafka does not always keep its own timeouts: with the group
/// coordinator gone (a broker fenced by its controller),
/// `send_offsets_to_transaction` waits without end (librdkafka #5456).
pub const COMMIT_BOUND: Duration =
    Duration::from_secs(RETRY_FOR.as_secs() + CALL_TIMEOUT.as_secs());

/// A decision record refused before it was enqueued because its topic or
/// partition is unknown: given up alone (counted), not the transaction.
fn unlogged(destination: Destination, e: &KafkaError) -> bool {
    matches!(destination, Destination::Decisions(_))
        && producer::classify(e).kind == ProduceErrorKind::UnknownTopic
}

fn retriable(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(e) => e.is_retriable(),
        _ => false,
    }
}

impl Transactions {
    /// Registers the transactional id with the coordinator (fencing off, and
    /// aborting the open transaction of, a previous instance with the same id)
    /// and begins the first transaction.
    pub async fn begin(
        output: KafkaOutput,
        consumer: Arc<InputConsumer>,
        input_topic: String,
    ) -> Result<Arc<Self>, TransactionError> {
        let producer = output.producer().clone();
        tokio::task::spawn_blocking(move || {
            producer.init_transactions(CALL_TIMEOUT)?;
            producer.begin_transaction()
        })
        .await
        .map_err(|e| TransactionError::Begin(e.to_string()))?
        .map_err(|e| TransactionError::Begin(e.to_string()))?;
        let (failed, _) = watch::channel(None);
        Ok(Arc::new(Self {
            output,
            consumer,
            input_topic,
            timeout: CALL_TIMEOUT,
            gate: RwLock::new(()),
            open: Mutex::new(Open::default()),
            failed,
        }))
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once a transaction failed, with why.
    pub fn failed(&self) -> watch::Receiver<Option<TransactionError>> {
        self.failed.subscribe()
    }

    fn fail(&self, why: TransactionError) {
        tracing::error!(kind = why.kind(), "exactly-once: {why}");
        self.failed.send_replace(Some(why));
    }

    /// Partitions assigned: each gets a new lease (one still assigned keeps
    /// its own), and writes under it are accepted.
    pub fn assigned(&self, partitions: &[i32]) {
        let mut open = self.open();
        for p in partitions {
            if !open.owned.contains_key(p) {
                open.leases += 1;
                let lease = open.leases;
                open.owned.insert(*p, lease);
            }
        }
    }

    /// Partitions revoked: their leases end, so writes for them are refused
    /// — a worker detached when its drain timed out included, also once the
    /// partition comes back (its new assignment has a new lease). Without
    /// waiting for writes in progress: see [`Transactions::commit_and_revoke`].
    pub fn revoked(&self, partitions: &[i32]) {
        let mut open = self.open();
        for p in partitions {
            open.owned.remove(p);
            open.offsets.remove(p);
        }
    }

    /// The writer of `partition`'s worker: it writes under the partition's
    /// current lease, and only while that lease lasts. Call it when the
    /// worker starts (after the assignment).
    pub fn lease(self: &Arc<Self>, partition: i32) -> Arc<dyn Transaction> {
        let lease = self.open().owned.get(&partition).copied();
        Arc::new(Leased {
            transactions: self.clone(),
            partition,
            lease,
        })
    }

    /// Commits the open transaction, then ends the leases of `partitions`
    /// before any writer goes on: what their workers wrote until now
    /// commits with their offsets, and nothing they write later does. A
    /// failed commit stops the process (see [`Transactions::commit`]); the
    /// leases end either way.
    pub async fn commit_and_revoke(&self, partitions: &[i32]) -> Result<(), TransactionError> {
        let _alone = self.gate.write().await;
        let committed = self.commit_alone().await;
        self.revoked(partitions);
        committed
    }

    /// Commits the open transaction with the offsets written into it, and
    /// begins the next. Writers wait meanwhile.
    pub async fn commit(&self) -> Result<(), TransactionError> {
        let _alone = self.gate.write().await;
        self.commit_alone().await
    }

    /// [`Transactions::commit`], the gate held.
    async fn commit_alone(&self) -> Result<(), TransactionError> {
        if let Some(why) = self.failed.borrow().clone() {
            return Err(why);
        }
        let (offsets, messages) = {
            let mut open = self.open();
            let owned: HashSet<i32> = open.owned.keys().copied().collect();
            let offsets: BTreeMap<i32, i64> = std::mem::take(&mut open.offsets)
                .into_iter()
                .filter(|(p, _)| owned.contains(p))
                .collect();
            (offsets, std::mem::take(&mut open.messages))
        };
        if offsets.is_empty() && messages == 0 {
            return Ok(());
        }
        let offsets_len = offsets.len();
        let producer = self.output.producer().clone();
        let consumer = self.consumer.clone();
        let topic = self.input_topic.clone();
        let timeout = self.timeout;
        let started = std::time::Instant::now();
        let blocking = tokio::task::spawn_blocking(move || -> Result<(), CommitFailure> {
            // Retriable errors (a broker away) are retried for a while, the
            // writers held back meanwhile; then the transaction is given up
            // (aborted, the process stops) rather than hang a shutdown.
            // Each call's timeout is what is left of that time, so the
            // writers wait at most `RETRY_FOR` (and a second) in all.
            let started = std::time::Instant::now();
            let left = || {
                timeout
                    .min(RETRY_FOR.saturating_sub(started.elapsed()))
                    .max(Duration::from_secs(1))
            };
            let call = |what: &str, f: &dyn Fn() -> KafkaResult<()>| loop {
                match f() {
                    Err(e) if retriable(&e) && started.elapsed() < RETRY_FOR => {
                        tracing::warn!("exactly-once: {what} failed, retrying: {e}");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    r => return r.map_err(|e| format!("{what}: {e}")),
                }
            };
            if !offsets.is_empty() {
                let metadata = consumer.group_metadata().ok_or(CommitFailure::Open(
                    "the consumer has no group metadata".to_string(),
                ))?;
                let mut tpl = TopicPartitionList::with_capacity(offsets.len());
                for (p, o) in &offsets {
                    tpl.add_partition_offset(&topic, *p, rdkafka::Offset::Offset(*o))
                        .map_err(|e| CommitFailure::Open(e.to_string()))?;
                }
                call("sending the offsets", &|| {
                    producer.send_offsets_to_transaction(&tpl, &metadata, left())
                })
                .map_err(CommitFailure::Open)?;
            }
            call("committing", &|| producer.commit_transaction(left()))
                .map_err(CommitFailure::Open)?;
            producer
                .begin_transaction()
                .map_err(|e| CommitFailure::Stuck(format!("beginning the next transaction: {e}")))
        });
        // A call stuck past its timeout is left behind on its thread (the
        // producer is not aborted: a second call would wait on the first).
        let result = match tokio::time::timeout(COMMIT_BOUND, blocking).await {
            Ok(joined) => joined.unwrap_or_else(|e| Err(CommitFailure::Stuck(e.to_string()))),
            Err(_) => Err(CommitFailure::Stuck(format!(
                "the commit did not return within {}",
                humantime::format_duration(COMMIT_BOUND)
            ))),
        };
        let took = started.elapsed();
        if took >= SLOW_COMMIT {
            // The writers were held back all this time.
            tracing::warn!(
                ms = took.as_millis() as u64,
                messages,
                partitions = offsets_len,
                "exactly-once: a slow commit held the writers back"
            );
        }
        match result {
            Ok(()) => {
                metrics::counter!(m::TRANSACTIONS, "result" => "committed").increment(1);
                Ok(())
            }
            Err(failure) => {
                let why = match failure {
                    CommitFailure::Open(why) => {
                        let producer = self.output.producer().clone();
                        let aborted = tokio::task::spawn_blocking(move || {
                            producer.abort_transaction(CALL_TIMEOUT)
                        })
                        .await;
                        if let Ok(Err(e)) = aborted {
                            tracing::warn!("exactly-once: abort failed: {e}");
                        }
                        why
                    }
                    CommitFailure::Stuck(why) => why,
                };
                metrics::counter!(m::TRANSACTIONS, "result" => "aborted").increment(1);
                let why = TransactionError::Aborted(why);
                self.fail(why.clone());
                Err(why)
            }
        }
    }

    /// Commits every `interval` until `stop` (a commit under way finishes
    /// first); ends early if a commit fails.
    pub async fn run(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while stop.run_until_cancelled(tick.tick()).await.is_some() {
            if self.commit().await.is_err() {
                return;
            }
        }
    }
}

/// A partition worker's writer: its partition and the lease of the
/// assignment it was started under. A write after that lease ended (the
/// partition was revoked, and perhaps assigned again since, to a new
/// worker) is refused with [`ProduceErrorKind::Fenced`]: a worker that lost
/// its partition writes nothing, however late it runs.
pub struct Leased {
    transactions: Arc<Transactions>,
    partition: i32,
    /// `None`: the partition was not assigned when the worker started.
    lease: Option<u64>,
}

impl Transaction for Leased {
    fn write(
        self: Arc<Self>,
        partition: i32,
        messages: Vec<Outgoing>,
        next_offset: Option<i64>,
    ) -> BoxFuture<'static, Result<(), ProduceError>> {
        let lease = self.lease.filter(|_| partition == self.partition);
        self.transactions
            .clone()
            .write(partition, lease, messages, next_offset)
            .boxed()
    }
}

impl Transactions {
    async fn write(
        self: Arc<Self>,
        partition: i32,
        lease: Option<u64>,
        messages: Vec<Outgoing>,
        next_offset: Option<i64>,
    ) -> Result<(), ProduceError> {
        let _shared = self.gate.read().await;
        if let Some(why) = self.failed.borrow().clone() {
            return Err(ProduceError::transient(why.to_string()));
        }
        let current = self.open().owned.get(&partition).copied();
        if lease.is_none() || current != lease {
            // Revoked since the worker started (and perhaps assigned
            // again, to a new worker): not this writer's to write. The
            // partition's owner reads these messages again from the
            // committed offset; the gate held, no commit can take the
            // lease away while a write under it is in progress.
            metrics::counter!(m::PRODUCE_ERRORS, "kind" => ProduceErrorKind::Fenced.as_str())
                .increment(1);
            return Err(ProduceError::new(
                ProduceErrorKind::Fenced,
                format!(
                    "partition {partition} is no longer this worker's (its lease {lease:?} ended; the current one is {current:?}): {} messages not written",
                    messages.len()
                ),
            ));
        }
        for message in &messages {
            let Some(topic) = self.output.topic(message.destination) else {
                // The worker released what it wrote here: the
                // transaction must not commit without it.
                let e = producer::no_dead_letter_topic();
                self.fail(TransactionError::Write(e.to_string()));
                return Err(e);
            };
            let mut record = producer::record(&topic, message);
            // The gate is held while the queue is full (the message and its
            // offset must not be split by a commit), so the wait is bounded
            // like a commit's retries: then the transaction is given up, and
            // the process stops.
            let queue_full_since = tokio::time::Instant::now();
            loop {
                match self.output.producer().send_result(record) {
                    // Delivery is confirmed by the commit, which fails if it failed.
                    Ok(_delivery) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                        if queue_full_since.elapsed() < RETRY_FOR =>
                    {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) if unlogged(message.destination, &e) => {
                        // A decision topic lacking the partition (not
                        // grown, see `DecisionTopic`): nothing was
                        // enqueued, so the transaction is intact; the
                        // decision stands, only its record is missing.
                        let decisions = crate::pipeline::LoggedDecision::read(&message.payload)
                            .map_or(1, |d| d.len() as u64);
                        metrics::counter!(m::DECISIONS_UNLOGGED).increment(decisions);
                        tracing::debug!(
                            partition,
                            "a decision cannot be written to the decision log: {e}; going on without it"
                        );
                        break;
                    }
                    Err((e, _)) => {
                        let why = TransactionError::Write(format!("cannot enqueue: {e}"));
                        self.fail(why.clone());
                        return Err(ProduceError::new(
                            producer::classify(&e).kind,
                            why.to_string(),
                        ));
                    }
                }
            }
        }
        let mut open = self.open();
        open.messages += messages.len() as u64;
        if let Some(next) = next_offset {
            open.offsets.insert(partition, next);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KafkaSettings;
    use crate::kafka::consumer;
    use bytes::Bytes;
    use rdkafka::mocking::MockCluster;

    fn message() -> Outgoing {
        Outgoing {
            destination: Destination::Sampled,
            key: Some(Bytes::from_static(b"0123456789abcdef0123456789abcdef")),
            payload: Bytes::from_static(b"kept spans"),
            headers: Vec::new(),
        }
    }

    /// A worker whose drain timed out on a revoke runs on,
    /// detached. Its partition comes back to this instance, to a new
    /// worker. The old worker's writes are refused — an error of kind
    /// `fenced`, never `Ok` with nothing written, and never accepted beside
    /// the new worker's — while the new worker's are accepted; and what the
    /// old one wrote while the partition was its own is what commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_that_lost_its_partition_can_write_nothing_even_once_it_comes_back() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("in", 2, 1).expect("input topic");
        cluster.create_topic("out", 1, 1).expect("output topic");
        let settings = KafkaSettings {
            brokers: cluster.bootstrap_servers(),
            input_topic: "in".into(),
            output_topic: "out".into(),
            exactly_once: true,
            transactional_id: Some("fence-test".into()),
            decision_log: false,
            ..KafkaSettings::default()
        };
        let output = KafkaOutput::new(&settings).expect("producer");
        let (consumer, _events) = consumer::subscribe(&settings).expect("consumer");
        let t = Transactions::begin(output, consumer, "in".into())
            .await
            .expect("transactions");
        let write =
            |w: &Arc<dyn Transaction>, next: i64| w.clone().write(0, vec![message()], Some(next));

        t.assigned(&[0, 1]);
        let old = t.lease(0);
        write(&old, 10).await.expect("the owner writes");
        // The revoke: the old worker's drain timed out, it runs on.
        t.commit_and_revoke(&[0]).await.expect("commit");
        let refused = write(&old, 11).await;
        assert_eq!(
            refused.map_err(|e| e.kind),
            Err(ProduceErrorKind::Fenced),
            "a write for a revoked partition is refused"
        );
        // The partition comes back, to a new worker.
        t.assigned(&[0]);
        let new = t.lease(0);
        let refused = write(&old, 12).await;
        assert_eq!(
            refused.map_err(|e| e.kind),
            Err(ProduceErrorKind::Fenced),
            "the detached worker stays fenced after its partition came back"
        );
        write(&new, 20).await.expect("the new worker writes");
        assert_eq!(
            t.open().offsets.get(&0),
            Some(&20),
            "only the new worker's offset is in the open transaction"
        );
        // A partition assigned all along keeps its lease.
        let other = t.lease(1);
        t.assigned(&[1]);
        other
            .clone()
            .write(1, vec![message()], Some(5))
            .await
            .expect("a partition still assigned keeps its lease");
        t.commit().await.expect("commit");
    }
}
