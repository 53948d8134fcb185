//! What kept spans leave with, read back with the Collector's types
//! (opentelemetry-proto): each rule kind after each head-sampling form,
//! erased thresholds, spans that differ, hostile encodings (repeated
//! `trace_state` fields, names after them, bytes that are not UTF-8), and
//! over random trace ids, adjusted counts that add up to the traffic.

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use proptest::prelude::*;
use prost::Message as _;

use super::*;
use crate::otlp::tracestate::{Randomness, Sampling, Threshold, MAX};
use crate::otlp::{decode, Encoding};

fn id(low: u64) -> TraceId {
    let mut b = [0x5au8; 16];
    b[8..].copy_from_slice(&low.to_be_bytes());
    TraceId(b)
}

/// A trace id whose randomness is `r`.
fn with_randomness(r: u64) -> TraceId {
    id(r & (MAX - 1))
}

/// Spans of trace `trace`, one per `tracestate`, as the decoder reads them
/// from a message the Collector's types wrote.
fn spans(trace: TraceId, states: &[&str]) -> Vec<SpanRecord> {
    let spans = states
        .iter()
        .enumerate()
        .map(|(i, st)| Span {
            trace_id: trace.0.to_vec(),
            span_id: vec![i as u8 + 1; 8],
            parent_span_id: if i == 0 { vec![] } else { vec![1; 8] },
            trace_state: st.to_string(),
            name: format!("op-{i}"),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000 + i as u64,
            ..Span::default()
        })
        .collect();
    records(vec![scope_spans(spans)])
}

fn scope_spans(spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(Value::StringValue("shop".into())),
                }),
                ..KeyValue::default()
            }],
            ..Resource::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "lib".into(),
                ..InstrumentationScope::default()
            }),
            spans,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

fn records(resource_spans: Vec<ResourceSpans>) -> Vec<SpanRecord> {
    let bytes = TracesData { resource_spans }.encode_to_vec();
    decode(Bytes::from(bytes))
        .expect("decodes")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

/// The kept spans as the Collector's types read the output.
fn output(
    mut spans: Vec<SpanRecord>,
    trace: TraceId,
    stage: Stage,
    rate: Option<&str>,
) -> Vec<Span> {
    let counted = Counted::of(&spans, &trace, stage, "r", rate);
    counted.apply(&mut spans, &[]);
    let (bytes, _) = crate::otlp::encode_trace(&spans, &counted.annotation, Encoding::OtlpProto);
    let data = TracesData::decode(bytes.as_slice()).expect("the Collector's types read it");
    data.resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

fn attribute<'a>(span: &'a Span, key: &str) -> Vec<&'a Value> {
    span.attributes
        .iter()
        .filter(|kv| kv.key == key)
        .filter_map(|kv| kv.value.as_ref()?.value.as_ref())
        .collect()
}

fn adjusted(span: &Span) -> Option<f64> {
    match attribute(span, ADJUSTED_COUNT_ATTRIBUTE)[..] {
        [] => None,
        [Value::DoubleValue(n)] => Some(*n),
        ref other => panic!("one double adjusted count, not {other:?}"),
    }
}

fn rate(p: f64) -> Stage {
    Stage::Sampled(Threshold::from_probability(p).expect("a probability"))
}

