//! Settings and rule files.
//!
//! One file per environment, `policies/<env>.yaml`, layered over
//! `policies/default.yaml`, then an optional extra file, then environment
//! variables `TAILGATE__<SECTION>__<KEY>` (e.g. `TAILGATE__KAFKA__BROKERS`).
//! Layering is done by the `config` crate. Each file is first read on its own,
//! so a mistake is reported with its file, line and column; then the merged
//! settings are validated, naming the rule and field at fault.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::buffer::BufferConfig;
use crate::clock::{ClockConfig, ClockMode};
use crate::rules::{RuleError, RuleSet, RuleSpec};

/// Everything tailgate reads from its settings and rule files.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Brokers, topics, consumer group, librdkafka options.
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// Memory budget and queues.
    #[serde(default)]
    pub buffer: BufferSettings,
    /// When traces are decided.
    #[serde(default)]
    pub decision: DecisionSettings,
    /// The sampling rules, in order; the first that matches decides.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// The HTTP endpoint for `/metrics`, `/healthz`, `/readyz`.
    #[serde(default)]
    pub metrics: MetricsSettings,
}

const fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}
const fn default_max_in_flight() -> usize {
    10_000
}
const fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_group_id() -> String {
    "tailgate".into()
}
fn default_input_topic() -> String {
    "otlp_spans".into()
}
fn default_output_topic() -> String {
    "otlp_spans_sampled".into()
}
fn default_compression() -> String {
    "lz4".into()
}

/// Kafka connection and topics.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port]`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Consumer group shared by all tailgate instances of one deployment.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Topic the Collector's Kafka exporter writes spans to.
    #[serde(default = "default_input_topic")]
    pub input_topic: String,
    /// Topic kept spans are written to.
    #[serde(default = "default_output_topic")]
    pub output_topic: String,
    /// Producer compression codec: none, gzip, snappy, lz4, zstd.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// How often stored offsets are committed.
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Topic that receives malformed input messages unchanged, with headers
    /// saying why (`tailgate.error.reason`, `tailgate.error.detail`,
    /// `tailgate.source.partition`, `tailgate.source.offset`). Off when absent.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Produced messages awaiting acknowledgement, per partition, before
    /// reading from that partition pauses.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight produces before giving up (the
    /// offsets of anything undelivered stay uncommitted).
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Exactly-once mode: kept spans and input offsets commit together in one
    /// Kafka transaction per `commit_interval`; read the output with
    /// `isolation.level=read_committed`.
    #[serde(default)]
    pub exactly_once: bool,
    /// The producer's `transactional.id` in exactly-once mode: unique per
    /// instance and stable across its restarts (a restarted instance then
    /// aborts its predecessor's open transaction at once instead of after
    /// `transaction.timeout.ms`). Default: `<group_id>-<host name>`.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// Static membership: the consumer's `group.instance.id`, unique per
    /// instance and stable across its restarts (a StatefulSet pod name). An
    /// instance that restarts within `session.timeout.ms` gets its
    /// partitions back without a rebalance; one that stops does not leave
    /// the group, so its partitions wait for it up to that timeout.
    #[serde(default)]
    pub group_instance_id: Option<String>,
    /// Raw librdkafka options for both consumer and producer (security, SASL...),
    /// written as a list of `name=value` so that dotted names stay intact.
    #[serde(default)]
    pub librdkafka_options: Vec<String>,
    /// Raw librdkafka options for the consumer only, applied last.
    #[serde(default)]
    pub consumer_options: Vec<String>,
    /// Raw librdkafka options for the producer only, applied last.
    #[serde(default)]
    pub producer_options: Vec<String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            group_id: default_group_id(),
            input_topic: default_input_topic(),
            output_topic: default_output_topic(),
            compression: default_compression(),
            commit_interval: default_commit_interval(),
            dead_letter_topic: None,
            max_in_flight: default_max_in_flight(),
            drain_timeout: default_drain_timeout(),
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

    /// Parses `name=value` option lists.
    pub fn options(list: &[String]) -> Result<BTreeMap<String, String>, String> {
        list.iter()
            .map(|o| match o.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => Err(format!("{o:?} is not `name=value`")),
            })
            .collect()
    }
}

