//! Decoding of incoming messages into span records.
//!
//! Protobuf is read field by field from the message buffer (see [`super::wire`]);
//! each span keeps a zero-copy slice of it. OTLP JSON is parsed with the
//! `opentelemetry-proto` types and each span re-encoded once, then read by the
//! same code, so both encodings meet the same checks.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use thiserror::Error;

use super::wire::{offset_in, Fields, Value, WireError};
use super::{Encoding, Scope, SpanRecord, TraceId};

/// Why a message, or one span of it, was rejected. The `kind` is a bounded
/// metric label.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind}: {detail}")]
pub struct DecodeError {
    pub kind: DecodeErrorKind,
    pub detail: String,
}

/// Reasons for rejecting input, used as the `reason` label of
/// `tailgate_decode_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeErrorKind {
    /// The message has no payload.
    Empty,
    /// The payload is neither OTLP protobuf nor OTLP JSON.
    NotOtlp,
    /// A protobuf field runs past the end of the payload.
    Truncated,
    /// The payload is valid OTLP but holds no span.
    NoSpans,
    /// A span's trace id is not 16 bytes (or is all zero).
    BadTraceId,
    /// A span's span id is not 8 bytes (or its parent id is neither empty nor 8 bytes).
    BadSpanId,
    /// A span ends before it starts.
    EndBeforeStart,
}

impl DecodeErrorKind {
    pub const ALL: [DecodeErrorKind; 7] = [
        Self::Empty,
        Self::NotOtlp,
        Self::Truncated,
        Self::NoSpans,
        Self::BadTraceId,
        Self::BadSpanId,
        Self::EndBeforeStart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::NotOtlp => "not_otlp",
            Self::Truncated => "truncated",
            Self::NoSpans => "no_spans",
            Self::BadTraceId => "bad_trace_id",
            Self::BadSpanId => "bad_span_id",
            Self::EndBeforeStart => "end_before_start",
        }
    }
}

impl std::fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn err(kind: DecodeErrorKind, detail: impl Into<String>) -> DecodeError {
    DecodeError {
        kind,
        detail: detail.into(),
    }
}

impl From<WireError> for DecodeError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => err(DecodeErrorKind::Truncated, e.to_string()),
            WireError::Malformed(_) => err(DecodeErrorKind::NotOtlp, e.to_string()),
        }
    }
}

/// The spans of one message, each with its trace id, and the spans that were
/// skipped because they are invalid.
#[derive(Debug, Default)]
pub struct Decoded {
    pub encoding: Encoding,
    pub spans: Vec<(TraceId, SpanRecord)>,
    /// Invalid spans, skipped; the rest of the message is kept.
    pub rejected: Vec<DecodeError>,
}

/// Decodes one Kafka message payload. The encoding is recognised from the first
/// byte: a protobuf `TracesData` starts with field 1 (`0x0a`), OTLP JSON with `{`.
pub fn decode(payload: Bytes) -> Result<Decoded, DecodeError> {
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None if payload.is_empty() => Err(err(DecodeErrorKind::Empty, "message has no payload")),
        None => Err(err(DecodeErrorKind::NotOtlp, "payload is only whitespace")),
        Some(b'{') => decode_json(&payload),
        Some(_) => decode_proto(payload),
    }
}

/// Decodes a protobuf `TracesData`.
pub fn decode_proto(payload: Bytes) -> Result<Decoded, DecodeError> {
    let mut out = Decoded {
        encoding: Encoding::OtlpProto,
        ..Decoded::default()
    };
    // TracesData has one field, `resource_spans = 1` (tag 0x0a): anything
    // else in the first byte is not OTLP protobuf.
    if payload.first() != Some(&0x0a) {
        return Err(err(
            DecodeErrorKind::NotOtlp,
            format!("payload starts with byte {:#04x}, neither an OTLP protobuf TracesData (0x0a) nor OTLP JSON ('{{')", payload.first().copied().unwrap_or(0)),
        ));
    }
    let mut top = Fields::new(&payload);
    while let Some((field, value)) = top.next()? {
        match (field, value) {
            (1, Value::Len(rs)) => resource_spans(&payload, rs, &mut out)?,
            _ => {
                return Err(err(
                    DecodeErrorKind::NotOtlp,
                    format!("unexpected field {field} in TracesData"),
                ))
            }
        }
    }
    if out.spans.is_empty() && out.rejected.is_empty() {
        return Err(err(DecodeErrorKind::NoSpans, "TracesData holds no span"));
    }
    Ok(out)
}

