//! Late spans follow their trace's decision
//! after the process that decided it is gone — restarted with SIGTERM,
//! killed with SIGKILL, or its partition moved to another instance — because
//! every decision is in the decision log and a partition's new worker reads
//! it back. Kept traces come out complete; a dropped trace's late span is
//! never kept as a partial trace. `tailgate why` tells both.
#![cfg(feature = "kafka-tests")]

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use tailgate::otlp::{Encoding, TraceId};
use tailgate::workload::{GeneratedTrace, ShopWorkload};
use tailgate_testkit::*;

const RULES: &str =
    "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: rest, sample: drop}]";

/// How the instance that decided goes away before the late spans come.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Gone {
    Sigterm,
    Sigkill,
    /// A second instance joins and takes a partition over; the first stays.
    Moved,
}

/// 60 traces, about half with an error; every trace's last resource (the
/// notifier, one span) comes late.
fn traces(seed: u64) -> (Vec<GeneratedTrace>, Vec<GeneratedTrace>, HashSet<TraceId>) {
    let mut shop = ShopWorkload::new(seed);
    shop.error_rate = 0.5;
    let all: Vec<GeneratedTrace> = (0..60)
        .map(|i| shop.next_trace(1_760_000_000_000_000_000 + i * 1_000_000))
        .collect();
    let kept: HashSet<TraceId> = all
        .iter()
        .filter(|t| t.truth.error)
        .map(|t| t.truth.trace_id)
        .collect();
    let mut early = all.clone();
    let mut late = all;
    for (e, l) in early.iter_mut().zip(late.iter_mut()) {
        l.messages = vec![e.messages.pop().expect("five messages")];
    }
    (early, late, kept)
}

async fn late_spans_follow_their_decision_after(gone: Gone, seed: u64) {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 2).await;
    create_topic(&output, 1).await;
    let (early, late, kept) = traces(seed);
    assert!(
        kept.len() > 10 && kept.len() < 50,
        "a mix of kept and dropped"
    );
    produce_traces(&input, &early, |_| Encoding::OtlpProto).await;
    let dir = policy_dir(&settings(&group, &input, &output, RULES, "2s", None));

    let mut a = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "a.log");
    a.wait_ready(Duration::from_secs(60));
    let mut reader = OutputReader::new(&output);
    let spans_of = |o: &Output, id: &TraceId| o.spans.get(id).map_or(0, |s| s.len());
    let decided = reader.until(Duration::from_secs(60), |o| {
        kept.iter().all(|id| spans_of(o, id) == 6)
    });
    assert!(decided, "kept traces not produced:\n{}", a.log_text());

    let mut b = match gone {
        Gone::Sigterm => {
            // Decided and committed; then a clean stop.
            wait_committed_to_end(&group, &input, 2, Duration::from_secs(30), || a.log_text());
            assert!(a.terminate(Duration::from_secs(60)).success());
            Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "b.log")
        }
        Gone::Sigkill => {
            // No shutdown, no final commit: the successor reads some of the
            // early spans again, and they too follow the logged decisions.
            a.kill9();
            Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "b.log")
        }
        Gone::Moved => {
            wait_committed_to_end(&group, &input, 2, Duration::from_secs(30), || a.log_text());
            let b = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "b.log");
            let moved = (0..300).any(|_| {
                std::thread::sleep(Duration::from_millis(100));
                b.metrics()
                    .is_some_and(|m| m.sum("tailgate_partitions_assigned", &[]) >= 1.0)
            });
            assert!(
                moved,
                "no partition moved to the second instance:\n{}",
                b.log_text()
            );
            b
        }
    };
    b.wait_ready(Duration::from_secs(60));
    // A partition's new worker starts with its first message, and reads the
    // log back before it takes that message in.
    produce_traces(&input, &late, |_| Encoding::OtlpProto).await;
    let complete = reader.until(Duration::from_secs(60), |o| {
        kept.iter().all(|id| spans_of(o, id) == 7)
    });
    reader.poll(Duration::from_secs(3));
    let short: Vec<String> = kept
        .iter()
        .filter(|id| spans_of(&reader.output, id) != 7)
        .map(|id| format!("{id}: {}", spans_of(&reader.output, id)))
        .collect();
    assert!(
        complete,
        "{gone:?}: kept traces incomplete after their late spans: {short:?}\n{}",
        b.log_text()
    );
    let got: HashSet<TraceId> = reader.output.spans.keys().copied().collect();
    assert_eq!(
        got, kept,
        "{gone:?}: a dropped trace's late span was kept as a partial trace"
    );
    assert!(
        b.log_text().contains("read the partition's decisions back"),
        "the decision log was not read back:\n{}",
        b.log_text()
    );
    let metrics = b.metrics().expect("metrics");
    let from_log = metrics.sum("tailgate_late_spans_total", &[("source", "log")]);
    let loaded = metrics.sum("tailgate_decisions_loaded_total", &[]);
    eprintln!(
        "{gone:?}: {} kept traces complete, {} dropped stay dropped; {loaded} decisions read back, {from_log} late spans followed them",
        kept.len(),
        60 - kept.len()
    );
    match gone {
        // Every late span came to the new instance.
        Gone::Sigterm | Gone::Sigkill => {
            assert!(from_log >= 60.0, "{from_log} late spans followed the log");
            if gone == Gone::Sigterm {
                assert_eq!(
                    metrics.sum("tailgate_traces_decided_total", &[]),
                    0.0,
                    "nothing decided anew"
                );
            }
        }
        // Those on the moved partition.
        Gone::Moved => assert!(from_log > 0.0, "none followed the log"),
    }

    if gone == Gone::Sigterm {
        why_tells_what_happened(dir.path(), &late, &kept);
    }
}