const fn default_max_bytes() -> u64 {
    512 * 1024 * 1024
}
const fn default_partition_backlog_bytes() -> usize {
    4 * 1024 * 1024
}
const fn default_partition_queue() -> usize {
    1024
}

/// Memory budget and internal queues.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BufferSettings {
    /// Hard budget, in bytes, for buffered spans over all partitions; split
    /// evenly between the partitions this instance owns. Above it the oldest
    /// traces are decided early (reason `memory`).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Messages queued for one partition's worker.
    #[serde(default = "default_partition_queue")]
    pub partition_queue: usize,
    /// Bytes read for one partition while its worker's queue is full, held
    /// in order for it; beyond this the partition alone is paused (which
    /// drops what the consumer had fetched for it, to be fetched again).
    #[serde(default = "default_partition_backlog_bytes")]
    pub partition_backlog_bytes: usize,
    /// Fraction of `max_bytes` above which the input partitions are paused.
    #[serde(default = "default_high_water")]
    pub high_water: f64,
    /// Fraction of `max_bytes` below which paused partitions resume.
    #[serde(default = "default_low_water")]
    pub low_water: f64,
}

const fn default_high_water() -> f64 {
    0.9
}
const fn default_low_water() -> f64 {
    0.7
}

impl Default for BufferSettings {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            partition_queue: default_partition_queue(),
            partition_backlog_bytes: default_partition_backlog_bytes(),
            high_water: default_high_water(),
            low_water: default_low_water(),
        }
    }
}

const fn default_wait() -> Duration {
    Duration::from_secs(30)
}
const fn default_after_root() -> Duration {
    Duration::from_secs(5)
}
const fn default_max_trace_age() -> Duration {
    Duration::from_secs(300)
}
const fn default_decided_ttl() -> Duration {
    Duration::from_secs(600)
}
const fn default_decided_capacity() -> u64 {
    100_000
}
const fn default_clock_ahead() -> Duration {
    ClockConfig::DEFAULT_AHEAD
}
const fn default_clock_behind() -> Duration {
    ClockConfig::DEFAULT_BEHIND
}

/// When a trace is decided: the first of `wait` after its first span, a quiet
/// period of `after_root` after its root span (reset by each later span) —
/// both on the partition's stream clock — and `max_trace_age` in wall-clock
/// time from its first read.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecisionSettings {
    #[serde(default = "default_wait", with = "humantime_serde")]
    pub wait: Duration,
    #[serde(default = "default_after_root", with = "humantime_serde")]
    pub after_root: Duration,
    #[serde(default = "default_max_trace_age", with = "humantime_serde")]
    pub max_trace_age: Duration,
    /// How long spans arriving after their trace's decision follow it.
    #[serde(default = "default_decided_ttl", with = "humantime_serde")]
    pub decided_ttl: Duration,
    /// Decisions remembered per partition for late spans (about 100 bytes each).
    #[serde(default = "default_decided_capacity")]
    pub decided_capacity: u64,
    /// The clock `wait` and `after_root` count on: `stream` (each
    /// partition's message timestamps, so decisions do not depend on read
    /// speed) or `wall` (when each span is read).
    #[serde(default)]
    pub clock: ClockMode,
    /// Message timestamps further ahead of wall-clock time are clamped to it.
    #[serde(default = "default_clock_ahead", with = "humantime_serde")]
    pub clock_ahead: Duration,
    /// Message timestamps further behind wall-clock time are clamped to it.
    #[serde(default = "default_clock_behind", with = "humantime_serde")]
    pub clock_behind: Duration,
}