/// Each rule kind after each form of head sampling: the threshold a kept
/// span leaves with, its adjusted count, everything else in its
/// `tracestate` kept. (The randomness, 0xf0…, is kept by all of these.)
#[test]
fn each_rule_kind_after_each_head_sampling() {
    let trace = with_randomness(0xf0_0000_0000_0000);
    let cases: [(&str, Stage, &str, Option<f64>); 12] = [
        // No head sampling: collected whole.
        ("", Stage::Unchanged, "", Some(1.0)),
        ("", rate(0.25), "ot=th:c", Some(4.0)),
        ("vendor=x", rate(0.5), "ot=th:8,vendor=x", Some(2.0)),
        ("", Stage::Unknown, "", None),
        // Head sampled 1 in 8: `keep` passes it on, `rate` composes.
        (
            "ot=th:e,vendor=x",
            Stage::Unchanged,
            "ot=th:e,vendor=x",
            Some(8.0),
        ),
        ("ot=th:e,vendor=x", rate(0.5), "ot=th:e,vendor=x", Some(8.0)),
        (
            "ot=th:8,vendor=x",
            rate(0.125),
            "ot=th:e,vendor=x",
            Some(8.0),
        ),
        ("ot=th:c", rate(0.1), "ot=th:e6666666666666", Some(10.0)),
        // `limit` is no probability: the threshold goes, `rv` stays.
        (
            "ot=th:e;rv:f8000000000000,v=1",
            Stage::Unknown,
            "ot=rv:f8000000000000,v=1",
            None,
        ),
        // Other `ot` sub-keys and members stay, in order, `ot` first.
        (
            "a=1,ot=xx:yy;th:8,b=2",
            rate(0.25),
            "ot=th:c;xx:yy,a=1,b=2",
            Some(4.0),
        ),
        // Head sampling at 100 %, stated.
        ("ot=th:0", Stage::Unchanged, "ot=th:0", Some(1.0)),
        ("ot=th:0", rate(1.0), "ot=th:0", Some(1.0)),
    ];
    for (incoming, stage, want, count) in cases {
        let out = output(spans(trace, &[incoming, incoming]), trace, stage, None);
        for span in &out {
            assert_eq!(span.trace_state, want, "{incoming:?} by {stage:?}");
            let got = adjusted(span);
            assert_eq!(got.is_some(), count.is_some(), "{incoming:?} by {stage:?}");
            if let (Some(got), Some(count)) = (got, count) {
                assert!(
                    (got - count).abs() < 1e-9,
                    "{incoming:?} by {stage:?}: {got}"
                );
            }
        }
    }
}

/// A threshold that cannot be read, or that the trace's randomness is
/// below, is erased and counted, and the span claims no count; one the
/// span's own `rv` contradicts after composition too.
#[test]
fn malformed_and_inconsistent_thresholds_are_erased_and_counted() {
    let trace = with_randomness(0x40_0000_0000_0000);
    for (incoming, stage, want, erased) in [
        ("ot=th:XYZ,v=1", Stage::Unchanged, "v=1", [1, 0]),
        ("ot=th:,v=1", rate(0.5), "v=1", [1, 0]),
        // R = 0x40… is below th:8 (0x80…): it could not have been kept.
        ("ot=th:8", Stage::Unchanged, "", [0, 1]),
        (
            "ot=th:8;rv:90000000000000",
            Stage::Unchanged,
            "ot=th:8;rv:90000000000000",
            [0, 0],
        ),
    ] {
        let spans = spans(trace, &[incoming]);
        let counted = Counted::of(&spans, &trace, stage, "r", None);
        assert_eq!(counted.erased, erased, "{incoming:?}");
        let out = output(spans, trace, stage, None);
        assert_eq!(out[0].trace_state, want, "{incoming:?}");
        let claims = erased == [0, 0];
        assert_eq!(adjusted(&out[0]).is_some(), claims, "{incoming:?}");
    }
    // The trace (its root's `rv`) is kept at 1/4; a span with an `rv` of its
    // own below the threshold would say it was not kept: erased.
    let root = "ot=rv:f0000000000000";
    let child = "ot=rv:10000000000000";
    let spans_ = spans(trace, &[root, child]);
    let counted = Counted::of(&spans_, &trace, rate(0.25), "r", None);
    assert_eq!(counted.erased, [0, 1]);
    let out = output(spans_, trace, rate(0.25), None);
    assert_eq!(out[0].trace_state, "ot=th:c;rv:f0000000000000");
    assert_eq!(adjusted(&out[0]), Some(4.0));
    assert_eq!(out[1].trace_state, "ot=rv:10000000000000");
    assert_eq!(adjusted(&out[1]), None);
}

