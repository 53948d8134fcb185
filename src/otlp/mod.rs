//! OTLP at the edges: decode incoming `TracesData` (protobuf or JSON) into span
//! records that keep their encoded bytes, and encode kept spans back under
//! their resource and scope.
//!
//! Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto`; the
//! `opentelemetry-proto` crate's types are used for JSON and in tests.

pub mod annotate;
pub mod attributes;
pub mod compact;
pub mod counting;
pub mod decode;
pub mod encode;
mod json;
pub mod keying;
pub mod tracestate;
pub mod wire;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

pub use annotate::Attributes;
pub use attributes::AttrValue;
use compact::PARTS_OVERHEAD;
pub use compact::{Assembled, Interner};
pub use decode::{decode, DecodeError, DecodeErrorKind, Decoded};
pub use encode::{encode_trace, encode_within, Annotation, EncodedMessage, Split};

/// A trace id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

impl TraceId {
    /// The Collector's form, used as the Kafka message key: 32 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 32 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id).ok()?;
        Some(Self(id))
    }

    /// The low 56 bits, the randomness the OpenTelemetry consistent-probability
    /// sampling rule reads from a trace id.
    pub fn randomness56(&self) -> u64 {
        let mut b = [0u8; 8];
        b[1..].copy_from_slice(&self.0[9..16]);
        u64::from_be_bytes(b)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The encoding of a message, kept per trace so kept spans leave as they came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Protobuf `TracesData` (the Collector's `otlp_proto`).
    #[default]
    OtlpProto,
    /// OTLP JSON (the Collector's `otlp_json`).
    OtlpJson,
}

/// What each encoding is: the one place a new one is described (its
/// decoder is `decode`'s, its encoder `encode_trace`'s).
impl Encoding {
    pub const ALL: [Encoding; 2] = [Encoding::OtlpProto, Encoding::OtlpJson];

    /// Its name: the Collector's `encoding` setting, and the CLI's.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::OtlpProto => "otlp_proto",
            Encoding::OtlpJson => "otlp_json",
        }
    }

    /// The encoding named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// A whole `TracesData` in this encoding (the demo, the workload, tests).
    pub fn encode_data(self, data: &opentelemetry_proto::tonic::trace::v1::TracesData) -> Vec<u8> {
        match self {
            Encoding::OtlpProto => prost::Message::encode_to_vec(data),
            // A generated message of plain fields always serializes.
            Encoding::OtlpJson => serde_json::to_vec(data).unwrap_or_default(),
        }
    }
}

/// The resource and instrumentation scope a span was emitted under, as encoded
/// bytes, and the buffer its spans' encodings are slices of. Shared by the
/// spans of one `ScopeSpans` in a message; once their trace is decided, by
/// its spans under one resource and scope (see [`compact`]).
#[derive(Debug)]
pub struct Scope {
    /// The bytes its spans' encodings are ranges of: the message itself as
    /// decoded (so a scope costs references, not a copy), the trace's own
    /// buffer of its spans' copies once it was buffered.
    spans: Bytes,
    /// The resource and scope: in the message as decoded, interned per
    /// partition once buffered.
    parts: Arc<Parts>,
}

/// The resource and scope parts of a [`Scope`], as encoded bytes.
#[derive(Debug)]
pub struct Parts {
    /// The bytes the parts are ranges of: the message, or copies of them.
    buf: Bytes,
    /// `(start, len)` in `buf` of each [`Part`].
    ranges: [(u32, u32); 5],
    /// For interned parts, the interner's hash of them (0 otherwise).
    hash: u64,
}

/// The parts of a [`Scope`].
#[derive(Debug, Clone, Copy)]
pub enum Part {
    /// Encoded `opentelemetry.proto.resource.v1.Resource` (may be empty).
    Resource = 0,
    /// `ResourceSpans.schema_url`.
    ResourceSchemaUrl = 1,
    /// Encoded `InstrumentationScope` (may be empty).
    Scope = 2,
    /// `ScopeSpans.schema_url`.
    ScopeSchemaUrl = 3,
    /// The resource's `service.name`, empty if it has none.
    Service = 4,
}

impl Part {
    pub const ALL: [Part; 5] = [
        Part::Resource,
        Part::ResourceSchemaUrl,
        Part::Scope,
        Part::ScopeSchemaUrl,
        Part::Service,
    ];
}

impl Parts {
    /// Parts that are sub-slices of `message` (or empty); where one is not
    /// after all, copies of them all.
    fn in_message(message: &Bytes, parts: [&[u8]; 5]) -> Self {
        let mut ranges = [(0u32, 0u32); 5];
        for (range, part) in ranges.iter_mut().zip(parts) {
            if part.is_empty() {
                continue;
            }
            match range_in(message, part) {
                Some(r) => *range = r,
                None => return Self::copied(parts),
            }
        }
        Self {
            buf: message.clone(),
            ranges,
            hash: 0,
        }
    }

    /// True if both are the same ranges of one buffer.
    fn same_ranges(&self, other: &Self) -> bool {
        self.ranges == other.ranges && self.buf.as_ptr() == other.buf.as_ptr()
    }

