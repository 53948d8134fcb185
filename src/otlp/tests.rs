use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;

use super::*;
use crate::workload::{build_trace, encode, ShopWorkload, SpanSpec};

fn shop() -> crate::workload::GeneratedTrace {
    let mut w = ShopWorkload::new(11);
    w.error_rate = 1.0;
    w.next_trace(1_700_000_000_000_000_000)
}

fn proto(data: &TracesData) -> Bytes {
    Bytes::from(encode(data, Encoding::OtlpProto))
}

#[test]
fn protobuf_spans_keep_their_fields_and_bytes() {
    let t = shop();
    let mut spans = Vec::new();
    for m in &t.messages {
        let d = decode(proto(m)).expect("valid message");
        assert_eq!(d.encoding, Encoding::OtlpProto);
        assert!(d.rejected.is_empty());
        spans.extend(d.spans);
    }
    assert_eq!(spans.len(), 7);
    assert!(spans.iter().all(|(id, _)| *id == t.truth.trace_id));
    let roots: Vec<_> = spans.iter().filter(|(_, s)| s.is_root()).collect();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].1.service(), "gateway");
    assert!(roots[0].1.name().starts_with("POST /"));
    assert_eq!(roots[0].1.kind, span_kind::SERVER);
    assert_eq!(
        spans.iter().filter(|(_, s)| s.error()).count(),
        2,
        "fraud-detection and its call failed"
    );
    // Each record's bytes are exactly the encoded span.
    for (_, s) in &spans {
        let span = opentelemetry_proto::tonic::trace::v1::Span::decode(s.encoded.clone())
            .expect("span bytes");
        assert_eq!(span.span_id, s.span_id.to_vec());
        assert_eq!(span.name, s.name());
        assert_eq!(span.start_time_unix_nano, s.start_ns);
        assert_eq!(span.end_time_unix_nano, s.end_ns);
    }
}

#[test]
fn json_decodes_to_the_same_spans_as_protobuf() {
    let t = shop();
    for m in &t.messages {
        let p = decode(proto(m)).expect("proto");
        let j = decode(Bytes::from(encode(m, Encoding::OtlpJson))).expect("json");
        assert_eq!(j.encoding, Encoding::OtlpJson);
        assert_eq!(p.spans.len(), j.spans.len());
        for ((pi, ps), (ji, js)) in p.spans.iter().zip(&j.spans) {
            assert_eq!(pi, ji);
            assert_eq!(ps.span_id, js.span_id);
            assert_eq!(ps.parent_span_id, js.parent_span_id);
            assert_eq!(
                (ps.start_ns, ps.end_ns, ps.error(), ps.kind),
                (js.start_ns, js.end_ns, js.error(), js.kind)
            );
            assert_eq!(ps.name(), js.name());
            assert_eq!(ps.service(), js.service());
        }
    }
}

#[test]
fn collector_style_json_with_string_numbers_is_read() {
    // As the Collector's otlp_json encoding writes it: hex ids, nanos as strings, enums as numbers.
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeSpans":[{"scope":{"name":"x"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
      "parentSpanId":"","name":"POST /pay","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
      "attributes":[{"key":"http.status_code","value":{"intValue":"500"}}],"status":{"code":2}}]}]}]}"#;
    let d = decode(Bytes::from_static(json.as_bytes())).expect("collector json");
    assert_eq!(d.spans.len(), 1);
    let (id, s) = &d.spans[0];
    assert_eq!(id.to_hex(), "5b8efff798038103d269b633813fc60c");
    assert!(s.is_root() && s.error());
    assert_eq!(s.service(), "checkout");
    assert_eq!(s.end_ns - s.start_ns, 1_000_000_000);
}

#[test]
fn one_message_may_hold_several_traces_and_resources() {
    let mut w = ShopWorkload::new(5);
    let a = w.next_trace(0);
    let b = w.next_trace(0);
    let mut all = TracesData::default();
    for m in a.messages.iter().chain(&b.messages) {
        all.resource_spans.extend(m.resource_spans.clone());
    }
    let d = decode(proto(&all)).expect("batch");
    assert_eq!(d.spans.len(), 14);
    assert_eq!(
        d.spans
            .iter()
            .filter(|(id, _)| *id == a.truth.trace_id)
            .count(),
        7
    );
    assert_eq!(
        d.spans
            .iter()
            .filter(|(id, _)| *id == b.truth.trace_id)
            .count(),
        7
    );
}

