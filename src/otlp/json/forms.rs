//! Every form of OTLP JSON the Collector's own reader accepts, read into
//! the `opentelemetry-proto` types. The reference is the `pdata` module of
//! open-telemetry/opentelemetry-collector (`ptrace.JSONUnmarshaler`: the
//! generated `UnmarshalJSON` of each message, `internal/json/iterator.go`
//! for scalars, `internal/bytesid.go` for ids); docs/output.md lists each
//! form with the test that covers it. In short:
//!
//! - every field of more than one word by its camelCase or its snake_case
//!   name (`traceId` or `trace_id`); unknown fields are skipped;
//! - enums (`kind`, `status.code`) as numbers or as the names protobuf's
//!   JSON mapping writes (`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`); an
//!   unknown name is an error, an unknown number is kept;
//! - integers (times, counts, flags, `intValue`) as numbers or as decimal
//!   strings; doubles as numbers or strings (`"NaN"`, `"Infinity"`, `"-Inf"`,
//!   `"1.5e3"`); booleans as `true`/`false` only;
//! - ids as hex strings of either case and of their exact length, or empty
//!   (no id); `bytesValue` as standard base64 with padding;
//! - `null` for a string, an object or a list is the empty one; for a
//!   number, a boolean or an id it is an error;
//! - `deprecatedScopeSpans` are read where `scopeSpans` are absent.
//!
//! A span (or resource, or scope) the reader rejects is rejected here, and
//! counted; unlike the Collector, which rejects the whole message, only
//! that part is skipped. One difference is known and kept: a field written
//! twice in one object is an error here (the Collector takes the last).

use std::fmt;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, Span, Status};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// `null` as the empty value: what the Collector's reader does for
/// strings, objects and lists.
fn or_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An unsigned or signed integer of at most 64 bits, as a JSON number or a
/// decimal string, checked against `[min, max]`.
struct Integer {
    what: &'static str,
    min: i128,
    max: i128,
}

impl<'de> Visitor<'de> for Integer {
    type Value = i128;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} as a number or a decimal string", self.what)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
        self.check(i128::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
        self.check(i128::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
        // Go's strconv: an optional sign (signed types only), then digits.
        let digits = match v.as_bytes().first() {
            Some(b'-' | b'+') if self.min < 0 => &v[1..],
            _ => v,
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::custom(format!(
                "{}: {v:?} is not a decimal integer",
                self.what
            )));
        }
        let n: i128 = v
            .parse()
            .map_err(|_| E::custom(format!("{}: {v:?} is out of range", self.what)))?;
        self.check(n)
    }
}

impl Integer {
    fn check<E: de::Error>(self, n: i128) -> Result<i128, E> {
        if n < self.min || n > self.max {
            return Err(E::custom(format!("{}: {n} is out of range", self.what)));
        }
        Ok(n)
    }
}

fn integer<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    min: i128,
    max: i128,
) -> Result<i128, D::Error> {
    d.deserialize_any(Integer { what, min, max })
}

fn u64_any<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    integer(d, "a uint64", 0, i128::from(u64::MAX)).map(|n| n as u64)
}

fn u32_any<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    integer(d, "a uint32", 0, i128::from(u32::MAX)).map(|n| n as u32)
}

fn i32_any<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    integer(d, "an int32", i128::from(i32::MIN), i128::from(i32::MAX)).map(|n| n as i32)
}

fn i64_any<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    integer(d, "an int64", i128::from(i64::MIN), i128::from(i64::MAX)).map(|n| n as i64)
}

/// A double: a JSON number, or a string Go's `strconv.ParseFloat` reads
/// (`"NaN"`, `"Inf"`, `"-Infinity"`, `"1.5e3"`, any case).
fn f64_any<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct Double;
    impl<'de> Visitor<'de> for Double {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a double as a number or a string")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            // Rust's parser takes what Go's does for decimal and special
            // values ("inf", "infinity", "nan", signed, any case); a leading
            // or trailing space neither takes.
            v.parse()
                .map_err(|_| E::custom(format!("a double: {v:?} is not a number")))
        }
    }
    d.deserialize_any(Double)
}

