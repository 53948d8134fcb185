//! Scaling out — partitions added to the
//! input topic under a running group — needs no manual step and loses
//! nothing. The running group picks the new partitions up, tailgate grows
//! the decision topic to match before their workers log a decision, those
//! decisions are logged on the new partitions' numbers, and a restart
//! afterwards starts (it used to refuse: the decision topic had fewer
//! partitions than the input) and reads them back for late spans.
#![cfg(feature = "kafka-tests")]

use std::collections::HashSet;
use std::time::Duration;

use tailgate::otlp::{Encoding, TraceId};
use tailgate::workload::{encode, GeneratedTrace, ShopWorkload};
use tailgate_testkit::*;

const RULES: &str =
    "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: rest, sample: drop}]";

/// `n` traces, about half with an error (kept); every trace's last resource
/// (one span) is held back as its late span.
fn traces(seed: u64, n: u64) -> (Vec<GeneratedTrace>, Vec<GeneratedTrace>, HashSet<TraceId>) {
    let mut shop = ShopWorkload::new(seed);
    shop.error_rate = 0.5;
    let all: Vec<GeneratedTrace> = (0..n)
        .map(|i| shop.next_trace(1_760_000_000_000_000_000 + i * 1_000_000))
        .collect();
    let kept = all
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

/// Produces the i-th trace's messages to partition `first + i % count`,
/// whatever its key hashes to, so that every one of those partitions gets
/// traces (and a trace's late span goes where its other spans went).
async fn produce_spread(topic: &str, traces: &[GeneratedTrace], first: i32, count: i32) {
    for p in 0..count {
        let messages: Vec<(String, Vec<u8>)> = traces
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as i32 % count == p)
            .flat_map(|(_, t)| {
                let key = t.truth.trace_id.to_hex();
                t.messages
                    .iter()
                    .map(move |m| (key.clone(), encode(m, Encoding::OtlpProto)))
            })
            .collect();
        produce_to(topic, first + p, &messages).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_under_a_running_group_are_read_and_their_decisions_logged() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    let decisions = format!("{group}_decisions");
    create_topic(&input, 2).await;
    create_topic(&output, 1).await;
    // The consumer looks for new partitions every second here (the default
    // is tailgate's own, longer; the mechanism is the same).
    let yaml = settings(&group, &input, &output, RULES, "2s", None).replace(
        "'heartbeat.interval.ms=500']",
        "'heartbeat.interval.ms=500', 'topic.metadata.refresh.interval.ms=1000']",
    );
    let dir = policy_dir(&yaml);
    let spans_of = |o: &Output, id: &TraceId| o.spans.get(id).map_or(0, |s| s.len());

    // Before: two partitions, and traces on both.
    let (early_old, late_old, kept_old) = traces(41, 40);
    let (early_new, late_new, kept_new) = traces(42, 40);
    assert!(kept_new.len() > 5 && kept_new.len() < 35, "a mix");
    produce_spread(&input, &early_old, 0, 2).await;
    let mut a = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "a.log");
    a.wait_ready(Duration::from_secs(60));
    let mut reader = OutputReader::new(&output);
    let decided = reader.until(Duration::from_secs(60), |o| {
        kept_old.iter().all(|id| spans_of(o, id) == 6)
    });
    assert!(decided, "kept traces not produced:\n{}", a.log_text());
    assert_eq!(partition_count(&decisions), Some(2), "{}", a.log_text());

    // Scaling out: two more input partitions while the group runs.
    add_partitions(&input, 4).await;
    let picked_up = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        a.metrics()
            .is_some_and(|m| m.sum("tailgate_partitions_assigned", &[]) >= 4.0)
    });
    assert!(
        picked_up,
        "the running group did not pick the new partitions up:\n{}",
        a.log_text()
    );
    // Traces on the new partitions only: their decisions go to partitions
    // 2 and 3 of the decision log.
    produce_spread(&input, &early_new, 2, 2).await;
    let decided = reader.until(Duration::from_secs(60), |o| {
        kept_new.iter().all(|id| spans_of(o, id) == 6)
    });
    assert!(
        decided,
        "kept traces on the new partitions not produced:\n{}",
        a.log_text()
    );
    wait_committed_to_end(&group, &input, 4, Duration::from_secs(60), || a.log_text());
    let grown = partition_count(&decisions);
    assert!(
        grown >= Some(4),
        "the decision topic was not grown with the input ({grown:?} partitions):\n{}",
        a.log_text()
    );
    let m = a.metrics().expect("metrics");
    let written = m.sum("tailgate_decisions_written_total", &[]);
    assert_eq!(written, 80.0, "every decision logged:\n{}", a.log_text());
    assert_eq!(
        m.sum("tailgate_decisions_unlogged_total", &[]),
        0.0,
        "decisions not logged:\n{}",
        a.log_text()
    );
    assert!(
        m.samples()
            .iter()
            .any(|s| s.name == "tailgate_decisions_unlogged_total"),
        "tailgate_decisions_unlogged_total is registered at zero"
    );

    // A restart after the input grew starts, reads the new partitions'
    // decisions back, and their late spans follow them.
    assert!(a.terminate(Duration::from_secs(60)).success());
    let mut b = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "b.log");
    b.wait_ready(Duration::from_secs(60));
    produce_spread(&input, &late_new, 2, 2).await;
    produce_spread(&input, &late_old, 0, 2).await;
    let kept: HashSet<TraceId> = kept_old.union(&kept_new).copied().collect();
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
        "kept traces incomplete after their late spans: {short:?}\n{}",
        b.log_text()
    );
    let got: HashSet<TraceId> = reader.output.spans.keys().copied().collect();
    assert_eq!(got, kept, "a dropped trace's late span was kept alone");
    let m = b.metrics().expect("metrics");
    let from_log = m.sum("tailgate_late_spans_total", &[("source", "log")]);
    eprintln!(
        "input 2 -> 4 partitions under a running group: decision topic {grown:?} partitions; {written} decisions logged, {} kept traces complete; after the restart {from_log} late spans followed the log",
        kept.len()
    );
    assert_eq!(
        from_log, 80.0,
        "every late span followed its logged decision"
    );
    assert_eq!(
        m.sum("tailgate_traces_decided_total", &[]),
        0.0,
        "nothing decided anew"
    );
    assert_eq!(m.sum("tailgate_decisions_unlogged_total", &[]), 0.0);
    assert!(b.terminate(Duration::from_secs(60)).success());
}