fn kind_of(payload: &[u8]) -> DecodeErrorKind {
    decode(Bytes::copy_from_slice(payload))
        .expect_err("must be rejected")
        .kind
}

#[test]
fn bad_messages_are_rejected_with_a_reason() {
    let good = proto(&shop().messages[0]);
    assert_eq!(kind_of(b""), DecodeErrorKind::Empty);
    assert_eq!(kind_of(b"   \n"), DecodeErrorKind::NotOtlp);
    assert_eq!(
        kind_of(b"this is not OTLP at all"),
        DecodeErrorKind::NotOtlp
    );
    assert_eq!(kind_of(&[0xff, 0xff, 0xff, 0xff]), DecodeErrorKind::NotOtlp);
    assert_eq!(
        kind_of(b"{\"resourceSpans\": [ oops"),
        DecodeErrorKind::NotOtlp
    );
    assert_eq!(kind_of(&good[..good.len() / 2]), DecodeErrorKind::Truncated);
    assert_eq!(kind_of(&good[..good.len() - 1]), DecodeErrorKind::Truncated);
    assert_eq!(
        kind_of(&TracesData::default().encode_to_vec()),
        DecodeErrorKind::Empty
    );
    let no_spans = TracesData {
        resource_spans: vec![Default::default()],
    };
    assert_eq!(kind_of(&no_spans.encode_to_vec()), DecodeErrorKind::NoSpans);
    // Random bytes never panic, whatever they are.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for len in 0..400 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = decode(Bytes::from(bytes));
    }
}

fn single(spec: SpanSpec, trace_id: &[u8], span_id: &[u8]) -> TracesData {
    let mut data = build_trace(TraceId([7; 16]), &[[1; 8]], 1_000, &[spec]).remove(0);
    let s = &mut data.resource_spans[0].scope_spans[0].spans[0];
    s.trace_id = trace_id.to_vec();
    s.span_id = span_id.to_vec();
    data
}

#[test]
fn bad_spans_are_skipped_and_the_rest_kept() {
    let good = single(SpanSpec::new("a", "ok", None, 0, 5), &[7; 16], &[1; 8]);
    for (bad, want) in [
        (
            single(
                SpanSpec::new("a", "short id", None, 0, 5),
                &[7; 15],
                &[1; 8],
            ),
            DecodeErrorKind::BadTraceId,
        ),
        (
            single(SpanSpec::new("a", "long id", None, 0, 5), &[7; 32], &[1; 8]),
            DecodeErrorKind::BadTraceId,
        ),
        (
            single(SpanSpec::new("a", "zero id", None, 0, 5), &[0; 16], &[1; 8]),
            DecodeErrorKind::BadTraceId,
        ),
        (
            single(SpanSpec::new("a", "span id", None, 0, 5), &[7; 16], &[1; 4]),
            DecodeErrorKind::BadSpanId,
        ),
    ] {
        let mut msg = good.clone();
        msg.resource_spans[0].scope_spans[0]
            .spans
            .push(bad.resource_spans[0].scope_spans[0].spans[0].clone());
        let d = decode(proto(&msg)).expect("message kept");
        assert_eq!(d.spans.len(), 1, "the good span stays");
        assert_eq!(d.rejected.len(), 1);
        assert_eq!(d.rejected[0].kind, want);
    }
    let mut backwards = good.clone();
    let s = &mut backwards.resource_spans[0].scope_spans[0].spans[0];
    s.end_time_unix_nano = s.start_time_unix_nano - 1;
    for enc in [Encoding::OtlpProto, Encoding::OtlpJson] {
        let d = decode(Bytes::from(encode(&backwards, enc))).expect("message is well-formed");
        assert!(d.spans.is_empty());
        assert_eq!(d.rejected[0].kind, DecodeErrorKind::EndBeforeStart);
    }
    let mut short_json = good.clone();
    short_json.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1, 2, 3];
    let d = decode(Bytes::from(encode(&short_json, Encoding::OtlpJson))).expect("json");
    assert_eq!(d.rejected[0].kind, DecodeErrorKind::BadTraceId);
}