impl Default for DecisionSettings {
    fn default() -> Self {
        Self {
            wait: default_wait(),
            after_root: default_after_root(),
            max_trace_age: default_max_trace_age(),
            decided_ttl: default_decided_ttl(),
            decided_capacity: default_decided_capacity(),
            clock: ClockMode::default(),
            clock_ahead: default_clock_ahead(),
            clock_behind: default_clock_behind(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9464))
}

/// The HTTP endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Address for `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

/// A mistake in a settings or rule file.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}{}: {message}", at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Syntax {
        file: PathBuf,
        /// Line and column, 1-based.
        at: Option<(usize, usize)>,
        message: String,
    },
    #[error("{}{}: {error}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Rule {
        file: PathBuf,
        line: Option<usize>,
        error: RuleError,
    },
    #[error("{sources}: {message}")]
    Invalid { sources: String, message: String },
}

/// Where settings come from, lowest precedence first.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub files: Vec<PathBuf>,
    /// Read `TAILGATE__...` environment variables.
    pub environment: bool,
    /// Settings given on the command line (`kafka.brokers` from `--brokers`),
    /// over everything else; kept here so a reload reads them too.
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// `<dir>/default.yaml` (if present) under `<dir>/<env>.yaml`, then `extra`.
    pub fn for_env(dir: &Path, env: &str, extra: Option<&Path>) -> Self {
        let mut files = Vec::new();
        let default = dir.join("default.yaml");
        if env != "default" && default.exists() {
            files.push(default);
        }
        files.push(dir.join(format!("{env}.yaml")));
        files.extend(extra.map(Path::to_path_buf));
        Self {
            files,
            environment: true,
            overrides: Vec::new(),
        }
    }

    /// The sources as a person reads them, e.g. `a.yaml + b.yaml + TAILGATE__* environment`.
    pub fn describe(&self) -> String {
        let mut s: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        if self.environment {
            s.push("TAILGATE__* environment".into());
        }
        s.join(" + ")
    }
}

/// One file, read on its own so that mistakes carry its line and column.
struct FileLayer {
    path: PathBuf,
    text: String,
    /// The file's rule list, if it has one.
    rules: Option<Vec<RuleSpec>>,
}

fn check_file(path: &Path) -> Result<FileLayer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let mut rules = None;
    if !text.trim().is_empty() {
        let parsed = serde_yaml::from_str::<Settings>(&text).map_err(|e| ConfigError::Syntax {
            file: path.to_path_buf(),
            at: e.location().map(|l| (l.line(), l.column())),
            message: e.to_string(),
        })?;
        if text.lines().any(|l| l.starts_with("rules:")) {
            rules = Some(parsed.rules);
        }
    }
    Ok(FileLayer {
        path: path.to_path_buf(),
        text,
        rules,
    })
}

/// The line on which rule `name` is defined, to point a person at it.
fn rule_line(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches('-').trim_start();
            l.strip_prefix("name:")
                .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'') == name)
                .unwrap_or(false)
        })
        .map(|i| i + 1)
}

/// Loaded, validated settings with compiled rules.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    pub rules: RuleSet,
    /// Where they came from, to reload the rules from.
    pub sources: Sources,
}

