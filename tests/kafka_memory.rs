//! The memory budget on a real Kafka broker (started by `scripts/test`): a
//! burst far beyond what the budget holds pauses the input partitions, they
//! resume as traces are decided, and nothing is lost.
#![cfg(feature = "kafka-tests")]

use std::time::{Duration, Instant};

use tailgate::otlp::Encoding;
use tailgate_testkit::*;

const BUDGET: u64 = 1024 * 1024;

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
    let mut tailgate = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "tailgate.log");
    tailgate.wait_ready(Duration::from_secs(30));
    let mut reader = OutputReader::new(&output);

    let (mut max_paused, mut max_buffered) = (0.0f64, 0.0f64);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut complete = false;
    while Instant::now() < deadline && !complete {
        if let Some(m) = tailgate.metrics() {
            max_paused = max_paused.max(m.sum("tailgate_partitions_paused", &[]));
            max_buffered = max_buffered.max(m.sum("tailgate_buffered_bytes", &[]));
        }
        reader.poll(Duration::from_millis(100));
        complete = expected
            .iter()
            .all(|(id, n)| reader.output.spans.get(id).is_some_and(|s| s.len() == *n));
    }
    let log = tailgate.log_text();
    let short: Vec<String> = expected
        .iter()
        .filter(|(id, n)| reader.output.spans.get(*id).map_or(0, |s| s.len()) != **n)
        .map(|(id, n)| {
            format!(
                "{id}: {} of {n} spans",
                reader.output.spans.get(id).map_or(0, |s| s.len())
            )
        })
        .collect();
    assert!(
        complete,
        "{} of {} kept traces incomplete after the burst: {short:?}\n{log}",
        short.len(),
        expected.len()
    );
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

    let memory = tailgate.metrics().map_or(0.0, |m| {
        m.sum("tailgate_traces_decided_total", &[("reason", "memory")])
    });
    let rss = tailgate.process().peak_rss().ok().map(|b| b / 1024);
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

/// The budget of the adversarial-shapes test, and what it feeds each shape:
/// about four times the budget.
const SHAPES_BUDGET: u64 = 8 * 1024 * 1024;

mod shapes {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
    use prost::Message as _;

    fn kv(key: &str, value: String) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value)),
            }),
            ..Default::default()
        }
    }

    /// A span of trace `trace` (never a root: no quiet period ends it).
    fn span(trace: u64, i: u64) -> Span {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&0x7a61_6773_6861_7065u64.to_be_bytes());
        id[8..].copy_from_slice(&trace.to_be_bytes());
        Span {
            trace_id: id.to_vec(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            parent_span_id: 0xffff_u64.to_be_bytes().to_vec(),
            name: format!("op-{}", i % 17),
            kind: 1,
            start_time_unix_nano: 1_767_225_600_000_000_000 + i,
            end_time_unix_nano: 1_767_225_600_001_000_000 + i,
            attributes: vec![kv("i", i.to_string())],
            ..Default::default()
        }
    }

    fn resource(big: usize) -> Resource {
        let mut attributes = vec![kv("service.name", "shapes".into())];
        if big > 0 {
            attributes.push(kv("big", "r".repeat(big)));
        }
        Resource {
            attributes,
            ..Default::default()
        }
    }

    /// One message: one resource (with a `big`-byte attribute) over
    /// `scopes` scopes of `per_scope` spans, trace ids from `trace`
    /// (`one_trace`: all of trace `trace`).
    pub fn message(
        big: usize,
        scopes: u64,
        per_scope: u64,
        trace: u64,
        one_trace: bool,
        json: bool,
    ) -> Vec<u8> {
        let mut n = 0;
        let scope_spans = (0..scopes)
            .map(|_| ScopeSpans {
                spans: (0..per_scope)
                    .map(|_| {
                        n += 1;
                        let t = if one_trace { trace } else { trace + n };
                        span(t, trace * 1_000_000 + n)
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let data = TracesData {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource(big)),
                scope_spans,
                ..Default::default()
            }],
        };
        if json {
            serde_json::to_vec(&data).expect("json")
        } else {
            data.encode_to_vec()
        }
    }
}

