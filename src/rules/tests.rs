use super::*;
use crate::otlp::test_spans;
use crate::workload::SpanSpec;

fn rules(yaml: &str) -> RuleSet {
    let specs: Vec<RuleSpec> = serde_yaml::from_str(yaml).expect("valid yaml");
    RuleSet::compile(&specs).expect("valid rules")
}

fn compile_error(yaml: &str) -> RuleError {
    let specs: Vec<RuleSpec> = serde_yaml::from_str(yaml).expect("valid yaml");
    RuleSet::compile(&specs).expect_err("must be rejected")
}

/// A trace: a root in `service` named `name` lasting `ms`, a child that errs if `error`.
fn trace(
    n: u8,
    service: &'static str,
    name: &str,
    ms: u64,
    error: bool,
    with_root: bool,
) -> (TraceId, Vec<SpanRecord>) {
    let id = TraceId([n; 16]);
    let mut child = SpanSpec::new("backend", "work", Some(0), 1, ms / 2);
    child.error = error;
    let mut spans = test_spans(id, &[SpanSpec::new(service, name, None, 0, ms), child]);
    if !with_root {
        spans.remove(0);
    }
    (id, spans)
}

fn decide<'a>(r: &'a RuleSet, t: &(TraceId, Vec<SpanRecord>)) -> (bool, &'a str) {
    let d = r.decide(&TraceSummary::of(t.0, &t.1), Duration::ZERO);
    (d.keep, &r.names()[d.rule])
}

const POLICY: &str = r#"
- name: health
  when: { root: { name: GET /healthz } }
  sample: drop
- name: errors
  when: { trace: { error: true } }
  sample: keep
- name: slow-checkout
  when: { root: { service: checkout, name: POST /pay }, trace: { duration: { gt: 1s } } }
  sample: keep
- name: slow
  when: { trace: { duration: { gte: 3s } } }
  sample: keep
- name: fast-ok
  when: { trace: { error: false, duration: { lt: 10ms } } }
  sample: drop
- name: baseline
  sample: { rate: 1.0 }
"#;

#[test]
fn first_matching_rule_decides() {
    let r = rules(POLICY);
    let cases = [
        // (trace, expected keep, expected rule)
        (
            trace(1, "gateway", "GET /healthz", 1, true, true),
            false,
            "health",
        ),
        (trace(2, "gateway", "GET /", 50, true, true), true, "errors"),
        (
            trace(3, "checkout", "POST /pay", 1_500, false, true),
            true,
            "slow-checkout",
        ),
        (
            trace(4, "checkout", "POST /pay", 900, false, true),
            true,
            "baseline",
        ),
        (
            trace(5, "checkout", "GET /cart", 1_500, false, true),
            true,
            "baseline",
        ),
        (trace(6, "other", "GET /", 3_000, false, true), true, "slow"),
        (
            trace(7, "other", "GET /", 2_999, false, true),
            true,
            "baseline",
        ),
        (trace(8, "other", "GET /", 5, false, true), false, "fast-ok"),
        // Without a root, root conditions never match; duration is measured over what arrived.
        (
            trace(9, "checkout", "POST /pay", 4_000, false, false),
            true,
            "baseline",
        ),
    ];
    for (t, keep, rule) in &cases {
        assert_eq!(decide(&r, t), (*keep, *rule), "trace {}", t.0);
    }
}

#[test]
fn duration_bounds() {
    for (yaml, ms, want) in [
        ("{ gt: 100ms }", 100, false),
        ("{ gt: 100ms }", 101, true),
        ("{ gte: 100ms }", 100, true),
        ("{ lt: 100ms }", 100, false),
        ("{ lte: 100ms }", 100, true),
        ("{ gt: 1s, lt: 2s }", 1_500, true),
        ("{ gt: 1s, lt: 2s }", 2_500, false),
    ] {
        let r = rules(&format!(
            "- {{ name: d, when: {{ trace: {{ duration: {yaml} }} }}, sample: keep }}"
        ));
        let t = trace(1, "s", "n", ms, false, true);
        assert_eq!(decide(&r, &t).1 == "d", want, "{yaml} with {ms} ms");
    }
}

