//! Remembered decisions, followed by the late spans of traces already
//! decided: a kept trace's late spans are produced at once, a dropped
//! trace's released.

use std::sync::Arc;
use std::time::Duration;

use crate::otlp::{Annotation, TraceId};

/// A decision remembered for the trace's late spans. It names its rule and
/// carries its annotation itself, so it stays right across a rule reload.
#[derive(Clone)]
pub(super) struct Decided {
    pub keep: bool,
    pub rule: Arc<str>,
    /// The kept spans' annotation (absent for a drop).
    pub annotation: Option<Arc<Annotation>>,
}

/// Decisions of recently decided traces, for `decision.decided_ttl`.
pub(super) struct Decisions {
    cache: moka::sync::Cache<TraceId, Decided, foldhash::fast::RandomState>,
}

impl Decisions {
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .initial_capacity(capacity.min(1 << 14) as usize)
                .time_to_live(ttl)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    pub fn get(&self, id: &TraceId) -> Option<Decided> {
        self.cache.get(id)
    }

    pub fn insert(&self, id: TraceId, decided: Decided) {
        self.cache.insert(id, decided);
    }
}
