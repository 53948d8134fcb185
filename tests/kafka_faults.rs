//! Faults and group changes on a real Kafka broker (started by `scripts/test`):
//! late spans, and instances joining and leaving the consumer group.
#![cfg(feature = "kafka-tests")]

use std::collections::HashSet;
use std::time::Duration;

use tailgate::otlp::Encoding;
use tailgate::workload::ShopWorkload;
use tailgate_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_spans_follow_their_traces_decision() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 2).await;
    create_topic(&output, 1).await;
    let rules =
        "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: rest, sample: drop}]";
    let mut shop = ShopWorkload::new(3);
    shop.error_rate = 0.5;
    let w = Workload {
        traces: (0..60)
            .map(|i| shop.next_trace(1_760_000_000_000_000_000 + i * 1_000_000))
            .collect(),
    };
    let kept: Vec<_> = w.traces.iter().filter(|t| t.truth.error).collect();
    assert!(
        kept.len() > 10 && kept.len() < 50,
        "a mix of kept and dropped traces"
    );

    // Everything but the last resource (notifier, one span) of each trace.
    let mut early = w.traces.clone();
    let mut late = w.traces.clone();
    for (e, l) in early.iter_mut().zip(late.iter_mut()) {
        l.messages = vec![e.messages.pop().expect("five messages")];
    }
    produce_traces(&input, &early, |_| Encoding::OtlpProto).await;
    let dir = policy_dir(&settings(&group, &input, &output, rules, "2s", None));
    let mut tailgate = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "tailgate.log");
    tailgate.wait_ready(Duration::from_secs(30));
    let mut reader = OutputReader::new(&output);
    let decided = reader.until(Duration::from_secs(60), |o| {
        kept.iter()
            .all(|t| o.spans.get(&t.truth.trace_id).is_some_and(|s| s.len() == 6))
    });
    assert!(
        decided,
        "kept traces not produced before the late spans:\n{}",
        tailgate.log_text()
    );

    // The late spans: a kept trace's is produced at once, a dropped trace's is not.
    produce_traces(&input, &late, |_| Encoding::OtlpProto).await;
    let complete = reader.until(Duration::from_secs(30), |o| {
        kept.iter()
            .all(|t| o.spans.get(&t.truth.trace_id).is_some_and(|s| s.len() == 7))
    });
    reader.poll(Duration::from_secs(2));
    assert!(
        complete,
        "late spans of kept traces missing:\n{}",
        tailgate.log_text()
    );
    let got: HashSet<_> = reader.output.spans.keys().copied().collect();
    let want: HashSet<_> = kept.iter().map(|t| t.truth.trace_id).collect();
    assert_eq!(
        got, want,
        "late spans of dropped traces must not be produced"
    );
    let metrics = tailgate.metrics().expect("metrics");
    assert_eq!(
        metrics.sum("tailgate_late_spans_total", &[("decision", "keep")]) as usize,
        kept.len()
    );
    assert_eq!(
        metrics.sum("tailgate_late_spans_total", &[("decision", "drop")]) as usize,
        w.traces.len() - kept.len()
    );
    // Every trace decided exactly once: late spans do not start new traces.
    assert_eq!(
        metrics.sum("tailgate_traces_decided_total", &[]) as usize,
        w.traces.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_join_and_leave_the_group_without_losing_a_kept_trace() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 4).await;
    create_topic(&output, 1).await;
    let w = Workload::shop(4, 3_000);
    let expected = w.expected_kept(RULES);
    let (first, second) = w.traces.split_at(1_000);
    let dir = policy_dir(&settings(&group, &input, &output, RULES, "3s", None));

    let mut a = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "a.log");
    a.wait_ready(Duration::from_secs(30));
    produce_traces(&input, first, |_| Encoding::OtlpProto).await;
    let mut reader = OutputReader::new(&output);
    assert!(
        reader.until(Duration::from_secs(60), |o| o.spans.len() >= 20),
        "no output from a:\n{}",
        a.log_text()
    );

    // b joins while traffic flows: partitions move from a to b.
    let input_topic = input.clone();
    let second: Vec<_> = second.to_vec();
    let trickle = tokio::spawn(async move {
        for chunk in second.chunks(200) {
            produce_traces(&input_topic, chunk, |_| Encoding::OtlpProto).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut b = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "b.log");
    b.wait_ready(Duration::from_secs(30));
    let not_shared = || format!("partitions not shared:\n{}\n{}", a.log_text(), b.log_text());
    wait_until(Duration::from_secs(30), not_shared, || {
        assigned(&a) > 0 && assigned(&b) > 0 && assigned(&a) + assigned(&b) == 4
    });
    eprintln!(
        "shared: a has {}, b has {} partitions",
        assigned(&a),
        assigned(&b)
    );
    // a handed its revoked partitions over inside the revoke callback: their
    // workers finished their produces and stored their last offsets in time.
    let handover = a
        .log_text()
        .lines()
        .find(|l| l.contains("handed revoked partitions over"))
        .map(str::to_string);
    let handover = handover.unwrap_or_else(|| panic!("a did not hand over:\n{}", a.log_text()));
    assert!(
        handover.contains("timed_out=0") && !handover.contains("workers=0"),
        "handover incomplete: {handover}"
    );
    reader.poll(Duration::from_secs(2));

    // a leaves (SIGTERM) mid-stream: its partitions go to b.
    let status = a.terminate(Duration::from_secs(40));
    assert!(
        status.success(),
        "a exited with {status}:\n{}",
        a.log_text()
    );
    trickle.await.expect("producer task");
    let complete = reader.until(Duration::from_secs(120), |o| {
        missing(&expected, o).is_empty()
    });
    reader.poll(Duration::from_secs(2));
    let out = &reader.output;
    assert!(
        complete,
        "{} kept traces missing:\n{}",
        missing(&expected, out).len(),
        b.log_text()
    );
    let unexpected = out
        .spans
        .keys()
        .filter(|id| !expected.contains_key(id))
        .count();
    assert_eq!(unexpected, 0, "traces the rules drop were produced");
    assert_eq!(assigned(&b), 4, "b owns every partition after a left");
    // Duplicates come from a handing partitions over, and a reports them.
    let reported = redelivery_logged(&a.log_text());
    eprintln!(
        "{} kept traces complete across join and leave; {} duplicate spans, a reported up to {}",
        expected.len(),
        out.duplicate_spans,
        reported
    );
    assert!(
        out.duplicate_spans as u64 <= reported,
        "{} duplicate spans, but a reported only {reported}:\n{}",
        out.duplicate_spans,
        a.log_text()
    );
}

/// Kept spans whose delivery fails for a while (a transient error: here the
/// producer is pointed at a port where no broker listens, so every produce
/// times out) are retried, counted and hold the committed offset back;
/// nothing is dropped. Once delivery works again (a restart with the right
/// address) every kept trace arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_spans_hold_the_offset_until_they_are_delivered() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 2).await;
    create_topic(&output, 1).await;
    let w = Workload::shop(6, 300);
    let expected = w.expected_kept(RULES);
    produce_traces(&input, &w.traces, |_| Encoding::OtlpProto).await;

    // Produces time out after 1.5 s: transient.
    let good = settings(&group, &input, &output, RULES, "2s", None);
    let broken = good
        .replace(
            "  consumer_options:",
            &format!(
                "  producer_options: ['bootstrap.servers=127.0.0.1:{}', 'message.timeout.ms=1500']\n  consumer_options:",
                free_port()
            ),
        )
        .replace("drain_timeout: 20s", "drain_timeout: 3s");
    let dir = policy_dir(&broken);
    let mut tailgate = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "broken.log");
    tailgate.wait_ready(Duration::from_secs(30));
    let errors = || {
        tailgate.metrics().map_or(0.0, |m| {
            m.sum("tailgate_produce_errors_total", &[("kind", "transient")])
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while errors() < 2.0 * expected.len() as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "produce failures not reported:\n{}",
            tailgate.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut reader = OutputReader::new(&output);
    reader.poll(Duration::from_secs(2));
    assert!(reader.output.spans.is_empty(), "nothing could be delivered");
    let held: i64 = committed_and_end(&group, &input, 2)
        .iter()
        .map(|(c, e)| e - (*c).max(0))
        .sum();
    assert!(
        held > 0,
        "the committed offset must stay behind the undelivered traces"
    );
    assert!(tailgate.log_text().contains("produce failed, retrying"));
    let metrics = tailgate.metrics().expect("metrics");
    assert_eq!(
        metrics.sum("tailgate_undeliverable_spans_total", &[]),
        0.0,
        "a transient failure gives nothing up"
    );
    // Shutdown gives up on them after the drain timeout; their offsets stay uncommitted.
    let status = tailgate.terminate(Duration::from_secs(60));
    assert!(status.success(), "{}", tailgate.log_text());
    let after: Vec<(i64, i64)> = committed_and_end(&group, &input, 2);
    assert!(
        after.iter().any(|(c, e)| c < e),
        "committed past undelivered data: {after:?}"
    );

    std::fs::write(dir.path().join("test.yaml"), good).expect("fix policy");
    let mut fixed = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "fixed.log");
    fixed.wait_ready(Duration::from_secs(30));
    let complete = reader.until(Duration::from_secs(60), |o| {
        missing(&expected, o).is_empty()
    });
    assert!(
        complete,
        "{} kept traces missing after the fix:\n{}",
        missing(&expected, &reader.output).len(),
        fixed.log_text()
    );
    // Every kept trace out does not mean every trace decided: the dropped
    // ones commit as their deadlines pass. Everything is committed in the end.
    wait_committed_to_end(&group, &input, 2, Duration::from_secs(30), || {
        fixed.log_text()
    });
    assert!(fixed.terminate(Duration::from_secs(30)).success());
    for (p, (c, e)) in committed_and_end(&group, &input, 2).into_iter().enumerate() {
        assert_eq!(c, e, "partition {p}");
    }
}

/// Output that can never succeed — here every kept
/// span is over the output topic's `max.message.bytes` of 600 — used to be
/// retried forever, freezing the partitions' offsets. Now it is counted,
/// offered to the dead-letter topic (whose broker refuses it too: the same
/// limit, a permanent produce error), released, and the offsets reach the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_can_never_succeed_is_counted_and_released() {
    let (input, output, dlq, group) = (
        unique("in"),
        unique("out"),
        unique("dlq"),
        unique("tailgate"),
    );
    create_topic(&input, 2).await;
    create_topic_with(&output, 1, &[("max.message.bytes", "600")]).await;
    create_topic_with(&dlq, 1, &[("max.message.bytes", "600")]).await;
    let w = Workload::shop(6, 300);
    let expected = w.expected_kept(RULES);
    let kept_spans: usize = expected.values().sum();
    produce_traces(&input, &w.traces, |_| Encoding::OtlpProto).await;
    let config = settings(&group, &input, &output, RULES, "2s", Some(&dlq));
    let dir = policy_dir(&config);
    let mut tailgate = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "tailgate.log");
    tailgate.wait_ready(Duration::from_secs(30));
    wait_committed_to_end(&group, &input, 2, Duration::from_secs(60), || {
        tailgate.log_text()
    });
    let metrics = tailgate.metrics().expect("metrics");
    assert_eq!(
        metrics.sum(
            "tailgate_undeliverable_spans_total",
            &[("reason", "span_too_large")]
        ) as usize,
        kept_spans,
        "every kept span counted once"
    );
    assert!(
        metrics.sum(
            "tailgate_produce_errors_total",
            &[("kind", "message_too_large")]
        ) > 0.0
    );
    assert_eq!(
        metrics.sum("tailgate_produce_errors_total", &[("kind", "transient")]),
        0.0
    );
    let mut reader = OutputReader::new(&output);
    reader.poll(Duration::from_secs(2));
    assert!(reader.output.spans.is_empty());
    assert!(read_with_headers(&dlq, 1, Duration::from_secs(2)).is_empty());
}

