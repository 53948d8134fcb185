//! OTLP JSON: each resource, scope and span parsed on its own, in every
//! form the Collector's own reader accepts ([`forms`]), into the
//! `opentelemetry-proto` types, and re-encoded as protobuf once, then read
//! by the same code as protobuf input.

mod forms;
#[cfg(test)]
mod tests;

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
/// own, so one that is invalid is skipped alone. Field names in camelCase
/// or snake_case, `null` for an absent list or string, as the Collector
/// reads them.
#[derive(serde::Deserialize)]
struct JsonTracesData<'a> {
    #[serde(
        rename = "resourceSpans",
        alias = "resource_spans",
        default,
        borrow,
        deserialize_with = "list"
    )]
    resource_spans: Vec<JsonResourceSpans<'a>>,
}

#[derive(serde::Deserialize)]
struct JsonResourceSpans<'a> {
    #[serde(default, borrow)]
    resource: Option<&'a RawValue>,
    #[serde(
        rename = "scopeSpans",
        alias = "scope_spans",
        default,
        borrow,
        deserialize_with = "list"
    )]
    scope_spans: Vec<JsonScopeSpans<'a>>,
    /// Read where `scopeSpans` are absent (the Collector's migration of
    /// the field's former number).
    #[serde(
        rename = "deprecatedScopeSpans",
        alias = "deprecated_scope_spans",
        default,
        borrow,
        deserialize_with = "list"
    )]
    deprecated_scope_spans: Vec<JsonScopeSpans<'a>>,
    #[serde(
        rename = "schemaUrl",
        alias = "schema_url",
        default,
        deserialize_with = "text"
    )]
    schema_url: String,
}

#[derive(serde::Deserialize)]
struct JsonScopeSpans<'a> {
    #[serde(default, borrow)]
    scope: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "list")]
    spans: Vec<&'a RawValue>,
    #[serde(
        rename = "schemaUrl",
        alias = "schema_url",
        default,
        deserialize_with = "text"
    )]
    schema_url: String,
}

/// A list, `null` for an empty one.
fn list<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(<Option<Vec<T>> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}

/// A string, `null` for an empty one.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(<Option<String> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
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
    let resource_of =
        |raw: &RawValue| serde_json::from_str::<forms::JResource>(raw.get()).map(Resource::from);
    let scope_of = |raw: &RawValue| {
        serde_json::from_str::<forms::JScope>(raw.get()).map(InstrumentationScope::from)
    };
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
        let resource = match rs.resource.map(resource_of) {
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
        let scope_spans = if rs.scope_spans.is_empty() {
            &rs.deprecated_scope_spans
        } else {
            &rs.scope_spans
        };
        for ss in scope_spans {
            let scope = match ss.scope.map(scope_of) {
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
                match serde_json::from_str::<forms::JSpan>(raw.get()).map(Span::from) {
                    Ok(s) => spans.push((scopes.len() - 1, append(&mut buf, &s.encode_to_vec()))),
                    Err(e) => out.rejected.push(json_span_error(raw.get(), &e)),
                }
            }
        }
    }
    let buf = Bytes::from(buf);
    let part = |(start, end): Range| &buf[start..end];
    let mut shared: Vec<Arc<Scope>> = Vec::with_capacity(scopes.len());
    // A resource's scopes follow one another: its service is read once.
    let mut service: Option<(Range, &[u8])> = None;
    for [resource, resource_schema, scope, scope_schema] in &scopes {
        let name = match service {
            Some((r, name)) if r == *resource => name,
            _ => service_name(part(*resource)).unwrap_or_default(),
        };
        service = Some((*resource, name));
        let made = Scope::in_message_after(
            &buf,
            [
                part(*resource),
                part(*resource_schema),
                part(*scope),
                part(*scope_schema),
                name,
            ],
            shared.last(),
        );
        shared.push(Arc::new(made));
    }
    for (scope, (start, end)) in spans {
        match span(&buf, &buf[start..end], &shared[scope]) {
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
    // Either spelling of the field, as the Collector reads both.
    let field = |camel: &str, snake: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(camel).or_else(|| v.get(snake)))
    };
    let bad_id = |v: Option<&serde_json::Value>, len: usize| {
        bad_hex(v)
            || v.is_some_and(|v| {
                !v.is_string() || v.as_str().is_some_and(|s| !s.is_empty() && s.len() != len)
            })
    };
    let kind = if bad_id(field("traceId", "trace_id"), 32) {
        DecodeErrorKind::BadTraceId
    } else if bad_id(field("spanId", "span_id"), 16)
        || bad_id(field("parentSpanId", "parent_span_id"), 16)
    {
        DecodeErrorKind::BadSpanId
    } else {
        DecodeErrorKind::MalformedSpan
    };
    err(kind, format!("an invalid OTLP JSON span: {e}"))
}
