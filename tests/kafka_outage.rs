//! A broker outage: the broker stops for 30 s mid-stream and comes back on the
//! same address with its data. tailgate keeps running, reports the outage,
//! resumes, and loses no kept trace.
//!
//! This test runs its own broker (a separate `KAFKA_STATE_DIR`), so pausing it
//! does not disturb the tests that share the broker `scripts/test` started.
#![cfg(feature = "kafka-tests")]

use std::time::Duration;

use tailgate::otlp::Encoding;
use tailgate_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirty_second_broker_outage_loses_nothing() {
    let broker = Broker::start();
    // The test kit's helpers read the broker address from here; this test
    // binary holds only this test, so pointing it at the private broker is safe.
    std::env::set_var("TAILGATE_TEST_BOOTSTRAP", &broker.address);
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 2).await;
    create_topic(&output, 1).await;
    let w = Workload::shop(5, 1_600);
    let expected = w.expected_kept(RULES);
    let (first, second) = w.traces.split_at(800);
    produce_traces(&input, first, |_| Encoding::OtlpProto).await;

    let dir = policy_dir(&settings(&group, &input, &output, RULES, "3s", None));
    let mut tailgate = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "tailgate.log");
    tailgate.wait_ready(Duration::from_secs(30));
    let mut reader = OutputReader::new(&output);
    assert!(
        reader.until(Duration::from_secs(60), |o| o.spans.len() >= 20),
        "no output:\n{}",
        tailgate.log_text()
    );
    drop(reader); // its connections would only add noise during the outage

    // The outage: whatever is still buffered or in flight is decided, produced
    // and committed only once the broker is back.
    broker.run("pause");
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            tailgate.exited().is_none(),
            "tailgate exited during the outage:\n{}",
            tailgate.log_text()
        );
    }
    assert_eq!(
        tailgate.http_get("/healthz").map(|r| r.0),
        Some(200),
        "alive during the outage"
    );
    let metrics = tailgate.metrics().expect("metrics");
    let reported = metrics.sum("tailgate_kafka_errors_total", &[]);
    assert!(reported >= 1.0, "the outage is not reported:\n{metrics}");
    assert_eq!(
        broker.run("resume"),
        broker.address,
        "same address after the outage"
    );

    // Traffic resumes; everything the rules keep arrives.
    produce_traces(&input, second, |_| Encoding::OtlpProto).await;
    let mut reader = OutputReader::new(&output);
    let complete = reader.until(Duration::from_secs(120), |o| {
        missing(&expected, o).is_empty()
    });
    reader.poll(Duration::from_secs(2));
    assert!(
        complete,
        "{} of {} kept traces missing after the outage:\n{}",
        missing(&expected, &reader.output).len(),
        expected.len(),
        tailgate.log_text()
    );
    assert!(tailgate.exited().is_none(), "tailgate kept running");
    eprintln!(
        "outage of 30 s: {} kept traces complete, {} duplicate spans, {} kafka errors reported",
        expected.len(),
        reader.output.duplicate_spans,
        reported
    );
    let status = tailgate.terminate(Duration::from_secs(40));
    assert!(status.success(), "exit {status}:\n{}", tailgate.log_text());
    readable_log(&tailgate.log_text(), reported);
}

/// The outage is one line per kind of error and client every
/// 10 s at most — not librdkafka's log, rdkafka's, the consumer's and the
/// app's line for each of hundreds of reconnects.
fn readable_log(log: &str, reported: f64) {
    let seconds = |line: &str| -> Option<f64> {
        // 2026-12-02T02:39:37.976577Z
        let t = line.split_whitespace().next()?.split('T').nth(1)?;
        let t = t.trim_end_matches('Z');
        let mut parts = t.split(':');
        let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
        Some(
            h.parse::<f64>().ok()? * 3600.0
                + m.parse::<f64>().ok()? * 60.0
                + s.parse::<f64>().ok()?,
        )
    };
    let field = |line: &str, name: &str| -> String {
        line.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string()
    };
    let mut last: std::collections::HashMap<(String, String), f64> = Default::default();
    let mut lines = 0;
    for line in log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
    {
        assert!(
            !line.contains("librdkafka") && !line.contains("consumer error"),
            "a second line for one event: {line}"
        );
        if !line.contains("kafka: ") {
            continue;
        }
        lines += 1;
        let key = (field(line, "client"), field(line, "kind"));
        let Some(at) = seconds(line) else { continue };
        if let Some(before) = last.insert(key.clone(), at) {
            let gap = at - before;
            assert!(
                !(0.0..9.9).contains(&gap),
                "{key:?} logged twice within {gap:.1} s:\n{log}"
            );
        }
    }
    eprintln!("outage: {reported} kafka errors counted, {lines} lines logged");
    assert!(lines >= 1, "the outage is not logged:\n{log}");
}
