//! Topics on the test broker, and producing to them.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tailgate::otlp::Encoding;
use tailgate::workload::{encode, GeneratedTrace};

use crate::broker::bootstrap;

pub async fn create_topic(name: &str, partitions: i32) {
    create_topic_with(name, partitions, &[]).await
}

/// Creates a topic with topic-level settings (`max.message.bytes`, ...).
pub async fn create_topic_with(name: &str, partitions: i32, config: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in config {
        topic = topic.set(k, v);
    }
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

/// Grows `name` to `partitions` partitions (Kafka's CreatePartitions), as
/// an operator scaling out does.
pub async fn add_partitions(name: &str, partitions: usize) {
    use rdkafka::admin::NewPartitions;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let results = admin
        .create_partitions(
            [&NewPartitions::new(name, partitions)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .expect("create partitions");
    for r in results {
        r.expect("partitions added");
    }
}

/// The partitions of `name` on the test broker, `None` if it does not exist.
pub fn partition_count(name: &str) -> Option<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(name), Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == name && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces one message per resource and trace, keyed by trace id, as the
/// Collector's exporter does with `partition_traces_by_id`. `encoding_of`
/// picks each trace's encoding.
pub async fn produce_traces(
    topic: &str,
    traces: &[GeneratedTrace],
    encoding_of: impl Fn(usize) -> Encoding,
) {
    produce_traces_stamped(topic, traces, encoding_of, None).await
}

/// [`produce_traces`] with every message's timestamp set to `stamp_ms`
/// (milliseconds since the Unix epoch; `None`: when it is produced) — a
/// producer that wrote them then, or one whose clock says so.
pub async fn produce_traces_stamped(
    topic: &str,
    traces: &[GeneratedTrace],
    encoding_of: impl Fn(usize) -> Encoding,
    stamp_ms: Option<i64>,
) {
    let p = producer();
    let mut pending = Vec::new();
    for (i, t) in traces.iter().enumerate() {
        let key = t.truth.trace_id.to_hex();
        for m in &t.messages {
            let payload = encode(m, encoding_of(i));
            let p = p.clone();
            let key = key.clone();
            let topic = topic.to_string();
            pending.push(tokio::spawn(async move {
                let mut record = FutureRecord::to(&topic).key(&key).payload(&payload);
                if let Some(ms) = stamp_ms {
                    record = record.timestamp(ms);
                }
                p.send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| e)
            }));
        }
    }
    for h in pending {
        h.await.expect("join").expect("produced");
    }
}

pub async fn produce_raw(topic: &str, key: &str, payload: &[u8]) {
    producer()
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produced");
}

/// Produces `messages` (key, payload) in order, with one producer, to
/// partition 0 of `topic`.
pub async fn produce_in_order(topic: &str, messages: &[(String, Vec<u8>)]) {
    produce_to(topic, 0, messages).await
}

/// Produces `messages` (key, payload) in order, with one producer, to
/// `partition` of `topic`, whatever their keys hash to.
pub async fn produce_to(topic: &str, partition: i32, messages: &[(String, Vec<u8>)]) {
    let p = producer();
    for (key, payload) in messages {
        p.send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .partition(partition),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produced");
    }
}
