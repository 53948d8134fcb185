//! Every compression codec the Collector's Kafka exporter offers (`none`,
//! `gzip`, `snappy`, `lz4`, `zstd`), read and written on a real broker.
//! librdkafka decompresses input by the codec each batch names, and fails
//! only when it was built without that codec: then the partition stalls
//! with nothing but a warning, as zstd did before tailgate built it in.
#![cfg(feature = "kafka-tests")]

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tailgate::otlp::Encoding;
use tailgate::workload::encode;
use tailgate_testkit::*;

/// What the exporter's `compression` setting offers; the names are Kafka's
/// (librdkafka's `compression.type`, the broker's log dump).
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// A producer that compresses every batch with `codec`, lingering so that
/// batches hold many messages (and compress: librdkafka sends a batch
/// uncompressed when compressing would not shrink it).
fn producer_with(codec: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("compression.type", codec)
        .set("linger.ms", "50")
        .create()
        .expect("producer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_the_exporter_offers_is_read_and_written() {
    let input = unique("in");
    create_topic(&input, 2).await;
    // One input topic holding batches of every codec, each fifth of the
    // traces written by a producer of its own; every third trace in JSON.
    let w = Workload::shop(21, 500);
    let expected = w.expected_kept(RULES);
    for (codec, traces) in CODECS.iter().zip(w.traces.chunks(100)) {
        let p = producer_with(codec);
        let mut pending = Vec::new();
        for (i, t) in traces.iter().enumerate() {
            let key = t.truth.trace_id.to_hex();
            let encoding = if i % 3 == 0 {
                Encoding::OtlpJson
            } else {
                Encoding::OtlpProto
            };
            for m in &t.messages {
                let (p, key, topic, payload) =
                    (p.clone(), key.clone(), input.clone(), encode(m, encoding));
                pending.push(tokio::spawn(async move {
                    p.send(
                        FutureRecord::to(&topic).key(&key).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                }));
            }
        }
        for h in pending {
            h.await.expect("join").expect("produced");
        }
    }
    let stored = batch_codecs(&input);
    for codec in CODECS {
        assert!(
            stored.get(codec).is_some_and(|n| *n > 0),
            "the input holds no {codec} batch, so the test proves nothing for it: {stored:?}"
        );
    }

    // `tailgate check --sample` sees the same: every codec, every message
    // keyed by its trace, both encodings.
    let check = std::process::Command::new(tailgate_bin!())
        .args([
            "check",
            "--sample",
            "100000",
            "--brokers",
            &bootstrap(),
            "--topic",
            &input,
        ])
        .args(["--policies", "/nonexistent"])
        .output()
        .expect("run tailgate check --sample");
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "check --sample: {report}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let line = |name: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line in:\n{report}"))
            .to_string()
    };
    for codec in CODECS {
        assert!(
            line("compression").contains(&format!("{codec} ")),
            "{codec}:\n{report}"
        );
    }
    let messages: usize = w.traces.iter().map(|t| t.messages.len()).sum();
    assert!(
        line("keying").contains(&format!("keyed {messages}")),
        "{report}"
    );
    assert!(
        line("encoding").contains("otlp_json") && line("encoding").contains("otlp_proto"),
        "{report}"
    );
    assert!(line("traces/msg").contains("max 1"), "{report}");
    assert!(report.contains("verdict: keyed by trace id"), "{report}");

    // One tailgate per output codec, all reading the same input at once.
    let mut runs = Vec::new();
    for codec in CODECS {
        let (output, group) = (unique(&format!("out-{codec}")), unique("tailgate"));
        create_topic(&output, 1).await;
        let yaml = settings(&group, &input, &output, RULES, "2s", None).replacen(
            "kafka:\n",
            &format!("kafka:\n  compression: {codec}\n"),
            1,
        );
        let dir = policy_dir(&yaml);
        let tailgate = Tailgate::start(
            tailgate_bin!(),
            dir.path(),
            free_port(),
            &format!("{codec}.log"),
        );
        runs.push((codec, output, group, dir, tailgate));
    }

    for (codec, output, _group, _dir, tailgate) in &mut runs {
        let mut reader = OutputReader::new(output);
        let complete = reader.until(Duration::from_secs(90), |o| {
            missing(&expected, o).is_empty()
        });
        reader.poll(Duration::from_secs(2));
        let out = &reader.output;
        assert!(
            complete,
            "output compressed with {codec}: {} of {} kept traces missing:\n{}",
            missing(&expected, out).len(),
            expected.len(),
            tailgate.log_text()
        );
        let got: HashSet<_> = out.spans.keys().copied().collect();
        let want: HashSet<_> = expected.keys().copied().collect();
        assert_eq!(got, want, "output compressed with {codec}");
        for (id, n) in &expected {
            assert_eq!(out.spans[id].len(), *n, "trace {id} incomplete ({codec})");
        }
        // The output's batches are written with the codec asked for (or,
        // where compressing would not shrink a batch, uncompressed).
        let written = batch_codecs(output);
        let kinds: BTreeSet<&str> = written.keys().map(String::as_str).collect();
        assert!(
            written.get(*codec).is_some_and(|n| *n > 0)
                && kinds.iter().all(|k| k == codec || *k == "none"),
            "output asked to be {codec}: batches {written:?}"
        );
        let metrics = tailgate.metrics().expect("metrics");
        assert_eq!(
            metrics.sum("tailgate_decode_errors_total", &[]),
            0.0,
            "{codec}"
        );
    }
    // A clean exit with every input offset committed: no batch of any
    // codec stalled its partition.
    for (codec, _, group, _dir, mut tailgate) in runs {
        let status = tailgate.terminate(Duration::from_secs(40));
        assert!(status.success(), "{codec}: exit {status}");
        for (p, (committed, end)) in committed_and_end(&group, &input, 2).into_iter().enumerate() {
            assert_eq!(committed, end, "{codec}: partition {p}");
        }
    }
}
