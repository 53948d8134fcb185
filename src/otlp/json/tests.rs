//! Every form of OTLP JSON the Collector's reader accepts (`forms`), one
//! row each: a span written in that form decodes to exactly the span
//! written in the canonical form (camelCase, enums as numbers, integers as
//! strings, lowercase hex) — same protobuf bytes — and every form it
//! rejects is rejected, with its reason. docs/output.md lists the same
//! rows with where the Collector's reader does each.

use bytes::Bytes;

use crate::otlp::{decode, DecodeErrorKind, SpanRecord};

const SERVICE: &str = r#"{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]}"#;

/// `span` as the only span of a message with a resource and a scope: the
/// span tailgate reads, or the reason it rejects it.
fn one(span: &str) -> Result<SpanRecord, DecodeErrorKind> {
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{SERVICE},"scopeSpans":[{{"scope":{{"name":"s"}},"spans":[{span}]}}]}}]}}"#
    );
    let d = decode(Bytes::from(json)).map_err(|e| e.kind)?;
    match (d.spans.as_slice(), d.rejected.as_slice()) {
        ([(_, s)], []) => Ok(s.clone()),
        (_, [e]) => Err(e.kind),
        other => panic!("one span or one rejection, not {other:?}"),
    }
}

/// The canonical span with `fields` added (JSON members, without braces).
fn canonical(fields: &str) -> String {
    let sep = if fields.is_empty() { "" } else { "," };
    format!(
        r#"{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"n","startTimeUnixNano":"1","endTimeUnixNano":"2"{sep}{fields}}}"#
    )
}

/// A form, and the canonical span it must read as.
struct Same {
    form: &'static str,
    written: String,
    means: String,
}

fn same(form: &'static str, written: &str, means: &str) -> Same {
    Same {
        form,
        written: canonical(written),
        means: canonical(means),
    }
}

/// Rows whose whole span is written differently (the base fields included).
fn same_whole(form: &'static str, written: &str, means: &str) -> Same {
    Same {
        form,
        written: written.to_string(),
        means: canonical(means),
    }
}

