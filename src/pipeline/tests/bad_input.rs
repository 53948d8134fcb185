//! Input that is not OTLP: skipped and released, or copied unchanged to
//! the dead-letter topic when there is one.

use super::*;

#[tokio::test(start_paused = true)]
async fn bad_input_is_skipped_and_its_offset_released() {
    let h = start(0);
    let (_, parts) = two_part_trace(4, true);
    send(&h, 10, Bytes::from_static(b"not otlp")).await;
    assert_eq!(h.offsets.last(), Some(11));
    send(&h, 11, Bytes::new()).await;
    let good = payload(&parts[0]);
    send(&h, 12, good.slice(..good.len() - 3)).await;
    assert_eq!(
        h.offsets.last(),
        Some(13),
        "empty and truncated messages released too"
    );
    send(&h, 13, good).await;
    assert_eq!(h.offsets.last(), Some(13), "a good message is pinned");
}

#[tokio::test(start_paused = true)]
async fn malformed_messages_go_to_the_dead_letter_topic_unchanged() {
    let h = start_with(1, true);
    send(&h, 20, Bytes::from_static(b"not otlp")).await;
    // The first attempt fails: the offset stays pinned until the retry lands.
    assert_eq!(h.offsets.last(), Some(20));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.offsets.last(), Some(21));
    let dl = h.output.dead_letters.lock().unwrap().clone();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].payload, Bytes::from_static(b"not otlp"));
    assert_eq!(dl[0].key.as_deref(), Some(b"k".as_slice()));
    let header = |name: &str| {
        dl[0]
            .headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header(DLQ_REASON_HEADER).as_deref(), Some("not_otlp"));
    assert_eq!(header(DLQ_OFFSET_HEADER).as_deref(), Some("20"));
    assert_eq!(header(DLQ_PARTITION_HEADER).as_deref(), Some("0"));
    assert!(header(DLQ_DETAIL_HEADER).is_some_and(|d| !d.is_empty()));
}

#[tokio::test(start_paused = true)]
async fn without_a_dead_letter_topic_nothing_is_copied() {
    let h = start(0);
    send(&h, 0, Bytes::from_static(b"not otlp")).await;
    assert!(h.output.dead_letters.lock().unwrap().is_empty());
    assert_eq!(h.offsets.last(), Some(1));
}
