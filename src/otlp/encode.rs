//! Encoding of kept spans: one `TracesData` per trace, spans grouped back
//! under their resource and scope, each span annotated with the rule that kept
//! it and its adjusted count.
//!
//! In protobuf the annotation is appended to the span's bytes as two more
//! `attributes` entries (field 9): a repeated field may appear anywhere in a
//! message, so the span is re-emitted without a decode/encode round trip.

use prost::Message as _;

use super::wire::{len_field_size, put_len, put_tag, put_varint, WireType};
use super::Attributes;
use super::{Encoding, Part, SpanRecord};

/// Attribute naming the rule that kept a span.
pub const RULE_ATTRIBUTE: &str = "tailgate.rule";
/// Attribute carrying the span's adjusted count, 1 / the probability it was
/// kept with, head sampling included: how many spans like it this one
/// stands for (see `otlp::counting`).
pub const ADJUSTED_COUNT_ATTRIBUTE: &str = "tailgate.adjusted_count";

/// The attributes added to every kept span of a trace, pre-encoded once per
/// decision as `Span.attributes` entries.
#[derive(Debug, Clone)]
pub struct Annotation {
    /// Encoded `KeyValue` fields (field 9 of `Span`), appended to each span.
    encoded: Vec<u8>,
}

impl Annotation {
    /// No attributes: for spans that carry theirs already (output re-split).
    pub fn none() -> Self {
        Self {
            encoded: Vec::new(),
        }
    }

    pub fn new(rule: &str, adjusted_count: f64) -> Self {
        let mut attributes = Attributes::new();
        attributes
            .string(RULE_ATTRIBUTE, rule)
            .double(ADJUSTED_COUNT_ATTRIBUTE, adjusted_count);
        Self::from_attributes(attributes)
    }

    /// Exactly these entries.
    pub fn from_attributes(attributes: Attributes) -> Self {
        Self {
            encoded: attributes.into_bytes(),
        }
    }
}

/// Spans grouped by resource, then by scope, in first-seen order.
type Groups<'a> = Vec<(&'a SpanRecord, Vec<(&'a SpanRecord, Vec<&'a SpanRecord>)>)>;

fn group<'a>(spans: impl IntoIterator<Item = &'a SpanRecord>) -> Groups<'a> {
    let mut groups: Groups<'a> = Vec::new();
    for s in spans {
        let sc = &s.scope;
        let res = match groups.iter_mut().find(|(r, _)| {
            r.scope.resource() == sc.resource()
                && r.scope.part(Part::ResourceSchemaUrl) == sc.part(Part::ResourceSchemaUrl)
        }) {
            Some(r) => r,
            None => {
                groups.push((s, Vec::new()));
                groups.last_mut().expect("just pushed")
            }
        };
        match res.1.iter_mut().find(|(f, _)| {
            f.scope.scope() == sc.scope()
                && f.scope.part(Part::ScopeSchemaUrl) == sc.part(Part::ScopeSchemaUrl)
        }) {
            Some(scope) => scope.1.push(s),
            None => res.1.push((s, vec![s])),
        }
    }
    groups
}

/// Encodes the kept spans of one trace in `encoding`, and says which encoding
/// was used: a trace whose spans cannot all be represented as JSON (protobuf
/// spans mixed into a JSON trace with invalid UTF-8, say, or with a double
/// attribute that is NaN or infinite) leaves as protobuf.
pub fn encode_trace<'a>(
    spans: impl IntoIterator<Item = &'a SpanRecord>,
    annotation: &Annotation,
    encoding: Encoding,
) -> (Vec<u8>, Encoding) {
    let groups = group(spans);
    if encoding == Encoding::OtlpJson {
        if let Some(json) = encode_json(&groups, annotation) {
            return (json, Encoding::OtlpJson);
        }
    }
    (encode_proto(&groups, annotation), Encoding::OtlpProto)
}

/// One output message of a kept trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMessage {
    pub payload: Vec<u8>,
    /// The encoding used (see [`encode_trace`]).
    pub encoding: Encoding,
    /// Spans it carries.
    pub spans: usize,
}

/// A kept trace as output messages of at most a given size, and the spans
/// that fit no message even alone with their resource and scope.
#[derive(Debug, Default)]
pub struct Split<'a> {
    pub messages: Vec<EncodedMessage>,
    pub oversized: Vec<&'a SpanRecord>,
}