#[test]
fn no_match_is_dropped_as_unmatched() {
    let r = rules("- { name: errors, when: { trace: { error: true } }, sample: keep }");
    assert_eq!(
        decide(&r, &trace(1, "s", "n", 5, false, true)),
        (false, UNMATCHED)
    );
}

#[test]
fn rate_is_deterministic_and_near_its_probability() {
    let r = rules("- { name: baseline, sample: { rate: 0.2 } }");
    let mut kept = 0;
    let n = 20_000u32;
    for i in 0..n {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        // A cheap mix so the low 56 bits look random, as real trace ids are.
        let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        id[8..].copy_from_slice(&h.to_be_bytes());
        let t = TraceSummary::of(TraceId(id), &[]);
        let d = r.decide(&t, Duration::ZERO);
        assert_eq!(d, r.decide(&t, Duration::ZERO), "same trace, same decision");
        assert_eq!(d.sample_rate, 0.2);
        kept += usize::from(d.keep);
    }
    let got = kept as f64 / n as f64;
    assert!((got - 0.2).abs() < 0.015, "kept {got}");
}

#[test]
fn samplers_parse() {
    let specs: Vec<RuleSpec> = serde_yaml::from_str(
        "[{name: a, sample: keep}, {name: b, sample: drop}, {name: c, sample: {rate: 0.5}}]",
    )
    .unwrap();
    assert_eq!(specs[0].sample, Sample::Keep);
    assert_eq!(specs[1].sample, Sample::Drop);
    assert_eq!(specs[2].sample, Sample::Rate(0.5));
    for bad in [
        "{name: a, sample: maybe}",
        "{name: a, sample: {ratio: 0.5}}",
        "{name: a, sample: {}}",
    ] {
        let e = serde_yaml::from_str::<RuleSpec>(bad)
            .expect_err(bad)
            .to_string();
        assert!(
            e.contains("expected `keep`, `drop`, `{ rate: <probability> }`"),
            "{bad}: {e}"
        );
    }
    let e =
        serde_yaml::from_str::<RuleSpec>("{name: a, when: {trace: {eror: true}}, sample: keep}")
            .unwrap_err();
    assert!(e.to_string().contains("unknown field `eror`"), "{e}");
}

#[test]
fn invalid_rules_are_rejected_naming_rule_and_field() {
    let e = compile_error("[]");
    assert_eq!(e.field, "rules");
    for (rate, yaml) in [("0", "0.0"), ("1.5", "1.5"), ("-1", "-1")] {
        let e = compile_error(&format!("- {{ name: base, sample: {{ rate: {yaml} }} }}"));
        assert_eq!(
            (e.rule.as_str(), e.field.as_str()),
            ("base", "sample.rate"),
            "rate {rate}"
        );
    }
    let e = compile_error("[{name: a, sample: keep}, {name: a, sample: drop}]");
    assert_eq!(
        (e.rule.as_str(), e.field.as_str(), e.index),
        ("a", "name", 1)
    );
    let e = compile_error("[{name: '', sample: keep}]");
    assert_eq!((e.rule.as_str(), e.field.as_str()), ("#1", "name"));
    let e = compile_error("[{name: unmatched, sample: keep}]");
    assert_eq!(e.field, "name");
    let e = compile_error("[{name: d, when: {trace: {duration: {}}}, sample: keep}]");
    assert_eq!(e.field, "when.trace.duration");
}