fn attributes(
    span: &opentelemetry_proto::tonic::trace::v1::Span,
) -> Vec<(String, Option<any_value::Value>)> {
    span.attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().and_then(|v| v.value.clone()),
            )
        })
        .collect()
}

#[test]
fn kept_spans_are_regrouped_and_annotated() {
    let t = shop();
    let mut spans = Vec::new();
    // Deliver the resources in two messages to check regrouping across messages.
    for m in &t.messages {
        spans.extend(
            decode(proto(m))
                .expect("valid")
                .spans
                .into_iter()
                .map(|(_, s)| s),
        );
    }
    let ann = Annotation::new("errors", 4.0);
    for enc in [Encoding::OtlpProto, Encoding::OtlpJson] {
        let (bytes, used) = encode_trace(&spans, &ann, enc);
        assert_eq!(used, enc);
        let out: TracesData = match enc {
            Encoding::OtlpProto => TracesData::decode(bytes.as_slice()).expect("valid protobuf"),
            Encoding::OtlpJson => serde_json::from_slice(&bytes).expect("valid OTLP JSON"),
        };
        assert_eq!(out.resource_spans.len(), 5, "one ResourceSpans per service");
        let mut n = 0;
        for (rs, orig) in out.resource_spans.iter().zip(&t.messages) {
            assert_eq!(rs.resource, orig.resource_spans[0].resource);
            assert_eq!(rs.schema_url, orig.resource_spans[0].schema_url);
            assert_eq!(rs.scope_spans.len(), 1);
            assert_eq!(
                rs.scope_spans[0].scope,
                orig.resource_spans[0].scope_spans[0].scope
            );
            for (s, o) in rs.scope_spans[0]
                .spans
                .iter()
                .zip(&orig.resource_spans[0].scope_spans[0].spans)
            {
                n += 1;
                let attrs = attributes(s);
                assert_eq!(
                    &s.attributes[..o.attributes.len()],
                    &o.attributes[..],
                    "original attributes kept"
                );
                assert!(attrs.contains(&(
                    "tailgate.rule".into(),
                    Some(any_value::Value::StringValue("errors".into()))
                )));
                assert!(attrs.contains(&(
                    "tailgate.adjusted_count".into(),
                    Some(any_value::Value::DoubleValue(4.0))
                )));
                let mut plain = s.clone();
                plain.attributes.truncate(o.attributes.len());
                assert_eq!(&plain, o, "nothing else changed");
            }
        }
        assert_eq!(n, 7);
        // And what we write, we read back.
        let again = decode(Bytes::from(bytes)).expect("output decodes as input");
        assert_eq!(again.spans.len(), 7);
    }
}

#[test]
fn trace_id_hex_round_trip() {
    let id = TraceId([0xab; 16]);
    assert_eq!(id.to_hex().len(), 32);
    assert_eq!(TraceId::from_hex(&id.to_hex()), Some(id));
    assert_eq!(TraceId::from_hex("abc"), None);
}

#[test]
fn a_scope_refers_into_its_message_or_else_holds_copies() {
    let message = Bytes::from_static(b"resource|schema|scope|svc");
    let inside = Scope::in_message(
        &message,
        [
            &message[0..8],
            &message[9..15],
            &message[16..21],
            b"",
            &message[22..25],
        ],
    );
    assert_eq!(inside.resource(), b"resource");
    assert_eq!(inside.part(Part::ResourceSchemaUrl), b"schema");
    assert_eq!(inside.scope(), b"scope");
    assert_eq!(inside.part(Part::ScopeSchemaUrl), b"");
    assert_eq!(inside.part(Part::Service), b"svc");
    // A part from elsewhere: the scope copies its parts instead of pointing wrong.
    let elsewhere = b"other".to_vec();
    let copied = Scope::in_message(&message, [&message[0..8], b"", &elsewhere, b"", b""]);
    assert_eq!(copied.resource(), b"resource");
    assert_eq!(copied.scope(), b"other");
}
