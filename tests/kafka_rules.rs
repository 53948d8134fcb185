//! Tuning rules on a real Kafka broker (started by `scripts/test`): a rule
//! file changed under a running tailgate, an invalid one rejected, SIGHUP,
//! and `tailgate replay` reading a topic range.
#![cfg(feature = "kafka-tests")]

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use tailgate::otlp::{Encoding, TraceId};
use tailgate::workload::{GeneratedTrace, ShopWorkload};
use tailgate_testkit::*;

/// The kept traces of `batch` under `rules`, by rule name.
fn kept_by_rule(batch: &[GeneratedTrace], rules: &str) -> HashMap<TraceId, String> {
    let w = Workload {
        traces: batch.to_vec(),
    };
    w.decisions(rules)
        .into_iter()
        .filter(|(_, (_, _, keep))| *keep)
        .map(|(id, (_, rule, _))| (id, rule))
        .collect()
}

fn metric(tailgate: &Tailgate, name: &str, labels: &[(&str, &str)]) -> f64 {
    tailgate.metrics().map_or(0.0, |m| m.sum(name, labels))
}

fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

const ERRORS_ONLY: &str =
    "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: rest, sample: drop}]";
/// Errors, and the checkout route (an attribute with a dot in its name).
const ERRORS_AND_CHECKOUT: &str = "[{name: errors, when: {trace: {error: true}}, sample: keep}, \
     {name: checkout, when: {root: {attribute: {http.route: /checkout}}}, sample: keep}, \
     {name: rest, sample: drop}]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reload_under_a_running_tailgate_without_losing_a_trace() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 2).await;
    create_topic(&output, 1).await;
    let mut shop = ShopWorkload::new(21);
    shop.error_rate = 0.2;
    let batch = |shop: &mut ShopWorkload, from: u64| -> Vec<GeneratedTrace> {
        (from..from + 150)
            .map(|i| shop.next_trace(1_760_000_000_000_000_000 + i * 1_000_000))
            .collect()
    };
    let (first, second, third) = (
        batch(&mut shop, 0),
        batch(&mut shop, 150),
        batch(&mut shop, 300),
    );
    let mut expected = kept_by_rule(&first, ERRORS_ONLY);
    expected.extend(kept_by_rule(&second, ERRORS_AND_CHECKOUT));
    expected.extend(kept_by_rule(&third, ERRORS_AND_CHECKOUT));
    assert!(
        expected.values().any(|r| r == "checkout"),
        "the new rule keeps something"
    );

    let dir = policy_dir(&settings(&group, &input, &output, ERRORS_ONLY, "2s", None));
    let policy = dir.path().join("test.yaml");
    let mut tailgate = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "tailgate.log");
    tailgate.wait_ready(Duration::from_secs(30));
    let mut reader = OutputReader::new(&output);

    // 1. The first batch under the rules tailgate started with.
    produce_traces(&input, &first, |_| Encoding::OtlpProto).await;
    let first_kept = kept_by_rule(&first, ERRORS_ONLY);
    assert!(
        reader.until(Duration::from_secs(60), |o| first_kept
            .keys()
            .all(|id| o.spans.get(id).is_some_and(|s| s.len() == 7))),
        "first batch not kept:\n{}",
        tailgate.log_text()
    );

    // 2. Change the file: the new rules are picked up without a restart.
    let reloads_ok = metric(
        &tailgate,
        "tailgate_rule_reloads_total",
        &[("result", "ok")],
    );
    std::fs::write(
        &policy,
        settings(&group, &input, &output, ERRORS_AND_CHECKOUT, "2s", None),
    )
    .expect("rewrite policy");
    assert!(
        wait_for(Duration::from_secs(20), || metric(
            &tailgate,
            "tailgate_rule_reloads_total",
            &[("result", "ok")]
        ) > reloads_ok
            && metric(&tailgate, "tailgate_rules_loaded", &[]) == 3.0),
        "no reload:\n{}",
        tailgate.log_text()
    );
    assert!(tailgate.log_text().contains("rules reloaded"));
    produce_traces(&input, &second, |_| Encoding::OtlpProto).await;

    // 3. An invalid file is rejected, counted and logged; the rules stay.
    std::fs::write(
        &policy,
        settings(
            &group,
            &input,
            &output,
            "[{name: broken, sample: {rate: 7}}]",
            "2s",
            None,
        ),
    )
    .expect("break policy");
    assert!(
        wait_for(Duration::from_secs(20), || metric(
            &tailgate,
            "tailgate_rule_reloads_total",
            &[("result", "error")]
        ) >= 1.0),
        "invalid file not reported:\n{}",
        tailgate.log_text()
    );
    assert!(tailgate.log_text().contains("rule reload rejected"));
    // SIGHUP reads the file again (still invalid: a second error).
    let pid = tailgate.pid().to_string();
    let hup = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(hup.success());
    assert!(
        wait_for(Duration::from_secs(20), || metric(
            &tailgate,
            "tailgate_rule_reloads_total",
            &[("result", "error")]
        ) >= 2.0
            && tailgate.log_text().contains("trigger=Hangup")),
        "SIGHUP did not reload:\n{}",
        tailgate.log_text()
    );
    produce_traces(&input, &third, |_| Encoding::OtlpProto).await;

    // Everything expected arrives whole, under the rule that decided it, and nothing else.
    let complete = reader.until(Duration::from_secs(90), |o| {
        expected
            .keys()
            .all(|id| o.spans.get(id).is_some_and(|s| s.len() == 7))
    });
    let out = &reader.output;
    assert!(
        complete,
        "missing {} of {} kept traces:\n{}",
        expected
            .keys()
            .filter(|id| out.spans.get(id).is_none_or(|s| s.len() != 7))
            .count(),
        expected.len(),
        tailgate.log_text()
    );
    reader.poll(Duration::from_secs(3));
    let out = &reader.output;
    assert_eq!(out.spans.len(), expected.len(), "only the expected traces");
    for (id, rule) in &expected {
        assert!(
            out.rules.get(rule).is_some_and(|ids| ids.contains(id)),
            "{id} should be annotated with {rule}"
        );
    }
    assert!(tailgate.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_a_topic_range_and_reports_what_the_rules_keep() {
    let input = unique("capture");
    create_topic(&input, 3).await;
    let w = Workload::shop(31, 600);
    produce_traces(&input, &w.traces, |i| {
        if i % 4 == 0 {
            Encoding::OtlpJson
        } else {
            Encoding::OtlpProto
        }
    })
    .await;
    let kept = kept_by_rule(&w.traces, RULES);
    let dir = policy_dir(&format!("rules: {RULES}\n"));
    let report = replay_topic(tailgate_bin!(), dir.path(), "test", &input);
    let messages: usize = w.traces.iter().map(|t| t.messages.len()).sum();
    assert_eq!(report["messages"], messages as u64);
    assert_eq!(report["traces"], 600);
    assert_eq!(report["traces_kept"], kept.len() as u64);
    for r in report["rules"].as_array().expect("rules") {
        let name = r["rule"].as_str().expect("name");
        let n = kept.values().filter(|k| *k == name).count();
        assert_eq!(r["traces_kept"], n as u64, "rule {name}");
    }
    // Nothing was committed for any group: the topic is as it was.
    assert!(committed_and_end("tailgate-replay", &input, 3)
        .iter()
        .all(|(committed, _)| *committed < 0));
}