fn accepted() -> Vec<Same> {
    vec![
        // Enums.
        same(
            "kind as its name",
            r#""kind":"SPAN_KIND_SERVER""#,
            r#""kind":2"#,
        ),
        same(
            "every kind name",
            r#""kind":"SPAN_KIND_CONSUMER""#,
            r#""kind":5"#,
        ),
        same(
            "kind unspecified by name",
            r#""kind":"SPAN_KIND_UNSPECIFIED""#,
            r#""kind":0"#,
        ),
        same(
            "an unknown kind number is kept",
            r#""kind":9"#,
            r#""kind":9"#,
        ),
        same(
            "status code as its name",
            r#""status":{"code":"STATUS_CODE_ERROR"}"#,
            r#""status":{"code":2}"#,
        ),
        same(
            "status ok by name, with a message",
            r#""status":{"code":"STATUS_CODE_OK","message":"m"}"#,
            r#""status":{"code":1,"message":"m"}"#,
        ),
        same("status null", r#""status":null"#, ""),
        // Field names.
        same_whole(
            "snake_case field names",
            r#"{"trace_id":"5b8efff798038103d269b633813fc60c","span_id":"eee19b7ec3c1b174","parent_span_id":"0102030405060708","trace_state":"a=b","name":"n","start_time_unix_nano":"1","end_time_unix_nano":"2","dropped_attributes_count":3,"dropped_events_count":4,"dropped_links_count":5}"#,
            r#""parentSpanId":"0102030405060708","traceState":"a=b","droppedAttributesCount":3,"droppedEventsCount":4,"droppedLinksCount":5"#,
        ),
        same(
            "unknown fields are skipped",
            r#""vendorField":{"a":[1,"x",null]},"another":7"#,
            "",
        ),
        // Integers.
        same_whole(
            "times as numbers",
            r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"n","startTimeUnixNano":1,"endTimeUnixNano":2}"#,
            "",
        ),
        whole(
            "the largest uint64 time",
            r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"n","startTimeUnixNano":"1","endTimeUnixNano":18446744073709551615}"#,
            r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"n","startTimeUnixNano":"1","endTimeUnixNano":"18446744073709551615"}"#,
        ),
        same(
            "flags and counts as strings",
            r#""flags":"257","droppedAttributesCount":"3""#,
            r#""flags":257,"droppedAttributesCount":3"#,
        ),
        // Ids.
        same_whole(
            "ids in uppercase hex",
            r#"{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"0A0B0C0D0E0F0102","name":"n","startTimeUnixNano":"1","endTimeUnixNano":"2"}"#,
            r#""parentSpanId":"0a0b0c0d0e0f0102""#,
        ),
        same(
            "an empty parent span id is a root",
            r#""parentSpanId":"""#,
            "",
        ),
        // Strings, lists and objects as null.
        whole(
            "null name, trace state, attributes, events and links",
            r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":null,"startTimeUnixNano":"1","endTimeUnixNano":"2","attributes":null,"events":null,"links":null,"traceState":null}"#,
            r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"","startTimeUnixNano":"1","endTimeUnixNano":"2"}"#,
        ),
        // Attribute values.
        same(
            "intValue as a number",
            r#""attributes":[{"key":"k","value":{"intValue":42}}]"#,
            r#""attributes":[{"key":"k","value":{"intValue":"42"}}]"#,
        ),
        same(
            "intValue negative as a string",
            r#""attributes":[{"key":"k","value":{"intValue":"-7"}}]"#,
            r#""attributes":[{"key":"k","value":{"intValue":"-7"}}]"#,
        ),
        same(
            "doubleValue as a string",
            r#""attributes":[{"key":"k","value":{"doubleValue":"1.5e3"}}]"#,
            r#""attributes":[{"key":"k","value":{"doubleValue":1500.0}}]"#,
        ),
        same(
            "doubleValue as an integer number",
            r#""attributes":[{"key":"k","value":{"doubleValue":2}}]"#,
            r#""attributes":[{"key":"k","value":{"doubleValue":2.0}}]"#,
        ),
        same(
            "snake_case value names",
            r#""attributes":[{"key":"a","value":{"string_value":"x"}},{"key":"b","value":{"bool_value":true}},{"key":"c","value":{"int_value":"1"}},{"key":"d","value":{"double_value":0.5}},{"key":"e","value":{"bytes_value":"aGk="}}]"#,
            r#""attributes":[{"key":"a","value":{"stringValue":"x"}},{"key":"b","value":{"boolValue":true}},{"key":"c","value":{"intValue":"1"}},{"key":"d","value":{"doubleValue":0.5}},{"key":"e","value":{"bytesValue":"aGk="}}]"#,
        ),
        same(
            "array and kvlist values, nested, snake_case",
            r#""attributes":[{"key":"a","value":{"array_value":{"values":[{"intValue":1},{"kvlist_value":{"values":[{"key":"x","value":{"stringValue":"y"}}]}}]}}}]"#,
            r#""attributes":[{"key":"a","value":{"arrayValue":{"values":[{"intValue":"1"},{"kvlistValue":{"values":[{"key":"x","value":{"stringValue":"y"}}]}}]}}}]"#,
        ),
        same(
            "an empty value, and a null one",
            r#""attributes":[{"key":"a","value":{}},{"key":"b","value":null},{"key":"c"}]"#,
            r#""attributes":[{"key":"a","value":{}},{"key":"b"},{"key":"c"}]"#,
        ),
        same(
            "bytes with a line break",
            "\"attributes\":[{\"key\":\"k\",\"value\":{\"bytesValue\":\"aGVs\\nbG8=\"}}]",
            r#""attributes":[{"key":"k","value":{"bytesValue":"aGVsbG8="}}]"#,
        ),
        same(
            "the last of several value fields counts",
            r#""attributes":[{"key":"k","value":{"stringValue":"x","intValue":"3"}}]"#,
            r#""attributes":[{"key":"k","value":{"intValue":"3"}}]"#,
        ),
        // Events and links.
        same(
            "events and links in snake_case, times as numbers",
            r#""events":[{"time_unix_nano":5,"name":"e","dropped_attributes_count":"1"}],"links":[{"trace_id":"0102030405060708090a0b0c0d0e0f10","span_id":"0102030405060708","trace_state":"x=y","flags":"1"}]"#,
            r#""events":[{"timeUnixNano":"5","name":"e","droppedAttributesCount":1}],"links":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","traceState":"x=y","flags":1}]"#,
        ),
    ]
}