#[test]
fn annotations_carry_rule_and_adjusted_count() {
    let r = rules("[{name: a, sample: keep}, {name: b, sample: {rate: 0.25}}]");
    assert_eq!(r.names().len(), 3);
    // The annotation of rule b says adjusted count 4: check it via an encoded span.
    let spans = test_spans(TraceId([1; 16]), &[SpanSpec::new("s", "n", None, 0, 1)]);
    let (bytes, _) = crate::otlp::encode_trace(
        &spans,
        &r.annotation(&Decision {
            keep: true,
            rule: 1,
            sample_rate: 0.25,
        }),
        crate::otlp::Encoding::OtlpJson,
    );
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.contains(r#""key":"tailgate.rule","value":{"stringValue":"b"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#""key":"tailgate.adjusted_count","value":{"doubleValue":4.0}"#),
        "{text}"
    );
}

// ---- The full language: span conditions, combinators, critical path, samplers.

use crate::workload::{attr, int_attr};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// A checkout trace (times in ms):
///
/// ```text
/// gateway  POST /checkout  0 ─────────────────────────── 1000   (server)
///   checkout  place-order     10 ──────────────────── 900
///     fraud-detection POST /score  100 ──────── 800   (error if `error`)
///   inventory  reserve        20 ──── 300                     (parallel)
/// ```
fn checkout_trace(error: bool) -> Vec<SpanRecord> {
    let mut root = SpanSpec::new("gateway", "POST /checkout", None, 0, 1000);
    root.attributes = vec![
        attr("http.route", "/checkout"),
        int_attr("http.response.status_code", if error { 500 } else { 200 }),
    ];
    let mut checkout = SpanSpec::new("checkout", "place-order", Some(0), 10, 890);
    checkout.kind = SpanKind::Server;
    let mut fraud = SpanSpec::new("fraud-detection", "POST /score", Some(1), 100, 700);
    fraud.kind = SpanKind::Client;
    fraud.error = error;
    fraud.attributes = vec![attr("peer.service", "riskscore")];
    let inventory = SpanSpec::new("inventory", "reserve", Some(0), 20, 280);
    test_spans(TraceId([7; 16]), &[root, checkout, fraud, inventory])
}

fn decide_rule(r: &RuleSet, spans: &[SpanRecord]) -> String {
    let d = r.decide(&TraceSummary::of(TraceId([7; 16]), spans), Duration::ZERO);
    r.names()[d.rule].to_string()
}

