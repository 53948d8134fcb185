//! Building what runs: the metrics endpoint and rule reloader, the producer,
//! the consumer, the exactly-once transactions and their committer, and the
//! factory that starts one worker per assigned partition.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::handover::Handover;
use super::http;
use super::partitions::{Partitions, Room, Start, Worker};
use super::Handles;
use crate::clock::Epoch;
use crate::config::{Loaded, Settings};
use crate::kafka::consumer::{self, InputConsumer, RebalanceEvent, StoredOffsets};
use crate::kafka::decision_log::{CoverError, DecisionTopic, KafkaDecisionLog};
use crate::kafka::producer::KafkaOutput;
use crate::kafka::transaction::Transactions;
use crate::metrics as m;
use crate::pipeline::{
    DecisionSource, Edges, MessageLimits, OffsetStore, PartitionWorker, PathOutput, ServiceLabels,
    WorkerConfig,
};
use crate::rules::RuleSet;

/// Everything a run holds, from start to the last stage of its shutdown.
pub(super) struct Topology {
    pub settings: Settings,
    pub consumer: Arc<InputConsumer>,
    pub rebalances: mpsc::UnboundedReceiver<RebalanceEvent>,
    pub output: Arc<KafkaOutput>,
    pub transactions: Option<Arc<Transactions>>,
    pub offsets: Arc<dyn OffsetStore>,
    pub partitions: Arc<Partitions>,
    /// Workers that have room again, or died.
    pub rooms: mpsc::UnboundedReceiver<Room>,
    /// Bytes the workers' buffers hold, all together.
    pub usage: Arc<AtomicUsize>,
    /// Tells the workers when the input is paused for memory: they then
    /// decide their oldest traces early, down to under `low_water`.
    pub input_paused: watch::Sender<bool>,
    /// Exactly-once: commits the open transaction every commit interval.
    pub committer: Option<JoinHandle<()>>,
    /// Tasks that end with the run's token: the rule reloader, the lookup of
    /// the topics' message size limits.
    pub background: Vec<JoinHandle<()>>,
    /// The metrics endpoint, stopped last.
    pub endpoint: Endpoint,
}

