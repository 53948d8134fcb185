//! `tailgate check --sample`: reads the latest messages of a topic and says
//! what they are — encoding, the codec of their batches, whether they are
//! keyed by trace id, spans and traces per message — so that a team can see
//! what its Collectors write before tailgate decides on it.
//!
//! A consumer decompresses without saying how: the codec of each record
//! batch is only in librdkafka's fetch debug line ("Enqueue … messages …
//! (<codec>)"), which names the codec of the last batch of a fetch. The
//! sampler asks for one batch per fetch (`fetch.message.max.bytes=1`: the
//! broker still returns the first batch whole) and reads that line.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::ClientBase;
use crate::otlp::{self, keying};

/// What a sample of a topic holds.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sample {
    pub topic: String,
    pub partitions: usize,
    pub messages: u64,
    /// Messages by encoding: `otlp_proto`, `otlp_json`, or the decode
    /// error's reason for those that are not OTLP.
    pub encodings: BTreeMap<String, u64>,
    /// Record batches by codec as librdkafka names it (`none`, `gzip`,
    /// `snappy`, `lz4`, `zstd`).
    pub codecs: BTreeMap<String, u64>,
    /// Messages keyed by trace id (`keyed`), or why not (`no_key`,
    /// `several_traces`, `other_key`).
    pub keying: BTreeMap<String, u64>,
    /// Spans per OTLP message, traces per OTLP message: one entry each.
    pub spans: Vec<usize>,
    pub traces: Vec<usize>,
}

impl Sample {
    /// Messages not keyed by their trace id.
    pub fn unkeyed(&self) -> u64 {
        self.keying
            .iter()
            .filter(|(k, _)| k.as_str() != "keyed")
            .map(|(_, n)| n)
            .sum()
    }

    /// Takes one message into the sample.
    pub fn add(&mut self, key: Option<&[u8]>, payload: &[u8]) {
        self.messages += 1;
        match otlp::decode(Bytes::copy_from_slice(payload)) {
            Ok(d) => {
                *self
                    .encodings
                    .entry(d.encoding.as_str().into())
                    .or_default() += 1;
                let keyed = keying::unkeyed(key, d.spans.iter().map(|(id, _)| id))
                    .map_or("keyed", keying::Unkeyed::as_str);
                *self.keying.entry(keyed.into()).or_default() += 1;
                self.spans.push(d.spans.len());
                let mut ids: Vec<_> = d.spans.iter().map(|(id, _)| *id).collect();
                ids.sort_unstable();
                ids.dedup();
                self.traces.push(ids.len());
            }
            Err(e) => {
                *self
                    .encodings
                    .entry(format!("not OTLP ({})", e.kind.as_str()))
                    .or_default() += 1;
            }
        }
    }

    /// The report `tailgate check --sample` prints.
    pub fn report(&self) -> String {
        let counts = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                return "-".to_string();
            }
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let spread = |v: &[usize]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            match (v.first(), v.last()) {
                (Some(min), Some(max)) => {
                    format!("min {min}, median {}, max {max}", v[v.len() / 2])
                }
                _ => "-".to_string(),
            }
        };
        let verdict = if self.messages == 0 {
            "the topic holds no message to judge".to_string()
        } else if self.unkeyed() == 0 {
            "keyed by trace id: `tailgate run` can read this topic as it is".to_string()
        } else {
            format!(
                "NOT keyed by trace id ({} of {} messages): the spans of one trace reach several partitions and each decides a fragment. Set `partition_traces_by_id: true` in the Collector's Kafka exporter, or run `tailgate route` from this topic to a keyed one (docs/operations.md)",
                self.unkeyed(),
                self.messages
            )
        };
        format!(
            "sampled {} messages of {} ({} partitions, the latest of each)\n  encoding     {}\n  compression  {} (record batches)\n  keying       {}\n  spans/msg    {}\n  traces/msg   {}\nverdict: {verdict}\n",
            self.messages,
            self.topic,
            self.partitions,
            counts(&self.encodings),
            counts(&self.codecs),
            counts(&self.keying),
            spread(&self.spans),
            spread(&self.traces),
        )
    }
}

/// The codec named at the end of librdkafka's fetch debug line
/// ("… fetch queue (qlen …, <codec>)"), `uncompressed` named `none` as Kafka
/// names it.
pub fn codec_of_fetch_line(message: &str) -> Option<&'static str> {
    // librdkafka prefixes its thread and broker: "[thrd:…]: host:port/1: Enqueue …".
    let message = &message[message.find("Enqueue ")?..];
    let last = message.trim_end().strip_suffix(')')?.rsplit(", ").next()?;
    Some(match last {
        "uncompressed" => "none",
        "gzip" => "gzip",
        "snappy" => "snappy",
        "lz4" => "lz4",
        "zstd" => "zstd",
        _ => return None,
    })
}

