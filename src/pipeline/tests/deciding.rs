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

/// The spans of `payload`, by name, with their attributes' keys and
/// string or double values.
fn read_back(payload: &Bytes) -> Vec<(String, Vec<(String, String)>)> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let out = TracesData::decode(payload.clone()).unwrap();
    out.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| {
            let attrs = s
                .attributes
                .iter()
                .map(|kv| {
                    let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(Value::StringValue(v)) => v.clone(),
                        Some(Value::DoubleValue(d)) => format!("{d}"),
                        Some(Value::ArrayValue(a)) => format!("{} values", a.values.len()),
                        other => format!("{other:?}"),
                    };
                    (kv.key.clone(), v)
                })
                .collect();
            (s.name.clone(), attrs)
        })
        .collect()
}

fn attribute<'a>(span: &'a (String, Vec<(String, String)>), key: &str) -> Option<&'a str> {
    span.1
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// With `output.critical_path`, a kept trace leaves with its summary on
/// its root and each path span's time on it; a late span that follows the
/// decision leaves with the rule's attributes only (its trace went out
/// before it came: documented in docs/output.md).
#[tokio::test(start_paused = true)]
async fn a_kept_trace_carries_its_critical_path_and_its_late_spans_do_not() {
    let h = start_opts(Opts {
        path: PathOutput {
            annotate: true,
            metrics: None,
            report: false,
        },
        ..Opts::default()
    });
    let id = TraceId([21; 16]);
    let mut pay = SpanSpec::new("payments", "charge", Some(0), 10, 80);
    pay.error = true;
    let late = SpanSpec::new("audit", "record", Some(0), 95, 1);
    let parts = build_trace(
        id,
        &[[1; 8], [2; 8], [3; 8]],
        1_000,
        &[
            SpanSpec::new("gateway", "POST /pay", None, 0, 100),
            pay,
            late,
        ],
    );
    send(&h, 0, payload(&parts[0])).await;
    send(&h, 1, payload(&parts[1])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    send(&h, 2, payload(&parts[2])).await;
    let sent = h.output.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "the trace, then its late span");
    let spans = read_back(&sent[0].1);
    let root = spans.iter().find(|s| s.0 == "POST /pay").unwrap();
    let charge = spans.iter().find(|s| s.0 == "charge").unwrap();
    assert_eq!(
        attribute(root, "tailgate.critical_path.service"),
        Some("payments")
    );
    assert_eq!(attribute(root, "tailgate.critical_path.share"), Some("0.8"));
    assert_eq!(
        attribute(root, "tailgate.critical_path.duration_ms"),
        Some("100")
    );
    assert_eq!(
        attribute(root, "tailgate.critical_path.span"),
        Some("charge")
    );
    assert_eq!(
        attribute(root, "tailgate.critical_path.services"),
        Some("2 values")
    );
    assert_eq!(
        attribute(root, "tailgate.critical_path.self_ms"),
        Some("20")
    );
    assert_eq!(
        attribute(charge, "tailgate.critical_path.self_ms"),
        Some("80")
    );
    assert_eq!(attribute(charge, "tailgate.critical_path.service"), None);
    assert_eq!(attribute(charge, "tailgate.rule"), Some("errors"));
    let late = read_back(&sent[1].1);
    assert_eq!(late.len(), 1);
    assert_eq!(attribute(&late[0], "tailgate.rule"), Some("errors"));
    assert!(
        late[0]
            .1
            .iter()
            .all(|(k, _)| !k.starts_with("tailgate.critical_path")),
        "{late:?}"
    );
    assert_eq!(h.offsets.last(), Some(3));
}

/// Off (the tests' default), the output is the spans and the rule's
/// attributes only.
#[tokio::test(start_paused = true)]
async fn without_output_critical_path_a_kept_trace_carries_no_summary() {
    let h = start(0);
    let (_, parts) = two_part_trace(22, true);
    send(&h, 0, payload(&parts[0])).await;
    send(&h, 1, payload(&parts[1])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = h.output.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    for span in read_back(&sent[0].1) {
        let keys: Vec<&str> = span.1.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"tailgate.rule"));
        assert!(!keys.iter().any(|k| k.starts_with("tailgate.critical_path")));
    }
}

