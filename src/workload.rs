//! A synthetic workload modelled on a small shop, for the demo, the tests and
//! the benchmarks.
//!
//! Each trace: `gateway` receives a request and calls `profile-service`, which
//! calls `fraud-detection`, which calls a third-party scoring API — now and then
//! slowly, now and then failing. The gateway also publishes the order to Kafka,
//! where `search-indexer` and `notifier` consume it asynchronously (their spans
//! end after the root). Health checks are single-span traces.
//!
//! Messages are shaped like the OpenTelemetry Collector's Kafka exporter with
//! `partition_traces_by_id`: one `TracesData` per resource and trace, keyed by
//! the trace id in hex.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status, TracesData,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::otlp::{Encoding, TraceId};

/// A string attribute.
pub fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int_attr(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// One span of a hand-built trace.
#[derive(Debug, Clone)]
pub struct SpanSpec {
    pub service: &'static str,
    pub name: String,
    pub kind: span::SpanKind,
    /// Index of the parent in the trace's span list; `None` for the root.
    pub parent: Option<usize>,
    /// Start, in ns after the trace's start.
    pub start: u64,
    pub duration: u64,
    pub error: bool,
    pub attributes: Vec<KeyValue>,
}

impl SpanSpec {
    pub fn new(
        service: &'static str,
        name: &str,
        parent: Option<usize>,
        start_ms: u64,
        duration_ms: u64,
    ) -> Self {
        Self {
            service,
            name: name.into(),
            kind: if parent.is_none() {
                span::SpanKind::Server
            } else {
                span::SpanKind::Internal
            },
            parent,
            start: start_ms * 1_000_000,
            duration: duration_ms * 1_000_000,
            error: false,
            attributes: Vec::new(),
        }
    }
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            attr("service.name", service),
            attr("service.version", "1.8.2"),
            attr("k8s.pod.name", &format!("{service}-7d9f8c6b5-x2x9q")),
        ],
        ..Default::default()
    }
}

/// Builds one `TracesData` per service (the exporter's shape with
/// `partition_traces_by_id`) for a trace starting at `start_unix_ns`.
/// `span_ids[i]` is used for span `i`.
pub fn build_trace(
    trace_id: TraceId,
    span_ids: &[[u8; 8]],
    start_unix_ns: u64,
    spans: &[SpanSpec],
) -> Vec<TracesData> {
    let mut by_service: Vec<(&'static str, Vec<Span>)> = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        let span = Span {
            trace_id: trace_id.0.to_vec(),
            span_id: span_ids[i].to_vec(),
            parent_span_id: s.parent.map(|p| span_ids[p].to_vec()).unwrap_or_default(),
            name: s.name.clone(),
            kind: s.kind as i32,
            start_time_unix_nano: start_unix_ns + s.start,
            end_time_unix_nano: start_unix_ns + s.start + s.duration,
            attributes: s.attributes.clone(),
            status: Some(Status {
                message: if s.error {
                    "upstream failed".into()
                } else {
                    String::new()
                },
                code: if s.error {
                    status::StatusCode::Error as i32
                } else {
                    status::StatusCode::Unset as i32
                },
            }),
            ..Default::default()
        };
        match by_service.iter_mut().find(|(svc, _)| *svc == s.service) {
            Some((_, v)) => v.push(span),
            None => by_service.push((s.service, vec![span])),
        }
    }
    by_service
        .into_iter()
        .map(|(service, spans)| TracesData {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource(service)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.shop".into(),
                        version: "2.3.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }],
        })
        .collect()
}

/// Span attributes the lean shape leaves out: what the span's name and kind
/// already say (`POST /score`, `orders publish`).
const REPEATED_IN_NAME: [&str; 3] = [
    "http.request.method",
    "messaging.system",
    "messaging.destination.name",
];

/// Trims a message to the lean shape: the resource keeps only `service.name`,
/// the scope only its name, the schema URLs go, and so do the span attributes
/// that repeat the span's name.
fn make_lean(data: &mut TracesData) {
    for rs in &mut data.resource_spans {
        if let Some(r) = rs.resource.as_mut() {
            r.attributes.retain(|kv| kv.key == "service.name");
        }
        rs.schema_url.clear();
        for ss in &mut rs.scope_spans {
            if let Some(s) = ss.scope.as_mut() {
                s.version.clear();
            }
            ss.schema_url.clear();
            for span in &mut ss.spans {
                span.attributes
                    .retain(|kv| !REPEATED_IN_NAME.contains(&kv.key.as_str()));
            }
        }
    }
}

/// Encodes `TracesData` in `encoding`.
pub fn encode(data: &TracesData, encoding: Encoding) -> Vec<u8> {
    encoding.encode_data(data)
}

/// What the generator knows about a trace it made: the ground truth tests
/// compare tailgate's output with.
#[derive(Debug, Clone)]
pub struct Truth {
    pub trace_id: TraceId,
    pub spans: usize,
    pub error: bool,
    /// True when the third-party call was slow (≥ 1.5 s).
    pub slow: bool,
    pub health_check: bool,
    pub duration_ns: u64,
}

/// One generated trace: its messages (one per resource) and its truth.
#[derive(Debug, Clone)]
pub struct GeneratedTrace {
    pub truth: Truth,
    pub messages: Vec<TracesData>,
}

