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
    // A message whose only span is invalid holds nothing valid: rejected
    // whole (so it is dead-lettered), for that span's reason.
    for enc in [Encoding::OtlpProto, Encoding::OtlpJson] {
        let e = decode(Bytes::from(encode(&backwards, enc))).expect_err("nothing valid");
        assert_eq!(e.kind, DecodeErrorKind::EndBeforeStart);
    }
    let mut short_json = good.clone();
    short_json.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1, 2, 3];
    let e = decode(Bytes::from(encode(&short_json, Encoding::OtlpJson))).expect_err("json");
    assert_eq!(e.kind, DecodeErrorKind::BadTraceId);
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

/// A one-span ERROR trace as a `ResourceSpans`.
fn error_resource(trace: u8) -> opentelemetry_proto::tonic::trace::v1::ResourceSpans {
    let mut spec = SpanSpec::new("checkout", "POST /pay", None, 0, 5);
    spec.error = true;
    build_trace(TraceId([trace; 16]), &[[trace; 8]], 1_000, &[spec])
        .remove(0)
        .resource_spans
        .remove(0)
}

/// A `ResourceSpans` of exactly `len` encoded bytes: an ERROR span whose name
/// is padded to fit when one fits, else only a schema URL.
fn resource_of_len(len: usize, trace: u8) -> opentelemetry_proto::tonic::trace::v1::ResourceSpans {
    let mut rs = error_resource(trace);
    let span = &mut rs.scope_spans[0].spans[0];
    span.name.clear();
    while rs.encoded_len() < len {
        rs.scope_spans[0].spans[0].name.push('x');
    }
    if rs.encoded_len() == len {
        return rs;
    }
    // A schema URL, and an empty resource (2 bytes) to step over the length
    // a varint boundary skips.
    for resource in [None, Some(Default::default())] {
        let mut rs = opentelemetry_proto::tonic::trace::v1::ResourceSpans {
            resource,
            ..Default::default()
        };
        while rs.encoded_len() < len {
            rs.schema_url.push('s');
        }
        if rs.encoded_len() == len {
            return rs;
        }
    }
    panic!("no resource of {len} bytes");
}

/// Issue 11, scenario 1: the second byte of a protobuf `TracesData` is its
/// first resource's length; at 123 it is `{`, at 9, 10, 12, 13 and 32 a
/// whitespace byte. Each of them is still protobuf, and its ERROR span is read.
#[test]
fn protobuf_whose_second_byte_looks_like_json_is_protobuf() {
    for len in [b'\t', b'\n', 0x0c, b'\r', b' ', b'{'] {
        let first = resource_of_len(usize::from(len), 1);
        let data = TracesData {
            resource_spans: vec![first.clone(), error_resource(2)],
        };
        let bytes = proto(&data);
        assert_eq!(&bytes[..2], &[0x0a, len], "the case under test");
        let d = decode(bytes).unwrap_or_else(|e| panic!("length {len}: {e}"));
        assert_eq!(d.encoding, Encoding::OtlpProto, "length {len}");
        assert!(d.rejected.is_empty(), "length {len}: {:?}", d.rejected);
        let want = 1 + first.scope_spans.len();
        assert_eq!(d.spans.len(), want, "length {len}");
        assert!(d
            .spans
            .iter()
            .any(|(id, s)| *id == TraceId([2; 16]) && s.error()));
    }
}

proptest::proptest! {
    /// Whatever its first resource's length (and so its second byte), a
    /// protobuf message is read as protobuf with all its spans.
    #[test]
    fn protobuf_is_recognised_whatever_its_first_resource_length(len in 3usize..400) {
        let first = resource_of_len(len, 1);
        let data = TracesData { resource_spans: vec![first.clone(), error_resource(2)] };
        let d = decode(proto(&data)).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
        proptest::prop_assert_eq!(d.encoding, Encoding::OtlpProto);
        proptest::prop_assert_eq!(d.spans.len(), 1 + first.scope_spans.len());
    }
}