/// Spans of one trace that came with different thresholds leave with their
/// own counts; the rule is written on all of them once.
#[test]
fn spans_with_different_thresholds_carry_their_own_counts() {
    let trace = with_randomness(0xff_0000_0000_0000);
    let out = output(
        spans(trace, &["ot=th:8", "ot=th:e", "", "ot=th:8"]),
        trace,
        rate(0.25),
        Some("SampleRate"),
    );
    let counts: Vec<Option<f64>> = out.iter().map(adjusted).collect();
    assert_eq!(counts, [Some(4.0), Some(8.0), Some(4.0), Some(4.0)]);
    let rates: Vec<Vec<&Value>> = out.iter().map(|s| attribute(s, "SampleRate")).collect();
    assert_eq!(rates[1], [&Value::IntValue(8)]);
    assert_eq!(rates[0], [&Value::IntValue(4)]);
    for s in &out {
        let rule = attribute(s, "tailgate.rule");
        assert_eq!(rule, [&Value::StringValue("r".into())]);
    }
}

/// A span with its `trace_state` written twice (the last counts, as for
/// any protobuf reader), before and after its name, and one whose
/// `trace_state` is not UTF-8: the output holds one, the name is found,
/// and every other field is as it came.
#[test]
fn repeated_and_misplaced_trace_state_fields_are_replaced_whole() {
    use crate::otlp::wire::put_len;
    let trace = with_randomness(0xf0_0000_0000_0000);
    let base = spans(trace, &[""]).remove(0);
    let mut hostile = Vec::new();
    put_len(&mut hostile, 3, b"ot=th:0");
    hostile.extend_from_slice(base.encoded());
    put_len(&mut hostile, 3, b"ot=th:8,z=9");
    let mut not_utf8 = base.encoded().to_vec();
    put_len(&mut not_utf8, 3, b"v=\xff\xfe");
    for (bytes, want) in [
        (hostile, "ot=th:c,z=9"),
        (not_utf8, "ot=th:c,v=\u{fffd}\u{fffd}"),
    ] {
        // The span's bytes as they are, not as prost would write them.
        let mut scope = Vec::new();
        put_len(&mut scope, 2, &bytes);
        let mut resource = Vec::new();
        put_len(&mut resource, 2, &scope);
        let mut data = Vec::new();
        put_len(&mut data, 1, &resource);
        let Ok(decoded) = decode(Bytes::from(data)) else {
            // The decoder may refuse a string that is not UTF-8.
            continue;
        };
        let mut got: Vec<SpanRecord> = decoded.spans.into_iter().map(|(_, s)| s).collect();
        let before = Span::decode(got[0].encoded()).ok();
        let counted = Counted::of(&got, &trace, rate(0.25), "r", None);
        counted.apply(&mut got, &[]);
        assert_eq!(got[0].name(), "op-0", "the name is found after the edit");
        let fields = crate::otlp::trace_state_fields(got[0].encoded()).count();
        assert_eq!(fields, 1, "one trace_state field left");
        let after = Span::decode(got[0].encoded()).expect("reads");
        assert_eq!(after.trace_state, want);
        if let Some(before) = before {
            assert_eq!(
                Span {
                    trace_state: String::new(),
                    ..after
                },
                Span {
                    trace_state: String::new(),
                    ..before
                }
            );
        }
    }
}

fn member() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,4}=[a-z0-9]{0,4}",
        "ot=(th:[0-9a-f]{0,15}|rv:[0-9a-f]{13,15}|[a-z]{1,2}:[a-z]{0,2})(;(th:[0-9a-fA-F]{0,3}|rv:[0-9a-f]{14}|q:1)){0,2}",
        Just("ot=".to_string()),
        Just(" , ".to_string()),
    ]
}

fn any_stage() -> impl Strategy<Value = Stage> {
    prop_oneof![
        Just(Stage::Unchanged),
        Just(Stage::Unknown),
        (0u64..MAX).prop_map(|t| Stage::Sampled(Threshold::new(t).expect("below 2^56"))),
    ]
}