/// An enum: its number (any int32, kept as it is) or its name.
fn enum_any<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    names: &'static [&'static str],
) -> Result<i32, D::Error> {
    struct Enum {
        what: &'static str,
        names: &'static [&'static str],
    }
    impl<'de> Visitor<'de> for Enum {
        type Value = i32;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} as a number or one of {:?}", self.what, self.names)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i32, E> {
            i32::try_from(v).map_err(|_| E::custom(format!("{}: {v} is out of range", self.what)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i32, E> {
            i32::try_from(v).map_err(|_| E::custom(format!("{}: {v} is out of range", self.what)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i32, E> {
            // A name only: the Collector reads no decimal string here.
            match self.names.iter().position(|n| *n == v) {
                Some(i) => Ok(i as i32),
                None => Err(E::custom(format!("{}: unknown name {v:?}", self.what))),
            }
        }
    }
    d.deserialize_any(Enum { what, names })
}

/// `Span.kind`'s names, by number.
const SPAN_KINDS: &[&str] = &[
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
/// `Status.code`'s names, by number.
const STATUS_CODES: &[&str] = &["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

fn kind<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    enum_any(d, "span kind", SPAN_KINDS)
}

fn status_code<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    enum_any(d, "status code", STATUS_CODES)
}

/// An id of `len` bytes as hex (either case); empty for none.
fn id<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    len: usize,
) -> Result<Vec<u8>, D::Error> {
    let s: &str = <&str>::deserialize(d)
        .map_err(|_| de::Error::custom(format!("{what}: not a hex string")))?;
    if s.is_empty() {
        return Ok(Vec::new());
    }
    if s.len() != 2 * len {
        return Err(de::Error::custom(format!(
            "{what}: {} hex characters, not {}",
            s.len(),
            2 * len
        )));
    }
    hex::decode(s).map_err(|e| de::Error::custom(format!("{what}: {e}")))
}

fn trace_id<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    id(d, "trace id", 16)
}

fn span_id<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    id(d, "span id", 8)
}

/// `bytesValue`: standard base64 with padding (line breaks are skipped, as
/// Go's decoder skips them).
fn base64_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s: std::borrow::Cow<'de, str> = Deserialize::deserialize(d)?;
    let s: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| de::Error::custom(format!("bytesValue: not base64: {e}")))
}

/// `AnyValue`: one of its value fields; when an object holds several, the
/// last one counts (as in the Collector's reader). `null` or `{}` is no value.
#[derive(Default)]
struct JAnyValue(Option<any_value::Value>);

impl<'de> Deserialize<'de> for JAnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JAnyValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AnyValue object")
            }
            fn visit_unit<E: de::Error>(self) -> Result<JAnyValue, E> {
                Ok(JAnyValue(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JAnyValue, A::Error> {
                use any_value::Value as V;
                let mut value = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    value = match key.as_ref() {
                        "stringValue" | "string_value" => Some(V::StringValue(
                            map.next_value::<Option<String>>()?.unwrap_or_default(),
                        )),
                        "boolValue" | "bool_value" => Some(V::BoolValue(map.next_value()?)),
                        "intValue" | "int_value" => Some(V::IntValue(map.next_value::<I64>()?.0)),
                        "doubleValue" | "double_value" => {
                            Some(V::DoubleValue(map.next_value::<F64>()?.0))
                        }
                        "arrayValue" | "array_value" => Some(V::ArrayValue(ArrayValue {
                            values: map
                                .next_value::<Option<JValues>>()?
                                .map(|v| v.values)
                                .unwrap_or_default()
                                .into_iter()
                                .map(AnyValue::from)
                                .collect(),
                        })),
                        "kvlistValue" | "kvlist_value" => Some(V::KvlistValue(KeyValueList {
                            values: map
                                .next_value::<Option<JKeyValues>>()?
                                .map(|v| v.values)
                                .unwrap_or_default()
                                .into_iter()
                                .map(KeyValue::from)
                                .collect(),
                        })),
                        "bytesValue" | "bytes_value" => {
                            Some(V::BytesValue(map.next_value::<Bytes64>()?.0))
                        }
                        // Profiles' string table index, read as the Collector reads it.
                        "stringValueStrindex" | "string_value_strindex" => {
                            Some(V::StringValueStrindex(map.next_value::<I32>()?.0))
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            value
                        }
                    };
                }
                Ok(JAnyValue(value))
            }
        }
        d.deserialize_any(V)
    }
}

