//! The samplers: `rate`, `limit` and `dynamic`, and the adjusted count
//! they report.

use super::*;

#[test]
fn rate_is_deterministic_and_near_its_probability() {
    let r = rules("- { name: baseline, sample: { rate: 0.2 } }");
    let mut kept = 0;
    let n = 20_000u32;
    for i in 0..n {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        // A cheap mix so the low 56 bits look random, as real trace ids are.
        let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        id[8..].copy_from_slice(&h.to_be_bytes());
        let t = TraceSummary::of(TraceId(id), &[]);
        let d = r.decide(&t, Duration::ZERO);
        assert_eq!(d, r.decide(&t, Duration::ZERO), "same trace, same decision");
        assert_eq!(d.stage.probability(), Some(0.2));
        kept += usize::from(d.keep);
    }
    let got = kept as f64 / n as f64;
    assert!((got - 0.2).abs() < 0.015, "kept {got}");
}

#[test]
fn limit_keeps_n_per_second_and_claims_no_adjusted_count() {
    let r = rules("- { name: capped, sample: { limit: { traces_per_second: 5 } } }");
    let spans = checkout_trace(false);
    let id = TraceId([7; 16]);
    let t = TraceSummary::of(id, &spans);
    let at = |ms: u64| Duration::from_millis(ms);
    let kept: usize = (0..20)
        .map(|i| usize::from(r.decide(&t, at(1_000 + i * 10)).keep))
        .sum();
    assert_eq!(kept, 5);
    let d = r.decide(&t, at(2_000));
    assert!(d.keep, "the next second has a fresh allowance");
    // Not a probability sampler: what it keeps stands for an unknown number
    // of traces, and a head-sampling threshold is erased, not passed on.
    assert_eq!(d.stage, Stage::Unknown);
    let mut spans = crate::otlp::tests::with_trace_state(&spans, "ot=th:e;rv:ffffffffffffff,x=y");
    let counted = Counted::of(
        &spans,
        &id,
        &TraceSummary::of(id, &spans).sampling,
        d.stage,
        "capped",
        Some("SampleRate"),
    );
    counted.apply(&mut spans, &[]);
    let (bytes, _) =
        crate::otlp::encode_trace(&spans, &counted.annotation, crate::otlp::Encoding::OtlpJson);
    let text = String::from_utf8(bytes).expect("json");
    assert!(!text.contains("tailgate.adjusted_count"), "{text}");
    assert!(!text.contains("SampleRate"), "{text}");
    assert!(
        text.contains(r#""traceState":"ot=rv:ffffffffffffff,x=y""#),
        "{text}"
    );
}

#[test]
fn dynamic_keys_come_from_the_root_and_rare_keys_are_kept_more() {
    let r = rules(
        "- { name: per-route, sample: { dynamic: { key: [service.name, http.route, trace.error], target_per_second: 2, interval: 1s } } }",
    );
    let ok = checkout_trace(false);
    let t = TraceSummary::of(TraceId([7; 16]), &ok);
    assert_eq!(
        dynamic_key(
            &t,
            &[
                "service.name".into(),
                "http.route".into(),
                "trace.error".into(),
                "span.kind".into(),
                "nope".into()
            ]
        ),
        "gateway\u{1f}/checkout\u{1f}false\u{1f}server\u{1f}"
    );
    // 100 ok traces per second and 1 error trace per second, for 5 s.
    let err = checkout_trace(true);
    let mut last = (0.0, 0.0);
    for ms in 0..5_000u64 {
        let spans = if ms % 100 == 0 && ms % 1000 == 0 {
            &err
        } else {
            &ok
        };
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&(ms.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes());
        let t = TraceSummary::of(TraceId(id), spans);
        if ms % 10 != 0 {
            continue;
        }
        let d = r.decide(&t, Duration::from_millis(ms));
        if t.error {
            last.0 = d.stage.probability().unwrap_or(0.0);
        } else {
            last.1 = d.stage.probability().unwrap_or(0.0);
        }
    }
    let (rare, frequent) = last;
    assert_eq!(rare, 1.0, "the error key is rare and kept");
    assert!(frequent < 0.05, "the ok key is sampled: {frequent}");
}

/// `rate` keeps a trace when its randomness is at or above the larger of
/// the incoming threshold and its own; an incoming threshold the trace's
/// randomness is below is not one (it is erased, as the specification
/// says), so the rule's own decides, and the kept spans claim no count.
#[test]
fn rate_decides_by_the_explicit_rv_and_an_inconsistent_threshold_is_no_threshold() {
    let r = rules("- { name: half, sample: { rate: 0.5 } }");
    let id = TraceId([0; 16]); // by the id, nothing but rate 1 would keep it
    let base = checkout_trace(false);
    for (state, keep, out, count) in [
        // Consistent: kept by rv 0x90… ≥ both thresholds, th:8 leaves.
        (
            "ot=th:8;rv:90000000000000",
            true,
            "ot=th:8;rv:90000000000000",
            Some(2.0),
        ),
        // rv 0x70… is below the rule's 0x80…: dropped.
        ("ot=th:4;rv:70000000000000", false, "", None),
        // th:f but rv 0x90…: inconsistent, erased; the rule's own decides.
        (
            "ot=th:f;rv:90000000000000",
            true,
            "ot=rv:90000000000000",
            None,
        ),
    ] {
        let spans = crate::otlp::tests::with_trace_state(&base, state);
        let t = TraceSummary::of(id, &spans);
        let (d, sampling) = (r.decide(&t, Duration::ZERO), t.sampling);
        assert_eq!(d.keep, keep, "{state}");
        if !keep {
            continue;
        }
        let mut spans = spans;
        let counted = Counted::of(&spans, &id, &sampling, d.stage, "half", None);
        counted.apply(&mut spans, &[]);
        for i in 0..spans.len() {
            let o = counted.outgoing(i).expect("a span");
            assert_eq!(o.tracestate.as_deref().unwrap_or(state), out, "{state}");
            assert_eq!(o.adjusted_count, count, "{state}");
        }
    }
}
