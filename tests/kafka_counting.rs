//! Counts a backend can trust, on a real broker: traces head sampled
//! upstream (their spans' `tracestate` carries `ot=th:`, some with an
//! explicit `rv` that their root does not carry) and traces that were not, in protobuf and OTLP JSON,
//! decided by `keep` and `rate` rules. Every kept span's outgoing
//! `tracestate` and adjusted count are read back with the Collector's own
//! types and checked against what the specification's composition gives,
//! worked out here from the input alone; and which traces are kept, too.
#![cfg(feature = "kafka-tests")]

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, TracesData};
use prost::Message as _;
use tailgate::otlp::{Encoding, TraceId};
use tailgate::workload::{GeneratedTrace, ShopWorkload};
use tailgate_testkit::*;

const RULES: &str = "[{name: errors, when: {trace: {error: true}}, sample: keep}, \
                     {name: rest, sample: {rate: 0.25}}]";

/// How the trace was head sampled upstream.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Head {
    /// Not at all: no `tracestate`.
    None,
    /// 1 in 8 by the trace id: `ot=th:e`, beside another vendor's member.
    Eighth,
    /// 1 in 2 by an explicit randomness: `ot=th:8;rv:…`.
    HalfExplicit(u64),
}

fn randomness(id: &TraceId) -> u64 {
    u64::from_be_bytes(id.0[8..].try_into().expect("8 bytes")) & ((1 << 56) - 1)
}

/// The `tracestate` a head sampler upstream gave the trace's spans.
fn incoming(head: Head) -> String {
    match head {
        Head::None => String::new(),
        Head::Eighth => "ot=th:e,vendor=x".into(),
        Head::HalfExplicit(rv) => format!("ot=th:8;rv:{rv:014x}"),
    }
}

/// What the specification's composition gives, worked out by hand: kept or
/// not, and each kept span's `tracestate` and adjusted count.
fn expected(t: &GeneratedTrace, head: Head) -> Option<(String, f64)> {
    let r = match head {
        Head::HalfExplicit(rv) => rv,
        _ => randomness(&t.truth.trace_id),
    };
    if t.truth.error {
        // `keep`: the incoming threshold passes unchanged.
        let count = match head {
            Head::None => 1.0,
            Head::Eighth => 8.0,
            Head::HalfExplicit(_) => 2.0,
        };
        return Some((incoming(head), count));
    }
    // `rate: 0.25`: threshold 0xc0…; kept at or above it; the outgoing
    // threshold is the larger of it and the incoming one.
    if r < 0xc0_0000_0000_0000 {
        return None;
    }
    Some(match head {
        Head::None => ("ot=th:c".into(), 4.0),
        Head::Eighth => ("ot=th:e,vendor=x".into(), 8.0),
        Head::HalfExplicit(rv) => (format!("ot=th:c;rv:{rv:014x}"), 4.0),
    })
}

