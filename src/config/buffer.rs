//! The `buffer` section: the memory budget and the queues in front of the
//! partitions' workers.

use serde::{Deserialize, Serialize};

/// Memory budget and internal queues.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BufferSettings {
    /// Hard budget, in bytes, for buffered spans over all partitions; split
    /// evenly between the partitions this instance owns. Above it the oldest
    /// traces are decided early (reason `memory`).
    pub max_bytes: u64,
    /// Messages queued for one partition's worker.
    pub partition_queue: usize,
    /// Bytes read for one partition while its worker's queue is full, held
    /// in order for it; beyond this the partition alone is paused (which
    /// drops what the consumer had fetched for it, to be fetched again).
    pub partition_backlog_bytes: usize,
    /// Fraction of `max_bytes` above which the input partitions are paused.
    pub high_water: f64,
    /// Fraction of `max_bytes` below which paused partitions resume.
    pub low_water: f64,
}

impl Default for BufferSettings {
    fn default() -> Self {
        Self {
            max_bytes: 512 * 1024 * 1024,
            partition_queue: 1024,
            partition_backlog_bytes: 4 * 1024 * 1024,
            high_water: 0.9,
            low_water: 0.7,
        }
    }
}

impl BufferSettings {
    /// The fraction of its budget a partition decides its traces down to
    /// while the input is paused for memory: under `low_water`, so that
    /// the input resumes once what is queued for the workers is read.
    pub fn paused_share(&self) -> f64 {
        self.low_water * 0.9
    }

    /// This section's own checks.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.max_bytes < 1024 * 1024 {
            return Err(format!(
                "buffer.max_bytes ({}) must be at least 1 MiB",
                self.max_bytes
            ));
        }
        let (high, low) = (self.high_water, self.low_water);
        if !(low > 0.0 && low < high && high <= 1.0) {
            return Err(format!(
                "buffer.low_water ({low}) and buffer.high_water ({high}) must satisfy 0 < low_water < high_water <= 1"
            ));
        }
        if self.partition_queue == 0 {
            return Err("buffer.partition_queue must be at least 1".into());
        }
        Ok(())
    }
}
