//! The shop workload of the tests, and what tailgate's rules decide of it.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tailgate::otlp::{self, Encoding, TraceId};
use tailgate::rules::{RuleSet, RuleSpec, TraceSummary};
use tailgate::workload::{encode, GeneratedTrace, ShopWorkload};

/// Generated traces and the messages that carry them.
pub struct Workload {
    pub traces: Vec<GeneratedTrace>,
}

impl Workload {
    pub fn shop(seed: u64, n: usize) -> Self {
        let mut w = ShopWorkload::new(seed);
        let start = 1_760_000_000_000_000_000u64;
        Self {
            traces: (0..n)
                .map(|i| w.next_trace(start + i as u64 * 1_000_000))
                .collect(),
        }
    }

    /// The traces `policy` keeps, computed by the library from the same
    /// messages: trace id → span count.
    pub fn expected_kept(&self, policy_rules_yaml: &str) -> HashMap<TraceId, usize> {
        self.decisions(policy_rules_yaml)
            .into_iter()
            .filter(|(_, (_, _, keep))| *keep)
            .map(|(id, (spans, _, _))| (id, spans))
            .collect()
    }

    /// What `policy` decides for each trace, computed by the library from the
    /// same messages: trace id → (span count, deciding rule, kept).
    pub fn decisions(&self, policy_rules_yaml: &str) -> HashMap<TraceId, (usize, String, bool)> {
        let specs: Vec<RuleSpec> = serde_yaml::from_str(policy_rules_yaml).expect("rules yaml");
        let rules = RuleSet::compile(&specs).expect("rules compile");
        self.traces
            .iter()
            .map(|t| {
                let spans: Vec<_> = t
                    .messages
                    .iter()
                    .flat_map(|m| {
                        otlp::decode(Bytes::from(encode(m, Encoding::OtlpProto)))
                            .expect("decodes")
                            .spans
                    })
                    .map(|(_, s)| s)
                    .collect();
                let d = rules.decide(&TraceSummary::of(t.truth.trace_id, &spans), Duration::ZERO);
                let rule = rules.names()[d.rule].to_string();
                (t.truth.trace_id, (spans.len(), rule, d.keep))
            })
            .collect()
    }
}