/// Each condition, alone, either matches the checkout trace or not.
#[test]
fn every_condition_reads_the_trace() {
    let spans = checkout_trace(false);
    let cases = [
        // trace level
        ("{ trace: { span_count: 4 } }", true),
        ("{ trace: { span_count: { gt: 4 } } }", false),
        ("{ trace: { has_root: true } }", true),
        ("{ trace: { duration: { gte: 1s } } }", true),
        // root
        ("{ root: { service: gateway, kind: server } }", true),
        ("{ root: { name: { regex: '^POST ' } } }", true),
        ("{ root: { name: { regex: '^GET ' } } }", false),
        (
            "{ root: { attribute: { http.response.status_code: { gte: 500 } } } }",
            false,
        ),
        (
            "{ root: { attribute: { http.response.status_code: [200, 201] } } }",
            true,
        ),
        (
            "{ root: { attribute: { http.response.status_code: '200' } } }",
            true,
        ),
        // some span / every span, attributes of span and resource
        ("{ span: { service: fraud-detection, kind: client } }", true),
        (
            "{ span: { service: fraud-detection, kind: server } }",
            false,
        ),
        ("{ span: { attribute: { peer.service: riskscore } } }", true),
        (
            "{ span: { attribute: { peer.service: { exists: false } } } }",
            true,
        ),
        (
            "{ every_span: { attribute: { peer.service: { exists: true } } } }",
            false,
        ),
        (
            "{ every_span: { attribute: { k8s.pod.name: { exists: true } } } }",
            true,
        ),
        ("{ span: { resource: { service.version: 1.8.2 } } }", true),
        ("{ span: { resource: { peer.service: riskscore } } }", false),
        (
            "{ span: { attribute: { service.name: { in: [inventory, billing] } } } }",
            true,
        ),
        (
            "{ span: { attribute: { http.route: { not_in: [/checkout] } } } }",
            true,
        ),
        (
            "{ every_span: { attribute: { http.route: { not_equals: /healthz } } } }",
            true,
        ),
        (
            "{ span: { name: reserve, duration: { gt: 250ms, lt: 300ms } } }",
            true,
        ),
        ("{ span: { status: error } }", false),
        ("{ every_span: { status: [unset, ok] } }", true),
        // combinators
        (
            "{ any: [ { trace: { error: true } }, { root: { service: gateway } } ] }",
            true,
        ),
        (
            "{ all: [ { trace: { error: true } }, { root: { service: gateway } } ] }",
            false,
        ),
        ("{ not: { trace: { error: true } } }", true),
        ("{ not: { span: { service: inventory } } }", false),
        // critical path: fraud-detection 700 of 1000 ms
        (
            "{ critical_path: { service: fraud-detection, share: { gt: 50% } } }",
            true,
        ),
        (
            "{ critical_path: { service: fraud-detection, share: { gt: 0.75 } } }",
            false,
        ),
        (
            "{ critical_path: { service: fraud-detection, duration: { gt: 650ms } } }",
            true,
        ),
        (
            "{ critical_path: { service: inventory, duration: { gt: 0s } } }",
            false,
        ),
        (
            "{ critical_path: { name: place-order, duration: { gte: 190ms, lte: 190ms } } }",
            true,
        ),
        ("{ critical_path: { total: { gte: 1s } } }", true),
    ];
    for (when, want) in cases {
        let r = rules(&format!("- {{ name: r, when: {when}, sample: keep }}"));
        assert_eq!(decide_rule(&r, &spans) == "r", want, "{when}");
    }
}

#[test]
fn critical_path_walks_into_the_child_that_finished_last() {
    let spans = checkout_trace(false);
    let cp = CriticalPath::of(&spans);
    assert_eq!(cp.total_ns, 1_000_000_000);
    let steps: Vec<(String, u64)> = cp
        .steps()
        .iter()
        .map(|(i, ns)| (spans[*i].name().into_owned(), ns / 1_000_000))
        .collect();
    assert_eq!(
        steps,
        [
            ("POST /checkout".to_string(), 10 + 100),
            ("place-order".to_string(), 90 + 100),
            ("POST /score".to_string(), 700),
        ]
    );
    let covered: u64 = cp.segments.iter().map(|s| s.end_ns - s.start_ns).sum();
    assert_eq!(covered, cp.total_ns, "every instant attributed once");
    assert!(cp.segments.windows(2).all(|w| w[0].end_ns == w[1].start_ns));
}

/// A message consumed after the request that produced it returned, in the same
/// trace: the hop and the consumer are on the path.
#[test]
fn critical_path_crosses_a_kafka_hop() {
    let root = SpanSpec::new("gateway", "POST /order", None, 0, 100);
    let mut publish = SpanSpec::new("gateway", "orders publish", Some(0), 50, 10);
    publish.kind = SpanKind::Producer;
    let mut process = SpanSpec::new("indexer", "orders process", Some(1), 200, 700);
    process.kind = SpanKind::Consumer;
    let spans = test_spans(TraceId([9; 16]), &[root, publish, process]);
    let cp = CriticalPath::of(&spans);
    assert_eq!(cp.total_ns, 900_000_000);
    let ms = |name: &str| cp.time_in(&spans, |s| s.name() == name) / 1_000_000;
    assert_eq!(
        (
            ms("POST /order"),
            ms("orders publish"),
            ms("orders process")
        ),
        (50, 150, 700)
    );
}