/// JSON may start with whitespace (a newline among it) or a UTF-8 byte order mark.
#[test]
fn json_after_whitespace_or_a_byte_order_mark_is_json() {
    let data = TracesData {
        resource_spans: vec![error_resource(3)],
    };
    let json = encode(&data, Encoding::OtlpJson);
    for prefix in [
        &b"\n"[..],
        b"\n\n  \t",
        b"\r\n",
        b"\xef\xbb\xbf",
        b"\xef\xbb\xbf\n ",
    ] {
        let mut payload = prefix.to_vec();
        payload.extend_from_slice(&json);
        let d = decode(Bytes::from(payload)).unwrap_or_else(|e| panic!("{prefix:?}: {e}"));
        assert_eq!(d.encoding, Encoding::OtlpJson, "{prefix:?}");
        assert_eq!(d.spans.len(), 1, "{prefix:?}");
    }
    // A newline then something that is neither: rejected, naming both.
    let e = decode(Bytes::from_static(b"\n{not json")).expect_err("rejected");
    assert_eq!(e.kind, DecodeErrorKind::NotOtlp);
    assert!(
        e.detail.contains("protobuf") && e.detail.contains("JSON"),
        "{}",
        e.detail
    );
}

/// Encodes `rs` by hand with `span`'s bytes as its one span, so the span
/// can be broken inside while every frame around it is intact.
fn resource_with_raw_span(
    rs: &opentelemetry_proto::tonic::trace::v1::ResourceSpans,
    span: &[u8],
) -> Vec<u8> {
    use super::wire::put_len;
    let mut scope = Vec::new();
    if let Some(s) = &rs.scope_spans[0].scope {
        put_len(&mut scope, 1, &s.encode_to_vec());
    }
    put_len(&mut scope, 2, span);
    let mut out = Vec::new();
    if let Some(r) = &rs.resource {
        put_len(&mut out, 1, &r.encode_to_vec());
    }
    put_len(&mut out, 2, &scope);
    out
}

/// Issue 11, scenario 3: a span whose `attributes` field runs past the
/// span's end, inside an intact frame, is rejected alone; the ERROR trace
/// beside it in the same message is kept.
#[test]
fn a_span_broken_inside_its_frame_is_rejected_alone() {
    use super::wire::put_len;
    let good = error_resource(4);
    let neighbour = error_resource(5);
    let mut span = neighbour.scope_spans[0].spans[0].encode_to_vec();
    // Field 9 (attributes), length-delimited, claiming 50 bytes; 2 follow.
    span.extend_from_slice(&[0x4a, 50, 0x0a, 0x00]);
    let mut message = Vec::new();
    put_len(&mut message, 1, &good.encode_to_vec());
    put_len(&mut message, 1, &resource_with_raw_span(&neighbour, &span));
    let d = decode(Bytes::from(message)).expect("the message is kept");
    assert_eq!(d.spans.len(), 1);
    assert_eq!(d.spans[0].0, TraceId([4; 16]));
    assert!(d.spans[0].1.error());
    assert_eq!(d.rejected.len(), 1);
    assert_eq!(d.rejected[0].kind, DecodeErrorKind::MalformedSpan);
    // A broken status inside a span: the same.
    let mut span = neighbour.scope_spans[0].spans[0].encode_to_vec();
    span.extend_from_slice(&[0x7a, 2, 0x18, 0xff]); // status { code: <truncated varint> }
    let mut message = Vec::new();
    put_len(&mut message, 1, &good.encode_to_vec());
    put_len(&mut message, 1, &resource_with_raw_span(&neighbour, &span));
    let d = decode(Bytes::from(message)).expect("the message is kept");
    assert_eq!(
        (d.spans.len(), d.rejected[0].kind),
        (1, DecodeErrorKind::MalformedSpan)
    );
}

