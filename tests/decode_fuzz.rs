//! The CI twin of the fuzz targets in `fuzz/` (docs/reliability.md, "Fuzzed
//! decoders"): the same checks (`fuzz/src/lib.rs`, included here) over the
//! fuzzers' corpus, arbitrary bytes, valid OTLP messages built like the unit
//! tests build them, and those messages with bytes flipped, inserted,
//! deleted, duplicated or cut off. A bounded number of cases, on stable.
//!
//! Checked for every input: no panic; one decode's largest allocation and
//! all its allocations within `check::decode_bound` of the input length
//! (this test binary counts allocations with its own global allocator); for
//! what decodes, decode → encode → decode gives the same spans in both
//! encodings, with and without an annotation, and `encode_within` splits
//! them into messages within its limit; for valid input, nothing rejected
//! and JSON output really JSON. Hangs: each case must finish within
//! `CASE_TIME`, generous for a debug build — the fuzzers run with
//! libFuzzer's `-timeout` for the rest.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod check;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, TracesData};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use tailgate::otlp::{Encoding, TraceId};
use tailgate::workload::{attr, build_trace, encode, int_attr, ShopWorkload, SpanSpec};

#[global_allocator]
static ALLOC: check::CountingAlloc = check::CountingAlloc;

/// Longest a single case may take (a debug build checks ~10 encodings per case).
const CASE_TIME: Duration = Duration::from_secs(2);

/// Runs one check, within [`CASE_TIME`].
fn timed(what: &str, f: impl FnOnce() -> check::Outcome) -> check::Outcome {
    let start = Instant::now();
    let outcome = f();
    let took = start.elapsed();
    assert!(took < CASE_TIME, "{what} took {took:?}");
    outcome
}

/// All three targets' checks on `payload` (as the `encode` target's message,
/// behind a header asking for `json_output` with an annotation).
fn all_checks(payload: &[u8], json_output: bool) -> [check::Outcome; 3] {
    [
        timed("protobuf", || check::protobuf(payload)),
        timed("json", || check::json(payload)),
        timed("encode", || {
            check::encode(&check::encode_input(
                json_output,
                Some(("rule", 2.0)),
                600,
                payload,
            ))
        }),
    ]
}

// ---------------------------------------------------------------------------
// Valid messages, built as the tests in src/otlp/tests/ build them

const SERVICES: [&str; 4] = ["gateway", "checkout", "fraud-detection", "ünïcode-svc"];

fn attribute() -> impl Strategy<Value = KeyValue> {
    let kv = |value| KeyValue {
        key: "k".into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    };
    prop_oneof![
        ("\\PC{0,12}", "\\PC{0,24}").prop_map(|(k, v)| attr(&k, &v)),
        ("[a-z.]{1,12}", any::<i64>()).prop_map(|(k, v)| int_attr(&k, v)),
        (-1e12f64..1e12).prop_map(move |d| kv(any_value::Value::DoubleValue(d))),
        any::<bool>().prop_map(move |b| kv(any_value::Value::BoolValue(b))),
        proptest::collection::vec(any::<u8>(), 0..12)
            .prop_map(move |b| kv(any_value::Value::BytesValue(b))),
        proptest::collection::vec(any::<i64>(), 0..3).prop_map(move |v| kv(
            any_value::Value::ArrayValue(ArrayValue {
                values: v
                    .into_iter()
                    .map(|i| AnyValue {
                        value: Some(any_value::Value::IntValue(i)),
                    })
                    .collect(),
            })
        )),
    ]
}

fn span_spec() -> impl Strategy<Value = (SpanSpec, Index)> {
    (
        0..SERVICES.len(),
        "\\PC{0,24}",
        0u64..1_000,
        0u64..1_000,
        any::<bool>(),
        0i32..6,
        proptest::collection::vec(attribute(), 0..4),
        any::<Index>(),
    )
        .prop_map(
            |(service, name, start, duration, error, kind, attributes, parent)| {
                let mut spec = SpanSpec::new(SERVICES[service], &name, None, start, duration);
                spec.error = error;
                spec.kind = SpanKind::try_from(kind).unwrap_or(SpanKind::Internal);
                spec.attributes = attributes;
                (spec, parent)
            },
        )
}

/// One trace's messages (one per service), as the Collector's exporter sends them.
fn trace() -> impl Strategy<Value = Vec<TracesData>> {
    (
        any::<[u8; 16]>(),
        0u64..1 << 62,
        proptest::collection::vec((span_spec(), any::<[u8; 8]>()), 1..8),
    )
        .prop_map(|(mut id, start, specs)| {
            id[0] |= 1;
            let ids: Vec<[u8; 8]> = specs.iter().map(|(_, id)| *id).collect();
            let specs: Vec<SpanSpec> = specs
                .into_iter()
                .enumerate()
                .map(|(i, ((mut spec, parent), _))| {
                    spec.parent = (i > 0).then(|| parent.index(i));
                    spec
                })
                .collect();
            build_trace(TraceId(id), &ids, start, &specs)
        })
}