#[test]
fn critical_path_survives_missing_roots_and_cycles() {
    let mut spans = checkout_trace(false);
    spans.remove(0); // no root: start from the top span that ends last
    let cp = CriticalPath::of(&spans);
    assert_eq!(cp.total_ns, 890_000_000);
    // A span that is its own parent, and two that point at each other.
    let mut a = spans[0].clone();
    a.parent_span_id = a.span_id;
    let mut b = spans[1].clone();
    let mut c = spans[2].clone();
    b.span_id = [0xb; 8];
    c.span_id = [0xc; 8];
    b.parent_span_id = c.span_id;
    c.parent_span_id = b.span_id;
    let cp = CriticalPath::of(&[a, b, c]);
    assert!(cp.total_ns > 0);
    assert_eq!(CriticalPath::of(&[]), CriticalPath::default());
}

#[test]
fn compile_errors_name_the_field() {
    let cases = [
        (
            "when: { span: { service: { gt: 3 } } }",
            "when.span.service.gt",
            "numbers and durations",
        ),
        (
            "when: { trace: { duration: { gt: 2 } } }",
            "when.trace.duration.gt",
            "no unit",
        ),
        (
            "when: { trace: { duration: 2s } }",
            "when.trace.duration",
            "gt, gte, lt or lte",
        ),
        (
            "when: { trace: { duration: { gt: soon } } }",
            "when.trace.duration.gt",
            "not a duration",
        ),
        (
            "when: { root: { kind: severe } }",
            "when.root.kind",
            "server",
        ),
        (
            "when: { root: { status: { in: [bad] } } }",
            "when.root.status.in",
            "unset, ok, error",
        ),
        (
            "when: { any: [ { trace: { error: true } }, { span: { name: { regex: 'a(' } } } ] }",
            "when.any[1].span.name.regex",
            "invalid regex",
        ),
        (
            "when: { span: { attribute: { http.route: { regex: '(' } } } }",
            "when.span.attribute.http.route.regex",
            "invalid regex",
        ),
        (
            "when: { span: { service: { exists: true } } }",
            "when.span.service.exists",
            "attributes",
        ),
        (
            "when: { span: { attribute: { a: {} } } }",
            "when.span.attribute.a",
            "no operator",
        ),
        ("when: { any: [] }", "when.any", "empty"),
        (
            "when: { critical_path: { service: db } }",
            "when.critical_path",
            "duration, share or total",
        ),
        (
            "when: { critical_path: { share: { gt: 150% } } }",
            "when.critical_path.share.gt",
            "between 0 and 1",
        ),
        (
            "when: { trace: { span_count: { regex: x } } }",
            "when.trace.span_count.regex",
            "applies to text",
        ),
        (
            "sample: { limit: { traces_per_second: 1, spans_per_second: 1 } }",
            "sample.limit",
            "exactly one",
        ),
        (
            "sample: { limit: { traces_per_second: 0 } }",
            "sample.limit",
            "above zero",
        ),
        (
            "sample: { dynamic: { key: [], target_per_second: 5 } }",
            "sample.dynamic.key",
            "fields",
        ),
        (
            "sample: { dynamic: { key: [a], target_per_second: 5, smoothing: 2 } }",
            "sample.dynamic.smoothing",
            "(0, 1]",
        ),
    ];
    for (body, field, message) in cases {
        let yaml = if body.starts_with("sample") {
            format!("- {{ name: r, {body} }}")
        } else {
            format!("- {{ name: r, {body}, sample: keep }}")
        };
        let e = compile_error(&yaml);
        assert_eq!(
            (e.rule.as_str(), e.field.as_str()),
            ("r", field),
            "{body}: {e}"
        );
        assert!(e.message.contains(message), "{body}: {}", e.message);
    }
    // Misspelt keys and operators fail when the file is read, with a line.
    for bad in [
        "- { name: r, when: { span: { servce: a } }, sample: keep }",
        "- { name: r, when: { span: { service: { equal: a } } }, sample: keep }",
        "- { name: r, when: { critical_path: { share: { gt: 0.5 }, services: a } }, sample: keep }",
        "- { name: r, sample: { rate: 0.5, limit: { traces_per_second: 1 } } }",
    ] {
        let e = serde_yaml::from_str::<Vec<RuleSpec>>(bad).expect_err(bad);
        assert!(e.location().is_some(), "{bad}: {e}");
    }
}

