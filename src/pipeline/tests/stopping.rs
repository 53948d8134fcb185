//! A worker that stops: what it commits, what it reports as redelivered,
//! and the memory usage it releases.

use super::*;
use crate::workload::ShopWorkload;

#[tokio::test(start_paused = true)]
async fn stopping_never_commits_past_undecided_traces() {
    let h = start(0);
    let mut w = ShopWorkload::new(9);
    let t = w.next_trace(0);
    send(&h, 0, Bytes::from_static(b"junk")).await;
    for (i, m) in t.messages.iter().enumerate() {
        send(&h, 1 + i as i64, payload(m)).await;
    }
    drop(h.tx);
    h.task.await.unwrap();
    assert_eq!(
        h.offsets.last(),
        Some(1),
        "the trace at offset 1 was never decided"
    );
    assert!(h.output.sent.lock().unwrap().is_empty());
}

/// Letting a partition go while a kept trace was delivered past the commit
/// (an older trace still pins it) reports those spans as redelivered: the
/// partition's next reader will deliver them again.
#[tokio::test(start_paused = true)]
async fn spans_delivered_past_the_commit_are_reported_when_the_partition_is_let_go() {
    let h = start(0);
    let (_, undecided) = two_part_trace(9, false);
    let (_, kept) = two_part_trace(10, true);
    send(&h, 0, payload(&undecided[1])).await; // no root: waits 10 s
    send(&h, 1, payload(&kept[0])).await;
    send(&h, 2, payload(&kept[1])).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // kept trace decided and delivered
    assert_eq!(h.output.sent.lock().unwrap().len(), 1);
    assert_eq!(
        h.offsets.last(),
        Some(0),
        "still pinned by the undecided trace"
    );
    drop(h.tx);
    let stopped = h.task.await.unwrap();
    assert_eq!(
        stopped,
        Stopped {
            undecided_traces: 1,
            redelivered_spans: 2
        }
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_is_redelivered_when_everything_delivered_is_committed() {
    let h = start(0);
    let (_, kept) = two_part_trace(11, true);
    send(&h, 0, payload(&kept[0])).await;
    send(&h, 1, payload(&kept[1])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.offsets.last(), Some(2));
    drop(h.tx);
    assert_eq!(
        h.task.await.unwrap(),
        Stopped {
            undecided_traces: 0,
            redelivered_spans: 0
        }
    );
}

/// A worker that panics takes its share of the memory usage with it.
#[tokio::test(start_paused = true)]
async fn a_worker_that_ends_releases_its_memory_usage() {
    let usage = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (_rules_tx, rules) = rules();
    let config = WorkerConfig {
        usage: usage.clone(),
        ..config()
    };
    let mut p = Partition::new(
        0,
        config,
        rules,
        Commit::Offsets(Arc::new(MemoryOffsets::default())),
    );
    let (_, parts) = two_part_trace(40, false);
    p.handle(
        InputMessage {
            offset: 0,
            timestamp: None,
            key: None,
            payload: payload(&parts[0]),
        },
        Instant::now(),
    );
    p.advance();
    assert!(usage.load(Ordering::SeqCst) > 0);
    let task = tokio::spawn(async move {
        let _p = p;
        panic!("a bug");
    });
    assert!(task.await.is_err());
    assert_eq!(usage.load(Ordering::SeqCst), 0);
}
