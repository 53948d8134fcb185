//! The decision log: each decision's record pins its trace's
//! offsets until the log has it, and decisions read back from the log are
//! followed by late spans, however many other decisions came since.

use super::*;

fn with_log(decision_log: bool) -> WorkerConfig {
    WorkerConfig {
        decision_log,
        max_in_flight: 1 << 20,
        ..config()
    }
}

fn partition(decision_log: bool) -> (Partition, Arc<MemoryOffsets>) {
    let (_tx, rules) = rules();
    let offsets = Arc::new(MemoryOffsets::default());
    (
        Partition::new(
            0,
            with_log(decision_log),
            rules,
            Commit::Offsets(offsets.clone()),
        ),
        offsets,
    )
}

/// An input message without a key or a stamp.
pub(super) fn message(offset: i64, data: &TracesData) -> InputMessage {
    InputMessage {
        offset,
        timestamp: None,
        key: None,
        payload: payload(data),
    }
}

#[test]
fn a_decision_is_committed_past_only_once_the_log_has_it() {
    let (mut p, offsets) = partition(true);
    let t0 = Instant::now();
    let (id, parts) = two_part_trace(1, false);
    p.handle(message(0, &parts[0]), t0);
    p.handle(message(1, &parts[1]), t0);
    p.decide_due(t0 + Duration::from_secs(11));
    p.advance();
    let commands = p.commands();
    let records: Vec<(DeliveryId, &Outgoing)> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Send { id, message, .. }
                if message.destination == Destination::Decisions(0) =>
            {
                Some((*id, message))
            }
            _ => None,
        })
        .collect();
    assert_eq!(records.len(), 1, "one batch for the pass: {commands:?}");
    let (delivery, message) = records[0];
    assert!(message.key.as_ref().is_some_and(|k| !k.is_empty()), "keyed");
    let batch = LoggedDecision::read(&message.payload).unwrap();
    assert_eq!(batch.len(), 1, "one decision in it: {batch:?}");
    let record = &batch[0];
    assert_eq!(record.trace(), Some(id));
    assert!(!record.keep, "no error: dropped by {}", record.rule);
    assert_eq!(
        (record.partition, record.spans, record.reason.as_str()),
        (0, 2, "after_root")
    );
    // Dropped, yet not committed past until the record is acknowledged.
    assert_eq!(
        offsets.last().unwrap_or(0),
        0,
        "nothing past the first offset"
    );
    p.delivered(delivery, Ok(()), t0 + Duration::from_secs(11));
    p.advance();
    assert_eq!(offsets.last(), Some(2));
}

fn id_key(id: TraceId) -> Vec<u8> {
    id.to_hex().into_bytes()
}

/// More decisions than the old cache held (100 000 per partition) between a
/// trace's decision and its late span, and a restart: the late span still
/// follows the decision read back from the log.
#[test]
fn late_spans_follow_decisions_read_back_after_many_others() {
    let (mut p, _) = partition(false);
    let t0 = Instant::now();
    let epoch = with_log(false).epoch;
    let ms = |at: Instant| epoch.at(at).as_millis() as i64;
    let (kept, kept_parts) = two_part_trace(2, true);
    let (dropped, dropped_parts) = two_part_trace(3, false);
    let mut records = vec![
        LoggedDecision {
            trace_id: kept.to_hex(),
            keep: true,
            rule: "errors".into(),
            reason: crate::buffer::Reason::AfterRoot.as_str().to_string(),
            probability: 1.0,
            decided_at_ms: ms(t0),
            partition: 0,
            spans: 1,
            ..LoggedDecision::default()
        },
        LoggedDecision {
            trace_id: dropped.to_hex(),
            keep: false,
            rule: "baseline".into(),
            reason: crate::buffer::Reason::Wait.as_str().to_string(),
            probability: 0.1,
            decided_at_ms: ms(t0),
            partition: 0,
            spans: 1,
            ..LoggedDecision::default()
        },
    ];
    for n in 0..150_000u64 {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&n.to_le_bytes());
        b[8] = 0xee;
        records.push(LoggedDecision {
            trace_id: (TraceId(b)).to_hex(),
            keep: n % 3 == 0,
            rule: "baseline".into(),
            reason: crate::buffer::Reason::Wait.as_str().to_string(),
            probability: 0.1,
            decided_at_ms: ms(t0),
            partition: 0,
            spans: 1,
            ..LoggedDecision::default()
        });
    }
    let now = t0 + Duration::from_secs(120);
    let mut names = std::collections::HashMap::new();
    let recalled = records
        .iter()
        .filter_map(|r| r.recalled(&mut names))
        .collect();
    // Resuming at its first message, which has no stamp: the wall's reading.
    let resume = p.resume_at(None, now);
    assert_eq!(p.remember(recalled, resume, now), 150_002);
    // Their late spans: the kept trace's child goes out at once, annotated
    // with its rule; the dropped trace's does not, and starts no new trace.
    p.handle(message(0, &kept_parts[1]), now);
    p.handle(message(1, &dropped_parts[1]), now);
    let sent: Vec<Outgoing> = p
        .commands()
        .into_iter()
        .filter_map(|c| match c {
            Command::Send { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].destination, Destination::Sampled);
    assert_eq!(sent[0].key.as_deref(), Some(id_key(kept).as_slice()));
    let out = crate::otlp::decode(sent[0].payload.clone()).unwrap();
    assert_eq!(out.spans.len(), 1);
    assert_eq!(p.status().1.traces, 0, "no late span starts a trace");
    // Past decided_ttl from when they were made (in stream time: here the
    // wall's, the input has no stamps), they are forgotten.
    p.handle(message(2, &dropped_parts[0]), t0 + Duration::from_secs(601));
    assert_eq!(p.status().1.traces, 1, "a new trace now");
}

