//! Decoding OTLP input and encoding kept spans. Shared here: the messages
//! the tests decode (a shop trace, a single span, a one-span ERROR resource).

mod annotating;
mod compacting;
mod decoding;
mod encoding;
mod json;
mod malformed;
mod recognition;

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;

use super::*;
use crate::workload::{build_trace, encode, ShopWorkload, SpanSpec};

/// `spans` as the decoder gives them from a message in which each carries
/// `tracestate` (written with the Collector's types, not tailgate's).
pub(crate) fn with_trace_state(spans: &[SpanRecord], tracestate: &str) -> Vec<SpanRecord> {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let resource_spans = spans
        .iter()
        .map(|s| {
            let mut span = Span::decode(s.encoded()).expect("a span");
            span.trace_state = tracestate.into();
            ResourceSpans {
                resource: Some(Resource::decode(s.scope.resource()).expect("a resource")),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope::decode(s.scope.scope()).expect("a scope")),
                    spans: vec![span],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }
        })
        .collect();
    decode(proto(&TracesData { resource_spans }))
        .expect("decodes")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

fn shop() -> crate::workload::GeneratedTrace {
    let mut w = ShopWorkload::new(11);
    w.error_rate = 1.0;
    w.next_trace(1_700_000_000_000_000_000)
}

fn proto(data: &TracesData) -> Bytes {
    Bytes::from(encode(data, Encoding::OtlpProto))
}

fn single(spec: SpanSpec, trace_id: &[u8], span_id: &[u8]) -> TracesData {
    let mut data = build_trace(TraceId([7; 16]), &[[1; 8]], 1_000, &[spec]).remove(0);
    let s = &mut data.resource_spans[0].scope_spans[0].spans[0];
    s.trace_id = trace_id.to_vec();
    s.span_id = span_id.to_vec();
    data
}

/// A one-span ERROR trace as a `ResourceSpans`.
fn error_resource(trace: u8) -> opentelemetry_proto::tonic::trace::v1::ResourceSpans {
    let mut spec = SpanSpec::new("checkout", "POST /pay", None, 0, 5);
    spec.error = true;
    build_trace(TraceId([trace; 16]), &[[trace; 8]], 1_000, &[spec])
        .remove(0)
        .resource_spans
        .remove(0)
}
