//! Attributes encoded in place: read by prost as the same `KeyValue`s,
//! written again byte for byte as prost writes them (prost leaves out
//! empty fields, which tailgate writes), whatever the lengths (varints of
//! one, two and three bytes); appended to chosen spans only.

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use proptest::prelude::*;

use super::*;
use crate::otlp::annotate::append_to_spans;

#[derive(Debug, Clone)]
enum Attr {
    Str(String, String),
    Double(String, f64),
    Strings(String, Vec<String>),
}

fn text() -> impl Strategy<Value = String> {
    // Up to 20 000 characters: lengths whose varints take one to three bytes.
    prop_oneof![".{0,20}", "[a-z]{100,300}", "[a-z]{16000,20000}"]
}

fn attr() -> impl Strategy<Value = Attr> {
    prop_oneof![
        (text(), text()).prop_map(|(k, v)| Attr::Str(k, v)),
        (text(), any::<f64>()).prop_map(|(k, v)| Attr::Double(k, v)),
        (text(), prop::collection::vec(text(), 0..4)).prop_map(|(k, v)| Attr::Strings(k, v)),
    ]
}

fn as_prost(a: &Attr) -> KeyValue {
    use any_value::Value;
    let (key, value) = match a {
        Attr::Str(k, v) => (k, Value::StringValue(v.clone())),
        Attr::Double(k, v) => (k, Value::DoubleValue(*v)),
        Attr::Strings(k, v) => (
            k,
            Value::ArrayValue(ArrayValue {
                values: v
                    .iter()
                    .map(|s| AnyValue {
                        value: Some(Value::StringValue(s.clone())),
                    })
                    .collect(),
            }),
        ),
    };
    KeyValue {
        key: key.clone(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn attributes_are_what_prost_writes(attrs in prop::collection::vec(attr(), 0..5)) {
        let mut ours = Attributes::new();
        for a in &attrs {
            match a {
                Attr::Str(k, v) => ours.string(k, v),
                Attr::Double(k, v) => ours.double(k, *v),
                Attr::Strings(k, v) => ours.strings(k, v.iter().map(String::as_str)),
            };
        }
        let theirs = Span {
            attributes: attrs.iter().map(as_prost).collect(),
            ..Span::default()
        }
        .encode_to_vec();
        let read = Span::decode(ours.as_bytes()).expect("prost reads them");
        prop_assert_eq!(read.encode_to_vec(), theirs);
    }
}

/// Only the chosen spans change; each keeps its bytes as a prefix, its
/// name and its scope; an index past the end is ignored.
#[test]
fn only_the_chosen_spans_get_their_attributes() {
    let t = shop();
    let mut spans: Vec<SpanRecord> = t
        .messages
        .iter()
        .flat_map(|m| decode(proto(m)).expect("valid").spans)
        .map(|(_, s)| s)
        .collect();
    let before = spans.clone();
    let mut a = Attributes::new();
    a.string("k", "v");
    let mut b = Attributes::new();
    b.double("d", 1.5);
    append_to_spans(
        &mut spans,
        &[(1, a.clone()), (4, b.clone()), (99, a.clone())],
    );
    for (i, (s, o)) in spans.iter().zip(&before).enumerate() {
        assert_eq!(s.name(), o.name());
        assert_eq!(s.scope.resource(), o.scope.resource());
        assert_eq!(s.scope.scope(), o.scope.scope());
        let extra = match i {
            1 => a.as_bytes(),
            4 => b.as_bytes(),
            _ => &[][..],
        };
        assert_eq!(
            s.encoded(),
            [o.encoded(), extra].concat().as_slice(),
            "span {i}"
        );
    }
}
