use super::report::{number, wrap};
use super::*;
use crate::buffer::Reason;

const ID: TraceId = TraceId([0xab; 16]);

fn logged(partition: i32, offset: i64, at: i64, keep: bool, rule: &str) -> Logged {
    Logged {
        partition,
        offset,
        decision: LoggedDecision {
            trace_id: ID.to_hex(),
            keep,
            rule: rule.to_string(),
            reason: Reason::Wait.as_str().to_string(),
            probability: 0.1,
            decided_at_ms: at,
            partition,
            spans: 4,
            ..LoggedDecision::default()
        },
    }
}

#[test]
fn the_highest_offset_wins_in_a_partition_and_a_tombstone_deletes() {
    let older = logged(1, 10, 2_000, false, "baseline");
    let newer = logged(1, 30, 1_000, true, "errors");
    let found = latest(vec![
        Seen::Decision(newer.clone()),
        Seen::Decision(older.clone()),
        Seen::Unreadable,
    ]);
    assert_eq!(found.chosen, Some(newer.clone()), "by offset, not time");
    assert!(found.others.is_empty());
    assert_eq!(found.unreadable, 1);

    let deleted = latest(vec![
        Seen::Decision(older.clone()),
        Seen::Tombstone {
            partition: 1,
            offset: 11,
        },
    ]);
    assert_eq!(deleted.chosen, None);
    let revived = latest(vec![
        Seen::Tombstone {
            partition: 1,
            offset: 11,
        },
        Seen::Decision(newer.clone()),
    ]);
    assert_eq!(revived.chosen, Some(newer));
    assert_eq!(latest(Vec::new()), Found::default());
}

#[test]
fn across_partitions_the_last_decided_is_chosen_and_the_others_kept() {
    let a = logged(0, 500, 1_000, false, "baseline");
    let b = logged(2, 3, 5_000, true, "errors");
    let found = latest(vec![Seen::Decision(a.clone()), Seen::Decision(b.clone())]);
    assert_eq!(found.chosen, Some(b));
    assert_eq!(found.others, vec![a]);
}

#[test]
fn trace_ids_are_checked_and_either_case_is_taken() {
    assert_eq!(
        parse_trace_id(" ABABABABABABABABABABABABABABABAB\n").ok(),
        Some(ID)
    );
    for bad in ["abc", "zz".repeat(16).as_str(), &"0".repeat(32), ""] {
        let e = parse_trace_id(bad).expect_err(bad);
        assert_eq!(e.code, 2, "{bad}: {}", e.message);
    }
    let e = parse_trace_id("abc").unwrap_err();
    assert!(e.message.contains("32 hex characters") && e.message.contains("got 3"));
}

#[test]
fn the_window_reaches_back_past_the_oldest_trace_and_a_minute_on() {
    assert_eq!(window(1_000_000, 300_000), (640_000, 1_060_000));
    assert_eq!(window(10, 300_000), (0, 60_010));
}

#[test]
fn a_message_is_decoded_only_if_the_id_occurs_in_it() {
    let mut proto = b"\x0a\x10".to_vec();
    proto.extend_from_slice(&ID.0);
    assert!(may_hold(&proto, ID));
    assert!(may_hold(format!("{{\"traceId\":\"{ID}\"}}").as_bytes(), ID));
    assert!(may_hold(ID.to_hex().to_uppercase().as_bytes(), ID));
    assert!(!may_hold(&ID.0[..15], ID));
    assert!(!may_hold(b"", ID));
    assert!(!may_hold(TraceId([0xac; 16]).to_hex().as_bytes(), ID));
}

#[test]
fn notes_wrap_at_words() {
    assert_eq!(
        wrap("a bb ccc dddd", "- ", "  ", 6),
        "- a bb\n  ccc\n  dddd\n"
    );
    assert_eq!(wrap("averylongword x", "", "", 4), "averylongword\nx\n");
    assert_eq!(wrap("", "  ", "  ", 10), "");
}

