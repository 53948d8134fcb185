//! Exactly-once mode: kept traces written into the transaction with the
//! offset past them, never an offset past what is held in memory.

use super::*;

/// Records what an exactly-once worker writes into the transaction.
#[derive(Default)]
struct MemoryTransaction {
    /// Per write: the keys of its messages and the offset recorded with them.
    writes: Mutex<Vec<(Vec<String>, Option<i64>)>>,
}

impl Transaction for MemoryTransaction {
    fn write(
        self: Arc<Self>,
        _partition: i32,
        messages: Vec<Outgoing>,
        next_offset: Option<i64>,
    ) -> BoxFuture<'static, Result<(), ProduceError>> {
        let keys = messages
            .iter()
            .map(|m| String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()).to_string())
            .collect();
        self.writes.lock().unwrap().push((keys, next_offset));
        async { Ok(()) }.boxed()
    }
}

/// Exactly-once mode: a kept trace enters the transaction only once nothing
/// before its last offset is pending, and with the offset just past it; the
/// offsets stored meanwhile never pass it.
#[tokio::test(start_paused = true)]
async fn exactly_once_writes_a_kept_trace_with_its_offsets_once_nothing_before_is_pending() {
    let txn = Arc::new(MemoryTransaction::default());
    let h = start_full(0, false, Some(txn.clone()));
    let (a, a_parts) = two_part_trace(21, true);
    let (b, b_parts) = two_part_trace(22, true);
    send(&h, 10, payload(&a_parts[0])).await; // A's root
    send(&h, 11, payload(&b_parts[0])).await; // B, whole
    send(&h, 12, payload(&b_parts[1])).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&h, 13, payload(&a_parts[1])).await; // A's child, later: A decides last
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // B is decided and kept, but A still pins offset 10, below B's messages.
    assert!(
        h.output.sent.lock().unwrap().is_empty(),
        "nothing bypasses the transaction"
    );
    let writes = txn.writes.lock().unwrap().clone();
    assert!(
        writes.iter().all(|(keys, _)| keys.is_empty()),
        "B waits for A: {writes:?}"
    );
    assert!(
        writes.iter().all(|(_, next)| next.is_some_and(|n| n <= 10)),
        "no offset past A's first message: {writes:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // A decided
    let writes = txn.writes.lock().unwrap().clone();
    let with_messages: Vec<_> = writes.iter().filter(|(k, _)| !k.is_empty()).collect();
    assert_eq!(
        with_messages,
        vec![&(vec![b.to_hex(), a.to_hex()], Some(14))],
        "both, in offset order, with the offset past both"
    );
    assert_eq!(
        h.offsets.last(),
        None,
        "the offsets went with the writes, not around them"
    );
    drop(h.tx);
    h.task.await.unwrap();
}

/// T's child at offset 0, an
/// undecided U at 1, T's ERROR root at 2. T decided must not let the offset
/// pass 0 until T is in the transaction; and a kept trace over three
/// messages with two undecided traces between them likewise.
#[tokio::test(start_paused = true)]
async fn exactly_once_never_writes_an_offset_past_a_kept_trace_held_in_memory() {
    let txn = Arc::new(MemoryTransaction::default());
    let h = start_full(0, false, Some(txn.clone()));
    let (t, t_parts) = two_part_trace(31, true);
    let (_, u_parts) = two_part_trace(32, false);
    send(&h, 0, payload(&t_parts[1])).await; // T's child
    send(&h, 1, payload(&u_parts[1])).await; // U: no root, waits 10 s
    send(&h, 2, payload(&t_parts[0])).await; // T's root
    tokio::time::sleep(Duration::from_secs(3)).await; // T decided (after_root)
    let writes = txn.writes.lock().unwrap().clone();
    assert!(
        writes
            .iter()
            .all(|(keys, next)| keys.is_empty() && next.is_none_or(|n| n <= 0)),
        "nothing written past T's first message while T waits: {writes:?}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await; // U decided (dropped)
    let writes = txn.writes.lock().unwrap().clone();
    let with_t: Vec<_> = writes.iter().filter(|(k, _)| !k.is_empty()).collect();
    assert_eq!(with_t, vec![&(vec![t.to_hex()], Some(3))]);
    drop(h.tx);
    h.task.await.unwrap();

    // A kept trace over three messages, two undecided traces between them.
    let txn = Arc::new(MemoryTransaction::default());
    let h = start_full(0, false, Some(txn.clone()));
    let id = TraceId([33; 16]);
    let mut err = SpanSpec::new("c", "c", Some(0), 2, 3);
    err.error = true;
    let k = build_trace(
        id,
        &[[1; 8], [2; 8], [3; 8]],
        1_000,
        &[
            SpanSpec::new("a", "root", None, 0, 10),
            SpanSpec::new("b", "b", Some(0), 1, 5),
            err,
        ],
    );
    let (_, v) = two_part_trace(34, false);
    let (_, w) = two_part_trace(35, false);
    send(&h, 0, payload(&k[1])).await;
    send(&h, 1, payload(&v[1])).await;
    send(&h, 2, payload(&k[2])).await;
    send(&h, 3, payload(&w[1])).await;
    send(&h, 4, payload(&k[0])).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // K decided
    let writes = txn.writes.lock().unwrap().clone();
    assert!(
        writes
            .iter()
            .all(|(keys, next)| keys.is_empty() && next.is_none_or(|n| n <= 0)),
        "{writes:?}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = txn.writes.lock().unwrap().clone();
    let with_k: Vec<_> = writes.iter().filter(|(k, _)| !k.is_empty()).collect();
    assert_eq!(with_k, vec![&(vec![id.to_hex()], Some(5))]);
}

/// A transaction that refuses every write as fenced: the worker's
/// partition was revoked while it ran on.
struct Fenced;

impl Transaction for Fenced {
    fn write(
        self: Arc<Self>,
        _partition: i32,
        _messages: Vec<Outgoing>,
        _next_offset: Option<i64>,
    ) -> BoxFuture<'static, Result<(), ProduceError>> {
        async { Err(ProduceError::new(ProduceErrorKind::Fenced, "revoked")) }.boxed()
    }
}

/// A worker whose transactional write is refused as fenced stops at once,
/// its input still open: it has lost its partition and writes nothing
/// more (before, it logged the error and went on reading and writing).
#[tokio::test(start_paused = true)]
async fn a_worker_whose_write_is_fenced_stops() {
    let h = start_full(0, false, Some(Arc::new(Fenced)));
    let (_, parts) = two_part_trace(41, true);
    send(&h, 0, payload(&parts[0])).await;
    tokio::time::sleep(Duration::from_secs(15)).await; // decided: a write
    assert!(
        h.task.is_finished(),
        "the fenced worker stopped, its input still open"
    );
    h.task.await.unwrap();
    drop(h.tx);
}
