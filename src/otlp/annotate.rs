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
    let chosen = || {
        extra
            .iter()
            .filter(|(i, a)| *i < spans.len() && !a.is_empty())
    };
    let size: usize = chosen()
        .map(|(i, a)| spans[*i].encoded().len() + a.as_bytes().len())
        .sum();
    if size == 0 {
        return;
    }
    let mut buf = Vec::with_capacity(size);
    let mut at = Vec::with_capacity(extra.len());
    for (i, a) in chosen() {
        let start = buf.len();
        buf.extend_from_slice(spans[*i].encoded());
        buf.extend_from_slice(a.as_bytes());
        at.push((*i, start, buf.len() - start));
    }
    if u32::try_from(buf.len()).is_err() {
        // Ranges are 32-bit: a trace this large keeps its spans unannotated.
        return;
    }
    let buf = Bytes::from(buf);
    for (i, start, len) in at {
        let s = &mut spans[i];
        s.scope = Arc::new(Scope {
            spans: buf.clone(),
            parts: s.scope.parts.clone(),
        });
        // The name's range is within the span's encoding, which the copy
        // begins with.
        s.encoded_at = (start as u32, len as u32);
    }
}