fn spans_of(payload: &[u8]) -> Vec<Span> {
    let data = if payload.first() == Some(&b'{') {
        serde_json::from_slice::<TracesData>(payload).expect("OTLP JSON the Collector reads")
    } else {
        TracesData::decode(payload).expect("OTLP protobuf the Collector reads")
    };
    data.resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

fn attribute(span: &Span, key: &str) -> Vec<Value> {
    span.attributes
        .iter()
        .filter(|kv| kv.key == key)
        .filter_map(|kv| kv.value.clone()?.value)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_sampled_traces_leave_with_thresholds_and_counts_that_compose() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 2).await;
    create_topic(&output, 1).await;
    let mut shop = ShopWorkload::new(77);
    shop.error_rate = 0.15;
    // Of many generated traces, what each head sampler upstream lets
    // through: 1 in 8 by id, 1 in 2 by an explicit `rv`, and all of a
    // third group.
    let mut traces: Vec<(GeneratedTrace, Head)> = Vec::new();
    let mut rv = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..3_000u64 {
        let mut t = shop.next_trace(1_760_000_000_000_000_000 + i * 1_000_000);
        let head = match i % 3 {
            0 if randomness(&t.truth.trace_id) >= 0xe0_0000_0000_0000 => Head::Eighth,
            0 => continue,
            1 => {
                rv = rv
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = rv >> 8;
                if r < 0x80_0000_0000_0000 {
                    continue;
                }
                Head::HalfExplicit(r)
            }
            _ if i % 6 == 2 => Head::None,
            _ => continue,
        };
        let state = incoming(head);
        for m in &mut t.messages {
            for rs in &mut m.resource_spans {
                for ss in &mut rs.scope_spans {
                    for s in &mut ss.spans {
                        // Sampled by an explicit `rv`, the root came through
                        // something that does not pass `tracestate` on: it
                        // leaves with its trace's, `rv` included.
                        let root = s.parent_span_id.is_empty();
                        if !(root && matches!(head, Head::HalfExplicit(_))) {
                            s.trace_state = state.clone();
                        }
                    }
                }
            }
        }
        traces.push((t, head));
    }
    let want: HashMap<TraceId, (String, f64, usize)> = traces
        .iter()
        .filter_map(|(t, head)| {
            expected(t, *head)
                .map(|(state, count)| (t.truth.trace_id, (state, count, t.truth.spans)))
        })
        .collect();
    for head in [Head::None, Head::Eighth] {
        assert!(
            traces
                .iter()
                .any(|(t, h)| *h == head && want.contains_key(&t.truth.trace_id)),
            "{head:?} has kept traces"
        );
    }
    let settings = settings(&group, &input, &output, RULES, "2s", None)
        + "output:\n  sample_rate_attribute: SampleRate\n";
    let dir = policy_dir(&settings);
    let mut tailgate = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "tailgate.log");
    tailgate.wait_ready(Duration::from_secs(30));
    let generated: Vec<GeneratedTrace> = traces.iter().map(|(t, _)| t.clone()).collect();
    produce_traces(&input, &generated, |i| {
        if i % 4 == 0 {
            Encoding::OtlpJson
        } else {
            Encoding::OtlpProto
        }
    })
    .await;
    let mut reader = OutputReader::new(&output);
    let whole = reader.until(Duration::from_secs(90), |o| {
        want.iter()
            .all(|(id, (_, _, n))| o.spans.get(id).is_some_and(|s| s.len() == *n))
    });
    assert!(whole, "kept traces missing:\n{}", tailgate.log_text());
    reader.poll(Duration::from_secs(3));
    assert_eq!(
        reader.output.spans.len(),
        want.len(),
        "only the traces the rules keep"
    );
    assert!(tailgate.terminate(Duration::from_secs(30)).success());

    // Every kept span, read back with the Collector's types.
    let mut checked = HashMap::<&str, usize>::new();
    for record in read_topic(&output, 1, Duration::from_secs(30)) {
        for span in spans_of(&record.payload) {
            let id = TraceId(span.trace_id.clone().try_into().expect("16 bytes"));
            let (state, count, _) = &want[&id];
            assert_eq!(&span.trace_state, state, "{}", id.to_hex());
            assert_eq!(
                attribute(&span, "tailgate.adjusted_count"),
                [Value::DoubleValue(*count)],
                "{}",
                id.to_hex()
            );
            assert_eq!(
                attribute(&span, "SampleRate"),
                [Value::IntValue(*count as i64)],
                "{}",
                id.to_hex()
            );
            let head = traces
                .iter()
                .find(|(t, _)| t.truth.trace_id == id)
                .map(|(_, h)| match h {
                    Head::None => "none",
                    Head::Eighth => "1/8",
                    Head::HalfExplicit(_) => "1/2 rv",
                })
                .expect("an input trace");
            *checked.entry(head).or_default() += 1;
        }
    }
    eprintln!("kept spans checked, by head sampling: {checked:?}");
    assert_eq!(
        checked.len(),
        3,
        "every head sampling form kept: {checked:?}"
    );
}
