//! End-to-end benchmark on a real Kafka broker (issue 6): tailgate against a
//! raw rdkafka copy, each measured as a whole process.
//!
//! One run fills input topics with a seeded, Collector-shaped workload (the
//! shop of `tailgate::workload` in its lean shape: 7 spans per trace, one
//! message per resource and trace keyed by the trace id in hex, about 163
//! message bytes per span, ~3 % errors, ~5 % slow traces), then measures:
//!
//! - **throughput**: the raw copy (consume everything, forward the messages
//!   of every tenth trace unchanged, store offsets, auto-commit; no decoding)
//!   and tailgate (errors + slow traces + 10 % of the rest) on the same
//!   4-partition topic, after tailgate's start-up CPU on an empty topic: CPU seconds (user + sys, /proc), spans per CPU-second,
//!   wall time from process start until the group's committed offsets reach
//!   the end of every partition, peak RSS (VmHWM); tailgate's p99 decision
//!   lateness from its histogram;
//! - **partitions**: the same on 1 and 16 input partitions;
//! - **clock**: in the throughput and partitions phases, tailgate runs on
//!   each topic with the default stream clock (`decision.clock: stream`,
//!   deadlines on message timestamps) and with `decision.clock: wall` (the
//!   old behaviour, deadlines from when each span is read); the report gives
//!   spans per CPU-second of both and their ratio. `--clock-pairs N` runs
//!   each N times, taking turns going first (default 2, with `--quick` 1;
//!   0 skips the wall-clock runs);
//! - **buffer**: tailgate with a decision wait longer than the read, on a
//!   topic of a tenth of the traces and on the full one, so that the buffer
//!   peaks at N / 10 and at N traces;
//! - **memory**: tailgate with a decision wait of an hour, the topic filled in
//!   steps; RSS against buffered span bytes, slope and intercept.
//!
//! Each tailgate output is checked (every error and slow trace complete, the
//! rest kept at the rule's 10 %, exactly the library's decisions); the copy's
//! output count is checked too. Each tailgate output is also counted per
//! kept trace: output messages, and *split traces*, kept traces that came in
//! more than one message although one would have held them (a trace decided
//! in parts: spans arriving after its decision). With the stream clock, on
//! these pre-filled topics, none may be split and no span may come after its
//! trace's decision; that is a correctness check. The wall-clock runs' splits,
//! and the incomplete error and slow traces they can cause, are reported, not
//! checked. Timings are reported, never asserted.
//!
//! The input's message timestamps: one per trace, traces `1 / --stamp-rate`
//! seconds apart (default 20 000 traces a second, about a wall-clock
//! tailgate's read speed on 4 partitions), from an idempotent producer; see
//! `Kafka::fill`.
//!
//! `scripts/bench [--quick] [--traces N] [--only throughput,partitions,buffer,memory]`
//! starts the broker and runs `cargo bench --bench e2e -- ARGS`. The report is
//! printed and written to `target/e2e-report.md`. See docs/benchmarks.md.
//!
//! The copy is this executable run again with `TAILGATE_E2E_ROLE=copy`, so
//! that it is measured as a process of its own.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tailgate::clock::ClockMode;
use tailgate::otlp::{self, Encoding, TraceId};
use tailgate::rules::{RuleSet, RuleSpec, TraceSummary};
use tailgate::workload::{encode, ShopWorkload};

/// tailgate's rules: every error, every slow trace (the shop's slow traces
/// last at least 1.5 s), a tenth of the rest.
const RULES: &str = "[{name: errors, when: {trace: {error: true}}, sample: keep}, \
                     {name: slow, when: {trace: {duration: {gte: 1s}}}, sample: keep}, \
                     {name: baseline, sample: {rate: 0.1}}]";
/// The copy forwards the traces whose key hash is 0 modulo this.
const COPY_ONE_IN: u64 = 10;
/// Both programs' commit interval.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// tailgate's decision timing in the throughput runs: a trace is decided
/// `after_root` after its last span (the root comes first), at the latest
/// `wait` after its first. `--after-root-ms` changes `after_root` (a short
/// one makes a wall-clock tailgate split traces; the stream clock must not).
const THROUGHPUT_AFTER_ROOT: Duration = Duration::from_secs(1);
const THROUGHPUT_WAIT: Duration = Duration::from_secs(5);
/// tailgate's default producer `message.max.bytes` is 1 000 000; a kept
/// trace whose output messages hold fewer payload bytes than this together
/// would have fitted in one message (the record overhead is far smaller than
/// the margin), so more than one message for it is a split, not the size
/// limit. The workload's traces are about 1 KiB.
const ONE_MESSAGE_BYTES: usize = 900_000;
/// The input's message time, in traces a second (`--stamp-rate`): about the
/// rate a wall-clock tailgate reads the 4-partition topic at on the
/// reference machine (150 000–170 000 spans a second), so that the stream
/// clock buffers about as many traces as the wall clock and their ratio is
/// the clock's own cost, not a different buffer. The 200 000 traces span
/// 10 s of message time. Stamped as produced instead, the whole topic is
/// about a second of message time, read in 10 s or more: with
/// `after_root` 1 s the stream clock then buffers all of it before deciding
/// anything (as it should: that backlog was written in a second).
const STAMP_RATE: f64 = 20_000.0;
/// The memory phase's decision wait: nothing is decided while it runs.
const MEMORY_WAIT: Duration = Duration::from_secs(3600);
/// Fill levels of the memory phase.
const MEMORY_STEPS: usize = 4;
/// How often a running process is looked at.
const TICK: Duration = Duration::from_millis(100);
/// How often tailgate's /metrics is scraped (peaks of the buffer gauges).
const SCRAPE_EVERY: Duration = Duration::from_millis(250);
const ROLE_ENV: &str = "TAILGATE_E2E_ROLE";
const BOOTSTRAP_ENV: &str = "TAILGATE_BENCH_BOOTSTRAP";
const MIB: f64 = 1024.0 * 1024.0;