/// The partitions each instance holds, as its metrics say (-1: no answer).
fn assigned(t: &Tailgate) -> i32 {
    t.metrics()
        .map_or(-1, |m| m.sum("tailgate_partitions_assigned", &[]) as i32)
}

/// Waits (bounded) until `done` holds, polling every 200 ms; `what` says
/// what did not happen.
fn wait_until(within: Duration, what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{}", what());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Settings with a session timeout long enough (45 s, librdkafka's default)
/// to tell a member that left from one that timed out.
fn long_session(group: &str, input: &str, output: &str, instance: Option<&str>) -> String {
    let s = settings(group, input, output, RULES, "3s", None)
        .replace("session.timeout.ms=6000", "session.timeout.ms=45000");
    match instance {
        Some(id) => s.replace(
            "  commit_interval:",
            &format!("  group_instance_id: {id}\n  commit_interval:"),
        ),
        None => s,
    }
}

/// An instance stopped with SIGTERM leaves the consumer group as
/// it exits, so its partitions go to the others at once — before, the
/// consumer was never closed, and they waited out `session.timeout.ms`
/// (42 s measured), in every rolling restart, for every pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_leaves_the_group_and_its_partitions_move_at_once() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 4).await;
    create_topic(&output, 1).await;
    let dir = policy_dir(&long_session(&group, &input, &output, None));
    let mut a = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "a.log");
    a.wait_ready(Duration::from_secs(30));
    let mut b = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "b.log");
    b.wait_ready(Duration::from_secs(30));
    wait_until(
        Duration::from_secs(60),
        || "partitions not shared".into(),
        || assigned(&a) > 0 && assigned(&b) > 0 && assigned(&a) + assigned(&b) == 4,
    );
    let stop = std::time::Instant::now();
    let status = a.terminate(Duration::from_secs(40));
    let exited = stop.elapsed();
    assert!(
        status.success(),
        "a exited with {status}:\n{}",
        a.log_text()
    );
    wait_until(
        Duration::from_secs(60),
        || format!("b never got a's partitions:\n{}", b.log_text()),
        || assigned(&b) == 4,
    );
    let moved = stop.elapsed();
    eprintln!(
        "SIGTERM to exit: {} ms; to b holding all 4 partitions: {} ms (session timeout 45 000 ms)",
        exited.as_millis(),
        moved.as_millis()
    );
    assert!(
        a.log_text().contains("left the consumer group"),
        "a did not leave:\n{}",
        a.log_text()
    );
    // Through the leave, not the timeout: well inside the 45 s.
    assert!(
        moved < Duration::from_secs(30),
        "b got the partitions only after {moved:?}:\n{}",
        b.log_text()
    );
}

