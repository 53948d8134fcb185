//! Malformed input: a message that holds nothing valid is rejected with a
//! reason; a bad span, scope or resource inside an intact message is
//! rejected alone and the rest kept.

use super::*;

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

/// A span whose `attributes` field runs past the
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