fn main() -> ExitCode {
    if std::env::var(ROLE_ENV).as_deref() == Ok("copy") {
        return copy::main();
    }
    let raw: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs bench
    // targets without it, and this harness needs a broker and minutes.
    if !raw.iter().any(|a| a == "--bench") {
        println!(
            "e2e: not run under `cargo test`; run `scripts/bench` (or `cargo bench --bench e2e`)"
        );
        return ExitCode::SUCCESS;
    }
    let args = match Args::parse(&raw) {
        Ok(a) => a,
        Err(e) if e == "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("e2e: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(brokers) = args.brokers.clone() else {
        println!(
            "e2e: skipped: no broker. Run `scripts/bench`, which starts one, or set {BOOTSTRAP_ENV} / pass --brokers"
        );
        return ExitCode::SUCCESS;
    };
    let started = Instant::now();
    let mut bench = Bench::new(args, brokers);
    let outcome = bench.run();
    bench.cleanup();
    match outcome {
        Ok(()) => {
            eprintln!(
                "e2e: done in {:.0} s; report in {}",
                started.elapsed().as_secs_f64(),
                bench.args.report.display()
            );
            if bench.checks.iter().all(|c| c.ok || !c.asserted) {
                ExitCode::SUCCESS
            } else {
                eprintln!("e2e: CORRECTNESS CHECKS FAILED (see the report)");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("e2e: error: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo bench --bench e2e -- [--quick] [--traces N] [--seed S] \
[--only throughput,partitions,buffer,memory] [--clock-pairs N] [--after-root-ms MS] [--stamp-rate R] [--brokers HOST:PORT] [--report FILE] [--keep-topics]

  --quick        a shortened workload (20 000 traces), as CI runs it
  --traces N     traces in the workload (default 200 000; 7 spans each)
  --only LIST    phases to run (default all): throughput (4 partitions, copy and
                 tailgate), partitions (1, 4 and 16), buffer (N / 10 and N traces
                 buffered at once), memory (RSS per buffered span)
  --clock-pairs N  tailgate runs on each topic of the throughput and partitions
                 phases: N with the stream clock and N with `decision.clock: wall`,
                 in alternating order (the stream clock's cost); default 2, with
                 --quick 1; 0: one stream-clock run
  --after-root-ms MS  decision.after_root of the throughput and partitions runs
                 (default 1000); e.g. 20 to put the split-trace check under stress
  --stamp-rate R traces per second of message time in the input topics: each
                 trace's messages share a timestamp, traces 1/R s apart, the last
                 one now (default 20 000, about tailgate's read speed; 0: stamped
                 as produced, a burst of about a second for the whole topic)
  --brokers      bootstrap address (default: $TAILGATE_BENCH_BOOTSTRAP, set by scripts/bench)
  --report FILE  where to write the markdown report (default target/e2e-report.md)";

#[derive(Debug, Clone)]
struct Args {
    traces: usize,
    quick: bool,
    seed: u64,
    throughput: bool,
    partitions: bool,
    buffer: bool,
    memory: bool,
    /// Pairs of tailgate runs, stream clock and `decision.clock: wall`, on
    /// each topic of the throughput and partitions phases (0: one run, with
    /// the stream clock).
    clock_pairs: usize,
    /// `decision.after_root` of the throughput and partitions runs.
    after_root: Duration,
    /// Traces a second the input's message timestamps are spaced at (0:
    /// when produced).
    stamp_rate: f64,
    brokers: Option<String>,
    report: PathBuf,
    keep_topics: bool,
}

impl Args {
    fn parse(raw: &[String]) -> Result<Self, String> {
        let mut a = Args {
            traces: 200_000,
            quick: false,
            seed: 6,
            throughput: true,
            partitions: true,
            buffer: true,
            memory: true,
            clock_pairs: 0,
            after_root: THROUGHPUT_AFTER_ROOT,
            stamp_rate: STAMP_RATE,
            brokers: std::env::var(BOOTSTRAP_ENV).ok().filter(|s| !s.is_empty()),
            report: default_report_path(),
            keep_topics: false,
        };
        let mut traces = None;
        let mut clock_pairs = None;
        let mut it = raw.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--bench" => {}
                "--quick" => a.quick = true,
                "--keep-topics" => a.keep_topics = true,
                "--clock-pairs" => {
                    let v = value("--clock-pairs")?;
                    clock_pairs = Some(
                        v.parse()
                            .map_err(|_| format!("--clock-pairs {v}: not a number"))?,
                    );
                }
                "--traces" => {
                    let v = value("--traces")?;
                    let n: usize = v
                        .replace('_', "")
                        .parse()
                        .map_err(|_| format!("--traces {v}: not a number"))?;
                    if n < 100 {
                        return Err("--traces must be at least 100".into());
                    }
                    traces = Some(n);
                }
                "--after-root-ms" => {
                    let v = value("--after-root-ms")?;
                    let ms: u64 = v
                        .parse()
                        .map_err(|_| format!("--after-root-ms {v}: not a number"))?;
                    a.after_root = Duration::from_millis(ms);
                }
                "--stamp-rate" => {
                    let v = value("--stamp-rate")?;
                    a.stamp_rate = v
                        .replace('_', "")
                        .parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite() && *r >= 0.0)
                        .ok_or_else(|| format!("--stamp-rate {v}: not a rate"))?;
                }
                "--seed" => {
                    let v = value("--seed")?;
                    a.seed = v.parse().map_err(|_| format!("--seed {v}: not a number"))?;
                }
                "--brokers" => a.brokers = Some(value("--brokers")?),
                "--report" => a.report = PathBuf::from(value("--report")?),
                "--only" => {
                    let v = value("--only")?;
                    a.throughput = false;
                    a.partitions = false;
                    a.buffer = false;
                    a.memory = false;
                    for phase in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        match phase {
                            "throughput" => a.throughput = true,
                            "partitions" => a.partitions = true,
                            "buffer" => a.buffer = true,
                            "memory" => a.memory = true,
                            other => return Err(format!("--only: unknown phase {other:?}")),
                        }
                    }
                }
                "-h" | "--help" => return Err("help".into()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        a.traces = traces.unwrap_or(if a.quick { 20_000 } else { 200_000 });
        a.clock_pairs = clock_pairs.unwrap_or(if a.quick { 1 } else { 2 });
        Ok(a)
    }
}

/// `target/e2e-report.md` of this checkout (or of `CARGO_TARGET_DIR`).
fn default_report_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("e2e-report.md")
}

// ---------------------------------------------------------------------------
// The raw copy, run as a process of its own.

mod copy {
    use std::collections::BTreeSet;

    use super::*;

    /// FNV-1a of the key: the copy's "sampler".
    pub fn keeps(key: &[u8]) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h % COPY_ONE_IN == 0
    }

    /// Delivery reports, collected by the producer's callback (which runs in
    /// `poll`, on the copy's one thread) for the loop to apply.
    struct Context {
        delivered: Mutex<Vec<(i32, i64)>>,
        failed: AtomicU64,
    }

    impl ClientContext for Context {}

    impl ProducerContext for Context {
        /// The input partition and offset of the forwarded message.
        type DeliveryOpaque = Box<(i32, i64)>;

        fn delivery(&self, result: &DeliveryResult<'_>, from: Box<(i32, i64)>) {
            match result {
                Ok(_) => {
                    if let Ok(mut d) = self.delivered.lock() {
                        d.push(*from);
                    }
                }
                Err((e, _)) => {
                    // Its offset stays pinned: the harness sees the copy never
                    // drain, and says so.
                    if self.failed.fetch_add(1, Ordering::Relaxed) < 10 {
                        eprintln!("copy: delivery failed: {e}");
                    }
                }
            }
        }
    }

    /// Per input partition: the next offset to read, and the offsets of
    /// forwarded messages not yet acknowledged. The offset to store is the
    /// lowest of those, or the next to read.
    #[derive(Default)]
    struct Partition {
        next: i64,
        pending: BTreeSet<i64>,
        stored: i64,
    }

    impl Partition {
        fn committable(&self) -> i64 {
            self.pending.first().copied().unwrap_or(self.next)
        }
    }

    fn env(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| panic!("copy: {name} is not set"))
    }

    /// Consume → forward every tenth trace unchanged → store each offset once
    /// everything before it is delivered (dropped messages count as done when
    /// read) → auto-commit. Runs until SIGTERM (the harness stops it once the
    /// group's offsets reach the end), at most `E2E_MAX_SECONDS`.
    pub fn main() -> ExitCode {
        let (brokers, input, output, group) = (
            env("E2E_BROKERS"),
            env("E2E_INPUT"),
            env("E2E_OUTPUT"),
            env("E2E_GROUP"),
        );
        let max_run = Duration::from_secs(env("E2E_MAX_SECONDS").parse().unwrap_or(3600));
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "true")
            .set(
                "auto.commit.interval.ms",
                COMMIT_INTERVAL.as_millis().to_string(),
            )
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create()
            .expect("copy: create the consumer");
        consumer
            .subscribe(&[&input])
            .expect("copy: subscribe to the input topic");
        // tailgate's producer settings (src/kafka/producer.rs, kafka.compression default).
        let producer: BaseProducer<Context> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create_with_context(Context {
                delivered: Mutex::new(Vec::new()),
                failed: AtomicU64::new(0),
            })
            .expect("copy: create the producer");
        let started = Instant::now();
        let mut partitions: HashMap<i32, Partition> = HashMap::new();
        let mut touched: Vec<i32> = Vec::new();
        let mut delivered: Vec<(i32, i64)> = Vec::new();
        let mut n: u64 = 0;
        loop {
            if n % 65_536 == 0 && started.elapsed() > max_run {
                eprintln!("copy: giving up after {max_run:?}");
                return ExitCode::FAILURE;
            }
            producer.poll(Duration::ZERO);
            if let Ok(mut d) = producer.context().delivered.lock() {
                std::mem::swap(&mut *d, &mut delivered);
            }
            for (p, offset) in delivered.drain(..) {
                if let Some(state) = partitions.get_mut(&p) {
                    state.pending.remove(&offset);
                    touched.push(p);
                }
            }
            // Idle: wait for input, but not long while deliveries are due.
            let wait = if n > 0 {
                Duration::ZERO
            } else if partitions.values().any(|s| !s.pending.is_empty()) {
                Duration::from_millis(5)
            } else {
                Duration::from_millis(100)
            };
            match consumer.poll(wait) {
                None => n = 0,
                Some(Err(e)) => eprintln!("copy: consumer error: {e}"),
                Some(Ok(m)) => {
                    n += 1;
                    let (p, offset) = (m.partition(), m.offset());
                    let state = partitions.entry(p).or_default();
                    state.next = offset + 1;
                    touched.push(p);
                    if let Some(key) = m.key().filter(|k| keeps(k)) {
                        state.pending.insert(offset);
                        let mut record = BaseRecord::with_opaque_to(&output, Box::new((p, offset)))
                            .key(key)
                            .payload(m.payload().unwrap_or_default());
                        let deadline = Instant::now() + Duration::from_secs(60);
                        loop {
                            match producer.send(record) {
                                Ok(()) => break,
                                Err((
                                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                    r,
                                )) if Instant::now() < deadline => {
                                    record = r;
                                    producer.poll(Duration::from_millis(10));
                                }
                                Err((e, _)) => {
                                    eprintln!("copy: cannot produce: {e}");
                                    return ExitCode::FAILURE;
                                }
                            }
                        }
                    }
                }
            }
            touched.sort_unstable();
            touched.dedup();
            for p in touched.drain(..) {
                let Some(state) = partitions.get_mut(&p) else {
                    continue;
                };
                let at = state.committable();
                if at > state.stored {
                    let mut tpl = TopicPartitionList::with_capacity(1);
                    if tpl
                        .add_partition_offset(&input, p, Offset::Offset(at))
                        .is_ok()
                    {
                        match consumer.store_offsets(&tpl) {
                            Ok(()) => state.stored = at,
                            Err(e) => eprintln!("copy: cannot store offset {at} of {p}: {e}"),
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The workload and what the output must hold.

struct Workload {
    /// (key, payload), in trace order: the messages of trace i are
    /// `messages[msg_end[i - 1]..msg_end[i]]`.
    messages: Vec<(String, Vec<u8>)>,
    msg_end: Vec<usize>,
    /// Spans of trace i.
    spans: Vec<usize>,
    /// Bytes of span encodings up to and including trace i (what tailgate's
    /// buffer holds per span besides its 88-byte record).
    span_bytes_cum: Vec<u64>,
    /// Message bytes up to and including trace i.
    message_bytes_cum: Vec<u64>,
    ids: Vec<TraceId>,
    /// Error or slow: must be kept whole.
    must_keep: Vec<bool>,
    error: Vec<bool>,
    slow: Vec<bool>,
    /// What tailgate's rules decide, computed by the library.
    keep: Vec<bool>,
    /// Messages the copy forwards.
    copy_messages: usize,
    copy_traces: usize,
}

impl Workload {
    fn generate(traces: usize, seed: u64) -> Self {
        let specs: Vec<RuleSpec> = serde_yaml::from_str(RULES).expect("RULES is valid YAML");
        let rules = RuleSet::compile(&specs).expect("RULES compile");
        let mut shop = ShopWorkload::lean(seed);
        let start = 1_760_000_000_000_000_000u64;
        let mut w = Workload {
            messages: Vec::with_capacity(traces * 5),
            msg_end: Vec::with_capacity(traces),
            spans: Vec::with_capacity(traces),
            span_bytes_cum: Vec::with_capacity(traces),
            message_bytes_cum: Vec::with_capacity(traces),
            ids: Vec::with_capacity(traces),
            must_keep: Vec::with_capacity(traces),
            error: Vec::with_capacity(traces),
            slow: Vec::with_capacity(traces),
            keep: Vec::with_capacity(traces),
            copy_messages: 0,
            copy_traces: 0,
        };
        let (mut span_bytes, mut message_bytes) = (0u64, 0u64);
        for i in 0..traces {
            let t = shop.next_trace(start + i as u64 * 1_000_000);
            let key = t.truth.trace_id.to_hex();
            let copied = copy::keeps(key.as_bytes());
            let mut records = Vec::with_capacity(t.truth.spans);
            for m in &t.messages {
                let payload = encode(m, Encoding::OtlpProto);
                message_bytes += payload.len() as u64;
                let decoded = otlp::decode(Bytes::from(payload.clone()))
                    .expect("the workload decodes with tailgate's decoder");
                for (_, s) in decoded.spans {
                    span_bytes += s.encoded.len() as u64;
                    records.push(s);
                }
                if copied {
                    w.copy_messages += 1;
                }
                w.messages.push((key.clone(), payload));
            }
            let d = rules.decide(
                &TraceSummary::of(t.truth.trace_id, &records),
                Duration::ZERO,
            );
            w.copy_traces += usize::from(copied);
            w.msg_end.push(w.messages.len());
            w.spans.push(records.len());
            w.span_bytes_cum.push(span_bytes);
            w.message_bytes_cum.push(message_bytes);
            w.ids.push(t.truth.trace_id);
            w.must_keep.push(t.truth.error || t.truth.slow);
            w.error.push(t.truth.error);
            w.slow.push(t.truth.slow);
            w.keep.push(d.keep);
        }
        w
    }

    fn traces(&self) -> usize {
        self.ids.len()
    }

    fn total_spans(&self) -> u64 {
        self.spans.iter().sum::<usize>() as u64
    }

    fn message_bytes(&self) -> u64 {
        self.message_bytes_cum.last().copied().unwrap_or(0)
    }

    fn span_bytes(&self) -> u64 {
        self.span_bytes_cum.last().copied().unwrap_or(0)
    }

    /// Messages of traces `from..to`.
    fn messages_of(&self, from: usize, to: usize) -> &[(String, Vec<u8>)] {
        let start = if from == 0 { 0 } else { self.msg_end[from - 1] };
        let end = if to == 0 { 0 } else { self.msg_end[to - 1] };
        &self.messages[start..end]
    }

    fn spans_of(&self, to: usize) -> u64 {
        self.spans[..to].iter().sum::<usize>() as u64
    }
}

// ---------------------------------------------------------------------------
// Kafka: topics, filling, offsets, reading the output back.

/// A message read back: (key, payload).
type Keyed = (Vec<u8>, Vec<u8>);

#[derive(Debug, Clone)]
struct Topic {
    name: String,
    partitions: i32,
    /// End offset of each partition once filled.
    end: Vec<i64>,
    /// The first and last message timestamps (ms since the epoch) put in.
    stamped: Option<(i64, i64)>,
}

impl Topic {
    /// The message time the topic spans, first timestamp to last.
    fn stamped_s(&self) -> f64 {
        self.stamped.map_or(0.0, |(a, b)| (b - a) as f64 / 1000.0)
    }
}

struct FillContext {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for FillContext {}

impl ProducerContext for FillContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

struct Kafka {
    brokers: String,
    runtime: tokio::runtime::Runtime,
    admin: AdminClient<DefaultClientContext>,
    /// Topics this run created; deleted at the end unless --keep-topics.
    created: Vec<String>,
}

impl Kafka {
    fn new(brokers: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the admin client");
        let admin = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .expect("create the admin client");
        Kafka {
            brokers: brokers.to_string(),
            runtime,
            admin,
            created: Vec::new(),
        }
    }

    fn create_topic(&mut self, name: &str, partitions: i32) -> Result<Topic, String> {
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = self
            .runtime
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(60),
                    self.admin.create_topics([&topic], &opts),
                )
                .await
            })
            .map_err(|_| format!("creating topic {name}: no answer within 60 s"))?
            .map_err(|e| format!("creating topic {name}: {e}"))?;
        for r in results {
            r.map_err(|(t, e)| format!("creating topic {t}: {e}"))?;
        }
        self.created.push(name.to_string());
        Ok(Topic {
            name: name.to_string(),
            partitions,
            end: vec![0; partitions as usize],
            stamped: None,
        })
    }

    fn delete_topics(&mut self) {
        if self.created.is_empty() {
            return;
        }
        let names: Vec<&str> = self.created.iter().map(String::as_str).collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let outcome = self.runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(60),
                self.admin.delete_topics(&names, &opts),
            )
            .await
        });
        match outcome {
            Ok(Ok(results)) => {
                let failed: Vec<String> = results
                    .into_iter()
                    .filter_map(|r| r.err().map(|(t, e)| format!("{t}: {e}")))
                    .collect();
                if !failed.is_empty() {
                    eprintln!("e2e: could not delete topics: {}", failed.join(", "));
                }
            }
            Ok(Err(e)) => eprintln!("e2e: could not delete topics: {e}"),
            Err(_) => eprintln!("e2e: deleting topics: no answer within 60 s"),
        }
        self.created.clear();
    }

    fn client(&self, group: &str) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("create a consumer for offsets")
    }

    /// (low, high) watermarks of every partition.
    fn watermarks(&self, topic: &str, partitions: i32) -> Result<Vec<(i64, i64)>, String> {
        let c = self.client("tailgate-e2e-watermarks");
        (0..partitions)
            .map(|p| {
                c.fetch_watermarks(topic, p, Duration::from_secs(10))
                    .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))
            })
            .collect()
    }

    /// Produces `messages` to `topic` (one batch, progress on stderr) and
    /// records the partitions' end offsets.
    ///
    /// The messages of one trace (consecutive, one key) carry one timestamp,
    /// as an exporter producing a batch at once stamps them, and the
    /// producer is idempotent, so a retry (the first requests to a topic
    /// just created can fail) does not put a message behind later ones. So
    /// within each partition the timestamps never go back and a trace's
    /// messages are at one instant: the stream clock has no reason to split
    /// a trace. (With `after_root` of 20 ms and without these two, it did: a
    /// fill thread descheduled for 52 ms between two messages of a trace,
    /// and a partition whose first 3 000 messages were appended after later
    /// ones stamped up to 167 ms later.)
    ///
    /// With `rate` > 0 the traces are stamped `1 / rate` seconds apart, the
    /// last one now, as if written at `rate` traces a second; with 0, when
    /// each trace's first message is produced (a burst: a million messages
    /// in about a second).
    fn fill(
        &self,
        topic: &mut Topic,
        messages: &[(String, Vec<u8>)],
        rate: f64,
    ) -> Result<(), String> {
        let producer: ThreadedProducer<FillContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            // The Collector's Kafka exporter compresses nothing by default.
            .set("compression.type", "none")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .create_with_context(FillContext {
                delivered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                first_error: Mutex::new(None),
            })
            .map_err(|e| format!("create the fill producer: {e}"))?;
        let bar = progress(messages.len() as u64, &format!("fill {}", topic.name));
        let started = Instant::now();
        let deadline = started + Duration::from_secs(600);
        let now_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        let traces = messages
            .iter()
            .enumerate()
            .filter(|(i, (key, _))| *i == 0 || messages[i - 1].0 != *key)
            .count();
        // The first trace's stamp, in ms, when stamping at `rate`.
        let first = now_ms() as f64 - traces.saturating_sub(1) as f64 * 1000.0 / rate.max(1e-9);
        let mut trace: Option<(&str, i64)> = None;
        let mut k = 0usize;
        let mut stamps: Option<(i64, i64)> = None;
        for (i, (key, payload)) in messages.iter().enumerate() {
            let stamp = match trace {
                Some((key_of, stamp)) if key_of == key.as_str() => stamp,
                _ => {
                    let stamp = if rate > 0.0 {
                        (first + k as f64 * 1000.0 / rate) as i64
                    } else {
                        now_ms()
                    };
                    k += 1;
                    trace = Some((key.as_str(), stamp));
                    stamps = Some(stamps.map_or((stamp, stamp), |(a, _)| (a, stamp)));
                    stamp
                }
            };
            let mut record = BaseRecord::to(&topic.name)
                .key(key)
                .payload(payload)
                .timestamp(stamp);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        if Instant::now() > deadline {
                            return Err(format!(
                                "filling {}: queue full for 10 minutes",
                                topic.name
                            ));
                        }
                        record = r;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err((e, _)) => return Err(format!("filling {}: {e}", topic.name)),
                }
            }
            if i % 4096 == 0 {
                bar.set_position(i as u64);
            }
        }
        producer
            .flush(Duration::from_secs(300))
            .map_err(|e| format!("filling {}: flush: {e}", topic.name))?;
        bar.finish_and_clear();
        let ctx = producer.context();
        let failed = ctx.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = ctx.first_error.lock().ok().and_then(|f| f.clone());
            return Err(format!(
                "filling {}: {failed} messages not delivered (first error: {})",
                topic.name,
                first.unwrap_or_default()
            ));
        }
        let marks = self.watermarks(&topic.name, topic.partitions)?;
        topic.end = marks.iter().map(|(_, h)| *h).collect();
        let total: i64 = marks.iter().map(|(l, h)| h - l).sum();
        let expected = topic.end.iter().sum::<i64>();
        if total != expected {
            return Err(format!("{}: low watermarks are not 0", topic.name));
        }
        if let Some((a, b)) = stamps {
            topic.stamped = Some(topic.stamped.map_or((a, b), |(first, _)| (first, b)));
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "e2e: filled {} ({}): {} messages in {secs:.1} s ({:.0} messages/s), stamped over {:.1} s",
            topic.name,
            partitions(topic.partitions),
            messages.len(),
            messages.len() as f64 / secs,
            stamps.map_or(0.0, |(a, b)| (b - a) as f64 / 1000.0)
        );
        Ok(())
    }

    /// The group's committed offset of every partition (-1: none).
    fn committed(&self, client: &BaseConsumer, topic: &Topic) -> Result<Vec<i64>, String> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..topic.partitions {
            tpl.add_partition(&topic.name, p);
        }
        let committed = client
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| format!("committed offsets on {}: {e}", topic.name))?;
        Ok((0..topic.partitions)
            .map(
                |p| match committed.find_partition(&topic.name, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                },
            )
            .collect())
    }

    /// Every message of `topic`, from the start to the current end.
    fn read_all(&self, topic: &str, partitions: i32) -> Result<Vec<Keyed>, String> {
        let marks = self.watermarks(topic, partitions)?;
        let c = self.client("tailgate-e2e-reader");
        let mut tpl = TopicPartitionList::new();
        for (p, (low, _)) in marks.iter().enumerate() {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(*low))
                .map_err(|e| format!("reading {topic}: {e}"))?;
        }
        c.assign(&tpl)
            .map_err(|e| format!("reading {topic}: {e}"))?;
        let mut next: Vec<i64> = marks.iter().map(|(l, _)| *l).collect();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        while next.iter().zip(&marks).any(|(n, (_, h))| n < h) {
            if Instant::now() > deadline {
                return Err(format!(
                    "reading {topic}: not at the end within 300 s ({next:?} of {marks:?})"
                ));
            }
            let Some(r) = c.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = r.map_err(|e| format!("reading {topic}: {e}"))?;
            next[m.partition() as usize] = m.offset() + 1;
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
        Ok(out)
    }
}

fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "e2e: {msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// "1 partition", "4 partitions".
fn partitions(n: i32) -> String {
    if n == 1 {
        "1 partition".into()
    } else {
        format!("{n} partitions")
    }
}

/// A name no other run uses.
fn unique(prefix: &str) -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("e2e-{prefix}-{}-{nanos}-{seq}", std::process::id())
}

// ---------------------------------------------------------------------------
// Processes: started, measured from /proc, stopped.

struct Process {
    child: Child,
    started: Instant,
    log: PathBuf,
    label: String,
}

impl Process {
    fn spawn(mut cmd: Command, log: PathBuf, label: &str) -> Result<Self, String> {
        let file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        // What the harness was started with must not reach the programs.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TAILGATE__") {
                cmd.env_remove(&k);
            }
        }
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {label}: {e}"))?;
        Ok(Process {
            child,
            started,
            log,
            label: label.to_string(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// user + sys CPU seconds of the whole process (all its threads).
    fn cpu_seconds(&self) -> Result<f64, String> {
        let path = format!("/proc/{}/stat", self.pid());
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = text
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| format!("{path}: unexpected format"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After ')': state is field 3 of stat(5); utime is 14, stime 15.
        let field = |n: usize| -> Result<u64, String> {
            fields
                .get(n - 3)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| format!("{path}: no field {n}"))
        };
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if ticks <= 0 {
            return Err("sysconf(_SC_CLK_TCK) failed".into());
        }
        Ok((field(14)? + field(15)?) as f64 / ticks as f64)
    }

    /// A `/proc/<pid>/status` field in kB, as bytes.
    fn status_bytes(&self, name: &str) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.pid());
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| format!("{path}: no {name}"))
    }

    fn peak_rss(&self) -> Result<u64, String> {
        self.status_bytes("VmHWM")
    }

    fn rss(&self) -> Result<u64, String> {
        self.status_bytes("VmRSS")
    }

    /// An error if the process has exited.
    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited early ({status}); last lines of {}:\n{}",
                self.label,
                self.log.display(),
                self.log_tail(30)
            )),
            Err(e) => Err(format!("{}: {e}", self.label)),
        }
    }

    /// Waits (at most 60 s) until tailgate's `/readyz` answers: its
    /// partitions are assigned.
    fn wait_ready(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(port, "/readyz").is_none() {
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: not ready within 60 s:\n{}",
                    self.label,
                    self.log_tail(30)
                ));
            }
            std::thread::sleep(TICK);
        }
        Ok(())
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then waits (bounded); SIGKILL if it does not stop.
    fn terminate(&mut self, within: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, which it still is: the child
        // has not been reaped (try_wait above returned None).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "e2e: {} did not stop within {within:?} of SIGTERM; killing it",
            self.label
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// tailgate's /metrics.

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.split_whitespace()
        .nth(1)
        .filter(|c| *c == "200")
        .map(|_| body.to_string())
}

/// Sum of the samples of `name` (any labels).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sum of the samples of `name` whose labels include `label` (`k="v"`).
fn metric_labelled(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix('{'))
                .and_then(|r| r.split_once('}'))
                .is_some_and(|(labels, _)| labels.split(',').any(|kv| kv == label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Cumulative buckets of a histogram: (upper bound, count), ascending.
fn histogram(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The smallest bucket bound below which at least `q` of the observations
/// lie, and the count.
fn quantile_bound(buckets: &[(f64, f64)], q: f64) -> Option<(f64, f64)> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(b, _)| (*b, total))
}

/// Fraction of observations at or below `bound` (a bucket bound).
fn fraction_within(buckets: &[(f64, f64)], bound: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    let at = buckets.iter().find(|(b, _)| (*b - bound).abs() < 1e-9)?.1;
    (total > 0.0).then(|| at / total)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

// ---------------------------------------------------------------------------
// Runs and their figures.

#[derive(Debug, Clone, Default)]
struct Figures {
    cpu_s: f64,
    drain_s: f64,
    peak_rss: u64,
    spans: u64,
}

impl Figures {
    fn spans_per_cpu_s(&self) -> f64 {
        self.spans as f64 / self.cpu_s.max(1e-9)
    }
}

#[derive(Debug, Clone, Default)]
struct TailgateFigures {
    run: Figures,
    /// The decision wait the drain time includes (after_root here).
    decision_wait: Duration,
    /// From start until every input span was received.
    ingest_s: Option<f64>,
    /// The fastest ingest between two scrapes, spans per second.
    peak_ingest: f64,
    /// CPU seconds tailgate spends starting up (see `Bench::startup`).
    startup_cpu_s: Option<f64>,
    peak_traces: f64,
    peak_spans: f64,
    peak_bytes: f64,
    lateness: Vec<(f64, f64)>,
    decided_memory: f64,
    /// The clock its deadlines counted on.
    clock: ClockMode,
    /// Its output per kept trace, and traces decided in parts.
    parts: Parts,
}

/// How tailgate's output came, per kept trace, and what its metrics say of
/// traces decided in parts (spans read after their trace's decision).
#[derive(Debug, Clone, Default)]
struct Parts {
    /// Kept traces in the output, and as the library decides.
    kept: usize,
    expected_kept: usize,
    /// Output messages; the library's decisions make one per kept trace.
    messages: usize,
    /// Kept traces in more than one message although one would have held
    /// them: decided in parts.
    split: usize,
    /// Messages beyond one per kept trace, of those split traces.
    extra_messages: usize,
    /// Kept traces too large for one message (legitimately in several).
    oversize: usize,
    /// Most messages for one kept trace.
    most: usize,
    /// `tailgate_late_spans_total`: spans read after their trace was
    /// decided, of kept and of dropped traces.
    late_kept: f64,
    late_dropped: f64,
    /// `tailgate_traces_decided_total`, and the traces in the topic: a trace
    /// decided twice (its late spans outlived the remembered decision)
    /// counts twice.
    decided: f64,
    traces: usize,
    /// A few split traces, described.
    examples: Vec<String>,
}

impl Parts {
    /// "0 split (3333 kept traces in 3333 messages)".
    fn summary(&self) -> String {
        format!(
            "{} split ({} kept traces in {} messages{}); late spans {:.0} kept, {:.0} dropped",
            self.split,
            self.kept,
            self.messages,
            if self.oversize > 0 {
                format!(", {} over the message size", self.oversize)
            } else {
                String::new()
            },
            self.late_kept,
            self.late_dropped
        )
    }
}

impl TailgateFigures {
    fn p99(&self) -> String {
        match quantile_bound(&self.lateness, 0.99) {
            Some((b, _)) if b.is_infinite() => "> 10 s".into(),
            Some((b, _)) => format!("≤ {}", fmt_secs(b)),
            None => "no decisions".into(),
        }
    }

    /// Spans per CPU-second without start-up.
    fn after_start(&self) -> Option<f64> {
        let cpu = self.run.cpu_s - self.startup_cpu_s?;
        (cpu > 0.0).then(|| self.run.spans as f64 / cpu)
    }

    fn within_50ms(&self) -> Option<f64> {
        fraction_within(&self.lateness, 0.05)
    }
}

fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{} ms", (s * 1000.0).round())
    } else {
        format!("{} s", (s * 10.0).round() / 10.0)
    }
}

