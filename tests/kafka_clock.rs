//! Deciding by stream time, on a real Kafka broker (started by `scripts/test`):
//! one backlog of traces with asynchronous hops, read at full speed, with
//! read pauses longer than the quiet period, with a small fetch size and
//! across a SIGKILL, gets the same decisions — the rules' over whole traces —
//! and no trace split; the wall clock, with the same pauses, splits traces
//! and loses errors (the control that shows the test can fail).
//!
//! The input simulates live production: trace `i`'s synchronous part
//! (gateway, profile-service) is stamped `base + i * 20 ms`, its
//! asynchronous hops (a search indexer and a notifier consuming the order
//! the gateway published) 0.5–1.5 s later, within `decision.after_root`
//! (2 s) of stream time, so they sit a few dozen traces later in the topic.
//! Some traces fail only in a hop: split from its trace, the hop would
//! follow the synchronous part's baseline drop and the error would be lost.
#![cfg(feature = "kafka-tests")]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tailgate::otlp::{self, Encoding, TraceId};
use tailgate::workload::{build_trace, encode, GeneratedTrace, SpanSpec, Truth};
use tailgate_testkit::*;

/// Errors are kept, a tenth of the rest (by trace id).
const ERRORS_AND_A_TENTH: &str = "[{name: errors, when: {trace: {error: true}}, sample: keep}, \
                     {name: baseline, sample: {rate: 0.1}}]";
const PARTITIONS: i32 = 4;
const TRACES: usize = 2_000;
/// Stream time between two traces' synchronous parts.
const TRACE_EVERY_MS: i64 = 20;
/// Read pauses: every worker stops reading this long (longer than both
/// `decision.wait` and `decision.after_root`) about every batch it takes.
const LONG_PAUSE: &str = "100:6000";

/// Where a trace fails, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    None,
    /// In the synchronous part (profile-service).
    Sync,
    /// In an asynchronous hop only (search-indexer or notifier).
    Hop,
}

/// One trace of the backlog: its messages, each with its Kafka timestamp.
struct Traced {
    trace: GeneratedTrace,
    /// The Kafka timestamp (ms since the Unix epoch) of each of
    /// `trace.messages`.
    stamps: Vec<i64>,
    failure: Failure,
}

/// The backlog: `TRACES` shop-like traces whose hops come 0.5–1.5 s after
/// their synchronous part, stamped as if produced live from `base_ms` on.
fn backlog(seed: u64, base_ms: i64) -> Vec<Traced> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..TRACES)
        .map(|i| {
            let mut id = [0u8; 16];
            rng.fill(&mut id);
            id[0] |= 1;
            let trace_id = TraceId(id);
            let mut span_ids = vec![[0u8; 8]; 5];
            for s in &mut span_ids {
                rng.fill(s);
                s[0] |= 1;
            }
            // The root ends (and the gateway exports) at `root_end`.
            let root_end = base_ms + i as i64 * TRACE_EVERY_MS;
            let root_ms = 35u64;
            let start_ms = root_end - root_ms as i64;
            let indexer_after: u64 = rng.random_range(500..=1_500);
            let notifier_after: u64 = rng.random_range(500..=1_500);
            let indexer_dur: u64 = rng.random_range(3..=30);
            let notifier_dur: u64 = rng.random_range(2..=20);
            let roll: f64 = rng.random();
            let failure = if roll < 0.08 {
                Failure::Hop
            } else if roll < 0.10 {
                Failure::Sync
            } else {
                Failure::None
            };
            let use_indexer = rng.random_bool(0.5);

            let mut specs = vec![
                SpanSpec::new("gateway", "POST /checkout", None, 0, root_ms),
                SpanSpec::new("profile-service", "GET /profile/{id}", Some(0), 2, 25),
                SpanSpec::new("gateway", "orders publish", Some(0), 30, 2),
                SpanSpec::new(
                    "search-indexer",
                    "orders process",
                    Some(2),
                    root_ms + indexer_after - indexer_dur,
                    indexer_dur,
                ),
                SpanSpec::new(
                    "notifier",
                    "orders process",
                    Some(2),
                    root_ms + notifier_after - notifier_dur,
                    notifier_dur,
                ),
            ];
            use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
            specs[1].kind = SpanKind::Server;
            specs[2].kind = SpanKind::Producer;
            specs[3].kind = SpanKind::Consumer;
            specs[4].kind = SpanKind::Consumer;
            match failure {
                Failure::Sync => specs[1].error = true,
                Failure::Hop if use_indexer => specs[3].error = true,
                Failure::Hop => specs[4].error = true,
                Failure::None => {}
            }
            let messages = build_trace(trace_id, &span_ids, start_ms as u64 * 1_000_000, &specs);
            // build_trace groups by service in order of appearance:
            // gateway, profile-service, search-indexer, notifier. Each is
            // produced when its last span ends.
            assert_eq!(messages.len(), 4);
            let stamps = vec![
                root_end,
                start_ms + 27,
                root_end + indexer_after as i64,
                root_end + notifier_after as i64,
            ];
            let duration_ns = (root_ms + indexer_after.max(notifier_after)) * 1_000_000;
            Traced {
                trace: GeneratedTrace {
                    truth: Truth {
                        trace_id,
                        spans: specs.len(),
                        error: failure != Failure::None,
                        slow: false,
                        health_check: false,
                        duration_ns,
                    },
                    messages,
                },
                stamps,
                failure,
            }
        })
        .collect()
}

