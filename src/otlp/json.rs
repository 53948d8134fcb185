//! OTLP JSON: each resource, scope and span parsed with the
//! `opentelemetry-proto` types on its own and re-encoded as protobuf once,
//! then read by the same code as protobuf input.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use serde_json::value::RawValue;

use super::decode::{
    err, nothing_valid, service_name, span, DecodeError, DecodeErrorKind, Decoded,
};
use super::{Encoding, Scope};

/// The envelope of an OTLP JSON `TracesData`, read without its contents:
/// resources, scopes and spans stay raw JSON until each is decoded on its
/// own, so one that is invalid is skipped alone.
#[derive(serde::Deserialize)]
struct JsonTracesData<'a> {
    #[serde(rename = "resourceSpans", default, borrow)]
    resource_spans: Vec<JsonResourceSpans<'a>>,
}

#[derive(serde::Deserialize)]
struct JsonResourceSpans<'a> {
    #[serde(default, borrow)]
    resource: Option<&'a RawValue>,
    #[serde(rename = "scopeSpans", default, borrow)]
    scope_spans: Vec<JsonScopeSpans<'a>>,
    #[serde(rename = "schemaUrl", default)]
    schema_url: String,
}

#[derive(serde::Deserialize)]
struct JsonScopeSpans<'a> {
    #[serde(default, borrow)]
    scope: Option<&'a RawValue>,
    #[serde(default, borrow)]
    spans: Vec<&'a RawValue>,
    #[serde(rename = "schemaUrl", default)]
    schema_url: String,
}

/// A byte range in the buffer a JSON message is re-encoded into.
type Range = (usize, usize);

/// Appends `bytes` to `buf` and returns where they are.
fn append(buf: &mut Vec<u8>, bytes: &[u8]) -> Range {
    let at = buf.len();
    buf.extend_from_slice(bytes);
    (at, buf.len())
}

/// Decodes OTLP JSON: each resource, scope and span is parsed with the
/// `opentelemetry-proto` types on its own and re-encoded as protobuf, once,
/// into one buffer for the whole message, so a resource shared by many
/// scopes is held once and the spans are read by the same code as protobuf
/// input. An invalid span (an odd-length hex id, a value of the wrong type)
/// is skipped alone, an invalid resource or scope with its spans.
pub fn decode_json(payload: &[u8]) -> Result<Decoded, DecodeError> {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;
    let text = std::str::from_utf8(payload).map_err(|e| {
        err(
            DecodeErrorKind::NotOtlp,
            format!("invalid OTLP JSON: not UTF-8: {e}"),
        )
    })?;
    let data: JsonTracesData<'_> = serde_json::from_str(text)
        .map_err(|e| err(DecodeErrorKind::NotOtlp, format!("invalid OTLP JSON: {e}")))?;
    let mut out = Decoded {
        encoding: Encoding::OtlpJson,
        ..Decoded::default()
    };
    // First everything re-encoded into one buffer, then records referring into it.
    let mut buf = Vec::with_capacity(payload.len() / 2);
    // Per scope: resource, resource schema, scope, scope schema.
    let mut scopes: Vec<[Range; 4]> = Vec::new();
    // Per span: its scope and its bytes.
    let mut spans: Vec<(usize, Range)> = Vec::new();
    for rs in &data.resource_spans {
        let resource = match rs
            .resource
            .map(|r| serde_json::from_str::<Resource>(r.get()))
        {
            None => (0, 0),
            Some(Ok(r)) => append(&mut buf, &r.encode_to_vec()),
            Some(Err(e)) => {
                out.rejected.push(err(
                    DecodeErrorKind::MalformedResource,
                    format!("an invalid resource ({e}); its spans are skipped"),
                ));
                continue;
            }
        };
        let resource_schema = append(&mut buf, rs.schema_url.as_bytes());
        for ss in &rs.scope_spans {
            let scope = match ss
                .scope
                .map(|s| serde_json::from_str::<InstrumentationScope>(s.get()))
            {
                None => (0, 0),
                Some(Ok(s)) => append(&mut buf, &s.encode_to_vec()),
                Some(Err(e)) => {
                    out.rejected.push(err(
                        DecodeErrorKind::MalformedResource,
                        format!("an invalid instrumentation scope ({e}); its spans are skipped"),
                    ));
                    continue;
                }
            };
            let scope_schema = append(&mut buf, ss.schema_url.as_bytes());
            scopes.push([resource, resource_schema, scope, scope_schema]);
            for raw in &ss.spans {
                match serde_json::from_str::<Span>(raw.get()) {
                    Ok(s) => spans.push((scopes.len() - 1, append(&mut buf, &s.encode_to_vec()))),
                    Err(e) => out.rejected.push(json_span_error(raw.get(), &e)),
                }
            }
        }
    }
    // What stays alive is the allocation, capacity included.
    out.retained = buf.capacity();
    let buf = Bytes::from(buf);
    let part = |(start, end): Range| &buf[start..end];
    let shared: Vec<Arc<Scope>> = scopes
        .iter()
        .map(|[resource, resource_schema, scope, scope_schema]| {
            let resource = part(*resource);
            Arc::new(Scope::in_message(
                &buf,
                [
                    resource,
                    part(*resource_schema),
                    part(*scope),
                    part(*scope_schema),
                    service_name(resource).unwrap_or_default(),
                ],
            ))
        })
        .collect();
    for (scope, (start, end)) in spans {
        match span(buf.slice(start..end), &shared[scope]) {
            Ok(rec) => out.spans.push(rec),
            Err(e) => out.rejected.push(e),
        }
    }
    nothing_valid(out)
}

/// Why a JSON span could not be read, naming the id at fault where it is one.
fn json_span_error(raw: &str, e: &serde_json::Error) -> DecodeError {
    let bad_hex = |v: Option<&serde_json::Value>| {
        v.and_then(serde_json::Value::as_str)
            .is_some_and(|s| s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let value: Option<serde_json::Value> = serde_json::from_str(raw).ok();
    let field = |name: &str| value.as_ref().and_then(|v| v.get(name));
    let kind = if bad_hex(field("traceId")) {
        DecodeErrorKind::BadTraceId
    } else if bad_hex(field("spanId")) || bad_hex(field("parentSpanId")) {
        DecodeErrorKind::BadSpanId
    } else {
        DecodeErrorKind::MalformedSpan
    };
    err(kind, format!("an invalid OTLP JSON span: {e}"))
}
