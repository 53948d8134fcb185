//! Attributes read straight from encoded spans, scopes and resources, for the
//! rules that ask about them. Nothing is decoded until a rule needs it, and
//! then only the one key asked for.

use super::wire::{Fields, Value};

/// `Span.attributes`.
pub const SPAN_ATTRIBUTES: u32 = 9;
/// `InstrumentationScope.attributes`.
pub const SCOPE_ATTRIBUTES: u32 = 3;
/// `Resource.attributes`.
pub const RESOURCE_ATTRIBUTES: u32 = 1;

/// An attribute's value as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrValue<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// Bytes, arrays and key-value lists: present, but not comparable.
    Other,
}

impl std::fmt::Display for AttrValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Double(d) => write!(f, "{d}"),
            Self::Other => f.write_str("(bytes, array or map)"),
        }
    }
}

/// Decodes an `AnyValue`.
pub fn any_value(any: &[u8]) -> AttrValue<'_> {
    let mut value = AttrValue::Other;
    let mut f = Fields::new(any);
    while let Ok(Some((field, v))) = f.next() {
        value = match (field, v) {
            (1, Value::Len(s)) => std::str::from_utf8(s).map_or(AttrValue::Other, AttrValue::Str),
            (2, Value::Varint(b)) => AttrValue::Bool(b != 0),
            (3, Value::Varint(i)) => AttrValue::Int(i as i64),
            (4, Value::Fixed64(d)) => AttrValue::Double(f64::from_bits(d)),
            _ => AttrValue::Other,
        };
    }
    value
}

/// The value of attribute `key` among the `KeyValue` entries in field `field`
/// of an encoded message. The first entry with the key wins (OTLP keys are
/// unique). A malformed message has no attributes.
pub fn find<'a>(message: &'a [u8], field: u32, key: &str) -> Option<AttrValue<'a>> {
    let mut f = Fields::new(message);
    while let Ok(Some((n, v))) = f.next() {
        let (true, Value::Len(kv)) = (n == field, v) else {
            continue;
        };
        let mut k = None;
        let mut any: &[u8] = &[];
        let mut g = Fields::new(kv);
        while let Ok(Some((m, w))) = g.next() {
            match (m, w) {
                (1, Value::Len(b)) => k = Some(b),
                (2, Value::Len(b)) => any = b,
                _ => {}
            }
        }
        if k == Some(key.as_bytes()) {
            return Some(any_value(any));
        }
    }
    None
}