#[derive(Debug, Clone)]
struct Check {
    run: String,
    what: String,
    ok: bool,
    /// A failed check fails the run; one that is not asserted is reported
    /// only (what the wall clock makes of a pre-filled topic).
    asserted: bool,
    detail: String,
}

struct TailgateSettings {
    clock: ClockMode,
    wait: Duration,
    after_root: Duration,
    max_trace_age: Duration,
    max_bytes: u64,
}

struct MemoryPoint {
    traces: usize,
    buffered_traces: f64,
    buffered_spans: f64,
    buffered_bytes: f64,
    span_bytes: u64,
    message_bytes: u64,
    rss: u64,
}

struct Memory {
    idle_rss: u64,
    peak_rss: u64,
    points: Vec<MemoryPoint>,
    /// RSS per byte of span encoding, least squares over the points.
    slope: f64,
    /// RSS at no buffered bytes, by the same fit.
    intercept: f64,
    /// RSS per message byte (the input as it came).
    slope_message: f64,
    /// RSS per buffered span.
    per_span: f64,
}

/// The copy and tailgate on one topic of the throughput and partitions phases.
struct Throughput {
    partitions: i32,
    /// The message time the topic spans, seconds.
    stamped_s: f64,
    copy: Figures,
    /// tailgate's runs on the topic, in the order they ran: with the stream
    /// clock, and as many with `decision.clock: wall` (`--clock-pairs`).
    runs: Vec<TailgateFigures>,
}

impl Throughput {
    /// The first run with the stream clock (with two or more pairs, right
    /// after the copy): the figure the other tables give.
    fn tailgate(&self) -> &TailgateFigures {
        self.of(ClockMode::Stream)
            .next()
            .expect("every topic has a stream-clock run")
    }

    fn of(&self, clock: ClockMode) -> impl Iterator<Item = &TailgateFigures> {
        self.runs.iter().filter(move |f| f.clock == clock)
    }

    /// Over every run with `clock`: the mean of `figure`.
    fn mean(&self, clock: ClockMode, figure: impl Fn(&TailgateFigures) -> f64) -> Option<f64> {
        let values: Vec<f64> = self.of(clock).map(figure).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    /// Spans per CPU-second over every run with `clock` (all their spans
    /// over all their CPU seconds).
    fn rate(&self, clock: ClockMode) -> Option<f64> {
        let spans = self.mean(clock, |f| f.run.spans as f64)?;
        Some(spans / self.mean(clock, |f| f.run.cpu_s)?.max(1e-9))
    }
}

fn clock_name(clock: ClockMode) -> &'static str {
    match clock {
        ClockMode::Stream => "stream",
        ClockMode::Wall => "wall",
    }
}

/// The results of one run, kept for the report.
#[derive(Default)]
struct Results {
    /// Per input partition count.
    throughput: Vec<Throughput>,
    /// N / 10 and N traces in the topic, all buffered: (traces, wait, figures).
    buffer: Vec<(usize, Duration, TailgateFigures)>,
    memory: Option<Memory>,
    /// tailgate's CPU seconds from start until a second after its
    /// partitions of an empty topic are assigned.
    startup_cpu_s: Option<f64>,
}

struct Bench {
    args: Args,
    kafka: Kafka,
    dir: PathBuf,
    checks: Vec<Check>,
    results: Results,
    started: Instant,
}

impl Bench {
    fn new(args: Args, brokers: String) -> Self {
        let dir = args
            .report
            .parent()
            .unwrap_or(Path::new("."))
            .join("e2e")
            .join(unique("run"));
        Bench {
            kafka: Kafka::new(&brokers),
            args,
            dir,
            checks: Vec::new(),
            results: Results::default(),
            started: Instant::now(),
        }
    }

    fn cleanup(&mut self) {
        if !self.args.keep_topics {
            self.kafka.delete_topics();
        }
    }

