//! What is decided, and how: kept traces produced whole, dropped ones
//! released, late spans following the decision, several traces in one
//! message, rules reloaded under buffered traces.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_kept_trace_is_produced_whole_and_then_committed() {
    let h = start(0);
    let (id, parts) = two_part_trace(1, true);
    send(&h, 100, payload(&parts[1])).await; // child first
    assert_eq!(h.offsets.last(), Some(100), "pinned by the undecided trace");
    send(&h, 101, payload(&parts[0])).await; // then the root
    assert!(h.output.sent.lock().unwrap().is_empty(), "not decided yet");
    tokio::time::sleep(Duration::from_secs(3)).await; // past after_root
    let sent = h.output.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, id.to_hex());
    let out = TracesData::decode(sent[0].1.clone()).unwrap();
    let spans: usize = out
        .resource_spans
        .iter()
        .map(|r| r.scope_spans[0].spans.len())
        .sum();
    assert_eq!(spans, 2);
    assert_eq!(
        h.offsets.last(),
        Some(102),
        "committed past both messages once delivered"
    );
    drop(h.tx);
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dropped_trace_releases_its_offsets_without_producing() {
    let h = start(0);
    let (_, parts) = two_part_trace(2, false);
    send(&h, 5, payload(&parts[0])).await;
    send(&h, 6, payload(&parts[1])).await;
    assert_eq!(h.offsets.last(), Some(5));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(h.output.sent.lock().unwrap().is_empty());
    assert_eq!(h.offsets.last(), Some(7));
}

#[tokio::test(start_paused = true)]
async fn late_spans_follow_the_decision() {
    let h = start(0);
    let (kept, kparts) = two_part_trace(5, true);
    let (_, dparts) = two_part_trace(6, false);
    send(&h, 0, payload(&kparts[1])).await; // the erring child
    send(&h, 1, payload(&dparts[0])).await;
    tokio::time::sleep(Duration::from_secs(11)).await; // both decided by wait
    assert_eq!(h.output.sent.lock().unwrap().len(), 1);
    // The roots arrive late.
    send(&h, 2, payload(&kparts[0])).await;
    send(&h, 3, payload(&dparts[1])).await;
    let sent = h.output.sent.lock().unwrap().clone();
    assert_eq!(
        sent.len(),
        2,
        "the kept trace's late root is produced at once"
    );
    assert_eq!(sent[1].0, kept.to_hex());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(h.offsets.last(), Some(4));
}

#[tokio::test(start_paused = true)]
async fn several_traces_in_one_message_are_decided_separately() {
    let h = start(0);
    let (a, ap) = two_part_trace(7, true);
    let (_, bp) = two_part_trace(8, false);
    let mut batch = TracesData::default();
    for m in ap.iter().chain(&bp) {
        batch.resource_spans.extend(m.resource_spans.clone());
    }
    send(&h, 0, payload(&batch)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = h.output.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, a.to_hex());
    assert_eq!(h.offsets.last(), Some(1));
}

/// A rule reload while traces are buffered: they stay buffered and are decided
/// by the new rules; the kept spans name the new rule.
#[tokio::test(start_paused = true)]
async fn reloaded_rules_decide_the_traces_already_buffered() {
    let h = start(0);
    let (id, parts) = two_part_trace(8, false);
    send(&h, 0, payload(&parts[0])).await;
    send(&h, 1, payload(&parts[1])).await;
    // Under the old rules this trace (no error) would be dropped.
    let specs: Vec<crate::rules::RuleSpec> =
        serde_yaml::from_str("[{name: everything, sample: keep}]").unwrap();
    h.rules
        .send(Arc::new(RuleSet::compile(&specs).unwrap()))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = h.output.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "kept by the new rule");
    assert_eq!(sent[0].0, id.to_hex());
    let out = TracesData::decode(sent[0].1.clone()).unwrap();
    let span = &out.resource_spans[0].scope_spans[0].spans[0];
    let rule = span
        .attributes
        .iter()
        .find(|kv| kv.key == "tailgate.rule")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone());
    assert_eq!(
        rule,
        Some(
            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                "everything".into()
            )
        )
    );
    assert_eq!(h.offsets.last(), Some(2));
}
