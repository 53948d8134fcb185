//! The workload and what the output must hold.

use std::time::Duration;

use bytes::Bytes;
use tailgate::otlp::{self, Encoding, TraceId};
use tailgate::rules::{RuleSet, RuleSpec, TraceSummary};
use tailgate::workload::{encode, ShopWorkload};

use crate::{copy, RULES};

pub struct Workload {
    /// (key, payload), in trace order: the messages of trace i are
    /// `messages[msg_end[i - 1]..msg_end[i]]`.
    pub messages: Vec<(String, Vec<u8>)>,
    pub msg_end: Vec<usize>,
    /// Spans of trace i.
    pub spans: Vec<usize>,
    /// Bytes of span encodings up to and including trace i (what tailgate's
    /// buffer holds per span besides its 88-byte record).
    pub span_bytes_cum: Vec<u64>,
    /// Message bytes up to and including trace i.
    pub message_bytes_cum: Vec<u64>,
    pub ids: Vec<TraceId>,
    /// Error or slow: must be kept whole.
    pub must_keep: Vec<bool>,
    pub error: Vec<bool>,
    pub slow: Vec<bool>,
    /// What tailgate's rules decide, computed by the library.
    pub keep: Vec<bool>,
    /// Messages the copy forwards.
    pub copy_messages: usize,
    pub copy_traces: usize,
}

impl Workload {
    pub fn generate(traces: usize, seed: u64) -> Self {
        let specs: Vec<RuleSpec> = serde_yaml::from_str(RULES).expect("RULES is valid YAML");
        let rules = RuleSet::compile(&specs).expect("RULES compile");
        let mut shop = ShopWorkload::lean(seed);
        let start = 1_760_000_000_000_000_000u64;
        let mut w = Workload {
            messages: Vec::with_capacity(traces * 5),
            msg_end: Vec::with_capacity(traces),
            spans: Vec::with_capacity(traces),
            span_bytes_cum: Vec::with_capacity(traces),
            message_bytes_cum: Vec::with_capacity(traces),
            ids: Vec::with_capacity(traces),
            must_keep: Vec::with_capacity(traces),
            error: Vec::with_capacity(traces),
            slow: Vec::with_capacity(traces),
            keep: Vec::with_capacity(traces),
            copy_messages: 0,
            copy_traces: 0,
        };
        let (mut span_bytes, mut message_bytes) = (0u64, 0u64);
        for i in 0..traces {
            let t = shop.next_trace(start + i as u64 * 1_000_000);
            let key = t.truth.trace_id.to_hex();
            let copied = copy::keeps(key.as_bytes());
            let mut records = Vec::with_capacity(t.truth.spans);
            for m in &t.messages {
                let payload = encode(m, Encoding::OtlpProto);
                message_bytes += payload.len() as u64;
                let decoded = otlp::decode(Bytes::from(payload.clone()))
                    .expect("the workload decodes with tailgate's decoder");
                for (_, s) in decoded.spans {
                    span_bytes += s.encoded().len() as u64;
                    records.push(s);
                }
                if copied {
                    w.copy_messages += 1;
                }
                w.messages.push((key.clone(), payload));
            }
            let d = rules.decide(
                &TraceSummary::of(t.truth.trace_id, &records),
                Duration::ZERO,
            );
            w.copy_traces += usize::from(copied);
            w.msg_end.push(w.messages.len());
            w.spans.push(records.len());
            w.span_bytes_cum.push(span_bytes);
            w.message_bytes_cum.push(message_bytes);
            w.ids.push(t.truth.trace_id);
            w.must_keep.push(t.truth.error || t.truth.slow);
            w.error.push(t.truth.error);
            w.slow.push(t.truth.slow);
            w.keep.push(d.keep);
        }
        w
    }

    pub fn traces(&self) -> usize {
        self.ids.len()
    }

    pub fn total_spans(&self) -> u64 {
        self.spans.iter().sum::<usize>() as u64
    }

    pub fn message_bytes(&self) -> u64 {
        self.message_bytes_cum.last().copied().unwrap_or(0)
    }

    pub fn span_bytes(&self) -> u64 {
        self.span_bytes_cum.last().copied().unwrap_or(0)
    }

    /// Messages of traces `from..to`.
    pub fn messages_of(&self, from: usize, to: usize) -> &[(String, Vec<u8>)] {
        let start = if from == 0 { 0 } else { self.msg_end[from - 1] };
        let end = if to == 0 { 0 } else { self.msg_end[to - 1] };
        &self.messages[start..end]
    }

    pub fn spans_of(&self, to: usize) -> u64 {
        self.spans[..to].iter().sum::<usize>() as u64
    }
}