/// A decision-log partition that cannot be written
/// (below `min.insync.replicas`: the producer retries without an answer)
/// does not hold the input. A record not acknowledged within
/// `kafka.decision_log_timeout` is given up — counted, its offsets
/// released, the decision standing — and the partition logs no decision
/// for as long again; then it tries again.
#[test]
fn a_decision_log_that_cannot_be_written_never_holds_the_input() {
    let (mut p, offsets) = partition(true);
    let t0 = Instant::now();
    let timeout = with_log(true).decision_log_timeout;
    let (_, first) = two_part_trace(1, false);
    p.handle(message(0, &first[0]), t0);
    p.handle(message(1, &first[1]), t0);
    p.decide_due(t0 + Duration::from_secs(11));
    p.advance();
    let record = p
        .commands()
        .into_iter()
        .find_map(|c| match c {
            Command::Send { id, message, .. }
                if message.destination == Destination::Decisions(0) =>
            {
                Some(id)
            }
            _ => None,
        })
        .expect("a record");
    assert_eq!(offsets.last().unwrap_or(0), 0, "held by its record");
    // No answer: the worker wakes for the record's time limit.
    let due = p.next_deadline(t0 + Duration::from_secs(11));
    assert_eq!(due, Some(t0 + Duration::from_secs(11) + timeout));
    p.decide_due(t0 + Duration::from_secs(11) + timeout);
    p.advance();
    assert_eq!(offsets.last(), Some(2), "released without its record");
    assert_eq!(p.unlogged(), 1);
    // The producer answers at last: expected, not a bug.
    p.delivered(record, Ok(()), t0 + Duration::from_secs(60));
    assert_eq!(p.anomalies(), 0);

    // Meanwhile the next decisions go unlogged: nothing is sent for them,
    // nothing holds their offsets.
    let later = t0 + Duration::from_secs(50);
    let (_, second) = two_part_trace(2, false);
    p.handle(message(2, &second[0]), later);
    p.handle(message(3, &second[1]), later);
    p.decide_due(later + Duration::from_secs(11));
    p.advance();
    let sent = p
        .commands()
        .into_iter()
        .filter(|c| matches!(c, Command::Send { .. }))
        .count();
    assert_eq!(sent, 0);
    assert_eq!(offsets.last(), Some(4));
    assert_eq!(p.unlogged(), 2);

    // Once the pause is over, decisions are logged again.
    let after = later + Duration::from_secs(11) + timeout;
    let (_, third) = two_part_trace(3, false);
    p.handle(message(4, &third[0]), after);
    p.handle(message(5, &third[1]), after);
    p.decide_due(after + Duration::from_secs(11));
    p.advance();
    let records = p
        .commands()
        .into_iter()
        .filter(|c| {
            matches!(c, Command::Send { message, .. } if message.destination == Destination::Decisions(0))
        })
        .count();
    assert_eq!(records, 1);
    assert_eq!(offsets.last(), Some(4), "held by its record again");
}

/// A decision log that answers with `records` after `delay` (never, if
/// `None`), noting what it was asked and whether its read was dropped.
struct SlowLog {
    delay: Option<Duration>,
    records: Vec<Recalled>,
    asked: Mutex<Vec<(i64, usize)>>,
    cancelled: Arc<std::sync::atomic::AtomicBool>,
    /// Fails with this instead of answering.
    fail: Option<LoadErrorKind>,
}

struct FlagOnDrop(Arc<std::sync::atomic::AtomicBool>, bool);

impl Drop for FlagOnDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

