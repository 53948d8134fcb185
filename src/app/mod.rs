//! Wiring: consumer → per-partition workers → producer, the HTTP endpoint,
//! and a staged shutdown (stop reading, drain workers and produces, commit).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use tokio::sync::{mpsc, oneshot, watch};

use crate::buffer::{Backpressure, Flow};
use crate::config::Loaded;
use crate::kafka::consumer::{self, RebalanceEvent, StoredOffsets};
use crate::kafka::producer::KafkaOutput;
use crate::kafka::transaction::Transactions;
use crate::metrics as m;

pub mod http;
mod partitions;
use crate::pipeline::{
    Input, InputMessage, MessageLimits, OffsetStore, PartitionWorker, WorkerConfig,
};
use http::Health;
use partitions::{block_on_runtime, Dispatched, Partitions, Start, Worker};

/// Hands revoked partitions over: their workers finish and store their last
/// watermarks, which are committed before the partitions move.
struct Handover {
    partitions: Arc<Partitions>,
    transactions: Option<Arc<Transactions>>,
}

impl consumer::Handover for Handover {
    fn revoke(&self, consumer: &BaseConsumer<consumer::Context>, revoked: &[i32]) {
        let handed = self.partitions.stop_blocking(revoked);
        // Commit while the partitions are still ours: their next owner starts here.
        match &self.transactions {
            None => {
                if let Err(e) = consumer::routine(consumer.commit_consumer_state(CommitMode::Sync))
                {
                    tracing::warn!(
                        "commit on revoke failed: {e}; the next owner reads again from the last commit"
                    );
                }
            }
            Some(t) => {
                // A failed commit stops the process (see `Transactions`).
                let _ = block_on_runtime(t.commit());
                t.revoked(revoked);
            }
        }
        tracing::info!(
            partitions = ?revoked,
            workers = handed.stopped,
            timed_out = handed.timed_out,
            undecided_traces = handed.undecided_traces,
            "handed revoked partitions over; their undecided traces are re-read by the next owner"
        );
    }

    fn assigned(&self, partitions: &[i32]) {
        if let Some(t) = &self.transactions {
            t.assigned(partitions);
        }
    }
}

/// A running tailgate: what the demo and tests observe.
#[derive(Clone, Default)]
pub struct Handles {
    pub health: Arc<Health>,
}

