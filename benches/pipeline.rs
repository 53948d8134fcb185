//! Micro-benchmarks of the pure pipeline: decode → buffer → decide, per span.
//!
//! The workload is the shop of `tailgate::workload`: 7 spans per trace over 5
//! resources, one message per resource and trace (the Collector's exporter
//! with `partition_traces_by_id`), about 295 message bytes per span (the
//! end-to-end harness, benches/e2e/, uses the lean shape of about 165).
//! Run with `cargo bench --bench pipeline`; see docs/benchmarks.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tailgate::buffer::{BufferConfig, TraceBuffer};
use tailgate::otlp::annotate::{append_to_spans, edit_spans, Edit};
use tailgate::otlp::counting::Counted;
use tailgate::otlp::{self, Encoding, SpanRecord, TraceId};
use tailgate::rules::{CriticalPath, PathSummary, RuleSet, RuleSpec, TraceSummary};
use tailgate::workload::{encode, ShopWorkload};

const TRACES: usize = 2_000;

const RULES: &str = "[{name: errors, when: {trace: {error: true}}, sample: keep}, \
                     {name: slow-checkout, when: {root: {service: gateway, name: POST /checkout}, trace: {duration: {gt: 1s}}}, sample: keep}, \
                     {name: slow, when: {trace: {duration: {gt: 2s}}}, sample: keep}, \
                     {name: baseline, sample: {rate: 0.1}}]";

fn messages() -> (Vec<Bytes>, u64) {
    let mut w = ShopWorkload::new(1);
    let mut out = Vec::new();
    let mut spans = 0;
    for i in 0..TRACES {
        let t = w.next_trace(1_760_000_000_000_000_000 + i as u64 * 1_000_000);
        spans += t.truth.spans as u64;
        out.extend(
            t.messages
                .iter()
                .map(|m| Bytes::from(encode(m, Encoding::OtlpProto))),
        );
    }
    (out, spans)
}

fn rules() -> RuleSet {
    let specs: Vec<RuleSpec> = serde_yaml::from_str(RULES).expect("rules");
    RuleSet::compile(&specs).expect("compile")
}

fn config() -> BufferConfig {
    BufferConfig {
        wait: Duration::from_secs(30),
        after_root: Duration::from_secs(5),
        max_trace_age: Duration::from_secs(300),
        max_bytes: 1 << 32,
    }
}

fn decoded(messages: &[Bytes]) -> Vec<Vec<(TraceId, SpanRecord)>> {
    messages
        .iter()
        .map(|m| otlp::decode(m.clone()).expect("decodes").spans)
        .collect()
}

