//! Protobuf decoding: span records keep their fields and bytes, several
//! traces and resources in one message, scopes pointing into the message.

use super::*;

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
        let span =
            opentelemetry_proto::tonic::trace::v1::Span::decode(s.encoded()).expect("span bytes");
        assert_eq!(span.span_id, s.span_id.to_vec());
        assert_eq!(span.name, s.name());
        assert_eq!(span.start_time_unix_nano, s.start_ns);
        assert_eq!(span.end_time_unix_nano, s.end_ns);
    }
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

#[test]
fn a_span_under_a_scope_that_holds_copies_reads_its_own_bytes() {
    let one = crate::otlp::test_spans(
        TraceId([7; 16]),
        &[crate::workload::SpanSpec::new("a", "root", None, 0, 10)],
    );
    let encoded = one[0].encoded().to_vec();
    let mut bytes = b"resource|".to_vec();
    bytes.extend_from_slice(&encoded);
    let message = Bytes::from(bytes);
    let span_bytes = &message[9..];
    // A part from elsewhere: the scope's buffer is a copy.
    let elsewhere = b"other".to_vec();
    let scope = std::sync::Arc::new(Scope::in_message(
        &message,
        [&message[0..8], b"", &elsewhere, b"", b""],
    ));
    let (id, record) = crate::otlp::decode::span(&message, span_bytes, &scope)
        .expect("a span of the message reads under a copied scope");
    assert_eq!(id, TraceId([7; 16]));
    assert_eq!(
        record.encoded(),
        encoded.as_slice(),
        "its own bytes, not empty"
    );
    assert_eq!(record.name(), "root");
    assert_eq!(record.scope.scope(), b"other");
}
