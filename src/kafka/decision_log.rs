//! The decision log on Kafka: the topic is made ready at start (created if
//! it does not exist, with as many partitions as the input), and a
//! partition's records are read back when its worker starts (the
//! [`DecisionSource`] port). Writing goes through the output producer, as
//! [`crate::pipeline::Destination::Decisions`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::ClientEvents;
use crate::config::KafkaSettings;
use crate::pipeline::{DecisionSource, LoggedDecision, Recalled};

const TIMEOUT: Duration = Duration::from_secs(15);

/// Partitions of `topic`, or `None` if it does not exist.
fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Option<usize>, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| format!("cannot read the metadata of {topic}: {e}"))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0))
}

fn reader(settings: &KafkaSettings, exactly_once: bool) -> Result<BaseConsumer, KafkaError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", format!("{}-decision-log", settings.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // An offset found by time and gone by retention since: read from
        // what is left, not skip to the end.
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false")
        .set(
            "isolation.level",
            if exactly_once {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        );
    super::apply(&mut config, &settings.librdkafka_options);
    config.create()
}

/// Makes the decision topic ready: creates it if it does not exist — as
/// many partitions as the input topic, `cleanup.policy=compact,delete`,
/// `retention.ms` the larger of `ttl` and a day — and checks that one that
/// exists has at least as many partitions as the input (a trace's record
/// goes to its input partition's number). Blocking: call it off the runtime.
pub fn ensure_topic(settings: &KafkaSettings, topic: &str, ttl: Duration) -> Result<(), String> {
    let consumer = reader(settings, false).map_err(|e| e.to_string())?;
    let input = partitions(&consumer, &settings.input_topic)?.ok_or_else(|| {
        format!(
            "the input topic {} does not exist (the decision log needs its partition count)",
            settings.input_topic
        )
    })?;
    match partitions(&consumer, topic)? {
        Some(n) if n >= input => return Ok(()),
        Some(n) => {
            return Err(format!(
                "kafka.decision_topic {topic} has {n} partitions, fewer than the {input} of the input topic {}: a trace's decision goes to its input partition's number; add partitions to it, or name another topic",
                settings.input_topic
            ))
        }
        None => {}
    }
    let retention = ttl
        .max(Duration::from_secs(24 * 3600))
        .as_millis()
        .to_string();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    super::apply(&mut config, &settings.librdkafka_options);
    let admin: AdminClient<ClientEvents> = config
        .create_with_context(ClientEvents::new("admin"))
        .map_err(|e| e.to_string())?;
    let new = NewTopic::new(topic, input as i32, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact,delete")
        .set("retention.ms", &retention);
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    // The admin client's own thread drives the request.
    let results = futures::executor::block_on(admin.create_topics([&new], &options))
        .map_err(|e| format!("cannot create kafka.decision_topic {topic}: {e}"))?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(
                topic,
                partitions = input,
                retention_ms = %retention,
                "created the decision log's topic (cleanup.policy=compact,delete)"
            ),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, e)) => {
                return Err(format!(
                    "cannot create kafka.decision_topic {topic} ({e}): create it with {input} partitions, cleanup.policy=compact,delete and retention.ms={retention}, or set kafka.decision_log: false"
                ))
            }
        }
    }
    Ok(())
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

    /// The latest record of each trace in `partition`, from the first made
    /// at or after `since_ms` to the partition's end (in exactly-once mode,
    /// its last committed transaction). Blocking.
    fn read(&self, partition: i32, since_ms: i64) -> Result<Vec<Recalled>, String> {
        let consumer = reader(&self.settings, self.exactly_once).map_err(|e| e.to_string())?;
        let topic = self.topic.as_str();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(since_ms))
            .map_err(|e| e.to_string())?;
        let found = consumer.offsets_for_times(tpl, TIMEOUT).map_err(|e| {
            format!("cannot find where {topic}/{partition} reaches {since_ms}: {e}")
        })?;
        let entry = found
            .find_partition(topic, partition)
            .ok_or_else(|| format!("no answer for {topic}/{partition}"))?;
        entry.error().map_err(|e| {
            format!("cannot find where {topic}/{partition} reaches {since_ms}: {e}")
        })?;
        let start = match entry.offset() {
            Offset::Offset(o) => o,
            // No record that recent.
            Offset::End => return Ok(Vec::new()),
            other => {
                return Err(format!(
                    "{topic}/{partition}: the offset for {since_ms} is {other:?}"
                ))
            }
        };
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map_err(|e| format!("cannot read the offsets of {topic}/{partition}: {e}"))?;
        if start >= high {
            return Ok(Vec::new());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(start))
            .map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        // In offset order: a trace's later record is remembered over its
        // earlier one. Compact, with the rule names interned.
        let mut read = Vec::new();
        let mut rules = HashMap::new();
        // Bounded: a stalled broker does not hold the partition forever.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if Instant::now() > deadline {
                return Err(format!(
                    "reading {topic}/{partition} from offset {start} did not reach its end within 300 s"
                ));
            }
            match consumer.poll(Duration::from_millis(500)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(format!("reading {topic}/{partition}: {e}")),
                Some(Ok(m)) => {
                    let done = m.offset() + 1 >= high;
                    if let Some(d) = m.payload().and_then(LoggedDecision::decode) {
                        if d.decided_at_ms >= since_ms {
                            read.extend(d.recalled(&mut rules));
                        }
                    }
                    if done && !self.exactly_once {
                        break;
                    }
                }
            }
        }
        Ok(read)
    }
}

impl DecisionSource for KafkaDecisionLog {
    fn load(
        &self,
        partition: i32,
        since_ms: i64,
    ) -> BoxFuture<'static, Result<Vec<Recalled>, String>> {
        let log = self.clone();
        async move {
            tokio::task::spawn_blocking(move || log.read(partition, since_ms))
                .await
                .map_err(|e| e.to_string())?
        }
        .boxed()
    }
}