impl Settings {
    /// Loads and validates settings from `sources`.
    ///
    /// The rule list is taken whole from the last file that has one (lists
    /// are never merged), read as YAML so that attribute names keep their
    /// dots; everything else is layered by the `config` crate.
    pub fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
        let mut layers = Vec::new();
        for f in &sources.files {
            layers.push(check_file(f)?);
        }
        let mut builder = config::Config::builder();
        for f in &sources.files {
            builder = builder
                .add_source(config::File::from(f.as_path()).format(config::FileFormat::Yaml));
        }
        if sources.environment {
            builder = builder.add_source(
                config::Environment::with_prefix("TAILGATE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(false),
            );
        }
        for (key, value) in &sources.overrides {
            builder = builder
                .set_override(key.as_str(), value.as_str())
                .map_err(|e| ConfigError::Invalid {
                    sources: sources.describe(),
                    message: format!("{key}: {e}"),
                })?;
        }
        let invalid = |message: String| ConfigError::Invalid {
            sources: sources.describe(),
            message,
        };
        let mut table: std::collections::HashMap<String, config::Value> = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| invalid(e.to_string()))?;
        table.remove("rules");
        let mut settings: Settings = config::Value::from(table)
            .try_deserialize()
            .map_err(|e| invalid(e.to_string()))?;
        let rules_layer = layers.iter().rev().find(|l| l.rules.is_some());
        settings.rules = rules_layer
            .and_then(|l| l.rules.clone())
            .unwrap_or_default();
        let rules = RuleSet::compile(&settings.rules).map_err(|error| {
            let layer = rules_layer.or(layers.last());
            ConfigError::Rule {
                line: layer.and_then(|l| rule_line(&l.text, &error.rule)),
                file: layer.map(|l| l.path.clone()).unwrap_or_default(),
                error,
            }
        })?;
        settings.validate().map_err(invalid)?;
        Ok(Loaded {
            settings,
            rules,
            sources: sources.clone(),
        })
    }

    /// Cross-field checks.
    fn validate(&self) -> Result<(), String> {
        let d = &self.decision;
        for (name, v) in [
            ("decision.wait", d.wait),
            ("decision.after_root", d.after_root),
            ("decision.max_trace_age", d.max_trace_age),
        ] {
            if v.is_zero() {
                return Err(format!("{name} must be longer than zero"));
            }
        }
        if d.max_trace_age < d.wait {
            return Err(format!(
                "decision.max_trace_age ({}) is shorter than decision.wait ({}); it must be at least as long",
                humantime::format_duration(d.max_trace_age),
                humantime::format_duration(d.wait)
            ));
        }
        if self.buffer.max_bytes < 1024 * 1024 {
            return Err(format!(
                "buffer.max_bytes ({}) must be at least 1 MiB",
                self.buffer.max_bytes
            ));
        }
        let (high, low) = (self.buffer.high_water, self.buffer.low_water);
        if !(low > 0.0 && low < high && high <= 1.0) {
            return Err(format!(
                "buffer.low_water ({low}) and buffer.high_water ({high}) must satisfy 0 < low_water < high_water <= 1"
            ));
        }
        if self.buffer.partition_queue == 0 || self.kafka.max_in_flight == 0 {
            return Err("buffer.partition_queue and kafka.max_in_flight must be at least 1".into());
        }
        if self.kafka.input_topic == self.kafka.output_topic {
            return Err(format!(
                "kafka.input_topic and kafka.output_topic are both {:?}; tailgate would read its own output",
                self.kafka.input_topic
            ));
        }
        if self
            .kafka
            .group_instance_id
            .as_ref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return Err(
                "kafka.group_instance_id must not be empty (leave it out for dynamic membership)"
                    .into(),
            );
        }
        if let Some(dlq) = &self.kafka.dead_letter_topic {
            if dlq.trim().is_empty()
                || *dlq == self.kafka.input_topic
                || *dlq == self.kafka.output_topic
            {
                return Err(format!(
                    "kafka.dead_letter_topic ({dlq:?}) must be a topic of its own, not empty, the input or the output"
                ));
            }
        }
        for (name, list) in [
            ("kafka.librdkafka_options", &self.kafka.librdkafka_options),
            ("kafka.consumer_options", &self.kafka.consumer_options),
            ("kafka.producer_options", &self.kafka.producer_options),
        ] {
            KafkaSettings::options(list).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }

    /// How each partition's clock is kept.
    pub fn clock_config(&self) -> ClockConfig {
        ClockConfig {
            mode: self.decision.clock,
            ahead: self.decision.clock_ahead,
            behind: self.decision.clock_behind,
        }
    }

    /// The buffer settings of one partition when `partitions` are assigned.
    pub fn buffer_config(&self, partitions: usize) -> BufferConfig {
        BufferConfig {
            wait: self.decision.wait,
            after_root: self.decision.after_root,
            max_trace_age: self.decision.max_trace_age,
            max_bytes: (self.buffer.max_bytes / partitions.max(1) as u64) as usize,
        }
    }
}

#[cfg(test)]
mod tests;
