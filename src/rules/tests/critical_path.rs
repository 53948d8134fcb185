//! The critical path: which spans the time of a trace is spent in.

use super::*;

#[test]
fn critical_path_walks_into_the_child_that_finished_last() {
    let spans = checkout_trace(false);
    let cp = CriticalPath::of(&spans);
    assert_eq!(cp.total_ns, 1_000_000_000);
    let steps: Vec<(String, u64)> = cp
        .steps()
        .iter()
        .map(|(i, ns)| (spans[*i].name().into_owned(), ns / 1_000_000))
        .collect();
    assert_eq!(
        steps,
        [
            ("POST /checkout".to_string(), 10 + 100),
            ("place-order".to_string(), 90 + 100),
            ("POST /score".to_string(), 700),
        ]
    );
    let covered: u64 = cp.segments.iter().map(|s| s.end_ns - s.start_ns).sum();
    assert_eq!(covered, cp.total_ns, "every instant attributed once");
    assert!(cp.segments.windows(2).all(|w| w[0].end_ns == w[1].start_ns));
}

/// A message consumed after the request that produced it returned, in the same
/// trace: the hop and the consumer are on the path.
#[test]
fn critical_path_crosses_a_kafka_hop() {
    let spans = kafka_hop_trace();
    let cp = CriticalPath::of(&spans);
    assert_eq!(cp.total_ns, 900_000_000);
    let ms = |name: &str| cp.time_in(&spans, |s| s.name() == name) / 1_000_000;
    assert_eq!(
        (
            ms("POST /order"),
            ms("orders publish"),
            ms("orders process")
        ),
        (50, 150, 700)
    );
}

#[test]
fn critical_path_survives_missing_roots_and_cycles() {
    let mut spans = checkout_trace(false);
    spans.remove(0); // no root: start from the top span that ends last
    let cp = CriticalPath::of(&spans);
    assert_eq!(cp.total_ns, 890_000_000);
    // A span that is its own parent, and two that point at each other.
    let mut a = spans[0].clone();
    a.parent_span_id = a.span_id;
    let mut b = spans[1].clone();
    let mut c = spans[2].clone();
    b.span_id = [0xb; 8];
    c.span_id = [0xc; 8];
    b.parent_span_id = c.span_id;
    c.parent_span_id = b.span_id;
    let cp = CriticalPath::of(&[a, b, c]);
    assert!(cp.total_ns > 0);
    assert_eq!(CriticalPath::of(&[]), CriticalPath::default());
}
