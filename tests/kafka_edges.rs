//! The edges of "nothing lost" on the real broker: traces bigger
//! than an output message, a span too large for any, bytes that look like
//! the other encoding, a malformed span beside good ones, exactly-once with
//! undecided traces between a kept trace's messages, and a worker that stops.
#![cfg(feature = "kafka-tests")]

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use prost::Message as _;
use tailgate::otlp::wire::put_len;
use tailgate::otlp::TraceId;
use tailgate::workload::{build_trace, SpanSpec};
use tailgate_testkit::*;

const ERRORS: &str =
    "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: rest, sample: drop}]";

/// An ERROR trace of `spans` spans whose names are padded by `pad` bytes,
/// as `ResourceSpans` of one span each (root first).
fn trace(n: u16, spans: usize, pad: usize) -> (TraceId, Vec<ResourceSpans>) {
    let mut id = [0x7eu8; 16];
    id[14..].copy_from_slice(&n.to_be_bytes());
    let id = TraceId(id);
    let ids: Vec<[u8; 8]> = (0..spans)
        .map(|i| {
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&(i as u32 + 1).to_be_bytes());
            b[6..].copy_from_slice(&n.to_be_bytes());
            b
        })
        .collect();
    let specs: Vec<SpanSpec> = (0..spans)
        .map(|i| {
            let mut s = SpanSpec::new(
                if i == 0 { "gateway" } else { "backend" },
                &format!("op {i} {}", "x".repeat(pad)),
                (i > 0).then_some(0),
                i as u64 / 100,
                1,
            );
            s.error = i == spans / 2;
            s
        })
        .collect();
    let resources = build_trace(id, &ids, 1_760_000_000_000_000_000, &specs)
        .into_iter()
        .flat_map(|m| m.resource_spans)
        .flat_map(|mut rs| {
            let spans = std::mem::take(&mut rs.scope_spans[0].spans);
            spans.into_iter().map(move |s| {
                let mut one = rs.clone();
                one.scope_spans[0].spans = vec![s];
                one
            })
        })
        .collect();
    (id, resources)
}

/// `resources` merged under one resource per service, in `messages` messages.
fn messages(resources: &[ResourceSpans], messages: usize) -> Vec<Vec<u8>> {
    let per = resources.len().div_ceil(messages);
    resources
        .chunks(per)
        .map(|chunk| {
            let mut m = TracesData::default();
            for rs in chunk {
                match m
                    .resource_spans
                    .iter_mut()
                    .find(|r| r.resource == rs.resource)
                {
                    Some(r) => r.scope_spans[0]
                        .spans
                        .extend(rs.scope_spans[0].spans.clone()),
                    None => m.resource_spans.push(rs.clone()),
                }
            }
            m.encode_to_vec()
        })
        .collect()
}

fn metric(t: &Tailgate, name: &str, labels: &[(&str, &str)]) -> f64 {
    t.metrics().expect("metrics").sum(name, labels)
}

