//! The memory budget on a real Kafka broker (started by `scripts/test`): a
//! burst far beyond what the budget holds pauses the input partitions, they
//! resume as traces are decided, and nothing is lost.
#![cfg(feature = "kafka-tests")]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tailgate::otlp::Encoding;

const BUDGET: u64 = 1024 * 1024;

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_budget_pauses_the_input_and_loses_nothing() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 2).await;
    create_topic(&output, 1).await;
    // 6 000 traces, about 12 MiB as buffered: twelve times the budget, produced
    // before tailgate starts so that it reads them as fast as it can.
    let w = Workload::shop(41, 6_000);
    let expected = w.expected_kept(RULES);
    produce_traces(&input, &w.traces, |_| Encoding::OtlpProto).await;

    let policy = format!(
        "{}buffer:\n  max_bytes: {BUDGET}\n  high_water: 0.8\n  low_water: 0.5\n",
        settings(&group, &input, &output, RULES, "5s", None)
    );
    let dir = policy_dir(&policy);
    let mut tailgate = Tailgate::start(dir.path(), free_port(), "tailgate.log");
    tailgate.wait_ready(Duration::from_secs(30));
    let mut reader = OutputReader::new(&output);

    let (mut max_paused, mut max_buffered) = (0.0f64, 0.0f64);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut complete = false;
    while Instant::now() < deadline && !complete {
        if let Some((_, body)) = tailgate.http_get("/metrics") {
            max_paused = max_paused.max(metric_sum(&body, "tailgate_partitions_paused", &[]));
            max_buffered = max_buffered.max(metric_sum(&body, "tailgate_buffered_bytes", &[]));
        }
        reader.poll(Duration::from_millis(100));
        complete = expected
            .iter()
            .all(|(id, n)| reader.output.spans.get(id).is_some_and(|s| s.len() == *n));
    }
    let log = tailgate.log_text();
    assert!(complete, "kept traces missing after the burst:\n{log}");
    assert!(max_paused > 0.0, "the input was never paused:\n{log}");
    assert!(log.contains("pausing input partitions"), "{log}");
    assert!(log.contains("resuming input partitions"), "{log}");
    assert!(
        max_buffered <= BUDGET as f64,
        "buffers held {max_buffered} bytes, over the {BUDGET}-byte budget"
    );
    reader.poll(Duration::from_secs(2));
    assert_eq!(
        reader.output.spans.len(),
        expected.len(),
        "only the kept traces"
    );
    assert_eq!(reader.output.duplicate_spans, 0);

    let memory = tailgate
        .http_get("/metrics")
        .map(|(_, b)| metric_sum(&b, "tailgate_traces_decided_total", &["reason=\"memory\""]))
        .unwrap_or(0.0);
    let rss = peak_rss_kib(tailgate.pid());
    eprintln!(
        "burst of {} traces against a {BUDGET}-byte budget: peak buffered {max_buffered} bytes, \
         {memory} traces decided early for memory, peak RSS {rss:?} KiB",
        w.traces.len()
    );
    assert!(tailgate.terminate(Duration::from_secs(30)).success());
    for (p, (committed, end)) in committed_and_end(&group, &input, 2).into_iter().enumerate() {
        assert_eq!(
            committed, end,
            "partition {p}: everything decided and committed"
        );
    }
}