/// With static membership (`kafka.group_instance_id`) an instance
/// that crashes and comes back within the session timeout gets its
/// partitions back without a rebalance: the other instance's partitions are
/// never revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_that_comes_back_resumes_its_partitions_without_a_rebalance() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 4).await;
    create_topic(&output, 1).await;
    let dir_a = policy_dir(&long_session(&group, &input, &output, Some("tailgate-0")));
    let dir_b = policy_dir(&long_session(&group, &input, &output, Some("tailgate-1")));
    let mut a = Tailgate::start(tailgate_bin!(), dir_a.path(), free_port(), "a.log");
    a.wait_ready(Duration::from_secs(30));
    let mut b = Tailgate::start(tailgate_bin!(), dir_b.path(), free_port(), "b.log");
    b.wait_ready(Duration::from_secs(30));
    wait_until(
        Duration::from_secs(60),
        || "partitions not shared".into(),
        || assigned(&a) > 0 && assigned(&b) > 0 && assigned(&a) + assigned(&b) == 4,
    );
    let (held_by_a, revokes_before) = (
        assigned(&a),
        b.log_text().matches("partitions revoked").count(),
    );
    a.kill9();
    let mut a = Tailgate::start(tailgate_bin!(), dir_a.path(), free_port(), "a2.log");
    a.wait_ready(Duration::from_secs(30));
    wait_until(
        Duration::from_secs(30),
        || "a did not get its partitions back".into(),
        || assigned(&a) == held_by_a,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(assigned(&b), 4 - held_by_a, "b kept its own");
    assert_eq!(
        b.log_text().matches("partitions revoked").count(),
        revokes_before,
        "b saw a rebalance:\n{}",
        b.log_text()
    );
    // A static member does not leave when it stops: b keeps its partitions
    // and a's wait for it.
    let status = a.terminate(Duration::from_secs(40));
    assert!(status.success());
    assert!(a.log_text().contains("a static member"), "{}", a.log_text());
}