/// The sampling consumer's context: counts the codecs the fetch debug lines
/// name, and keeps the other lines quiet.
#[derive(Default)]
struct CodecWatch {
    codecs: Mutex<BTreeMap<String, u64>>,
}

impl ClientContext for CodecWatch {
    fn log(&self, _level: RDKafkaLogLevel, facility: &str, message: &str) {
        if facility != "CONSUME" {
            return;
        }
        let enqueued = message
            .split("Enqueue ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if let (Some(codec), true) = (codec_of_fetch_line(message), enqueued > 0) {
            if let Ok(mut c) = self.codecs.lock() {
                *c.entry(codec.into()).or_default() += 1;
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!("kafka: {error}: {reason}");
    }
}

impl ConsumerContext for CodecWatch {}

/// Reads up to `n` of the latest messages of `topic`, spread evenly over
/// its partitions, without a consumer group's offsets. `options` are
/// librdkafka options (security, ...), applied over the sampler's own.
pub fn sample(
    brokers: &str,
    topic: &str,
    n: u64,
    options: &[(String, String)],
) -> anyhow::Result<Sample> {
    let mut config = ClientBase::given(brokers, options).config(|config| {
        config
            .set("group.id", "tailgate-check")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
    });
    // librdkafka filters its log by the client's level (the rdkafka crate
    // sets it from the `log` crate's, off here): the fetch lines are debug.
    config.set_log_level(RDKafkaLogLevel::Debug);
    config
        .set("debug", "fetch")
        .set("fetch.message.max.bytes", "1")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer<CodecWatch> = config.create_with_context(CodecWatch::default())?;
    let timeout = Duration::from_secs(15);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| anyhow::anyhow!("cannot read the metadata of {topic} from {brokers}: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        anyhow::bail!("topic {topic} does not exist on {brokers} (or has no partitions)");
    }
    let per_partition = n.div_ceil(partitions.len() as u64) as i64;
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| anyhow::anyhow!("cannot read the offsets of {topic}/{p}: {e}"))?;
        let from = (high - per_partition).max(low);
        if from < high {
            tpl.add_partition_offset(topic, p, Offset::Offset(from))?;
            ends.push((p, high));
        }
    }
    let mut s = Sample {
        topic: topic.to_string(),
        partitions: partitions.len(),
        ..Sample::default()
    };
    if !ends.is_empty() {
        consumer.assign(&tpl)?;
    }
    let mut last_progress = Instant::now();
    while s.messages < n && !ends.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let Some(i) = ends.iter().position(|(q, _)| *q == m.partition()) else {
                    continue;
                };
                if m.offset() < ends[i].1 {
                    s.add(m.key(), m.payload().unwrap_or_default());
                }
                if m.offset() + 1 >= ends[i].1 {
                    ends.swap_remove(i);
                }
            }
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            None if last_progress.elapsed() > timeout => {
                // The last offsets may be transaction markers, never delivered.
                break;
            }
            None => {}
        }
    }
    s.codecs = consumer
        .context()
        .codecs
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::Encoding;

    #[test]
    fn the_fetch_line_names_the_batch_codec() {
        let line = "Enqueue 5 message(s) (1234 bytes, 5 ops) on in [0] fetch queue (qlen 0, v2, last_offset 4, 0 ctrl msgs, 0 aborted msgsets, zstd)";
        assert_eq!(codec_of_fetch_line(line), Some("zstd"));
        let prefixed = format!("[thrd:127.0.0.1:9092/1]: 127.0.0.1:9092/1: {line}");
        assert_eq!(codec_of_fetch_line(&prefixed), Some("zstd"));
        let plain = line.replace("zstd)", "uncompressed)");
        assert_eq!(codec_of_fetch_line(&plain), Some("none"));
        assert_eq!(codec_of_fetch_line("Fetch topic in [0] at offset 3"), None);
    }

    #[test]
    fn a_sample_tells_keyed_from_unkeyed_input() {
        use crate::workload::{encode, ShopWorkload};
        let mut w = ShopWorkload::new(3);
        let mut s = Sample::default();
        let t = w.next_trace(1_760_000_000_000_000_000);
        let key = t.truth.trace_id.to_hex();
        for m in &t.messages {
            s.add(Some(key.as_bytes()), &encode(m, Encoding::OtlpProto));
        }
        assert_eq!(s.unkeyed(), 0);
        assert!(s.report().contains("verdict: keyed by trace id"));
        s.add(None, &encode(&t.messages[0], Encoding::OtlpJson));
        s.add(Some(b"x"), b"not otlp");
        assert_eq!(s.keying.get("no_key"), Some(&1));
        assert_eq!(s.unkeyed(), 1);
        assert_eq!(s.encodings.get("otlp_json"), Some(&1));
        assert_eq!(s.encodings.get("not OTLP (not_otlp)"), Some(&1));
        assert!(s.report().contains("NOT keyed by trace id (1 of"));
    }
}