    /// Parts holding copies of `parts`, in one buffer of their own.
    fn copied(parts: [&[u8]; 5]) -> Self {
        let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>());
        let mut ranges = [(0u32, 0u32); 5];
        for (range, part) in ranges.iter_mut().zip(parts) {
            // OTLP messages are far below 4 GiB; a larger part is left out.
            if let (Ok(at), Ok(len)) = (u32::try_from(buf.len()), u32::try_from(part.len())) {
                *range = (at, len);
                buf.extend_from_slice(part);
            }
        }
        Self {
            buf: Bytes::from(buf),
            ranges,
            hash: 0,
        }
    }

    /// Each part's bytes.
    fn all(&self) -> [&[u8]; 5] {
        self.ranges.map(|r| bytes_at(&self.buf, r))
    }

    /// Bytes a copy of these parts keeps alive: its buffer and itself.
    fn size(&self) -> usize {
        self.ranges.iter().map(|r| r.1 as usize).sum::<usize>() + PARTS_OVERHEAD
    }
}

/// The bytes at `(start, len)` of `buf` (empty if out of range).
fn bytes_at(buf: &[u8], (at, len): (u32, u32)) -> &[u8] {
    buf.get(at as usize..at as usize + len as usize)
        .unwrap_or_default()
}

impl Scope {
    /// A scope whose parts are sub-slices of `message` (or empty, or else
    /// copies), and whose spans are too.
    pub fn in_message(message: &Bytes, parts: [&[u8]; 5]) -> Self {
        Self::in_message_after(message, parts, None)
    }

    /// As [`Scope::in_message`], sharing `previous`'s parts if they are
    /// the same (a resource's scopes without scope fields of their own), so
    /// that what is done once per distinct resource and scope is done once.
    pub(crate) fn in_message_after(
        message: &Bytes,
        parts: [&[u8]; 5],
        previous: Option<&Arc<Scope>>,
    ) -> Self {
        let parts = Parts::in_message(message, parts);
        let parts = match previous {
            Some(p) if p.parts.same_ranges(&parts) => p.parts.clone(),
            _ => Arc::new(parts),
        };
        Self {
            spans: message.clone(),
            parts,
        }
    }

    /// The bytes at `(start, len)` of its spans' buffer.
    fn bytes_at(&self, at: (u32, u32)) -> &[u8] {
        bytes_at(&self.spans, at)
    }

    pub fn part(&self, part: Part) -> &[u8] {
        bytes_at(&self.parts.buf, self.parts.ranges[part as usize])
    }

    pub fn resource(&self) -> &[u8] {
        self.part(Part::Resource)
    }

    pub fn scope(&self) -> &[u8] {
        self.part(Part::Scope)
    }
}

/// `(start, len)` of `inner` within `outer`, if it lies inside it.
pub(crate) fn range_in(outer: &[u8], inner: &[u8]) -> Option<(u32, u32)> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start.checked_add(inner.len())?;
    if end > outer.len() {
        return None;
    }
    Some((u32::try_from(start).ok()?, u32::try_from(inner.len()).ok()?))
}

/// `Span.kind` values.
pub mod span_kind {
    pub const UNSPECIFIED: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const SERVER: u8 = 2;
    pub const CLIENT: u8 = 3;
    pub const PRODUCER: u8 = 4;
    pub const CONSUMER: u8 = 5;

    /// The names rules use, indexed by kind.
    pub const NAMES: [&str; 6] = [
        "unspecified",
        "internal",
        "server",
        "client",
        "producer",
        "consumer",
    ];
}

/// `Status.code` values.
pub mod status_code {
    pub const UNSET: u8 = 0;
    pub const OK: u8 = 1;
    pub const ERROR: u8 = 2;

    /// The names rules use, indexed by code.
    pub const NAMES: [&str; 3] = ["unset", "ok", "error"];
}

/// One span as the buffer holds it: the fields the rules read, and where
/// the span's encoded bytes are (in its scope's buffer: the message as
/// decoded, a copy once buffered) to re-emit it unchanged.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Resource and scope it belongs to; its spans' buffer holds the span
    /// too, at `encoded_at` (a record is only ever made, or moved, with the
    /// scope its span's bytes are in).
    pub scope: Arc<Scope>,
    /// `(start, len)` of the encoded `Span` message in the scope's spans' buffer.
    encoded_at: (u32, u32),
    pub span_id: [u8; 8],
    /// All zero for a root span.
    pub parent_span_id: [u8; 8],
    pub start_ns: u64,
    pub end_ns: u64,
    /// Byte range of the span name within `encoded`.
    name_at: (u32, u32),
    /// `Span.kind` (see [`span_kind`]).
    pub kind: u8,
    /// `Status.code` (see [`status_code`]).
    pub status: u8,
    /// It has a `trace_state` field (most spans have none: reading it is
    /// then no work).
    has_trace_state: bool,
}

impl SpanRecord {
    /// The encoded `Span` message.
    pub fn encoded(&self) -> &[u8] {
        self.scope.bytes_at(self.encoded_at)
    }

