//! The decision log on Kafka: the topic is made ready at start (created if
//! it does not exist, with as many partitions as the input) and grown when
//! the input has more partitions ([`DecisionTopic`]), and a
//! partition's records are read back when its worker starts (the
//! [`DecisionSource`] port). Writing goes through the output producer, as
//! [`crate::pipeline::Destination::Decisions`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::Client;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::producer::OutputProducer;
use super::{ClientBase, ClientEvents};
use crate::config::KafkaSettings;
use crate::pipeline::{
    DecisionSource, LatestRecords, LoadError, LoadErrorKind, LoggedDecision, Recalled,
};

const TIMEOUT: Duration = Duration::from_secs(15);

/// How long reading a partition's records back may take.
const READ_BACK_LIMIT: Duration = Duration::from_secs(300);

/// What went wrong with the decision log on Kafka.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionLogError {
    /// A client could not be made, or the broker could not be asked (or
    /// did not answer, or answered with an error).
    #[error("{what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: KafkaError,
    },
    /// An answer the log cannot go by.
    #[error("{0}")]
    Unexpected(String),
    /// The input topic does not exist: the log needs its partition count.
    #[error("the input topic {0} does not exist (the decision log needs its partition count)")]
    NoInputTopic(String),
    /// The broker refused to create the topic.
    #[error("cannot create kafka.decision_topic {topic} ({code}): create it with {partitions} partitions, cleanup.policy=delete and retention.ms={retention_ms}, or set kafka.decision_log: false")]
    NotCreated {
        topic: String,
        code: RDKafkaErrorCode,
        partitions: usize,
        retention_ms: String,
    },
    /// Reading back was cancelled: its partition went.
    #[error("reading {topic}/{partition} back was cancelled")]
    Cancelled { topic: String, partition: i32 },
    /// Reading back did not reach the partition's end in time.
    #[error("reading {topic}/{partition} from offset {from} did not reach its end within {} s", READ_BACK_LIMIT.as_secs())]
    TooSlow {
        topic: String,
        partition: i32,
        from: i64,
    },
}

impl DecisionLogError {
    fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> Self {
        let what = what.into();
        move |source| Self::Kafka { what, source }
    }

    /// What the core's port is told.
    fn load_error(self) -> LoadError {
        let kind = match &self {
            Self::Cancelled { .. } => LoadErrorKind::Cancelled,
            Self::TooSlow { .. } => LoadErrorKind::TooSlow,
            _ => LoadErrorKind::Unavailable,
        };
        LoadError {
            kind,
            detail: self.to_string(),
        }
    }
}

/// Partitions of `topic` as `client` sees them (its metadata is refreshed),
/// or `None` if it does not exist.
fn partitions<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
) -> Result<Option<usize>, DecisionLogError> {
    let metadata = client
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(DecisionLogError::kafka(format!(
            "cannot read the metadata of {topic}"
        )))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0))
}

