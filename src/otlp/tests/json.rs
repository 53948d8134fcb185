//! OTLP JSON input: the same spans as protobuf, the Collector's form, bad
//! spans rejected alone, a shared resource held once.

use super::*;

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