/// On one broker: an ERROR trace of 4 000
/// spans in one 900 KB message and one of 8 000 spans in 80 messages, with
/// the output topic limited to 200 000 bytes, reach the output whole, split
/// under the limit; a 300 KB span fits no output message and goes to the
/// dead-letter topic, its trace's root to the output; a protobuf message
/// whose second byte is `{` and a message with a malformed span beside an
/// ERROR trace are read; and the partition's offsets reach the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_traces_odd_bytes_and_bad_neighbours_lose_nothing_and_stall_nothing() {
    let (input, output, dlq, group) = (
        unique("in"),
        unique("out"),
        unique("dlq"),
        unique("tailgate"),
    );
    create_topic(&input, 1).await;
    let limit = 200_000;
    create_topic_with(&output, 1, &[("max.message.bytes", "200000")]).await;
    create_topic(&dlq, 1).await;
    let mut expected = std::collections::HashMap::new();
    let mut produced: Vec<(String, Vec<u8>)> = Vec::new();

    // 4 000 spans in one message of about 900 KB.
    let (one, rs) = trace(1, 4_000, 165);
    let m = messages(&rs, 1);
    assert!(
        m[0].len() > 850_000 && m[0].len() < 990_000,
        "{} bytes",
        m[0].len()
    );
    produced.extend(m.into_iter().map(|p| (one.to_hex(), p)));
    expected.insert(one, 4_000);
    // 8 000 spans in 80 messages.
    let (eighty, rs) = trace(2, 8_000, 190);
    produced.extend(messages(&rs, 80).into_iter().map(|p| (eighty.to_hex(), p)));
    expected.insert(eighty, 8_000);
    // A 300 KB span beside its root: the root goes out, the span to the dead letters.
    let (huge, mut rs) = trace(3, 2, 10);
    rs[1].scope_spans[0].spans[0].name = "h".repeat(300_000);
    produced.extend(messages(&rs, 2).into_iter().map(|p| (huge.to_hex(), p)));
    expected.insert(huge, 1);
    // Scenario 1: a first resource of 123 bytes makes the second byte `{`.
    let (curly, mut rs) = trace(4, 1, 0);
    // A lean resource (service.name only) and a short name, padded to 123 bytes.
    let resource = rs[0].resource.as_mut().expect("resource");
    resource.attributes.retain(|kv| kv.key == "service.name");
    rs[0].scope_spans[0].scope = None;
    let span = &mut rs[0].scope_spans[0].spans[0];
    span.attributes.clear();
    span.name.clear();
    span.kind = 0;
    (span.start_time_unix_nano, span.end_time_unix_nano) = (0, 0);
    assert!(rs[0].encoded_len() <= 123, "{} bytes", rs[0].encoded_len());
    while rs[0].encoded_len() < 123 {
        rs[0].scope_spans[0].spans[0].name.push('c');
    }
    assert_eq!(rs[0].encoded_len(), 123);
    let m = messages(&rs, 1);
    assert_eq!(&m[0][..2], b"\n{");
    produced.extend(m.into_iter().map(|p| (curly.to_hex(), p)));
    expected.insert(curly, 1);
    // Scenario 3: an ERROR trace and, beside it, a span whose attributes run past its end.
    let (neighbour, rs) = trace(5, 1, 0);
    let (_, bad) = trace(6, 1, 0);
    let mut span = bad[0].scope_spans[0].spans[0].encode_to_vec();
    span.extend_from_slice(&[0x4a, 50, 0x0a, 0x00]);
    let mut scope = Vec::new();
    put_len(&mut scope, 2, &span);
    let mut broken = Vec::new();
    put_len(&mut broken, 2, &scope);
    let mut payload = Vec::new();
    put_len(&mut payload, 1, &rs[0].encode_to_vec());
    put_len(&mut payload, 1, &broken);
    produced.push((neighbour.to_hex(), payload));
    expected.insert(neighbour, 1);

    let dir = policy_dir(
        &settings(&group, &input, &output, ERRORS, "10s", Some(&dlq))
            .replace("after_root: 1s", "after_root: 3s"),
    );
    let mut t = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "tailgate.log");
    t.wait_ready(Duration::from_secs(30));
    produce_in_order(&input, &produced).await;

    let mut reader = OutputReader::new(&output);
    let complete = reader.until(Duration::from_secs(90), |o| {
        missing(&expected, o).is_empty()
    });
    assert!(
        complete,
        "missing {:?}:\n{}",
        missing(&expected, &reader.output),
        t.log_text()
    );
    wait_committed_to_end(&group, &input, 1, Duration::from_secs(30), || t.log_text());
    reader.poll(Duration::from_secs(1));
    let out = &reader.output;
    assert!(
        out.largest_message <= limit,
        "a message of {} bytes",
        out.largest_message
    );
    assert_eq!(out.bad_keys, 0);
    assert_eq!(out.unannotated, 0);
    let per = |id: &TraceId| out.messages_per_trace.get(id).copied().unwrap_or(0);
    assert!(per(&one) > 1 && per(&eighty) > 1, "split");
    eprintln!(
        "4 000 spans in 1 input message -> {} output messages; 8 000 spans in 80 -> {}; largest {} bytes of {limit}",
        per(&one),
        per(&eighty),
        out.largest_message
    );
    let dead = read_with_headers(&dlq, 1, Duration::from_secs(20));
    assert_eq!(dead.len(), 1, "the huge span in the dead-letter topic");
    assert_eq!(
        dead[0].1.get("tailgate.error.reason").map(String::as_str),
        Some("span_too_large")
    );
    assert_eq!(dead[0].1.get("tailgate.trace.id"), Some(&huge.to_hex()));
    assert_eq!(
        metric(
            &t,
            "tailgate_undeliverable_spans_total",
            &[("reason", "span_too_large")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &t,
            "tailgate_decode_errors_total",
            &[("reason", "malformed_span")]
        ),
        1.0
    );
    assert_eq!(
        metric(&t, "tailgate_dead_letters_total", &[("source", "output")]),
        1.0
    );
}