fn resource_spans(payload: &Bytes, rs: &[u8], out: &mut Decoded) -> Result<(), DecodeError> {
    let slice = |s: &[u8]| payload.slice_ref(s);
    let mut resource = Bytes::new();
    let mut schema = Bytes::new();
    let mut service = Bytes::new();
    // Scope spans are read after the resource; the resource may come after them
    // on the wire, so remember where they are first.
    let mut scopes: Vec<&[u8]> = Vec::new();
    let mut f = Fields::new(rs);
    while let Some((field, value)) = f.next()? {
        match (field, value) {
            (1, Value::Len(r)) => {
                resource = slice(r);
                service = service_name(r).map(slice).unwrap_or_default();
            }
            (2, Value::Len(ss)) => scopes.push(ss),
            (3, Value::Len(s)) => schema = slice(s),
            _ => {}
        }
    }
    for ss in scopes {
        let mut scope = Bytes::new();
        let mut scope_schema = Bytes::new();
        let mut spans: Vec<&[u8]> = Vec::new();
        let mut f = Fields::new(ss);
        while let Some((field, value)) = f.next()? {
            match (field, value) {
                (1, Value::Len(s)) => scope = slice(s),
                (2, Value::Len(s)) => spans.push(s),
                (3, Value::Len(s)) => scope_schema = slice(s),
                _ => {}
            }
        }
        let shared = Arc::new(Scope::in_message(
            payload,
            [&resource, &schema, &scope, &scope_schema, &service],
        ));
        for s in spans {
            match span(slice(s), &shared) {
                Ok(Some(rec)) => out.spans.push(rec),
                Ok(None) => {}
                Err(e)
                    if matches!(
                        e.kind,
                        DecodeErrorKind::Truncated | DecodeErrorKind::NotOtlp
                    ) =>
                {
                    return Err(e)
                }
                Err(e) => out.rejected.push(e),
            }
        }
    }
    Ok(())
}

/// The `service.name` attribute's string value within an encoded `Resource`.
fn service_name(resource: &[u8]) -> Option<&[u8]> {
    let mut f = Fields::new(resource);
    while let Ok(Some((field, value))) = f.next() {
        if let (1, Value::Len(kv)) = (field, value) {
            let mut key = None;
            let mut val = None;
            let mut g = Fields::new(kv);
            while let Ok(Some((n, v))) = g.next() {
                match (n, v) {
                    (1, Value::Len(k)) => key = Some(k),
                    (2, Value::Len(any)) => val = Some(any),
                    _ => {}
                }
            }
            if key == Some(b"service.name".as_slice()) {
                let mut h = Fields::new(val?);
                while let Ok(Some((n, v))) = h.next() {
                    if let (1, Value::Len(s)) = (n, v) {
                        return Some(s);
                    }
                }
                return None;
            }
        }
    }
    None
}