#[test]
fn times_are_rfc3339_utc_and_numbers_plain() {
    assert_eq!(utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    assert_eq!(utc(-5), "-5 ms since the Unix epoch");
    assert_eq!(number(0.1), "0.1");
    assert_eq!(number(1.0), "1");
    assert_eq!(number(1.0 / 0.3), "3.333333");
    assert_eq!(adjusted_count(Stage::Unknown), None);
    assert_eq!(adjusted_count(Stage::Unchanged), Some(1.0));
    let quarter = crate::otlp::tracestate::Threshold::from_probability(0.25).unwrap();
    assert_eq!(adjusted_count(Stage::Sampled(quarter)), Some(4.0));
}

fn why_of(l: &Logged) -> Why {
    Why {
        trace_id: ID.to_hex(),
        decision_topic: "tailgate_decisions".into(),
        log_records_read: 40,
        unreadable_records: 0,
        record: Some(l.out()),
        other_records: Vec::new(),
        spans: None,
        explanation: None,
        live_decision: None,
        live_differs: None,
    }
}

#[test]
fn the_text_says_what_when_where_and_why() {
    let mut l = logged(3, 41, 1_700_000_000_123, false, "baseline");
    l.decision.reason = "memory".into();
    let text = why_of(&l).to_string();
    for want in [
        &format!("trace {ID} was DROPPED by rule \"baseline\""),
        "reason       memory: decided early",
        "decided at   2023-11-14T22:13:20.123Z",
        "input        partition 3",
        "sampling     th:e6666666666666 (probability 0.1: adjusted count 10 times any head sampling's)",
        "spans        4 decided",
        "log record   tailgate_decisions partition 3, offset 41",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    assert!(
        !text.contains("spans searched"),
        "no search, no spans line:\n{text}"
    );

    let mut kept = why_of(&logged(0, 1, 1_700_000_000_123, true, "errors"));
    kept.other_records
        .push(logged(2, 7, 1_600_000_000_000, false, "baseline").out());
    kept.spans = Some(SpanSearch {
        topic: "otlp_spans".into(),
        partition: 0,
        from: utc(1),
        to: utc(2),
        from_offset: Some(5),
        to_offset: Some(9),
        messages_read: 4,
        found: 0,
        error: None,
    });
    let text = kept.to_string();
    for want in [
        "was KEPT by rule \"errors\"",
        "tailgate.rule=errors",
        "Also decided on input partition 2",
        "spans searched  otlp_spans partition 0, 1970-01-01T00:00:00.001Z to \
         1970-01-01T00:00:00.002Z (offsets 5..9, 4 messages)",
        "spans found     none. Retention",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
}

#[test]
fn the_json_names_are_stable() {
    let why = why_of(&logged(3, 41, 1_700_000_000_123, true, "errors"));
    let v: serde_json::Value = serde_json::to_value(&why).unwrap();
    for field in [
        "trace_id",
        "decision_topic",
        "log_records_read",
        "unreadable_records",
        "record",
        "other_records",
        "spans",
        "explanation",
        "live_decision",
        "live_differs",
    ] {
        assert!(v.get(field).is_some(), "{field} in {v}");
    }
    let r = &v["record"];
    for field in [
        "v",
        "trace_id",
        "keep",
        "rule",
        "reason",
        "probability",
        "stage",
        "decided_at_ms",
        "decided_at",
        "partition",
        "spans",
        "adjusted_count",
        "log_partition",
        "log_offset",
    ] {
        assert!(r.get(field).is_some(), "record.{field} in {r}");
    }
    assert_eq!(r["decided_at"], "2023-11-14T22:13:20.123Z");
    assert_eq!(
        r["stage"], "th:e6666666666666",
        "a record of before stages, at 0.1"
    );
    assert_eq!(r["log_offset"], 41);
}