/// In exactly-once mode, T's child at
/// offset 0, an undecided U at 1, T's ERROR root at 2; and a kept K over
/// offsets 3, 5 and 7 with undecided V and W at 4 and 6. T and K are decided
/// while U, V and W wait; a SIGKILL then; after the restart a read_committed
/// reader sees T and K whole, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_never_commits_past_a_kept_trace_held_in_memory() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 1).await;
    create_topic(&output, 1).await;
    let id = |n: u8| TraceId([n; 16]);
    let span = |n: u8, i: u8, parent: Option<usize>, error: bool| {
        let mut s = SpanSpec::new("svc", &format!("op {i}"), parent, u64::from(i), 1);
        s.error = error;
        let ids = [[n; 8], [n ^ 0x80; 8], [n ^ 0x40; 8]];
        let mut specs = vec![SpanSpec::new("svc", "root", None, 0, 10)];
        specs.push(SpanSpec::new("svc", "b", Some(0), 1, 1));
        specs.push(SpanSpec::new("svc", "c", Some(0), 2, 1));
        specs[usize::from(i)] = s;
        let mut data = build_trace(id(n), &ids, 1_760_000_000_000_000_000, &specs)
            .into_iter()
            .flat_map(|m| m.resource_spans)
            .collect::<Vec<_>>();
        let mut rs = data.remove(0);
        rs.scope_spans[0]
            .spans
            .retain(|sp| sp.span_id == ids[usize::from(i)].to_vec());
        (
            id(n).to_hex(),
            TracesData {
                resource_spans: vec![rs],
            }
            .encode_to_vec(),
        )
    };
    let (t, u, k, v, w) = (1u8, 2u8, 3u8, 4u8, 5u8);
    let input_messages = vec![
        span(t, 1, Some(0), false), // 0: T's child
        span(u, 1, Some(0), false), // 1: U, no root: waits
        span(t, 0, None, true),     // 2: T's ERROR root
        span(k, 1, Some(0), true),  // 3: K's ERROR child
        span(v, 1, Some(0), false), // 4: V waits
        span(k, 2, Some(0), false), // 5: K
        span(w, 1, Some(0), false), // 6: W waits
        span(k, 0, None, false),    // 7: K's root
    ];
    let config = settings(&group, &input, &output, ERRORS, "25s", None).replacen(
        "kafka:\n",
        &format!(
            "kafka:\n  exactly_once: true\n  transactional_id: {}\n",
            unique("txn")
        ),
        1,
    );
    let dir = policy_dir(&config);
    let mut a = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "a.log");
    a.wait_ready(Duration::from_secs(30));
    produce_in_order(&input, &input_messages).await;
    // T and K decided (after_root 1 s) and several transactions committed since.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(&a, "tailgate_traces_decided_total", &[("decision", "keep")]) < 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "T and K not decided:\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Four commit intervals: anything the worker wrote is committed by now.
    std::thread::sleep(Duration::from_secs(2));
    let before = committed_and_end(&group, &input, 1);
    a.kill9();
    assert!(
        before[0].0 <= 0,
        "committed {} while T's child at 0 was only in memory",
        before[0].0
    );
    let mut b = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "b.log");
    let expected = [(id(t), 2), (id(k), 3)].into_iter().collect();
    let mut reader = OutputReader::new(&output);
    let complete = reader.until(Duration::from_secs(90), |o| {
        missing(&expected, o).is_empty()
    });
    assert!(
        complete,
        "after the restart, missing {:?}:\n{}",
        missing(&expected, &reader.output),
        b.log_text()
    );
    wait_committed_to_end(&group, &input, 1, Duration::from_secs(60), || b.log_text());
    reader.poll(Duration::from_secs(2));
    assert_eq!(reader.output.duplicate_spans, 0);
    assert_eq!(reader.output.spans.len(), 2, "only T and K");
    assert!(b.terminate(Duration::from_secs(40)).success());
}

