use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::*;

/// Workers that, once their input closes, take `finish` to "deliver" and
/// then store the last offset they read.
fn partitions(finish: Duration, drain_timeout: Duration) -> (Partitions, Arc<AtomicI64>) {
    let stored = Arc::new(AtomicI64::new(-1));
    let store = stored.clone();
    let start: Start = Box::new(move |_partition, _assigned| {
        let (tx, mut rx) = mpsc::channel::<Input>(8);
        let store = store.clone();
        let task = tokio::spawn(async move {
            let mut last = -1;
            while let Some(m) = rx.recv().await {
                last = offset(m);
            }
            tokio::time::sleep(finish).await;
            store.store(last + 1, Ordering::SeqCst);
            Stopped {
                undecided_traces: 2,
                redelivered_spans: 0,
            }
        });
        Worker {
            input: tx,
            task,
            stored: Arc::new(AtomicI64::new(-1)),
        }
    });
    (Partitions::new(start, drain_timeout, 0).0, stored)
}

fn message(offset: i64) -> Input {
    Input::Message(crate::pipeline::InputMessage {
        offset,
        timestamp: None,
        key: None,
        payload: bytes::Bytes::from_static(b"x"),
    })
}

fn offset(input: Input) -> i64 {
    match input {
        Input::Message(m) => m.offset,
        Input::CaughtUp => -1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_returns_only_after_the_workers_stored_their_last_offsets() {
    let (partitions, stored) = partitions(Duration::from_millis(200), Duration::from_secs(10));
    for o in 0..5 {
        assert_eq!(partitions.dispatch(3, 1, message(o)), Dispatched::Queued);
    }
    // The revoke callback is synchronous code inside a poll on the runtime.
    let handed = partitions.stop_blocking(&[3]);
    assert_eq!(
        stored.load(Ordering::SeqCst),
        5,
        "final watermark stored before returning"
    );
    assert_eq!(
        handed,
        Handed {
            stopped: 1,
            timed_out: 0,
            undecided_traces: 2
        }
    );
    assert!(partitions.running().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_waits_no_longer_than_the_drain_timeout() {
    let (partitions, stored) = partitions(Duration::from_secs(30), Duration::from_millis(100));
    partitions.dispatch(0, 2, message(0));
    partitions.dispatch(1, 2, message(0));
    let handed = partitions.stop_blocking(&[1]);
    assert_eq!(handed.timed_out, 1);
    assert_eq!(stored.load(Ordering::SeqCst), -1, "nothing stored yet");
    assert_eq!(
        partitions.running(),
        vec![0],
        "only the revoked worker stopped"
    );
    let all = partitions.stop(None).await;
    assert_eq!(all.timed_out, 1);
}

/// Workers that read nothing until `go` opens, then record what they
/// read; a queue of one message.
fn stalled(go: Arc<tokio::sync::Notify>, read: Arc<std::sync::Mutex<Vec<(i32, i64)>>>) -> Start {
    Box::new(move |partition, _assigned| {
        let (tx, mut rx) = mpsc::channel::<Input>(1);
        let (go, read) = (go.clone(), read.clone());
        let task = tokio::spawn(async move {
            if partition == 0 {
                go.notified().await;
            }
            while let Some(m) = rx.recv().await {
                read.lock().unwrap().push((partition, offset(m)));
            }
            Stopped {
                undecided_traces: 0,
                redelivered_spans: 0,
            }
        });
        Worker {
            input: tx,
            task,
            stored: Arc::new(AtomicI64::new(-1)),
        }
    })
}

/// A worker that cannot take input holds up its own partition
/// only; what is read for it meanwhile waits, in order, and goes in once
/// there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_worker_holds_up_only_its_partition() {
    let go = Arc::new(tokio::sync::Notify::new());
    let read = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (partitions, mut rooms) =
        Partitions::new(stalled(go.clone(), read.clone()), Duration::from_secs(5), 0);
    assert_eq!(partitions.dispatch(0, 2, message(0)), Dispatched::Queued);
    assert_eq!(
        partitions.dispatch(0, 2, message(1)),
        Dispatched::Full,
        "pause partition 0"
    );
    assert_eq!(
        partitions.dispatch(0, 2, message(2)),
        Dispatched::Queued,
        "behind the others"
    );
    for o in 0..3 {
        assert_eq!(
            partitions.dispatch(1, 2, message(o)),
            Dispatched::Queued,
            "partition 1 flows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    go.notify_one();
    let mut last = Dispatched::Queued;
    while last != Dispatched::Drained {
        let room = tokio::time::timeout(Duration::from_secs(5), rooms.recv())
            .await
            .expect("room comes")
            .expect("room");
        assert_eq!(room.partition, 0);
        last = partitions.room(room);
    }
    partitions.stop(None).await;
    let read = read.lock().unwrap().clone();
    let of = |p: i32| {
        read.iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect::<Vec<_>>()
    };
    assert_eq!(of(0), vec![0, 1, 2], "in order, none lost");
    assert_eq!(of(1), vec![0, 1, 2]);
}

/// Stopping a partition whose worker is full lets go of what waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_full_worker_does_not_wait_for_room() {
    let go = Arc::new(tokio::sync::Notify::new());
    let read = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (partitions, _rooms) =
        Partitions::new(stalled(go.clone(), read), Duration::from_secs(5), 0);
    partitions.dispatch(0, 1, message(0));
    assert_eq!(partitions.dispatch(0, 1, message(1)), Dispatched::Full);
    go.notify_one();
    let handed = partitions.stop(None).await;
    assert_eq!((handed.stopped, handed.timed_out), (1, 0));
}

/// A worker that stops by itself is replaced, and
/// the partition is read again from what it last stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_is_replaced_from_its_last_stored_offset() {
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = started.clone();
    let start: Start = Box::new(move |_partition, _assigned| {
        count.fetch_add(1, Ordering::SeqCst);
        let (tx, mut rx) = mpsc::channel::<Input>(8);
        let stored = Arc::new(AtomicI64::new(-1));
        let mine = stored.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let o = offset(m);
                if o == 7 {
                    panic!("a bug at offset 7");
                }
                mine.store(o, Ordering::SeqCst);
            }
            Stopped {
                undecided_traces: 0,
                redelivered_spans: 0,
            }
        });
        Worker {
            input: tx,
            task,
            stored,
        }
    });
    let (partitions, _rooms) = Partitions::new(start, Duration::from_secs(5), 0);
    for o in [4, 5, 7] {
        assert_eq!(partitions.dispatch(2, 1, message(o)), Dispatched::Queued);
    }
    // Found without a next message...
    let mut reaped = Vec::new();
    for _ in 0..500 {
        reaped = partitions.reap();
        if !reaped.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        reaped,
        vec![(
            2,
            Dispatched::Dead {
                resume_from: Some(5),
                deaths: 1
            }
        )]
    );
    assert!(partitions.running().is_empty());
    assert!(partitions.reap().is_empty(), "once");
    // ...or by the next message.
    for o in [5, 7] {
        assert_eq!(partitions.dispatch(2, 1, message(o)), Dispatched::Queued);
    }
    let mut last = Dispatched::Queued;
    for _ in 0..500 {
        last = partitions.dispatch(2, 1, message(8));
        if last != Dispatched::Queued {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        last,
        Dispatched::Dead {
            resume_from: Some(5),
            deaths: 2
        },
        "read from 5 again and died before moving on"
    );
    // A replacement that dies before it stores anything resumes where its
    // predecessor's replacement did, not from the committed offset.
    assert_eq!(partitions.dispatch(2, 1, message(7)), Dispatched::Queued);
    let mut last = Dispatched::Queued;
    for _ in 0..500 {
        last = partitions.dispatch(2, 1, message(8));
        if last != Dispatched::Queued {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        last,
        Dispatched::Dead {
            resume_from: Some(5),
            deaths: 3
        }
    );
    assert_eq!(partitions.dispatch(2, 1, message(5)), Dispatched::Queued);
    assert_eq!(started.load(Ordering::SeqCst), 4, "a new worker each time");
    assert_eq!(partitions.running(), vec![2]);
}