/// Produces every message of `traces` keyed by its trace id with its own
/// timestamp, in timestamp order (as live production would have), with one
/// idempotent producer so each partition holds them in that order.
async fn produce_backlog(topic: &str, traces: &[Traced]) {
    let mut all: Vec<(i64, usize, usize)> = traces
        .iter()
        .enumerate()
        .flat_map(|(t, tr)| tr.stamps.iter().enumerate().map(move |(m, s)| (*s, t, m)))
        .collect();
    all.sort();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut pending = Vec::with_capacity(all.len());
    for (stamp, t, m) in all {
        let tr = &traces[t];
        let key = tr.trace.truth.trace_id.to_hex();
        let payload = encode(&tr.trace.messages[m], Encoding::OtlpProto);
        let mut record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .timestamp(stamp);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((e, r)) => {
                    assert!(Instant::now() < deadline, "cannot enqueue: {e}");
                    record = r;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    for d in pending {
        d.await
            .expect("delivery future")
            .map_err(|(e, _)| e)
            .expect("produced");
    }
}

/// How one run reads the backlog.
struct Way {
    name: &'static str,
    clock: &'static str,
    /// Extra librdkafka consumer properties.
    consumer_options: &'static [&'static str],
    /// `TAILGATE_TEST_READ_PAUSE`.
    read_pause: Option<&'static str>,
}

fn run_settings(group: &str, input: &str, output: &str, way: &Way) -> String {
    let options: Vec<String> = ["session.timeout.ms=6000", "heartbeat.interval.ms=500"]
        .iter()
        .chain(way.consumer_options)
        .map(|o| format!("'{o}'"))
        .collect();
    format!(
        "kafka:
  brokers: {broker}
  group_id: {group}
  input_topic: {input}
  output_topic: {output}
  commit_interval: 500ms
  drain_timeout: 20s
  consumer_options: [{options}]
decision:
  wait: 5s
  after_root: 2s
  max_trace_age: 10m
  clock: {clock}
rules: {ERRORS_AND_A_TENTH}
",
        broker = bootstrap(),
        options = options.join(", "),
        clock = way.clock,
    )
}

/// `tailgate run` with test-only faults in its environment.
fn start(dir: &std::path::Path, log_name: &str, read_pause: Option<&str>) -> Tailgate {
    let env: Vec<(&str, &str)> = read_pause
        .map(|p| ("TAILGATE_TEST_READ_PAUSE", p))
        .into_iter()
        .collect();
    Tailgate::start_with_env(tailgate_bin!(), dir, free_port(), log_name, &env)
}

/// What the output topic holds, message by message.
#[derive(Default)]
struct Received {
    /// trace id → the span ids of each output message that carried it.
    messages: HashMap<TraceId, Vec<HashSet<[u8; 8]>>>,
    total: usize,
}

/// Reads all of `topic` (one partition, no transactions): until as many
/// messages as its end offset, at most `within`.
fn read_all(topic: &str, within: Duration) -> Received {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("clock-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let (_, end) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("offset");
    consumer.assign(&tpl).expect("assign");
    let mut got = Received::default();
    let deadline = Instant::now() + within;
    while (got.total as i64) < end {
        assert!(
            Instant::now() < deadline,
            "read {} of {end} output messages within {within:?}",
            got.total
        );
        let Some(r) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = r.expect("output message");
        got.total += 1;
        let decoded = otlp::decode(Bytes::copy_from_slice(m.payload().unwrap_or_default()))
            .expect("output decodes as OTLP");
        let mut per_trace: HashMap<TraceId, HashSet<[u8; 8]>> = HashMap::new();
        for (id, s) in decoded.spans {
            per_trace.entry(id).or_default().insert(s.span_id);
        }
        for (id, spans) in per_trace {
            got.messages.entry(id).or_default().push(spans);
        }
    }
    got
}

/// One run's figures.
#[derive(Debug)]
struct Figures {
    kept: HashSet<TraceId>,
    messages: usize,
    /// Output messages per kept trace → traces.
    messages_per_trace: std::collections::BTreeMap<usize, usize>,
    /// Kept traces no single output message holds whole.
    split: usize,
    /// Output messages holding part of a trace only.
    partial_messages: usize,
    /// Kept traces whose spans are not all in the output.
    incomplete: usize,
    /// Traces the rules keep that are not in the output at all.
    missing: usize,
    /// ... of which fail in an asynchronous hop only.
    missing_hop_errors: usize,
    /// Traces in the output the rules drop.
    unexpected: usize,
    late_spans: f64,
    decided: f64,
    decided_by_reason: Vec<(&'static str, f64)>,
    clamped: f64,
}

fn figures(
    got: &Received,
    expected: &HashMap<TraceId, usize>,
    failure: &HashMap<TraceId, Failure>,
    metrics: &Metrics,
) -> Figures {
    let kept: HashSet<TraceId> = got.messages.keys().copied().collect();
    let mut messages_per_trace = std::collections::BTreeMap::new();
    let (mut split, mut incomplete, mut partial_messages) = (0, 0, 0);
    for (id, msgs) in &got.messages {
        *messages_per_trace.entry(msgs.len()).or_insert(0) += 1;
        let want = expected.get(id).copied().unwrap_or(5);
        if !msgs.iter().any(|m| m.len() == want) {
            split += 1;
        }
        partial_messages += msgs.iter().filter(|m| m.len() < want).count();
        let all: HashSet<_> = msgs.iter().flatten().collect();
        if all.len() < want {
            incomplete += 1;
        }
    }
    let missing: Vec<_> = expected.keys().filter(|id| !kept.contains(id)).collect();
    Figures {
        missing_hop_errors: missing
            .iter()
            .filter(|id| failure[**id] == Failure::Hop)
            .count(),
        missing: missing.len(),
        unexpected: kept.iter().filter(|id| !expected.contains_key(id)).count(),
        kept,
        messages: got.total,
        messages_per_trace,
        split,
        partial_messages,
        incomplete,
        late_spans: metrics.sum("tailgate_late_spans_total", &[]),
        decided: metrics.sum("tailgate_traces_decided_total", &[]),
        decided_by_reason: ["wait", "after_root", "max_age", "memory"]
            .into_iter()
            .map(|r| {
                (
                    r,
                    metrics.sum("tailgate_traces_decided_total", &[("reason", r)]),
                )
            })
            .collect(),
        clamped: metrics.sum("tailgate_clock_clamped_total", &[]),
    }
}

fn report(name: &str, took: Duration, f: &Figures) {
    eprintln!(
        "{name:>12}: to the end in {took:.1?}; kept {} traces in {} messages; messages per kept \
         trace {:?}; split {} ({} partial messages); incomplete {}; missing {} ({} failing in a \
         hop only); unexpected {}; late spans {}; decided {} by reason {:?}; clamped {}",
        f.kept.len(),
        f.messages,
        f.messages_per_trace,
        f.split,
        f.partial_messages,
        f.incomplete,
        f.missing,
        f.missing_hop_errors,
        f.unexpected,
        f.late_spans,
        f.decided,
        f.decided_by_reason,
        f.clamped,
    );
}

/// Takes the metrics of a run that has committed the end of its input,
/// stops it and reads its output.
fn finish(tailgate: &mut Tailgate, output: &str) -> (Received, Metrics) {
    let metrics = tailgate.metrics().unwrap_or_default();
    let status = tailgate.terminate(Duration::from_secs(40));
    assert!(
        status.success(),
        "exited with {status}:\n{}",
        tailgate.log_text()
    );
    (read_all(output, Duration::from_secs(60)), metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_backlog_read_at_any_speed_gets_the_same_decisions_and_no_trace_split() {
    let began = Instant::now();
    let input = unique("clock-in");
    create_topic(&input, PARTITIONS).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    // A backlog: written an hour ago, over TRACES * 20 ms.
    let traces = backlog(15, now_ms - 3_600_000);
    produce_backlog(&input, &traces).await;
    let failure: HashMap<TraceId, Failure> = traces
        .iter()
        .map(|t| (t.trace.truth.trace_id, t.failure))
        .collect();
    let workload = Workload {
        traces: traces.iter().map(|t| t.trace.clone()).collect(),
    };
    let expected = workload.expected_kept(ERRORS_AND_A_TENTH);
    let hop_errors = traces.iter().filter(|t| t.failure == Failure::Hop).count();
    eprintln!(
        "backlog: {} traces, {} messages on {PARTITIONS} partitions over {} s of stream time; \
         {hop_errors} fail in an asynchronous hop only; the rules keep {} (in {:?})",
        traces.len(),
        traces.len() * 4,
        TRACES as i64 * TRACE_EVERY_MS / 1000,
        expected.len(),
        began.elapsed()
    );

    let ways = [
        Way {
            name: "full speed",
            clock: "stream",
            consumer_options: &[],
            read_pause: None,
        },
        Way {
            name: "read pauses",
            clock: "stream",
            consumer_options: &[],
            read_pause: Some(LONG_PAUSE),
        },
        Way {
            name: "small fetch",
            clock: "stream",
            consumer_options: &["max.partition.fetch.bytes=2048"],
            read_pause: None,
        },
        Way {
            name: "killed",
            clock: "stream",
            consumer_options: &[],
            read_pause: Some("100:3000"),
        },
        Way {
            name: "wall control",
            clock: "wall",
            consumer_options: &[],
            read_pause: Some(LONG_PAUSE),
        },
    ];
    struct Running {
        tailgate: Tailgate,
        started: Instant,
        dir: tempfile::TempDir,
        group: String,
        output: String,
    }
    let mut running = Vec::new();
    for way in &ways {
        let (group, output) = (unique("clock"), unique("clock-out"));
        create_topic(&output, 1).await;
        let dir = policy_dir(&run_settings(&group, &input, &output, way));
        let started = Instant::now();
        let tailgate = start(dir.path(), "tailgate.log", way.read_pause);
        running.push(Running {
            tailgate,
            started,
            dir,
            group,
            output,
        });
    }
    for r in &mut running {
        r.tailgate.wait_ready(Duration::from_secs(30));
    }

    // Every run to the end of the input (committed), each timed from its
    // start. "killed" is killed (SIGKILL) once it has committed a third of
    // the input, and a second process of its group reads on from there at
    // full speed.
    let killed = ways
        .iter()
        .position(|w| w.name == "killed")
        .expect("killed");
    let mut restarted = false;
    let mut took: Vec<Option<Duration>> = vec![None; running.len()];
    let deadline = Instant::now() + Duration::from_secs(150);
    while took.iter().any(Option::is_none) {
        for (i, r) in running.iter_mut().enumerate() {
            if took[i].is_some() {
                continue;
            }
            let offsets = committed_and_end(&r.group, &input, PARTITIONS);
            let at_end = offsets.iter().all(|(c, e)| c == e);
            if i == killed && !restarted {
                let committed: i64 = offsets.iter().map(|(c, _)| (*c).max(0)).sum();
                let end: i64 = offsets.iter().map(|(_, e)| *e).sum();
                if committed * 3 >= end {
                    assert!(
                        !at_end,
                        "\"killed\" read everything before it could be killed"
                    );
                    r.tailgate.kill9();
                    eprintln!(
                        "      killed: SIGKILL at (committed, end) {offsets:?}, {:.1?} after its start",
                        r.started.elapsed()
                    );
                    r.tailgate = start(r.dir.path(), "restarted.log", None);
                    restarted = true;
                }
                continue;
            }
            if at_end {
                took[i] = Some(r.started.elapsed());
            }
        }
        if Instant::now() >= deadline {
            let stuck: Vec<String> = ways
                .iter()
                .zip(&running)
                .zip(&took)
                .filter(|(_, t)| t.is_none())
                .map(|((w, r), _)| {
                    format!(
                        "{}: (committed, end) {:?}\n{}",
                        w.name,
                        committed_and_end(&r.group, &input, PARTITIONS),
                        r.tailgate.log_text()
                    )
                })
                .collect();
            panic!(
                "not committed to the end within 150 s:\n{}",
                stuck.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let took: Vec<Duration> = took.into_iter().flatten().collect();

    let mut results = Vec::new();
    for ((way, r), took) in ways.iter().zip(running.iter_mut()).zip(&took) {
        let (got, metrics) = finish(&mut r.tailgate, &r.output);
        let f = figures(&got, &expected, &failure, &metrics);
        report(way.name, *took, &f);
        results.push(f);
    }
    eprintln!("all runs done in {:?}", began.elapsed());

    let want: HashSet<TraceId> = expected.keys().copied().collect();
    for (way, f) in ways.iter().zip(&results) {
        if way.clock == "wall" {
            continue;
        }
        let name = way.name;
        assert_eq!(
            f.kept, want,
            "{name}: kept traces differ from the rules' over whole traces: \
             {} missing ({} failing in a hop only), {} unexpected",
            f.missing, f.missing_hop_errors, f.unexpected
        );
        assert_eq!(f.split, 0, "{name}: traces split: {f:?}");
        assert_eq!(f.incomplete, 0, "{name}: kept traces incomplete");
        assert_eq!(f.clamped, 0.0, "{name}: timestamps clamped");
        let by = |r: &str| {
            f.decided_by_reason
                .iter()
                .find(|(n, _)| *n == r)
                .map_or(0.0, |(_, v)| *v)
        };
        assert_eq!(
            (by("max_age"), by("memory")),
            (0.0, 0.0),
            "{name}: decided early"
        );
        if name != "killed" {
            // One message per kept trace, each trace decided once, no span late.
            assert_eq!(
                f.messages_per_trace.keys().copied().collect::<Vec<_>>(),
                vec![1],
                "{name}: more than one message for a kept trace"
            );
            assert_eq!(f.late_spans, 0.0, "{name}: late spans");
            assert_eq!(f.decided, TRACES as f64, "{name}: traces decided");
        }
    }
    // The pauses did happen: each worker reads about 2 000 messages, in
    // batches of at most 256, and pauses 6 s about every batch.
    for (way, took) in ways.iter().zip(&took) {
        if way.read_pause == Some(LONG_PAUSE) {
            assert!(
                *took >= Duration::from_secs(24),
                "{}: to the end in {took:?}: the read pauses did not happen",
                way.name
            );
        }
    }
    // The control: deciding by when spans are read, the same pauses decide
    // traces before their hops are read — kept traces split, and traces
    // failing in a hop only lost.
    let wall = &results[ways.len() - 1];
    assert!(
        wall.split > 0 && wall.missing_hop_errors > 0,
        "the wall clock with read pauses split no trace and lost no error: {wall:?}"
    );
}
