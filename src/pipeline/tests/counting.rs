//! What a kept trace's spans say they stand for, through a partition: the
//! threshold in their `tracestate` and their adjusted count, head sampling
//! included — on the trace, on its late spans, and on late spans that
//! follow a decision read back from the decision log (its stage travels in
//! the record).

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

use super::decision_log::message;
use super::*;
use crate::pipeline::record::LoggedDecision;

const COUNTING_RULES: &str = "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: rest, sample: {rate: 0.5}}, {name: never, sample: drop}]";

fn partition(config: WorkerConfig) -> Partition {
    let specs: Vec<crate::rules::RuleSpec> = serde_yaml::from_str(COUNTING_RULES).unwrap();
    let (_tx, rules) = watch::channel(Arc::new(RuleSet::compile(&specs).unwrap()));
    let offsets = Arc::new(MemoryOffsets::default());
    Partition::new(0, config, rules, Commit::Offsets(offsets))
}

/// A two-span trace whose spans carry `tracestate`, its randomness
/// 0xf0…: kept by `rate: 0.5` (and by any head sampling up to th:f).
fn head_sampled(n: u8, error: bool, tracestate: &str) -> (TraceId, Vec<TracesData>) {
    let mut raw = [n; 16];
    raw[9..].copy_from_slice(&[0xf0, 0, 0, 0, 0, 0, n]);
    let id = TraceId(raw);
    let (_, mut parts) = two_part_trace(n, false);
    for (i, part) in parts.iter_mut().enumerate() {
        for rs in &mut part.resource_spans {
            for ss in &mut rs.scope_spans {
                for s in &mut ss.spans {
                    s.trace_id = id.0.to_vec();
                    s.trace_state = tracestate.into();
                    if error && i == 0 {
                        s.status = Some(Status {
                            code: 2,
                            message: String::new(),
                        });
                    }
                }
            }
        }
    }
    (id, parts)
}

/// The spans produced to the output, and the decision records logged.
fn outputs(p: &mut Partition) -> (Vec<Span>, Vec<LoggedDecision>) {
    let mut spans = Vec::new();
    let mut records = Vec::new();
    for c in p.commands() {
        if let Command::Send { message, .. } = c {
            match message.destination {
                Destination::Sampled => {
                    let data = TracesData::decode(message.payload.as_ref()).expect("reads");
                    spans.extend(
                        data.resource_spans
                            .into_iter()
                            .flat_map(|r| r.scope_spans)
                            .flat_map(|s| s.spans),
                    );
                }
                Destination::Decisions(_) => {
                    records.extend(LoggedDecision::read(&message.payload).expect("a batch"))
                }
                _ => {}
            }
        }
    }
    (spans, records)
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

fn counted(span: &Span) -> (String, Option<Value>, Option<Value>) {
    (
        span.trace_state.clone(),
        attribute(span, "tailgate.adjusted_count"),
        attribute(span, "SampleRate"),
    )
}

/// Head sampled 1 in 4 upstream, then each rule kind: `keep` passes the
/// threshold on (count 4), `rate: 0.5` composes to the larger (still 1 in
/// 4: count 4) — on the trace, on a late span, and on a late span after a
/// restart that read the decision back from the log. Not head sampled,
/// `rate: 0.5` writes its own (th:8, count 2) and `keep` none (count 1); a
/// malformed threshold is erased and no count claimed.
#[test]
fn head_sampled_traces_leave_with_the_composed_threshold_everywhere() {
    let config = WorkerConfig {
        decision_log: true,
        max_in_flight: 1 << 20,
        sample_rate_attribute: Some(Arc::from("SampleRate")),
        ..config()
    };
    let mut p = partition(config.clone());
    let t0 = Instant::now();
    let quarter = "ot=th:c;rv:f0000000000000,vendor=x";
    let cases = [
        (1, true, quarter, quarter, 4.0),
        (2, false, quarter, quarter, 4.0),
        (3, false, "ot=th:8", "ot=th:8", 2.0),
        (4, false, "", "ot=th:8", 2.0),
        (5, true, "", "", 1.0),
        // Malformed: erased, and the span claims no count.
        (6, false, "ot=th:zz,vendor=x", "vendor=x", f64::NAN),
    ];
    let mut late = Vec::new();
    for (i, (n, error, incoming, _, _)) in cases.iter().enumerate() {
        let (id, parts) = head_sampled(*n, *error, incoming);
        p.handle(message(2 * i as i64, &parts[0]), t0);
        late.push((id, parts[1].clone()));
    }
    p.decide_due(t0 + Duration::from_secs(11));
    p.advance();
    let (spans, records) = outputs(&mut p);
    assert_eq!(spans.len(), cases.len());
    assert_eq!(records.len(), cases.len());
    let want = |(_, _, _, out, count): &(u8, bool, &str, &str, f64)| {
        let c = (!count.is_nan()).then_some(*count);
        (
            out.to_string(),
            c.map(Value::DoubleValue),
            c.map(|c| Value::IntValue(c as i64)),
        )
    };
    for case in &cases {
        let id = head_sampled(case.0, false, "").0;
        let span = spans
            .iter()
            .find(|s| s.trace_id == id.0)
            .unwrap_or_else(|| panic!("trace {} kept", case.0));
        assert_eq!(counted(span), want(case), "trace {}", case.0);
    }
    // Their late spans, on the same worker: as their traces'.
    for (i, (_, part)) in late.iter().enumerate() {
        p.handle(message(100 + i as i64, part), t0 + Duration::from_secs(12));
    }
    let (spans, _) = outputs(&mut p);
    assert_eq!(spans.len(), cases.len());
    for (case, span) in cases.iter().zip(&spans) {
        assert_eq!(counted(span), want(case), "late span of trace {}", case.0);
    }
    // Restarted: a new worker that read the records back.
    let mut q = partition(config);
    let mut names = std::collections::HashMap::new();
    let recalled = records
        .iter()
        .filter_map(|r| r.recalled(&mut names))
        .collect();
    let now = t0 + Duration::from_secs(20);
    let resume = q.resume_at(None, now);
    assert_eq!(q.remember(recalled, resume, now), cases.len());
    for (i, (_, part)) in late.iter().enumerate() {
        q.handle(message(200 + i as i64, part), now);
    }
    let (spans, _) = outputs(&mut q);
    assert_eq!(spans.len(), cases.len());
    for (case, span) in cases.iter().zip(&spans) {
        assert_eq!(
            counted(span),
            want(case),
            "after a restart, trace {}",
            case.0
        );
    }
}
