//! A broker that hangs (SIGSTOP: connections stay open,
//! every request waits) must not stall tailgate's runtime. The exactly-once
//! commit, the final commit, the producer flush and closing the consumer are
//! blocking librdkafka calls; run on a runtime thread they would hold it for
//! as long as the broker hangs. With one runtime thread
//! (`TOKIO_WORKER_THREADS=1`) that would freeze everything else the process
//! does — here, the metrics endpoint and the SIGTERM handler.
//!
//! Runs its own broker (a separate `KAFKA_STATE_DIR`), so freezing it does
//! not disturb the tests sharing the broker `scripts/test` started.
//!
//! That broker is its own KRaft controller, so a freeze stops the broker's
//! heartbeats and the controller's clock together: thawed after more than
//! `broker.session.timeout.ms` (9 s by default; this test's freeze is 8 s
//! and then up to 5 s more waiting for the SIGTERM to be seen), the
//! controller fences its own broker, which leaves the cluster's metadata
//! with every coordinator it held. librdkafka's
//! `send_offsets_to_transaction` then waits without end (librdkafka #5456):
//! one run in three hung here so. A cluster's broker does not fence itself
//! for a pause of its own; the lease here outlasts the freeze, so this test
//! checks what it names. The commit that never returns has a test of its
//! own (`tests/shutdown_bounded.rs`).
#![cfg(feature = "kafka-tests")]

use std::time::{Duration, Instant};

use tailgate::otlp::Encoding;
use tailgate_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_broker_never_stalls_the_runtime_in_exactly_once_mode() {
    let broker = Broker::start_with(&["broker.session.timeout.ms=120000"]);
    // The test kit's helpers read the broker address from here; this test
    // binary holds only this test, so pointing it at the private broker is safe.
    std::env::set_var("TAILGATE_TEST_BOOTSTRAP", &broker.address);
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 2).await;
    create_topic(&output, 1).await;
    // A first half read and committed before the freeze; the second half
    // read just before it, and decided (its `decision.wait` and
    // `after_root` are 3 s) while the broker hangs: those decisions go into
    // the open transaction, so the commit after them waits on the broker.
    let w = Workload::shop(17, 2_000);
    let expected = w.expected_kept(RULES);
    let (first, second) = w.traces.split_at(1_000);
    produce_traces(&input, first, |_| Encoding::OtlpProto).await;

    // A session long enough that the freeze does not expire it once the
    // broker's clock moves on: this test is about the runtime, not a rebalance.
    let config = settings(&group, &input, &output, RULES, "3s", None)
        .replace("after_root: 1s", "after_root: 3s")
        .replace("session.timeout.ms=6000", "session.timeout.ms=45000")
        .replacen(
            "kafka:\n",
            &format!(
                "kafka:\n  exactly_once: true\n  transactional_id: {}\n",
                unique("txn")
            ),
            1,
        );
    let dir = policy_dir(&config);
    let mut tailgate = Tailgate::start_with_env(
        tailgate_bin!(),
        dir.path(),
        free_port(),
        "tailgate.log",
        &[("TOKIO_WORKER_THREADS", "1")],
    );
    // A fresh broker creates its group coordinator's topic on first use: on
    // a loaded machine that has taken over 30 s.
    tailgate.wait_ready(Duration::from_secs(90));
    let mut reader = OutputReader::new(&output);
    assert!(
        reader.until(Duration::from_secs(60), |o| o.spans.len() >= 20),
        "no committed output:\n{}",
        tailgate.log_text()
    );
    drop(reader);
    produce_traces(&input, second, |_| Encoding::OtlpProto).await;
    let total = w.traces.iter().map(|t| t.messages.len()).sum::<usize>() as f64;
    let read_all = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        tailgate
            .metrics()
            .is_some_and(|m| m.sum("tailgate_messages_received_total", &[]) >= total)
    });
    assert!(read_all, "the second half was not read within 60 s");
    // The consumer reports the end of each partition within its fetch wait
    // (500 ms): from then on the partitions' clocks run with wall-clock
    // time, so the second half is decided 3 s later, during the freeze.
    std::thread::sleep(Duration::from_secs(1));

    // The broker hangs. Transactions are committed every 500 ms: the next
    // commit waits on the broker for as long as it hangs.
    broker.run("freeze");
    let frozen = Instant::now();
    let mut slowest = Duration::ZERO;
    while frozen.elapsed() < Duration::from_secs(8) {
        let asked = Instant::now();
        let answer = tailgate.http_get("/metrics");
        slowest = slowest.max(asked.elapsed());
        assert!(
            matches!(answer, Some((200, _))),
            "the metrics endpoint did not answer within 5 s while the broker hung \
             {:?} in: a blocking call holds the runtime\n{}",
            frozen.elapsed(),
            tailgate.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // SIGTERM while the broker still hangs: the shutdown starts (the signal
    // is seen, the workers drain) and waits for the broker to commit.
    let pid = tailgate.pid().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(signalled.success());
    let seen = Instant::now();
    let shutdown_seen = loop {
        if tailgate.log_text().contains("shutdown requested") {
            break true;
        }
        if seen.elapsed() > Duration::from_secs(5) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        shutdown_seen,
        "SIGTERM not acted on within 5 s while the broker hung:\n{}",
        tailgate.log_text()
    );
    assert!(
        tailgate.exited().is_none(),
        "tailgate exited before the broker came back: its last transaction cannot have committed\n{}",
        tailgate.log_text()
    );
    broker.run("thaw");
    let hung_for = frozen.elapsed();

    // Once the broker answers, the shutdown completes: the last transaction
    // commits.
    let status = tailgate.terminate(Duration::from_secs(150));
    let log = tailgate.log_text();
    assert!(status.success(), "exit {status}:\n{log}");
    // The freeze caught a commit with kept spans in it, for most of its
    // length (else this test proved nothing): it was logged as holding the
    // writers back that long.
    let held_ms = log
        .lines()
        .filter(|l| l.contains("a slow commit held the writers back"))
        .filter_map(|l| {
            l.split("ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(
        held_ms >= 3_000,
        "no commit waited out the freeze (longest slow commit {held_ms} ms):\n{log}"
    );

    // A second instance reads what the first left; a read_committed reader
    // then sees every kept trace, once.
    let mut successor = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "successor.log");
    successor.wait_ready(Duration::from_secs(90));
    let mut reader = OutputReader::new(&output);
    let complete = reader.until(Duration::from_secs(60), |o| {
        missing(&expected, o).is_empty()
    });
    reader.poll(Duration::from_secs(2));
    assert!(
        complete,
        "{} of {} kept traces missing:\n{}",
        missing(&expected, &reader.output).len(),
        expected.len(),
        successor.log_text()
    );
    assert_eq!(reader.output.duplicate_spans, 0, "exactly once");
    eprintln!(
        "broker hung {hung_for:.1?}: a commit held {held_ms} ms, slowest metrics answer \
         {slowest:?}; {} kept traces complete, none twice",
        expected.len()
    );
}
