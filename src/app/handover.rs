//! Partitions revoked in a rebalance are handed over inside librdkafka's
//! revoke callback, while they are still this instance's: their workers
//! finish and store their last watermarks, which are committed before the
//! partitions move, so their next owner starts exactly there.

use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

use super::partitions::{block_on_runtime, Partitions};
use crate::kafka::consumer;
use crate::kafka::transaction::Transactions;

pub(super) struct Handover {
    pub partitions: Arc<Partitions>,
    pub transactions: Option<Arc<Transactions>>,
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
