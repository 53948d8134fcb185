//! The staged shutdown, once input has stopped: workers drain, the producer
//! flushes, offsets commit last, the consumer leaves the group, and the
//! metrics endpoint stops. Each blocking call runs off the runtime's threads.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};

use super::dispatch::Failure;
use super::topology::Topology;
use crate::kafka::consumer::{self, InputConsumer};

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

    // Workers drain: each decides nothing more, waits for its in-flight
    // produces (at most `kafka.drain_timeout`) and stores its last watermark.
    tracing::info!("shutting down: draining partition workers");
    let handed = partitions.stop(None).await;
    tracing::info!(
        workers = handed.stopped,
        timed_out = handed.timed_out,
        undecided_traces = handed.undecided_traces,
        "partition workers stopped"
    );
    // The run's token is cancelled: the committer finishes a commit under
    // way and ends, so the last commit below is the only one.
    if let Some(c) = committer {
        let _ = c.await;
    }

    // The producer flushes (blocking, at most 5 s: off the runtime's threads).
    {
        let output = output.clone();
        let _ = tokio::task::spawn_blocking(move || output.flush(Duration::from_secs(5))).await;
    }

    // Offsets commit last: the stored watermarks, or the open transaction
    // with its offsets — unless the transactions failed, when nothing may be.
    match &transactions {
        None => final_commit(&consumer, settings.kafka.drain_timeout).await,
        Some(t) if failure.is_none() => {
            if let Err(why) = t.commit().await {
                failure = Some(why.into());
            }
        }
        Some(_) => {}
    }

    // The consumer leaves the group, so the partitions' next owners get them
    // at once, not after `session.timeout.ms`.
    for task in background {
        let _ = task.await;
    }
    consumer.context().clear_handover();
    drop((partitions, offsets, transactions, output));
    leave(consumer, settings.kafka.group_instance_id.is_some()).await;

    endpoint.served.cancel();
    let _ = endpoint.task.await;
    if let Some(why) = failure {
        return Err(why);
    }
    tracing::info!("stopped");
    Ok(())
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