fn reader(settings: &KafkaSettings, exactly_once: bool) -> Result<BaseConsumer, KafkaError> {
    let config = ClientBase::of(settings, &[])?.config(|config| {
        config
            .set("group.id", format!("{}-decision-log", settings.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            // An offset found by time and gone by retention since: read from
            // what is left, not skip to the end.
            .set("auto.offset.reset", "earliest")
            .set("allow.auto.create.topics", "false")
            // Read back a little at a time: librdkafka's default prefetch
            // (64 MiB a partition) is outside every budget, and twelve
            // partitions assigned at once would each hold it.
            .set("queued.max.messages.kbytes", "1024")
            .set("queued.min.messages", "1000")
            .set("fetch.max.bytes", "1048576")
            .set("max.partition.fetch.bytes", "1048576")
            .set(
                "isolation.level",
                if exactly_once {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            );
    });
    config.create()
}

/// The decision topic, kept with at least as many partitions as the input:
/// a trace's record goes to its input partition's number, so a partition
/// added to the input (scaling out) needs its twin here before its worker
/// logs a decision. Made ready at start ([`DecisionTopic::ensure`]) and
/// checked again whenever input partitions are assigned
/// ([`DecisionTopic::cover`]); grown with CreatePartitions where it lacks
/// some. Where it cannot be grown (not authorised, say), tailgate says what
/// to run and goes on: the records for the missing partitions are counted
/// as unlogged ([`crate::metrics::DECISIONS_UNLOGGED`]), the input is not
/// held for them.
pub struct DecisionTopic {
    name: String,
    input: String,
    brokers: String,
    /// `retention.ms` of a topic this creates.
    retention_ms: String,
    /// Reads metadata without creating topics, and grows the topic.
    admin: AdminClient<ClientEvents>,
    /// The producer that writes the records: its view of the topic's
    /// partitions is refreshed after the topic grew (librdkafka fails a
    /// record for a partition it does not know of, and would otherwise
    /// learn of it only at its next periodic metadata refresh).
    producer: OutputProducer,
    /// Partitions the topic is known to have: a partition below this needs
    /// no look at the broker.
    known: AtomicUsize,
}

/// The decision topic lacks partitions it could not be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kafka.decision_topic {topic} has {has} partitions and the input needs {needs}, and it cannot be grown ({why}); until it is, decisions of input partitions {has} and up are not logged (counted in tailgate_decisions_unlogged_total, the input is not held for them). Grow it: kafka-topics.sh --bootstrap-server {brokers} --alter --topic {topic} --partitions {needs}")]
pub struct Lacking {
    pub topic: String,
    pub brokers: String,
    pub has: usize,
    pub needs: usize,
    pub why: String,
}

impl DecisionTopic {
    /// Makes the decision topic ready, blocking (call it off the runtime):
    /// creates it if it does not exist — as many partitions as the input
    /// topic, `cleanup.policy=delete`, `retention.ms` the larger of
    /// `ttl` and a day — and grows one that exists to the input's partition
    /// count. An error only if the topic cannot be read or created; one
    /// that cannot be grown is logged with what to run (see [`Lacking`]),
    /// and the run goes on.
    pub fn ensure(
        settings: &KafkaSettings,
        topic: &str,
        ttl: Duration,
        producer: OutputProducer,
    ) -> Result<Self, DecisionLogError> {
        let config = ClientBase::of(settings, &[])
            .map_err(DecisionLogError::kafka("the admin client's options"))?
            .config(|config| {
                // Reading the topic's metadata must not create it with the
                // broker's default partition count.
                config.set("allow.auto.create.topics", "false");
            });
        let admin: AdminClient<ClientEvents> = config
            .create_with_context(ClientEvents::new("admin"))
            .map_err(DecisionLogError::kafka("cannot make the admin client"))?;
        let retention_ms = ttl
            .max(Duration::from_secs(24 * 3600))
            .as_millis()
            .to_string();
        let this = Self {
            name: topic.to_string(),
            input: settings.input_topic.clone(),
            brokers: settings.brokers.clone(),
            retention_ms,
            admin,
            producer,
            known: AtomicUsize::new(0),
        };
        let input = this
            .input_partitions()?
            .ok_or_else(|| DecisionLogError::NoInputTopic(settings.input_topic.clone()))?;
        match this.partitions(&this.name)? {
            Some(_) => {}
            None => this.create(input)?,
        }
        if let Err(e) = this.cover(input) {
            match e {
                CoverError::Lacking(l) => tracing::error!("{l}"),
                CoverError::Other(e) => return Err(e),
            }
        }
        Ok(this)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Partitions of `topic`, or `None` if it does not exist.
    fn partitions(&self, topic: &str) -> Result<Option<usize>, DecisionLogError> {
        partitions(self.admin.inner(), topic)
    }

    fn input_partitions(&self) -> Result<Option<usize>, DecisionLogError> {
        self.partitions(&self.input)
    }

    fn create(&self, count: usize) -> Result<(), DecisionLogError> {
        let new = NewTopic::new(&self.name, count as i32, TopicReplication::Fixed(-1))
            // Batches are keyed uniquely: nothing to compact.
            .set("cleanup.policy", "delete")
            .set("retention.ms", &self.retention_ms);
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        // The admin client's own thread drives the request.
        let results = futures::executor::block_on(self.admin.create_topics([&new], &options))
            .map_err(DecisionLogError::kafka(format!(
                "cannot create kafka.decision_topic {}",
                self.name
            )))?;
        for result in results {
            match result {
                Ok(_) => tracing::info!(
                    topic = self.name,
                    partitions = count,
                    retention_ms = %self.retention_ms,
                    "created the decision log's topic (cleanup.policy=delete)"
                ),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(DecisionLogError::NotCreated {
                        topic: self.name.clone(),
                        code,
                        partitions: count,
                        retention_ms: self.retention_ms.clone(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Makes sure the topic has at least `needed` partitions — and as many
    /// as the input has now, so that one growth covers every partition
    /// added at once — growing it if it has fewer, and lets the producer
    /// know. Cheap when they are known to exist. Blocking.
    pub fn cover(&self, needed: usize) -> Result<(), CoverError> {
        if needed <= self.known.load(Ordering::Relaxed) {
            return Ok(());
        }
        let needs = needed.max(self.input_partitions()?.unwrap_or(0));
        let has = match self.partitions(&self.name)? {
            Some(n) => n,
            None => {
                // Deleted under a running process: made again.
                self.create(needs)?;
                0
            }
        };
        if has < needs {
            self.grow(has, needs)?;
        }
        // The producer learns of the partitions now, not at its next
        // periodic metadata refresh. Best effort: a producer that cannot
        // reach its brokers now (an outage of the output) learns of them at
        // its next refresh, and until then the records of the new
        // partitions are retried or counted as unlogged.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match partitions(self.producer.client(), &self.name) {
                Ok(Some(seen)) if seen >= needs => break,
                Err(e) => {
                    tracing::warn!(
                        topic = self.name,
                        "the producer cannot see the decision topic's partitions yet: {e}"
                    );
                    break;
                }
                Ok(seen) if Instant::now() > deadline => {
                    tracing::warn!(
                        topic = self.name,
                        needs,
                        sees = seen.unwrap_or(0),
                        "the producer does not see all of the decision topic's partitions yet"
                    );
                    break;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        self.known.fetch_max(needs, Ordering::Relaxed);
        Ok(())
    }

    /// [`DecisionTopic::cover`] for the input's partitions, whatever is
    /// known: run periodically, it finds a topic deleted (made again) or
    /// deleted and auto-created by the broker with too few partitions
    /// (grown), and the producer learns of it.
    pub fn recheck(&self) -> Result<(), CoverError> {
        self.known.store(0, Ordering::Relaxed);
        self.cover(1)
    }

    /// CreatePartitions: `has` → `needs`.
    fn grow(&self, has: usize, needs: usize) -> Result<(), CoverError> {
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let growth = NewPartitions::new(&self.name, needs);
        let lacking = |why: String| {
            CoverError::Lacking(Lacking {
                topic: self.name.clone(),
                brokers: self.brokers.clone(),
                has,
                needs,
                why,
            })
        };
        let results =
            futures::executor::block_on(self.admin.create_partitions([&growth], &options))
                .map_err(|e| lacking(e.to_string()))?;
        for result in results {
            match result {
                Ok(_) => {}
                // Another instance grew it first (to `needs` or more).
                Err((_, RDKafkaErrorCode::InvalidPartitions)) => {}
                Err((_, e)) => return Err(lacking(e.to_string())),
            }
        }
        // The broker's metadata catches up with the growth.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let now = self.partitions(&self.name)?.unwrap_or(0);
            if now >= needs {
                tracing::info!(
                    topic = self.name,
                    from = has,
                    to = now,
                    "grew the decision log's topic to cover the input's partitions"
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(lacking(format!(
                    "it still has {now} partitions {} s after it was grown",
                    TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Why [`DecisionTopic::cover`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoverError {
    /// The topic has fewer partitions than needed and cannot be grown.
    #[error(transparent)]
    Lacking(#[from] Lacking),
    /// The broker could not be asked (or did not answer).
    #[error(transparent)]
    Other(#[from] DecisionLogError),
}

/// Reads a partition's decisions back from the log.
#[derive(Clone)]
pub struct KafkaDecisionLog {
    settings: KafkaSettings,
    topic: String,
    exactly_once: bool,
}

impl KafkaDecisionLog {
    pub fn new(settings: &KafkaSettings, topic: String) -> Self {
        Self {
            settings: settings.clone(),
            topic,
            exactly_once: settings.exactly_once,
        }
    }

    /// The records of `partition`, from the first made at or after
    /// `since_ms` to the partition's end (in exactly-once mode, its last
    /// committed transaction), the latest `at_most` of them. Blocking; ends
    /// early, with an error, once `cancel` is set.
    fn read(
        &self,
        partition: i32,
        since_ms: i64,
        at_most: usize,
        cancel: &AtomicBool,
    ) -> Result<Vec<Recalled>, DecisionLogError> {
        let topic = self.topic.as_str();
        let consumer = reader(&self.settings, self.exactly_once).map_err(
            DecisionLogError::kafka("cannot make the decision log's reader"),
        )?;
        let finding = || format!("cannot find where {topic}/{partition} reaches {since_ms}");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(since_ms))
            .map_err(DecisionLogError::kafka(finding()))?;
        let found = consumer
            .offsets_for_times(tpl, TIMEOUT)
            .map_err(DecisionLogError::kafka(finding()))?;
        let entry = found.find_partition(topic, partition).ok_or_else(|| {
            DecisionLogError::Unexpected(format!("no answer for {topic}/{partition}"))
        })?;
        entry.error().map_err(DecisionLogError::kafka(finding()))?;
        let start = match entry.offset() {
            Offset::Offset(o) => o,
            // No record that recent.
            Offset::End => return Ok(Vec::new()),
            other => {
                return Err(DecisionLogError::Unexpected(format!(
                    "{topic}/{partition}: the offset for {since_ms} is {other:?}"
                )))
            }
        };
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map_err(DecisionLogError::kafka(format!(
                "cannot read the offsets of {topic}/{partition}"
            )))?;
        if start >= high {
            return Ok(Vec::new());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(start))
            .and_then(|()| consumer.assign(&tpl))
            .map_err(DecisionLogError::kafka(format!(
                "cannot read {topic}/{partition} from {start}"
            )))?;
        // In offset order: a trace's later record is remembered over its
        // earlier one. Compact, with the rule names interned.
        let mut read = LatestRecords::new(at_most);
        let mut rules = HashMap::new();
        // Bounded: a stalled broker does not hold the partition forever.
        let deadline = Instant::now() + READ_BACK_LIMIT;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(DecisionLogError::Cancelled {
                    topic: topic.to_string(),
                    partition,
                });
            }
            if Instant::now() > deadline {
                return Err(DecisionLogError::TooSlow {
                    topic: topic.to_string(),
                    partition,
                    from: start,
                });
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    return Err(DecisionLogError::kafka(format!(
                        "reading {topic}/{partition}"
                    ))(e))
                }
                Some(Ok(m)) => {
                    let done = m.offset() + 1 >= high;
                    let decisions = m.payload().and_then(LoggedDecision::read);
                    for d in decisions.into_iter().flatten() {
                        if d.decided_at_ms >= since_ms {
                            if let Some(r) = d.recalled(&mut rules) {
                                read.push(r);
                            }
                        }
                    }
                    if done && !self.exactly_once {
                        break;
                    }
                }
            }
        }
        if read.dropped > 0 {
            metrics::counter!(crate::metrics::DECISIONS_FORGOTTEN).increment(read.dropped);
            tracing::warn!(
                partition,
                dropped = read.dropped,
                kept = at_most,
                "the decision log holds more decisions of the last decided_ttl than decision.remembered_bytes remembers: the oldest are forgotten"
            );
        }
        Ok(read.into_vec())
    }
}

/// Sets its flag when dropped: the read-back it belongs to stops.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl DecisionSource for KafkaDecisionLog {
    fn load(
        &self,
        partition: i32,
        since_ms: i64,
        at_most: usize,
    ) -> BoxFuture<'static, Result<Vec<Recalled>, LoadError>> {
        let log = self.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let guard = CancelOnDrop(cancel.clone());
        async move {
            let _guard = guard;
            tokio::task::spawn_blocking(move || log.read(partition, since_ms, at_most, &cancel))
                .await
                .map_err(|e| LoadError {
                    kind: LoadErrorKind::Unavailable,
                    detail: e.to_string(),
                })?
                .map_err(DecisionLogError::load_error)
        }
        .boxed()
    }
}
