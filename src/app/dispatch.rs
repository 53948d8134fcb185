//! The dispatch loop: each message read goes to its partition's worker
//! without waiting for it; rebalances, workers with room again (or dead),
//! the memory budget and shutdown are served in between.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::TopicPartitionList;
use tokio::sync::watch;

use super::http::Health;
use super::partitions::{Dispatched, Room};
use super::pressure::{Backpressure, Flow};
use super::topology::Topology;
use super::Handles;
use crate::kafka::consumer::{InputConsumer, RebalanceEvent};
use crate::kafka::transaction::TransactionError;
use crate::metrics as m;
use crate::pipeline::{Input, InputMessage};

/// Messages the loop reads in one pass when the consumer has them ready,
/// before it looks at shutdown, rebalances, rooms and its tick again.
const READ_AT_ONCE: usize = 64;

/// Why the loop ended early: the process stops with this error.
pub(super) type Failure = anyhow::Error;

pub(super) struct Dispatch<'a> {
    t: &'a mut Topology,
    health: Arc<Health>,
    pressure: Backpressure,
    /// Partitions assigned to this instance.
    assigned: Vec<i32>,
    /// Partitions paused because their worker's queue and backlog are full.
    blocked: Vec<i32>,
}

impl<'a> Dispatch<'a> {
    pub fn new(t: &'a mut Topology, handles: &Handles) -> Self {
        let b = &t.settings.buffer;
        let pressure = Backpressure::new(b.max_bytes, b.high_water, b.low_water);
        Self {
            t,
            health: handles.health.clone(),
            pressure,
            assigned: Vec::new(),
            blocked: Vec::new(),
        }
    }

