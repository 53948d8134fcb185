//! Attributes added to kept spans without decoding them: encoded once as
//! `Span.attributes` entries (field 9, repeated, so they may follow the
//! span's other fields), then appended to the span's bytes.
//!
//! [`Attributes`] builds the entries; [`append_to_spans`] gives chosen spans
//! of a trace copies of their encodings with entries of their own appended
//! (the critical path's, which differ from span to span). What every kept
//! span of a trace carries alike is an [`super::Annotation`], appended as
//! the trace is encoded.

use std::sync::Arc;

use bytes::Bytes;

use super::wire::{len_field_size, put_len, put_tag, put_varint, WireType};
use super::{Scope, SpanRecord};

// The critical path's attributes (see `rules::path_summary` and
// docs/output.md): part of the output's format, like `tailgate.rule`.

/// On the top span: the service with the most time on the critical path.
pub const SERVICE_ATTRIBUTE: &str = "tailgate.critical_path.service";
/// On the top span: that service's fraction of the path (0–1).
pub const SHARE_ATTRIBUTE: &str = "tailgate.critical_path.share";
/// On the top span: the path's length in milliseconds.
pub const DURATION_ATTRIBUTE: &str = "tailgate.critical_path.duration_ms";
/// On the top span: the name of the span with the most time on the path.
pub const SPAN_ATTRIBUTE: &str = "tailgate.critical_path.span";
/// On the top span: the services along the path, in the order it reaches
/// them.
pub const SERVICES_ATTRIBUTE: &str = "tailgate.critical_path.services";
/// On every span on the path: its time on the path, in milliseconds.
pub const SELF_ATTRIBUTE: &str = "tailgate.critical_path.self_ms";

/// `Span.attributes` entries, encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    encoded: Vec<u8>,
}

impl Attributes {
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded entries.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }

    /// The encoded entries, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.encoded
    }

    /// A string attribute.
    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        // AnyValue { string_value = 1 }
        self.entry(key, len_field_size(value.len()), |out| {
            put_len(out, 1, value.as_bytes());
        })
    }

    /// A double attribute.
    pub fn double(&mut self, key: &str, value: f64) -> &mut Self {
        // AnyValue { double_value = 4 }
        self.entry(key, 9, |out| {
            put_tag(out, 4, WireType::Fixed64);
            out.extend_from_slice(&value.to_le_bytes());
        })
    }

    /// An integer attribute.
    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        // AnyValue { int_value = 3 }
        let v = value as u64;
        self.entry(key, 1 + super::wire::varint_len(v), |out| {
            put_tag(out, 3, WireType::Varint);
            put_varint(out, v);
        })
    }

    /// An array of strings.
    pub fn strings<'a, I>(&mut self, key: &str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: Clone,
    {
        // AnyValue { array_value = 5: ArrayValue { values = 1: AnyValue
        // { string_value = 1 } } }
        let values = values.into_iter();
        let array: usize = values
            .clone()
            .map(|v| len_field_size(len_field_size(v.len())))
            .sum();
        self.entry(key, len_field_size(array), |out| {
            put_tag(out, 5, WireType::Len);
            put_varint(out, array as u64);
            for v in values {
                put_tag(out, 1, WireType::Len);
                put_varint(out, len_field_size(v.len()) as u64);
                put_len(out, 1, v.as_bytes());
            }
        })
    }

    /// `KeyValue { key = 1; value = 2 }` as a `Span.attributes` entry,
    /// written in place: `any` is the value's size, `write` writes it.
    fn entry(&mut self, key: &str, any: usize, write: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        let kv = len_field_size(key.len()) + len_field_size(any);
        let out = &mut self.encoded;
        out.reserve(len_field_size(kv));
        put_tag(out, 9, WireType::Len);
        put_varint(out, kv as u64);
        put_len(out, 1, key.as_bytes());
        put_tag(out, 2, WireType::Len);
        put_varint(out, any as u64);
        let at = out.len();
        write(out);
        debug_assert_eq!(out.len() - at, any);
        self
    }
}