/// Runs tailgate until `shutdown` resolves.
pub async fn run(
    loaded: Loaded,
    shutdown: impl Future<Output = ()>,
    handles: Handles,
) -> anyhow::Result<()> {
    let Loaded {
        settings,
        rules,
        sources,
    } = loaded;
    let rules_loaded = rules.names().len() - 1;
    let (rules_tx, rules) = watch::channel(Arc::new(rules));
    let handle = http::install();
    metrics::gauge!(m::BYTES_BUDGET).set(settings.buffer.max_bytes as f64);
    http::register_rare();
    metrics::gauge!(m::RULES_LOADED).set(rules_loaded as f64);
    let reloader = crate::reload::spawn(sources, settings.clone(), rules_tx);

    let listener = http::bind(settings.metrics.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (metrics.listen)",
            settings.metrics.listen
        )
    })?;
    tracing::info!(
        "serving /metrics, /healthz, /readyz on http://{}",
        listener.local_addr()?
    );
    let (http_stop, http_stopped) = oneshot::channel::<()>();
    let http = tokio::spawn(http::serve(
        listener,
        handle,
        handles.health.clone(),
        async {
            let _ = http_stopped.await;
        },
    ));

    let output =
        Arc::new(KafkaOutput::new(&settings.kafka).context("cannot create the Kafka producer")?);
    let (consumer, mut rebalances) =
        consumer::subscribe(&settings.kafka).context("cannot create the Kafka consumer")?;
    let transactions = if settings.kafka.exactly_once {
        let t = Transactions::begin(
            (*output).clone(),
            consumer.clone(),
            settings.kafka.input_topic.clone(),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        tracing::info!(
            transactional_id = %settings.kafka.transactional_id(),
            "exactly-once: kept spans and offsets commit together every {}",
            humantime::format_duration(settings.kafka.commit_interval)
        );
        Some(t)
    } else {
        None
    };
    // In exactly-once mode offsets travel with the transaction's writes instead.
    let offsets: Arc<dyn OffsetStore> = Arc::new(StoredOffsets {
        consumer: consumer.clone(),
        topic: settings.kafka.input_topic.clone(),
    });
    // The topics' limits are asked of the broker beside the start, not
    // before it; workers started before the answer split at the producer's.
    // In exactly-once mode a message over a topic's limit would fail the
    // transaction, so there the answer is awaited before reading.
    let limits = MessageLimits::new(output.producer_payload_limit());
    let mut limit_lookup = {
        let (output, kafka, limits) = (output.clone(), settings.kafka.clone(), limits.clone());
        tokio::spawn(async move {
            let out = output.payload_limit(&kafka, &kafka.output_topic).await;
            limits.output.fetch_min(out, Ordering::Relaxed);
            if let Some(dlq) = &kafka.dead_letter_topic {
                let dead = output.payload_limit(&kafka, dlq).await;
                limits.dead_letter.fetch_min(dead, Ordering::Relaxed);
            }
        })
    };
    if transactions.is_some() {
        let _ = (&mut limit_lookup).await;
    }
    let (committer_stop, committer_stopped) = watch::channel(false);
    let committer = transactions
        .clone()
        .map(|t| tokio::spawn(t.run(settings.kafka.commit_interval, committer_stopped)));
    let mut failed = transactions.as_ref().map(|t| t.failed());
    tracing::info!(
        brokers = %settings.kafka.brokers,
        input = %settings.kafka.input_topic,
        output = %settings.kafka.output_topic,
        group = %settings.kafka.group_id,
        rules = rules_loaded,
        "tailgate running"
    );

    let usage = Arc::new(AtomicUsize::new(0));
    let mut pressure = Backpressure::new(
        settings.buffer.max_bytes,
        settings.buffer.high_water,
        settings.buffer.low_water,
    );
    // Tells the workers when the input is paused for memory: their clocks
    // then run with wall-clock time, so buffered traces are still decided.
    let (input_paused, input_paused_rx) = watch::channel(false);
    let epoch = crate::clock::Epoch::now();
    let mut pressure_check = tokio::time::interval(Duration::from_millis(50));
    pressure_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let flow = |flow: Flow, partitions: &[i32]| {
        if partitions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(&settings.kafka.input_topic, *p);
        }
        let result = match flow {
            Flow::Pause => consumer.pause(&tpl),
            Flow::Resume => consumer.resume(&tpl),
        };
        if let Err(e) = result {
            tracing::warn!(?flow, ?partitions, "cannot {flow:?} input partitions: {e}");
        }
    };
    let mut assigned: Vec<i32> = Vec::new();
    let start: Start = {
        let (settings, rules, output, offsets, usage, limits) = (
            settings.clone(),
            rules.clone(),
            output.clone(),
            offsets.clone(),
            usage.clone(),
            limits.clone(),
        );
        let transaction = transactions
            .clone()
            .map(|t| t as Arc<dyn crate::pipeline::Transaction>);
        let input_paused = input_paused_rx.clone();
        Box::new(move |partition: i32, assigned: usize| {
            let (tx, rx) = mpsc::channel(settings.buffer.partition_queue);
            let config = WorkerConfig {
                buffer: settings.buffer_config(assigned),
                clock: settings.clock_config(),
                epoch,
                decided_ttl: settings.decision.decided_ttl,
                decided_capacity: settings.decision.decided_capacity,
                max_in_flight: settings.kafka.max_in_flight,
                dead_letter: settings.kafka.dead_letter_topic.is_some(),
                limits: limits.clone(),
                usage: usage.clone(),
                exactly_once: transaction.is_some(),
            };
            let worker = PartitionWorker::new(
                partition,
                config,
                rules.clone(),
                output.clone(),
                offsets.clone(),
                transaction.clone(),
            );
            Worker {
                input: tx,
                stored: worker.stored(),
                task: tokio::spawn(worker.run(rx, input_paused.clone())),
            }
        })
    };
    let (partitions, mut rooms) = Partitions::new(
        start,
        settings.kafka.drain_timeout,
        settings.buffer.partition_backlog_bytes,
    );
    let partitions = Arc::new(partitions);
    // Partitions paused because their worker's queue is full.
    let mut blocked: Vec<i32> = Vec::new();
    consumer.context().set_handover(Arc::new(Handover {
        partitions: partitions.clone(),
        transactions: transactions.clone(),
    }));

    let mut failure = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            why = transaction_failed(&mut failed) => {
                failure = Some(why);
                break;
            }
            Some(event) = rebalances.recv() => match event {
                RebalanceEvent::Assigned(ps) => {
                    for p in &ps {
                        if !assigned.contains(p) {
                            assigned.push(*p);
                        }
                    }
                    // librdkafka keeps a partition's pause across a revoke and a
                    // new assignment: a partition coming back resumes unless
                    // memory is short.
                    if !pressure.paused() {
                        flow(Flow::Resume, &ps);
                    }
                    handles.health.set_ready(true);
                    metrics::gauge!(m::PARTITIONS_ASSIGNED).set(assigned.len() as f64);
                    if pressure.paused() {
                        // New partitions join the pause until memory is back under the low mark.
                        flow(Flow::Pause, &assigned);
                        metrics::gauge!(m::PARTITIONS_PAUSED).set(assigned.len() as f64);
                    }
                    tracing::info!(partitions = ?assigned, "partitions assigned");
                }
                RebalanceEvent::Revoked(ps) => {
                    // Their workers were handed over inside the revoke callback.
                    assigned.retain(|p| !ps.contains(p));
                    blocked.retain(|p| !ps.contains(p));
                    metrics::gauge!(m::PARTITIONS_ASSIGNED).set(assigned.len() as f64);
                    if pressure.paused() {
                        metrics::gauge!(m::PARTITIONS_PAUSED).set(assigned.len() as f64);
                    }
                    tracing::info!(revoked = ?ps, "partitions revoked");
                }
            },
            Some(room) = rooms.recv() => {
                let partition = room.partition;
                match partitions.room(room) {
                    Dispatched::Drained => {
                        blocked.retain(|p| *p != partition);
                        if !pressure.paused() && assigned.contains(&partition) {
                            flow(Flow::Resume, &[partition]);
                            metrics::gauge!(m::PARTITIONS_PAUSED).set(blocked.len() as f64);
                        }
                    }
                    Dispatched::Dead { resume_from, deaths } => {
                        blocked.retain(|p| *p != partition);
                        if let Err(why) = reread(&consumer, &settings.kafka.input_topic, partition, resume_from, deaths).await {
                            failure = Some(why);
                            break;
                        }
                        if !pressure.paused() {
                            flow(Flow::Resume, &[partition]);
                        }
                    }
                    Dispatched::Queued | Dispatched::Full => {}
                }
            }
            _ = pressure_check.tick() => {
                // A worker that died with nothing more to read for it.
                for (partition, dead) in partitions.reap() {
                    let Dispatched::Dead { resume_from, deaths } = dead else { continue };
                    blocked.retain(|p| *p != partition);
                    if let Err(why) = reread(&consumer, &settings.kafka.input_topic, partition, resume_from, deaths).await {
                        failure = Some(why);
                        break;
                    }
                    if !pressure.paused() {
                        flow(Flow::Resume, &[partition]);
                    }
                }
                if failure.is_some() {
                    break;
                }
                let used = usage.load(Ordering::Relaxed);
                match pressure.update(used) {
                    Some(Flow::Pause) => {
                        tracing::warn!(
                            buffered = used,
                            budget = settings.buffer.max_bytes,
                            "buffers above {:.0}% of their budget: pausing input partitions {assigned:?} (Kafka keeps the data)",
                            settings.buffer.high_water * 100.0
                        );
                        flow(Flow::Pause, &assigned);
                        input_paused.send_replace(true);
                        metrics::gauge!(m::PARTITIONS_PAUSED).set(assigned.len() as f64);
                    }
                    Some(Flow::Resume) => {
                        tracing::info!(
                            buffered = used,
                            "buffers below {:.0}% of their budget: resuming input partitions {assigned:?}",
                            settings.buffer.low_water * 100.0
                        );
                        // A partition whose worker is full stays paused.
                        let free: Vec<i32> =
                            assigned.iter().copied().filter(|p| !blocked.contains(p)).collect();
                        flow(Flow::Resume, &free);
                        input_paused.send_replace(false);
                        metrics::gauge!(m::PARTITIONS_PAUSED).set(blocked.len() as f64);
                    }
                    None => {}
                }
            }
            msg = consumer.recv() => {
                let (partition, input) = match msg {
                Ok(msg) => {
                    let partition = msg.partition();
                    // One copy out of librdkafka's buffer, key and payload together.
                    let (key, payload) = (msg.key(), msg.payload().unwrap_or_default());
                    let key_len = key.map_or(0, <[u8]>::len);
                    let mut bytes = Vec::with_capacity(key_len + payload.len());
                    bytes.extend_from_slice(key.unwrap_or_default());
                    bytes.extend_from_slice(payload);
                    let bytes = Bytes::from(bytes);
                    let input = InputMessage {
                        offset: msg.offset(),
                        timestamp: msg.timestamp().to_millis(),
                        key: key.map(|_| bytes.slice(..key_len)),
                        payload: bytes.slice(key_len..),
                    };
                    drop(msg);
                    (partition, Input::Message(input))
                }
                // The consumer reached the end of a partition: its worker's
                // clock may run with wall-clock time until the next message.
                Err(KafkaError::PartitionEOF(partition)) => (partition, Input::CaughtUp),
                // Reported (counted, logged once per kind and interval) by
                // the consumer's context, which sees every error first.
                Err(e) => {
                    tracing::debug!("consumer error: {e}");
                    continue;
                }
                };
                    match partitions.dispatch(partition, assigned.len().max(1), input) {
                        Dispatched::Queued | Dispatched::Drained => {}
                        Dispatched::Full => {
                            // This partition waits for its worker; the others go on.
                            if !blocked.contains(&partition) {
                                blocked.push(partition);
                            }
                            flow(Flow::Pause, &[partition]);
                            if !pressure.paused() {
                                metrics::gauge!(m::PARTITIONS_PAUSED).set(blocked.len() as f64);
                            }
                        }
                        Dispatched::Dead { resume_from, deaths } => {
                            if let Err(why) = reread(&consumer, &settings.kafka.input_topic, partition, resume_from, deaths).await {
                                failure = Some(why);
                                break;
                            }
                        }
                    }
            },
        }
    }

    tracing::info!("shutting down: draining partition workers");
    let handed = partitions.stop(None).await;
    tracing::info!(
        workers = handed.stopped,
        timed_out = handed.timed_out,
        undecided_traces = handed.undecided_traces,
        "partition workers stopped"
    );
    match &transactions {
        None => final_commit(&consumer, settings.kafka.drain_timeout).await,
        Some(t) if failure.is_none() => {
            let _ = committer_stop.send(true);
            if let Some(c) = committer {
                let _ = c.await;
            }
            if let Err(why) = t.commit().await {
                failure = Some(why);
            }
        }
        Some(_) => {}
    }
    // Blocking (up to 5 s): off the runtime's threads.
    {
        let output = output.clone();
        let _ = tokio::task::spawn_blocking(move || output.flush(Duration::from_secs(5))).await;
    }
    limit_lookup.abort();
    reloader.abort();
    // Offsets are committed: leave the group now, so the partitions' next
    // owners get them at once, not after `session.timeout.ms`.
    consumer.context().clear_handover();
    drop((partitions, offsets, transactions));
    leave(consumer, settings.kafka.group_instance_id.is_some()).await;
    let _ = http_stop.send(());
    let _ = http.await;
    if let Some(why) = failure {
        return Err(anyhow::Error::msg(why));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Closes the consumer, off the runtime's threads (closing polls until the
/// group has let it go). A dynamic member leaves the group, and its
/// partitions go to the others at once; a static one (`group.instance.id`)
/// does not leave: its partitions wait for it to come back, for at most
/// `session.timeout.ms`.
async fn leave(consumer: Arc<consumer::InputConsumer>, static_member: bool) {
    let consumer = match Arc::try_unwrap(consumer) {
        Ok(c) => c,
        Err(c) => {
            // A bug: something still holds it. It closes at exit.
            tracing::warn!(
                references = Arc::strong_count(&c),
                "the consumer is still in use; it leaves the group only when the process exits"
            );
            return;
        }
    };
    let started = std::time::Instant::now();
    if let Err(e) = tokio::task::spawn_blocking(move || drop(consumer)).await {
        tracing::warn!("closing the consumer failed: {e}");
        return;
    }
    let ms = started.elapsed().as_millis() as u64;
    if static_member {
        tracing::info!(
            ms,
            "consumer closed; a static member, its partitions wait for it to come back"
        );
    } else {
        tracing::info!(ms, "left the consumer group");
    }
}

/// Workers of one partition that may die in a row, without progress, before
/// the process stops.
const DEATHS_BEFORE_STOPPING: u32 = 3;

/// After a worker stopped by itself: the partition is read again from what
/// the worker last stored (or, if it stored nothing, from the committed
/// offset), so that nothing it held undecided is skipped by its replacement.
/// If the consumer cannot seek, the process stops: reading on would let the
/// replacement store offsets past what its predecessor had pinned.
async fn reread(
    consumer: &Arc<consumer::InputConsumer>,
    topic: &str,
    partition: i32,
    resume_from: Option<i64>,
    deaths: u32,
) -> Result<(), String> {
    if deaths >= DEATHS_BEFORE_STOPPING {
        return Err(format!(
            "partition {partition}: {deaths} workers in a row died reading it from {resume_from:?} (a bug; the log shows the panic); stopping rather than loop"
        ));
    }
    let (consumer, topic) = (consumer.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let offset = match resume_from {
            Some(o) => rdkafka::Offset::Offset(o),
            None => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&topic, partition);
                let committed = consumer
                    .committed_offsets(tpl, Duration::from_secs(10))
                    .map_err(|e| format!("partition {partition}: cannot read its committed offset after its worker stopped ({e}); stopping, so the restart reads it from there"))?;
                match committed.find_partition(&topic, partition).map(|e| e.offset()) {
                    Some(rdkafka::Offset::Offset(o)) => rdkafka::Offset::Offset(o),
                    // Nothing committed: where a new reader starts (auto.offset.reset).
                    _ => rdkafka::Offset::Beginning,
                }
            }
        };
        consumer
            .seek(&topic, partition, offset, Duration::from_secs(10))
            .map_err(|e| {
                format!(
                    "partition {partition}: cannot read it again from {offset:?} after its worker stopped ({e}); stopping, so the restart reads it from the committed offset"
                )
            })?;
        tracing::info!(partition, ?offset, "reading the partition again with a new worker");
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Commits the stored watermarks at shutdown. A rebalance in progress (another
/// instance joining or leaving) makes the commit fail with a stale
/// generation; the consumer is then polled so the rebalance completes, and the
/// commit retried, for at most `within`. Messages read meanwhile are not
/// stored, so they are read again by the partition's next reader.
async fn final_commit(consumer: &Arc<consumer::InputConsumer>, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        // A synchronous commit waits for the broker: off the runtime's threads.
        let c = consumer.clone();
        let commit = match tokio::task::spawn_blocking(move || {
            c.commit_consumer_state(CommitMode::Sync)
        })
        .await
        {
            Ok(result) => result,
            Err(e) => {
                tracing::warn!("final commit failed: {e}; the partitions' next reader reads again from the last commit");
                return;
            }
        };
        match consumer::routine(commit) {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!("final commit: {e}; letting the rebalance finish, then again");
                let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
            }
            Err(e) => {
                tracing::warn!(
                    "final commit failed: {e}; the partitions' next reader reads again from the last commit"
                );
                return;
            }
        }
    }
}

/// Resolves with the reason once the exactly-once transactions failed; never
/// without them.
async fn transaction_failed(failed: &mut Option<watch::Receiver<Option<String>>>) -> String {
    if let Some(rx) = failed {
        let why = rx
            .wait_for(|f| f.is_some())
            .await
            .map(|why| why.clone().unwrap_or_default());
        if let Ok(why) = why {
            return why;
        }
    }
    std::future::pending().await
}
