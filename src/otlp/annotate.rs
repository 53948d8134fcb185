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

use super::wire::{put_len, put_tag, WireType};
use super::{Scope, SpanRecord};

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
        let mut any = Vec::with_capacity(value.len() + 4);
        put_string(&mut any, value);
        self.entry(key, &any)
    }

    /// A double attribute.
    pub fn double(&mut self, key: &str, value: f64) -> &mut Self {
        let mut any = Vec::with_capacity(9);
        put_double(&mut any, value);
        self.entry(key, &any)
    }

    /// An array of strings.
    pub fn strings<'a>(
        &mut self,
        key: &str,
        values: impl IntoIterator<Item = &'a str>,
    ) -> &mut Self {
        // AnyValue { array_value = 5: ArrayValue { values = 1: AnyValue } }
        let mut array = Vec::new();
        for v in values {
            let mut any = Vec::with_capacity(v.len() + 4);
            put_string(&mut any, v);
            put_len(&mut array, 1, &any);
        }
        let mut any = Vec::with_capacity(array.len() + 4);
        put_len(&mut any, 5, &array);
        self.entry(key, &any)
    }

    /// `KeyValue { key = 1; value = 2 }` as a `Span.attributes` entry.
    fn entry(&mut self, key: &str, any: &[u8]) -> &mut Self {
        let mut kv = Vec::with_capacity(key.len() + any.len() + 6);
        put_len(&mut kv, 1, key.as_bytes());
        put_len(&mut kv, 2, any);
        put_len(&mut self.encoded, 9, &kv);
        self
    }
}

/// `AnyValue { string_value = 1 }`.
fn put_string(any: &mut Vec<u8>, value: &str) {
    put_len(any, 1, value.as_bytes());
}

/// `AnyValue { double_value = 4 }`.
fn put_double(any: &mut Vec<u8>, value: f64) {
    put_tag(any, 4, WireType::Fixed64);
    any.extend_from_slice(&value.to_le_bytes());
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