/// Gives each span `spans[i]` of `extra` (index, entries) a copy of its
/// encoding with the entries appended; the others are left as they are.
/// The copies share one new buffer; each keeps its resource and scope.
/// Indices past the end, and empty entries, are ignored.
pub fn append_to_spans(spans: &mut [SpanRecord], extra: &[(usize, Attributes)]) {
    let edits: Vec<(usize, Edit<'_>)> = extra
        .iter()
        .map(|(i, a)| {
            let edit = Edit {
                trace_state: None,
                attributes: a.as_bytes(),
            };
            (*i, edit)
        })
        .collect();
    edit_spans(spans, &edits);
}

/// A change to one span of a trace: a new `trace_state`, entries to append.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edit<'a> {
    /// Replaces every `trace_state` field of the span (`Some("")`: none is
    /// left); `None` leaves it as it is.
    pub trace_state: Option<&'a str>,
    /// Appended after the span's fields.
    pub attributes: &'a [u8],
}

impl Edit<'_> {
    fn is_empty(&self) -> bool {
        self.trace_state.is_none() && self.attributes.is_empty()
    }
}

/// Gives each span `spans[i]` of `edits` (index, edit) a copy of its
/// encoding with the edit made — its `trace_state` fields left out and the
/// new one written after its other fields, its entries appended — without
/// decoding it; the others are left as they are. The copies share one new
/// buffer; each keeps its resource and scope. Indices past the end, and
/// empty edits, are ignored.
pub fn edit_spans(spans: &mut [SpanRecord], edits: &[(usize, Edit<'_>)]) {
    let chosen = || {
        edits
            .iter()
            .filter(|(i, e)| *i < spans.len() && !e.is_empty())
    };
    let new_state = |e: &Edit<'_>| {
        e.trace_state
            .filter(|t| !t.is_empty())
            .map_or(0, |t| len_field_size(t.len()))
    };
    let size: usize = chosen()
        .map(|(i, e)| spans[*i].encoded().len() + new_state(e) + e.attributes.len())
        .sum();
    if size == 0 {
        return;
    }
    let mut buf = Vec::with_capacity(size);
    let mut at = Vec::with_capacity(edits.len());
    for (i, e) in chosen() {
        let has_trace_state = match e.trace_state {
            Some(state) => !state.is_empty(),
            None => spans[*i].has_trace_state,
        };
        let span = &spans[*i];
        let encoded = span.encoded();
        let start = buf.len();
        let mut name_at = span.name_at;
        match e.trace_state {
            None => buf.extend_from_slice(encoded),
            Some(state) if !span.has_trace_state => {
                buf.extend_from_slice(encoded);
                if !state.is_empty() {
                    put_len(&mut buf, 3, state.as_bytes());
                }
            }
            Some(state) => {
                let mut from = 0;
                for (field, _) in super::trace_state_fields(encoded) {
                    buf.extend_from_slice(&encoded[from..field.start]);
                    if (field.start as u32) < span.name_at.0 {
                        name_at.0 -= field.len() as u32;
                    }
                    from = field.end;
                }
                buf.extend_from_slice(&encoded[from..]);
                if !state.is_empty() {
                    put_len(&mut buf, 3, state.as_bytes());
                }
            }
        }
        buf.extend_from_slice(e.attributes);
        at.push((*i, start, buf.len() - start, name_at, has_trace_state));
    }
    if u32::try_from(buf.len()).is_err() {
        // Ranges are 32-bit: a trace this large keeps its spans as they are.
        return;
    }
    let buf = Bytes::from(buf);
    for (i, start, len, name_at, has_trace_state) in at {
        let s = &mut spans[i];
        s.scope = Arc::new(Scope {
            spans: buf.clone(),
            parts: s.scope.parts.clone(),
        });
        s.encoded_at = (start as u32, len as u32);
        s.name_at = name_at;
        s.has_trace_state = has_trace_state;
    }
}
