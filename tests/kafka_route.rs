//! `tailgate route` on a real broker: a Collector-shaped unkeyed topic
//! (messages that batch several traces' resources, the messages of one trace
//! spread over batches, each batch on a random partition, no key) keyed by
//! route into the spans topic, then decided whole by `tailgate run`. And
//! route killed with SIGKILL mid-stream loses nothing.
#![cfg(feature = "kafka-tests")]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::TracesData;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rdkafka::producer::FutureRecord;
use tailgate::otlp::{Encoding, TraceId};
use tailgate::workload::{encode, GeneratedTrace};
use tailgate_testkit::*;

/// The unkeyed batches an exporter without `partition_traces_by_id` writes:
/// the messages of all traces, shuffled within windows of 40 (so a trace's
/// messages are spread over neighbouring batches, as a batch processor
/// cuts them by time), packed 12 to a batch; every third batch in JSON.
fn collector_batches(traces: &[GeneratedTrace], seed: u64) -> Vec<Vec<u8>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut messages: Vec<&TracesData> = traces.iter().flat_map(|t| &t.messages).collect();
    for window in messages.chunks_mut(40) {
        window.shuffle(&mut rng);
    }
    messages
        .chunks(12)
        .enumerate()
        .map(|(i, chunk)| {
            let mut batch = TracesData::default();
            for m in chunk {
                batch.resource_spans.extend(m.resource_spans.clone());
            }
            let encoding = if i % 3 == 0 {
                Encoding::OtlpJson
            } else {
                Encoding::OtlpProto
            };
            encode(&batch, encoding)
        })
        .collect()
}

