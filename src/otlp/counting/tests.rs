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

/// What the trace's spans say of its sampling, as the rules read it.
fn trace_sampling(spans: &[SpanRecord], trace: TraceId) -> Sampling {
    crate::rules::TraceSummary::of(trace, spans).sampling
}

/// What `stage` makes of `spans`, the trace's sampling read as the rules
/// read it.
fn counted(spans: &[SpanRecord], trace: TraceId, stage: Stage, rate: Option<&str>) -> Counted {
    Counted::of(
        spans,
        &trace,
        &trace_sampling(spans, trace),
        stage,
        "r",
        rate,
    )
}

/// The kept spans as the Collector's types read the output.
fn output(
    mut spans: Vec<SpanRecord>,
    trace: TraceId,
    stage: Stage,
    rate: Option<&str>,
) -> Vec<Span> {
    let counted = counted(&spans, trace, stage, rate);
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
        let counted = counted(&spans, trace, stage, None);
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
    let counted = counted(&spans_, trace, rate(0.25), None);
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

/// A trace whose spans bring many distinct `tracestate`s (past the short
/// list, into the map), repeated out of order: each span leaves with its
/// own, read once per distinct value.
#[test]
fn many_distinct_tracestates_each_leave_with_their_own() {
    let trace = with_randomness(0xff_0000_0000_0000);
    let states: Vec<String> = (0..40)
        .map(|i| match i % 3 {
            0 => format!("v{}=1", i % 13),
            1 => format!("ot=th:{:x},v{}=1", 8 + i % 7, i % 13),
            _ => "ot=th:zz".to_string(),
        })
        .collect();
    let refs: Vec<&str> = states.iter().map(String::as_str).collect();
    let input = spans(trace, &refs);
    let sampling = trace_sampling(&input, trace);
    let counted = Counted::of(&input, &trace, &sampling, rate(0.5), "r", None);
    assert!(counted.outcomes.len() > 8, "the map was used");
    assert_eq!(counted.erased, [13, 0], "every th:zz, once a span");
    let out = output(input, trace, rate(0.5), None);
    for (span, state) in out.iter().zip(&states) {
        let want = outgoing(state, &trace, &sampling, rate(0.5));
        assert_eq!(&span.trace_state, want.tracestate.as_ref().unwrap_or(state));
        assert_eq!(adjusted(span), want.adjusted_count, "{state}");
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
    for (bytes, want, fields) in [
        (hostile, "ot=th:c,z=9", 1),
        // Not UTF-8: nothing in it can be read, and strict readers refuse
        // the span: erased whole.
        (not_utf8, "", 0),
    ] {
        // The span's bytes as they are, not as prost would write them.
        let mut scope = Vec::new();
        put_len(&mut scope, 2, &bytes);
        let mut resource = Vec::new();
        put_len(&mut resource, 2, &scope);
        let mut data = Vec::new();
        put_len(&mut data, 1, &resource);
        let decoded = decode(Bytes::from(data)).expect("the decoder takes it");
        let mut got: Vec<SpanRecord> = decoded.spans.into_iter().map(|(_, s)| s).collect();
        let counted = counted(&got, trace, rate(0.25), None);
        counted.apply(&mut got, &[]);
        assert_eq!(got[0].name(), "op-0", "the name is found after the edit");
        let left = crate::otlp::trace_state_fields(got[0].encoded()).count();
        assert_eq!(left, fields, "trace_state fields left");
        let after = Span::decode(got[0].encoded()).expect("the Collector's types read it");
        assert_eq!(after.trace_state, want);
        let other = |s: &SpanRecord| -> Vec<Vec<u8>> {
            let mut f = crate::otlp::wire::Fields::new(s.encoded());
            let mut out = Vec::new();
            let mut at = 0;
            while let Ok(Some((n, _))) = f.next() {
                if n != 3 && n != 9 {
                    out.push(s.encoded()[at..f.position()].to_vec());
                }
                at = f.position();
            }
            out
        };
        assert_eq!(other(&got[0]), other(&base), "every other field as it came");
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
        let sampling = trace_sampling(&input, trace);
        let before: Vec<Span> = input.iter().map(|s| Span::decode(s.encoded()).expect("reads")).collect();
        let out = output(input, trace, stage, None);
        prop_assert_eq!(out.len(), states.len());
        for ((span, came), state) in out.iter().zip(&before).zip(&states) {
            let want = outgoing(state, &trace, &sampling, stage);
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
            // Independently of the code under test: every member that is
            // not `ot` leaves as it came, in order; a readable `rv` stays.
            let others = |ts: &str| -> Vec<String> {
                ts.split(',')
                    .map(|m| m.trim_matches([' ', '\t']))
                    .filter(|m| !m.is_empty() && !m.starts_with("ot="))
                    .map(str::to_string)
                    .collect()
            };
            if want.tracestate.as_deref() != Some("") {
                prop_assert_eq!(others(&span.trace_state), others(state));
            }
            if let Some(rv) = Sampling::of(state).randomness {
                prop_assert_eq!(read.randomness, Some(rv), "rv kept");
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
    // Head sampling by the trace id (every span says so), or by an explicit
    // `rv` said only by the child span (the root came through something that
    // does not pass `tracestate` on).
    let heads = [
        (None, false),
        (Some(0.5), false),
        (Some(0.125), false),
        (Some(0.1), false),
        (Some(0.5), true),
        (Some(0.25), true),
    ];
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
    for (head, explicit) in heads {
        for tail in tails {
            let specs: Vec<RuleSpec> =
                serde_yaml::from_str(&format!("- {{ name: t, sample: {tail} }}")).expect("rules");
            let rules = RuleSet::compile(&specs).expect("compiles");
            let head_t = head.and_then(Threshold::from_probability);
            let (mut estimate, mut variance) = (0.0f64, 0.0f64);
            for i in 0..n {
                let trace = id(next());
                let rv = Randomness::parse(&format!("{:014x}", next() >> 8)).expect("56 bits");
                let r = if explicit { rv } else { Randomness::of(&trace) };
                // Head sampling upstream: only what it keeps arrives.
                if head_t.is_some_and(|t| !t.keeps(r)) {
                    continue;
                }
                let said = head_t.map_or(String::new(), |t| match explicit {
                    true => format!("ot=th:{};rv:{:014x}", t.encode(), rv.value()),
                    false => format!("ot=th:{}", t.encode()),
                });
                let root = if explicit { "" } else { said.as_str() };
                let input = spans(trace, &[root, said.as_str()]);
                // 10 traces a second of stream time, over 4 000 s.
                let now = std::time::Duration::from_millis(i * 100);
                let d = rules.decide(&TraceSummary::of(trace, &input), now);
                if !d.keep {
                    continue;
                }
                let out = output(input, trace, d.stage, None);
                let c = adjusted(&out[0]).expect("a probability sampler's count");
                assert_eq!(adjusted(&out[1]), Some(c), "the trace's spans agree");
                assert_eq!(out[0].trace_state, out[1].trace_state, "and say the same");
                estimate += c;
                // Var of a Horvitz–Thompson count: (1 - p) / p² per kept
                // trace, estimated unbiasedly by c (c - 1).
                variance += c * (c - 1.0);
            }
            let error = (estimate - n as f64) / n as f64;
            let bound = 4.0 * variance.sqrt() / n as f64;
            eprintln!(
                "head {:>9} x tail {:<60} estimate {estimate:>9.0} of {n}: error {:+.2} % (4 s.e. {:.2} %)",
                head.map_or("none".into(), |p| format!("{p}{}", if explicit { " rv" } else { "" })),
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