/// `tailgate why` on one kept and one dropped trace.
fn why_tells_what_happened(
    dir: &std::path::Path,
    traces: &[GeneratedTrace],
    kept: &HashSet<TraceId>,
) {
    let why = |id: TraceId| {
        let out = Command::new(tailgate_bin!())
            .args(["why", &id.to_hex(), "--env", "test", "--policies"])
            .arg(dir)
            .output()
            .expect("run tailgate why");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let k = traces
        .iter()
        .find(|t| kept.contains(&t.truth.trace_id))
        .expect("a kept trace");
    let d = traces
        .iter()
        .find(|t| !kept.contains(&t.truth.trace_id))
        .expect("a dropped trace");
    let text = why(k.truth.trace_id);
    assert!(text.contains("was KEPT by rule \"errors\""), "{text}");
    let text = why(d.truth.trace_id);
    assert!(text.contains("was DROPPED by rule \"rest\""), "{text}");
    assert!(
        text.contains("skipped errors"),
        "the rule that did not match: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_spans_follow_their_decision_after_a_sigterm_restart() {
    late_spans_follow_their_decision_after(Gone::Sigterm, 21).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_spans_follow_their_decision_after_a_sigkill_restart() {
    late_spans_follow_their_decision_after(Gone::Sigkill, 22).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_spans_follow_their_decision_after_their_partition_moved() {
    late_spans_follow_their_decision_after(Gone::Moved, 23).await;
}

/// As confirmed on 037c4e0: `decided_ttl`
/// 20 s, the instance that decided gone for 25 s (by the wall), and each
/// trace's late span written a second (of message time) after its trace —
/// while tailgate was down. Late in the stream by a second, it follows its
/// trace's decision however long the outage: kept traces whole (037c4e0
/// left them at 6 of 7 spans and decided the late spans anew), dropped
/// traces' late spans not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_spans_follow_their_decision_after_an_outage_longer_than_decided_ttl() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 2).await;
    create_topic(&output, 1).await;
    let (early, late, kept) = traces(24);
    let started_ms = now_ms();
    produce_traces(&input, &early, |_| Encoding::OtlpProto).await;
    let yaml = settings(&group, &input, &output, RULES, "2s", None).replace(
        "max_trace_age: 30s",
        "max_trace_age: 30s\n  decided_ttl: 20s",
    );
    let dir = policy_dir(&yaml);
    let mut a = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "a.log");
    a.wait_ready(Duration::from_secs(60));
    let mut reader = OutputReader::new(&output);
    let spans_of = |o: &Output, id: &TraceId| o.spans.get(id).map_or(0, |s| s.len());
    let decided = reader.until(Duration::from_secs(60), |o| {
        kept.iter().all(|id| spans_of(o, id) == 6)
    });
    assert!(decided, "kept traces not produced:\n{}", a.log_text());
    wait_committed_to_end(&group, &input, 2, Duration::from_secs(30), || a.log_text());
    assert!(a.terminate(Duration::from_secs(60)).success());
    // The late spans were written during the outage, a second after their
    // traces' other spans (about when those were decided: 2 s of wait).
    produce_traces_stamped(
        &input,
        &late,
        |_| Encoding::OtlpProto,
        Some(started_ms + 3_000),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let mut b = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "b.log");
    b.wait_ready(Duration::from_secs(60));
    let complete = reader.until(Duration::from_secs(60), |o| {
        kept.iter().all(|id| spans_of(o, id) == 7)
    });
    reader.poll(Duration::from_secs(3));
    let short = kept
        .iter()
        .filter(|id| spans_of(&reader.output, id) != 7)
        .count();
    assert!(
        complete,
        "{short} of {} kept traces incomplete after an outage longer than decided_ttl\n{}",
        kept.len(),
        b.log_text()
    );
    let got: HashSet<TraceId> = reader.output.spans.keys().copied().collect();
    assert_eq!(got, kept, "a dropped trace's late span was kept alone");
    let metrics = b.metrics().expect("metrics");
    assert_eq!(
        metrics.sum("tailgate_traces_decided_total", &[]),
        0.0,
        "no late span decided anew"
    );
    assert!(b.terminate(Duration::from_secs(60)).success());
}

/// Messages of `per_message` root spans each, every span a trace of its
/// own: decided soon, one decision each.
fn filler(messages: u64, per_message: u64) -> Vec<(String, Vec<u8>)> {
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
    use prost::Message as _;
    (0..messages)
        .map(|m| {
            let spans = (0..per_message)
                .map(|i| {
                    let n = m * per_message + i;
                    let mut id = [0x5f; 16];
                    id[8..].copy_from_slice(&n.to_be_bytes());
                    Span {
                        trace_id: id.to_vec(),
                        span_id: (n + 1).to_be_bytes().to_vec(),
                        name: "filler".into(),
                        kind: 2,
                        start_time_unix_nano: 1_760_000_000_000_000_000,
                        end_time_unix_nano: 1_760_000_000_001_000_000,
                        ..Default::default()
                    }
                })
                .collect();
            let data = TracesData {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource::default()),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            (format!("{m:032x}"), data.encode_to_vec())
        })
        .collect()
}

/// More traces decided between a trace's decision and its late span than
/// the old decision cache held (100 000 per partition): 120 000 on one
/// partition. The late spans still follow their decisions, and nothing is
/// forgotten within `decision.remembered_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_spans_follow_their_decision_after_more_decisions_than_the_old_cache_held() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 1).await;
    create_topic(&output, 1).await;
    let (early, late, kept) = traces(24);
    produce_traces(&input, &early, |_| Encoding::OtlpProto).await;
    let dir = policy_dir(&settings(&group, &input, &output, RULES, "2s", None));
    let mut t = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "t.log");
    t.wait_ready(Duration::from_secs(60));
    let mut reader = OutputReader::new(&output);
    let spans_of = |o: &Output, id: &TraceId| o.spans.get(id).map_or(0, |s| s.len());
    let decided = reader.until(Duration::from_secs(60), |o| {
        kept.iter().all(|id| spans_of(o, id) == 6)
    });
    assert!(decided, "kept traces not produced:\n{}", t.log_text());

    produce_in_order(&input, &filler(120, 1_000)).await;
    wait_committed_to_end(&group, &input, 1, Duration::from_secs(240), || t.log_text());
    produce_traces(&input, &late, |_| Encoding::OtlpProto).await;
    let complete = reader.until(Duration::from_secs(60), |o| {
        kept.iter().all(|id| spans_of(o, id) == 7)
    });
    reader.poll(Duration::from_secs(2));
    assert!(complete, "kept traces incomplete:\n{}", t.log_text());
    let got: HashSet<TraceId> = reader.output.spans.keys().copied().collect();
    assert_eq!(got, kept, "a dropped trace's late span was kept");
    let m = t.metrics().expect("metrics");
    let (remembered, bytes) = (
        m.sum("tailgate_remembered_decisions", &[]),
        m.sum("tailgate_remembered_decisions_bytes", &[]),
    );
    eprintln!(
        "{remembered} decisions remembered in {bytes} bytes ({:.1} each); late spans followed from memory: {}",
        bytes / remembered.max(1.0),
        m.sum("tailgate_late_spans_total", &[("source", "memory")])
    );
    assert!(remembered >= 120_060.0, "{remembered} remembered");
    assert_eq!(m.sum("tailgate_decisions_forgotten_total", &[]), 0.0);
    assert_eq!(
        m.sum("tailgate_late_spans_total", &[("source", "memory")]),
        60.0
    );
}