    fn run(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        eprintln!(
            "e2e: generating {} traces (seed {}); logs in {}",
            self.args.traces,
            self.args.seed,
            self.dir.display()
        );
        let w = Workload::generate(self.args.traces, self.args.seed);
        let outcome = self.phases(&w);
        let report = self.report(&w, outcome.as_ref().err());
        println!("{report}");
        if let Some(parent) = self.args.report.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&self.args.report, &report)
            .map_err(|e| format!("cannot write {}: {e}", self.args.report.display()))?;
        outcome
    }

    fn phases(&mut self, w: &Workload) -> Result<(), String> {
        let mut partition_counts = Vec::new();
        if self.args.partitions {
            partition_counts.push(1);
        }
        if self.args.throughput || self.args.partitions || self.args.buffer {
            partition_counts.push(4);
        }
        if self.args.partitions {
            partition_counts.push(16);
        }
        let mut topics: HashMap<i32, Topic> = HashMap::new();
        for &p in &partition_counts {
            let mut topic = self.kafka.create_topic(&unique(&format!("in{p}")), p)?;
            self.kafka
                .fill(&mut topic, &w.messages, self.args.stamp_rate)?;
            topics.insert(p, topic);
        }
        if self.args.throughput || self.args.partitions || self.args.buffer {
            self.results.startup_cpu_s = Some(self.startup()?);
        }
        if self.args.throughput || self.args.partitions {
            for (n, &p) in partition_counts.iter().enumerate() {
                let topic = topics[&p].clone();
                let copy = self.run_copy(w, &topic)?;
                let after_root = self.args.after_root;
                let settings = |clock| TailgateSettings {
                    clock,
                    wait: THROUGHPUT_WAIT,
                    after_root,
                    max_trace_age: Duration::from_secs(30),
                    max_bytes: 512 << 20,
                };
                let mut runs = Vec::new();
                for clock in self.clock_order(n) {
                    let again = runs.iter().any(|f: &TailgateFigures| f.clock == clock);
                    let label = format!(
                        "tailgate, {}{}{}",
                        partitions(p),
                        if clock == ClockMode::Wall {
                            ", wall clock"
                        } else {
                            ""
                        },
                        if again { ", again" } else { "" }
                    );
                    runs.push(self.run_tailgate(
                        w,
                        w.traces(),
                        &topic,
                        &label,
                        &settings(clock),
                    )?);
                }
                self.results.throughput.push(Throughput {
                    partitions: p,
                    stamped_s: topic.stamped_s(),
                    copy,
                    runs,
                });
            }
        }
        if self.args.buffer {
            let ingest = self
                .results
                .throughput
                .iter()
                .find(|t| t.partitions == 4)
                .and_then(|t| t.tailgate().ingest_s);
            self.buffer_phase(w, &topics[&4], ingest)?;
        }
        if self.args.memory {
            self.memory_phase(w)?;
        }
        Ok(())
    }

    /// The clocks of tailgate's runs on the `n`th topic, in order: pairs of a
    /// stream-clock and a wall-clock run, the first pair stream first, the
    /// next wall first (so that neither clock always runs first: the second
    /// run on a topic tends to be the cheaper), and so on. With one pair,
    /// the order alternates from topic to topic instead.
    fn clock_order(&self, n: usize) -> Vec<ClockMode> {
        let pairs = self.args.clock_pairs;
        if pairs == 0 {
            return vec![ClockMode::Stream];
        }
        (0..pairs)
            .flat_map(|k| {
                if (k + if pairs == 1 { n } else { 0 }) % 2 == 0 {
                    [ClockMode::Stream, ClockMode::Wall]
                } else {
                    [ClockMode::Wall, ClockMode::Stream]
                }
            })
            .collect()
    }

    /// tailgate's start-up CPU: on an empty topic, from start until a second
    /// after it first answers `/readyz` (its partitions assigned).
    fn startup(&mut self) -> Result<f64, String> {
        let input = self.kafka.create_topic(&unique("empty"), 4)?;
        let output = self.kafka.create_topic(&unique("empty-out"), 4)?;
        let label = "tailgate, start-up on an empty topic";
        let s = TailgateSettings {
            clock: ClockMode::Stream,
            wait: THROUGHPUT_WAIT,
            after_root: THROUGHPUT_AFTER_ROOT,
            max_trace_age: Duration::from_secs(30),
            max_bytes: 512 << 20,
        };
        let (mut process, _, port) = self.spawn_tailgate(label, &input, &output.name, &s)?;
        process.wait_ready(port)?;
        std::thread::sleep(Duration::from_secs(1));
        let cpu = process.cpu_seconds()?;
        process.terminate(Duration::from_secs(30));
        eprintln!("e2e: {label}: {cpu:.2} CPU s");
        Ok(cpu)
    }

    /// Waits until the group's committed offsets are the end offsets of
    /// every partition; `tick` runs at every look. Returns seconds since start.
    fn wait_drained(
        &self,
        process: &mut Process,
        group: &str,
        topic: &Topic,
        within: Duration,
        mut tick: impl FnMut(&Process),
    ) -> Result<f64, String> {
        let client = self.kafka.client(group);
        let deadline = process.started + within;
        let mut last_report = Instant::now();
        loop {
            process.check_alive()?;
            tick(process);
            let committed = self.kafka.committed(&client, topic)?;
            if committed == topic.end {
                return Ok(process.started.elapsed().as_secs_f64());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: committed offsets {committed:?} did not reach the end {:?} within {within:?}; last lines of {}:\n{}",
                    process.label,
                    topic.end,
                    process.log.display(),
                    process.log_tail(30)
                ));
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                let done: i64 = committed.iter().map(|c| (*c).max(0)).sum();
                eprintln!(
                    "e2e: {}: {done} of {} messages committed after {:.0} s",
                    process.label,
                    topic.end.iter().sum::<i64>(),
                    process.started.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
            std::thread::sleep(TICK);
        }
    }

    /// The longest a drain may take: generous, from the workload's size.
    fn drain_limit(&self, w: &Workload, extra: Duration) -> Duration {
        Duration::from_secs(120) + Duration::from_micros(w.total_spans() * 100) + extra
    }

    fn run_copy(&mut self, w: &Workload, topic: &Topic) -> Result<Figures, String> {
        let label = format!("raw copy, {}", partitions(topic.partitions));
        let output = self.kafka.create_topic(&unique("copy-out"), 4)?;
        let group = unique("copy");
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.env(ROLE_ENV, "copy")
            .env("E2E_BROKERS", &self.kafka.brokers)
            .env("E2E_INPUT", &topic.name)
            .env("E2E_OUTPUT", &output.name)
            .env("E2E_GROUP", &group)
            .env("E2E_MAX_SECONDS", "3600");
        let log = self.dir.join(format!("copy-{}.log", topic.partitions));
        let mut process = Process::spawn(cmd, log, &label)?;
        eprintln!("e2e: running {label} (pid {})...", process.pid());
        let drain_s = self.wait_drained(
            &mut process,
            &group,
            topic,
            self.drain_limit(w, Duration::ZERO),
            |_| {},
        )?;
        let figures = Figures {
            cpu_s: process.cpu_seconds()?,
            drain_s,
            peak_rss: process.peak_rss()?,
            spans: w.total_spans(),
        };
        process.terminate(Duration::from_secs(20));
        eprintln!(
            "e2e: {label}: {:.2} CPU s, {:.0} spans/CPU-s, drained in {:.1} s, peak RSS {:.1} MiB",
            figures.cpu_s,
            figures.spans_per_cpu_s(),
            figures.drain_s,
            figures.peak_rss as f64 / MIB
        );
        let forwarded: i64 = self
            .kafka
            .watermarks(&output.name, output.partitions)?
            .iter()
            .map(|(l, h)| h - l)
            .sum();
        let fraction = w.copy_traces as f64 / w.traces() as f64;
        self.checks.push(Check {
            asserted: true,
            run: label,
            what: "forwards the messages of every tenth trace (by key hash)".into(),
            ok: forwarded as usize == w.copy_messages && (fraction - 0.1).abs() < 0.02,
            detail: format!(
                "{forwarded} messages forwarded, {} expected: {} traces, {:.2} % of {}",
                w.copy_messages,
                w.copy_traces,
                fraction * 100.0,
                w.traces()
            ),
        });
        Ok(figures)
    }

    /// A policy directory with `bench.yaml` for one tailgate run.
    fn policy_dir(
        &self,
        group: &str,
        input: &str,
        output: &str,
        port: u16,
        s: &TailgateSettings,
    ) -> Result<PathBuf, String> {
        let dir = self.dir.join(unique("tailgate"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let yaml = format!(
            "kafka:
  brokers: {brokers}
  group_id: {group}
  input_topic: {input}
  output_topic: {output}
  compression: lz4
  commit_interval: {commit}
  drain_timeout: 10s
buffer:
  max_bytes: {max_bytes}
decision:
  clock: {clock}
  wait: {wait}
  after_root: {after_root}
  max_trace_age: {max_age}
metrics:
  listen: 127.0.0.1:{port}
rules: {RULES}
",
            brokers = self.kafka.brokers,
            commit = ms(COMMIT_INTERVAL),
            max_bytes = s.max_bytes,
            clock = match s.clock {
                ClockMode::Stream => "stream",
                ClockMode::Wall => "wall",
            },
            wait = ms(s.wait),
            after_root = ms(s.after_root),
            max_age = ms(s.max_trace_age),
        );
        let file = dir.join("bench.yaml");
        std::fs::write(&file, yaml).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        Ok(dir)
    }

    /// Starts `tailgate run` from `input` to `output`: (process, group, metrics port).
    fn spawn_tailgate(
        &self,
        label: &str,
        input: &Topic,
        output: &str,
        s: &TailgateSettings,
    ) -> Result<(Process, String, u16), String> {
        let group = unique("tailgate");
        let port = free_port()?;
        let dir = self.policy_dir(&group, &input.name, output, port, s)?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tailgate"));
        cmd.args(["run", "--env", "bench", "--policies"]).arg(&dir);
        let process = Process::spawn(cmd, dir.join("tailgate.log"), label)?;
        eprintln!("e2e: running {label} (pid {})...", process.pid());
        Ok((process, group, port))
    }

    /// Runs tailgate on `topic`, which holds the first `n` traces of `w`,
    /// until it is drained; checks its output.
    fn run_tailgate(
        &mut self,
        w: &Workload,
        n: usize,
        topic: &Topic,
        label: &str,
        s: &TailgateSettings,
    ) -> Result<TailgateFigures, String> {
        // Created ahead, so that tailgate's first produce does not wait for auto-creation.
        let output = self.kafka.create_topic(&unique("tg-out"), 4)?;
        let (mut process, group, port) = self.spawn_tailgate(label, topic, &output.name, s)?;
        let total = w.spans_of(n) as f64;
        let mut f = TailgateFigures {
            decision_wait: s.after_root.min(s.wait),
            startup_cpu_s: self.results.startup_cpu_s,
            clock: s.clock,
            ..Default::default()
        };
        let mut last_scrape: Option<Instant> = None;
        let mut previous: Option<(f64, f64)> = None;
        // What each scrape saw, for a closer look (the run's directory).
        let mut series = String::from(
            "seconds,cpu_seconds,spans_received,buffered_traces,traces_decided,spans_produced\n",
        );
        let drain_s = self.wait_drained(
            &mut process,
            &group,
            topic,
            self.drain_limit(w, s.wait),
            |p| {
                if last_scrape.is_some_and(|at| at.elapsed() < SCRAPE_EVERY) {
                    return;
                }
                last_scrape = Some(Instant::now());
                if let Some(text) = http_get(port, "/metrics") {
                    let traces = metric(&text, "tailgate_buffered_traces");
                    let received = metric(&text, "tailgate_spans_received_total");
                    f.peak_traces = f.peak_traces.max(traces);
                    f.peak_spans = f.peak_spans.max(metric(&text, "tailgate_buffered_spans"));
                    f.peak_bytes = f.peak_bytes.max(metric(&text, "tailgate_buffered_bytes"));
                    let now = p.started.elapsed().as_secs_f64();
                    if f.ingest_s.is_none() && received >= total {
                        f.ingest_s = Some(now);
                    }
                    if let Some((t, r)) = previous {
                        if now > t {
                            f.peak_ingest = f.peak_ingest.max((received - r) / (now - t));
                        }
                    }
                    previous = Some((now, received));
                    let _ = writeln!(
                        series,
                        "{:.3},{:.2},{received},{traces},{},{}",
                        p.started.elapsed().as_secs_f64(),
                        p.cpu_seconds().unwrap_or(f64::NAN),
                        metric(&text, "tailgate_traces_decided_total"),
                        metric(&text, "tailgate_spans_produced_total"),
                    );
                }
            },
        )?;
        f.run = Figures {
            cpu_s: process.cpu_seconds()?,
            drain_s,
            peak_rss: process.peak_rss()?,
            spans: w.spans_of(n),
        };
        let text = http_get(port, "/metrics").unwrap_or_default();
        let csv = process.log.with_file_name("metrics.csv");
        if let Err(e) = std::fs::write(&csv, &series) {
            eprintln!("e2e: cannot write {}: {e}", csv.display());
        }
        f.lateness = histogram(&text, "tailgate_decision_lateness_seconds");
        f.decided_memory = text
            .lines()
            .filter(|l| {
                l.starts_with("tailgate_traces_decided_total{") && l.contains("reason=\"memory\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        f.parts.late_kept =
            metric_labelled(&text, "tailgate_late_spans_total", "decision=\"keep\"");
        f.parts.late_dropped =
            metric_labelled(&text, "tailgate_late_spans_total", "decision=\"drop\"");
        f.parts.decided = if text.is_empty() {
            f64::NAN
        } else {
            metric(&text, "tailgate_traces_decided_total")
        };
        f.parts.traces = n;
        process.terminate(Duration::from_secs(30));
        eprintln!(
            "e2e: {label}: {:.2} CPU s, {:.0} spans/CPU-s, drained in {:.1} s (decision wait {:.1} s), \
             peak RSS {:.1} MiB, peak {:.0} traces buffered, p99 lateness {}",
            f.run.cpu_s,
            f.run.spans_per_cpu_s(),
            f.run.drain_s,
            f.decision_wait.as_secs_f64(),
            f.run.peak_rss as f64 / MIB,
            f.peak_traces,
            f.p99()
        );
        self.check_output(w, n, label, &output.name, &mut f)?;
        eprintln!("e2e: {label}: {}", f.parts.summary());
        Ok(f)
    }

    /// Every error and slow trace complete; the rest kept at 10 %; exactly
    /// the library's decisions; with the stream clock, no trace decided in
    /// parts. Fills in `f.parts` (its late-span and decision counts come
    /// from the metrics, read before).
    fn check_output(
        &mut self,
        w: &Workload,
        n: usize,
        label: &str,
        output: &str,
        f: &mut TailgateFigures,
    ) -> Result<(), String> {
        let messages = self.kafka.read_all(output, 4)?;
        let mut spans: HashMap<TraceId, HashSet<[u8; 8]>> = HashMap::new();
        // Per kept trace: the spans it has in each output message that holds
        // any, in the order read (one partition per trace, so in order), and
        // those messages' payload bytes.
        let mut parts: HashMap<TraceId, (Vec<usize>, usize)> = HashMap::new();
        let (mut duplicates, mut bad_keys, mut undecodable) = (0usize, 0usize, 0usize);
        for (key, payload) in &messages {
            let Ok(decoded) = otlp::decode(Bytes::from(payload.clone())) else {
                undecodable += 1;
                continue;
            };
            let mut bad = false;
            let mut in_message: Vec<(TraceId, usize)> = Vec::new();
            for (id, s) in decoded.spans {
                bad |= id.to_hex().as_bytes() != key.as_slice();
                if !spans.entry(id).or_default().insert(s.span_id) {
                    duplicates += 1;
                }
                match in_message.iter_mut().find(|(t, _)| *t == id) {
                    Some((_, count)) => *count += 1,
                    None => in_message.push((id, 1)),
                }
            }
            for (id, count) in in_message {
                let (counts, bytes) = parts.entry(id).or_default();
                counts.push(count);
                *bytes += payload.len();
            }
            bad_keys += usize::from(bad);
        }
        let complete = |i: usize| spans.get(&w.ids[i]).map_or(0, HashSet::len) >= w.spans[i];
        let must: Vec<usize> = (0..n).filter(|&i| w.must_keep[i]).collect();
        let must_missing = must.iter().filter(|&&i| !complete(i)).count();
        let others: Vec<usize> = (0..n).filter(|&i| !w.must_keep[i]).collect();
        let others_kept = others
            .iter()
            .filter(|&&i| spans.contains_key(&w.ids[i]))
            .count();
        let fraction = others_kept as f64 / others.len().max(1) as f64;
        let sigma = (0.1 * 0.9 / others.len().max(1) as f64).sqrt();
        let tolerance = (5.0 * sigma).max(0.01);
        let expected: HashSet<TraceId> = (0..n).filter(|&i| w.keep[i]).map(|i| w.ids[i]).collect();
        let not_expected = spans.keys().filter(|id| !expected.contains(id)).count();
        let incomplete = (0..n).filter(|&i| w.keep[i] && !complete(i)).count();
        let errors = w.error[..n].iter().filter(|e| **e).count();
        let slow = w.slow[..n].iter().filter(|s| **s).count();
        // The wall clock decides a pre-filled topic by how fast it is read:
        // a trace split by a pause in reading can lose the part that made it
        // an error or slow trace (the stream clock is there to prevent
        // that). So with it, completeness is reported, not asserted.
        let wall = f.clock == ClockMode::Wall;
        self.checks.push(Check {
            asserted: !wall,
            run: label.into(),
            what: if wall {
                "every error and slow trace kept, all its spans (wall clock: reported)".into()
            } else {
                "every error and slow trace kept, all its spans".into()
            },
            ok: must_missing == 0,
            detail: format!(
                "{} of {} complete ({errors} with an error, {slow} slow, some both)",
                must.len() - must_missing,
                must.len()
            ),
        });
        self.checks.push(Check {
            asserted: true,
            run: label.into(),
            what: "the other traces kept at 10 %".into(),
            ok: (fraction - 0.1).abs() <= tolerance,
            detail: format!(
                "{others_kept} of {} = {:.2} % (tolerance ± {:.2} points)",
                others.len(),
                fraction * 100.0,
                tolerance * 100.0
            ),
        });
        self.checks.push(Check {
            asserted: true,
            run: label.into(),
            what: if wall {
                "the library's decisions, nothing twice (wall clock: incomplete traces reported)".into()
            } else {
                "exactly the library's decisions, nothing twice".into()
            },
            ok: not_expected == 0
                && (incomplete == 0 || wall)
                && duplicates == 0
                && bad_keys == 0
                && undecodable == 0
                && f.decided_memory == 0.0,
            detail: format!(
                "{} traces kept ({} spans, {} messages); {not_expected} unexpected, {incomplete} incomplete, \
                 {duplicates} duplicate spans, {bad_keys} bad keys, {undecodable} undecodable, \
                 {} decided early for memory",
                spans.len(),
                spans.values().map(HashSet::len).sum::<usize>(),
                messages.len(),
                f.decided_memory
            ),
        });

        // Decided in parts: a kept trace in more than one message that one
        // message would have held.
        let index: HashMap<TraceId, usize> = (0..n).map(|i| (w.ids[i], i)).collect();
        let p = &mut f.parts;
        p.kept = spans.len();
        p.expected_kept = expected.len();
        p.messages = messages.len();
        p.most = parts.values().map(|(c, _)| c.len()).max().unwrap_or(0);
        let mut split: Vec<(&TraceId, &(Vec<usize>, usize))> = Vec::new();
        for (id, part) in &parts {
            if part.1 > ONE_MESSAGE_BYTES {
                p.oversize += 1;
            } else if part.0.len() > 1 {
                split.push((id, part));
            }
        }
        split.sort_by_key(|(id, _)| index.get(id).copied().unwrap_or(usize::MAX));
        p.split = split.len();
        p.extra_messages = split.iter().map(|(_, (c, _))| c.len() - 1).sum();
        p.examples = split
            .iter()
            .take(5)
            .map(|(id, (counts, _))| {
                let what = match index.get(id) {
                    Some(&i) if w.error[i] => format!("trace {i}, an error"),
                    Some(&i) if w.slow[i] => format!("trace {i}, slow"),
                    Some(&i) => format!("trace {i}, by rate"),
                    None => "not in the workload".into(),
                };
                let counts: Vec<String> = counts.iter().map(usize::to_string).collect();
                format!("{} ({what}): spans {}", id.to_hex(), counts.join(" + "))
            })
            .collect();
        if f.clock == ClockMode::Stream {
            let p = &f.parts;
            self.checks.push(Check {
                asserted: true,
                run: label.into(),
                what: "no trace decided in parts (stream clock, pre-filled topic)".into(),
                ok: p.split == 0
                    && p.late_kept == 0.0
                    && p.late_dropped == 0.0
                    && p.decided == n as f64,
                detail: format!(
                    "{} kept traces in {} messages ({} expected, one each): {} split{}{}; \
                     {:.0} spans read after their trace's decision ({:.0} of kept traces, {:.0} of dropped); \
                     {:.0} decisions for {n} traces",
                    p.kept,
                    p.messages,
                    p.expected_kept,
                    p.split,
                    if p.oversize > 0 {
                        format!(", {} in several for their size", p.oversize)
                    } else {
                        String::new()
                    },
                    if p.examples.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", p.examples.join("; "))
                    },
                    p.late_kept + p.late_dropped,
                    p.late_kept,
                    p.late_dropped,
                    p.decided
                ),
            });
        }
        Ok(())
    }

    /// A wait longer than reading the topic takes, on topics of a tenth of
    /// the traces and of all of them: the buffer peaks at N / 10 and at N
    /// traces. The wait is in proportion to the topic, so that the idle time
    /// (an idle tailgate spends about 13 ms of CPU a second) is too.
    fn buffer_phase(
        &mut self,
        w: &Workload,
        topic: &Topic,
        ingest_s: Option<f64>,
    ) -> Result<(), String> {
        let n = w.traces();
        // The throughput run's average read rate, start-up included (so low).
        let rate = w.total_spans() as f64 / ingest_s.unwrap_or(n as f64 / 20_000.0);
        let mut tenth = self.kafka.create_topic(&unique("in4-tenth"), 4)?;
        self.kafka
            .fill(&mut tenth, w.messages_of(0, n / 10), self.args.stamp_rate)?;
        for (traces, topic) in [(n / 10, &tenth), (n, topic)] {
            let read = w.spans_of(traces) as f64 / rate;
            let wait = Duration::from_millis(((1.5 * read + 1.0).max(2.0) * 1000.0) as u64);
            let label = format!(
                "tailgate, {traces} traces, decision wait {}",
                fmt_secs(wait.as_secs_f64())
            );
            let f = self.run_tailgate(
                w,
                traces,
                topic,
                &label,
                &TailgateSettings {
                    clock: ClockMode::Stream,
                    wait,
                    after_root: wait,
                    max_trace_age: wait.max(Duration::from_secs(30)),
                    max_bytes: 8 << 30,
                },
            )?;
            self.results.buffer.push((traces, wait, f));
        }
        Ok(())
    }

    fn memory_phase(&mut self, w: &Workload) -> Result<(), String> {
        let mut topic = self.kafka.create_topic(&unique("mem-in"), 4)?;
        let output = self.kafka.create_topic(&unique("mem-out"), 4)?;
        let label = "tailgate, memory (decision wait 1 h)";
        let s = TailgateSettings {
            clock: ClockMode::Stream,
            wait: MEMORY_WAIT,
            after_root: MEMORY_WAIT,
            max_trace_age: MEMORY_WAIT,
            max_bytes: 16 << 30,
        };
        let (mut process, _group, port) = self.spawn_tailgate(label, &topic, &output.name, &s)?;
        // Ready: its partitions are assigned.
        process.wait_ready(port)?;
        std::thread::sleep(Duration::from_secs(2));
        let idle_rss = process.rss()?;
        let mut points: Vec<MemoryPoint> = Vec::new();
        let n = w.traces();
        for step in 1..=MEMORY_STEPS {
            let (from, to) = ((step - 1) * n / MEMORY_STEPS, step * n / MEMORY_STEPS);
            self.kafka
                .fill(&mut topic, w.messages_of(from, to), self.args.stamp_rate)?;
            let spans = w.spans_of(to) as f64;
            let deadline = Instant::now() + self.drain_limit(w, Duration::ZERO);
            loop {
                process.check_alive()?;
                let text = http_get(port, "/metrics").unwrap_or_default();
                let buffered = metric(&text, "tailgate_buffered_spans");
                if buffered >= spans {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{label}: {buffered} of {spans} spans buffered by the deadline:\n{}",
                        process.log_tail(30)
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            // Let the consumer's fetch queues and the allocator settle.
            std::thread::sleep(Duration::from_secs(1));
            let text = http_get(port, "/metrics").unwrap_or_default();
            let point = MemoryPoint {
                traces: to,
                buffered_traces: metric(&text, "tailgate_buffered_traces"),
                buffered_spans: metric(&text, "tailgate_buffered_spans"),
                buffered_bytes: metric(&text, "tailgate_buffered_bytes"),
                span_bytes: w.span_bytes_cum[to - 1],
                message_bytes: w.message_bytes_cum[to - 1],
                rss: process.rss()?,
            };
            eprintln!(
                "e2e: {label}: {:.0} traces, {:.0} spans buffered, RSS {:.1} MiB",
                point.buffered_traces,
                point.buffered_spans,
                point.rss as f64 / MIB
            );
            points.push(point);
        }
        let peak_rss = process.peak_rss()?;
        process.terminate(Duration::from_secs(30));
        let all = points.last().map_or(0.0, |p| p.buffered_spans);
        self.checks.push(Check {
            asserted: true,
            run: label.into(),
            what: "holds the whole workload undecided".into(),
            ok: all == w.total_spans() as f64,
            detail: format!("{all:.0} of {} spans buffered", w.total_spans()),
        });
        let rss: Vec<f64> = points.iter().map(|p| p.rss as f64).collect();
        let xs = |f: fn(&MemoryPoint) -> f64| points.iter().map(f).collect::<Vec<f64>>();
        let (slope, intercept) = least_squares(&xs(|p| p.span_bytes as f64), &rss);
        let (slope_message, _) = least_squares(&xs(|p| p.message_bytes as f64), &rss);
        let (per_span, _) = least_squares(&xs(|p| p.buffered_spans), &rss);
        self.results.memory = Some(Memory {
            idle_rss,
            peak_rss,
            points,
            slope,
            intercept,
            slope_message,
            per_span,
        });
        Ok(())
    }
}

/// (slope, intercept) of the least-squares line through the points.
fn least_squares(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { f64::NAN };
    (slope, my - slope * mx)
}

// ---------------------------------------------------------------------------
// The report.

/// "YYYY-MM-DD HH:MM UTC" of now.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown CPU")
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB, Linux {}, {rustc}",
        kernel.trim()
    )
}

/// The commit of this checkout, and what in the build differs from it.
fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "an unknown commit".into();
    };
    let changed: Vec<String> = git(&[
        "status",
        "--porcelain",
        "--",
        "src",
        "benches",
        "Cargo.toml",
        "Cargo.lock",
    ])
    .unwrap_or_default()
    .lines()
    .filter_map(|l| l.get(3..).map(|f| format!("`{f}`")))
    .collect();
    if changed.is_empty() {
        format!("commit {commit}")
    } else {
        format!(
            "commit {commit} with uncommitted changes to {}",
            changed.join(", ")
        )
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1}", bytes / MIB)
}

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "**yes**"
    } else {
        "**no**"
    }
}

