//! Wiring, and only wiring: the topology is built (consumer, producer,
//! transactions, one worker per assigned partition, the metrics endpoint),
//! input is dispatched to the workers until shutdown is requested, and then
//! the pipeline stops in stages — input stops, workers drain, the producer
//! flushes, offsets commit last, the consumer leaves the group.
//!
//! Every task that runs until shutdown takes the run's one
//! [`CancellationToken`]; the metrics endpoint alone outlives it, so that
//! the shutdown can be watched, and stops last.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Loaded;

mod dispatch;
mod handover;
pub mod http;
mod partitions;
mod pressure;
pub mod route;
mod shutdown;
mod topology;

use http::Health;

/// A running tailgate: what the demo and tests observe.
#[derive(Clone, Default)]
pub struct Handles {
    pub health: Arc<Health>,
}

/// Runs tailgate until `shutdown` resolves (or its exactly-once transactions
/// fail, or a partition cannot be read again after its worker died).
pub async fn run(
    loaded: Loaded,
    shutdown: impl Future<Output = ()>,
    handles: Handles,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let mut topology = topology::Topology::build(loaded, &handles, &stop).await?;
    let failure = dispatch::Dispatch::new(&mut topology, &handles)
        .until(shutdown)
        .await;
    // Input stops: nothing more is read; every task of the run winds down.
    stop.cancel();
    shutdown::in_stages(topology, failure).await
}
