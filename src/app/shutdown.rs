//! The staged shutdown, once input has stopped: workers drain, the producer
//! flushes, offsets commit last, the consumer leaves the group, and the
//! metrics endpoint stops. Each blocking call runs off the runtime's threads.
//!
//! Every stage is bounded (see [`Bounds`]): a stage that overruns is
//! abandoned with an error line naming it, and the next one runs. A stage
//! abandoned before what was read is handed over (the exactly-once commit
//! under way or the last one, the final offset commit) makes the run end
//! in an error, so the process exits non-zero; nothing is committed past
//! undelivered data either way, so the next reader reads it again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};

use super::dispatch::Failure;
use super::topology::Topology;
use crate::config::Settings;
use crate::kafka::consumer::{self, InputConsumer};

/// How long each stage of the shutdown may take, from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bounds {
    /// The workers' drain, and the exactly-once commit under way:
    /// `kafka.drain_timeout`, both at once.
    pub drain: Duration,
    /// The producer's flush: at most 5 s, within `kafka.drain_timeout`.
    pub flush: Duration,
    /// The last commit (offsets, or the open transaction): `kafka.drain_timeout`.
    pub commit: Duration,
    /// Closing the consumer (leaving the group) and the producer: `kafka.drain_timeout`.
    pub close: Duration,
    /// The background tasks and the metrics endpoint: at most 5 s, within
    /// `kafka.drain_timeout`.
    pub tasks: Duration,
}

impl Bounds {
    pub fn from(settings: &Settings) -> Self {
        let drain = settings.kafka.drain_timeout;
        let short = drain.min(Duration::from_secs(5));
        Self {
            drain,
            flush: short,
            commit: drain,
            close: drain,
            tasks: short,
        }
    }
}

/// The stages abandoned at their bound.
#[derive(Debug, Default)]
pub(super) struct Stages {
    /// Abandoned with what was read not handed over: the run is an error.
    unsafe_to_end: Vec<&'static str>,
    /// Abandoned after the handover: said, but the run ends as it would.
    late: Vec<&'static str>,
}

/// Whether abandoning a stage leaves what was read not handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handover {
    /// Not handed over: the run ends in an error (exit non-zero).
    Incomplete,
    /// Handed over already (or never to be by this stage).
    Done,
}

impl Stages {
    /// Runs `stage` for at most `within`: its output, or `None` (said, and
    /// remembered) if it overran and was abandoned.
    pub async fn bounded<T>(
        &mut self,
        stage: &'static str,
        within: Duration,
        handover: Handover,
        f: impl Future<Output = T>,
    ) -> Option<T> {
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(within, f).await {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::error!(
                    stage,
                    bound_ms = within.as_millis() as u64,
                    waited_ms = started.elapsed().as_millis() as u64,
                    "shutdown: {stage} did not finish within {}; abandoned{}",
                    humantime::format_duration(within),
                    match handover {
                        Handover::Incomplete =>
                            ", without committing: the next reader reads again from the last commit",
                        Handover::Done => "",
                    }
                );
                match handover {
                    Handover::Incomplete => self.unsafe_to_end.push(stage),
                    Handover::Done => self.late.push(stage),
                }
                None
            }
        }
    }

    /// The run's result: `failure` if there is one, an error if a stage was
    /// abandoned before the handover, else Ok.
    pub fn result(self, failure: Option<Failure>) -> anyhow::Result<()> {
        if !self.late.is_empty() {
            tracing::warn!(stages = ?self.late, "shutdown: stages abandoned after the handover");
        }
        match (failure, self.unsafe_to_end.is_empty()) {
            (Some(why), true) => Err(why),
            (Some(why), false) => Err(why.context(format!(
                "and the shutdown abandoned {}",
                self.unsafe_to_end.join(", ")
            ))),
            (None, false) => Err(anyhow::anyhow!(
                "the shutdown abandoned {} at its bound; what was read since the last commit is read again by the next reader",
                self.unsafe_to_end.join(", ")
            )),
            (None, true) => Ok(()),
        }
    }
}