/// A valid message: one to three traces, every resource in one `TracesData`,
/// or a shop trace's first message; and its span count.
fn valid_message() -> impl Strategy<Value = (TracesData, usize)> {
    prop_oneof![
        proptest::collection::vec(trace(), 1..3).prop_map(|traces| {
            let mut all = TracesData::default();
            for m in traces.into_iter().flatten() {
                all.resource_spans.extend(m.resource_spans);
            }
            let n = spans_in(&all);
            (all, n)
        }),
        (any::<u64>(), any::<bool>()).prop_map(|(seed, errors)| {
            let mut w = ShopWorkload::new(seed);
            if errors {
                w.error_rate = 1.0;
            }
            let m = w.next_trace(1_700_000_000_000_000_000).messages.remove(0);
            let n = spans_in(&m);
            (m, n)
        }),
    ]
}

fn spans_in(data: &TracesData) -> usize {
    data.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

// ---------------------------------------------------------------------------
// Mutations

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Duplicate(Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(payload: &mut Vec<u8>, m: &Mutation) {
    if payload.is_empty() {
        return;
    }
    let len = payload.len();
    match m {
        Mutation::Flip(i, bit) => payload[i.index(len)] ^= 1 << bit,
        Mutation::Set(i, b) => payload[i.index(len)] = *b,
        Mutation::Insert(i, b) => payload.insert(i.index(len + 1), *b),
        Mutation::Delete(i) => {
            payload.remove(i.index(len));
        }
        Mutation::Duplicate(i, n) => {
            let at = i.index(len);
            let piece = payload[at..(at + n).min(len)].to_vec();
            payload.splice(at..at, piece);
        }
        Mutation::Truncate(i) => payload.truncate(i.index(len)),
    }
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![Just(Encoding::OtlpProto), Just(Encoding::OtlpJson)]
}

/// `cases` cases, failures kept in `proptest-regressions/decode_fuzz.txt`.
/// The counts below keep the whole file under ~12 s in a debug build on one
/// core (valid messages, each round-tripped whole, cost the most).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/decode_fuzz.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Valid messages decode whole, and round-trip in both encodings.
    #[test]
    fn valid_messages_round_trip((message, spans) in valid_message(), enc in encoding()) {
        let payload = encode(&message, enc);
        let [proto, json, encoded] = all_checks(&payload, true);
        let read = match enc {
            Encoding::OtlpProto => proto,
            Encoding::OtlpJson => json,
        };
        check::assert_valid_bound(payload.len(), read.allocs);
        for o in [read, encoded] {
            prop_assert_eq!(o.spans, spans);
            prop_assert_eq!(o.rejected, 0);
            prop_assert_eq!(o.encoding, Some(enc));
            prop_assert!(o.json_output, "valid spans leave as JSON when asked");
        }
    }

}

/// Every key of a JSON value in camelCase to snake_case, where `pick` says.
fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Rewrites canonical OTLP JSON (what tailgate's encoder writes: camelCase,
/// enums as numbers, 64-bit integers as strings, lowercase hex) into the
/// other forms the Collector's reader accepts, each choice drawn from
/// `pick`: snake_case keys, enum names, integers as numbers, doubles as
/// strings, uppercase hex ids.
fn other_forms(v: &mut serde_json::Value, pick: &mut impl FnMut() -> bool) {
    use serde_json::Value;
    const KINDS: [&str; 6] = [
        "SPAN_KIND_UNSPECIFIED",
        "SPAN_KIND_INTERNAL",
        "SPAN_KIND_SERVER",
        "SPAN_KIND_CLIENT",
        "SPAN_KIND_PRODUCER",
        "SPAN_KIND_CONSUMER",
    ];
    const CODES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| other_forms(i, pick)),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (key, mut value) in old {
                let name = |i: &Value, names: &[&str]| {
                    i.as_u64()
                        .and_then(|n| names.get(n as usize))
                        .map(|n| Value::String(n.to_string()))
                };
                match key.as_str() {
                    "kind" if pick() => value = name(&value, &KINDS).unwrap_or(value),
                    "code" if pick() => value = name(&value, &CODES).unwrap_or(value),
                    "startTimeUnixNano" | "endTimeUnixNano" | "timeUnixNano" | "intValue"
                        if pick() =>
                    {
                        if let Some(n) = value.as_str().and_then(|t| t.parse::<i64>().ok()) {
                            value = Value::from(n);
                        }
                    }
                    "doubleValue" if pick() => {
                        if let Some(f) = value.as_f64() {
                            value = Value::String(format!("{f:e}"));
                        }
                    }
                    "traceId" | "spanId" | "parentSpanId" if pick() => {
                        if let Some(h) = value.as_str() {
                            value = Value::String(h.to_uppercase());
                        }
                    }
                    _ => other_forms(&mut value, pick),
                }
                let key = if pick() { snake(&key) } else { key };
                map.insert(key, value);
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Differential: a valid message written in the other forms the
    /// Collector's reader accepts decodes to exactly the spans of its
    /// canonical JSON (and of its protobuf), byte for byte, and passes the
    /// fuzz target's checks.
    #[test]
    fn every_json_form_reads_as_the_canonical_one((message, spans) in valid_message(), seed in any::<u64>()) {
        use rand::{Rng, SeedableRng};
        let canonical = encode(&message, Encoding::OtlpJson);
        let mut value: serde_json::Value = serde_json::from_slice(&canonical).expect("canonical JSON");
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        other_forms(&mut value, &mut || rng.random_bool(0.5));
        let variant = serde_json::to_vec(&value).expect("JSON");
        let read = |payload: &[u8]| {
            tailgate::otlp::decode(bytes::Bytes::copy_from_slice(payload))
                .map(|d| d.spans.into_iter().map(|(id, s)| (id, s.encoded().to_vec())).collect::<Vec<_>>())
        };
        let want = read(&canonical).expect("canonical decodes");
        let got = read(&variant);
        prop_assert!(got.is_ok(), "{:?}\n{}", got.err(), String::from_utf8_lossy(&variant));
        prop_assert_eq!(got.ok(), Some(want.clone()), "{}", String::from_utf8_lossy(&variant));
        prop_assert_eq!(want.len(), spans);
        let [_, json, _] = all_checks(&variant, true);
        prop_assert_eq!(json.spans, spans);
        prop_assert_eq!(json.rejected, 0);
    }
}

proptest! {
    #![proptest_config(config(2048))]

    /// Valid messages with a few bytes changed: whatever still decodes
    /// round-trips, nothing panics, allocations stay bounded.
    #[test]
    fn mutated_messages_are_handled(
        (message, _) in valid_message(),
        enc in encoding(),
        mutations in proptest::collection::vec(mutation(), 1..5),
        json_output in any::<bool>(),
    ) {
        let mut payload = encode(&message, enc);
        for m in &mutations {
            mutate(&mut payload, m);
        }
        all_checks(&payload, json_output);
    }

}

proptest! {
    #![proptest_config(config(4096))]

    /// Arbitrary bytes, bare or behind the first bytes of either encoding.
    #[test]
    fn arbitrary_bytes_are_handled(
        prefix in prop_oneof![
            Just(&b""[..]),
            Just(&b"\x0a"[..]),
            Just(&b"{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["[..]),
        ],
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        json_output in any::<bool>(),
    ) {
        let mut payload = prefix.to_vec();
        payload.extend_from_slice(&bytes);
        all_checks(&payload, json_output);
    }
}

// ---------------------------------------------------------------------------
// The corpus

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Every file the fuzzers kept, through its target's checks; the largest
/// allocation ratio among them is printed (`--nocapture`).
#[test]
fn the_fuzz_corpus_passes_the_checks() {
    type Target = fn(&[u8]) -> check::Outcome;
    let targets: [(&str, Target); 3] = [
        ("protobuf", check::protobuf),
        ("json", check::json),
        ("encode", check::encode),
    ];
    for (target, run) in targets {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 10,
            "{target}: only {} corpus files",
            files.len()
        );
        let (mut decoded, mut worst, mut slowest) = (0, (0.0f64, 0usize), Duration::ZERO);
        for file in &files {
            let data = std::fs::read(file).expect("corpus file");
            let start = Instant::now();
            let o = timed(&file.display().to_string(), || run(&data));
            slowest = slowest.max(start.elapsed());
            decoded += usize::from(o.encoding.is_some());
            if data.len() >= 64 {
                let ratio = o.allocs.largest as f64 / data.len() as f64;
                if ratio > worst.0 {
                    worst = (ratio, data.len());
                }
            }
        }
        eprintln!(
            "{target}: {} files, {decoded} decode; largest allocation / input at most {:.1} ({} bytes); slowest {slowest:?}",
            files.len(),
            worst.0,
            worst.1
        );
    }
}

// ---------------------------------------------------------------------------
// The worst cases for allocation, measured

/// A protobuf `TracesData` of `n` empty spans in one scope.
fn empty_spans_proto(n: usize) -> Vec<u8> {
    use tailgate::otlp::wire::put_len;
    let mut scope = Vec::new();
    for _ in 0..n {
        put_len(&mut scope, 2, &[]);
    }
    let mut rs = Vec::new();
    put_len(&mut rs, 2, &scope);
    let mut out = Vec::new();
    put_len(&mut out, 1, &rs);
    out
}

/// A protobuf `TracesData` of `n` minimal valid spans (a trace id and a
/// span id, nothing else) in one scope.
fn minimal_spans_proto(n: usize) -> Vec<u8> {
    use tailgate::otlp::wire::put_len;
    let mut span = Vec::new();
    put_len(&mut span, 1, &[1; 16]);
    put_len(&mut span, 2, &[2; 8]);
    let mut scope = Vec::new();
    for _ in 0..n {
        put_len(&mut scope, 2, &span);
    }
    let mut rs = Vec::new();
    put_len(&mut rs, 2, &scope);
    let mut out = Vec::new();
    put_len(&mut out, 1, &rs);
    out
}

/// OTLP JSON of `n` copies of `span` in one scope.
fn json_of(span: &str, n: usize) -> String {
    let spans = vec![span; n].join(",");
    format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#)
}

fn report(what: &str, payload: &[u8], o: &check::Outcome) {
    eprintln!(
        "{what}, {} bytes: largest allocation {} ({:.1} x), all {} ({:.1} x)",
        payload.len(),
        o.allocs.largest,
        o.allocs.largest as f64 / payload.len() as f64,
        o.allocs.total,
        o.allocs.total as f64 / payload.len() as f64,
    );
}

/// Messages of nothing but empty spans (each rejected) are what makes a
/// decode allocate most per input byte, and messages of the smallest valid
/// spans what makes it allocate most for valid input; the bounds hold for
/// them at every size. The ratios are printed (`--nocapture`).
#[test]
fn the_worst_messages_allocate_within_the_bounds() {
    let (_, sanity) = check::measure(|| Vec::<u8>::with_capacity(1000));
    assert!(
        sanity.largest >= 1000,
        "the counting allocator is installed"
    );
    let minimal_json = format!(
        r#"{{"traceId":"{}","spanId":"{}"}}"#,
        "01".repeat(16),
        "02".repeat(8)
    );
    for n in [1, 10, 1_000, 30_000] {
        let proto = empty_spans_proto(n);
        let o = timed("protobuf", || check::protobuf(&proto));
        assert_eq!(o.spans, 0, "empty spans are rejected");
        report(&format!("protobuf, {n} empty spans"), &proto, &o);
        let json = json_of("{}", n);
        let o = timed("json", || check::json(json.as_bytes()));
        assert_eq!(o.spans, 0, "empty spans are rejected");
        report(&format!("json, {n} empty spans"), json.as_bytes(), &o);
    }
    for n in [1, 10, 300, 3_000] {
        let proto = minimal_spans_proto(n);
        let o = timed("protobuf", || check::protobuf(&proto));
        assert_eq!(o.spans, n);
        check::assert_valid_bound(proto.len(), o.allocs);
        report(&format!("protobuf, {n} minimal spans"), &proto, &o);
        let json = json_of(&minimal_json, n);
        let o = timed("json", || check::json(json.as_bytes()));
        assert_eq!(o.spans, n);
        check::assert_valid_bound(json.len(), o.allocs);
        report(&format!("json, {n} minimal spans"), json.as_bytes(), &o);
    }
}

// ---------------------------------------------------------------------------
// Seeds

/// Writes the seed inputs the fuzzers started from into `fuzz/corpus`:
/// `cargo test --test decode_fuzz -- --ignored write_seed_corpus`. (The
/// corpus kept in the repository is these and what the fuzzers added,
/// minimised with `cargo fuzz cmin`.)
#[test]
#[ignore = "writes fuzz/corpus; run by hand before fuzzing"]
fn write_seed_corpus() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let mut messages: Vec<TracesData> = Vec::new();
    for seed in 0..4 {
        let mut w = ShopWorkload::new(seed);
        w.error_rate = 0.5;
        messages.extend(w.next_trace(1_700_000_000_000_000_000).messages);
    }
    for _ in 0..12 {
        let (m, _) = valid_message()
            .new_tree(&mut runner)
            .expect("a message")
            .current();
        messages.push(m);
    }
    let write = |target: &str, i: usize, data: &[u8]| {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(format!("seed-{i:03}")), data).expect("seed");
    };
    for (i, m) in messages.iter().enumerate() {
        let proto = encode(m, Encoding::OtlpProto);
        let json = encode(m, Encoding::OtlpJson);
        write("protobuf", i, &proto);
        write("json", i, &json);
        let rule = (i % 3 != 0).then_some(("errors", 1.0 + i as f64));
        let limit = if i % 2 == 0 { 200 } else { 4000 };
        write(
            "encode",
            2 * i,
            &check::encode_input(i % 2 == 0, rule, limit, &proto),
        );
        write(
            "encode",
            2 * i + 1,
            &check::encode_input(i % 2 == 1, rule, limit, &json),
        );
    }
}