/// Encodes the kept spans of one trace as messages of at most `limit` bytes
/// each, every one a valid `TracesData` with the resources and scopes of its
/// spans. A trace that fits is one message, encoded once; a larger one is
/// packed resource by resource into messages estimated to fit, and any that
/// still does not is halved until it does. A span that does not fit even
/// alone is returned in [`Split::oversized`].
pub fn encode_within<'a>(
    spans: &'a [SpanRecord],
    annotation: &Annotation,
    encoding: Encoding,
    limit: usize,
) -> Split<'a> {
    let mut out = Split::default();
    if spans.is_empty() {
        return out;
    }
    let (payload, used) = encode_trace(spans, annotation, encoding);
    if payload.len() <= limit {
        out.messages.push(EncodedMessage {
            payload,
            encoding: used,
            spans: spans.len(),
        });
        return out;
    }
    let groups = group(spans);
    // JSON is larger than the protobuf sizes the packing adds up.
    let ratio = match used {
        Encoding::OtlpProto => 1.0,
        Encoding::OtlpJson => payload.len() as f64 / encode_proto(&groups, annotation).len() as f64,
    };
    let target = (limit as f64 * 0.9 / ratio.max(1.0)) as usize;
    let ann = annotation.encoded.len();
    let framing = |part: &[u8]| {
        if part.is_empty() {
            0
        } else {
            len_field_size(part.len())
        }
    };
    let mut chunks: Vec<Vec<&SpanRecord>> = Vec::new();
    let mut chunk: Vec<&SpanRecord> = Vec::new();
    let mut size = 0;
    for (first, scopes) in &groups {
        let resource = 8
            + framing(first.scope.resource())
            + framing(first.scope.part(Part::ResourceSchemaUrl));
        let mut resource_in_chunk = false;
        for (f, scope_spans) in scopes {
            let scope = 8 + framing(f.scope.scope()) + framing(f.scope.part(Part::ScopeSchemaUrl));
            let mut scope_in_chunk = false;
            for s in scope_spans {
                let cost = len_field_size(s.encoded().len() + ann);
                let extra = |r: bool, sc: bool| {
                    if !r {
                        resource + scope
                    } else if !sc {
                        scope
                    } else {
                        0
                    }
                };
                if !chunk.is_empty()
                    && size + cost + extra(resource_in_chunk, scope_in_chunk) > target
                {
                    chunks.push(std::mem::take(&mut chunk));
                    size = 0;
                    resource_in_chunk = false;
                    scope_in_chunk = false;
                }
                size += cost + extra(resource_in_chunk, scope_in_chunk);
                resource_in_chunk = true;
                scope_in_chunk = true;
                chunk.push(s);
            }
        }
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    for chunk in chunks {
        fit(&chunk, annotation, encoding, limit, &mut out);
    }
    out
}

/// Encodes `spans` as one message if it fits `limit`, else in halves.
fn fit<'a>(
    spans: &[&'a SpanRecord],
    annotation: &Annotation,
    encoding: Encoding,
    limit: usize,
    out: &mut Split<'a>,
) {
    let (payload, used) = encode_trace(spans.iter().copied(), annotation, encoding);
    if payload.len() <= limit {
        out.messages.push(EncodedMessage {
            payload,
            encoding: used,
            spans: spans.len(),
        });
    } else if let [one] = spans {
        out.oversized.push(one);
    } else {
        let (a, b) = spans.split_at(spans.len() / 2);
        fit(a, annotation, encoding, limit, out);
        fit(b, annotation, encoding, limit, out);
    }
}

