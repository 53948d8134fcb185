//! The `kafka` section: brokers, topics, the consumer group, delivery and
//! librdkafka options.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Kafka connection and topics.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Consumer group shared by all tailgate instances of one deployment.
    pub group_id: String,
    /// Topic the Collector's Kafka exporter writes spans to.
    pub input_topic: String,
    /// Topic kept spans are written to.
    pub output_topic: String,
    /// Producer compression codec.
    pub compression: Compression,
    /// How often stored offsets are committed.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Topic that receives malformed input messages unchanged, with headers
    /// saying why (`tailgate.error.reason`, `tailgate.error.detail`,
    /// `tailgate.source.partition`, `tailgate.source.offset`). Off when absent.
    pub dead_letter_topic: Option<String>,
    /// The decision log: every decision is written to `decision_topic`,
    /// keyed by trace id, on the input partition's number, and read back by
    /// a partition's next worker, so that late spans follow their trace's
    /// decision across restarts and rebalances.
    pub decision_log: bool,
    /// The decision log's topic. Default: `<group_id>_decisions` — a
    /// deployment's own: two groups reading one input topic (say, with
    /// different rules) must not follow each other's decisions.
    pub decision_topic: Option<String>,
    /// How long a decision's record may take to reach the decision log
    /// before it is given up: the decision stands, the trace's offsets are
    /// released, the record is counted as unlogged, and the partition logs
    /// no decision for as long again (so a log partition that cannot be
    /// written — below `min.insync.replicas` — never holds the input).
    #[serde(with = "humantime_serde")]
    pub decision_log_timeout: Duration,
    /// Produced messages awaiting acknowledgement, per partition, before
    /// reading from that partition pauses.
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight produces before giving up (the
    /// offsets of anything undelivered stay uncommitted).
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Exactly-once mode: kept spans and input offsets commit together in one
    /// Kafka transaction per `commit_interval`; read the output with
    /// `isolation.level=read_committed`.
    pub exactly_once: bool,
    /// The producer's `transactional.id` in exactly-once mode: unique per
    /// instance and stable across its restarts (a restarted instance then
    /// aborts its predecessor's open transaction at once instead of after
    /// `transaction.timeout.ms`). Default: `<group_id>-<host name>`.
    pub transactional_id: Option<String>,
    /// Static membership: the consumer's `group.instance.id`, unique per
    /// instance and stable across its restarts (a StatefulSet pod name). An
    /// instance that restarts within `session.timeout.ms` gets its
    /// partitions back without a rebalance; one that stops does not leave
    /// the group, so its partitions wait for it up to that timeout.
    pub group_instance_id: Option<String>,
    /// Raw librdkafka options for both consumer and producer (security, SASL...),
    /// written as a list of `name=value` so that dotted names stay intact.
    pub librdkafka_options: Vec<String>,
    /// Raw librdkafka options for the consumer only, applied last.
    pub consumer_options: Vec<String>,
    /// Raw librdkafka options for the producer only, applied last.
    pub producer_options: Vec<String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "tailgate".into(),
            input_topic: "otlp_spans".into(),
            output_topic: "otlp_spans_sampled".into(),
            compression: Compression::Lz4,
            commit_interval: Duration::from_secs(1),
            dead_letter_topic: None,
            decision_log: true,
            decision_topic: None,
            decision_log_timeout: Duration::from_secs(30),
            max_in_flight: 10_000,
            drain_timeout: Duration::from_secs(30),
            exactly_once: false,
            transactional_id: None,
            group_instance_id: None,
            librdkafka_options: Vec::new(),
            consumer_options: Vec::new(),
            producer_options: Vec::new(),
        }
    }
}

impl KafkaSettings {
    /// The decision log's topic, if the log is on.
    pub fn decision_topic(&self) -> Option<String> {
        self.decision_log.then(|| {
            self.decision_topic
                .clone()
                .unwrap_or_else(|| format!("{}_decisions", self.group_id))
        })
    }

    /// The producer's `transactional.id` in exactly-once mode.
    pub fn transactional_id(&self) -> String {
        if let Some(id) = &self.transactional_id {
            return id.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "tailgate".into());
        format!("{}-{host}", self.group_id)
    }

