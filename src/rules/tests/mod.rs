//! The rule language end to end: rule files read and compiled, traces
//! decided. Shared here: compiling rules from YAML, and the checkout trace
//! (with a critical path) most tests decide.

mod conditions;
mod critical_path;
mod deciding;
mod parsing;
mod path_summary;
mod samplers;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use super::*;
use crate::otlp::counting::Counted;
use crate::otlp::test_spans;
use crate::workload::{attr, int_attr, SpanSpec};

fn rules(yaml: &str) -> RuleSet {
    let specs: Vec<RuleSpec> = serde_yaml::from_str(yaml).expect("valid yaml");
    RuleSet::compile(&specs).expect("valid rules")
}

/// A checkout trace (times in ms):
///
/// ```text
/// gateway  POST /checkout  0 ─────────────────────────── 1000   (server)
///   checkout  place-order     10 ──────────────────── 900
///     fraud-detection POST /score  100 ──────── 800   (error if `error`)
///   inventory  reserve        20 ──── 300                     (parallel)
/// ```
fn checkout_trace(error: bool) -> Vec<SpanRecord> {
    let mut root = SpanSpec::new("gateway", "POST /checkout", None, 0, 1000);
    root.attributes = vec![
        attr("http.route", "/checkout"),
        int_attr("http.response.status_code", if error { 500 } else { 200 }),
    ];
    let mut checkout = SpanSpec::new("checkout", "place-order", Some(0), 10, 890);
    checkout.kind = SpanKind::Server;
    let mut fraud = SpanSpec::new("fraud-detection", "POST /score", Some(1), 100, 700);
    fraud.kind = SpanKind::Client;
    fraud.error = error;
    fraud.attributes = vec![attr("peer.service", "riskscore")];
    let inventory = SpanSpec::new("inventory", "reserve", Some(0), 20, 280);
    test_spans(TraceId([7; 16]), &[root, checkout, fraud, inventory])
}

/// A message consumed after the request that produced it returned, in the
/// same trace (times in ms):
///
/// ```text
/// gateway  POST /order      0 ── 100
///   gateway  orders publish   50 ─ 60           (producer)
///     indexer  orders process     200 ─────── 900   (consumer)
/// ```
fn kafka_hop_trace() -> Vec<SpanRecord> {
    let root = SpanSpec::new("gateway", "POST /order", None, 0, 100);
    let mut publish = SpanSpec::new("gateway", "orders publish", Some(0), 50, 10);
    publish.kind = SpanKind::Producer;
    let mut process = SpanSpec::new("indexer", "orders process", Some(1), 200, 700);
    process.kind = SpanKind::Consumer;
    test_spans(TraceId([9; 16]), &[root, publish, process])
}
