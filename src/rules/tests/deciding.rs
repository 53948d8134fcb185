//! Deciding: the first matching rule decides, duration bounds, no match,
//! and the annotation kept spans carry.

use super::*;

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
fn annotations_carry_rule_and_adjusted_count() {
    let r = rules(
        "[{name: a, when: {trace: {error: true}}, sample: keep}, {name: b, sample: {rate: 0.25}}]",
    );
    assert_eq!(r.names().len(), 3);
    // Rule b keeps this trace (its randomness, 0xffff..., is above any
    // threshold) and says adjusted count 4: check it via an encoded span.
    let id = TraceId([0xff; 16]);
    let mut spans = test_spans(id, &[SpanSpec::new("s", "n", None, 0, 1)]);
    let d = r.decide(&TraceSummary::of(id, &spans), Duration::ZERO);
    assert!(d.keep);
    assert_eq!(d.rule, 1);
    let counted = Counted::of(
        &spans,
        &id,
        &TraceSummary::of(id, &spans).sampling,
        d.stage,
        &r.names()[d.rule],
        None,
    );
    counted.apply(&mut spans, &[]);
    let (bytes, _) =
        crate::otlp::encode_trace(&spans, &counted.annotation, crate::otlp::Encoding::OtlpJson);
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.contains(r#""key":"tailgate.rule","value":{"stringValue":"b"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#""key":"tailgate.adjusted_count","value":{"doubleValue":4.0}"#),
        "{text}"
    );
    assert!(text.contains(r#""traceState":"ot=th:c""#), "{text}");
}
