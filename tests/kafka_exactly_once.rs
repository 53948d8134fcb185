//! Exactly-once mode on the real broker: tailgate is killed with SIGKILL while
//! its open transaction holds kept spans, then restarted. A `read_committed`
//! reader sees every kept trace complete and no span twice; a
//! `read_uncommitted` reader shows the aborted copy the crash left behind.
#![cfg(feature = "kafka-tests")]

use std::time::Duration;

use tailgate::otlp::Encoding;
use tailgate_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_a_crash_loses_nothing_and_duplicates_nothing() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 4).await;
    create_topic(&output, 1).await;
    let w = Workload::shop(11, 2_000);
    let expected = w.expected_kept(RULES);
    let (first, second) = w.traces.split_at(1_000);
    // Transactions commit every 4 s, so a kill right after new output shows
    // up lands inside an open transaction.
    let config = settings(&group, &input, &output, RULES, "1s", None)
        .replace("commit_interval: 500ms", "commit_interval: 4s")
        .replacen(
            "kafka:\n",
            &format!(
                "kafka:\n  exactly_once: true\n  transactional_id: {}\n",
                unique("txn")
            ),
            1,
        );
    let dir = policy_dir(&config);

    let mut a = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "a.log");
    a.wait_ready(Duration::from_secs(30));
    produce_traces(&input, first, |i| {
        if i % 4 == 0 {
            Encoding::OtlpJson
        } else {
            Encoding::OtlpProto
        }
    })
    .await;
    let mut committed = OutputReader::new(&output);
    assert!(
        committed.until(Duration::from_secs(60), |o| o.spans.len() >= 20),
        "no committed output:\n{}",
        a.log_text()
    );
    produce_traces(&input, second, |_| Encoding::OtlpProto).await;
    // Wait until the open transaction holds kept traces a committed reader
    // cannot see yet, then kill.
    let mut uncommitted = OutputReader::uncommitted(&output);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let in_open_transaction = loop {
        committed.poll(Duration::from_millis(200));
        uncommitted.poll(Duration::from_millis(200));
        let open = uncommitted
            .output
            .spans
            .keys()
            .filter(|id| !committed.output.spans.contains_key(id))
            .count();
        if open > 0 {
            break open;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the open transaction never held kept traces:\n{}",
            a.log_text()
        );
    };
    a.kill9();
    eprintln!(
        "killed with {in_open_transaction} kept traces in the open transaction, {} committed",
        committed.output.spans.len()
    );

    let mut b = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "b.log");
    let complete = committed.until(Duration::from_secs(120), |o| {
        missing(&expected, o).is_empty()
    });
    assert!(
        complete,
        "{} kept traces missing after the restart:\n{}",
        missing(&expected, &committed.output).len(),
        b.log_text()
    );
    wait_committed_to_end(&group, &input, 4, Duration::from_secs(60), || b.log_text());
    let status = b.terminate(Duration::from_secs(40));
    assert!(
        status.success(),
        "b exited with {status}:\n{}",
        b.log_text()
    );

    // The whole topic, read again from the start both ways.
    let mut all_committed = OutputReader::new(&output);
    all_committed.poll(Duration::from_secs(4));
    let mut all = OutputReader::uncommitted(&output);
    all.poll(Duration::from_secs(4));
    let out = &all_committed.output;
    assert!(missing(&expected, out).is_empty(), "kept traces missing");
    let unexpected = out
        .spans
        .keys()
        .filter(|id| !expected.contains_key(id))
        .count();
    assert_eq!(unexpected, 0, "traces the rules drop were produced");
    assert_eq!(
        out.duplicate_spans, 0,
        "a read_committed reader saw spans twice"
    );
    assert!(
        all.output.duplicate_spans > 0,
        "the aborted transaction's copy should be in the log for read_uncommitted readers"
    );
    eprintln!(
        "exactly once across SIGKILL: {} kept traces complete, 0 duplicate spans read_committed; {} duplicate spans in aborted transactions",
        expected.len(),
        all.output.duplicate_spans
    );
}
