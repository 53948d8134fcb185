//! Helpers for the integration tests on a real Kafka broker: topics, the
//! workload, a tailgate process, and reading the output topic back.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tailgate::otlp::{self, Encoding, TraceId};
use tailgate::rules::{RuleSet, RuleSpec, TraceSummary};
use tailgate::workload::{encode, GeneratedTrace, ShopWorkload};

/// The broker started by `scripts/test`.
pub fn bootstrap() -> String {
    std::env::var("TAILGATE_TEST_BOOTSTRAP").expect(
        "TAILGATE_TEST_BOOTSTRAP is not set: run these tests with scripts/test, which starts a Kafka broker",
    )
}

/// A private broker of one test binary (its own `KAFKA_STATE_DIR`), so that
/// stopping it does not disturb the tests sharing the broker `scripts/test`
/// started. Stopped when dropped.
pub struct Broker {
    state: tempfile::TempDir,
    pub address: String,
}

fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka")
}

impl Broker {
    /// Runs `scripts/kafka <verb>` for this broker: its stdout.
    pub fn run(&self, verb: &str) -> String {
        let out = Command::new(kafka_script())
            .arg(verb)
            .env("KAFKA_STATE_DIR", self.state.path())
            .output()
            .expect("run scripts/kafka");
        assert!(
            out.status.success(),
            "scripts/kafka {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn start() -> Self {
        let mut b = Self {
            state: tempfile::tempdir().expect("tempdir"),
            address: String::new(),
        };
        b.address = b.run("start");
        b
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new(kafka_script())
            .arg("stop")
            .env("KAFKA_STATE_DIR", self.state.path())
            .output();
    }
}

/// A name no other test, in this run or another, uses. The clock alone is
/// not enough: tests start in parallel and a coarse clock gives two of them
/// the same reading (CI once created the same output topic twice), so a
/// per-process sequence number is part of the name too.
pub fn unique(prefix: &str) -> String {
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{seq}-{nanos}", std::process::id())
}

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

/// Generated traces and the messages that carry them.
pub struct Workload {
    pub traces: Vec<GeneratedTrace>,
}

impl Workload {
    pub fn shop(seed: u64, n: usize) -> Self {
        let mut w = ShopWorkload::new(seed);
        let start = 1_760_000_000_000_000_000u64;
        Self {
            traces: (0..n)
                .map(|i| w.next_trace(start + i as u64 * 1_000_000))
                .collect(),
        }
    }

    /// The traces `policy` keeps, computed by the library from the same
    /// messages: trace id → span count.
    pub fn expected_kept(&self, policy_rules_yaml: &str) -> HashMap<TraceId, usize> {
        self.decisions(policy_rules_yaml)
            .into_iter()
            .filter(|(_, (_, _, keep))| *keep)
            .map(|(id, (spans, _, _))| (id, spans))
            .collect()
    }

    /// What `policy` decides for each trace, computed by the library from the
    /// same messages: trace id → (span count, deciding rule, kept).
    pub fn decisions(&self, policy_rules_yaml: &str) -> HashMap<TraceId, (usize, String, bool)> {
        let specs: Vec<RuleSpec> = serde_yaml::from_str(policy_rules_yaml).expect("rules yaml");
        let rules = RuleSet::compile(&specs).expect("rules compile");
        self.traces
            .iter()
            .map(|t| {
                let spans: Vec<_> = t
                    .messages
                    .iter()
                    .flat_map(|m| {
                        otlp::decode(Bytes::from(encode(m, Encoding::OtlpProto)))
                            .expect("decodes")
                            .spans
                    })
                    .map(|(_, s)| s)
                    .collect();
                let d = rules.decide(&TraceSummary::of(t.truth.trace_id, &spans), Duration::ZERO);
                let rule = rules.names()[d.rule].to_string();
                (t.truth.trace_id, (spans.len(), rule, d.keep))
            })
            .collect()
    }
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
                p.send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
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
    let p = producer();
    for (key, payload) in messages {
        p.send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .partition(0),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produced");
    }
}

/// A policy directory with `test.yaml`.
pub fn policy_dir(settings_yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("test.yaml"), settings_yaml).expect("write policy");
    dir
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running `tailgate run`, killed when dropped.
pub struct Tailgate {
    pub child: Child,
    pub log: PathBuf,
    pub metrics_port: u16,
}

impl Tailgate {
    pub fn start(policies: &Path, metrics_port: u16, log_name: &str) -> Self {
        Self::start_with_env(policies, metrics_port, log_name, &[])
    }