/// The figure: how long a partition's new worker takes to read a
/// million decisions back. Not a pass/fail test (timings are the
/// benchmark's business): run it by hand, with the release binary for a
/// figure worth quoting —
/// `TAILGATE_BIN=target/release/tailgate cargo test --release --features kafka-tests --test kafka_decision_log -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn reading_a_million_decisions_back() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use tailgate::pipeline::{LoggedDecision, RecordBatch};

    const N: u64 = 1_000_000;
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 1).await;
    create_topic(&output, 1).await;
    let log = format!("{input}_decisions");
    create_topic(&log, 1).await;
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let started = std::time::Instant::now();
    // In batches of a thousand, as a worker writes them under load.
    let mut batch = Vec::with_capacity(1_000);
    for n in 0..N {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.to_le_bytes());
        id[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        let id = TraceId(id);
        batch.push(LoggedDecision {
            trace_id: id.to_hex(),
            keep: n % 10 == 0,
            rule: (if n % 10 == 0 { "errors" } else { "rest" }).into(),
            reason: tailgate::buffer::Reason::AfterRoot.as_str().to_string(),
            probability: 1.0,
            decided_at_ms: now_ms - 1_000,
            partition: 0,
            spans: 7,
            ..LoggedDecision::default()
        });
        if batch.len() < 1_000 && n + 1 < N {
            continue;
        }
        let (key, value) = (format!("0-{n}"), RecordBatch::of(&batch).expect("a batch"));
        batch.clear();
        let mut r = BaseRecord::to(&log).key(&key).payload(&value).partition(0);
        loop {
            match producer.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    eprintln!("{N} decision records produced in {:.1?}", started.elapsed());

    // One message: the worker starts, reads the log back, then takes it in.
    let (early, _, _) = traces(31);
    produce_traces(&input, &early[..1], |_| Encoding::OtlpProto).await;
    let dir = policy_dir(&settings(&group, &input, &output, RULES, "2s", None));
    let bin = std::env::var("TAILGATE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tailgate_bin!().to_path_buf());
    let mut t = Tailgate::start(&bin, dir.path(), free_port(), "t.log");
    t.wait_ready(Duration::from_secs(60));
    let line = (0..1_200).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        t.log_text()
            .lines()
            .find(|l| l.contains("read the partition's decisions back"))
            .map(str::to_string)
    });
    let line = line.unwrap_or_else(|| panic!("not read back within 120 s:\n{}", t.log_text()));
    eprintln!("{}: {line}", bin.display());
    let metrics = t.metrics().expect("metrics");
    eprintln!(
        "remembered {} decisions in {} bytes ({:.1} bytes each), rss {:?} bytes",
        metrics.sum("tailgate_remembered_decisions", &[]),
        metrics.sum("tailgate_remembered_decisions_bytes", &[]),
        metrics.sum("tailgate_remembered_decisions_bytes", &[])
            / metrics.sum("tailgate_remembered_decisions", &[]).max(1.0),
        t.process().rss()
    );
    assert!(line.contains(&format!("read={N}")), "{line}");
}