/// Produces `batches` without a key, each to a random partition of `topic`.
async fn produce_unkeyed(topic: &str, partitions: i32, batches: &[Vec<u8>], seed: u64) {
    let p = producer();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut pending = Vec::new();
    for b in batches {
        let (p, topic, payload, partition) = (
            p.clone(),
            topic.to_string(),
            b.clone(),
            rng.random_range(0..partitions),
        );
        pending.push(tokio::spawn(async move {
            p.send(
                FutureRecord::<(), [u8]>::to(&topic)
                    .payload(payload.as_slice())
                    .partition(partition),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
        }));
    }
    for h in pending {
        h.await.expect("join").expect("produced");
    }
}

/// Topics and settings of one route + run deployment.
struct Deployment {
    unkeyed: String,
    spans: String,
    output: String,
    run_group: String,
    route_group: String,
    dir: tempfile::TempDir,
}

async fn deployment() -> Deployment {
    let (unkeyed, spans, output) = (unique("unkeyed"), unique("spans"), unique("out"));
    create_topic(&unkeyed, 3).await;
    create_topic(&spans, 4).await;
    create_topic(&output, 1).await;
    let (run_group, route_group) = (unique("tailgate"), unique("route"));
    // The spans of a trace reach the spans topic from several input
    // partitions, through route's reading and producing: run's waits must
    // cover that (and, in the kill test, route's restart with the group's
    // session timeout), as docs/operations.md says.
    let yaml = format!(
        "{}route:\n  from_topic: {unkeyed}\n  group_id: {route_group}\n",
        settings(&run_group, &spans, &output, RULES, "20s", None)
            .replace("after_root: 1s", "after_root: 15s")
            .replace("max_trace_age: 30s", "max_trace_age: 60s")
    );
    Deployment {
        dir: policy_dir(&yaml),
        unkeyed,
        spans,
        output,
        run_group,
        route_group,
    }
}

/// Exactly the traces the rules keep, each complete.
fn assert_exact(expected: &HashMap<TraceId, usize>, out: &Output, log: impl Fn() -> String) {
    let got: HashSet<_> = out.spans.keys().copied().collect();
    let want: HashSet<_> = expected.keys().copied().collect();
    assert_eq!(
        got.difference(&want).count() + want.difference(&got).count(),
        0,
        "{} traces kept that the rules drop, {} missing:\n{}",
        got.difference(&want).count(),
        want.difference(&got).count(),
        log()
    );
    for (id, n) in expected {
        assert_eq!(out.spans[id].len(), *n, "trace {id} incomplete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_makes_unkeyed_collector_batches_whole_traces_for_run() {
    let d = deployment().await;
    let w = Workload::shop(41, 1_200);
    let expected = w.expected_kept(RULES);
    let batches = collector_batches(&w.traces, 41);
    produce_unkeyed(&d.unkeyed, 3, &batches, 41).await;

    let mut route = Tailgate::start_route(tailgate_bin!(), d.dir.path(), free_port(), "route.log");
    let mut run = Tailgate::start(tailgate_bin!(), d.dir.path(), free_port(), "run.log");
    route.wait_ready(Duration::from_secs(30));
    run.wait_ready(Duration::from_secs(30));

    let mut reader = OutputReader::new(&d.output);
    let complete = reader.until(Duration::from_secs(120), |o| {
        missing(&expected, o).is_empty()
    });
    reader.poll(Duration::from_secs(3));
    assert!(
        complete,
        "{} of {} kept traces missing:\nroute:\n{}\nrun:\n{}",
        missing(&expected, &reader.output).len(),
        expected.len(),
        route.log_text(),
        run.log_text()
    );
    assert_exact(&expected, &reader.output, || run.log_text());
    assert_eq!(reader.output.duplicate_spans, 0);
    assert_eq!(reader.output.bad_keys, 0);

    // Route saw every batch unkeyed; what it wrote, run found keyed.
    let routed = route.metrics().expect("route metrics");
    assert_eq!(
        routed.sum(
            "tailgate_route_unkeyed_messages_total",
            &[("why", "no_key")]
        ) as usize,
        batches.len()
    );
    let spans: usize = expected.values().sum::<usize>();
    assert!(routed.sum("tailgate_spans_produced_total", &[]) as usize >= spans);
    let ran = run.metrics().expect("run metrics");
    assert_eq!(
        ran.sum("tailgate_unkeyed_messages_total", &[]),
        0.0,
        "run read only keyed input"
    );
    let decided = ran.sum("tailgate_traces_decided_total", &[]) as usize;
    assert_eq!(decided, w.traces.len(), "every trace decided once, whole");

    let status = route.terminate(Duration::from_secs(40));
    assert!(
        status.success(),
        "route exit {status}:\n{}",
        route.log_text()
    );
    for (p, (committed, end)) in committed_and_end(&d.route_group, &d.unkeyed, 3)
        .into_iter()
        .enumerate()
    {
        assert_eq!(committed, end, "route's partition {p}");
    }
    let status = run.terminate(Duration::from_secs(40));
    assert!(status.success(), "run exit {status}");
    let _ = (&d.spans, &d.run_group);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_killed_mid_stream_loses_nothing() {
    let d = deployment().await;
    let w = Workload::shop(42, 2_400);
    let expected = w.expected_kept(RULES);
    let batches = collector_batches(&w.traces, 42);
    let (first, second) = batches.split_at(batches.len() / 3);
    produce_unkeyed(&d.unkeyed, 3, first, 1).await;

    let mut run = Tailgate::start(tailgate_bin!(), d.dir.path(), free_port(), "run.log");
    let mut route =
        Tailgate::start_route(tailgate_bin!(), d.dir.path(), free_port(), "route-1.log");
    route.wait_ready(Duration::from_secs(30));
    // The rest trickles in over about four seconds; route is killed while
    // part of it is routed and part not yet read.
    let (topic, rest) = (d.unkeyed.clone(), second.to_vec());
    let trickle = tokio::spawn(async move {
        for (i, chunk) in rest.chunks(rest.len().div_ceil(10)).enumerate() {
            produce_unkeyed(&topic, 3, chunk, 100 + i as u64).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });
    // Wait until route has read some of the trickle, then kill it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let read = route
            .metrics()
            .map_or(0.0, |m| m.sum("tailgate_messages_received_total", &[]));
        if read as usize > first.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "route read none of the trickle:\n{}",
            route.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    route.kill9();
    let at_kill = committed_and_end(&d.route_group, &d.unkeyed, 3);
    trickle.await.expect("producer task");
    let ends_at_kill: i64 = at_kill.iter().map(|(_, e)| e).sum();
    let ends: i64 = committed_and_end(&d.route_group, &d.unkeyed, 3)
        .iter()
        .map(|(_, e)| e)
        .sum();
    assert!(
        ends > ends_at_kill,
        "the trickle had ended before the kill; the test proves nothing: {at_kill:?}"
    );
    let restarted =
        Tailgate::start_route(tailgate_bin!(), d.dir.path(), free_port(), "route-2.log");

    let mut reader = OutputReader::new(&d.output);
    let complete = reader.until(Duration::from_secs(150), |o| {
        missing(&expected, o).is_empty()
    });
    reader.poll(Duration::from_secs(3));
    assert!(
        complete,
        "{} of {} kept traces missing after route's restart:\nroute:\n{}\nrun:\n{}",
        missing(&expected, &reader.output).len(),
        expected.len(),
        restarted.log_text(),
        run.log_text()
    );
    // Complete, and nothing the rules drop: a trace whose spans were
    // re-produced after the kill may leave twice (duplicates are allowed
    // and counted), never in part.
    assert_exact(&expected, &reader.output, || run.log_text());
    eprintln!(
        "route killed at (committed, end) {at_kill:?}; after restart: {} kept traces complete, {} duplicate spans",
        expected.len(),
        reader.output.duplicate_spans
    );
    drop(restarted);
    let status = run.terminate(Duration::from_secs(40));
    assert!(status.success(), "run exit {status}");
}