fn bench(c: &mut Criterion) {
    let (messages, spans) = messages();
    let rules = rules();
    let bytes: usize = messages.iter().map(Bytes::len).sum();
    eprintln!(
        "workload: {TRACES} traces, {spans} spans, {} messages, {:.0} bytes per span",
        messages.len(),
        bytes as f64 / spans as f64
    );

    let mut g = c.benchmark_group("per_span");
    g.throughput(Throughput::Elements(spans));

    // Baseline: what a conventional decoder does, every message fully decoded
    // into the generated opentelemetry-proto types.
    g.bench_function("baseline_prost_decode", |b| {
        b.iter(|| {
            for m in &messages {
                black_box(
                    <opentelemetry_proto::tonic::trace::v1::TracesData as prost::Message>::decode(
                        m.clone(),
                    )
                    .expect("decodes"),
                );
            }
        })
    });

    g.bench_function("decode", |b| {
        b.iter(|| {
            for m in &messages {
                black_box(otlp::decode(m.clone()).expect("decodes"));
            }
        })
    });

    g.bench_function("buffer_insert_and_pop", |b| {
        b.iter_batched(
            || decoded(&messages),
            |batches| {
                let now = Instant::now();
                let mut buf = TraceBuffer::new(config());
                for (offset, spans) in batches.into_iter().enumerate() {
                    for (id, group) in otlp::by_trace(spans) {
                        buf.insert(id, group, offset as i64, Encoding::OtlpProto, now);
                    }
                }
                let mut ready = Vec::new();
                buf.pop_due(now + Duration::from_secs(60), &mut ready);
                black_box(ready)
            },
            BatchSize::LargeInput,
        )
    });

    let traces: Vec<(TraceId, Vec<SpanRecord>)> = {
        let now = Instant::now();
        let mut buf = TraceBuffer::new(config());
        for (offset, spans) in decoded(&messages).into_iter().enumerate() {
            for (id, group) in otlp::by_trace(spans) {
                buf.insert(id, group, offset as i64, Encoding::OtlpProto, now);
            }
        }
        let mut ready = Vec::new();
        buf.pop_due(now + Duration::from_secs(60), &mut ready);
        ready.into_iter().map(|t| (t.trace_id, t.spans)).collect()
    };
    g.bench_function("decide", |b| {
        b.iter(|| {
            for (id, spans) in &traces {
                black_box(rules.decide(&TraceSummary::of(*id, spans), Duration::ZERO));
            }
        })
    });

    // The shipped production policy: attribute lookups in the encoded bytes,
    // a critical path for every trace that gets that far, a dynamic sampler.
    let production = {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/policies/production.yaml"
        ))
        .expect("policies/production.yaml");
        #[derive(serde::Deserialize)]
        struct File {
            rules: Vec<RuleSpec>,
        }
        let file: File = serde_yaml::from_str(
            &text
                .lines()
                .skip_while(|l| !l.starts_with("rules:"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .expect("production rules");
        RuleSet::compile(&file.rules).expect("production rules compile")
    };
    g.bench_function("decide_production_policy", |b| {
        b.iter(|| {
            for (id, spans) in &traces {
                black_box(production.decide(&TraceSummary::of(*id, spans), Duration::ZERO));
            }
        })
    });
    g.bench_function("critical_path", |b| {
        b.iter(|| {
            for (_, spans) in &traces {
                black_box(CriticalPath::of(spans));
            }
        })
    });

    // What the critical path adds to deciding, per trace: the path and its
    // summary for every trace (the latency attribution's input; recording
    // into the metrics is left out, no recorder is installed), written onto
    // the kept ones as `run` does (attributes encoded, the path spans'
    // bytes copied with them appended). Against `decide`.
    g.bench_function("decide_with_critical_path", |b| {
        b.iter_batched(
            || traces.clone(),
            |mut traces| {
                let mut written = 0usize;
                for (id, spans) in &mut traces {
                    let summary = TraceSummary::of(*id, spans);
                    let d = rules.decide(&summary, Duration::ZERO);
                    let path = PathSummary::of(summary.critical_path(), spans);
                    drop(summary);
                    if let Some(path) = path.filter(|_| d.keep) {
                        let attributes = path.attributes(spans);
                        append_to_spans(spans, &attributes);
                        written += attributes.len();
                    }
                }
                black_box(written)
            },
            BatchSize::LargeInput,
        )
    });

    // What counting adds for the kept traces: each kept span's tracestate
    // read, its outgoing threshold and adjusted count worked out, the spans
    // whose tracestate changes copied with it replaced (every span of a
    // trace kept by `rate`). Without a tracestate (as `decide`'s input), and
    // with every span head sampled and saying so (`ot=th:0`, another
    // vendor's member beside it). Against `decide`.
    let stated = {
        let mut traces = traces.clone();
        for (_, spans) in &mut traces {
            let edits: Vec<(usize, Edit<'_>)> = (0..spans.len())
                .map(|i| {
                    let edit = Edit {
                        trace_state: Some("ot=th:0,vendor=x"),
                        attributes: &[],
                    };
                    (i, edit)
                })
                .collect();
            edit_spans(spans, &edits);
        }
        traces
    };
    for (name, input) in [
        ("decide_and_count", &traces),
        ("decide_and_count_head_sampled", &stated),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || input.clone(),
                |mut traces| {
                    let mut kept = 0usize;
                    for (id, spans) in &mut traces {
                        let summary = TraceSummary::of(*id, spans);
                        let d = rules.decide(&summary, Duration::ZERO);
                        let sampling = summary.sampling;
                        drop(summary);
                        if d.keep {
                            let c = Counted::of(spans, id, &sampling, d.stage, "r", None);
                            c.apply(spans, &[]);
                            kept += 1;
                            black_box(&c);
                        }
                    }
                    black_box(kept)
                },
                BatchSize::LargeInput,
            )
        });
    }

    g.bench_function("decode_buffer_decide", |b| {
        b.iter(|| {
            let now = Instant::now();
            let mut buf = TraceBuffer::new(config());
            for (offset, m) in messages.iter().enumerate() {
                let d = otlp::decode(m.clone()).expect("decodes");
                for (id, group) in otlp::by_trace(d.spans) {
                    buf.insert(id, group, offset as i64, d.encoding, now);
                }
            }
            let mut ready = Vec::new();
            buf.pop_due(now + Duration::from_secs(60), &mut ready);
            let mut kept = 0usize;
            for t in &ready {
                kept += usize::from(
                    rules
                        .decide(&TraceSummary::of(t.trace_id, &t.spans), Duration::ZERO)
                        .keep,
                );
            }
            black_box(kept)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