impl DecisionSource for SlowLog {
    fn load(
        &self,
        _partition: i32,
        since_ms: i64,
        at_most: usize,
    ) -> BoxFuture<'static, Result<Vec<Recalled>, LoadError>> {
        self.asked.lock().unwrap().push((since_ms, at_most));
        let (delay, records, fail) = (self.delay, self.records.clone(), self.fail);
        let guard = FlagOnDrop(self.cancelled.clone(), false);
        async move {
            // The whole guard goes into the future: dropped with it.
            let mut guard = guard;
            match delay {
                Some(d) => tokio::time::sleep(d).await,
                None => futures::future::pending::<()>().await,
            }
            guard.1 = true;
            drop(guard);
            match fail {
                Some(kind) => Err(LoadError {
                    kind,
                    detail: format!("{kind:?}"),
                }),
                None => Ok(records),
            }
        }
        .boxed()
    }
}

fn worker_with_log(
    log: Arc<SlowLog>,
    remembered_bytes: usize,
) -> (mpsc::Sender<Input>, tokio::task::JoinHandle<Stopped>) {
    let (_tx, rules) = rules();
    let config = WorkerConfig {
        remembered_bytes,
        ..with_log(true)
    };
    let worker = PartitionWorker::new(
        0,
        config,
        rules,
        Edges::AtLeastOnce {
            output: Arc::new(MemoryOutput::default()),
            offsets: Arc::new(MemoryOffsets::default()),
        },
    )
    .with_decision_log(log);
    let (tx, rx) = mpsc::channel(16);
    (tx, tokio::spawn(worker.run(rx, watch::channel(false).1)))
}