impl Bench {
    /// Split traces per run, and the stream clock against the wall clock.
    fn report_clock(&self, r: &mut String) {
        let _ = writeln!(r, "\n## Split traces and the stream clock's cost\n");
        let _ = writeln!(
            r,
            "tailgate decides `decision.wait` and `after_root` on each partition's stream clock (the largest \
             message timestamp read; with wall-clock time only at the end of the partition or while paused for \
             memory) by default; `decision.clock: wall` measures them from when each span is read, as before. \
             Both run on the same topic, one after the other. A *split trace* is a kept trace that came out in \
             more than one message although one message would have held it (under {} payload bytes; the \
             workload's traces are about 1 KiB): it was decided in parts, the rest following as late spans. \
             *Late spans* (`tailgate_late_spans_total`) counts spans read after their trace's decision, kept or \
             dropped; *decisions* (`tailgate_traces_decided_total`) counts a trace twice if its late spans \
             outlived the remembered decision. With the stream clock, none of them may happen on these \
             pre-filled topics (a correctness check); with the wall clock they are reported. {}\n",
            ONE_MESSAGE_BYTES,
            self.stamps()
        );
        let _ = writeln!(
            r,
            "Runs on each topic in the order they ran, then the stream clock against the wall clock over all of \
             them (spans over CPU seconds): the second run on a topic tends to be the cheaper, so the clocks take \
             turns going first. Single runs move by ± 10–15 %.\n"
        );
        let _ = writeln!(
            r,
            "| partitions | run | clock | CPU s | spans / CPU-s | of the copy's | drain wall s | peak RSS MiB | peak buffered traces | p99 lateness | kept traces (library) | output messages | split traces | late spans kept + dropped | decisions |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for t in &self.results.throughput {
            for (i, f) in t.runs.iter().enumerate() {
                let p = &f.parts;
                let _ = writeln!(
                    r,
                    "| {} | {} | {} | {:.2} | {:.0} | {} | {:.1} | {} | {:.0} | {} | {} ({}) | {} | {}{} | {:.0} + {:.0} | {:.0} of {} traces |",
                    t.partitions,
                    i + 1,
                    clock_name(f.clock),
                    f.run.cpu_s,
                    f.run.spans_per_cpu_s(),
                    ratio(f.run.spans_per_cpu_s(), t.copy.spans_per_cpu_s()),
                    f.run.drain_s,
                    mib(f.run.peak_rss as f64),
                    f.peak_traces,
                    f.p99(),
                    p.kept,
                    p.expected_kept,
                    p.messages,
                    p.split,
                    if p.oversize > 0 {
                        format!(" (+{} over the size limit)", p.oversize)
                    } else {
                        String::new()
                    },
                    p.late_kept,
                    p.late_dropped,
                    p.decided,
                    p.traces
                );
            }
            if let (Some(stream), Some(wall)) = (t.rate(ClockMode::Stream), t.rate(ClockMode::Wall))
            {
                let mean = |clock, figure: fn(&TailgateFigures) -> f64| {
                    t.mean(clock, figure).unwrap_or(f64::NAN)
                };
                let _ = writeln!(
                    r,
                    "| {} | **stream / wall** | | {} | **{}** ({stream:.0} / {wall:.0}) | | {} | {} | {} | | | | {} / {} | | |",
                    t.partitions,
                    ratio(mean(ClockMode::Stream, |f| f.run.cpu_s), mean(ClockMode::Wall, |f| f.run.cpu_s)),
                    ratio(stream, wall),
                    ratio(mean(ClockMode::Stream, |f| f.run.drain_s), mean(ClockMode::Wall, |f| f.run.drain_s)),
                    ratio(
                        mean(ClockMode::Stream, |f| f.run.peak_rss as f64),
                        mean(ClockMode::Wall, |f| f.run.peak_rss as f64)
                    ),
                    ratio(mean(ClockMode::Stream, |f| f.peak_traces), mean(ClockMode::Wall, |f| f.peak_traces)),
                    t.of(ClockMode::Stream).map(|f| f.parts.split).sum::<usize>(),
                    t.of(ClockMode::Wall).map(|f| f.parts.split).sum::<usize>(),
                );
            }
        }
        let examples: Vec<String> = self
            .results
            .throughput
            .iter()
            .flat_map(|t| {
                t.runs
                    .iter()
                    .enumerate()
                    .map(move |(i, f)| (t.partitions, i + 1, f))
            })
            .filter(|(_, _, f)| !f.parts.examples.is_empty())
            .map(|(p, i, f)| {
                format!(
                    "- {}, run {i}, {} clock, {} messages more than one per split trace: {}",
                    partitions(p),
                    clock_name(f.clock),
                    f.parts.extra_messages,
                    f.parts.examples.join("; ")
                )
            })
            .collect();
        if !examples.is_empty() {
            let _ = writeln!(
                r,
                "\nSplit traces (the first few in topic order; spans in each of its messages):\n\n{}",
                examples.join("\n")
            );
        }
    }

