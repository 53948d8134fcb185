//! End to end on a real Kafka broker (started by `scripts/test`): produce OTLP
//! traces with known errors and slow calls, run the `tailgate` binary, read the
//! output topic back.
#![cfg(feature = "kafka-tests")]

use std::collections::HashSet;
use std::time::Duration;

use prost::Message as _;
use tailgate::otlp::Encoding;
use tailgate::workload::encode;
use tailgate_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_every_error_and_slow_trace_whole_and_a_tenth_of_the_rest() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 4).await;
    create_topic(&output, 1).await;
    let dlq = format!("{output}-dlq");
    create_topic(&dlq, 1).await;
    let w = Workload::shop(1, 1_200);
    let expected = w.expected_kept(RULES);

    // 1 000 traces one message per resource (every fifth in OTLP JSON)...
    let (single, batched) = w.traces.split_at(1_000);
    produce_traces(&input, single, |i| {
        if i % 5 == 0 {
            Encoding::OtlpJson
        } else {
            Encoding::OtlpProto
        }
    })
    .await;
    // ...200 as batches of 10 traces per message, as without partition_traces_by_id.
    for chunk in batched.chunks(10) {
        let mut data = opentelemetry_proto::tonic::trace::v1::TracesData::default();
        for t in chunk {
            for m in &t.messages {
                data.resource_spans.extend(m.resource_spans.clone());
            }
        }
        produce_raw(
            &input,
            &chunk[0].truth.trace_id.to_hex(),
            &data.encode_to_vec(),
        )
        .await;
    }
    // ...and bad input, which must be counted and skipped.
    let good = encode(&single[1].messages[0], Encoding::OtlpProto);
    // Messages whose only span is invalid (so no real trace is touched).
    let mut short_id = single[1].messages[0].clone();
    short_id.resource_spans[0].scope_spans[0].spans.truncate(1);
    let mut backwards = short_id.clone();
    short_id.resource_spans[0].scope_spans[0].spans[0]
        .trace_id
        .truncate(8);
    let s = &mut backwards.resource_spans[0].scope_spans[0].spans[0];
    s.trace_id = vec![0xee; 16];
    s.end_time_unix_nano = s.start_time_unix_nano - 1;
    // The last two are well-formed but hold no valid span: rejected whole
    // too, for their span's reason.
    let malformed: [(Vec<u8>, &str); 6] = [
        (Vec::new(), "empty"),
        (b"definitely not OTLP".to_vec(), "not_otlp"),
        (good[..good.len() / 2].to_vec(), "truncated"),
        (b"{\"resourceSpans\": [".to_vec(), "not_otlp"),
        (short_id.encode_to_vec(), "bad_trace_id"),
        (backwards.encode_to_vec(), "end_before_start"),
    ];
    for (bad, _) in &malformed {
        produce_raw(&input, "bad", bad).await;
    }

    let dir = policy_dir(&settings(&group, &input, &output, RULES, "3s", Some(&dlq)));
    let mut tailgate = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "tailgate.log");
    tailgate.wait_ready(Duration::from_secs(30));

    let mut reader = OutputReader::new(&output);
    let complete = reader.until(Duration::from_secs(90), |o| {
        missing(&expected, o).is_empty()
    });
    reader.poll(Duration::from_secs(4)); // anything extra would show up now
    let out = &reader.output;
    assert!(
        complete,
        "missing {} of {} kept traces:\n{}",
        missing(&expected, out).len(),
        expected.len(),
        tailgate.log_text()
    );

    // Exactly the traces the rules keep, each complete, nothing else.
    let got: HashSet<_> = out.spans.keys().copied().collect();
    let want: HashSet<_> = expected.keys().copied().collect();
    assert_eq!(got, want, "output traces differ from what the rules keep");
    for t in &w.traces {
        if t.truth.error || t.truth.slow {
            assert_eq!(
                out.spans[&t.truth.trace_id].len(),
                t.truth.spans,
                "error/slow trace {} incomplete",
                t.truth.trace_id
            );
        }
    }
    assert_eq!(out.duplicate_spans, 0);
    assert_eq!(out.bad_keys, 0, "every message is keyed by its trace id");
    assert_eq!(out.unannotated, 0, "every kept span carries tailgate.rule");
    // The answer on each kept trace (output.critical_path, on by default):
    // the summary on one span of each, and on a slow trace the service
    // whose third-party call made it slow.
    for t in &w.traces {
        let id = t.truth.trace_id;
        if !expected.contains_key(&id) {
            continue;
        }
        let summaries = out.critical_path.get(&id).cloned().unwrap_or_default();
        assert_eq!(summaries.len(), 1, "trace {id}: {summaries:?}");
        if t.truth.slow {
            assert_eq!(summaries[0], "fraud-detection", "slow trace {id}");
        }
    }
    // Baseline: 10 % of the traces that are neither errors nor slow, within 3 points.
    let rest = w
        .traces
        .iter()
        .filter(|t| !t.truth.error && !t.truth.slow)
        .count();
    let baseline = out.rules.get("baseline").map_or(0, HashSet::len);
    let rate = baseline as f64 / rest as f64;
    assert!(
        (rate - 0.1).abs() < 0.03,
        "baseline kept {baseline} of {rest} = {rate:.3}"
    );
    let errors = w.traces.iter().filter(|t| t.truth.error).count();
    eprintln!(
        "{} traces in, {} kept ({} errors, {} by slow, {baseline} of {rest} others = {rate:.3} by baseline), {} in JSON",
        w.traces.len(),
        expected.len(),
        errors,
        out.rules.get("slow").map_or(0, HashSet::len),
        out.json_messages
    );
    assert_eq!(out.rules.get("errors").map_or(0, HashSet::len), errors);
    // Kept JSON traces leave as JSON.
    let json_kept = single
        .iter()
        .enumerate()
        .filter(|(i, t)| i % 5 == 0 && expected.contains_key(&t.truth.trace_id))
        .count();
    assert_eq!(out.json_messages, json_kept);

    // Metrics and health.
    let (code, metrics) = tailgate.http_get("/metrics").expect("metrics endpoint");
    let metrics = Metrics::parse(metrics);
    assert_eq!(code, 200);
    for reason in [
        "empty",
        "not_otlp",
        "truncated",
        "bad_trace_id",
        "end_before_start",
    ] {
        let n = metrics.sum("tailgate_decode_errors_total", &[("reason", reason)]);
        assert!(n >= 1.0, "decode errors for {reason}: {n}\n{metrics}");
    }
    // The 20 batches of ten traces are seen for what they are; every other
    // message is keyed by its one trace.
    assert_eq!(
        metrics.sum(
            "tailgate_unkeyed_messages_total",
            &[("why", "several_traces")]
        ),
        20.0
    );
    assert_eq!(metrics.sum("tailgate_unkeyed_messages_total", &[]), 20.0);
    let kept = metrics.sum("tailgate_traces_decided_total", &[("decision", "keep")]);
    assert_eq!(kept as usize, expected.len());
    let decided = metrics.sum("tailgate_traces_decided_total", &[]);
    assert_eq!(decided as usize, w.traces.len(), "every trace decided once");
    assert!(metrics.sum("tailgate_decision_lateness_seconds_count", &[]) >= w.traces.len() as f64);
    assert_eq!(tailgate.http_get("/healthz").map(|r| r.0), Some(200));

    // Malformed messages are in the dead-letter topic, unchanged, saying why.
    let dead = read_with_headers(&dlq, malformed.len() + 1, Duration::from_secs(20));
    assert_eq!(
        dead.len(),
        malformed.len(),
        "one dead letter per malformed message"
    );
    for (payload, reason) in &malformed {
        let found = dead
            .iter()
            .find(|(p, _)| p == payload)
            .expect("malformed message dead-lettered unchanged");
        assert_eq!(
            found.1.get("tailgate.error.reason").map(String::as_str),
            Some(*reason)
        );
        assert!(
            found.1.contains_key("tailgate.source.offset")
                && found.1.contains_key("tailgate.error.detail")
        );
    }
    assert_eq!(
        metrics.sum("tailgate_dead_letters_total", &[]) as usize,
        malformed.len()
    );

    // SIGTERM: a clean exit, with every input offset committed.
    let status = tailgate.terminate(Duration::from_secs(40));
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        tailgate.log_text()
    );
    for (p, (committed, end)) in committed_and_end(&group, &input, 4).into_iter().enumerate() {
        assert_eq!(
            committed, end,
            "partition {p}: committed {committed}, end {end}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_kept_trace() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 4).await;
    create_topic(&output, 1).await;
    let w = Workload::shop(2, 3_000);
    let expected = w.expected_kept(RULES);
    let (first, second) = w.traces.split_at(1_500);
    produce_traces(&input, first, |_| Encoding::OtlpProto).await;

    let dir = policy_dir(&settings(&group, &input, &output, RULES, "3s", None));
    let mut tailgate = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "first.log");
    tailgate.wait_ready(Duration::from_secs(30));
    let mut reader = OutputReader::new(&output);
    assert!(
        reader.until(Duration::from_secs(60), |o| o.spans.len() >= 20),
        "no output before the kill:\n{}",
        tailgate.log_text()
    );
    // More traffic trickles in over about four seconds; kill while part of it
    // is delivered and the rest is buffered, undecided or in flight.
    let delivered_before = reader.output.spans.len();
    let input_topic = input.clone();
    let second: Vec<_> = second.to_vec();
    let trickle = tokio::spawn(async move {
        for chunk in second.chunks(150) {
            produce_traces(&input_topic, chunk, |_| Encoding::OtlpProto).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });
    assert!(
        reader.until(Duration::from_secs(60), |o| o.spans.len()
            >= delivered_before + 20),
        "no output from the second half:\n{}",
        tailgate.log_text()
    );
    tailgate.kill9();
    trickle.await.expect("producer task");
    reader.poll(Duration::from_millis(500));
    let before = expected.len() - missing(&expected, &reader.output).len();
    assert!(
        before < expected.len(),
        "the kill came after everything was done; the test proves nothing"
    );
    eprintln!(
        "killed with {before} of {} kept traces delivered",
        expected.len()
    );

    let restarted = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "second.log");
    let complete = reader.until(Duration::from_secs(120), |o| {
        missing(&expected, o).is_empty()
    });
    reader.poll(Duration::from_secs(2));
    let out = &reader.output;
    assert!(
        complete,
        "{} kept traces missing after restart:\n{}",
        missing(&expected, out).len(),
        restarted.log_text()
    );
    let unexpected: Vec<_> = out
        .spans
        .keys()
        .filter(|id| !expected.contains_key(id))
        .collect();
    assert!(
        unexpected.is_empty(),
        "traces the rules drop were produced: {unexpected:?}"
    );
    eprintln!(
        "after restart: {} kept traces complete, {} duplicate spans (re-read after the kill)",
        expected.len(),
        out.duplicate_spans
    );
}