    /// Dispatches until `shutdown` resolves (`None`) or the run cannot go
    /// on (why).
    pub async fn until(mut self, shutdown: impl Future<Output = ()>) -> Option<Failure> {
        let consumer = self.t.consumer.clone();
        // One stream for the whole run: `recv` makes (and registers a waker
        // for) a stream per message.
        let mut messages = consumer.stream();
        let mut failed = self.t.transactions.as_ref().map(|t| t.failed());
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let step = tokio::select! {
                biased;
                _ = &mut shutdown => return None,
                why = transaction_failed(&mut failed) => Err(match self.fatal_client() {
                    // Fenced: the transaction failed because the producer is.
                    Some((client, reason)) => self.fatal(client, &reason).context(why),
                    None => why,
                }),
                Some(event) = self.t.rebalances.recv() => {
                    self.rebalanced(event);
                    Ok(())
                }
                Some(room) = self.t.rooms.recv() => self.room(room).await,
                _ = tick.tick() => self.tick().await,
                Some(read) = messages.next() => {
                    // What else the consumer has ready goes in the same pass:
                    // the other branches wait at most `READ_AT_ONCE` messages.
                    let mut step = self.read(read).await;
                    for _ in 1..READ_AT_ONCE {
                        if step.is_err() {
                            break;
                        }
                        let Some(Some(read)) = messages.next().now_or_never() else {
                            break;
                        };
                        step = self.read(read).await;
                    }
                    step
                }
            };
            if let Err(why) = step {
                // Stopping: not ready from now on.
                self.health.set_failed();
                return Some(why);
            }
        }
    }

    /// One read of the consumer: a message or the end of a partition for
    /// its worker; the consumer's fatal state stops the run.
    async fn read(&mut self, read: Result<BorrowedMessage<'_>, KafkaError>) -> Result<(), Failure> {
        match read {
            Err(KafkaError::MessageConsumptionFatal(code)) => {
                let reason = self
                    .t
                    .consumer
                    .client()
                    .fatal_error()
                    .map_or_else(|| format!("{code:?}"), |(c, r)| format!("{c:?}: {r}"));
                Err(self.fatal("consumer", &reason))
            }
            read => match input(read) {
                Some((partition, input)) => self.dispatch(partition, input).await,
                None => Ok(()),
            },
        }
    }

    fn rebalanced(&mut self, event: RebalanceEvent) {
        match event {
            RebalanceEvent::Assigned(ps) => {
                for p in &ps {
                    if !self.assigned.contains(p) {
                        self.assigned.push(*p);
                    }
                }
                // librdkafka keeps a partition's pause across a revoke and a
                // new assignment: a partition coming back resumes unless
                // memory is short.
                if !self.pressure.paused() {
                    self.flow(Flow::Resume, &ps);
                }
                self.health.set_ready(true);
                metrics::gauge!(m::PARTITIONS_ASSIGNED).set(self.assigned.len() as f64);
                if self.pressure.paused() {
                    // New partitions join the pause until memory is back under the low mark.
                    self.flow(Flow::Pause, &self.assigned);
                }
                self.show_paused();
                tracing::info!(partitions = ?self.assigned, "partitions assigned");
            }
            RebalanceEvent::Revoked(ps) => {
                // Their workers were handed over inside the revoke callback.
                self.assigned.retain(|p| !ps.contains(p));
                self.blocked.retain(|p| !ps.contains(p));
                metrics::gauge!(m::PARTITIONS_ASSIGNED).set(self.assigned.len() as f64);
                self.show_paused();
                tracing::info!(revoked = ?ps, "partitions revoked");
            }
        }
    }

    /// A worker has room again, or died.
    async fn room(&mut self, room: Room) -> Result<(), Failure> {
        let partition = room.partition;
        match self.t.partitions.room(room) {
            Dispatched::Drained => {
                self.blocked.retain(|p| *p != partition);
                if !self.pressure.paused() && self.assigned.contains(&partition) {
                    self.flow(Flow::Resume, &[partition]);
                }
                self.show_paused();
            }
            Dispatched::Dead {
                resume_from,
                deaths,
            } => self.replace(partition, resume_from, deaths).await?,
            Dispatched::Queued | Dispatched::Full => {}
        }
        Ok(())
    }

    /// A Kafka client in librdkafka's fatal state: nothing it does succeeds
    /// again (a fenced producer delivers nothing, a fenced consumer commits
    /// nothing), so the run stops rather than retry forever: not ready from
    /// now on, counted, said once; the staged shutdown then hands over what
    /// it safely can (offsets stored only past delivered data; no
    /// transaction is committed), and the process exits non-zero for the
    /// orchestrator to start a new one.
    fn fatal(&self, client: &'static str, reason: &str) -> Failure {
        self.health.set_failed();
        metrics::counter!(m::KAFKA_FATAL_ERRORS, "client" => client).increment(1);
        tracing::error!(
            client,
            "kafka: the {client} is in a fatal state ({reason}); not ready, stopping without committing past undelivered data"
        );
        anyhow::anyhow!("the Kafka {client} is in a fatal state: {reason}")
    }

    /// librdkafka's fatal state of the producer or the consumer, if either
    /// is in it.
    fn fatal_client(&self) -> Option<(&'static str, String)> {
        use rdkafka::producer::Producer;
        let producer = self.t.output.producer().client().fatal_error();
        let consumer = self.t.consumer.client().fatal_error();
        producer
            .map(|f| ("producer", f))
            .or(consumer.map(|f| ("consumer", f)))
            .map(|(client, (code, reason))| (client, format!("{code:?}: {reason}")))
    }

    /// Every 50 ms: a client in a fatal state, workers that died with
    /// nothing more to read for them, and the memory budget.
    async fn tick(&mut self) -> Result<(), Failure> {
        if let Some((client, reason)) = self.fatal_client() {
            return Err(self.fatal(client, &reason));
        }
        for (partition, dead) in self.t.partitions.reap() {
            if let Dispatched::Dead {
                resume_from,
                deaths,
            } = dead
            {
                self.replace(partition, resume_from, deaths).await?;
            }
        }
        let used = self.t.usage.load(Ordering::Relaxed);
        let buffer = &self.t.settings.buffer;
        match self.pressure.update(used) {
            Some(Flow::Pause) => {
                tracing::warn!(
                    buffered = used,
                    budget = buffer.max_bytes,
                    "buffers above {:.0}% of their budget: pausing input partitions {:?} (Kafka keeps the data)",
                    buffer.high_water * 100.0,
                    self.assigned
                );
                self.flow(Flow::Pause, &self.assigned);
                self.t.input_paused.send_replace(true);
                self.show_paused();
            }
            Some(Flow::Resume) => {
                tracing::info!(
                    buffered = used,
                    "buffers below {:.0}% of their budget: resuming input partitions {:?}",
                    buffer.low_water * 100.0,
                    self.assigned
                );
                // A partition whose worker is full stays paused.
                let free: Vec<i32> = self
                    .assigned
                    .iter()
                    .copied()
                    .filter(|p| !self.blocked.contains(p))
                    .collect();
                self.flow(Flow::Resume, &free);
                self.t.input_paused.send_replace(false);
                self.show_paused();
            }
            None => {}
        }
        Ok(())
    }

    async fn dispatch(&mut self, partition: i32, input: Input) -> Result<(), Failure> {
        let assigned = self.assigned.len().max(1);
        match self.t.partitions.dispatch(partition, assigned, input) {
            Dispatched::Queued | Dispatched::Drained => {}
            Dispatched::Full => {
                // This partition waits for its worker; the others go on.
                if !self.blocked.contains(&partition) {
                    self.blocked.push(partition);
                }
                self.flow(Flow::Pause, &[partition]);
                self.show_paused();
            }
            Dispatched::Dead {
                resume_from,
                deaths,
            } => {
                reread(
                    &self.t.consumer,
                    &self.t.settings.kafka.input_topic,
                    partition,
                    resume_from,
                    deaths,
                )
                .await?
            }
        }
        Ok(())
    }

    /// After a worker died: its partition is read again by a new one.
    async fn replace(
        &mut self,
        partition: i32,
        resume_from: Option<i64>,
        deaths: u32,
    ) -> Result<(), Failure> {
        self.blocked.retain(|p| *p != partition);
        let topic = &self.t.settings.kafka.input_topic;
        reread(&self.t.consumer, topic, partition, resume_from, deaths).await?;
        if !self.pressure.paused() {
            self.flow(Flow::Resume, &[partition]);
        }
        self.show_paused();
        Ok(())
    }

    /// Input partitions paused now: all assigned ones while memory is
    /// short, else those whose worker is full. The one place the gauge is
    /// set, after every change of either (a revoke, a dead worker replaced).
    fn show_paused(&self) {
        let paused = if self.pressure.paused() {
            self.assigned.len()
        } else {
            self.blocked
                .iter()
                .filter(|p| self.assigned.contains(p))
                .count()
        };
        metrics::gauge!(m::PARTITIONS_PAUSED).set(paused as f64);
    }

    /// Pauses or resumes input partitions.
    fn flow(&self, flow: Flow, partitions: &[i32]) {
        if partitions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(&self.t.settings.kafka.input_topic, *p);
        }
        let result = match flow {
            Flow::Pause => self.t.consumer.pause(&tpl),
            Flow::Resume => self.t.consumer.resume(&tpl),
        };
        if let Err(e) = result {
            tracing::warn!(?flow, ?partitions, "cannot {flow:?} input partitions: {e}");
        }
    }
}