/// The input grew while tailgate was down (or its decision topic has fewer
/// partitions for another reason): the next start grows the decision topic
/// instead of refusing, and the new partition's decisions are logged there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_after_the_input_grew_grows_the_decision_topic() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    let decisions = format!("{group}_decisions");
    create_topic(&input, 3).await;
    create_topic(&output, 1).await;
    // What an earlier run made, before the input had its third partition.
    create_topic_with(&decisions, 2, &[("cleanup.policy", "compact,delete")]).await;
    let dir = policy_dir(&settings(&group, &input, &output, RULES, "2s", None));
    let (early, _, kept) = traces(43, 30);
    produce_spread(&input, &early, 0, 3).await;
    let mut t = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "t.log");
    t.wait_ready(Duration::from_secs(60));
    let mut reader = OutputReader::new(&output);
    let spans_of = |o: &Output, id: &TraceId| o.spans.get(id).map_or(0, |s| s.len());
    let decided = reader.until(Duration::from_secs(60), |o| {
        kept.iter().all(|id| spans_of(o, id) == 6)
    });
    assert!(decided, "kept traces not produced:\n{}", t.log_text());
    wait_committed_to_end(&group, &input, 3, Duration::from_secs(60), || t.log_text());
    assert_eq!(partition_count(&decisions), Some(3), "{}", t.log_text());
    let m = t.metrics().expect("metrics");
    assert_eq!(m.sum("tailgate_decisions_written_total", &[]), 30.0);
    assert_eq!(m.sum("tailgate_decisions_unlogged_total", &[]), 0.0);
    assert!(t.terminate(Duration::from_secs(60)).success());
}
