//! Partitions revoked in a rebalance are handed over inside librdkafka's
//! revoke callback, while they are still this instance's: their workers
//! finish and store their last watermarks, which are committed before the
//! partitions move, so their next owner starts exactly there.

use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

use super::partitions::{block_on_runtime, Partitions};
use crate::kafka::consumer;
use crate::kafka::decision_log::{CoverError, DecisionTopic};
use crate::kafka::transaction::Transactions;

pub(super) struct Handover {
    pub partitions: Arc<Partitions>,
    pub transactions: Option<Arc<Transactions>>,
    /// The decision log's topic: it must have a partition of each assigned
    /// input partition's number before that partition's worker logs.
    pub decision_topic: Option<Arc<DecisionTopic>>,
}

impl Handover {
    /// Grows the decision topic if an assigned partition's number is past
    /// its partitions (the input grew: scaling out). Called inside the
    /// rebalance callback, so before any message of these partitions is
    /// read and their workers start. Blocking, but only when the topic
    /// lacks a partition (a look at the broker and the growth, bounded by
    /// the admin timeouts); otherwise a comparison.
    fn cover(&self, partitions: &[i32]) {
        let (Some(topic), Some(max)) = (&self.decision_topic, partitions.iter().max()) else {
            return;
        };
        let needed = (*max).max(0) as usize + 1;
        let cover = || topic.cover(needed);
        let result = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(cover)
            }
            _ => cover(),
        };
        match result {
            Ok(()) => {}
            Err(CoverError::Lacking(l)) => tracing::error!("{l}"),
            Err(CoverError::Other(e)) => tracing::error!(
                topic = topic.name(),
                "cannot check that the decision topic has a partition for each of {partitions:?}: {e}; a decision of a partition it lacks is not logged (counted in tailgate_decisions_unlogged_total)"
            ),
        }
    }
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
                // The revoked partitions' leases end with the commit, before
                // any writer goes on: a worker still running (its drain
                // timed out) can write nothing for them from now on.
                if block_on_runtime(t.commit_and_revoke(revoked)).is_none() {
                    t.revoked(revoked);
                }
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
        self.cover(partitions);
        if let Some(t) = &self.transactions {
            t.assigned(partitions);
        }
    }
}
