//! `tailgate why` on a real broker: decision records in a decision log and
//! the traces' spans in the input topic, on a partition their keys do not
//! hash to; the command finds the latest record, the spans, and explains
//! them with the live rules.
#![cfg(feature = "kafka-tests")]

use std::path::Path;
use std::process::{Command, Output};

use tailgate::buffer::Reason;
use tailgate::otlp::{Encoding, TraceId};
use tailgate::pipeline::{LoggedDecision, RecordBatch};
use tailgate::workload::{encode, GeneratedTrace};
use tailgate_testkit::*;

/// The input partition the traces are read from, and their log partition.
const PARTITION: i32 = 2;

/// `tailgate why` with the policy directory and the extra settings file.
fn why(dir: &Path, extra: &Path, args: &[&str]) -> (Output, String, String) {
    let out = Command::new(tailgate_bin!())
        .arg("why")
        .args(args)
        .arg("--policies")
        .arg(dir)
        .args(["--env", "test", "--config"])
        .arg(extra)
        .output()
        .expect("run tailgate why");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// The messages of `t`, keyed by its trace id.
fn messages(t: &GeneratedTrace) -> Vec<(String, Vec<u8>)> {
    let key = t.truth.trace_id.to_hex();
    t.messages
        .iter()
        .map(|m| (key.clone(), encode(m, Encoding::OtlpProto)))
        .collect()
}

/// Decision records, each on its input partition, in order: on partition
/// 0 as an earlier tailgate wrote them (version 1, one JSON record keyed by
/// its trace), on the others as batches (version 2), one each.
async fn log(topic: &str, records: &[LoggedDecision]) {
    for p in 0..3 {
        let on: Vec<(String, Vec<u8>)> = records
            .iter()
            .filter(|d| d.partition == p)
            .enumerate()
            .map(|(n, d)| match p {
                0 => (d.trace_id.clone(), d.encode_json()),
                _ => (
                    format!("{p}-test-{n}"),
                    RecordBatch::of(std::slice::from_ref(d)).expect("a batch"),
                ),
            })
            .collect();
        produce_to(topic, p, &on).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_finds_the_latest_decision_and_explains_it_with_the_live_rules() {
    let (input, decisions) = (unique("why-in"), unique("why-log"));
    create_topic(&input, 3).await;
    create_topic(&decisions, 3).await;
    let w = Workload::shop(11, 400);
    let truth = w.decisions(RULES);
    let pick = |rule: &str| {
        w.traces
            .iter()
            .find(|t| truth[&t.truth.trace_id].1 == rule && !t.truth.health_check)
            .unwrap_or_else(|| panic!("a trace decided by {rule}"))
    };
    let kept = pick("errors");
    let dropped = w
        .traces
        .iter()
        .find(|t| {
            let (_, rule, keep) = &truth[&t.truth.trace_id];
            rule == "baseline" && !keep && !t.truth.health_check
        })
        .expect("a trace the baseline drops");
    let (kept_id, dropped_id) = (kept.truth.trace_id, dropped.truth.trace_id);

    // The input: the two traces amid others, on every partition.
    let mut input_of: [Vec<(String, Vec<u8>)>; 3] = Default::default();
    let others: Vec<&GeneratedTrace> = w
        .traces
        .iter()
        .filter(|t| ![kept_id, dropped_id].contains(&t.truth.trace_id))
        .take(60)
        .collect();
    for (i, t) in others.iter().enumerate() {
        input_of[i % 3].extend(messages(t));
    }
    input_of[PARTITION as usize].extend(messages(kept));
    input_of[PARTITION as usize].extend(messages(dropped));
    for t in w.traces.iter().skip(200).take(20) {
        input_of[PARTITION as usize].extend(messages(t));
    }
    for (p, on) in input_of.iter().enumerate() {
        produce_to(&input, p as i32, on).await;
    }

    // The log: their decisions amid others; a trace decided twice (the
    // later record wins); one decided a day ago, its spans long gone.
    let now = now_ms();
    let mut records: Vec<LoggedDecision> = others
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (spans, rule, keep) = &truth[&t.truth.trace_id];
            let id = t.truth.trace_id;
            LoggedDecision {
                trace_id: id.to_hex(),
                keep: *keep,
                rule: rule.to_string(),
                reason: Reason::Wait.as_str().to_string(),
                probability: 1.0,
                decided_at_ms: now,
                partition: i as i32 % 3,
                spans: (*spans) as u64,
                ..LoggedDecision::default()
            }
        })
        .collect();
    let kept_spans = truth[&kept_id].0;
    let dropped_spans = truth[&dropped_id].0;
    let (wait, after_root) = (Reason::Wait, Reason::AfterRoot);
    records.extend([
        LoggedDecision {
            trace_id: kept_id.to_hex(),
            keep: true,
            rule: "errors".into(),
            reason: after_root.as_str().to_string(),
            probability: 1.0,
            decided_at_ms: now,
            partition: PARTITION,
            spans: kept_spans as u64,
            ..LoggedDecision::default()
        },
        LoggedDecision {
            trace_id: dropped_id.to_hex(),
            keep: false,
            rule: "baseline".into(),
            reason: wait.as_str().to_string(),
            probability: 0.1,
            decided_at_ms: now,
            partition: PARTITION,
            spans: dropped_spans as u64,
            ..LoggedDecision::default()
        },
    ]);
    let twice = w.traces[300].truth.trace_id;
    records.extend([
        LoggedDecision {
            trace_id: twice.to_hex(),
            keep: false,
            rule: "baseline".into(),
            reason: Reason::Memory.as_str().to_string(),
            probability: 0.1,
            decided_at_ms: now - 5_000,
            partition: 1,
            spans: 3,
            ..LoggedDecision::default()
        },
        LoggedDecision {
            trace_id: twice.to_hex(),
            keep: true,
            rule: "slow".into(),
            reason: after_root.as_str().to_string(),
            probability: 1.0,
            decided_at_ms: now,
            partition: 1,
            spans: 9,
            ..LoggedDecision::default()
        },
    ]);
    let gone = w.traces[301].truth.trace_id;
    let ids: std::collections::HashSet<_> = [kept_id, dropped_id, twice, gone].into();
    assert_eq!(ids.len(), 4, "four different traces");
    let day_ago = now - 86_400_000;
    records.push(LoggedDecision {
        trace_id: gone.to_hex(),
        keep: true,
        rule: "errors".into(),
        reason: wait.as_str().to_string(),
        probability: 1.0,
        decided_at_ms: day_ago,
        partition: 0,
        spans: 5,
        ..LoggedDecision::default()
    });
    log(&decisions, &records).await;

    let dir = policy_dir(&settings(
        &unique("why"),
        &input,
        &unique("why-out"),
        RULES,
        "3s",
        None,
    ));
    let extra = dir.path().join("log.yaml");
    std::fs::write(&extra, format!("kafka:\n  decision_topic: {decisions}\n")).unwrap();
    let dir = dir.path();

    // Kept: the rule, the reason, the partition; the spans found, and the
    // live rules agree.
    let (out, text, err) = why(dir, &extra, &[&kept_id.to_hex()]);
    assert!(out.status.success(), "{text}{err}");
    for want in [
        format!("trace {kept_id} was KEPT by rule \"errors\""),
        "reason       after_root: quiet for decision.after_root".into(),
        format!("input        partition {PARTITION}"),
        "sampling     unchanged (probability 1: adjusted count 1 times any head sampling's)".into(),
        format!("spans        {kept_spans} decided"),
        format!("log record   {decisions} partition {PARTITION}, offset "),
        format!("spans searched  {input} partition {PARTITION}, "),
        format!("spans found     {kept_spans}\n"),
        "critical path (".into(),
        "  matched errors".into(),
        "the live rules decide the same: KEPT by rule \"errors\"".into(),
    ] {
        assert!(text.contains(&want), "{want:?} in:\n{text}");
    }
    assert!(!text.contains("Also decided"), "decided once:\n{text}");
    let decided_at = text
        .lines()
        .find_map(|l| l.strip_prefix("  decided at   "))
        .expect("a decided-at line");
    assert!(
        decided_at.ends_with('Z') && decided_at.contains('T'),
        "{decided_at}"
    );

    // Dropped: by the baseline, after the earlier rules did not match.
    let (out, text, err) = why(dir, &extra, &[&dropped_id.to_hex()]);
    assert!(out.status.success(), "{text}{err}");
    for want in [
        format!("trace {dropped_id} was DROPPED by rule \"baseline\""),
        "reason       wait: decision.wait passed".into(),
        "sampling     th:e6666666666666 (probability 0.1: adjusted count 10 times any head sampling's)".into(),
        format!("spans found     {dropped_spans}\n"),
        "  skipped errors\n    ✗ ".into(),
        "  skipped slow\n    ✗ ".into(),
        "  matched baseline".into(),
        "decision: DROP by rule \"baseline\"".into(),
        "the live rules decide the same: DROPPED by rule \"baseline\"".into(),
    ] {
        assert!(text.contains(&want), "{want:?} in:\n{text}");
    }

    // --json, with the brokers given on the command line.
    let upper = dropped_id.to_hex().to_uppercase();
    let (out, text, err) = why(dir, &extra, &[&upper, "--json", "--brokers", &bootstrap()]);
    assert!(out.status.success(), "{text}{err}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
    assert_eq!(v["trace_id"], dropped_id.to_hex());
    assert_eq!(v["decision_topic"], decisions.as_str());
    let r = &v["record"];
    assert_eq!(r["keep"], false);
    assert_eq!(r["rule"], "baseline");
    assert_eq!(r["reason"], "wait");
    assert_eq!(r["partition"], PARTITION);
    assert_eq!(r["log_partition"], PARTITION);
    assert_eq!(r["probability"], 0.1);
    assert_eq!(r["adjusted_count"], 10.0);
    assert_eq!(r["decided_at_ms"], now);
    assert!(r["decided_at"].as_str().unwrap().ends_with('Z'), "{r}");
    assert_eq!(v["spans"]["found"], dropped_spans);
    assert_eq!(v["spans"]["topic"], input.as_str());
    let rules = v["explanation"]["rules"].as_array().expect("rules tried");
    let tried: Vec<(&str, bool)> = rules
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["matched"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        tried,
        [("errors", false), ("slow", false), ("baseline", true)]
    );
    assert!(rules[0]["check"]["text"]
        .as_str()
        .unwrap()
        .contains("error"));
    assert_eq!(v["live_decision"]["rule"], "baseline");
    assert_eq!(v["live_decision"]["keep"], false);
    assert_eq!(v["live_differs"], false);

    // A trace decided twice: the later record.
    let (out, text, err) = why(dir, &extra, &[&twice.to_hex(), "--no-spans"]);
    assert!(out.status.success(), "{text}{err}");
    assert!(
        text.contains(&format!("trace {twice} was KEPT by rule \"slow\"")),
        "{text}"
    );
    assert!(text.contains("input        partition 1"), "{text}");
    assert!(!text.contains("spans searched"), "--no-spans:\n{text}");

    // Decided a day ago: the spans are outside the input searched.
    let (out, text, err) = why(dir, &extra, &[&gone.to_hex()]);
    assert!(out.status.success(), "{text}{err}");
    assert!(
        text.contains(&format!("spans searched  {input} partition 0, "))
            && text.contains("spans found     none. Retention may have removed them"),
        "{text}"
    );

    // Never decided: exit 1, saying so, with hints.
    let never = TraceId([0x5a; 16]);
    let (out, text, err) = why(dir, &extra, &[&never.to_hex()]);
    assert_eq!(out.status.code(), Some(1), "{text}{err}");
    assert!(
        err.contains(&format!(
            "trace {never} is not in the decision log {decisions}"
        )) && err.contains("hints:")
            && err.contains("is the trace id right?"),
        "{err}"
    );
    let (out, text, _) = why(dir, &extra, &[&never.to_hex(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON even when not found");
    assert!(v["record"].is_null(), "{v}");
    assert!(v["log_records_read"].as_u64().unwrap() >= 65, "{v}");

    // Not a trace id: exit 2.
    let (out, _, err) = why(dir, &extra, &["not-a-trace"]);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is not a trace id: want 32 hex characters"),
        "{err}"
    );

    // The log off: exit 2.
    let off = dir.join("off.yaml");
    std::fs::write(&off, "kafka:\n  decision_log: false\n").unwrap();
    let (out, _, err) = why(dir, &off, &[&kept_id.to_hex()]);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the decision log is off"), "{err}");
}
