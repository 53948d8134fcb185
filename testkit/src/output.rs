//! Reading an output (or dead-letter) topic back with a consumer of its own.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use tailgate::otlp::{self, TraceId};

use crate::broker::bootstrap;
use crate::names::unique;

/// What the output topic holds.
#[derive(Default, Debug)]
pub struct Output {
    /// trace id → span ids seen (with duplicates counted separately).
    pub spans: HashMap<TraceId, HashSet<[u8; 8]>>,
    pub duplicate_spans: usize,
    pub messages: usize,
    pub json_messages: usize,
    /// Messages whose key is not the hex trace id of all their spans.
    pub bad_keys: usize,
    /// Spans without the tailgate.rule annotation.
    pub unannotated: usize,
    /// rule name → traces kept by it.
    pub rules: HashMap<String, HashSet<TraceId>>,
    /// trace id → the `tailgate.critical_path.service` of each of its spans
    /// that carries one (the critical-path summary: one span a trace).
    pub critical_path: HashMap<TraceId, Vec<String>>,
    /// trace id → output messages that carried its spans.
    pub messages_per_trace: HashMap<TraceId, usize>,
    /// The largest output payload seen, in bytes.
    pub largest_message: usize,
}

/// A consumer of its own group that reads `topic` from the start and commits
/// nothing; it sees committed transactions only (librdkafka's default).
fn read_from_start(topic: &str, name: &str) -> BaseConsumer {
    read_from_start_isolated(topic, name, "read_committed")
}

fn read_from_start_isolated(topic: &str, name: &str, isolation: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique(name))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Reads an output topic with its own consumer.
pub struct OutputReader {
    consumer: BaseConsumer,
    pub output: Output,
}

impl OutputReader {
    pub fn new(topic: &str) -> Self {
        let consumer = read_from_start(topic, "reader");
        Self {
            consumer,
            output: Output::default(),
        }
    }

    /// A reader that also sees messages of open and aborted transactions.
    pub fn uncommitted(topic: &str) -> Self {
        let consumer = read_from_start_isolated(topic, "uncommitted-reader", "read_uncommitted");
        Self {
            consumer,
            output: Output::default(),
        }
    }

    /// Reads whatever arrives within `for_at_most`.
    pub fn poll(&mut self, for_at_most: Duration) {
        let deadline = Instant::now() + for_at_most;
        while Instant::now() < deadline {
            let Some(r) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = r.expect("output message");
            let payload = m.payload().unwrap_or_default();
            let key = m
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            let out = &mut self.output;
            out.messages += 1;
            out.largest_message = out.largest_message.max(payload.len());
            if payload.first() == Some(&b'{') {
                out.json_messages += 1;
            }
            let decoded =
                otlp::decode(Bytes::copy_from_slice(payload)).expect("output decodes as OTLP");
            let mut bad_key = false;
            let traces: HashSet<TraceId> = decoded.spans.iter().map(|(id, _)| *id).collect();
            for id in traces {
                *out.messages_per_trace.entry(id).or_default() += 1;
            }
            for (id, s) in decoded.spans {
                bad_key |= id.to_hex() != key;
                if !out.spans.entry(id).or_default().insert(s.span_id) {
                    out.duplicate_spans += 1;
                }
                match string_attribute(s.encoded(), "tailgate.rule") {
                    Some(rule) => {
                        out.rules.entry(rule).or_default().insert(id);
                    }
                    None => out.unannotated += 1,
                }
                if let Some(service) =
                    string_attribute(s.encoded(), "tailgate.critical_path.service")
                {
                    out.critical_path.entry(id).or_default().push(service);
                }
            }
            out.bad_keys += usize::from(bad_key);
        }
    }

    /// Polls until `done(output)` or the deadline.
    pub fn until(&mut self, within: Duration, mut done: impl FnMut(&Output) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            self.poll(Duration::from_millis(500));
            if done(&self.output) {
                return true;
            }
        }
        false
    }
}

/// The `tailgate.rule` attribute of an encoded span.
/// A string attribute of an encoded span, read as the Collector reads it.
fn string_attribute(span: &[u8], key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message as _;
    let s = opentelemetry_proto::tonic::trace::v1::Span::decode(span).ok()?;
    s.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(v) => Some(v.clone()),
            _ => None,
        }
    })
}

/// Traces in `expected` (id → span count) not found complete in `output`.
pub fn missing(expected: &HashMap<TraceId, usize>, output: &Output) -> Vec<TraceId> {
    expected
        .iter()
        .filter(|(id, n)| output.spans.get(*id).map_or(0, HashSet::len) < **n)
        .map(|(id, _)| *id)
        .collect()
}

/// Reads up to `n` messages of `topic` from the start: (payload, headers).
pub fn read_with_headers(
    topic: &str,
    n: usize,
    within: Duration,
) -> Vec<(Vec<u8>, HashMap<String, String>)> {
    use rdkafka::message::Headers;
    let consumer = read_from_start(topic, "dlq-reader");
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    while out.len() < n && Instant::now() < deadline {
        let Some(r) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = r.expect("message");
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((m.payload().unwrap_or_default().to_vec(), headers));
    }
    out
}

/// One record of a topic, as [`read_topic`] returns it.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Every record of `topic`'s `partitions`, from the beginning to the end
/// each has now, each partition in order; gives up after `within`.
pub fn read_topic(topic: &str, partitions: i32, within: Duration) -> Vec<TopicRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("topic-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("reader");
    let mut ends = HashMap::new();
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        if high > low {
            ends.insert(p, high);
            list.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                .expect("partition");
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&list).expect("assign");
    let deadline = Instant::now() + within;
    while !ends.is_empty() && Instant::now() < deadline {
        let Some(r) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = r.expect("message");
        if m.offset() + 1 >= ends.get(&m.partition()).copied().unwrap_or(0) {
            ends.remove(&m.partition());
        }
        out.push(TopicRecord {
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
        });
    }
    assert!(
        ends.is_empty(),
        "{topic}: not read to its end within {within:?}"
    );
    out
}
