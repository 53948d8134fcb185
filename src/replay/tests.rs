use bytes::Bytes;

use super::*;
use crate::otlp::{self, Encoding, SpanRecord};
use crate::rules::{CriticalPath, PathSummary, TraceSummary};
use crate::workload::{encode, ShopWorkload};

fn buffer() -> BufferConfig {
    BufferConfig {
        wait: Duration::from_secs(30),
        after_root: Duration::from_secs(5),
        max_trace_age: Duration::from_secs(300),
        max_bytes: 1 << 30,
    }
}

/// Replay decides on the stream clock, as production does: a trace's part
/// that came after its quiet period follows the decision on the rest, and
/// is counted as a trace decided in more than one part.
#[test]
fn replay_decides_on_the_stream_clock_as_production_does() {
    let yaml =
        "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: rest, sample: drop}]";
    let base = 1_767_225_600_000i64;
    // A root in one message, an erring asynchronous hop in another,
    // stamped `gap_ms` later, on partition 0 among a steady stream of
    // other traces (one every 200 ms, so its clock moves); on partition 1
    // a trace whose messages come close together.
    let capture = |gap_ms: i64| {
        let mut capture = Capture::default();
        for (p, n) in [(0, 1u8), (1, 2u8)] {
            let gap = if p == 0 { gap_ms } else { 100 };
            for (i, payload) in root_and_failing_hop(TraceId([n; 16]), base)
                .into_iter()
                .enumerate()
            {
                capture.add(p, Some(base + 40 + i as i64 * gap), None, payload);
            }
        }
        for k in 0..50 {
            capture.add(
                0,
                Some(base + 200 * k),
                None,
                filler(k as u64, base + 200 * k),
            );
        }
        // In the order a partition holds them.
        capture.captured.sort_by_key(|m| m.timestamp);
        capture
    };
    let of = |gap_ms: i64| {
        let d = decisions(
            Arc::new(rules(yaml)),
            ReplayConfig::new(buffer()),
            capture(gap_ms),
        );
        let r = replay(
            Arc::new(rules(yaml)),
            ReplayConfig::new(buffer()),
            capture(gap_ms),
            |_| {},
        );
        (d, r)
    };
    let (d, whole) = of(4_000);
    let parts = |d: &HashMap<TraceId, Vec<Outcome>>, n: u8| {
        d[&TraceId([n; 16])]
            .iter()
            .map(|o| (o.keep, &*o.rule == "errors", o.spans, o.reason.is_some()))
            .collect::<Vec<_>>()
    };
    assert_eq!(parts(&d, 1), [(true, true, 2, true)]);
    assert_eq!(parts(&d, 2), [(true, true, 2, true)]);
    assert_eq!((whole.traces, whole.traces_kept), (52, 2));
    assert_eq!((whole.split_traces, whole.late_spans), (0, 0));
    // Six seconds after the root, past its 5 s quiet period: the root
    // alone was dropped, and the error followed the drop.
    let (d, split) = of(6_000);
    assert_eq!(
        parts(&d, 1),
        [(false, false, 1, true), (false, false, 1, false)]
    );
    assert_eq!(parts(&d, 2), [(true, true, 2, true)]);
    assert_eq!((split.traces, split.traces_kept), (52, 1));
    assert_eq!((split.split_traces, split.late_spans), (1, 1));
    assert_eq!(split.rules[1].spans_dropped, 52, "{split:?}");
    assert!(split.to_string().contains("more than one part: 1 traces"));
}

/// A root span and, in a second message, a failing hop 50 ms into it.
fn root_and_failing_hop(id: TraceId, base_ms: i64) -> Vec<Bytes> {
    use crate::workload::{build_trace, SpanSpec};
    let mut hop = SpanSpec::new("notifier", "orders process", Some(0), 50, 10);
    hop.error = true;
    build_trace(
        id,
        &[[1; 8], [2; 8]],
        base_ms as u64 * 1_000_000,
        &[SpanSpec::new("gateway", "POST /checkout", None, 0, 40), hop],
    )
    .iter()
    .map(|data| Bytes::from(prost::Message::encode_to_vec(data)))
    .collect()
}

