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
    let d = r.decide(&TraceSummary::of(t.0, &t.1));
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
        let t = TraceSummary {
            trace_id: TraceId(id),
            span_count: 1,
            error: false,
            duration: Duration::ZERO,
            root: None,
        };
        let d = r.decide(&t);
        assert_eq!(d, r.decide(&t), "same trace, same decision");
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
            e.contains("expected `keep`, `drop` or `{ rate: <probability> }`"),
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
    let (bytes, _) =
        crate::otlp::encode_trace(&spans, r.annotation(1), crate::otlp::Encoding::OtlpJson);
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