    /// How the input topics' messages are stamped, and the time they span.
    fn stamps(&self) -> String {
        let spans: Vec<String> = self
            .results
            .throughput
            .iter()
            .map(|t| format!("{:.1} s", t.stamped_s))
            .collect();
        let span = if spans.is_empty() {
            String::new()
        } else {
            format!(" (the topics above: {})", spans.join(", "))
        };
        if self.args.stamp_rate > 0.0 {
            format!(
                "Message timestamps: each trace's messages share one, traces {:.3} ms apart, as if written at \
                 {:.0} traces a second{span}, about the rate a wall-clock tailgate reads 4 partitions at, so \
                 that both clocks buffer about as many traces (`--stamp-rate`).",
                1000.0 / self.args.stamp_rate,
                self.args.stamp_rate
            )
        } else {
            format!(
                "Message timestamps: each trace's messages share one, taken as it is produced \
                 (`--stamp-rate 0`): the topic is a burst of message time{span}, read far slower than it \
                 was written, so the stream clock buffers much more of it than the wall clock."
            )
        }
    }

    fn report(&self, w: &Workload, error: Option<&String>) -> String {
        let mut r = String::new();
        let spans = w.total_spans();
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect();
        let _ = writeln!(r, "# End to end: tailgate against a raw rdkafka copy\n");
        let _ = writeln!(
            r,
            "Run {} with `scripts/bench{}{}` ({:.0} s, fills and checks included), tailgate at {}, on {}; \
             one Kafka broker (scripts/kafka, KRaft, single node) at {} on the same machine. \
             Each program runs as a process of its own and is measured as a whole (`/proc/<pid>`).\n",
            utc_now(),
            if args.is_empty() { "" } else { " " },
            args.join(" "),
            self.started.elapsed().as_secs_f64(),
            revision(),
            machine(),
            self.kafka.brokers
        );
        let errors = w.error.iter().filter(|e| **e).count();
        let slow = w.slow.iter().filter(|s| **s).count();
        let _ = writeln!(
            r,
            "Workload (`ShopWorkload::lean`, seed {}): {} traces of 7 spans, {spans} spans in {} messages \
             (one per resource and trace, keyed by the trace id in hex, uncompressed), {} MiB: \
             {:.0} message bytes per span, {:.0} bytes per span encoding; {errors} traces with an error \
             ({:.1} %), {slow} slow ones ({:.1} %). {}\n",
            self.args.seed,
            w.traces(),
            w.messages.len(),
            mib(w.message_bytes() as f64),
            w.message_bytes() as f64 / spans as f64,
            w.span_bytes() as f64 / spans as f64,
            errors as f64 * 100.0 / w.traces() as f64,
            slow as f64 * 100.0 / w.traces() as f64,
            self.stamps(),
        );
        let _ = writeln!(
            r,
            "- **raw copy**: this bench's executable in a copy role: rdkafka `BaseConsumer` → `BaseProducer`, \
             forwards the messages of every tenth trace (FNV-1a of the key) unchanged, stores an offset once \
             every forwarded message up to it is acknowledged (as tailgate does), auto-commit every {} ms; lz4, \
             `linger.ms` 5, idempotent, `acks=all` (tailgate's producer settings). No decoding. It forwards \
             10 % of the traces as they came (5 messages each); tailgate keeps about 17 % (errors, slow traces \
             and 10 % of the rest), one message per trace.\n\
             - **tailgate**: `tailgate run` with rules errors → keep, trace duration ≥ 1 s → keep, `rate: 0.1`; \
             `decision.after_root` {} s (`wait` {} s), `kafka.commit_interval` {} ms, defaults otherwise: so \
             deadlines on each partition's stream clock (message timestamps). {}\n\
             - **CPU s**: user + sys of the whole process, read when the topic is drained. **Drain wall s**: from \
             process start (start-up and joining the group included) until the group's committed offsets are the \
             end offsets of every input partition; tailgate's includes its decision wait. **Peak RSS**: VmHWM.\n",
            COMMIT_INTERVAL.as_millis(),
            self.args.after_root.as_secs_f64(),
            THROUGHPUT_WAIT.as_secs_f64(),
            COMMIT_INTERVAL.as_millis(),
            match self.args.clock_pairs {
                0 => "No wall-clock runs (`--clock-pairs 0`).".to_string(),
                n => format!(
                    "On each topic of the throughput runs, {n} run{} with the stream clock and {n} with \
                     `decision.clock: wall` (deadlines from when each span is read), taking turns going first; \
                     the other tables give the first stream-clock run.",
                    if n == 1 { "" } else { "s" }
                ),
            },
        );
        if let Some(e) = error {
            let _ = writeln!(r, "**The run stopped early:** {e}\n");
        }
        if w.traces() < 100_000 {
            let _ = writeln!(
                r,
                "**A shortened workload:** runs of a second or two, CPU times counted in 10 ms ticks and \
                 start-up included, so the ratios below swing by tens of percent from run to run and with \
                 anything else running on the machine. A smoke test of the harness and of tailgate's output; \
                 the figures to quote come from the full workload (docs/benchmarks.md).\n"
            );
        }

        // Targets.
        let main = self
            .results
            .throughput
            .iter()
            .find(|t| t.partitions == 4)
            .map(|t| (&t.copy, t.tailgate(), t));
        let _ = writeln!(r, "## Targets\n");
        let _ = writeln!(r, "| target | measured | met |\n|---|---|---|");
        if let Some((copy, tg, _)) = main {
            let rel = tg.run.spans_per_cpu_s() / copy.spans_per_cpu_s();
            let _ = writeln!(
                r,
                "| throughput: tailgate ≥ 50 % of the raw copy's spans per CPU-second (4 partitions) | {:.0} % ({:.0} against {:.0} spans per CPU-second) | {} |",
                rel * 100.0,
                tg.run.spans_per_cpu_s(),
                copy.spans_per_cpu_s(),
                yes_no(rel >= 0.5)
            );
        }
        if let Some(m) = &self.results.memory {
            let _ = writeln!(
                r,
                "| memory: resident memory per buffered span ≤ 1.5 × its encoded size + a fixed overhead | {:.2} × the span encoding ({:.0} bytes of RSS per span of {:.0} encoded bytes; {:.2} × its {:.0} message bytes); fixed overhead {} MiB | {} |",
                m.slope,
                m.per_span,
                w.span_bytes() as f64 / spans as f64,
                m.slope_message,
                w.message_bytes() as f64 / spans as f64,
                mib(m.intercept),
                yes_no(m.slope <= 1.5)
            );
        }
        if let Some((_, tg, _)) = main {
            let within = tg.within_50ms();
            let _ = writeln!(
                r,
                "| latency: decided within 50 ms of the deadline at p99, under full load (4 partitions) | p99 {} (a bucket bound of `tailgate_decision_lateness_seconds`); {} of decisions within 50 ms | {} |",
                tg.p99(),
                within.map_or("—".into(), |f| format!("{:.2} %", f * 100.0)),
                yes_no(within.is_some_and(|f| f >= 0.99))
            );
        }
        if self.results.throughput.len() > 1 {
            let cells: Vec<String> = self
                .results
                .throughput
                .iter()
                .map(|t| {
                    format!(
                        "{}: {:.0} ({:.0} %)",
                        t.partitions,
                        t.tailgate().run.spans_per_cpu_s(),
                        100.0 * t.tailgate().run.spans_per_cpu_s() / t.copy.spans_per_cpu_s()
                    )
                })
                .collect();
            let _ = writeln!(
                r,
                "| scaling with input partitions: tailgate's spans per CPU-second (% of the copy's) | {} | reported |",
                cells.join("; ")
            );
        }
        if let [(_, _, a), (_, _, b)] = self.results.buffer.as_slice() {
            let _ = writeln!(
                r,
                "| scaling with buffered traces: spans per CPU-second as the buffer grows | {:.0} → {:.0} traces buffered ({:.1}×): {:.0} → {:.0} spans per CPU-second ({:.0} %) | reported |",
                a.peak_traces,
                b.peak_traces,
                b.peak_traces / a.peak_traces.max(1.0),
                a.run.spans_per_cpu_s(),
                b.run.spans_per_cpu_s(),
                100.0 * b.run.spans_per_cpu_s() / a.run.spans_per_cpu_s()
            );
        }
        let stream_runs: Vec<(String, &TailgateFigures)> = self
            .results
            .throughput
            .iter()
            .flat_map(|t| {
                t.of(ClockMode::Stream)
                    .enumerate()
                    .map(|(i, f)| {
                        let again = if i > 0 { ", again" } else { "" };
                        (format!("{}{again}", partitions(t.partitions)), f)
                    })
                    .collect::<Vec<_>>()
            })
            .chain(
                self.results
                    .buffer
                    .iter()
                    .map(|(traces, _, f)| (format!("{traces} traces buffered"), f)),
            )
            .collect();
        if !stream_runs.is_empty() {
            let cells: Vec<String> = stream_runs
                .iter()
                .map(|(what, f)| {
                    format!("{what}: {} of {} kept traces", f.parts.split, f.parts.kept)
                })
                .collect();
            let late: f64 = stream_runs
                .iter()
                .map(|(_, f)| f.parts.late_kept + f.parts.late_dropped)
                .sum();
            let ok = stream_runs.iter().all(|(_, f)| {
                f.parts.split == 0 && f.parts.late_kept + f.parts.late_dropped == 0.0
            });
            let _ = writeln!(
                r,
                "| split traces: none on a pre-filled topic with the stream clock (kept traces in more than one output message; spans read after their trace's decision) | {}; {late:.0} late spans | {} |",
                cells.join("; "),
                yes_no(ok)
            );
        }
        let costs: Vec<String> = self
            .results
            .throughput
            .iter()
            .filter_map(|t| {
                let (stream, wall) = (t.rate(ClockMode::Stream)?, t.rate(ClockMode::Wall)?);
                let walls: Vec<String> = t
                    .of(ClockMode::Wall)
                    .map(|f| f.parts.split.to_string())
                    .collect();
                Some(format!(
                    "{}: {stream:.0} against {wall:.0} spans per CPU-second, **{}** (split traces with the wall clock: {})",
                    t.partitions,
                    ratio(stream, wall),
                    walls.join(", ")
                ))
            })
            .collect();
        if !costs.is_empty() {
            let _ = writeln!(
                r,
                "| the stream clock's cost: tailgate's spans per CPU-second, stream clock / wall clock (`decision.clock: wall`), over {} run{} of each | {} | reported |",
                self.args.clock_pairs,
                if self.args.clock_pairs == 1 { "" } else { "s" },
                costs.join("; ")
            );
        }
        let asserted = self.checks.iter().filter(|c| c.asserted).count();
        let failed = self.checks.iter().filter(|c| c.asserted && !c.ok).count();
        let reported: Vec<&Check> = self.checks.iter().filter(|c| !c.asserted).collect();
        let _ = writeln!(
            r,
            "| correctness: every error and slow trace complete, the rest at 10 %, no trace split (stream clock) | {} of {asserted} checks passed{} | {} |",
            asserted - failed,
            if reported.is_empty() {
                String::new()
            } else {
                format!(
                    "; with the wall clock (reported, not asserted), {} of {} every error and slow trace complete",
                    reported.iter().filter(|c| c.ok).count(),
                    reported.len()
                )
            },
            yes_no(failed == 0 && error.is_none())
        );

        if let Some((copy, tg, t)) = main {
            let _ = writeln!(r, "\n## Throughput, 4 input partitions\n");
            let _ = writeln!(
                r,
                "| program | CPU s (user + sys) | spans per CPU-second | drain wall s | peak RSS MiB |\n|---|---|---|---|---|"
            );
            let _ = writeln!(
                r,
                "| raw copy | {:.2} | {:.0} | {:.1} | {} |",
                copy.cpu_s,
                copy.spans_per_cpu_s(),
                copy.drain_s,
                mib(copy.peak_rss as f64)
            );
            let _ = writeln!(
                r,
                "| tailgate (stream clock) | {:.2} | {:.0} | {:.1} (of which decision wait {:.1}) | {} |",
                tg.run.cpu_s,
                tg.run.spans_per_cpu_s(),
                tg.run.drain_s,
                tg.decision_wait.as_secs_f64(),
                mib(tg.run.peak_rss as f64)
            );
            let _ = writeln!(
                r,
                "| **tailgate / copy** | {} | {} | {} ({} without the decision wait) | {} |",
                ratio(tg.run.cpu_s, copy.cpu_s),
                ratio(tg.run.spans_per_cpu_s(), copy.spans_per_cpu_s()),
                ratio(tg.run.drain_s, copy.drain_s),
                ratio(
                    tg.run.drain_s - tg.decision_wait.as_secs_f64(),
                    copy.drain_s
                ),
                ratio(tg.run.peak_rss as f64, copy.peak_rss as f64)
            );
            if let (Some(stream), Some(wall)) = (t.rate(ClockMode::Stream), t.rate(ClockMode::Wall))
            {
                let n = t.of(ClockMode::Wall).count();
                let mean = |clock, figure: fn(&TailgateFigures) -> f64| {
                    t.mean(clock, figure).unwrap_or(f64::NAN)
                };
                let _ = writeln!(
                    r,
                    "| tailgate, `decision.clock: wall`{} | {:.2} | {wall:.0} | {:.1} | {} |",
                    if n > 1 {
                        format!(" (mean of {n} runs)")
                    } else {
                        String::new()
                    },
                    mean(ClockMode::Wall, |f| f.run.cpu_s),
                    mean(ClockMode::Wall, |f| f.run.drain_s),
                    mib(mean(ClockMode::Wall, |f| f.run.peak_rss as f64))
                );
                let _ = writeln!(
                    r,
                    "| **stream clock / wall clock**{} | {} | **{}** | {} | {} |",
                    if n > 1 {
                        format!(" ({n} runs of each)")
                    } else {
                        String::new()
                    },
                    ratio(
                        mean(ClockMode::Stream, |f| f.run.cpu_s),
                        mean(ClockMode::Wall, |f| f.run.cpu_s)
                    ),
                    ratio(stream, wall),
                    ratio(
                        mean(ClockMode::Stream, |f| f.run.drain_s),
                        mean(ClockMode::Wall, |f| f.run.drain_s)
                    ),
                    ratio(
                        mean(ClockMode::Stream, |f| f.run.peak_rss as f64),
                        mean(ClockMode::Wall, |f| f.run.peak_rss as f64)
                    )
                );
            }
            let _ = writeln!(
                r,
                "\nWhile draining, the copy used {:.2} cores on average and tailgate {:.2} (CPU seconds per wall \
                 second; the machine has {}). tailgate's start-up takes {} CPU s (on an empty topic, until a \
                 second after its partitions are assigned); without it, {} spans per CPU-second. It had read every span {} s after it started, at up to \
                 {:.0} spans per second between two scrapes; at most {:.0} traces ({:.0} spans, {} MiB by its \
                 own count) were buffered at once; its `metrics.csv` in target/e2e/ has what each scrape saw.",
                copy.cpu_s / copy.drain_s,
                tg.run.cpu_s / tg.run.drain_s,
                std::thread::available_parallelism().map_or(0, |n| n.get()),
                tg.startup_cpu_s.map_or("—".into(), |c| format!("{c:.2}")),
                tg.after_start().map_or("—".into(), |r| format!("{r:.0}")),
                tg.ingest_s.map_or("—".into(), |s| format!("{s:.1}")),
                tg.peak_ingest,
                tg.peak_traces,
                tg.peak_spans,
                mib(tg.peak_bytes)
            );
            let _ = writeln!(
                r,
                "\nDecision lateness (`tailgate_decision_lateness_seconds`, cumulative):\n"
            );
            let total = tg.lateness.last().map_or(0.0, |b| b.1);
            let cells: Vec<String> = tg
                .lateness
                .iter()
                .map(|(b, c)| {
                    let bound = if b.is_infinite() {
                        "+Inf".to_string()
                    } else {
                        fmt_secs(*b)
                    };
                    format!("≤ {bound}: {:.2} %", 100.0 * c / total.max(1.0))
                })
                .collect();
            let _ = writeln!(r, "{}", cells.join(", "));
        }

        if self.results.throughput.len() > 1 {
            let _ = writeln!(r, "\n## Scaling with input partitions\n");
            let _ = writeln!(
                r,
                "The same workload on topics of 1, 4 and 16 partitions; each program reads it from the start.\n"
            );
            let _ = writeln!(
                r,
                "| partitions | copy CPU s | copy spans / CPU-s | tailgate CPU s | tailgate spans / CPU-s | tailgate / copy | copy drain s | tailgate drain s | copy peak RSS MiB | tailgate peak RSS MiB | tailgate peak buffered traces | p99 lateness |"
            );
            let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|---|---|---|");
            for row in &self.results.throughput {
                let (p, c, t) = (row.partitions, &row.copy, row.tailgate());
                let _ = writeln!(
                    r,
                    "| {p} | {:.2} | {:.0} | {:.2} | {:.0} | {} | {:.1} | {:.1} | {} | {} | {:.0} | {} |",
                    c.cpu_s,
                    c.spans_per_cpu_s(),
                    t.run.cpu_s,
                    t.run.spans_per_cpu_s(),
                    ratio(t.run.spans_per_cpu_s(), c.spans_per_cpu_s()),
                    c.drain_s,
                    t.run.drain_s,
                    mib(c.peak_rss as f64),
                    mib(t.run.peak_rss as f64),
                    t.peak_traces,
                    t.p99()
                );
            }
        }

        if !self.results.throughput.is_empty() {
            self.report_clock(&mut r);
        }

        if !self.results.buffer.is_empty() {
            let _ = writeln!(r, "\n## Scaling with buffered traces\n");
            let _ = writeln!(
                r,
                "tailgate with `decision.wait` = `after_root` longer than reading the topic takes (1.5 × the \
                 throughput run's read time for as many spans, + 1 s), on a 4-partition topic of the first tenth \
                 of the traces and on the full 4-partition topic: the buffer fills with the whole topic, then \
                 every trace is decided. The CPU seconds include the idle rest of the wait (an idle tailgate \
                 spends about 13 ms of CPU a second). Peaks of `tailgate_buffered_traces` are \
                 sampled every {} ms. *After start-up* leaves out tailgate's start-up, measured on an empty \
                 topic: {} CPU s from start until a second after its partitions are assigned.\n",
                SCRAPE_EVERY.as_millis(),
                self.results
                    .startup_cpu_s
                    .map_or("—".into(), |c| format!("{c:.2}"))
            );
            let _ = writeln!(
                r,
                "| traces in the topic | decision wait | peak buffered traces | peak buffered spans | CPU s | spans / CPU-s | after start-up | drain wall s | peak RSS MiB | split traces |\n|---|---|---|---|---|---|---|---|---|---|"
            );
            for (traces, wait, f) in &self.results.buffer {
                let _ = writeln!(
                    r,
                    "| {traces} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {} | {:.1} | {} | {} |",
                    fmt_secs(wait.as_secs_f64()),
                    f.peak_traces,
                    f.peak_spans,
                    f.run.cpu_s,
                    f.run.spans_per_cpu_s(),
                    f.after_start().map_or("—".into(), |r| format!("{r:.0}")),
                    f.run.drain_s,
                    mib(f.run.peak_rss as f64),
                    f.parts.split,
                );
            }
        }

        if let Some(m) = &self.results.memory {
            let _ = writeln!(r, "\n## Memory per buffered span\n");
            let _ = writeln!(
                r,
                "A fresh 4-partition topic filled in {MEMORY_STEPS} steps of {} traces; tailgate with `decision.wait` = \
                 `after_root` = `max_trace_age` = 1 h (nothing is decided) and `buffer.max_bytes` = 16 GiB. After each \
                 step, once every span is buffered and a second has passed: VmRSS and the buffer gauges.\n",
                w.traces() / MEMORY_STEPS
            );
            let _ = writeln!(
                r,
                "| traces in the topic | buffered traces | buffered spans | span encodings MiB | message bytes MiB | `tailgate_buffered_bytes` MiB | RSS MiB |\n|---|---|---|---|---|---|---|"
            );
            let _ = writeln!(
                r,
                "| 0 (idle, partitions assigned) | 0 | 0 | 0 | 0 | 0 | {} |",
                mib(m.idle_rss as f64)
            );
            for p in &m.points {
                let _ = writeln!(
                    r,
                    "| {} | {:.0} | {:.0} | {} | {} | {} | {} |",
                    p.traces,
                    p.buffered_traces,
                    p.buffered_spans,
                    mib(p.span_bytes as f64),
                    mib(p.message_bytes as f64),
                    mib(p.buffered_bytes),
                    mib(p.rss as f64)
                );
            }
            let per_enc = w.span_bytes() as f64 / spans as f64;
            let accounted = m.points.last().map_or(0.0, |p| {
                (p.buffered_bytes - p.span_bytes as f64) / p.buffered_spans.max(1.0)
            });
            let _ = writeln!(
                r,
                "\nLeast squares over the {MEMORY_STEPS} filled steps: RSS = **{:.2}** × span-encoding bytes + **{} MiB** \
                 (the fixed overhead; idle RSS before any input {} MiB, peak RSS {} MiB). Per buffered span: {:.0} bytes \
                 of RSS for {per_enc:.0} bytes of span encoding and {:.0} message bytes ({:.2} × the message bytes). \
                 tailgate's own accounting (`tailgate_buffered_bytes`, what `buffer.max_bytes` limits) is the encodings \
                 plus {accounted:.0} bytes per span.",
                m.slope,
                mib(m.intercept),
                mib(m.idle_rss as f64),
                mib(m.peak_rss as f64),
                m.per_span,
                w.message_bytes() as f64 / spans as f64,
                m.slope_message,
            );
        }

        let _ = writeln!(r, "\n## Correctness\n");
        let _ = writeln!(r, "| run | check | passed | detail |\n|---|---|---|---|");
        for c in &self.checks {
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} |",
                c.run,
                c.what,
                match (c.asserted, c.ok) {
                    (true, ok) => yes_no(ok),
                    (false, true) => "yes (reported)",
                    (false, false) => "no (reported)",
                },
                c.detail
            );
        }
        r
    }
}