impl From<JAnyValue> for AnyValue {
    fn from(v: JAnyValue) -> Self {
        AnyValue { value: v.0 }
    }
}

/// Newtypes that read with the functions above, for `next_value`.
struct I64(i64);
impl<'de> Deserialize<'de> for I64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        i64_any(d).map(I64)
    }
}
struct I32(i32);
impl<'de> Deserialize<'de> for I32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        i32_any(d).map(I32)
    }
}
struct F64(f64);
impl<'de> Deserialize<'de> for F64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        f64_any(d).map(F64)
    }
}
struct Bytes64(Vec<u8>);
impl<'de> Deserialize<'de> for Bytes64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        base64_bytes(d).map(Bytes64)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JValues {
    #[serde(deserialize_with = "or_default")]
    values: Vec<JAnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JKeyValues {
    #[serde(deserialize_with = "or_default")]
    values: Vec<JKeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JKeyValue {
    #[serde(deserialize_with = "or_default")]
    key: String,
    /// Present, even as `{}`: an empty value, kept as protobuf input keeps
    /// it; absent or `null`: none.
    value: Option<JAnyValue>,
    /// Profiles' string table index, read as the Collector reads it.
    #[serde(alias = "key_strindex", deserialize_with = "i32_any")]
    key_strindex: i32,
}

impl From<JKeyValue> for KeyValue {
    fn from(kv: JKeyValue) -> Self {
        KeyValue {
            key: kv.key,
            value: kv.value.map(AnyValue::from),
            key_strindex: kv.key_strindex,
        }
    }
}

fn attributes(list: Vec<JKeyValue>) -> Vec<KeyValue> {
    list.into_iter().map(KeyValue::from).collect()
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JEntityRef {
    #[serde(alias = "schema_url", deserialize_with = "or_default")]
    schema_url: String,
    #[serde(deserialize_with = "or_default")]
    r#type: String,
    #[serde(alias = "id_keys", deserialize_with = "or_default")]
    id_keys: Vec<String>,
    #[serde(alias = "description_keys", deserialize_with = "or_default")]
    description_keys: Vec<String>,
}

/// A `Resource` in any form the Collector reads.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct JResource {
    #[serde(deserialize_with = "or_default")]
    attributes: Vec<JKeyValue>,
    #[serde(alias = "dropped_attributes_count", deserialize_with = "u32_any")]
    dropped_attributes_count: u32,
    #[serde(alias = "entity_refs", deserialize_with = "or_default")]
    entity_refs: Vec<JEntityRef>,
}

impl From<JResource> for Resource {
    fn from(r: JResource) -> Self {
        Resource {
            attributes: attributes(r.attributes),
            dropped_attributes_count: r.dropped_attributes_count,
            entity_refs: r
                .entity_refs
                .into_iter()
                .map(|e| EntityRef {
                    schema_url: e.schema_url,
                    r#type: e.r#type,
                    id_keys: e.id_keys,
                    description_keys: e.description_keys,
                })
                .collect(),
        }
    }
}

/// An `InstrumentationScope` in any form the Collector reads.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct JScope {
    #[serde(deserialize_with = "or_default")]
    name: String,
    #[serde(deserialize_with = "or_default")]
    version: String,
    #[serde(deserialize_with = "or_default")]
    attributes: Vec<JKeyValue>,
    #[serde(alias = "dropped_attributes_count", deserialize_with = "u32_any")]
    dropped_attributes_count: u32,
}

impl From<JScope> for InstrumentationScope {
    fn from(s: JScope) -> Self {
        InstrumentationScope {
            name: s.name,
            version: s.version,
            attributes: attributes(s.attributes),
            dropped_attributes_count: s.dropped_attributes_count,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JStatus {
    #[serde(deserialize_with = "or_default")]
    message: String,
    #[serde(deserialize_with = "status_code")]
    code: i32,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JEvent {
    #[serde(alias = "time_unix_nano", deserialize_with = "u64_any")]
    time_unix_nano: u64,
    #[serde(deserialize_with = "or_default")]
    name: String,
    #[serde(deserialize_with = "or_default")]
    attributes: Vec<JKeyValue>,
    #[serde(alias = "dropped_attributes_count", deserialize_with = "u32_any")]
    dropped_attributes_count: u32,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JLink {
    #[serde(alias = "trace_id", deserialize_with = "trace_id")]
    trace_id: Vec<u8>,
    #[serde(alias = "span_id", deserialize_with = "span_id")]
    span_id: Vec<u8>,
    #[serde(alias = "trace_state", deserialize_with = "or_default")]
    trace_state: String,
    #[serde(deserialize_with = "or_default")]
    attributes: Vec<JKeyValue>,
    #[serde(alias = "dropped_attributes_count", deserialize_with = "u32_any")]
    dropped_attributes_count: u32,
    #[serde(deserialize_with = "u32_any")]
    flags: u32,
}

/// A `Span` in any form the Collector reads.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct JSpan {
    #[serde(alias = "trace_id", deserialize_with = "trace_id")]
    trace_id: Vec<u8>,
    #[serde(alias = "span_id", deserialize_with = "span_id")]
    span_id: Vec<u8>,
    #[serde(alias = "trace_state", deserialize_with = "or_default")]
    trace_state: String,
    #[serde(alias = "parent_span_id", deserialize_with = "span_id")]
    parent_span_id: Vec<u8>,
    #[serde(deserialize_with = "u32_any")]
    flags: u32,
    #[serde(deserialize_with = "or_default")]
    name: String,
    #[serde(deserialize_with = "kind")]
    kind: i32,
    #[serde(alias = "start_time_unix_nano", deserialize_with = "u64_any")]
    start_time_unix_nano: u64,
    #[serde(alias = "end_time_unix_nano", deserialize_with = "u64_any")]
    end_time_unix_nano: u64,
    #[serde(deserialize_with = "or_default")]
    attributes: Vec<JKeyValue>,
    #[serde(alias = "dropped_attributes_count", deserialize_with = "u32_any")]
    dropped_attributes_count: u32,
    #[serde(deserialize_with = "or_default")]
    events: Vec<JEvent>,
    #[serde(alias = "dropped_events_count", deserialize_with = "u32_any")]
    dropped_events_count: u32,
    #[serde(deserialize_with = "or_default")]
    links: Vec<JLink>,
    #[serde(alias = "dropped_links_count", deserialize_with = "u32_any")]
    dropped_links_count: u32,
    #[serde(deserialize_with = "or_default")]
    status: Option<JStatus>,
}

impl From<JSpan> for Span {
    fn from(s: JSpan) -> Self {
        Span {
            trace_id: s.trace_id,
            span_id: s.span_id,
            trace_state: s.trace_state,
            parent_span_id: s.parent_span_id,
            flags: s.flags,
            name: s.name,
            kind: s.kind,
            start_time_unix_nano: s.start_time_unix_nano,
            end_time_unix_nano: s.end_time_unix_nano,
            attributes: attributes(s.attributes),
            dropped_attributes_count: s.dropped_attributes_count,
            events: s
                .events
                .into_iter()
                .map(|e| span::Event {
                    time_unix_nano: e.time_unix_nano,
                    name: e.name,
                    attributes: attributes(e.attributes),
                    dropped_attributes_count: e.dropped_attributes_count,
                })
                .collect(),
            dropped_events_count: s.dropped_events_count,
            links: s
                .links
                .into_iter()
                .map(|l| span::Link {
                    trace_id: l.trace_id,
                    span_id: l.span_id,
                    trace_state: l.trace_state,
                    attributes: attributes(l.attributes),
                    dropped_attributes_count: l.dropped_attributes_count,
                    flags: l.flags,
                })
                .collect(),
            dropped_links_count: s.dropped_links_count,
            status: s.status.map(|st| Status {
                message: st.message,
                code: st.code,
            }),
        }
    }
}