fn encode_proto(groups: &Groups<'_>, annotation: &Annotation) -> Vec<u8> {
    let ann = annotation.encoded.len();
    // Sizes first, so the output is written in one allocation.
    let scope_size = |first: &SpanRecord, spans: &[&SpanRecord]| {
        let sc = &first.scope;
        let mut n = 0;
        if !sc.scope().is_empty() {
            n += len_field_size(sc.scope().len());
        }
        for s in spans {
            n += len_field_size(s.encoded().len() + ann);
        }
        if !sc.part(Part::ScopeSchemaUrl).is_empty() {
            n += len_field_size(sc.part(Part::ScopeSchemaUrl).len());
        }
        n
    };
    let resource_size = |first: &SpanRecord, scopes: &[(&SpanRecord, Vec<&SpanRecord>)]| {
        let sc = &first.scope;
        let mut n = 0;
        if !sc.resource().is_empty() {
            n += len_field_size(sc.resource().len());
        }
        for (f, spans) in scopes {
            n += len_field_size(scope_size(f, spans));
        }
        if !sc.part(Part::ResourceSchemaUrl).is_empty() {
            n += len_field_size(sc.part(Part::ResourceSchemaUrl).len());
        }
        n
    };
    let total: usize = groups
        .iter()
        .map(|(f, s)| len_field_size(resource_size(f, s)))
        .sum();
    let mut out = Vec::with_capacity(total);
    for (first, scopes) in groups {
        put_tag(&mut out, 1, WireType::Len);
        put_varint(&mut out, resource_size(first, scopes) as u64);
        if !first.scope.resource().is_empty() {
            put_len(&mut out, 1, first.scope.resource());
        }
        for (f, spans) in scopes {
            put_tag(&mut out, 2, WireType::Len);
            put_varint(&mut out, scope_size(f, spans) as u64);
            if !f.scope.scope().is_empty() {
                put_len(&mut out, 1, f.scope.scope());
            }
            for s in spans {
                put_tag(&mut out, 2, WireType::Len);
                put_varint(&mut out, (s.encoded().len() + ann) as u64);
                out.extend_from_slice(s.encoded());
                out.extend_from_slice(&annotation.encoded);
            }
            if !f.scope.part(Part::ScopeSchemaUrl).is_empty() {
                put_len(&mut out, 3, f.scope.part(Part::ScopeSchemaUrl));
            }
        }
        if !first.scope.part(Part::ResourceSchemaUrl).is_empty() {
            put_len(&mut out, 3, first.scope.part(Part::ResourceSchemaUrl));
        }
    }
    debug_assert_eq!(out.len(), total);
    out
}

fn encode_json(groups: &Groups<'_>, annotation: &Annotation) -> Option<Vec<u8>> {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
    let mut resource_spans = Vec::with_capacity(groups.len());
    for (first, scopes) in groups {
        let mut scope_spans = Vec::with_capacity(scopes.len());
        for (f, spans) in scopes {
            let mut out = Vec::with_capacity(spans.len());
            for s in spans {
                let mut bytes = Vec::with_capacity(s.encoded().len() + annotation.encoded.len());
                bytes.extend_from_slice(s.encoded());
                bytes.extend_from_slice(&annotation.encoded);
                let span = Span::decode(bytes.as_slice()).ok()?;
                let carried = json_carries(&span.attributes)
                    && span.events.iter().all(|e| json_carries(&e.attributes))
                    && span.links.iter().all(|l| json_carries(&l.attributes))
                    && span.links.iter().all(link_ids_in_json);
                if !carried {
                    return None;
                }
                out.push(span);
            }
            scope_spans.push(ScopeSpans {
                scope: match f.scope.scope().is_empty() {
                    true => None,
                    false => Some(
                        InstrumentationScope::decode(f.scope.scope())
                            .ok()
                            .filter(|s| json_carries(&s.attributes))?,
                    ),
                },
                schema_url: String::from_utf8(f.scope.part(Part::ScopeSchemaUrl).to_vec()).ok()?,
                spans: out,
            });
        }
        resource_spans.push(ResourceSpans {
            resource: match first.scope.resource().is_empty() {
                true => None,
                false => Some(
                    Resource::decode(first.scope.resource())
                        .ok()
                        .filter(|r| json_carries(&r.attributes))?,
                ),
            },
            schema_url: String::from_utf8(first.scope.part(Part::ResourceSchemaUrl).to_vec())
                .ok()?,
            scope_spans,
        });
    }
    serde_json::to_vec(&TracesData { resource_spans }).ok()
}

/// Whether a link's ids can be written as OTLP JSON that the Collector
/// reads: hex of their exact length (16 and 8 bytes) or empty. The
/// protobuf reader does not check links' ids; a link with another length
/// would make the JSON output unreadable, so its span leaves as protobuf.
fn link_ids_in_json(link: &opentelemetry_proto::tonic::trace::v1::span::Link) -> bool {
    matches!(link.trace_id.len(), 0 | 16) && matches!(link.span_id.len(), 0 | 8)
}

/// Whether OTLP JSON carries these attributes' values unchanged. A double
/// that is not finite (NaN, ±Infinity) is not: `opentelemetry-proto` writes
/// it as `null`, which reads back as no value, so a span, scope or resource
/// holding one leaves as protobuf.
fn json_carries(attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> bool {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
    fn carried(v: &AnyValue) -> bool {
        match &v.value {
            Some(Value::DoubleValue(d)) => d.is_finite(),
            Some(Value::ArrayValue(a)) => a.values.iter().all(carried),
            Some(Value::KvlistValue(l)) => json_carries(&l.values),
            _ => true,
        }
    }
    attributes
        .iter()
        .all(|kv| kv.value.as_ref().is_none_or(carried))
}