/// Knobs of the shop workload.
#[derive(Debug, Clone)]
pub struct ShopWorkload {
    /// Fraction of traces with an error.
    pub error_rate: f64,
    /// Fraction of traces with a slow third-party call.
    pub slow_rate: f64,
    /// Fraction of traces that are single-span health checks.
    pub health_rate: f64,
    /// The lean, Collector-like shape (see [`ShopWorkload::lean`]) instead of
    /// the default one.
    pub lean: bool,
    rng: SmallRng,
}

impl ShopWorkload {
    pub fn new(seed: u64) -> Self {
        Self {
            error_rate: 0.03,
            slow_rate: 0.05,
            health_rate: 0.0,
            lean: false,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The same shop — the same traces, timings, errors and truth — in a
    /// leaner encoding of about 162 message bytes per span (114 of them the
    /// span itself) instead of the default shape's 294 (157): each message's
    /// resource carries only `service.name`, its scope only a name, neither
    /// has a schema URL, and spans leave out the attributes their name
    /// already says (`http.request.method`, `messaging.system`,
    /// `messaging.destination.name`). The end-to-end benchmark
    /// (`benches/e2e/`) uses it for the Collector-like workload of
    /// about 165 bytes per span; tests and the demo use the default shape.
    pub fn lean(seed: u64) -> Self {
        Self {
            lean: true,
            ..Self::new(seed)
        }
    }

    fn ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.rng.random_range(lo..=hi)
    }

    /// Generates the next trace, starting at `start_unix_ns`.
    pub fn next_trace(&mut self, start_unix_ns: u64) -> GeneratedTrace {
        let mut id = [0u8; 16];
        self.rng.fill(&mut id);
        id[0] |= 1; // never all zero
        let trace_id = TraceId(id);
        let health = self.rng.random_bool(self.health_rate);
        let error = !health && self.rng.random_bool(self.error_rate);
        let slow = !health && self.rng.random_bool(self.slow_rate);
        let specs = if health {
            let mut root = SpanSpec::new("gateway", "GET /healthz", None, 0, 1);
            root.attributes = vec![
                attr("http.request.method", "GET"),
                attr("http.route", "/healthz"),
            ];
            vec![root]
        } else {
            self.shop_spans(error, slow)
        };
        let mut span_ids = vec![[0u8; 8]; specs.len()];
        for s in &mut span_ids {
            self.rng.fill(s);
            s[0] |= 1;
        }
        let end = specs
            .iter()
            .map(|s| s.start + s.duration)
            .max()
            .unwrap_or(0);
        let mut messages = build_trace(trace_id, &span_ids, start_unix_ns, &specs);
        if self.lean {
            messages.iter_mut().for_each(make_lean);
        }
        GeneratedTrace {
            truth: Truth {
                trace_id,
                spans: specs.len(),
                error,
                slow,
                health_check: health,
                duration_ns: end,
            },
            messages,
        }
    }

    fn shop_spans(&mut self, error: bool, slow: bool) -> Vec<SpanSpec> {
        let route = ["/checkout", "/profile", "/cart"][self.rng.random_range(0..3)];
        let third = if slow {
            self.ms(1_500, 3_000)
        } else {
            self.ms(5, 60)
        };
        let fraud = third + self.ms(2, 10);
        let profile = fraud + self.ms(5, 20);
        let root = profile + self.ms(8, 20);
        let http = |method: &str, route: &str, code: i64| {
            vec![
                attr("http.request.method", method),
                attr("http.route", route),
                int_attr("http.response.status_code", code),
            ]
        };
        let code = if error { 503 } else { 200 };
        let mut s = vec![
            SpanSpec::new("gateway", &format!("POST {route}"), None, 0, root),
            SpanSpec::new("profile-service", "GET /profile/{id}", Some(0), 2, profile),
            SpanSpec::new("fraud-detection", "POST /score", Some(1), 4, fraud),
            SpanSpec::new(
                "fraud-detection",
                "POST api.riskscore.example/v2/score",
                Some(2),
                5,
                third,
            ),
            SpanSpec::new("gateway", "orders publish", Some(0), root - 4, 2),
            SpanSpec::new(
                "search-indexer",
                "orders process",
                Some(4),
                root + self.ms(5, 40),
                self.ms(3, 30),
            ),
            SpanSpec::new(
                "notifier",
                "orders process",
                Some(4),
                root + self.ms(5, 60),
                self.ms(2, 20),
            ),
        ];
        s[0].attributes = http("POST", route, code);
        s[1].kind = span::SpanKind::Server;
        s[1].attributes = http("GET", "/profile/{id}", code);
        s[2].kind = span::SpanKind::Server;
        s[2].attributes = http("POST", "/score", code);
        s[3].kind = span::SpanKind::Client;
        s[3].attributes = vec![
            attr("server.address", "api.riskscore.example"),
            int_attr("http.response.status_code", code),
        ];
        s[4].kind = span::SpanKind::Producer;
        s[4].attributes = vec![
            attr("messaging.system", "kafka"),
            attr("messaging.destination.name", "orders"),
        ];
        for c in [5, 6] {
            s[c].kind = span::SpanKind::Consumer;
            s[c].attributes = vec![
                attr("messaging.system", "kafka"),
                attr("messaging.destination.name", "orders"),
            ];
        }
        if error {
            // The third-party API failed, and fraud-detection with it.
            s[3].error = true;
            s[2].error = true;
        }
        s
    }
}

#[cfg(test)]
mod tests;
