//! `tailgate replay` decides as `tailgate run` does, on a real broker: one
//! backlog with traces whose last part comes after their quiet period (so
//! they are decided in two parts), a message stamped ten minutes ahead and
//! one an hour behind (a producer's clock that lies) is read by a running
//! tailgate with the decision log on; then the same topic is replayed. The
//! decisions replay makes are the decisions the log holds, one for one
//! (trace, keep, rule, spans), and the spans replay keeps are the spans the
//! output topic holds — because replay runs the production pipeline.
#![cfg(feature = "kafka-tests")]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use tailgate::otlp::{Encoding, TraceId};
use tailgate::pipeline::LoggedDecision;
use tailgate::replay::{Capture, ReplayConfig};
use tailgate::workload::{encode, ShopWorkload};
use tailgate_testkit::*;

const PARTITIONS: i32 = 3;
const TRACES: u64 = 240;

/// One decision: trace, keep, rule, spans.
type Part = (TraceId, bool, String, usize);

/// The backlog: (key, stamp, payload) in the order produced. Trace `i`
/// starts at `base + 40 i` ms; its messages are 5 ms apart, except that
/// every fifth trace's last message comes 3 s later (after its quiet
/// period, `after_root` 1 s); one message is stamped ten minutes ahead and
/// one an hour behind.
fn backlog(base: i64) -> Vec<(String, i64, Vec<u8>)> {
    let mut shop = ShopWorkload::new(22);
    shop.error_rate = 0.2;
    let mut out = Vec::new();
    for i in 0..TRACES {
        let start = base + 40 * i as i64;
        let t = shop.next_trace(start as u64 * 1_000_000);
        let key = t.truth.trace_id.to_hex();
        let last = t.messages.len() - 1;
        for (j, m) in t.messages.iter().enumerate() {
            let mut stamp = start + 5 * j as i64;
            if i % 5 == 0 && j == last {
                stamp += 3_000;
            }
            if i == 100 && j == 1 {
                stamp += 600_000;
            }
            if i == 150 && j == 2 {
                stamp -= 3_600_000;
            }
            out.push((key.clone(), stamp, encode(m, Encoding::OtlpProto)));
        }
    }
    // Produced in stamp order, as producers writing live would (the two
    // wrong stamps where their producer wrote them).
    out.sort_by_key(|(_, stamp, _)| {
        if *stamp > base + 100_000 {
            stamp - 600_000
        } else if *stamp < base {
            stamp + 3_600_000
        } else {
            *stamp
        }
    });
    out
}

async fn produce(topic: &str, messages: &[(String, i64, Vec<u8>)]) {
    let p = producer();
    let mut pending = Vec::new();
    for (key, stamp, payload) in messages {
        pending.push(
            p.send(
                FutureRecord::to(topic)
                    .key(key)
                    .payload(payload)
                    .timestamp(*stamp),
                Duration::from_secs(30),
            ),
        );
    }
    for f in pending {
        f.await.map_err(|(e, _)| e).expect("produced");
    }
}

fn counted(parts: impl IntoIterator<Item = Part>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (id, keep, rule, spans) in parts {
        *out.entry(format!("{id} keep={keep} {rule} {spans}"))
            .or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_a_topic_decides_what_run_decided_of_it() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, PARTITIONS).await;
    create_topic(&output, 1).await;
    let decisions = format!("{group}_decisions");
    // Two minutes ago: the backlog is in the past, the message stamped ten
    // minutes ahead is ahead of the wall clock too.
    produce(&input, &backlog(now_ms() - 120_000)).await;

    let rules = "[{name: errors, when: {trace: {error: true}}, sample: keep}, \
                 {name: slow, when: {trace: {duration: {gt: 1s}}}, sample: keep}, \
                 {name: baseline, sample: {rate: 0.2}}]";
    let policy = settings(&group, &input, &output, rules, "10s", None);
    let dir = policy_dir(&policy);
    let mut run = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "run.log");
    run.wait_ready(Duration::from_secs(60));
    // Every offset committed: every trace decided, its decision logged
    // (the log pins the offsets), its kept spans delivered. The trace with
    // the stamp ten minutes ahead waits for `max_trace_age` (30 s).
    wait_committed_to_end(&group, &input, PARTITIONS, Duration::from_secs(90), || {
        run.log_text()
    });
    let mut reader = OutputReader::new(&output);
    reader.poll(Duration::from_secs(3));
    assert!(run.terminate(Duration::from_secs(60)).success());

    let within = Duration::from_secs(60);
    let mut logged = Vec::new();
    for r in read_topic(&decisions, PARTITIONS, within) {
        for record in LoggedDecision::read(&r.payload).expect("a batch of decision records") {
            let id = record.trace().expect("a trace id");
            logged.push((id, record.keep, record.rule, record.spans as usize));
        }
    }
    let mut capture = Capture::default();
    for r in read_topic(&input, PARTITIONS, within) {
        capture.add(
            r.partition,
            r.timestamp,
            r.key.map(bytes::Bytes::from),
            bytes::Bytes::from(r.payload),
        );
    }
    capture.read_now();

    let sources = tailgate::config::Sources::for_env(dir.path(), "test", None);
    let loaded = tailgate::config::Settings::load(&sources).expect("policy loads");
    let config = ReplayConfig {
        clock: loaded.settings.clock_config(),
        decided_ttl: loaded.settings.decision.decided_ttl,
        ..ReplayConfig::new(loaded.settings.buffer_config(1))
    };
    let replayed = tailgate::replay::decisions(Arc::new(loaded.rules), config, capture);
    let mut decided = Vec::new();
    let mut kept_spans: HashMap<TraceId, usize> = HashMap::new();
    let mut split = 0;
    for (id, parts) in &replayed {
        split += usize::from(parts.len() > 1);
        for o in parts {
            if o.keep {
                *kept_spans.entry(*id).or_default() += o.spans;
            }
            if o.reason.is_some() {
                decided.push((*id, o.keep, o.rule.to_string(), o.spans));
            }
        }
    }
    assert!(
        split >= (TRACES / 5 - 5) as usize,
        "the traces whose last part came late are decided in two parts: {split}"
    );
    let (logged, decided) = (counted(logged), counted(decided));
    let differ: Vec<String> = logged
        .iter()
        .filter(|(k, n)| decided.get(*k) != Some(n))
        .map(|(k, n)| format!("run {k} ×{n}, replay ×{:?}", decided.get(k)))
        .chain(
            decided
                .iter()
                .filter(|(k, _)| !logged.contains_key(*k))
                .map(|(k, n)| format!("replay only {k} ×{n}")),
        )
        .collect();
    assert!(
        differ.is_empty(),
        "replay and run decided differently ({} of {}):\n{}",
        differ.len(),
        logged.len(),
        differ.join("\n")
    );
    let out: HashMap<TraceId, usize> = reader
        .output
        .spans
        .iter()
        .map(|(id, s)| (*id, s.len()))
        .collect();
    assert_eq!(out, kept_spans, "the spans run produced, and replay kept");

    // The command line reads the topic and says the same.
    let report = replay_topic(tailgate_bin!(), dir.path(), "test", &input);
    assert_eq!(report["traces_kept"].as_u64(), Some(out.len() as u64));
    assert_eq!(report["split_traces"].as_u64(), Some(split as u64));
}