/// What the consumer read, for a worker: a message (its key and payload
/// copied once out of librdkafka's buffer, together), or the end of a
/// partition, when its worker's clock may run with wall-clock time until the
/// next message. `None` for an error: the consumer's context reports those
/// (counted, logged once per kind and interval), as it sees every one first.
fn input(read: Result<BorrowedMessage<'_>, KafkaError>) -> Option<(i32, Input)> {
    match read {
        Ok(msg) => {
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
            Some((msg.partition(), Input::Message(input)))
        }
        Err(KafkaError::PartitionEOF(partition)) => Some((partition, Input::CaughtUp)),
        Err(e) => {
            tracing::debug!("consumer error: {e}");
            None
        }
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
    consumer: &Arc<InputConsumer>,
    topic: &str,
    partition: i32,
    resume_from: Option<i64>,
    deaths: u32,
) -> Result<(), Failure> {
    if deaths >= DEATHS_BEFORE_STOPPING {
        return Err(anyhow::anyhow!(
            "partition {partition}: {deaths} workers in a row died reading it from {resume_from:?} (a bug; the log shows the panic); stopping rather than loop"
        ));
    }
    let (consumer, topic) = (consumer.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || -> Result<(), Failure> {
        let offset = match resume_from {
            Some(o) => rdkafka::Offset::Offset(o),
            None => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&topic, partition);
                let committed = consumer
                    .committed_offsets(tpl, Duration::from_secs(10))
                    .map_err(|e| anyhow::anyhow!("partition {partition}: cannot read its committed offset after its worker stopped ({e}); stopping, so the restart reads it from there"))?;
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
                anyhow::anyhow!(
                    "partition {partition}: cannot read it again from {offset:?} after its worker stopped ({e}); stopping, so the restart reads it from the committed offset"
                )
            })?;
        tracing::info!(partition, ?offset, "reading the partition again with a new worker");
        Ok(())
    })
    .await
    .map_err(anyhow::Error::from)?
}

/// Resolves with the reason once the exactly-once transactions failed; never
/// without them.
async fn transaction_failed(
    failed: &mut Option<watch::Receiver<Option<TransactionError>>>,
) -> Failure {
    if let Some(rx) = failed {
        if let Ok(why) = rx.wait_for(|f| f.is_some()).await {
            if let Some(why) = why.clone() {
                return why.into();
            }
        }
    }
    std::future::pending().await
}
