//! Encoding kept spans: regrouped under their resource and scope and
//! annotated, read back as they were written, doubles exact (or, when JSON
//! cannot carry them, left as protobuf).

use super::*;

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

/// A link whose ids are not of their length (the protobuf reader does not
/// check links) cannot be written as JSON the Collector reads — its reader
/// rejects such an id, and with it the whole message — so its span leaves
/// as protobuf, unchanged. (Found when the JSON reader came to reject what
/// the Collector's rejects.)
#[test]
fn a_link_id_json_cannot_carry_leaves_as_protobuf() {
    use opentelemetry_proto::tonic::trace::v1::span::Link;
    for (trace_id, span_id, json) in [
        (vec![1; 25], vec![2; 8], false),
        (vec![1; 16], vec![2; 3], false),
        (vec![1; 16], vec![2; 8], true),
        (Vec::new(), Vec::new(), true),
    ] {
        let mut data = single(SpanSpec::new("a", "x", None, 0, 5), &[7; 16], &[1; 8]);
        data.resource_spans[0].scope_spans[0].spans[0]
            .links
            .push(Link {
                trace_id,
                span_id,
                ..Default::default()
            });
        let spans: Vec<_> = decode(proto(&data))
            .expect("proto")
            .spans
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        let (out, used) = encode_trace(&spans, &Annotation::none(), Encoding::OtlpJson);
        let want = if json {
            Encoding::OtlpJson
        } else {
            Encoding::OtlpProto
        };
        assert_eq!(used, want);
        let again = decode(Bytes::from(out)).expect("output decodes");
        assert!(again.rejected.is_empty());
        assert_eq!(again.spans[0].1.encoded(), spans[0].encoded());
    }
}