#[test]
fn explain_says_why_rule_by_rule() {
    let r = rules(
        r#"
- name: errors
  when: { trace: { error: true } }
  sample: keep
- name: fraud-dominates
  when:
    critical_path: { service: fraud-detection, share: { gt: 50% }, duration: { gt: 500ms } }
  sample: keep
"#,
    );
    let spans = checkout_trace(false);
    let t = TraceSummary::of(TraceId([7; 16]), &spans);
    let e = r.explain(&t, Duration::ZERO);
    assert_eq!(e.decision.rule, 1);
    assert!(e.decision.keep);
    assert_eq!(e.rules.len(), 2);
    assert!(!e.rules[0].1.ok);
    assert_eq!(e.rules[0].1.text, "trace has an error: no (wanted true)");
    let text = &e.rules[1].1.text;
    assert!(text.contains("share 70.0% > 50.0%"), "{text}");
    assert!(text.contains("time 700ms > 500ms"), "{text}");
    assert_eq!(e.decision, r.decide(&t, Duration::ZERO));
}

#[test]
fn limit_keeps_n_per_second_and_reports_the_rate_it_saw() {
    let r = rules("- { name: capped, sample: { limit: { traces_per_second: 5 } } }");
    let spans = checkout_trace(false);
    let t = TraceSummary::of(TraceId([7; 16]), &spans);
    let at = |ms: u64| Duration::from_millis(ms);
    let kept: usize = (0..20)
        .map(|i| usize::from(r.decide(&t, at(1_000 + i * 10)).keep))
        .sum();
    assert_eq!(kept, 5);
    let d = r.decide(&t, at(2_000));
    assert!(d.keep);
    assert_eq!(d.sample_rate, 0.25, "5 of 20 kept in the previous second");
    let a = r.annotation(&d);
    let (bytes, _) = crate::otlp::encode_trace(&spans, &a, crate::otlp::Encoding::OtlpJson);
    let text = String::from_utf8(bytes).expect("json");
    assert!(
        text.contains(r#""key":"tailgate.adjusted_count","value":{"doubleValue":4.0}"#),
        "{text}"
    );
}

#[test]
fn dynamic_keys_come_from_the_root_and_rare_keys_are_kept_more() {
    let r = rules(
        "- { name: per-route, sample: { dynamic: { key: [service.name, http.route, trace.error], target_per_second: 2, interval: 1s } } }",
    );
    let ok = checkout_trace(false);
    let t = TraceSummary::of(TraceId([7; 16]), &ok);
    assert_eq!(
        dynamic_key(
            &t,
            &[
                "service.name".into(),
                "http.route".into(),
                "trace.error".into(),
                "span.kind".into(),
                "nope".into()
            ]
        ),
        "gateway\u{1f}/checkout\u{1f}false\u{1f}server\u{1f}"
    );
    // 100 ok traces per second and 1 error trace per second, for 5 s.
    let err = checkout_trace(true);
    let mut last = (0.0, 0.0);
    for ms in 0..5_000u64 {
        let spans = if ms % 100 == 0 && ms % 1000 == 0 {
            &err
        } else {
            &ok
        };
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&(ms.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes());
        let t = TraceSummary::of(TraceId(id), spans);
        if ms % 10 != 0 {
            continue;
        }
        let d = r.decide(&t, Duration::from_millis(ms));
        if t.error {
            last.0 = d.sample_rate;
        } else {
            last.1 = d.sample_rate;
        }
    }
    let (rare, frequent) = last;
    assert_eq!(rare, 1.0, "the error key is rare and kept");
    assert!(frequent < 0.05, "the ok key is sampled: {frequent}");
}