/// A revoke or a shutdown while a partition's decisions
/// are read back does not wait for the read (nor the drain timeout): the
/// read is cancelled and the worker ends.
#[tokio::test(start_paused = true)]
async fn a_partition_that_goes_during_its_read_back_cancels_it() {
    let log = Arc::new(SlowLog {
        delay: None,
        records: Vec::new(),
        asked: Mutex::default(),
        cancelled: Arc::default(),
        fail: None,
    });
    let (tx, task) = worker_with_log(log.clone(), 1 << 20);
    let (_, parts) = two_part_trace(1, false);
    tx.send(message(0, &parts[0]).into()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(log.asked.lock().unwrap().len(), 1, "reading back");
    drop(tx);
    let stopped = tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the worker ends within a second of its input closing")
        .unwrap();
    // Its first message stays undecided: uncommitted, read again by the
    // partition's next owner.
    assert!(stopped.undecided_traces <= 1);
    assert!(
        log.cancelled.load(Ordering::SeqCst),
        "the read was cancelled, not left running"
    );
}

/// Reading back asks for no more records than the
/// partition's share of `decision.remembered_bytes` holds, from where its
/// first message puts the clock.
#[tokio::test(start_paused = true)]
async fn a_read_back_asks_for_no_more_than_the_partition_remembers() {
    let log = Arc::new(SlowLog {
        delay: Some(Duration::from_millis(10)),
        records: Vec::new(),
        asked: Mutex::default(),
        cancelled: Arc::default(),
        fail: None,
    });
    let (tx, task) = worker_with_log(log.clone(), 64 * 1000);
    let (_, parts) = two_part_trace(1, false);
    // A minute behind the wall: a backlog the clock trusts.
    let jan = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 60_000;
    tx.send(
        InputMessage {
            timestamp: Some(jan),
            ..message(0, &parts[0])
        }
        .into(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(tx);
    task.await.unwrap();
    let asked = log.asked.lock().unwrap().clone();
    let ttl = with_log(true).decided_ttl.as_millis() as i64;
    let ahead = with_log(true).clock.ahead.as_millis() as i64;
    assert_eq!(asked, vec![(jan - ttl - ahead, 1000)]);
    assert!(!log.cancelled.load(Ordering::SeqCst));
}

/// A decision log that cannot be read now is asked again (six times in
/// all, backing off); one whose read took its whole time is not, since it
/// would hold the partition as long again. Either way the worker then goes
/// on without it, and decides.
#[tokio::test(start_paused = true)]
async fn an_unreadable_log_is_asked_again_and_a_too_slow_one_is_not() {
    for (kind, times) in [(LoadErrorKind::Unavailable, 6), (LoadErrorKind::TooSlow, 1)] {
        let log = Arc::new(SlowLog {
            delay: Some(Duration::from_millis(10)),
            records: Vec::new(),
            asked: Mutex::default(),
            cancelled: Arc::default(),
            fail: Some(kind),
        });
        let (tx, task) = worker_with_log(log.clone(), 1 << 20);
        let (_, parts) = two_part_trace(1, false);
        tx.send(message(0, &parts[0]).into()).await.unwrap();
        tx.send(Input::CaughtUp).await.unwrap();
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(log.asked.lock().unwrap().len(), times, "{kind:?}");
        drop(tx);
        let stopped = task.await.unwrap();
        assert_eq!(stopped.undecided_traces, 0, "{kind:?}: went on and decided");
    }
}

#[test]
fn a_pass_of_many_decisions_is_logged_in_batches_within_the_limit_and_held_until_all_are_in() {
    // Output messages (and so batches of records) limited to 5 KiB: a
    // batch is sent once it reaches 4 KiB, about a hundred decisions.
    let (_tx, rules) = rules();
    let offsets = Arc::new(MemoryOffsets::default());
    let config = WorkerConfig {
        limits: MessageLimits::new(5 * 1024),
        ..with_log(true)
    };
    let mut p = Partition::new(0, config, rules, Commit::Offsets(offsets.clone()));
    let t0 = Instant::now();
    const N: u16 = 300;
    let mut ids = Vec::new();
    for n in 0..N {
        let mut raw = [7u8; 16];
        raw[..2].copy_from_slice(&n.to_le_bytes());
        let id = TraceId(raw);
        ids.push(id);
        let spans = [SpanSpec::new("gateway", "GET /", None, 0, 10)];
        for part in build_trace(id, &[[1; 8]], 1_000, &spans) {
            p.handle(message(i64::from(n), &part), t0);
        }
    }
    // All due at once, in one pass.
    p.decide_due(t0 + Duration::from_secs(11));
    p.advance();
    let batches: Vec<(DeliveryId, Outgoing)> = p
        .commands()
        .into_iter()
        .filter_map(|c| match c {
            Command::Send { id, message, .. }
                if message.destination == Destination::Decisions(0) =>
            {
                Some((id, message))
            }
            _ => None,
        })
        .collect();
    assert!(batches.len() >= 3, "{} batches", batches.len());
    let mut logged = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for (_, m) in &batches {
        assert!(m.payload.len() <= 5 * 1024, "{} bytes", m.payload.len());
        assert!(keys.insert(m.key.clone()), "each batch keyed uniquely");
        logged.extend(
            LoggedDecision::read(&m.payload)
                .expect("a batch")
                .iter()
                .map(|d| d.trace().expect("a trace")),
        );
    }
    assert_eq!(logged, ids, "every decision once, in the order made");
    // Held until the last batch is in, whichever it is.
    let now = t0 + Duration::from_secs(12);
    let (last, rest) = batches.split_first().expect("batches");
    for (id, _) in rest {
        p.delivered(*id, Ok(()), now);
    }
    p.advance();
    assert_eq!(offsets.last().unwrap_or(0), 0, "held by the first batch");
    p.delivered(last.0, Ok(()), now);
    p.advance();
    assert_eq!(offsets.last(), Some(i64::from(N)), "all released");
    assert_eq!((p.unlogged(), p.anomalies()), (0, 0));
}

#[test]
fn exactly_once_a_batch_goes_into_the_transaction_without_waiting_for_traces_begun_before() {
    let (_tx, rules) = rules();
    let mut p = Partition::new(0, with_log(true), rules, Commit::Transaction);
    let t0 = Instant::now();
    // C begins first and stays open (its child never comes); A and B come
    // whole after it, and are decided while C is still buffered.
    let (c, c_parts) = two_part_trace(3, false);
    let (a, a_parts) = two_part_trace(1, false);
    let (b, b_parts) = two_part_trace(2, true);
    // C's child alone: no root, so C waits `wait` (10 s).
    p.handle(message(0, &c_parts[1]), t0);
    for (offset, part) in [
        (1, &a_parts[0]),
        (2, &a_parts[1]),
        (3, &b_parts[0]),
        (4, &b_parts[1]),
    ] {
        p.handle(message(offset, part), t0 + Duration::from_secs(1));
    }
    // A and B are due 2 s after their roots (after_root).
    p.decide_due(t0 + Duration::from_secs(4));
    p.advance();
    assert_eq!(p.status().1.traces, 1, "C still open");
    let mut logged = Vec::new();
    for c in p.commands() {
        if let Command::Write {
            messages,
            next_offset,
            receipt,
        } = c
        {
            assert!(
                next_offset.is_none_or(|n| n <= 0),
                "no offset past C's first message: {next_offset:?}"
            );
            for m in messages {
                if m.destination == Destination::Decisions(0) {
                    let batch = LoggedDecision::read(&m.payload).expect("a batch");
                    assert_eq!(receipt.decisions, batch.len() as u64);
                    logged.extend(batch.iter().filter_map(LoggedDecision::trace));
                }
            }
        }
    }
    logged.sort();
    assert_eq!(logged, vec![a, b], "A and B logged while C is open");
    assert!(!logged.contains(&c));
}