pub(super) struct Endpoint {
    pub served: CancellationToken,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Topology {
    pub async fn build(
        loaded: Loaded,
        handles: &Handles,
        stop: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let Loaded {
            settings,
            rules,
            sources,
        } = loaded;
        let rules_loaded = rules.names().len() - 1;
        let (rules_tx, rules) = watch::channel(Arc::new(rules));
        let endpoint = serve_metrics(&settings, handles).await?;
        metrics::gauge!(m::BYTES_BUDGET).set(settings.buffer.max_bytes as f64);
        metrics::gauge!(m::DECISIONS_REMEMBERED_BUDGET)
            .set(settings.decision.remembered_bytes as f64);
        metrics::gauge!(m::RULES_LOADED).set(rules_loaded as f64);
        let mut background = vec![crate::reload::spawn(
            sources,
            settings.clone(),
            rules_tx,
            stop.clone(),
        )];

        let output = Arc::new(
            KafkaOutput::new(&settings.kafka).context("cannot create the Kafka producer")?,
        );
        let decision_topic = match settings.kafka.decision_topic() {
            Some(topic) => {
                let (kafka, ttl, producer) = (
                    settings.kafka.clone(),
                    settings.decision.decided_ttl,
                    output.producer().clone(),
                );
                let ready = tokio::task::spawn_blocking(move || {
                    DecisionTopic::ensure(&kafka, &topic, ttl, producer)
                })
                .await
                .map_err(anyhow::Error::from)??;
                tracing::info!(
                    topic = ready.name(),
                    "decision log: every decision is written there, and read back when a partition is assigned"
                );
                Some(Arc::new(ready))
            }
            None => None,
        };
        if let Some(topic) = &decision_topic {
            background.push(recheck_decision_topic(topic.clone(), stop));
        }
        let decision_log = decision_topic.as_ref().map(|t| {
            Arc::new(KafkaDecisionLog::new(&settings.kafka, t.name().to_string()))
                as Arc<dyn DecisionSource>
        });
        // Registered at zero: a record is counted only when one is lost.
        metrics::counter!(m::DECISIONS_UNLOGGED).increment(0);
        let (consumer, rebalances) =
            consumer::subscribe(&settings.kafka).context("cannot create the Kafka consumer")?;
        let transactions = if settings.kafka.exactly_once {
            let t = Transactions::begin(
                (*output).clone(),
                consumer.clone(),
                settings.kafka.input_topic.clone(),
            )
            .await?;
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
        // before it; workers started before the answer split at the
        // producer's. In exactly-once mode a message over a topic's limit
        // would fail the transaction, so there the answer is awaited first.
        let limits = MessageLimits::new(output.producer_payload_limit());
        let lookup = look_up_limits(&settings, &output, &limits, stop);
        if transactions.is_some() {
            let _ = lookup.await;
        } else {
            background.push(lookup);
        }
        let committer = transactions
            .clone()
            .map(|t| tokio::spawn(t.run(settings.kafka.commit_interval, stop.clone())));
        tracing::info!(
            brokers = %settings.kafka.brokers,
            input = %settings.kafka.input_topic,
            output = %settings.kafka.output_topic,
            group = %settings.kafka.group_id,
            rules = rules_loaded,
            "tailgate running"
        );

        let usage = Arc::new(AtomicUsize::new(0));
        let (input_paused, input_paused_rx) = watch::channel(false);
        let start = worker_factory(WorkerParts {
            settings: settings.clone(),
            rules,
            output: output.clone(),
            offsets: offsets.clone(),
            transactions: transactions.clone(),
            usage: usage.clone(),
            limits,
            input_paused: input_paused_rx,
            decision_log,
        });
        let (partitions, rooms) = Partitions::new(
            start,
            settings.kafka.drain_timeout,
            settings.buffer.partition_backlog_bytes,
        );
        let partitions = Arc::new(partitions);
        consumer.context().set_handover(Arc::new(Handover {
            partitions: partitions.clone(),
            transactions: transactions.clone(),
            decision_topic,
        }));
        Ok(Self {
            settings,
            consumer,
            rebalances,
            output,
            transactions,
            offsets,
            partitions,
            rooms,
            usage,
            input_paused,
            committer,
            background,
            endpoint,
        })
    }
}

/// Installs the recorder and serves `/metrics`, `/healthz` and `/readyz`.
async fn serve_metrics(settings: &Settings, handles: &Handles) -> anyhow::Result<Endpoint> {
    let handle = http::install();
    http::register_rare();
    let listen = settings.metrics.listen;
    let listener = http::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (metrics.listen)"))?;
    tracing::info!(
        "serving /metrics, /healthz, /readyz on http://{}",
        listener.local_addr()?
    );
    let served = CancellationToken::new();
    let task = tokio::spawn(http::serve(
        listener,
        handle,
        handles.health.clone(),
        served.clone().cancelled_owned(),
    ));
    Ok(Endpoint { served, task })
}

/// How often the decision topic is checked against the input's partitions
/// besides the checks at start and on assignment.
const DECISION_TOPIC_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Checks the decision topic every [`DECISION_TOPIC_RECHECK`]: one deleted
/// under the running process, or deleted and auto-created by the broker
/// with one partition, is made whole again (records meanwhile counted as
/// unlogged).
fn recheck_decision_topic(topic: Arc<DecisionTopic>, stop: &CancellationToken) -> JoinHandle<()> {
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(DECISION_TOPIC_RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        while stop.run_until_cancelled(tick.tick()).await.is_some() {
            let t = topic.clone();
            // A check under way does not hold the shutdown up.
            let Some(checked) = stop
                .run_until_cancelled(tokio::task::spawn_blocking(move || t.recheck()))
                .await
            else {
                return;
            };
            match checked {
                Ok(Ok(())) => {}
                Ok(Err(CoverError::Lacking(l))) => tracing::error!("{l}"),
                Ok(Err(CoverError::Other(e))) => tracing::warn!(
                    topic = topic.name(),
                    "cannot check the decision topic's partitions: {e}"
                ),
                Err(e) => tracing::warn!("decision topic check: {e}"),
            }
        }
    })
}

/// Asks the broker for the output and dead-letter topics' message size
/// limits, and lowers the workers' limits to them.
fn look_up_limits(
    settings: &Settings,
    output: &Arc<KafkaOutput>,
    limits: &Arc<MessageLimits>,
    stop: &CancellationToken,
) -> JoinHandle<()> {
    let (output, kafka, limits, stop) = (
        output.clone(),
        settings.kafka.clone(),
        limits.clone(),
        stop.clone(),
    );
    tokio::spawn(async move {
        stop.run_until_cancelled(async {
            let out = output.payload_limit(&kafka, &kafka.output_topic).await;
            limits.output.fetch_min(out, Ordering::Relaxed);
            if let Some(dlq) = &kafka.dead_letter_topic {
                let dead = output.payload_limit(&kafka, dlq).await;
                limits.dead_letter.fetch_min(dead, Ordering::Relaxed);
            }
        })
        .await;
    })
}

/// What every partition's worker shares.
struct WorkerParts {
    settings: Settings,
    rules: watch::Receiver<Arc<RuleSet>>,
    output: Arc<KafkaOutput>,
    offsets: Arc<dyn OffsetStore>,
    /// Exactly-once mode: each worker writes under its partition's lease.
    transactions: Option<Arc<Transactions>>,
    usage: Arc<AtomicUsize>,
    limits: Arc<MessageLimits>,
    input_paused: watch::Receiver<bool>,
    decision_log: Option<Arc<dyn DecisionSource>>,
}

/// Starts a partition's worker, given how many partitions are assigned (its
/// share of the memory budget).
fn worker_factory(parts: WorkerParts) -> Start {
    let epoch = Epoch::now();
    let s = &parts.settings;
    let path = PathOutput {
        annotate: s.output.critical_path,
        metrics: s
            .metrics
            .critical_path
            .then(|| Arc::new(ServiceLabels::new(s.metrics.max_services))),
        report: false,
    };
    let sample_rate_attribute: Option<Arc<str>> =
        s.output.sample_rate_attribute.as_deref().map(Arc::from);
    Box::new(move |partition: i32, assigned: usize| {
        let s = &parts.settings;
        let (tx, rx) = mpsc::channel(s.buffer.partition_queue);
        let config = WorkerConfig {
            buffer: s.buffer_config(assigned),
            clock: s.clock_config(),
            epoch,
            paused_share: s.buffer.paused_share(),
            decided_ttl: s.decision.decided_ttl,
            remembered_bytes: (s.decision.remembered_bytes / assigned.max(1) as u64) as usize,
            max_in_flight: s.kafka.max_in_flight,
            dead_letter: s.kafka.dead_letter_topic.is_some(),
            decision_log: s.kafka.decision_log,
            decision_log_timeout: s.kafka.decision_log_timeout,
            limits: parts.limits.clone(),
            usage: parts.usage.clone(),
            path: path.clone(),
            sample_rate_attribute: sample_rate_attribute.clone(),
        };
        let edges = match &parts.transactions {
            // Started on the partition's first message, after its
            // assignment: the lease of that assignment.
            Some(t) => Edges::ExactlyOnce(t.lease(partition)),
            None => Edges::AtLeastOnce {
                output: parts.output.clone(),
                offsets: parts.offsets.clone(),
            },
        };
        let mut worker = PartitionWorker::new(partition, config, parts.rules.clone(), edges);
        if let Some(log) = &parts.decision_log {
            worker = worker.with_decision_log(log.clone());
        }
        Worker {
            input: tx,
            stored: worker.stored(),
            task: tokio::spawn(worker.run(rx, parts.input_paused.clone())),
        }
    })
}