/// Rows written whole on both sides.
fn whole(form: &'static str, written: &str, means: &str) -> Same {
    Same {
        form,
        written: written.to_string(),
        means: means.to_string(),
    }
}

/// Forms the Collector's reader rejects, and the reason tailgate gives.
fn rejected() -> Vec<(&'static str, String, DecodeErrorKind)> {
    use DecodeErrorKind::*;
    vec![
        ("an unknown kind name", canonical(r#""kind":"SPAN_KIND_BOGUS""#), MalformedSpan),
        ("a kind name in lowercase", canonical(r#""kind":"span_kind_server""#), MalformedSpan),
        ("a kind as a decimal string", canonical(r#""kind":"2""#), MalformedSpan),
        ("an unknown status name", canonical(r#""status":{"code":"ERROR"}"#), MalformedSpan),
        ("a uint32 that is negative", canonical(r#""flags":"-1""#), MalformedSpan),
        ("an integer with a fraction", canonical(r#""droppedLinksCount":1.5"#), MalformedSpan),
        ("a uint32 out of range", canonical(r#""flags":4294967296"#), MalformedSpan),
        ("a uint64 with a sign", canonical(r#""events":[{"timeUnixNano":"+5"}]"#), MalformedSpan),
        ("an enum as null", canonical(r#""kind":null"#), MalformedSpan),
        ("a time as null", r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"n","startTimeUnixNano":null}"#.to_string(), MalformedSpan),
        ("a boolean as null", canonical(r#""attributes":[{"key":"k","value":{"boolValue":null}}]"#), MalformedSpan),
        ("a boolean as a string", canonical(r#""attributes":[{"key":"k","value":{"boolValue":"true"}}]"#), MalformedSpan),
        ("an int that is not decimal", canonical(r#""attributes":[{"key":"k","value":{"intValue":"0x10"}}]"#), MalformedSpan),
        ("a double that is not a number", canonical(r#""attributes":[{"key":"k","value":{"doubleValue":"fast"}}]"#), MalformedSpan),
        ("bytes in URL-safe base64", canonical(r#""attributes":[{"key":"k","value":{"bytesValue":"-_8="}}]"#), MalformedSpan),
        ("bytes without padding", canonical(r#""attributes":[{"key":"k","value":{"bytesValue":"aGVsbG8"}}]"#), MalformedSpan),
        ("a trace id of the wrong length", r#"{"traceId":"5b8e","spanId":"eee19b7ec3c1b174","name":"n"}"#.to_string(), BadTraceId),
        ("a trace id that is not hex", r#"{"traceId":"zz8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"n"}"#.to_string(), BadTraceId),
        ("a trace id as a number", r#"{"traceId":5,"spanId":"eee19b7ec3c1b174","name":"n"}"#.to_string(), BadTraceId),
        ("a span id of the wrong length", r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b17400","name":"n"}"#.to_string(), BadSpanId),
        ("a parent span id as null", canonical(r#""parentSpanId":null"#), BadSpanId),
        // Read by the Collector (an empty id) but of no use to a sampler.
        ("an empty trace id", r#"{"traceId":"","spanId":"eee19b7ec3c1b174","name":"n","startTimeUnixNano":"1","endTimeUnixNano":"2"}"#.to_string(), BadTraceId),
    ]
}

#[test]
fn every_form_the_collector_reads_is_read_the_same_way() {
    for row in accepted() {
        let got = one(&row.written)
            .unwrap_or_else(|e| panic!("{}: rejected ({e:?}):\n{}", row.form, row.written));
        let want = one(&row.means).unwrap_or_else(|e| {
            panic!(
                "{}: the canonical form is rejected ({e:?}):\n{}",
                row.form, row.means
            )
        });
        assert_eq!(
            got.encoded(),
            want.encoded(),
            "{}: read differently from its canonical form\n{}\n{}",
            row.form,
            row.written,
            row.means
        );
    }
}

#[test]
fn every_form_the_collector_rejects_is_rejected_with_its_reason() {
    for (form, span, want) in rejected() {
        match one(&span) {
            Ok(_) => panic!("{form}: read, but the Collector rejects it:\n{span}"),
            Err(got) => assert_eq!(got, want, "{form}:\n{span}"),
        }
    }
}

/// The issue's message: enums as names, as protobuf's JSON mapping writes
/// them, read by the Collector's Kafka receiver — and now by tailgate, with
/// its kind and its error status.
#[test]
fn a_message_with_enum_names_is_read_with_its_kind_and_status() {
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeSpans":[{"scope":{"name":"x"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
      "name":"POST /pay","kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
      "status":{"code":"STATUS_CODE_ERROR","message":"card declined"}}]}]}]}"#;
    let d = decode(Bytes::from_static(json.as_bytes())).expect("read");
    assert!(d.rejected.is_empty());
    let (_, s) = &d.spans[0];
    assert_eq!(s.kind_name(), "server");
    assert!(s.error());
    assert_eq!(s.service(), "checkout");
}

/// The envelope's forms: snake_case, `deprecatedScopeSpans` where
/// `scopeSpans` are absent, nulls, and a resource and scope in snake_case.
#[test]
fn the_envelope_is_read_in_every_form() {
    let span = canonical(r#""status":{"code":2}"#);
    let bodies = [
        format!(
            r#"{{"resource_spans":[{{"resource":{SERVICE},"scope_spans":[{{"scope":{{"name":"s"}},"spans":[{span}],"schema_url":"u"}}],"schema_url":"r"}}]}}"#
        ),
        format!(
            r#"{{"resourceSpans":[{{"resource":{SERVICE},"deprecatedScopeSpans":[{{"scope":{{"name":"s"}},"spans":[{span}]}}]}}]}}"#
        ),
        format!(
            r#"{{"resourceSpans":[{{"resource":{SERVICE},"deprecated_scope_spans":[{{"spans":[{span}]}}],"scopeSpans":null,"schemaUrl":null}}]}}"#
        ),
        format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"string_value":"svc"}}}}],"dropped_attributes_count":"1","entity_refs":[{{"type":"service","id_keys":["service.name"]}}]}},"scopeSpans":[{{"scope":{{"name":"s","version":null,"dropped_attributes_count":2}},"spans":[{span}]}}]}}],"extra":true}}"#
        ),
    ];
    for body in bodies {
        let d = decode(Bytes::from(body.clone())).unwrap_or_else(|e| panic!("{e}\n{body}"));
        assert_eq!(d.spans.len(), 1, "{body}");
        assert!(d.rejected.is_empty(), "{:?}\n{body}", d.rejected);
        assert_eq!(d.spans[0].1.service(), "svc", "{body}");
        assert!(d.spans[0].1.error(), "{body}");
    }
    // A resource the Collector rejects loses its own spans only.
    let bad = format!(
        r#"{{"resourceSpans":[{{"resource":{{"droppedAttributesCount":"x"}},"scopeSpans":[{{"spans":[{span}]}}]}},{{"resource":{SERVICE},"scopeSpans":[{{"spans":[{span}]}}]}}]}}"#
    );
    let d = decode(Bytes::from(bad)).expect("the good resource is read");
    assert_eq!(d.spans.len(), 1);
    assert_eq!(d.rejected[0].kind, DecodeErrorKind::MalformedResource);
}
