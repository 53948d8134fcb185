//! The command line without a broker: `check`, `explain`, `replay` and `demo`.

use std::process::Command;

use tailgate_testkit::{free_port, policy_dir};

fn tailgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tailgate"))
}

#[test]
fn check_accepts_every_shipped_policy() {
    let out = tailgate()
        .args(["check", "--policies"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for env in ["default", "demo", "production", "staging", "development"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok ") && l.contains(&format!("/{env}.yaml"))),
            "{env} not checked:\n{text}"
        );
    }
}

#[test]
fn check_points_at_the_mistake() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.yaml"),
        "rules:\n  - name: all\n    sample: keep\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prod.yaml"),
        "rules:\n  - name: errors\n    when: { trace: { error: true } }\n    sample: keep\n  - name: slow\n    when: { trace: { duraton: { gt: 2s } } }\n    sample: keep\n",
    )
    .unwrap();
    let out = tailgate()
        .args(["check", "--policies"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("ok    ") && text.contains("default.yaml"),
        "{text}"
    );
    let want = format!("error {}:6:", dir.path().join("prod.yaml").display());
    assert!(text.contains(&want), "want {want:?} in:\n{text}");
    assert!(
        text.contains("unknown field `duraton`, expected one of `error`, `duration`"),
        "{text}"
    );
}

#[test]
fn demo_runs_on_the_in_process_broker() {
    let port = free_port();
    let out = tailgate()
        .args([
            "demo",
            "--duration",
            "7s",
            "--rate",
            "300",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The final table: every demo rule, and a total whose kept traces all reached the output topic.
    for rule in [
        "drop-health-checks",
        "errors",
        "slow-checkout",
        "slow",
        "baseline",
    ] {
        assert!(text.contains(rule), "{rule} missing:\n{text}");
    }
    let last_total = text
        .lines()
        .rfind(|l| l.starts_with("total"))
        .expect("a total line");
    let kept: f64 = last_total
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(kept > 0.0, "{text}");
    let last_io = text
        .lines()
        .rfind(|l| l.starts_with("input:"))
        .expect("an input line");
    assert!(
        last_io.contains(&format!("output topic: {} messages", kept as u64)),
        "{last_io}\n{text}"
    );
}

/// Writes `n` shop traces as OTLP JSON lines and returns the file and the
/// traces' ids with the rule the library decides for each.
fn capture(
    dir: &std::path::Path,
    n: u64,
    rules: &str,
) -> (std::path::PathBuf, Vec<(String, String, bool)>) {
    use tailgate::otlp::{Encoding, SpanRecord};
    use tailgate::rules::{RuleSet, RuleSpec, TraceSummary};
    let specs: Vec<RuleSpec> = serde_yaml::from_str(rules).unwrap();
    let set = RuleSet::compile(&specs).unwrap();
    let mut w = tailgate::workload::ShopWorkload::new(11);
    let mut text = Vec::new();
    let mut decided = Vec::new();
    for i in 0..n {
        let t = w.next_trace(1_760_000_000_000_000_000 + i * 1_000_000);
        let mut spans: Vec<SpanRecord> = Vec::new();
        for m in &t.messages {
            let line = tailgate::workload::encode(m, Encoding::OtlpJson);
            spans.extend(
                tailgate::otlp::decode(bytes::Bytes::from(line.clone()))
                    .unwrap()
                    .spans
                    .into_iter()
                    .map(|(_, s)| s),
            );
            text.extend(line);
            text.push(b'\n');
        }
        let d = set.decide(
            &TraceSummary::of(t.truth.trace_id, &spans),
            std::time::Duration::ZERO,
        );
        decided.push((
            t.truth.trace_id.to_hex(),
            set.names()[d.rule].to_string(),
            d.keep,
        ));
    }
    let path = dir.join("capture.jsonl");
    std::fs::write(&path, text).unwrap();
    (path, decided)
}

const CLI_RULES: &str = "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: fraud-dominates, when: {critical_path: {service: fraud-detection, share: {gt: 40%}}}, sample: keep}, {name: baseline, sample: {rate: 0.2}}]";

#[test]
fn explain_names_the_deciding_rule_and_the_critical_path() {
    let policies = policy_dir(&format!("rules: {CLI_RULES}\n"));
    let (file, decided) = capture(policies.path(), 40, CLI_RULES);
    for (id, rule, keep) in decided.iter().take(5) {
        let out = tailgate()
            .args(["explain", "--env", "test", "--policies"])
            .arg(policies.path())
            .args(["--trace", id])
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.starts_with(&format!("trace {id}: 7 spans")), "{text}");
        assert!(text.contains("critical path ("), "{text}");
        let verdict = if *keep { "KEEP" } else { "DROP" };
        assert!(
            text.contains(&format!("decision: {verdict} by rule {rule:?}")),
            "want {verdict} by {rule}:\n{text}"
        );
    }
    let out = tailgate()
        .args(["explain", "--env", "test", "--policies"])
        .arg(policies.path())
        .args(["--trace", "0123456789abcdef0123456789abcdef"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn replay_reports_per_rule_what_the_rules_decide() {
    let policies = policy_dir(&format!("rules: {CLI_RULES}\n"));
    let (file, decided) = capture(policies.path(), 300, CLI_RULES);
    let out = tailgate()
        .args(["replay", "--json", "--env", "test", "--policies"])
        .arg(policies.path())
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["traces"], 300);
    assert_eq!(report["spans"], 2100);
    // Each trace's lines come within its quiet period: none decided in parts.
    assert_eq!(report["split_traces"], 0);
    for r in report["rules"].as_array().unwrap() {
        let name = r["rule"].as_str().unwrap();
        let kept = decided.iter().filter(|(_, n, k)| n == name && *k).count();
        let dropped = decided.iter().filter(|(_, n, k)| n == name && !*k).count();
        assert_eq!(r["traces_kept"], kept as u64, "{name}");
        assert_eq!(r["traces_dropped"], dropped as u64, "{name}");
    }
    let reduction = report["reduction"].as_f64().unwrap();
    assert!(reduction > 0.0 && reduction < 1.0, "{reduction}");
    // The human form has the same table.
    let out = tailgate()
        .args(["replay", "--env", "test", "--policies"])
        .arg(policies.path())
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fraud-dominates") && text.contains("% reduction"),
        "{text}"
    );
}

/// `tailgate route` says what is missing or wrong before it touches Kafka:
/// no unkeyed topic to read, or one that is a topic of `run`'s.
#[test]
fn route_names_a_missing_or_clashing_topic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.yaml"),
        "kafka:\n  brokers: 127.0.0.1:1\n  input_topic: spans\nrules:\n  - name: all\n    sample: keep\n",
    )
    .unwrap();
    let route = |extra: &[&str]| {
        let out = tailgate()
            .args(["route", "--policies"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = route(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("route.from_topic is not set"), "{err}");
    let (code, err) = route(&["--from", "spans"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("route.from_topic: must differ from kafka.input_topic (spans)"),
        "{err}"
    );
}

/// `tailgate check --sample` against a broker that is not there fails
/// with the reason, bounded, exit 1.
#[test]
fn check_sample_without_a_broker_says_so() {
    let out = tailgate()
        .args([
            "check",
            "--sample",
            "10",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "spans",
        ])
        .args(["--policies", "/nonexistent"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot read the metadata of spans from 127.0.0.1:1"),
        "{err}"
    );
}