proptest! {
    /// Over any `tracestate`s and stages: the output reads with the
    /// Collector's types; each span's `trace_state` is exactly what the
    /// specification's rules give for it; every other field is as it came;
    /// a threshold is never lowered; a threshold and a count are written
    /// together and agree.
    #[test]
    fn any_tracestate_leaves_as_the_specification_says(
        states in prop::collection::vec(prop::collection::vec(member(), 0..4), 1..6),
        stage in any_stage(),
        r in 0u64..MAX,
    ) {
        let trace = with_randomness(r);
        let states: Vec<String> = states.iter().map(|m| m.join(",")).collect();
        let refs: Vec<&str> = states.iter().map(String::as_str).collect();
        let input = spans(trace, &refs);
        let before: Vec<Span> = input.iter().map(|s| Span::decode(s.encoded()).expect("reads")).collect();
        let out = output(input, trace, stage, None);
        prop_assert_eq!(out.len(), states.len());
        for ((span, came), state) in out.iter().zip(&before).zip(&states) {
            let want = outgoing(state, &trace, stage);
            prop_assert_eq!(&span.trace_state, want.tracestate.as_ref().unwrap_or(state));
            let read = Sampling::of(&span.trace_state);
            prop_assert_eq!(read.threshold, want.threshold);
            if let (Some(t), Some(incoming)) = (want.threshold, Sampling::of(state).threshold) {
                prop_assert!(want.erased.is_some() || t >= incoming, "never lowered");
            }
            if let Some(t) = want.threshold {
                prop_assert!(t.keeps(read.randomness_of(&trace)), "consistent on the way out");
                prop_assert_eq!(adjusted(span), Some(t.adjusted_count()));
            }
            let mut rest = span.clone();
            rest.trace_state.clear();
            rest.attributes.retain(|kv| !kv.key.starts_with("tailgate."));
            let mut came = came.clone();
            came.trace_state.clear();
            prop_assert_eq!(rest, came);
        }
    }
}

/// How many input traces the sum of the kept traces' adjusted counts
/// estimates, head × tail, over random trace ids: within 4 standard errors
/// of the truth for each combination (the error of the composed
/// probability's binomial sample), and the measured relative error
/// printed for the closing note.
#[test]
fn adjusted_counts_estimate_the_traffic_for_every_head_and_tail() {
    use crate::rules::{RuleSet, RuleSpec, TraceSummary};
    let n = 40_000u64;
    let heads = [None, Some(0.5), Some(0.125), Some(0.1)];
    let tails = [
        "keep",
        "{ rate: 0.25 }",
        "{ rate: 0.5 }",
        "{ rate: 0.01 }",
        "{ dynamic: { key: [span.name], target_per_second: 2, interval: 1s } }",
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for head in heads {
        for tail in tails {
            let specs: Vec<RuleSpec> =
                serde_yaml::from_str(&format!("- {{ name: t, sample: {tail} }}")).expect("rules");
            let rules = RuleSet::compile(&specs).expect("compiles");
            let head_t = head.and_then(Threshold::from_probability);
            let (mut estimate, mut variance) = (0.0f64, 0.0f64);
            for i in 0..n {
                let trace = id(next());
                // Head sampling upstream: only what it keeps arrives.
                if head_t.is_some_and(|t| !t.keeps(Randomness::of(&trace))) {
                    continue;
                }
                let state = head_t.map_or(String::new(), |t| format!("ot=th:{}", t.encode()));
                let input = spans(trace, &[state.as_str()]);
                // 10 traces a second of stream time, over 4 000 s.
                let now = std::time::Duration::from_millis(i * 100);
                let d = rules.decide(&TraceSummary::of(trace, &input), now);
                if !d.keep {
                    continue;
                }
                let out = output(input, trace, d.stage, None);
                let c = adjusted(&out[0]).expect("a probability sampler's count");
                estimate += c;
                // Var of a Horvitz–Thompson count: (1 - p) / p² per kept
                // trace, estimated unbiasedly by c (c - 1).
                variance += c * (c - 1.0);
            }
            let error = (estimate - n as f64) / n as f64;
            let bound = 4.0 * variance.sqrt() / n as f64;
            eprintln!(
                "head {:>6} x tail {:<60} estimate {estimate:>9.0} of {n}: error {:+.2} % (4 s.e. {:.2} %)",
                head.map_or("none".into(), |p| p.to_string()),
                tail,
                100.0 * error,
                100.0 * bound
            );
            assert!(
                error.abs() <= bound.max(1e-9),
                "head {head:?} x {tail}: {estimate} for {n} ({:+.2} %, bound {:.2} %)",
                100.0 * error,
                100.0 * bound
            );
        }
    }
}
