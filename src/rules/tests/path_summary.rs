//! The critical path's summary: which service made a trace slow, by how
//! much, through which hops — and the attributes that write it onto the
//! trace, read back as the Collector reads the output.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, TracesData};
use proptest::prelude::*;
use prost::Message as _;

use super::*;
use crate::otlp::annotate::append_to_spans;
use crate::otlp::{decode, encode_trace, Annotation, Attributes, Encoding};
use crate::rules::path_summary::*;
use crate::workload::{encode, ShopWorkload};

fn summary(spans: &[SpanRecord]) -> PathSummary<'_> {
    PathSummary::of(&CriticalPath::of(spans), spans).expect("a trace with spans")
}

fn services<'a>(p: &'a PathSummary<'_>) -> Vec<&'a str> {
    p.services.iter().map(|(s, _)| &**s).collect()
}

#[test]
fn the_slow_fraud_check_is_named_with_its_share() {
    let spans = checkout_trace(false);
    let p = summary(&spans);
    assert_eq!(p.dominant_service(), "fraud-detection");
    assert!(
        (p.share() - 0.7).abs() < 1e-9,
        "700 of 1000 ms: {}",
        p.share()
    );
    assert_eq!(p.total_ns, 1_000_000_000);
    assert_eq!(spans[p.span.0].name(), "POST /score");
    assert_eq!(p.span.1, 700_000_000);
    assert_eq!(services(&p), ["gateway", "checkout", "fraud-detection"]);
    assert_eq!(p.top, 0, "the root");
}

#[test]
fn an_asynchronous_consumer_that_takes_longest_is_named() {
    let spans = kafka_hop_trace();
    let p = summary(&spans);
    assert_eq!(p.dominant_service(), "indexer");
    assert!((p.share() - 700.0 / 900.0).abs() < 1e-9);
    assert_eq!(services(&p), ["gateway", "indexer"]);
    assert_eq!(p.total_ns, 900_000_000);
}

#[test]
fn without_its_root_the_summary_belongs_to_the_top_most_span() {
    let mut spans = checkout_trace(false);
    spans.remove(0);
    let p = summary(&spans);
    assert_eq!(spans[p.top].name(), "place-order");
    assert_eq!(p.dominant_service(), "fraud-detection");
    assert!((p.share() - 700.0 / 890.0).abs() < 1e-9);
    let attributes = p.attributes(&spans);
    let on_top = &attributes.iter().find(|(i, _)| *i == p.top).expect("top").1;
    let decoded = with(&spans[p.top], on_top);
    assert_eq!(
        string(&decoded, SERVICE_ATTRIBUTE).as_deref(),
        Some("fraud-detection")
    );
}

#[test]
fn an_empty_trace_has_no_summary_and_a_path_without_length_names_its_top() {
    assert_eq!(PathSummary::of(&CriticalPath::of(&[]), &[]), None);
    let spans = test_spans(
        TraceId([3; 16]),
        &[SpanSpec::new("edge", "GET /", None, 5, 0)],
    );
    let p = summary(&spans);
    assert_eq!(
        (p.dominant_service(), p.share(), p.total_ns),
        ("edge", 0.0, 0)
    );
}

/// The span decoded as the Collector would, with `extra` appended.
fn with(span: &SpanRecord, extra: &Attributes) -> Span {
    let mut bytes = span.encoded().to_vec();
    bytes.extend_from_slice(extra.as_bytes());
    Span::decode(bytes.as_slice()).expect("valid span")
}

fn value<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    let mut found = span.attributes.iter().filter(|kv| kv.key == key);
    let first = found.next()?;
    assert!(found.next().is_none(), "{key} written once");
    first.value.as_ref()?.value.as_ref()
}

fn string(span: &Span, key: &str) -> Option<String> {
    match value(span, key)? {
        Value::StringValue(s) => Some(s.clone()),
        other => panic!("{key}: {other:?}"),
    }
}

fn double(span: &Span, key: &str) -> Option<f64> {
    match value(span, key)? {
        Value::DoubleValue(d) => Some(*d),
        other => panic!("{key}: {other:?}"),
    }
}

fn strings(span: &Span, key: &str) -> Option<Vec<String>> {
    match value(span, key)? {
        Value::ArrayValue(a) => Some(
            a.values
                .iter()
                .map(|v| match &v.value {
                    Some(Value::StringValue(s)) => s.clone(),
                    other => panic!("{key}: {other:?}"),
                })
                .collect(),
        ),
        other => panic!("{key}: {other:?}"),
    }
}