/// A span that the critical path's attributes could push past the output's
/// message limit goes without them, as it came, and is delivered; the root
/// still gets the summary, its long span name cut to 256 bytes.
#[tokio::test(start_paused = true)]
async fn a_span_near_the_message_limit_goes_without_the_critical_path() {
    let h = start_opts(Opts {
        max_message_bytes: 20_000,
        path: PathOutput {
            annotate: true,
            metrics: None,
            report: false,
        },
        ..Opts::default()
    });
    let id = TraceId([23; 16]);
    let mut big = SpanSpec::new("payments", &"n".repeat(9_600), Some(0), 10, 80);
    big.error = true;
    let parts = build_trace(
        id,
        &[[1; 8], [2; 8]],
        1_000,
        &[SpanSpec::new("gateway", "POST /pay", None, 0, 100), big],
    );
    send(&h, 0, payload(&parts[0])).await;
    send(&h, 1, payload(&parts[1])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = h.output.sent.lock().unwrap().clone();
    let spans: Vec<_> = sent.iter().flat_map(|(_, p)| read_back(p)).collect();
    assert_eq!(spans.len(), 2, "both delivered: {} messages", sent.len());
    let root = spans.iter().find(|s| s.0 == "POST /pay").unwrap();
    let big = spans.iter().find(|s| s.0.len() == 9_600).unwrap();
    assert_eq!(
        attribute(root, "tailgate.critical_path.service"),
        Some("payments")
    );
    assert_eq!(
        attribute(root, "tailgate.critical_path.span").map(str::len),
        Some(256)
    );
    assert_eq!(attribute(big, "tailgate.critical_path.self_ms"), None);
    assert_eq!(attribute(big, "tailgate.rule"), Some("errors"));
}

/// A kept trace larger than one output message, annotated: split into
/// messages that each fit, every span delivered once, the summary on the
/// root and each path span's time on it, whichever message it is in.
#[tokio::test(start_paused = true)]
async fn an_annotated_trace_larger_than_a_message_is_split_whole() {
    let h = start_opts(Opts {
        max_message_bytes: 6_000,
        path: PathOutput {
            annotate: true,
            metrics: None,
            report: false,
        },
        ..Opts::default()
    });
    let id = TraceId([24; 16]);
    // A root calling 30 services one after another, each span ~450 bytes.
    let names: Vec<&'static str> = (0..30)
        .map(|i| &*Box::leak(format!("svc-{i:02}").into_boxed_str()))
        .collect();
    let mut specs = vec![SpanSpec::new("gateway", "POST /batch", None, 0, 310)];
    for (i, n) in names.iter().enumerate() {
        let mut s = SpanSpec::new(
            n,
            &format!("{i:02}{}", "x".repeat(400)),
            Some(0),
            1 + 10 * i as u64,
            10,
        );
        s.error = i == 7;
        specs.push(s);
    }
    let ids: Vec<[u8; 8]> = (1..=31u8).map(|i| [i; 8]).collect();
    let parts = build_trace(id, &ids, 1_000, &specs);
    for (k, p) in parts.iter().enumerate() {
        send(&h, k as i64, payload(p)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = h.output.sent.lock().unwrap().clone();
    assert!(sent.len() > 1, "split: {} messages", sent.len());
    assert!(sent.iter().all(|(_, p)| p.len() <= 6_000));
    let spans: Vec<_> = sent.iter().flat_map(|(_, p)| read_back(p)).collect();
    assert_eq!(spans.len(), 31, "every span once");
    let root = spans.iter().find(|s| s.0 == "POST /batch").unwrap();
    assert_eq!(
        attribute(root, "tailgate.critical_path.services"),
        Some("31 values")
    );
    let timed = spans
        .iter()
        .filter(|s| attribute(s, "tailgate.critical_path.self_ms").is_some())
        .count();
    assert_eq!(timed, 31, "the root between calls, and each call");
    assert_eq!(h.offsets.last(), Some(parts.len() as i64));
}