/// The partition's worker panics (a
/// test-only fault) with a trace undecided in it; the partition is read
/// again from its last stored offset by a new worker, and every kept trace
/// reaches the output whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_is_replaced_without_losing_what_it_held() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 1).await;
    create_topic(&output, 1).await;
    let two = |n: u8, error_in_child: bool| {
        let id = TraceId([n; 16]);
        let mut child = SpanSpec::new("backend", "work", Some(0), 1, 5);
        child.error = error_in_child;
        let mut root = SpanSpec::new("gateway", "GET /", None, 0, 10);
        root.error = !error_in_child;
        let parts = build_trace(
            id,
            &[[n; 8], [n ^ 0xff; 8]],
            1_760_000_000_000_000_000,
            &[root, child],
        );
        (
            id,
            parts
                .iter()
                .map(|p| (id.to_hex(), p.encode_to_vec()))
                .collect::<Vec<_>>(),
        )
    };
    let (a, a_parts) = two(1, true); // A: ERROR child first, root later
    let (b, b_parts) = two(2, false);
    let (c, c_parts) = two(3, false);
    let input_messages = vec![
        a_parts[1].clone(), // 0: A's ERROR child, undecided
        b_parts[0].clone(), // 1
        b_parts[1].clone(), // 2
        c_parts[0].clone(), // 3: the worker panics before reading this
        c_parts[1].clone(), // 4
        a_parts[0].clone(), // 5: A's root
    ];
    let dir = policy_dir(&settings(&group, &input, &output, ERRORS, "10s", None));
    let mut t = Tailgate::start_with_env(
        tailgate_bin!(),
        dir.path(),
        free_port(),
        "tailgate.log",
        &[("TAILGATE_TEST_WORKER_PANIC", "0:3")],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !t.log_text().contains("partitions assigned") {
        assert!(
            std::time::Instant::now() < deadline,
            "not assigned:\n{}",
            t.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    produce_in_order(&input, &input_messages).await;
    let expected = [(a, 2), (b, 2), (c, 2)].into_iter().collect();
    let mut reader = OutputReader::new(&output);
    let complete = reader.until(Duration::from_secs(60), |o| {
        missing(&expected, o).is_empty()
    });
    assert!(
        complete,
        "missing {:?}:\n{}",
        missing(&expected, &reader.output),
        t.log_text()
    );
    wait_committed_to_end(&group, &input, 1, Duration::from_secs(30), || t.log_text());
    let text = t.log_text();
    assert!(
        text.contains("TAILGATE_TEST_WORKER_PANIC"),
        "the fault fired:\n{text}"
    );
    assert!(
        text.contains("reading the partition again with a new worker"),
        "{text}"
    );
    assert!(t.terminate(Duration::from_secs(40)).success());
}

/// One partition's worker cannot take
/// input (a test-only fault stalls it); its queue fills and that partition
/// alone is paused, while every kept trace of the other partitions arrives;
/// SIGTERM is honoured; after a restart without the fault the stalled
/// partition's kept traces arrive too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_take_input_holds_up_its_own_partition_only() {
    use rdkafka::producer::FutureRecord;
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 4).await;
    create_topic(&output, 1).await;
    let w = Workload::shop(21, 400);
    let expected = w.expected_kept(RULES);
    // Trace i on partition i % 4.
    let producer = producer();
    for (i, t) in w.traces.iter().enumerate() {
        for m in &t.messages {
            let payload = tailgate::workload::encode(m, tailgate::otlp::Encoding::OtlpProto);
            producer
                .send(
                    FutureRecord::to(&input)
                        .key(&t.truth.trace_id.to_hex())
                        .payload(&payload)
                        .partition((i % 4) as i32),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("produced");
        }
    }
    let on = |p: usize| -> std::collections::HashMap<TraceId, usize> {
        w.traces
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 4 == p)
            .filter_map(|(_, t)| {
                expected
                    .get(&t.truth.trace_id)
                    .map(|n| (t.truth.trace_id, *n))
            })
            .collect()
    };
    let others: std::collections::HashMap<TraceId, usize> = (1..4).flat_map(on).collect();
    let stalled = on(0);
    assert!(!stalled.is_empty() && !others.is_empty());
    let config = format!(
        "{}buffer:\n  partition_queue: 8\n  partition_backlog_bytes: 1000\n",
        settings(&group, &input, &output, RULES, "2s", None)
    );
    let dir = policy_dir(&config);
    let mut t = Tailgate::start_with_env(
        tailgate_bin!(),
        dir.path(),
        free_port(),
        "stalled.log",
        &[("TAILGATE_TEST_WORKER_STALL", "0")],
    );
    t.wait_ready(Duration::from_secs(30));
    let mut reader = OutputReader::new(&output);
    let flowing = reader.until(Duration::from_secs(60), |o| missing(&others, o).is_empty());
    assert!(
        flowing,
        "{} kept traces of the other partitions missing:\n{}",
        missing(&others, &reader.output).len(),
        t.log_text()
    );
    assert_eq!(
        metric(&t, "tailgate_partitions_paused", &[]),
        1.0,
        "the stalled partition alone is paused"
    );
    assert!(
        reader
            .output
            .spans
            .keys()
            .all(|id| !stalled.contains_key(id)),
        "nothing of the stalled partition went out"
    );
    let stopped = std::time::Instant::now();
    let status = t.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", t.log_text());
    eprintln!(
        "one partition stalled: {} kept traces of the others out, SIGTERM honoured in {:?}",
        others.len(),
        stopped.elapsed()
    );
    let mut fresh = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "fresh.log");
    fresh.wait_ready(Duration::from_secs(30));
    let complete = reader.until(Duration::from_secs(60), |o| {
        missing(&expected, o).is_empty()
    });
    assert!(
        complete,
        "{} kept traces missing after the restart:\n{}",
        missing(&expected, &reader.output).len(),
        fresh.log_text()
    );
}
