//! Reading and compiling rule files: what is accepted, what is rejected,
//! and how the error names the rule and the field.

use super::*;

fn compile_error(yaml: &str) -> RuleError {
    let specs: Vec<RuleSpec> = serde_yaml::from_str(yaml).expect("valid yaml");
    RuleSet::compile(&specs).expect_err("must be rejected")
}

#[test]
fn samplers_parse() {
    let specs: Vec<RuleSpec> = serde_yaml::from_str(
        "[{name: a, sample: keep}, {name: b, sample: drop}, {name: c, sample: {rate: 0.5}}]",
    )
    .unwrap();
    assert_eq!(specs[0].sample, Sample::named("keep"));
    assert_eq!(specs[1].sample, Sample::named("drop"));
    assert_eq!(specs[2].sample, Sample::with("rate", 0.5));
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
