//! The specification's worked examples, parsing every malformed form,
//! editing a `tracestate` without touching what is not ours, and the
//! composition of a head threshold with a tail one: never lowered, and
//! unbiased in what the kept traces stand for.

use proptest::prelude::*;

use super::*;

fn th(s: &str) -> Threshold {
    Threshold::parse(s).unwrap_or_else(|| panic!("th:{s}"))
}

/// Thresholds for 1, 1/2, 1/4, 1/10, 2/3 and 1/3 of traces, at full
/// precision (what tailgate's `rate` uses), and back.
#[test]
fn the_thresholds_of_common_probabilities() {
    for (p, encoded) in [
        (1.0, "0"),
        (0.5, "8"),
        (0.25, "c"),
        (0.125, "e"),
        (0.1, "e6666666666666"),
        (2.0 / 3.0, "55555555555558"),
        (1.0 / 3.0, "aaaaaaaaaaaaac"),
    ] {
        let t = Threshold::from_probability(p).expect("a probability");
        assert_eq!(t.encode(), encoded, "p = {p}");
        assert_eq!(th(encoded), t);
        assert_eq!(t.probability(), p, "exact: p = {p}");
        assert!((t.adjusted_count() - 1.0 / p).abs() < 1e-12);
    }
    assert_eq!(Threshold::from_probability(0.0), None);
    assert_eq!(Threshold::from_probability(f64::NAN), None);
    assert_eq!(Threshold::from_probability(2.0), Some(Threshold::ALWAYS));
    // The smallest probability, 2^-56, is the largest threshold.
    assert_eq!(
        Threshold::from_probability(1.0 / MAX as f64).map(Threshold::value),
        Some(MAX - 1)
    );
}

/// The specification's table (precision 4) and its 1 % example: each
/// `th` reads as the probability the table gives.
#[test]
fn the_specification_table_reads_as_its_probabilities() {
    for (encoded, p) in [
        ("aaab", 0.3333282470703125),
        ("cccd", 0.1999969482421875),
        ("e666", 0.100006103515625),
        ("fd70a", 0.010000228881835938),
        ("ffbe77", 0.0009999871253967285),
        ("fff9724", 0.00010000169277191162),
    ] {
        assert_eq!(th(encoded).probability(), p, "th:{encoded}");
    }
    assert_eq!(th("fd70a4").value(), 71_337_018_784_743_424);
    assert_eq!(th("fd70a4").value(), 0xfd70a400000000);
}

#[test]
fn malformed_values_are_refused() {
    for bad in ["", "0123456789abcde", "C", "g", "8 ", "-1", "0x8", "th"] {
        assert_eq!(Threshold::parse(bad), None, "th:{bad:?}");
    }
    assert_eq!(
        Randomness::parse("6e6d1a75832a2f").map(Randomness::value),
        Some(0x6e6d1a75832a2f)
    );
    for bad in ["6e6d1a75832a2", "6e6d1a75832a2f0", "6E6D1A75832A2F", ""] {
        assert_eq!(Randomness::parse(bad), None, "rv:{bad:?}");
    }
}

#[test]
fn the_ot_member_is_read_among_others() {
    let id = TraceId([0xff; 16]);
    let s = Sampling::of("vendor=x, ot=th:c;rv:6e6d1a75832a2f;foo:bar ,other=y");
    assert_eq!(s.threshold, Some(th("c")));
    assert_eq!(s.randomness.map(Randomness::value), Some(0x6e6d1a75832a2f));
    assert!(!s.malformed_threshold);
    // rv 0x6e… is below c0…: a span kept under th:c could not have it.
    assert!(!s.consistent(&id));
    assert_eq!(s.randomness_of(&id).value(), 0x6e6d1a75832a2f);
    let head = Sampling::of("ot=th:e");
    assert!(head.consistent(&id), "the id's randomness is ff…");
    assert_eq!(head.randomness_of(&id), Randomness::of(&id));
    assert_eq!(Sampling::of("vendor=x"), Sampling::default());
    assert_eq!(Sampling::of(""), Sampling::default());
    let bad = Sampling::of("ot=th:XYZ;rv:6e6d1a75832a2f");
    assert!(bad.malformed_threshold && bad.threshold.is_none());
    assert!(bad.randomness.is_some());
}