    /// Parses `name=value` option lists, with each value's `${env:NAME}`
    /// (an environment variable) and `${file:PATH}` (a file's contents,
    /// without its trailing line break) put in — so that a secret such as
    /// `sasl.password` comes from a Kubernetes Secret mounted as a file or
    /// an environment variable, never written in a settings file. A
    /// variable that is not set or a file that cannot be read is an error
    /// naming it (never its value).
    pub fn options(list: &[String]) -> Result<BTreeMap<String, String>, String> {
        list.iter()
            .map(|o| match o.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    let k = k.trim();
                    let v = expand(v.trim()).map_err(|e| format!("{k}: {e}"))?;
                    Ok((k.to_string(), v))
                }
                _ => Err(format!("{:?} is not `name=value`", redacted(o))),
            })
            .collect()
    }

    /// This section's own checks.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.max_in_flight == 0 {
            return Err("kafka.max_in_flight must be at least 1".into());
        }
        if self.input_topic == self.output_topic {
            return Err(format!(
                "kafka.input_topic and kafka.output_topic are both {:?}; tailgate would read its own output",
                self.input_topic
            ));
        }
        if self
            .group_instance_id
            .as_ref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return Err(
                "kafka.group_instance_id must not be empty (leave it out for dynamic membership)"
                    .into(),
            );
        }
        if let Some(dlq) = &self.dead_letter_topic {
            if dlq.trim().is_empty() || *dlq == self.input_topic || *dlq == self.output_topic {
                return Err(format!(
                    "kafka.dead_letter_topic ({dlq:?}) must be a topic of its own, not empty, the input or the output"
                ));
            }
        }
        if let Some(log) = self.decision_topic() {
            let taken = [
                Some(&self.input_topic),
                Some(&self.output_topic),
                self.dead_letter_topic.as_ref(),
            ];
            if log.trim().is_empty() || taken.contains(&Some(&log)) {
                return Err(format!(
                    "kafka.decision_topic ({log:?}) must be a topic of its own, not empty, the input, the output or the dead-letter topic (kafka.decision_log: false turns the log off)"
                ));
            }
        }
        for (name, list) in [
            ("kafka.librdkafka_options", &self.librdkafka_options),
            ("kafka.consumer_options", &self.consumer_options),
            ("kafka.producer_options", &self.producer_options),
        ] {
            Self::options(list).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }
}

/// `value` with every `${env:NAME}` and `${file:PATH}` replaced; `$${`
/// writes a literal `${`.
fn expand(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            // `$${`: a literal `${`.
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let inner = &rest[at + 2..];
        let end = inner
            .find('}')
            .ok_or_else(|| format!("an unclosed `${{` in {value:?}"))?;
        let (what, arg) = inner[..end].split_once(':').ok_or_else(|| {
            format!(
                "`${{{}}}` is neither `${{env:NAME}}` nor `${{file:PATH}}`",
                &inner[..end]
            )
        })?;
        match what {
            "env" => out.push_str(&std::env::var(arg).map_err(|_| {
                format!("the environment variable {arg} (named by ${{env:{arg}}}) is not set")
            })?),
            "file" => {
                let text = std::fs::read_to_string(arg)
                    .map_err(|e| format!("cannot read {arg} (named by ${{file:{arg}}}): {e}"))?;
                out.push_str(
                    text.strip_suffix('\n')
                        .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t)),
                );
            }
            other => {
                return Err(format!(
                    "`${{{other}:…}}`: only `${{env:NAME}}` and `${{file:PATH}}` are expanded"
                ))
            }
        }
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An option as it may be shown: a value of a name that holds a secret is
/// not.
fn redacted(option: &str) -> String {
    let secret = |s: &str| s.contains("password") || s.contains("secret");
    match option.split_once('=') {
        Some((k, _)) if secret(k) => format!("{k}=…"),
        None if secret(option) => "an option about a password or secret (not shown)".into(),
        _ => option.to_string(),
    }
}

/// The producer's compression codec (librdkafka's `compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    /// Built in (the rdkafka crate's `zstd` feature), as gzip is (`libz`).
    Zstd,
}

impl Compression {
    /// The value of librdkafka's `compression.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}