/// Runs the stages after the dispatch loop ended (with `failure` if the run
/// could not go on); the error is the run's.
pub(super) async fn in_stages(t: Topology, mut failure: Option<Failure>) -> anyhow::Result<()> {
    let Topology {
        settings,
        consumer,
        output,
        transactions,
        offsets,
        partitions,
        committer,
        background,
        endpoint,
        ..
    } = t;
    let bounds = Bounds::from(&settings);
    let mut stages = Stages::default();

    // Workers drain: each decides nothing more, waits for its in-flight
    // produces (at most `kafka.drain_timeout`) and stores its last watermark.
    // An exactly-once commit under way finishes meanwhile (the workers'
    // writes wait for it), within the same bound: the run's token is
    // cancelled, so it is the committer's last, and the commit below the
    // only one after it.
    tracing::info!("shutting down: draining partition workers");
    let deadline = tokio::time::Instant::now() + bounds.drain;
    let drained = stages
        .bounded(
            "draining the partition workers",
            // `stop` keeps the drain timeout itself; this only guards it.
            bounds.drain + Duration::from_secs(1),
            Handover::Done,
            partitions.stop(None),
        )
        .await;
    if let Some(handed) = drained {
        tracing::info!(
            workers = handed.stopped,
            timed_out = handed.timed_out,
            undecided_traces = handed.undecided_traces,
            "partition workers stopped"
        );
    }
    let mut committer_abandoned = false;
    if let Some(c) = committer {
        let within = deadline.saturating_duration_since(tokio::time::Instant::now());
        let abort = c.abort_handle();
        let ended = stages
            .bounded(
                "the exactly-once commit under way",
                within,
                Handover::Incomplete,
                c,
            )
            .await;
        if ended.is_none() {
            // Its blocking call stays behind on its thread; the task ends.
            abort.abort();
            committer_abandoned = true;
        }
    }

    // The producer flushes (blocking, off the runtime's threads).
    {
        let (output, within) = (output.clone(), bounds.flush);
        stages
            .bounded(
                "flushing the producer",
                within + Duration::from_secs(1),
                Handover::Done,
                tokio::task::spawn_blocking(move || output.flush(within)),
            )
            .await;
    }

    // Offsets commit last: the stored watermarks, or the open transaction
    // with its offsets — unless the transactions failed, when nothing may
    // be, or a commit is still stuck under way (the next one would wait on it).
    match &transactions {
        None => {
            stages
                .bounded(
                    "the final offset commit",
                    bounds.commit + Duration::from_secs(1),
                    Handover::Incomplete,
                    final_commit(&consumer, bounds.commit),
                )
                .await;
        }
        Some(_) if committer_abandoned => tracing::error!(
            "exactly-once: not committing the open transaction: the commit before it never returned; the restart aborts it and reads again from the last committed transaction"
        ),
        Some(t) if failure.is_none() => {
            let last = stages
                .bounded(
                    "the last exactly-once commit",
                    bounds.commit,
                    Handover::Incomplete,
                    t.commit(),
                )
                .await;
            if let Some(Err(why)) = last {
                failure = Some(why.into());
            }
        }
        Some(_) => {}
    }

    // The consumer leaves the group, so the partitions' next owners get them
    // at once, not after `session.timeout.ms`.
    for task in background {
        let abort = task.abort_handle();
        if stages
            .bounded("a background task", bounds.tasks, Handover::Done, task)
            .await
            .is_none()
        {
            abort.abort();
        }
    }
    consumer.context().clear_handover();
    // The producer closes off the runtime's threads too (closing purges and
    // waits for its threads), if nothing else holds it (a worker left
    // behind at the drain timeout does, until the process exits).
    let producer = (partitions, offsets, transactions, output);
    stages
        .bounded(
            "closing the producer",
            bounds.close,
            Handover::Done,
            tokio::task::spawn_blocking(move || drop(producer)),
        )
        .await;
    let static_member = settings.kafka.group_instance_id.is_some();
    stages
        .bounded(
            "closing the consumer",
            bounds.close,
            Handover::Done,
            leave(consumer, static_member),
        )
        .await;

    endpoint.served.cancel();
    let abort = endpoint.task.abort_handle();
    if stages
        .bounded(
            "stopping the metrics endpoint",
            bounds.tasks,
            Handover::Done,
            endpoint.task,
        )
        .await
        .is_none()
    {
        abort.abort();
    }
    let ended = stages.result(failure);
    if ended.is_ok() {
        tracing::info!("stopped");
    }
    ended
}

/// Commits the stored watermarks at shutdown. A rebalance in progress (another
/// instance joining or leaving) makes the commit fail with a stale
/// generation; the consumer is then polled so the rebalance completes, and the
/// commit retried, for at most `within`. Messages read meanwhile are not
/// stored, so they are read again by the partition's next reader.
async fn final_commit(consumer: &Arc<InputConsumer>, within: Duration) {
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
            // Fenced (librdkafka's fatal state): no retry commits anything.
            Err(e) if consumer.client().fatal_error().is_some() => {
                tracing::warn!("final commit failed: {e}; the consumer is in a fatal state, so the partitions' next reader reads again from the last commit");
                return;
            }
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

/// Closes the consumer, off the runtime's threads (closing polls until the
/// group has let it go). A dynamic member leaves the group, and its
/// partitions go to the others at once; a static one (`group.instance.id`)
/// does not leave: its partitions wait for it to come back, for at most
/// `session.timeout.ms`.
async fn leave(consumer: Arc<InputConsumer>, static_member: bool) {
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
