//! Conditions on the trace, its root, any or every span, combinators and
//! the critical path, each against the checkout trace; and `explain`.

use super::*;

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
