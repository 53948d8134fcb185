//! `tailgate route`: consume an unkeyed topic, split each message into one
//! message per trace ([`crate::route`]), produce each keyed by its trace id
//! to `kafka.input_topic`, and commit input offsets only behind
//! acknowledged produces — each partition's [`Watermark`], as in `run`.
//!
//! Stateless: a restart (or a SIGKILL) reads again from the last commit and
//! produces again what it had produced since (duplicates, never a loss);
//! more partitions and instances of the group scale it out.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;

use super::http::{self, Health};
use super::Handles;
use crate::config::Loaded;
use crate::kafka::consumer::{self, InputConsumer, RebalanceEvent, StoredOffsets};
use crate::kafka::producer::{classify_for, KafkaOutput, OutputProducer};
use crate::metrics as m;
use crate::otlp::keying::Unkeyed;
use crate::pipeline::{OffsetStore, ProduceError, ProduceErrorKind, RateLimited};
use crate::route::{split, Routed};
use crate::watermark::Watermark;

/// How long a produce that failed for a reason a retry can fix waits
/// before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often one kind of trouble is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One message to produce: the trace's, or an input message forwarded.
struct Record {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    /// The input message's timestamp: `run`'s stream clock reads it.
    timestamp: Option<i64>,
    spans: usize,
}

/// A produce's outcome, with what it was for.
struct Done {
    partition: i32,
    /// The partition's read epoch it was produced in (see [`Part`]).
    epoch: u64,
    offset: i64,
    record: Arc<Record>,
    result: Result<(), ProduceError>,
}

/// An input partition while this instance owns it.
struct Part {
    watermark: Watermark,
    /// A partition revoked and assigned again is a new epoch: the produces
    /// of the old one release nothing of the new watermark.
    epoch: u64,
}

/// Runs `tailgate route` until `shutdown` resolves, or a Kafka client
/// enters a fatal state (then an error: the process exits non-zero).
pub async fn route(
    loaded: Loaded,
    shutdown: impl Future<Output = ()>,
    handles: Handles,
) -> anyhow::Result<()> {
    let settings = loaded.settings;
    let from = settings.route.from_topic.clone().context(
        "route.from_topic is not set: name the unkeyed topic the Collector writes to (or pass --from)",
    )?;
    let to = settings.kafka.input_topic.clone();
    // The consumer: `run`'s, in a group of its own, on the unkeyed topic;
    // offsets stored from the watermarks and auto-committed.
    let mut consuming = settings.kafka.clone();
    consuming.group_id = settings.route.group_id.clone();
    consuming.input_topic = from.clone();
    consuming.exactly_once = false;
    // The producer: `run`'s, writing to the spans topic.
    let mut producing = settings.kafka.clone();
    producing.output_topic = to.clone();
    producing.exactly_once = false;
    producing.decision_log = false;
    producing.dead_letter_topic = None;

    let handle = http::install();
    http::register_rare();
    register();
    let health = handles.health.clone();
    let listener = http::bind(settings.metrics.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.metrics.listen))?;
    let stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        listener,
        handle,
        health.clone(),
        stop.clone().cancelled_owned(),
    ));

    let output = KafkaOutput::new(&producing).context("cannot create the producer")?;
    let limit = output.payload_limit(&producing, &to).await;
    let (consumer, events) =
        consumer::subscribe(&consuming).context("cannot create the consumer")?;
    tracing::info!(
        from = %from,
        to = %to,
        group = %consuming.group_id,
        "routing: every message of {from} split by trace and keyed by trace id into {to}"
    );
    let mut router = Router {
        producer: output.producer().clone(),
        to: Arc::from(to.as_str()),
        limit,
        store: StoredOffsets {
            consumer: consumer.clone(),
            topic: from.clone(),
        },
        parts: HashMap::new(),
        epochs: 0,
        in_flight: FuturesUnordered::new(),
        max_in_flight: settings.kafka.max_in_flight.max(1),
        health: health.clone(),
        failure_log: RateLimited::new(LOG_INTERVAL),
        unkeyed_log: false,
        fatal: None,
    };
    let result = router.until(&consumer, events, shutdown).await;

    // Stop in stages, each bounded: what is in flight is awaited up to
    // `drain_timeout` (its offsets stored as it lands), the stored offsets
    // are committed, the consumer leaves the group.
    health.set_ready(false);
    router.drain(settings.kafka.drain_timeout).await;
    let committing = consumer.clone();
    let commit = tokio::task::spawn_blocking(move || {
        consumer::routine(committing.commit_consumer_state(CommitMode::Sync))
    });
    match tokio::time::timeout(Duration::from_secs(10), commit).await {
        Ok(Ok(Ok(()))) => tracing::info!("input offsets committed"),
        Ok(Ok(Err(e))) => {
            tracing::warn!("final commit failed ({e}); the next reader re-reads from the last one")
        }
        _ => tracing::warn!(
            "final commit did not finish within 10 s; the next reader re-reads from the last one"
        ),
    }
    output.flush(Duration::from_secs(5));
    drop(router);
    drop(consumer);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    result
}