#[test]
fn a_threshold_is_written_and_erased_keeping_everything_else() {
    assert_eq!(
        with_threshold(
            "vendor=x,ot=th:e;rv:6e6d1a75832a2f;foo:bar",
            Some(th("f")),
            None
        ),
        "ot=th:f;rv:6e6d1a75832a2f;foo:bar,vendor=x"
    );
    assert_eq!(with_threshold("ot=th:e,vendor=x", None, None), "vendor=x");
    assert_eq!(
        with_threshold("ot=rv:6e6d1a75832a2f", None, None),
        "ot=rv:6e6d1a75832a2f"
    );
    assert_eq!(with_threshold("", Some(th("8")), None), "ot=th:8");
    assert_eq!(with_threshold("", None, None), "");
    assert_eq!(
        with_threshold(" a=1 ,, b=2", Some(Threshold::ALWAYS), None),
        "ot=th:0,a=1,b=2"
    );
}

fn member() -> impl Strategy<Value = String> {
    ("[a-z][a-z0-9_]{0,6}", "[a-zA-Z0-9:;._-]{0,10}").prop_map(|(k, v)| format!("{k}={v}"))
}

proptest! {
    /// Any threshold is written and read back as itself.
    #[test]
    fn thresholds_round_trip(t in 0u64..MAX) {
        let t = Threshold::new(t).expect("below 2^56");
        let encoded = t.encode();
        prop_assert!(encoded.len() <= 14 && !encoded.is_empty());
        prop_assert!(encoded == "0" || !encoded.ends_with('0'));
        prop_assert_eq!(Threshold::parse(&encoded), Some(t));
    }

    /// Editing keeps every other member in order and the `rv`, and says
    /// the threshold it was given.
    #[test]
    fn editing_keeps_what_is_not_ours(
        before in prop::collection::vec(member(), 0..4),
        after in prop::collection::vec(member(), 0..4),
        rv in prop::option::of(0u64..MAX),
        t in prop::option::of(0u64..MAX),
    ) {
        let others: Vec<&String> = before
            .iter()
            .chain(&after)
            .filter(|m| !m.starts_with("ot="))
            .collect();
        let ot = match rv {
            Some(r) => format!("ot=th:8;rv:{r:014x}"),
            None => "ot=th:8".to_string(),
        };
        let state: Vec<&str> = before
            .iter()
            .filter(|m| !m.starts_with("ot="))
            .map(String::as_str)
            .chain(std::iter::once(ot.as_str()))
            .chain(after.iter().filter(|m| !m.starts_with("ot=")).map(String::as_str))
            .collect();
        let t = t.and_then(Threshold::new);
        let out = with_threshold(&state.join(","), t, None);
        let read = Sampling::of(&out);
        prop_assert_eq!(read.threshold, t);
        prop_assert_eq!(read.randomness.map(Randomness::value), rv);
        let kept: Vec<&str> = out
            .split(',')
            .filter(|m| !m.is_empty() && !m.starts_with("ot="))
            .collect();
        prop_assert_eq!(kept, others.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    }

    /// Composition never lowers a threshold, and keeps exactly what both
    /// stages would keep.
    #[test]
    fn composition_never_lowers(a in 0u64..MAX, b in 0u64..MAX, r in 0u64..MAX) {
        let (a, b) = (Threshold::new(a).unwrap(), Threshold::new(b).unwrap());
        let c = Threshold::compose(Some(a), b);
        prop_assert!(c >= a && c >= b);
        let r = Randomness(r);
        prop_assert_eq!(c.keeps(r), a.keeps(r) && b.keeps(r));
        prop_assert_eq!(Threshold::compose(None, b), b);
    }
}

/// Head sampling at 1/8 and a tail `rate` of 1/4, either way round: the kept
/// traces' adjusted counts (of the composed threshold) add up to the number
/// of traces, within four standard errors.
#[test]
fn composed_thresholds_estimate_the_count_without_bias() {
    let n = 40_000u64;
    for (head, tail) in [(0.125, 0.25), (0.25, 0.125), (1.0, 0.1), (0.5, 0.5)] {
        let (h, t) = (
            Threshold::from_probability(head).unwrap(),
            Threshold::from_probability(tail).unwrap(),
        );
        let composed = Threshold::compose(Some(h), t);
        let mut estimate = 0.0;
        for k in 0..n {
            // Spread k over 56 bits as random ids would be.
            let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x ^= x >> 31;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 29;
            let r = Randomness(x >> 8);
            if h.keeps(r) && t.keeps(r) {
                estimate += composed.adjusted_count();
            }
        }
        let p = composed.probability();
        let sd = (n as f64 * (1.0 - p) / p).sqrt();
        assert!(
            (estimate - n as f64).abs() < 4.0 * sd,
            "head {head}, tail {tail}: {estimate} for {n} (sd {sd:.0})"
        );
    }
}