/// A `ScopeSpans` or `ResourceSpans` broken inside an intact frame loses its
/// own spans, not the message's others.
#[test]
fn a_scope_or_resource_broken_inside_its_frame_loses_only_its_spans() {
    use super::wire::put_len;
    let good = error_resource(6);
    // A ScopeSpans whose second field claims more bytes than it has.
    let mut broken_scope = Vec::new();
    put_len(
        &mut broken_scope,
        2,
        &good.scope_spans[0].spans[0].encode_to_vec(),
    );
    broken_scope.extend_from_slice(&[0x12, 90, 0x00]);
    let mut rs = Vec::new();
    put_len(&mut rs, 2, &broken_scope);
    put_len(&mut rs, 2, &good.scope_spans[0].encode_to_vec());
    let mut message = Vec::new();
    put_len(&mut message, 1, &rs);
    let d = decode(Bytes::from(message)).expect("kept");
    assert_eq!(d.spans.len(), 1, "the intact scope's span");
    assert_eq!(d.rejected.len(), 1);
    assert_eq!(d.rejected[0].kind, DecodeErrorKind::MalformedResource);
    // A ResourceSpans with a truncated field, beside a good one.
    let mut broken = good.encode_to_vec();
    broken.extend_from_slice(&[0x1a, 100, b'x']);
    let mut message = Vec::new();
    put_len(&mut message, 1, &broken);
    put_len(&mut message, 1, &error_resource(7).encode_to_vec());
    let d = decode(Bytes::from(message)).expect("kept");
    assert_eq!(d.spans.len(), 1);
    assert_eq!(d.spans[0].0, TraceId([7; 16]));
    assert_eq!(d.rejected[0].kind, DecodeErrorKind::MalformedResource);
}

/// The same for OTLP JSON: a span with an odd-length hex id rejects that
/// span; one with a value of the wrong type too; the ERROR span beside them stays.
#[test]
fn a_json_span_with_a_bad_id_is_rejected_alone() {
    let good = r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"ok","startTimeUnixNano":"1","endTimeUnixNano":"2","status":{"code":2}}"#;
    for (bad, want) in [
        (
            r#"{"traceId":"5b8efff798038103d269b633813fc60","spanId":"eee19b7ec3c1b174","name":"odd trace id"}"#,
            DecodeErrorKind::BadTraceId,
        ),
        (
            r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b17","name":"odd span id"}"#,
            DecodeErrorKind::BadSpanId,
        ),
        (
            r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"zz","name":"not hex"}"#,
            DecodeErrorKind::BadSpanId,
        ),
        (
            r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":{"a":1}}"#,
            DecodeErrorKind::MalformedSpan,
        ),
    ] {
        let json = format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"a"}}}}]}},"scopeSpans":[{{"spans":[{bad},{good}]}}]}}]}}"#
        );
        let d = decode(Bytes::from(json)).unwrap_or_else(|e| panic!("{want:?}: {e}"));
        assert_eq!(d.spans.len(), 1, "{want:?}");
        assert!(d.spans[0].1.error());
        assert_eq!(d.spans[0].1.service(), "a");
        assert_eq!(d.rejected.len(), 1, "{want:?}");
        assert_eq!(d.rejected[0].kind, want);
    }
    // An invalid resource loses its own spans only.
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":7}},"scopeSpans":[{{"spans":[{good}]}}]}},{{"scopeSpans":[{{"spans":[{good}]}}]}}]}}"#
    );
    let d = decode(Bytes::from(json)).expect("kept");
    assert_eq!((d.spans.len(), d.rejected.len()), (1, 1));
    assert_eq!(d.rejected[0].kind, DecodeErrorKind::MalformedResource);
}

/// OTLP JSON: a resource shared by many scopes is held once for the whole
/// message, not copied per scope.
#[test]
fn a_json_resource_is_held_once_per_message() {
    let mut rs = error_resource(8);
    rs.resource.as_mut().unwrap().attributes.push(
        opentelemetry_proto::tonic::common::v1::KeyValue {
            key: "big".into(),
            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(any_value::Value::StringValue("r".repeat(10_000))),
            }),
            ..Default::default()
        },
    );
    let scope = rs.scope_spans[0].clone();
    rs.scope_spans = (0..200u8)
        .map(|i| {
            let mut s = scope.clone();
            s.spans[0].span_id = vec![i + 1; 8];
            s
        })
        .collect();
    let json = encode(
        &TracesData {
            resource_spans: vec![rs],
        },
        Encoding::OtlpJson,
    );
    let d = decode(Bytes::from(json)).expect("json");
    assert_eq!(d.spans.len(), 200);
    let first = d.spans[0].1.scope.resource();
    assert!(first.len() > 10_000);
    for (_, s) in &d.spans {
        assert_eq!(s.scope.resource().as_ptr(), first.as_ptr(), "one copy");
    }
}

