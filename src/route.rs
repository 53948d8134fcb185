//! `tailgate route`'s pure core: one input message split into one message
//! per trace, each to be keyed by its trace id, so that every span of a
//! trace reaches the same partition of the spans topic (and so the same
//! `tailgate run` worker) however the Collector batched and spread them.
//!
//! Each trace's spans leave with their resource and scope, in the input's
//! encoding, written by the same encoder as kept traces (without the
//! annotation). A message that is not OTLP at all is forwarded unchanged:
//! `tailgate run` reads it next, and counts and dead-letters it as it does
//! any bad input — route loses nothing and needs no dead-letter topic.

use bytes::Bytes;

use crate::otlp::encode::{encode_within, Annotation};
use crate::otlp::keying::{self, Unkeyed};
use crate::otlp::{self, DecodeError, Encoding, TraceId};

/// One message of one trace, to be produced keyed by `trace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceMessage {
    pub trace: TraceId,
    pub payload: Vec<u8>,
    pub encoding: Encoding,
    pub spans: usize,
}

impl TraceMessage {
    /// The message key: the trace id as 32 lowercase hex characters, as the
    /// Collector's exporter writes it with `partition_traces_by_id`.
    pub fn key(&self) -> String {
        self.trace.to_hex()
    }
}

/// What becomes of one input message.
#[derive(Debug)]
pub enum Routed {
    /// Its valid spans, one message per trace (a trace larger than the
    /// limit in several).
    Traces {
        messages: Vec<TraceMessage>,
        /// Spans of the message that were invalid, skipped (as `run` would).
        rejected: Vec<DecodeError>,
        /// Spans too large for a message even alone: forwarded within the
        /// input message itself (see [`Routed::Forward`]) would split
        /// nothing, so they are counted and left out.
        oversized: usize,
        /// Why the input was not keyed by trace, if it was not.
        unkeyed: Option<Unkeyed>,
    },
    /// Not OTLP: forwarded unchanged, for `tailgate run` to count and
    /// dead-letter.
    Forward(DecodeError),
}

/// Splits one input message (`key`, `payload`) into messages of one trace
/// each, of at most `limit` bytes of payload.
pub fn split(key: Option<&[u8]>, payload: Bytes, limit: usize) -> Routed {
    let decoded = match otlp::decode(payload) {
        Ok(d) => d,
        Err(e) => return Routed::Forward(e),
    };
    let unkeyed = keying::unkeyed(key, decoded.spans.iter().map(|(id, _)| id));
    let encoding = decoded.encoding;
    let mut messages = Vec::new();
    let mut oversized = 0;
    let none = Annotation::none();
    for (trace, spans) in otlp::by_trace(decoded.spans) {
        let split = encode_within(&spans, &none, encoding, limit);
        oversized += split.oversized.len();
        messages.extend(split.messages.into_iter().map(|m| TraceMessage {
            trace,
            payload: m.payload,
            encoding: m.encoding,
            spans: m.spans,
        }));
    }
    Routed::Traces {
        messages,
        rejected: decoded.rejected,
        oversized,
        unkeyed,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::workload::{encode, ShopWorkload};
    use opentelemetry_proto::tonic::trace::v1::TracesData;

    /// Batches as the Collector's exporter writes them without
    /// `partition_traces_by_id`: the resources of several traces in one
    /// message, in the order they were batched.
    fn batch(traces: &[crate::workload::GeneratedTrace]) -> TracesData {
        let mut data = TracesData::default();
        for t in traces {
            for m in &t.messages {
                data.resource_spans.extend(m.resource_spans.clone());
            }
        }
        data
    }

    /// (trace, span id) → (resource bytes, scope bytes).
    type Placed = BTreeMap<(TraceId, Vec<u8>), (Vec<u8>, Vec<u8>)>;

    /// Where every span of a set of decoded messages stands.
    fn spans_of(payloads: &[Vec<u8>]) -> Placed {
        let mut out = BTreeMap::new();
        for p in payloads {
            let d = otlp::decode(Bytes::from(p.clone())).expect("decodes");
            for (id, s) in d.spans {
                out.insert(
                    (id, s.span_id.to_vec()),
                    (s.scope.resource().to_vec(), s.scope.scope().to_vec()),
                );
            }
        }
        out
    }

    proptest! {
        /// Every span of a batch leaves exactly once, in a message of its
        /// own trace only, with its resource and scope, in the batch's
        /// encoding, keyed by its trace id.
        #[test]
        fn a_batch_splits_into_whole_keyed_traces(seed in 0u64..1_000, n in 1usize..12, json in any::<bool>(), limit in prop::sample::select(vec![300usize, 2_000, 1 << 20])) {
            let mut w = ShopWorkload::new(seed);
            let traces: Vec<_> = (0..n).map(|i| w.next_trace(1_760_000_000_000_000_000 + i as u64 * 1_000)).collect();
            let encoding = if json { Encoding::OtlpJson } else { Encoding::OtlpProto };
            let input = encode(&batch(&traces), encoding);
            let Routed::Traces { messages, rejected, oversized, unkeyed } = split(None, Bytes::from(input.clone()), limit) else {
                panic!("a valid batch is not forwarded");
            };
            prop_assert!(rejected.is_empty());
            prop_assert_eq!(unkeyed, Some(Unkeyed::NoKey));
            for m in &messages {
                prop_assert_eq!(m.key(), m.trace.to_hex());
                prop_assert_eq!(m.encoding, encoding);
                let d = otlp::decode(Bytes::from(m.payload.clone())).expect("a routed message decodes");
                prop_assert!(d.spans.iter().all(|(id, _)| *id == m.trace), "one trace per message");
                prop_assert_eq!(d.spans.len(), m.spans);
                prop_assert!(m.payload.len() <= limit || m.spans == 1);
            }
            let got = spans_of(&messages.iter().map(|m| m.payload.clone()).collect::<Vec<_>>());
            let want = spans_of(&[input]);
            let routed: usize = messages.iter().map(|m| m.spans).sum();
            prop_assert_eq!(routed + oversized, want.len(), "each span once");
            if oversized == 0 {
                prop_assert_eq!(got, want);
            }
            let traces_out: BTreeSet<_> = messages.iter().map(|m| m.trace).collect();
            let traces_in: BTreeSet<_> = traces.iter().map(|t| t.truth.trace_id).collect();
            if oversized == 0 {
                prop_assert_eq!(traces_out, traces_in);
            }
        }
    }

    #[test]
    fn a_message_that_is_not_otlp_is_forwarded() {
        assert!(matches!(
            split(None, Bytes::from_static(b"not otlp"), 1 << 20),
            Routed::Forward(_)
        ));
    }

    #[test]
    fn a_keyed_single_trace_message_is_seen_as_keyed() {
        let mut w = ShopWorkload::new(1);
        let t = w.next_trace(1_760_000_000_000_000_000);
        let key = t.truth.trace_id.to_hex();
        let payload = encode(&t.messages[0], Encoding::OtlpProto);
        let Routed::Traces {
            unkeyed, messages, ..
        } = split(Some(key.as_bytes()), Bytes::from(payload), 1 << 20)
        else {
            panic!("valid");
        };
        assert_eq!(unkeyed, None);
        assert_eq!(messages.len(), 1);
    }
}