/// Every label of route's own counters, at zero from the start.
fn register() {
    metrics::counter!(m::ROUTE_FORWARDED).increment(0);
    for why in Unkeyed::ALL {
        metrics::counter!(m::ROUTE_UNKEYED, "why" => why.as_str()).increment(0);
    }
}

struct Router {
    producer: OutputProducer,
    to: Arc<str>,
    /// The largest payload a message to `to` may have.
    limit: usize,
    store: StoredOffsets,
    parts: HashMap<i32, Part>,
    epochs: u64,
    in_flight: FuturesUnordered<BoxFuture<'static, Done>>,
    max_in_flight: usize,
    health: Arc<Health>,
    failure_log: RateLimited<ProduceErrorKind>,
    /// The warning about unkeyed input was given (once per run: route is
    /// the answer to it; the counter goes on).
    unkeyed_log: bool,
    /// A produce found the producer in librdkafka's fatal state.
    fatal: Option<String>,
}

impl Router {
    /// Reads, splits and produces until `shutdown`, or a fatal produce error.
    async fn until(
        &mut self,
        consumer: &Arc<InputConsumer>,
        mut events: tokio::sync::mpsc::UnboundedReceiver<RebalanceEvent>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        loop {
            if let Some(why) = &self.fatal {
                metrics::counter!(m::KAFKA_FATAL_ERRORS, "client" => "producer").increment(1);
                self.health.set_failed();
                anyhow::bail!("the producer is in a fatal state: {why}");
            }
            let room = self.in_flight.len() < self.max_in_flight;
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                Some(event) = events.recv() => self.rebalance(event),
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => self.landed(done),
                read = consumer.recv(), if room => {
                    // A rebalance is served inside the poll that returned
                    // this message: take it first, so the message counts in
                    // the partition's new epoch.
                    while let Ok(event) = events.try_recv() {
                        self.rebalance(event);
                    }
                    match read {
                        Ok(msg) => self.read(
                            msg.partition(),
                            msg.offset(),
                            msg.timestamp().to_millis(),
                            msg.key(),
                            msg.payload().unwrap_or_default(),
                        ),
                        Err(KafkaError::PartitionEOF(_)) => {}
                        // The consumer's context counts and logs it.
                        Err(e) => tracing::debug!("consumer error: {e}"),
                    }
                }
            }
        }
    }

    fn rebalance(&mut self, event: RebalanceEvent) {
        match event {
            RebalanceEvent::Assigned(partitions) => {
                tracing::info!(?partitions, "partitions assigned");
                self.health.set_ready(true);
            }
            RebalanceEvent::Revoked(partitions) => {
                tracing::info!(?partitions, "partitions revoked");
                // What they still had in flight lands in a past epoch and
                // stores nothing; their next owner reads it again.
                for p in partitions {
                    self.parts.remove(&p);
                }
            }
        }
    }

    /// One input message: split by trace, each part produced, the offset
    /// pinned until every part is acknowledged.
    fn read(
        &mut self,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        payload: &[u8],
    ) {
        metrics::counter!(m::MESSAGES_RECEIVED).increment(1);
        let records: Vec<Record> = match split(key, Bytes::copy_from_slice(payload), self.limit) {
            Routed::Forward(e) => {
                // Not OTLP: `run` counts and dead-letters it.
                metrics::counter!(m::ROUTE_FORWARDED).increment(1);
                tracing::debug!(
                    partition,
                    offset,
                    "forwarding unreadable input unchanged: {}",
                    e.detail
                );
                vec![Record {
                    key: key.map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                    timestamp,
                    spans: 0,
                }]
            }
            Routed::Traces {
                messages,
                rejected,
                oversized,
                unkeyed,
            } => {
                for e in &rejected {
                    metrics::counter!(m::DECODE_ERRORS, "reason" => e.kind.as_str()).increment(1);
                }
                if oversized > 0 {
                    metrics::counter!(m::UNDELIVERABLE_SPANS, "reason" => crate::pipeline::SPAN_TOO_LARGE)
                        .increment(oversized as u64);
                    tracing::warn!(
                        partition,
                        offset,
                        oversized,
                        "spans larger than a message to {} even alone are left out",
                        self.to
                    );
                }
                if let Some(why) = unkeyed {
                    metrics::counter!(m::ROUTE_UNKEYED, "why" => why.as_str()).increment(1);
                    if !self.unkeyed_log {
                        self.unkeyed_log = true;
                        tracing::info!(why = why.as_str(), "the input is not keyed by trace id, as expected of route's input; each trace leaves keyed");
                    }
                }
                let spans: usize = messages.iter().map(|t| t.spans).sum();
                metrics::counter!(m::SPANS_RECEIVED).increment(spans as u64);
                messages
                    .into_iter()
                    .map(|t| Record {
                        key: Some(t.key().into_bytes()),
                        payload: t.payload,
                        timestamp,
                        spans: t.spans,
                    })
                    .collect()
            }
        };
        let part = self.parts.entry(partition).or_insert_with(|| {
            self.epochs += 1;
            Part {
                watermark: Watermark::new(),
                epoch: self.epochs,
            }
        });
        let epoch = part.epoch;
        part.watermark.track(offset, records.len() as u32);
        for record in records {
            let send = send(
                self.producer.clone(),
                self.to.clone(),
                Arc::new(record),
                Duration::ZERO,
            );
            self.in_flight.push(
                send.map(move |(record, result)| Done {
                    partition,
                    epoch,
                    offset,
                    record,
                    result,
                })
                .boxed(),
            );
        }
        self.store(partition);
    }

    /// A produce landed: released (or tried again, or given up).
    fn landed(&mut self, done: Done) {
        match &done.result {
            Ok(()) => {
                metrics::counter!(m::MESSAGES_PRODUCED).increment(1);
                metrics::counter!(m::SPANS_PRODUCED).increment(done.record.spans as u64);
            }
            Err(e) => {
                metrics::counter!(m::PRODUCE_ERRORS, "kind" => e.kind.as_str()).increment(1);
                if let Some(suppressed) = self.failure_log.allow(e.kind, std::time::Instant::now())
                {
                    tracing::warn!(
                        kind = e.kind.as_str(),
                        suppressed,
                        "producing to {}: {}",
                        self.to,
                        e.detail
                    );
                }
                match e.kind {
                    ProduceErrorKind::Fatal => {
                        self.fatal = Some(e.detail.clone());
                        return;
                    }
                    kind if kind.permanent() => {
                        // It can never be delivered: counted, and released
                        // so that the partition goes on.
                        metrics::counter!(m::UNDELIVERABLE_SPANS, "reason" => kind.as_str())
                            .increment(done.record.spans.max(1) as u64);
                    }
                    _ => {
                        let (partition, epoch, offset) = (done.partition, done.epoch, done.offset);
                        let retry = send(
                            self.producer.clone(),
                            self.to.clone(),
                            done.record,
                            RETRY_AFTER,
                        );
                        self.in_flight.push(
                            retry
                                .map(move |(record, result)| Done {
                                    partition,
                                    epoch,
                                    offset,
                                    record,
                                    result,
                                })
                                .boxed(),
                        );
                        return;
                    }
                }
            }
        }
        let Some(part) = self.parts.get_mut(&done.partition) else {
            return;
        };
        if part.epoch == done.epoch {
            part.watermark.release(done.offset);
            self.store(done.partition);
        }
    }

    /// Stores the partition's watermark as its offset to commit, if it moved.
    fn store(&mut self, partition: i32) {
        let Some(part) = self.parts.get_mut(&partition) else {
            return;
        };
        if let Some(next) = part.watermark.advance() {
            if self.store.store(partition, next) {
                metrics::counter!(m::OFFSETS_STORED).increment(1);
            } else {
                part.watermark.unstored();
            }
        }
    }

    /// Awaits what is in flight, at most `within`: each landing stores its
    /// partition's offset; what does not land is read again by the next
    /// reader. Retries are not started any more.
    async fn drain(&mut self, within: Duration) {
        let pending = self.in_flight.len();
        if pending == 0 {
            return;
        }
        tracing::info!(pending, "waiting for produces in flight");
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(done)) = tokio::time::timeout_at(deadline, self.in_flight.next()).await {
            if done.result.is_ok() {
                self.landed(done);
            }
        }
        if !self.in_flight.is_empty() {
            tracing::warn!(
                left = self.in_flight.len(),
                "produces still in flight at the drain timeout; their input is read again after the restart"
            );
        }
    }
}

/// Produces `record` to `to` after `delay`: its outcome, classified.
fn send(
    producer: OutputProducer,
    to: Arc<str>,
    record: Arc<Record>,
    delay: Duration,
) -> BoxFuture<'static, (Arc<Record>, Result<(), ProduceError>)> {
    async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut r = FutureRecord::<[u8], [u8]>::to(&to).payload(record.payload.as_slice());
        if let Some(key) = &record.key {
            r = r.key(key.as_slice());
        }
        if let Some(ts) = record.timestamp {
            r = r.timestamp(ts);
        }
        // A full local queue is waited out, not failed.
        let result = producer
            .send(r, rdkafka::util::Timeout::Never)
            .await
            .map(|_| ())
            .map_err(|(e, _)| classify_for(&producer, &e));
        (record, result)
    }
    .boxed()
}
