//! Decoding of incoming messages into span records.
//!
//! Protobuf is read field by field from the message buffer (see [`super::wire`]);
//! each span is a zero-copy slice of it (until it is buffered: see
//! [`super::compact`]). OTLP JSON is parsed with the
//! `opentelemetry-proto` types and each span re-encoded once, then read by the
//! same code, so both encodings meet the same checks.

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

pub use super::json::decode_json;
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
    /// A span whose own frame is intact but whose fields cannot be read (a
    /// field running past the span's end, a JSON value of the wrong type):
    /// that span is skipped, its neighbours are kept.
    MalformedSpan,
    /// A `ResourceSpans` or `ScopeSpans` whose frame is intact but whose
    /// fields cannot be read: its spans are skipped, the rest of the message kept.
    MalformedResource,
}

impl DecodeErrorKind {
    pub const ALL: [DecodeErrorKind; 9] = [
        Self::Empty,
        Self::NotOtlp,
        Self::Truncated,
        Self::NoSpans,
        Self::BadTraceId,
        Self::BadSpanId,
        Self::EndBeforeStart,
        Self::MalformedSpan,
        Self::MalformedResource,
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
            Self::MalformedSpan => "malformed_span",
            Self::MalformedResource => "malformed_resource",
        }
    }
}

impl std::fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(super) fn err(kind: DecodeErrorKind, detail: impl Into<String>) -> DecodeError {
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

/// Decodes one Kafka message payload.
///
/// The encoding is recognised without guessing from bytes that both encodings
/// can start with: a protobuf `TracesData` always starts with `0x0a` (field 1,
/// `resource_spans`, length-delimited), and its second byte is the first
/// resource's length, which can be any byte — `{` (123) or a whitespace
/// byte among them. So `0x0a` means protobuf. OTLP JSON starts with `{`,
/// possibly after a UTF-8 byte order mark and JSON whitespace; since that
/// whitespace may be a newline (`0x0a`) too, a payload that starts with it,
/// is not valid protobuf and reads as JSON from its first `{` is decoded as
/// JSON.
pub fn decode(payload: Bytes) -> Result<Decoded, DecodeError> {
    match payload.first() {
        None => Err(err(DecodeErrorKind::Empty, "message has no payload")),
        Some(&TRACES_DATA_TAG) => match decode_proto(payload.clone()) {
            Ok(decoded) => Ok(decoded),
            Err(proto) => match json_start(&payload) {
                Some(at) => decode_json(&payload[at..]).map_err(|json| {
                    err(
                        json.kind,
                        format!(
                            "neither OTLP protobuf ({}) nor OTLP JSON ({})",
                            proto.detail, json.detail
                        ),
                    )
                }),
                None => Err(proto),
            },
        },
        Some(first) => match json_start(&payload) {
            Some(at) => decode_json(&payload[at..]),
            None => Err(err(
                DecodeErrorKind::NotOtlp,
                format!(
                    "payload starts with byte {first:#04x}, neither an OTLP protobuf TracesData (0x0a) nor OTLP JSON ('{{')"
                ),
            )),
        },
    }
}

/// The first byte of every protobuf `TracesData`: field 1, length-delimited.
const TRACES_DATA_TAG: u8 = 0x0a;

/// Where a JSON object starts in `payload`: after an optional UTF-8 byte
/// order mark and JSON's whitespace (space, tab, newline, carriage return).
fn json_start(payload: &[u8]) -> Option<usize> {
    const BOM: &[u8] = b"\xef\xbb\xbf";
    let skip = if payload.starts_with(BOM) {
        BOM.len()
    } else {
        0
    };
    let at = skip
        + payload[skip..]
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
    (payload[at] == b'{').then_some(at)
}

/// Decodes a protobuf `TracesData`.
///
/// A message whose own framing is broken (a resource running past its end,
/// a field other than `resource_spans`) is rejected whole. Inside an intact
/// frame, what is broken is skipped alone and counted in
/// [`Decoded::rejected`]: a `ResourceSpans` or `ScopeSpans` whose fields
/// cannot be read loses its spans, a span whose fields cannot be read is
/// skipped, and everything around them is kept.
pub fn decode_proto(payload: Bytes) -> Result<Decoded, DecodeError> {
    let mut out = Decoded {
        encoding: Encoding::OtlpProto,
        ..Decoded::default()
    };
    if payload.first() != Some(&TRACES_DATA_TAG) {
        return Err(err(
            DecodeErrorKind::NotOtlp,
            format!(
                "payload starts with byte {:#04x}, not an OTLP protobuf TracesData (0x0a)",
                payload.first().copied().unwrap_or(0)
            ),
        ));
    }
    let mut top = Fields::new(&payload);
    while let Some((field, value)) = top.next()? {
        match (field, value) {
            (1, Value::Len(rs)) => resource_spans(&payload, rs, &mut out),
            _ => {
                return Err(err(
                    DecodeErrorKind::NotOtlp,
                    format!("unexpected field {field} in TracesData"),
                ))
            }
        }
    }
    nothing_valid(out)
}

fn malformed_resource(what: &str, e: WireError) -> DecodeError {
    err(
        DecodeErrorKind::MalformedResource,
        format!("a {what} whose fields cannot be read ({e}); its spans are skipped"),
    )
}

fn resource_spans(payload: &Bytes, rs: &[u8], out: &mut Decoded) {
    let mut resource: &[u8] = &[];
    let mut schema: &[u8] = &[];
    // The resource may come after its scope spans on the wire: read once
    // for it (and to find a malformed field before any span is taken),
    // then again for the scope spans — no list of them is kept.
    let mut f = Fields::new(rs);
    loop {
        match f.next() {
            Ok(Some((1, Value::Len(r)))) => resource = r,
            Ok(Some((3, Value::Len(s)))) => schema = s,
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return out.rejected.push(malformed_resource("ResourceSpans", e)),
        }
    }
    let service = service_name(resource).unwrap_or_default();
    let mut previous = None;
    let mut f = Fields::new(rs);
    while let Ok(Some((field, value))) = f.next() {
        if let (2, Value::Len(ss)) = (field, value) {
            let resource = [resource, schema, service];
            scope_spans(payload, ss, resource, &mut previous, out);
        }
    }
}

/// The spans of one `ScopeSpans`, under `resource` (its encoding, schema
/// and service name); `previous` is the resource's scope before it, whose
/// parts it shares if they are the same.
fn scope_spans(
    payload: &Bytes,
    ss: &[u8],
    resource: [&[u8]; 3],
    previous: &mut Option<Arc<Scope>>,
    out: &mut Decoded,
) {
    let [resource, schema, service] = resource;
    let mut scope: &[u8] = &[];
    let mut scope_schema: &[u8] = &[];
    // As above: the scope may come after its spans.
    let mut f = Fields::new(ss);
    loop {
        match f.next() {
            Ok(Some((1, Value::Len(s)))) => scope = s,
            Ok(Some((3, Value::Len(s)))) => scope_schema = s,
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return out.rejected.push(malformed_resource("ScopeSpans", e)),
        }
    }
    let shared = Arc::new(Scope::in_message_after(
        payload,
        [resource, schema, scope, scope_schema, service],
        previous.as_ref(),
    ));
    *previous = Some(shared.clone());
    let mut f = Fields::new(ss);
    while let Ok(Some((field, value))) = f.next() {
        if let (2, Value::Len(s)) = (field, value) {
            match span(payload, s, &shared) {
                Ok(rec) => out.spans.push(rec),
                Err(e) => out.rejected.push(e),
            }
        }
    }
}

/// The `service.name` attribute's string value within an encoded `Resource`.
pub(super) fn service_name(resource: &[u8]) -> Option<&[u8]> {
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

/// Reads one encoded `Span`, a slice of `message` (which `scope` was made
/// from, with [`Scope::in_message`]); any problem rejects this span alone.
pub(super) fn span(
    message: &[u8],
    encoded: &[u8],
    scope: &Arc<Scope>,
) -> Result<(TraceId, SpanRecord), DecodeError> {
    let malformed = |e: WireError| {
        err(
            DecodeErrorKind::MalformedSpan,
            format!("a span whose fields cannot be read: {e}"),
        )
    };
    let mut trace_id: Option<&[u8]> = None;
    let mut span_id: Option<&[u8]> = None;
    let mut parent: &[u8] = &[];
    let mut name_at = (0u32, 0u32);
    let mut kind = 0u8;
    let (mut start, mut end) = (0u64, 0u64);
    let mut status = 0u8;
    let mut has_trace_state = false;
    let mut f = Fields::new(encoded);
    while let Some((field, value)) = f.next().map_err(malformed)? {
        match (field, value) {
            (1, Value::Len(b)) => trace_id = Some(b),
            (2, Value::Len(b)) => span_id = Some(b),
            (3, Value::Len(_)) => has_trace_state = true,
            (4, Value::Len(b)) => parent = b,
            (5, Value::Len(b)) => {
                name_at = (offset_in(encoded, b) as u32, b.len() as u32);
            }
            (6, Value::Varint(k)) => kind = u8::try_from(k).unwrap_or(0),
            (7, Value::Fixed64(t)) => start = t,
            (8, Value::Fixed64(t)) => end = t,
            (15, Value::Len(s)) => status = status_code(s).map_err(malformed)?,
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
    // Always there: the decoders read spans out of the message.
    let encoded_at = super::range_in(message, encoded).ok_or_else(|| {
        err(
            DecodeErrorKind::MalformedSpan,
            "a span outside its message".to_string(),
        )
    })?;
    Ok((
        TraceId(trace_id),
        SpanRecord {
            encoded_at,
            scope: scope.clone(),
            span_id,
            parent_span_id,
            start_ns: start,
            end_ns: end,
            name_at,
            kind,
            status,
            has_trace_state,
        },
    ))
}

/// `Status.code` (field 3); codes outside the enum read as UNSET.
fn status_code(status: &[u8]) -> Result<u8, WireError> {
    let mut f = Fields::new(status);
    let mut code = 0;
    while let Some((field, value)) = f.next()? {
        if let (3, Value::Varint(c)) = (field, value) {
            code = u8::try_from(c).ok().filter(|c| *c <= 2).unwrap_or(0);
        }
    }
    Ok(code)
}

/// A message without a valid span is rejected whole (and so dead-lettered,
/// and tried in the other encoding): for the first reason, if any was given.
pub(super) fn nothing_valid(out: Decoded) -> Result<Decoded, DecodeError> {
    if !out.spans.is_empty() {
        return Ok(out);
    }
    match out.rejected.into_iter().next() {
        None => Err(err(DecodeErrorKind::NoSpans, "TracesData holds no span")),
        Some(first) => Err(err(
            first.kind,
            format!("no valid span in the message; the first: {}", first.detail),
        )),
    }
}