/// Found by the fuzz twin (tests/decode_fuzz.rs): a double attribute came
/// back from JSON one unit in the last place off — serde_json's default
/// float parser is not correctly rounded, so `3835778122.5172715` read as
/// `3835778122.517271`. With `float_roundtrip` every double serde_json
/// writes reads back the same, in OTLP JSON input and in a protobuf span
/// leaving as JSON.
#[test]
fn a_double_attribute_survives_json_exactly() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    let value = 3_835_778_122.517_271_5_f64;
    let json = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x","attributes":[{{"key":"d","value":{{"doubleValue":{value}}}}}]}}]}}]}}]}}"#
    );
    let d = decode(Bytes::from(json)).expect("json");
    assert_eq!(
        d.spans[0].1.attribute("d"),
        Some(AttrValue::Double(value)),
        "JSON input"
    );
    let mut data = single(SpanSpec::new("a", "x", None, 0, 5), &[7; 16], &[1; 8]);
    data.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(KeyValue {
            key: "d".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::DoubleValue(value)),
            }),
            ..Default::default()
        });
    let spans: Vec<_> = decode(proto(&data))
        .expect("proto")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let (json, used) = encode_trace(&spans, &Annotation::none(), Encoding::OtlpJson);
    assert_eq!(used, Encoding::OtlpJson);
    let again = decode(Bytes::from(json)).expect("output decodes");
    assert_eq!(
        again.spans[0].1.attribute("d"),
        Some(AttrValue::Double(value)),
        "protobuf span leaving as JSON"
    );
}

/// Found by the `protobuf` fuzz target: a protobuf span in a JSON trace
/// whose double attribute was NaN left as JSON with the value `null`, which
/// reads back as no value. (OTLP JSON as `opentelemetry-proto` writes it has
/// no NaN or infinity.) Such a span, resource or scope now leaves as
/// protobuf, with the value as it came.
#[test]
fn a_double_that_json_cannot_carry_leaves_as_protobuf() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
    let double = |key: &str, d: f64| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(d)),
        }),
        ..Default::default()
    };
    let in_array = |key: &str, d: f64| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![double("", d).value.unwrap()],
            })),
        }),
        ..Default::default()
    };
    for (place, value) in [
        ("span", f64::NAN),
        ("span", f64::INFINITY),
        ("array", f64::NEG_INFINITY),
        ("resource", f64::NAN),
        ("scope", f64::INFINITY),
        ("span", 1.5),
    ] {
        let mut data = single(SpanSpec::new("a", "x", None, 0, 5), &[7; 16], &[1; 8]);
        let rs = &mut data.resource_spans[0];
        match place {
            "span" => rs.scope_spans[0].spans[0]
                .attributes
                .push(double("d", value)),
            "array" => rs.scope_spans[0].spans[0]
                .attributes
                .push(in_array("d", value)),
            "resource" => rs
                .resource
                .as_mut()
                .unwrap()
                .attributes
                .push(double("d", value)),
            _ => rs.scope_spans[0]
                .scope
                .as_mut()
                .unwrap()
                .attributes
                .push(double("d", value)),
        }
        let spans: Vec<_> = decode(proto(&data))
            .expect("proto")
            .spans
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        let (out, used) = encode_trace(&spans, &Annotation::none(), Encoding::OtlpJson);
        let want = if value.is_finite() {
            Encoding::OtlpJson
        } else {
            Encoding::OtlpProto
        };
        assert_eq!(used, want, "{place} {value}");
        let again = decode(Bytes::from(out)).expect("output decodes");
        let attr = match place {
            "span" => again.spans[0].1.attribute("d"),
            "resource" => again.spans[0].1.resource_attribute("d"),
            "scope" => again.spans[0].1.attribute("d"),
            _ => continue,
        };
        match attr {
            Some(AttrValue::Double(d)) => {
                assert!(
                    d == value || (d.is_nan() && value.is_nan()),
                    "{place} {value}: {d}"
                )
            }
            other => panic!("{place} {value}: {other:?}"),
        }
    }
}