    /// True for a span without a parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id == [0; 8]
    }

    /// The span name (lossy if it is not UTF-8, which OTLP forbids).
    pub fn name(&self) -> std::borrow::Cow<'_, str> {
        let (at, len) = (self.name_at.0 as usize, self.name_at.1 as usize);
        String::from_utf8_lossy(self.encoded().get(at..at + len).unwrap_or_default())
    }

    /// The span's status is ERROR.
    pub fn error(&self) -> bool {
        self.status == status_code::ERROR
    }

    /// The span kind's name as rules write it (`server`, `client`, ...).
    pub fn kind_name(&self) -> &'static str {
        span_kind::NAMES
            .get(usize::from(self.kind))
            .copied()
            .unwrap_or("unspecified")
    }

    /// The status code's name as rules write it (`unset`, `ok`, `error`).
    pub fn status_name(&self) -> &'static str {
        status_code::NAMES
            .get(usize::from(self.status))
            .copied()
            .unwrap_or("unset")
    }

    /// Duration of the span in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// Attribute `key` of the span, else of its instrumentation scope, else of
    /// its resource.
    pub fn attribute(&self, key: &str) -> Option<AttrValue<'_>> {
        use attributes::{find, RESOURCE_ATTRIBUTES, SCOPE_ATTRIBUTES, SPAN_ATTRIBUTES};
        find(self.encoded(), SPAN_ATTRIBUTES, key)
            .or_else(|| find(self.scope.scope(), SCOPE_ATTRIBUTES, key))
            .or_else(|| find(self.scope.resource(), RESOURCE_ATTRIBUTES, key))
    }

    /// Attribute `key` of the span's resource only.
    pub fn resource_attribute(&self, key: &str) -> Option<AttrValue<'_>> {
        attributes::find(self.scope.resource(), attributes::RESOURCE_ATTRIBUTES, key)
    }

    /// The `service.name` of the span's resource.
    pub fn service(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.scope.part(Part::Service))
    }

    /// The span's `trace_state` (field 3; its last occurrence, as a
    /// protobuf reader takes it): the W3C `tracestate` it was recorded
    /// with, empty if none.
    pub fn trace_state(&self) -> &[u8] {
        if !self.has_trace_state {
            return &[];
        }
        trace_state_fields(self.encoded())
            .last()
            .map_or(&[], |(_, value)| value)
    }

    /// The span's own bytes: its encoding plus the record itself (what the
    /// buffer counts besides is the scope its copy shares: see [`compact`]).
    pub fn size(&self) -> usize {
        self.encoded().len() + std::mem::size_of::<Self>()
    }
}

/// Every `trace_state` field (3) of an encoded span: the whole field's
/// byte range (tag and length included) and its value. A span that
/// decoded has well-formed fields; reading stops at anything else.
pub(crate) fn trace_state_fields(
    span: &[u8],
) -> impl Iterator<Item = (std::ops::Range<usize>, &[u8])> {
    let mut fields = wire::Fields::new(span);
    std::iter::from_fn(move || loop {
        let start = fields.position();
        match fields.next() {
            Ok(Some((3, wire::Value::Len(value)))) => {
                return Some((start..fields.position(), value));
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    })
}

#[cfg(test)]
pub(crate) mod tests;

/// Span records for a hand-built trace, as the decoder produces them.
#[cfg(test)]
pub(crate) fn test_spans(
    trace_id: TraceId,
    specs: &[crate::workload::SpanSpec],
) -> Vec<SpanRecord> {
    let ids: Vec<[u8; 8]> = (0..specs.len()).map(|i| [i as u8 + 1; 8]).collect();
    crate::workload::build_trace(trace_id, &ids, 1_000_000_000, specs)
        .iter()
        .flat_map(|m| {
            decode(Bytes::from(crate::workload::encode(m, Encoding::OtlpProto)))
                .expect("test trace decodes")
                .spans
        })
        .map(|(_, s)| s)
        .collect()
}

/// A message's spans grouped by trace id, each trace's spans in message
/// order (a stable sort), one trace after another.
pub fn by_trace(
    mut spans: Vec<(TraceId, SpanRecord)>,
) -> impl Iterator<Item = (TraceId, Vec<SpanRecord>)> {
    // A message keyed by its trace holds only its spans: one group, in
    // the order they came, its vector made from theirs.
    let mut single = None;
    if let Some(&(first, _)) = spans.first() {
        if spans.iter().all(|(id, _)| *id == first) {
            let group: Vec<SpanRecord> = std::mem::take(&mut spans)
                .into_iter()
                .map(|(_, s)| s)
                .collect();
            single = Some((first, group));
        }
    }
    spans.sort_by_key(|(id, _)| *id);
    let mut rest = spans.into_iter().peekable();
    std::iter::from_fn(move || {
        if let Some(group) = single.take() {
            return Some(group);
        }
        let (id, first) = rest.next()?;
        let mut group = vec![first];
        while let Some((_, s)) = rest.next_if(|(next, _)| *next == id) {
            group.push(s);
        }
        Some((id, group))
    })
}
