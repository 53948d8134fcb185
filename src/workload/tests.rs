use super::*;
use prost::Message as _;

#[test]
fn shop_traces_have_seven_spans_over_five_resources() {
    let mut w = ShopWorkload::new(7);
    let t = w.next_trace(1_700_000_000_000_000_000);
    assert_eq!(t.truth.spans, 7);
    assert_eq!(t.messages.len(), 5);
    let spans: usize = t
        .messages
        .iter()
        .map(|m| m.resource_spans[0].scope_spans[0].spans.len())
        .sum();
    assert_eq!(spans, 7);
    let size: usize = t.messages.iter().map(|m| m.encoded_len()).sum();
    assert!(
        (100 * 7..300 * 7).contains(&size),
        "about 165 bytes per span, got {}",
        size / 7
    );
}

#[test]
fn lean_shape_is_the_same_shop_in_fewer_bytes() {
    let (mut shop, mut lean) = (ShopWorkload::new(5), ShopWorkload::lean(5));
    let (mut shop_bytes, mut lean_bytes, mut spans) = (0, 0, 0);
    for i in 0..2_000 {
        let (a, b) = (shop.next_trace(i), lean.next_trace(i));
        assert_eq!(a.truth.trace_id, b.truth.trace_id);
        assert_eq!(a.truth.duration_ns, b.truth.duration_ns);
        assert_eq!(a.messages.len(), b.messages.len());
        spans += b.truth.spans;
        shop_bytes += a.messages.iter().map(|m| m.encoded_len()).sum::<usize>();
        lean_bytes += b.messages.iter().map(|m| m.encoded_len()).sum::<usize>();
    }
    let (shop_per_span, lean_per_span) = (shop_bytes / spans, lean_bytes / spans);
    eprintln!("bytes per span: shop {shop_per_span}, lean {lean_per_span}");
    assert!((280..310).contains(&shop_per_span), "shop: {shop_per_span}");
    assert!((155..175).contains(&lean_per_span), "lean: {lean_per_span}");
}

#[test]
fn same_seed_same_workload() {
    let a = ShopWorkload::new(3).next_trace(0);
    let b = ShopWorkload::new(3).next_trace(0);
    assert_eq!(a.truth.trace_id, b.truth.trace_id);
    assert_eq!(a.messages, b.messages);
}
