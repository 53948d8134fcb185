//! The input a case makes: its messages, as a producer would write them,
//! and what the model knows of each span in them.

use std::collections::HashMap;

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    status, ResourceSpans, ScopeSpans, Span, Status, TracesData,
};
use prost::Message as _;

use super::generate::{Case, GenTrace, Stamp};
use super::*;
use crate::otlp::wire::put_len;
use crate::otlp::Encoding;

/// What the model knows of one span of the input.
pub(super) struct SpanFact {
    pub(super) offset: i64,
    pub(super) record: SpanRecord,
    pub(super) encoding: Encoding,
}

/// One input message, as produced, and what the model knows of it.
#[derive(Clone)]
pub(super) struct InputFact {
    pub(super) message: InputMessage,
    /// Valid spans it carries.
    pub(super) spans: Vec<Key>,
    /// Rejected whole (garbage).
    pub(super) garbage: bool,
}

fn trace_id(t: usize) -> TraceId {
    let mut id = [0u8; 16];
    id[0] = 0x5a;
    id[8..].copy_from_slice(&((t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
    TraceId(id)
}

fn span_id(t: usize, i: usize) -> [u8; 8] {
    [1, t as u8, i as u8, 0, 0, 0, 0, 1]
}

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn make_span(t: usize, i: usize, g: &GenTrace) -> Span {
    Span {
        trace_id: trace_id(t).0.to_vec(),
        span_id: span_id(t, i).to_vec(),
        parent_span_id: if i == 0 && g.root {
            Vec::new()
        } else {
            span_id(t, 0).to_vec()
        },
        name: format!("op-{t}-{i}"),
        kind: 2,
        start_time_unix_nano: 1_000_000 + i as u64,
        end_time_unix_nano: 2_000_000 + i as u64,
        attributes: vec![kv("pad", "p".repeat(g.pads[i]))],
        status: (g.error == Some(i)).then(|| Status {
            code: status::StatusCode::Error as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The input of a case: its messages, offsets 0, 1, 2...
pub(super) fn input(case: &Case) -> (Vec<InputFact>, HashMap<Key, SpanFact>) {
    let mut all: Vec<(u32, usize, usize)> = Vec::new();
    for (t, g) in case.traces.iter().enumerate() {
        for i in 0..g.pads.len() {
            let k = all.len();
            all.push((case.order[k % case.order.len()], t, i));
        }
    }
    all.sort();
    let mut out: Vec<InputFact> = Vec::new();
    let mut facts = HashMap::new();
    let mut rest = all.as_slice();
    let mut m = 0;
    let mut ts = BASE_MS;
    while !rest.is_empty() {
        let gm = case.messages[m % case.messages.len()];
        m += 1;
        ts += gm.gap_ms as i64;
        let timestamp = match gm.stamp {
            Stamp::Good => Some(ts),
            Stamp::Missing => None,
            Stamp::Ahead => Some(WALL_START.as_millis() as i64 + 86_400_000),
        };
        if gm.garbage_before {
            let payload = Bytes::from(vec![0x0a, 0xff, 0xff, 0x01, 0x02]);
            out.push(InputFact {
                message: InputMessage {
                    offset: out.len() as i64,
                    timestamp,
                    key: None,
                    payload,
                },
                spans: Vec::new(),
                garbage: true,
            });
        }
        let (now, later) = rest.split_at(gm.spans.min(rest.len()));
        rest = later;
        let mut resource = Resource {
            attributes: vec![kv("service.name", format!("svc-{m}"))],
            ..Default::default()
        };
        if gm.big_resource {
            resource.attributes.push(kv("big", "r".repeat(2_000)));
        }
        let spans: Vec<Span> = now
            .iter()
            .map(|(_, t, i)| make_span(*t, *i, &case.traces[*t]))
            .collect();
        let data = TracesData {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "model".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let encoding = if gm.json {
            Encoding::OtlpJson
        } else {
            Encoding::OtlpProto
        };
        let payload = match (encoding, gm.broken_span) {
            (Encoding::OtlpProto, false) => data.encode_to_vec(),
            (Encoding::OtlpJson, false) => serde_json::to_vec(&data).expect("json"),
            (Encoding::OtlpProto, true) => {
                // One more span, of the first trace, whose attributes run past its end.
                let mut broken = make_span(
                    now[0].1,
                    99,
                    &GenTrace {
                        pads: vec![0; 100],
                        error: None,
                        root: false,
                    },
                )
                .encode_to_vec();
                broken.extend_from_slice(&[0x4a, 60, 0x0a, 0x00]);
                let rs = &data.resource_spans[0];
                let mut scope = Vec::new();
                put_len(
                    &mut scope,
                    1,
                    &rs.scope_spans[0]
                        .scope
                        .as_ref()
                        .expect("scope")
                        .encode_to_vec(),
                );
                for s in &rs.scope_spans[0].spans {
                    put_len(&mut scope, 2, &s.encode_to_vec());
                }
                put_len(&mut scope, 2, &broken);
                let mut resource_spans = Vec::new();
                put_len(
                    &mut resource_spans,
                    1,
                    &rs.resource.as_ref().expect("resource").encode_to_vec(),
                );
                put_len(&mut resource_spans, 2, &scope);
                let mut payload = Vec::new();
                put_len(&mut payload, 1, &resource_spans);
                payload
            }
            (Encoding::OtlpJson, true) => {
                // One more span with an odd-length hex trace id.
                let mut v = serde_json::to_value(&data).expect("json");
                let spans = v["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array_mut()
                    .expect("spans");
                let mut bad = spans[0].clone();
                bad["traceId"] = serde_json::Value::String("abc".into());
                spans.push(bad);
                serde_json::to_vec(&v).expect("json")
            }
        };
        let payload = Bytes::from(payload);
        let offset = out.len() as i64;
        let decoded = otlp::decode(payload.clone()).expect("a generated message decodes");
        assert_eq!(decoded.rejected.len(), usize::from(gm.broken_span));
        let mut keys = Vec::new();
        for (id, record) in decoded.spans {
            let key = (id, record.span_id);
            keys.push(key);
            facts.insert(
                key,
                SpanFact {
                    offset,
                    record,
                    encoding,
                },
            );
        }
        out.push(InputFact {
            message: InputMessage {
                offset,
                timestamp,
                key: None,
                payload,
            },
            spans: keys,
            garbage: false,
        });
    }
    (out, facts)
}

impl std::fmt::Debug for InputFact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "@{} t={:?} {}",
            self.message.offset,
            self.message.timestamp.map(|t| t - BASE_MS),
            self.spans
                .iter()
                .map(|(t, s)| format!("{}/{}", &t.to_hex()[28..], s[2]))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}