/// The shop's slow traces, written onto as a kept trace is and read back
/// through the Collector's formats (protobuf and OTLP JSON): the root
/// names fraud-detection with its share of the path, worked out here from
/// the generated spans alone; every span on the path carries its time on
/// it, the others nothing; every span is otherwise unchanged.
#[test]
fn the_shop_slow_traces_carry_their_answer_through_both_encodings() {
    let mut shop = ShopWorkload::new(5);
    shop.slow_rate = 1.0;
    for n in 0..20 {
        let t = shop.next_trace(1_700_000_000_000_000_000 + n * 1_000_000_000);
        // The oracle: fraud-detection's call, over the root's start to the
        // last span's end (the consumers end after the root).
        let all: Vec<&Span> = t
            .messages
            .iter()
            .flat_map(|m| &m.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        let score = all.iter().find(|s| s.name == "POST /score").expect("score");
        let start = all.iter().map(|s| s.start_time_unix_nano).min().unwrap();
        let end = all.iter().map(|s| s.end_time_unix_nano).max().unwrap();
        let share =
            (score.end_time_unix_nano - score.start_time_unix_nano) as f64 / (end - start) as f64;
        for enc in [Encoding::OtlpProto, Encoding::OtlpJson] {
            let mut spans: Vec<SpanRecord> = t
                .messages
                .iter()
                .flat_map(|m| {
                    decode(bytes::Bytes::from(encode(m, enc)))
                        .expect("valid")
                        .spans
                        .into_iter()
                        .map(|(_, s)| s)
                })
                .collect();
            let before: Vec<Vec<u8>> = spans.iter().map(|s| s.encoded().to_vec()).collect();
            let p = summary(&spans);
            let attributes = p.attributes(&spans);
            append_to_spans(&mut spans, &attributes);
            for (s, b) in spans.iter().zip(&before) {
                assert!(s.encoded().starts_with(b), "a span's own bytes unchanged");
            }
            let (payload, used) = encode_trace(&spans, &Annotation::new("slow", 1.0), enc);
            assert_eq!(used, enc);
            let out: TracesData = match enc {
                Encoding::OtlpProto => TracesData::decode(payload.as_slice()).expect("protobuf"),
                Encoding::OtlpJson => serde_json::from_slice(&payload).expect("OTLP JSON"),
            };
            let read: Vec<&Span> = out
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .collect();
            assert_eq!(read.len(), all.len());
            let root = read.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
            assert_eq!(
                string(root, SERVICE_ATTRIBUTE).as_deref(),
                Some("fraud-detection"),
                "{enc:?}"
            );
            let got = double(root, SHARE_ATTRIBUTE).unwrap();
            assert!((got - share).abs() < 1e-9, "share {got} against {share}");
            let ms = double(root, DURATION_ATTRIBUTE).unwrap();
            assert!((ms - (end - start) as f64 / 1e6).abs() < 1e-6);
            assert_eq!(
                string(root, SPAN_ATTRIBUTE).as_deref(),
                Some("POST api.riskscore.example/v2/score"),
                "the third-party call has the most time of its own"
            );
            let path = strings(root, SERVICES_ATTRIBUTE).unwrap();
            assert_eq!(path[..3], ["gateway", "profile-service", "fraud-detection"]);
            let mut on_path = 0.0;
            for s in &read {
                let own = double(s, SELF_ATTRIBUTE);
                if !std::ptr::eq(*s, *root) {
                    assert_eq!(string(s, SERVICE_ATTRIBUTE), None, "the summary once");
                }
                if matches!(
                    s.name.as_str(),
                    "POST /score" | "POST api.riskscore.example/v2/score"
                ) {
                    assert!(own.is_some(), "{} is on the path", s.name);
                }
                on_path += own.unwrap_or(0.0);
            }
            assert!(
                (on_path - ms).abs() < 1e-6,
                "the path's spans' times add up to its length: {on_path} / {ms}"
            );
        }
    }
}

fn arbitrary_trace() -> impl Strategy<Value = Vec<SpanRecord>> {
    // Up to 60 spans (past the critical path's scan for small traces);
    // each a child of an earlier one (or a root, or of a span that never
    // arrived), over 4 services, at any times; some sharing a span id,
    // some pointing at a later span (cycles).
    let spec = (0usize..70, 0u64..1_000, 0u64..1_000, 0usize..4);
    prop::collection::vec(spec, 1..60).prop_map(|specs| {
        let names = ["a", "b", "c", "d"];
        let specs: Vec<SpanSpec> = specs
            .iter()
            .enumerate()
            .map(|(i, &(parent, start, duration, service))| {
                let parent = (parent < i).then_some(parent);
                SpanSpec::new(names[service], &format!("op{i}"), parent, start, duration)
            })
            .collect();
        let mut spans = test_spans(TraceId([4; 16]), &specs);
        let n = spans.len();
        for i in 0..n {
            if i % 5 == 4 {
                // Its parent never arrived.
                spans[i].parent_span_id = [0xee; 8];
            } else if i % 7 == 6 {
                spans[i].span_id = spans[i - 1].span_id;
            } else if i % 11 == 10 {
                spans[i].parent_span_id = spans[(i + 3).min(n - 1)].span_id;
            }
        }
        spans
    })
}

proptest! {
    /// On any trace: the path's spans' times add up to its length, the
    /// dominant service has no less time than any other, the share is a
    /// fraction, each service and span is listed once, and written onto
    /// the trace the summary is on exactly one span, each time on exactly
    /// the spans of the path.
    #[test]
    fn the_summary_adds_up_on_any_trace(spans in arbitrary_trace()) {
        let path = CriticalPath::of(&spans);
        let p = PathSummary::of(&path, &spans).expect("spans");
        let steps: u64 = p.steps.iter().map(|(_, t)| t).sum();
        prop_assert_eq!(steps, p.total_ns);
        let by_service: u64 = p.services.iter().map(|(_, t)| t).sum();
        prop_assert_eq!(by_service, p.total_ns);
        let dominant = p.services[p.dominant].1;
        prop_assert!(p.services.iter().all(|(_, t)| *t <= dominant));
        prop_assert!((0.0..=1.0).contains(&p.share()));
        let mut names: Vec<&str> = services(&p);
        names.sort_unstable();
        names.dedup();
        prop_assert_eq!(names.len(), p.services.len());
        prop_assert!(p.steps.iter().all(|(_, t)| *t <= p.span.1));

        let attributes = p.attributes(&spans);
        let mut annotated = spans.clone();
        append_to_spans(&mut annotated, &attributes);
        let mut summaries = 0;
        for (i, s) in annotated.iter().enumerate() {
            prop_assert!(s.encoded().starts_with(spans[i].encoded()));
            let decoded = Span::decode(s.encoded()).expect("valid span");
            if string(&decoded, SERVICE_ATTRIBUTE).is_some() {
                summaries += 1;
                prop_assert_eq!(i, p.top);
            }
            let own = p.steps.iter().find(|(j, _)| *j == i).map(|(_, t)| *t as f64 / 1e6);
            prop_assert_eq!(double(&decoded, SELF_ATTRIBUTE), own);
        }
        prop_assert_eq!(summaries, 1);
    }
}

/// Names come from the input and may be any length: the summary writes at
/// most `MAX_NAME` bytes of each (cut at a character boundary) and lists at
/// most `MAX_SERVICES` services, so a 300 KB span name is not copied onto
/// the root (a real-broker test found it pushing the root past the output's
/// message limit).
#[test]
fn long_names_and_many_services_are_bounded_on_the_trace() {
    let long: &'static str = Box::leak("é".repeat(150_000).into_boxed_str());
    let names: Vec<&'static str> = (0..40)
        .map(|i| &*Box::leak(format!("svc-{i}").into_boxed_str()))
        .collect();
    // A chain: each service calls the next, the last with the long name
    // takes the most time.
    let mut specs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let parent = i.checked_sub(1);
        specs.push(SpanSpec::new(
            name,
            "hop",
            parent,
            i as u64,
            200 - 2 * i as u64,
        ));
    }
    specs.push(SpanSpec::new(long, long, Some(39), 50, 100));
    let spans = test_spans(TraceId([8; 16]), &specs);
    let p = summary(&spans);
    assert_eq!(p.services.len(), 41);
    let attributes = p.attributes(&spans);
    let top = &attributes.iter().find(|(i, _)| *i == p.top).unwrap().1;
    let root = with(&spans[p.top], top);
    let service = string(&root, SERVICE_ATTRIBUTE).unwrap();
    let span = string(&root, SPAN_ATTRIBUTE).unwrap();
    assert_eq!(span.len(), MAX_NAME, "é is 2 bytes: 128 of them");
    assert!(long.starts_with(&span));
    assert_eq!(service, span, "the long-named service dominates");
    let listed = strings(&root, SERVICES_ATTRIBUTE).unwrap();
    assert_eq!(listed.len(), MAX_SERVICES);
    assert_eq!(listed[..3], ["svc-0", "svc-1", "svc-2"]);
    assert!(top.as_bytes().len() < 2 * MAX_NAME + MAX_SERVICES * 16 + 400);
    assert_eq!(bounded("aé", 2), "a", "never inside a character");
}