/// Shapes that amplify memory — a large resource shared by
/// thousands of scopes (OTLP JSON copied it per scope: five 750 KB messages
/// took 2.7 GB against a 64 MiB budget), the same in protobuf, one span per
/// trace from large batched messages, one trace bigger than the budget —
/// each read as a backlog of several times the budget. What the budget
/// counts stays under it, everything is decided and committed, and resident
/// memory stays under the chart's sizing formula (2.75 × budget + the fixed
/// overhead): what is kept alive is what is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_shapes_stay_within_the_budget() {
    // (name, message m, messages)
    type Shape = (&'static str, fn(u64) -> Vec<u8>, u64);
    let all: [Shape; 4] = [
        (
            "JSON, 300 KB resource over 1 500 scopes of one span",
            |m| shapes::message(300_000, 1_500, 1, m * 10_000, false, true),
            40,
        ),
        (
            "protobuf, 300 KB resource over 2 000 scopes of one span",
            |m| shapes::message(300_000, 2_000, 1, m * 10_000, false, false),
            60,
        ),
        (
            "protobuf, 5 000 traces of one span per message",
            |m| shapes::message(0, 1, 5_000, m * 10_000, false, false),
            80,
        ),
        (
            "protobuf, one trace of 2 000 spans per message",
            |_| shapes::message(0, 1, 2_000, 7, true, false),
            80,
        ),
    ];
    let mut report = Vec::new();
    for (name, make, count) in all {
        let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
        create_topic(&input, 1).await;
        create_topic(&output, 1).await;
        let messages: Vec<(String, Vec<u8>)> =
            (0..count).map(|m| (format!("{m:032x}"), make(m))).collect();
        let bytes: usize = messages.iter().map(|(_, p)| p.len()).sum();
        produce_in_order(&input, &messages).await;
        drop(messages);
        // The backlog's stream time spans the seconds it took to produce:
        // the budget decides while it is read, and a pause for memory lasts
        // until the decision wait has passed. A short queue, so what waits
        // for the worker is small too.
        let policy = format!(
            "{}buffer:\n  max_bytes: {SHAPES_BUDGET}\n  partition_queue: 4\n",
            settings(&group, &input, &output, RULES, "5s", None)
                .replace("max_trace_age: 30s", "max_trace_age: 120s")
        );
        let dir = policy_dir(&policy);
        let mut tailgate =
            Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "tailgate.log");
        tailgate.wait_ready(Duration::from_secs(30));
        let mut max_buffered = 0.0f64;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(m) = tailgate.metrics() {
                max_buffered = max_buffered.max(m.sum("tailgate_buffered_bytes", &[]));
            }
            let offsets = committed_and_end(&group, &input, 1);
            if offsets.iter().all(|(c, e)| c == e) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: not committed to the end: {offsets:?}\n{}",
                tailgate.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let rss = tailgate.process().peak_rss().expect("VmHWM");
        assert!(tailgate.terminate(Duration::from_secs(30)).success());
        let budget = SHAPES_BUDGET as f64;
        let line = format!(
            "{name}: {count} messages, {:.1} MiB in; peak counted {:.2} MiB ({:.2} of the budget, sampled every 100 ms); \
             peak RSS {:.1} MiB ({:.2} x the budget)",
            bytes as f64 / 1048576.0,
            max_buffered / 1048576.0,
            max_buffered / budget,
            rss as f64 / 1048576.0,
            rss as f64 / budget
        );
        eprintln!("{line}");
        report.push(line);
        assert!(
            max_buffered <= budget,
            "{name}: the buffers counted {max_buffered} bytes, over the budget"
        );
        // The chart's formula: 2.75 x max_bytes + 160 MiB fixed overhead +
        // decision.remembered_bytes (64 MiB by default: the decisions
        // remembered for late spans — 400 000 of them in the one-span shape).
        let formula = 2.75 * budget + 160.0 * 1048576.0 + 64.0 * 1048576.0;
        assert!(
            (rss as f64) < formula,
            "{name}: peak RSS {rss} bytes, over the sizing formula's {formula}"
        );
    }
    eprintln!("{}", report.join("\n"));
}
