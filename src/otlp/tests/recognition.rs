//! Which encoding a message is in: protobuf whatever its second byte, JSON
//! after whitespace or a byte order mark.

use super::*;

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

/// The second byte of a protobuf `TracesData` is its
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