/// Reads one encoded `Span`. `Ok(None)` is never returned today but keeps room
/// for spans that are valid and deliberately ignored.
fn span(encoded: Bytes, scope: &Arc<Scope>) -> Result<Option<(TraceId, SpanRecord)>, DecodeError> {
    let mut trace_id: Option<&[u8]> = None;
    let mut span_id: Option<&[u8]> = None;
    let mut parent: &[u8] = &[];
    let mut name_at = (0u32, 0u32);
    let mut kind = 0u8;
    let (mut start, mut end) = (0u64, 0u64);
    let mut status = 0u8;
    let mut f = Fields::new(&encoded);
    while let Some((field, value)) = f.next()? {
        match (field, value) {
            (1, Value::Len(b)) => trace_id = Some(b),
            (2, Value::Len(b)) => span_id = Some(b),
            (4, Value::Len(b)) => parent = b,
            (5, Value::Len(b)) => {
                name_at = (offset_in(&encoded, b) as u32, b.len() as u32);
            }
            (6, Value::Varint(k)) => kind = u8::try_from(k).unwrap_or(0),
            (7, Value::Fixed64(t)) => start = t,
            (8, Value::Fixed64(t)) => end = t,
            (15, Value::Len(s)) => status = status_code(s)?,
            _ => {}
        }
    }
    let trace_id: [u8; 16] = trace_id
        .and_then(|t| t.try_into().ok())
        .filter(|t| *t != [0u8; 16])
        .ok_or_else(|| {
            err(
                DecodeErrorKind::BadTraceId,
                format!(
                    "trace id of {} bytes, want 16 non-zero",
                    trace_id.map_or(0, <[u8]>::len)
                ),
            )
        })?;
    let span_id: [u8; 8] = span_id.and_then(|s| s.try_into().ok()).ok_or_else(|| {
        err(
            DecodeErrorKind::BadSpanId,
            format!(
                "span id of {} bytes, want 8",
                span_id.map_or(0, <[u8]>::len)
            ),
        )
    })?;
    let parent_span_id: [u8; 8] = match parent.len() {
        0 => [0; 8],
        _ => parent.try_into().map_err(|_| {
            err(
                DecodeErrorKind::BadSpanId,
                format!("parent span id of {} bytes, want 0 or 8", parent.len()),
            )
        })?,
    };
    if end < start {
        return Err(err(
            DecodeErrorKind::EndBeforeStart,
            format!(
                "span {} ends {} ns before it starts",
                hex::encode(span_id),
                start - end
            ),
        ));
    }
    Ok(Some((
        TraceId(trace_id),
        SpanRecord {
            encoded,
            scope: scope.clone(),
            span_id,
            parent_span_id,
            start_ns: start,
            end_ns: end,
            name_at,
            kind,
            status,
        },
    )))
}

/// `Status.code` (field 3); codes outside the enum read as UNSET.
fn status_code(status: &[u8]) -> Result<u8, DecodeError> {
    let mut f = Fields::new(status);
    let mut code = 0;
    while let Some((field, value)) = f.next()? {
        if let (3, Value::Varint(c)) = (field, value) {
            code = u8::try_from(c).ok().filter(|c| *c <= 2).unwrap_or(0);
        }
    }
    Ok(code)
}

/// Decodes OTLP JSON by parsing it into the generated types and re-encoding
/// each resource, scope and span once.
pub fn decode_json(payload: &[u8]) -> Result<Decoded, DecodeError> {
    use opentelemetry_proto::tonic::trace::v1::TracesData;
    let data: TracesData = serde_json::from_slice(payload)
        .map_err(|e| err(DecodeErrorKind::NotOtlp, format!("invalid OTLP JSON: {e}")))?;
    let mut out = Decoded {
        encoding: Encoding::OtlpJson,
        ..Decoded::default()
    };
    for rs in &data.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| Bytes::from(r.encode_to_vec()))
            .unwrap_or_default();
        let service = service_name(&resource)
            .map(|s| resource.slice_ref(s))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            let scope = ss
                .scope
                .as_ref()
                .map(|s| s.encode_to_vec())
                .unwrap_or_default();
            let shared = Arc::new(Scope::owned([
                &resource,
                rs.schema_url.as_bytes(),
                &scope,
                ss.schema_url.as_bytes(),
                &service,
            ]));
            for s in &ss.spans {
                match span(Bytes::from(s.encode_to_vec()), &shared) {
                    Ok(Some(rec)) => out.spans.push(rec),
                    Ok(None) => {}
                    Err(e) => out.rejected.push(e),
                }
            }
        }
    }
    if out.spans.is_empty() && out.rejected.is_empty() {
        return Err(err(DecodeErrorKind::NoSpans, "TracesData holds no span"));
    }
    Ok(out)
}