/// A one-span trace of its own, numbered `k`.
fn filler(k: u64, at_ms: i64) -> Bytes {
    use crate::workload::{build_trace, SpanSpec};
    let mut id = [0xf0; 16];
    id[8..].copy_from_slice(&k.to_be_bytes());
    let parts = build_trace(
        TraceId(id),
        &[[3; 8]],
        at_ms as u64 * 1_000_000,
        &[SpanSpec::new("gateway", "GET /health", None, 0, 1)],
    );
    Bytes::from(prost::Message::encode_to_vec(&parts[0]))
}

/// One message stamped ten minutes ahead (a producer's clock is wrong)
/// decides no other trace early in replay, as in production: replay runs
/// the pipeline's own clock, which takes it as an outlier.
#[test]
fn a_message_stamped_far_ahead_decides_no_other_trace_early_in_replay() {
    let yaml =
        "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: rest, sample: drop}]";
    let base = 1_767_225_600_000i64;
    let capture = |fault: bool| {
        let mut capture = Capture::default();
        // Traces whose failing hop comes 3 s after the root (within the
        // 5 s quiet period), one every 200 ms.
        for k in 0..40u8 {
            let t = base + 200 * k as i64;
            let [root, hop] = <[Bytes; 2]>::try_from(root_and_failing_hop(TraceId([k + 1; 16]), t))
                .expect("two messages");
            capture.add(0, Some(t), None, root);
            let stamp = if fault && k == 10 {
                t + 600_000
            } else {
                t + 3_000
            };
            capture.add(0, Some(stamp), None, hop);
        }
        // Sorted by stamp as the partition would hold them (the faulty
        // one where its producer wrote it).
        capture.captured.sort_by_key(|m| {
            if m.timestamp.unwrap_or(0) > base + 100_000 {
                base + 200 * 10 + 3_000
            } else {
                m.timestamp.unwrap_or(0)
            }
        });
        capture
    };
    let decided = |fault: bool| {
        decisions(
            Arc::new(rules(yaml)),
            ReplayConfig::new(buffer()),
            capture(fault),
        )
    };
    let (clean, faulty) = (decided(false), decided(true));
    for k in 0..40u8 {
        let id = TraceId([k + 1; 16]);
        let whole = |d: &HashMap<TraceId, Vec<Outcome>>| {
            d[&id].iter().map(|o| (o.keep, o.spans)).collect::<Vec<_>>()
        };
        assert_eq!(whole(&clean), [(true, 2)], "trace {k} without the fault");
        assert_eq!(
            whole(&faulty),
            [(true, 2)],
            "trace {k} with one stamp 10 min ahead"
        );
    }
}

fn rules(yaml: &str) -> RuleSet {
    let specs: Vec<crate::rules::RuleSpec> = serde_yaml::from_str(yaml).expect("yaml");
    RuleSet::compile(&specs).expect("rules")
}