    /// [`Tailgate::start`] with more environment variables.
    pub fn start_with_env(
        policies: &Path,
        metrics_port: u16,
        log_name: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let log = policies.join(log_name);
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tailgate"))
            .args(["run", "--env", "test", "--policies"])
            .arg(policies)
            .env("RUST_LOG", "info,tailgate=debug")
            .env(
                "TAILGATE__METRICS__LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn tailgate");
        Self {
            child,
            log,
            metrics_port,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no final commit.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tailgate did not stop within {within:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET a path on the metrics endpoint: (status code, body).
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some((200, _)) = self.http_get("/readyz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("tailgate not ready within {within:?}:\n{}", self.log_text());
    }
}

impl Drop for Tailgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of a metric's samples whose label text contains every `filters` item.
pub fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

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
                match rule_of(&s.encoded) {
                    Some(rule) => {
                        out.rules.entry(rule).or_default().insert(id);
                    }
                    None => out.unannotated += 1,
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
fn rule_of(span: &[u8]) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message as _;
    let s = opentelemetry_proto::tonic::trace::v1::Span::decode(span).ok()?;
    s.attributes
        .iter()
        .find(|kv| kv.key == "tailgate.rule")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(v) => Some(v.clone()),
            _ => None,
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

/// The group's committed offsets and the topic's end offsets, per partition.
/// Waits, at most `within`, until `group` has committed the end of every
/// partition of `topic`; fails showing `log()` otherwise.
pub fn wait_committed_to_end(
    group: &str,
    topic: &str,
    partitions: i32,
    within: Duration,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    loop {
        let offsets = committed_and_end(group, topic, partitions);
        if offsets.iter().all(|(c, e)| c == e) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not committed to the end within {within:?}: (committed, end) {offsets:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Kept spans a tailgate log reports as delivered past the committed offset
/// when it let partitions go (SIGTERM or rebalance; a SIGKILL reports nothing).
pub fn redelivery_logged(log_text: &str) -> u64 {
    log_text
        .lines()
        .filter(|l| l.contains("letting the partition go"))
        .filter_map(|l| {
            l.split("spans=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

pub fn committed_and_end(group: &str, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            let off = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            };
            (off, high)
        })
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

/// The rules most tests run: errors, slow traces, a tenth of the rest.
pub const RULES: &str = "[{name: errors, when: {trace: {error: true}}, sample: keep}, \
                         {name: slow, when: {trace: {duration: {gt: 1s}}}, sample: keep}, \
                         {name: baseline, sample: {rate: 0.1}}]";

/// A settings file for `tailgate run` against the test broker: short decision
/// times, quick commits, a session timeout short enough that a killed member
/// is replaced within seconds.
pub fn settings(
    group: &str,
    input: &str,
    output: &str,
    rules: &str,
    wait: &str,
    dead_letter_topic: Option<&str>,
) -> String {
    let dead_letter = dead_letter_topic
        .map(|t| format!("\n  dead_letter_topic: {t}"))
        .unwrap_or_default();
    format!(
        "kafka:
  brokers: {broker}
  group_id: {group}
  input_topic: {input}
  output_topic: {output}{dead_letter}
  commit_interval: 500ms
  drain_timeout: 20s
  consumer_options: ['session.timeout.ms=6000', 'heartbeat.interval.ms=500']
decision:
  wait: {wait}
  after_root: 1s
  max_trace_age: 30s
rules: {rules}
",
        broker = bootstrap()
    )
}