/// Replay agrees with deciding each generated trace directly.
#[test]
fn replay_counts_match_direct_decisions() {
    let yaml = "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: slow, when: {trace: {duration: {gt: 2s}}}, sample: keep}, {name: baseline, sample: {rate: 0.1}}]";
    let r = rules(yaml);
    let mut w = ShopWorkload::new(5);
    let mut capture = Capture::default();
    let mut expected = HashMap::<usize, (u64, u64)>::new();
    let mut paths = HashMap::new();
    for i in 0..500u64 {
        let t = w.next_trace(1_760_000_000_000_000_000 + i * 10_000_000);
        let mut spans = Vec::new();
        for m in &t.messages {
            let bytes = Bytes::from(encode(m, Encoding::OtlpProto));
            spans.extend(otlp::decode(bytes.clone()).expect("decodes").spans);
            capture.add(0, None, None, bytes);
        }
        let spans: Vec<SpanRecord> = spans.into_iter().map(|(_, s)| s).collect();
        let d = r.decide(&TraceSummary::of(t.truth.trace_id, &spans), Duration::ZERO);
        let path = PathSummary::of(&CriticalPath::of(&spans), &spans).map(|p| p.digest(&spans));
        paths.insert(t.truth.trace_id.to_hex(), (d.keep, path));
        let e = expected.entry(d.rule).or_default();
        if d.keep {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    capture.add(0, None, None, Bytes::from_static(b"garbage"));
    let mut seen = 0;
    let report = replay(
        Arc::new(rules(yaml)),
        ReplayConfig::new(buffer()),
        capture,
        |n| seen = n,
    );
    assert_eq!(seen, report.messages);
    assert_eq!(
        (report.traces, report.spans, report.rejected),
        (500, 3_500, 1)
    );
    assert_eq!(report.split_traces, 0, "each trace's spans came in time");
    for (i, s) in report.rules.iter().enumerate() {
        let (k, d) = expected.get(&i).copied().unwrap_or_default();
        assert_eq!((s.traces_kept, s.traces_dropped), (k, d), "rule {}", s.rule);
    }
    assert!(report.bytes_out > 0 && report.bytes_out < report.bytes_in);
    assert!(
        (report.reduction - (1.0 - report.bytes_out as f64 / report.bytes_in as f64)).abs() < 1e-12
    );
    // `replay --json` carries each trace with its critical path, as a kept
    // trace carries it.
    assert_eq!(report.decided.len(), 500);
    for row in &report.decided {
        let (keep, path) = &paths[&row.trace_id];
        assert_eq!(row.keep, *keep, "{}", row.trace_id);
        assert_eq!(&row.critical_path, path, "{}", row.trace_id);
        assert!(path.is_some());
        // The input was not head sampled: `keep` leaves no threshold and a
        // count of 1, `rate: 0.1` its own threshold and 10.
        assert_eq!(row.incoming_threshold, None);
        let (th, count) = match (row.keep, row.rule.as_str()) {
            (false, _) => (None, None),
            (true, "baseline") => (Some("e6666666666666"), Some(10.0)),
            (true, _) => (None, Some(1.0)),
        };
        assert_eq!(row.outgoing_threshold.as_deref(), th, "{}", row.trace_id);
        assert_eq!(
            row.adjusted_count.map(|c| (c * 1e9).round() / 1e9),
            count,
            "{}",
            row.trace_id
        );
    }
    assert!(report
        .decided
        .iter()
        .any(|r| r.keep && r.rule == "baseline"));
    let json = serde_json::to_value(&report).expect("serializes");
    assert!(json["decided"][0]["critical_path"]["service"].is_string());
    assert!(json["decided"][0]["critical_path"]["services"].is_array());
    let text = report.to_string();
    assert!(
        text.contains("errors") && text.contains("reduction"),
        "{text}"
    );
    let dominant = report.dominant_in_kept();
    assert_eq!(
        dominant.iter().map(|(_, n)| n).sum::<u64>(),
        report.traces_kept
    );
    assert!(
        text.contains("kept traces by the service with the most time on their critical path: "),
        "{text}"
    );
}

#[test]
fn files_in_json_lines_json_and_protobuf_are_read() {
    let dir = tempfile::tempdir().expect("dir");
    let mut w = ShopWorkload::new(1);
    let a = w.next_trace(1_000);
    let b = w.next_trace(2_000);
    let lines: Vec<u8> = a
        .messages
        .iter()
        .flat_map(|m| {
            let mut l = encode(m, Encoding::OtlpJson);
            l.push(b'\n');
            l
        })
        .collect();
    std::fs::write(dir.path().join("a.jsonl"), lines).expect("write");
    std::fs::write(
        dir.path().join("b0.json"),
        encode(&b.messages[0], Encoding::OtlpJson),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("b1.pb"),
        encode(&b.messages[1], Encoding::OtlpProto),
    )
    .expect("write");
    let mut c = Capture::default();
    for f in ["a.jsonl", "b0.json", "b1.pb"] {
        c.add_file(&dir.path().join(f)).expect("read");
    }
    assert_eq!(c.messages, a.messages.len() as u64 + 2);
    assert!(c.add_file(&dir.path().join("missing.json")).is_err());
    let (traces, rejected) = c.into_traces();
    assert_eq!(traces.len(), 2);
    assert!(rejected.is_empty(), "{rejected:?}");
}

#[test]
fn explain_prints_path_rules_and_decision() {
    let r = rules(
        "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: fraud, when: {critical_path: {service: fraud-detection, share: {gt: 0.3}}}, sample: keep}, {name: rest, sample: drop}]",
    );
    let mut w = ShopWorkload::new(3);
    w.slow_rate = 1.0;
    let t = w.next_trace(0);
    let spans: Vec<SpanRecord> = t
        .messages
        .iter()
        .flat_map(|m| {
            otlp::decode(Bytes::from(encode(m, Encoding::OtlpProto)))
                .expect("ok")
                .spans
        })
        .map(|(_, s)| s)
        .collect();
    let text = explain(&r, t.truth.trace_id, &spans);
    assert!(text.contains("critical path ("), "{text}");
    assert!(
        text.contains("skipped errors") || text.contains("matched errors"),
        "{text}"
    );
    assert!(text.contains("decision: "), "{text}");
    // The answer a kept trace carries: the slow third-party call's service.
    assert!(
        text.contains("written on the trace: fraud-detection has "),
        "{text}"
    );
    let d = r.decide(&TraceSummary::of(t.truth.trace_id, &spans), Duration::ZERO);
    assert!(
        text.contains(&format!("by rule {:?}", &*r.names()[d.rule])),
        "{text}"
    );
}

/// The parts `tailgate why --json` prints say what the text says: each rule
/// tried with its check, and the decision.
#[test]
fn explained_in_parts_matches_the_decision_and_the_text() {
    let r = rules(
        "[{name: never, when: {trace: {duration: {gt: 1h}}}, sample: keep}, {name: errors, when: {trace: {error: true}}, sample: keep}, {name: some, sample: {rate: 0.25}}]",
    );
    let mut w = ShopWorkload::new(5);
    for i in 0..50 {
        let t = w.next_trace(i * 1_000);
        let spans: Vec<SpanRecord> = t
            .messages
            .iter()
            .flat_map(|m| {
                otlp::decode(Bytes::from(encode(m, Encoding::OtlpProto)))
                    .expect("ok")
                    .spans
            })
            .map(|(_, s)| s)
            .collect();
        let id = t.truth.trace_id;
        let e = explained(&r, id, &spans);
        let d = r.decide(&TraceSummary::of(id, &spans), Duration::ZERO);
        assert_eq!(e.decision.keep, d.keep);
        assert_eq!(e.decision.rule, &*r.names()[d.rule]);
        assert_eq!(e.decision.probability, d.stage.probability());
        assert_eq!(e.rules[0].name, "never");
        assert!(!e.rules[0].matched && !e.rules[0].check.ok);
        assert_eq!(e.rules.last().map(|r| r.matched), Some(true));
        assert_eq!(e.rules.len(), if t.truth.error { 2 } else { 3 });
        assert_eq!(e.spans, spans.len());
        assert_eq!(e.to_string(), explain(&r, id, &spans));
        let json = serde_json::to_value(&e).expect("serializes");
        for field in [
            "trace_id",
            "spans",
            "duration_ns",
            "error",
            "root",
            "critical_path",
            "rules",
            "decision",
        ] {
            assert!(json.get(field).is_some(), "{field} in {json}");
        }
        assert!(json["rules"][0]["check"]["text"].is_string());
        let path = &json["critical_path"];
        for field in [
            "total_ns",
            "steps",
            "service",
            "share",
            "duration_ms",
            "span",
            "services",
        ] {
            assert!(path.get(field).is_some(), "critical_path.{field} in {json}");
        }
        let share: f64 = e.critical_path.steps.iter().map(|s| s.share).sum();
        assert!(spans.is_empty() || (share - 1.0).abs() < 1e-9, "{share}");
    }
}
