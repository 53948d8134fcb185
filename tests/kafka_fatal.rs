//! A Kafka client in librdkafka's fatal state is not
//! retried forever. Two instances given one `kafka.group_instance_id` (a
//! StatefulSet misconfigured, two pods with one name): the second to join
//! fences the first as a static member (`FENCED_INSTANCE_ID`), which
//! librdkafka makes its consumer's fatal state. The fenced instance must
//! stop, not ready, and exit non-zero, so that the orchestrator sees it.
#![cfg(feature = "kafka-tests")]

use std::time::{Duration, Instant};

use tailgate::otlp::Encoding;
use tailgate_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_fenced_as_a_static_member_stops_the_process_non_zero() {
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 2).await;
    create_topic(&output, 1).await;
    let w = Workload::shop(20, 200);
    produce_traces(&input, &w.traces, |_| Encoding::OtlpProto).await;
    let config = settings(&group, &input, &output, RULES, "2s", None)
        .replace("session.timeout.ms=6000", "session.timeout.ms=45000")
        .replace(
            "  commit_interval:",
            "  group_instance_id: tailgate-0\n  commit_interval:",
        );
    let dir_a = policy_dir(&config);
    let dir_b = policy_dir(&config);
    let mut a = Tailgate::start(tailgate_bin!(), dir_a.path(), free_port(), "a.log");
    a.wait_ready(Duration::from_secs(60));
    let mut b = Tailgate::start(tailgate_bin!(), dir_b.path(), free_port(), "b.log");
    let fenced = Instant::now();
    let status = loop {
        if let Some(status) = a.exited() {
            break Some(status);
        }
        if fenced.elapsed() > Duration::from_secs(90) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = a.log_text();
    let status = status
        .unwrap_or_else(|| panic!("the fenced instance kept running (retrying forever):\n{log}"));
    assert!(
        !status.success(),
        "a fatal client state must end the process non-zero:\n{log}"
    );
    assert_eq!(
        log.matches("kafka: the consumer is in a fatal state")
            .count(),
        1,
        "said once:\n{log}"
    );
    eprintln!(
        "fenced instance exited ({status}) {:.1?} after the second joined",
        fenced.elapsed()
    );
    let _ = b.terminate(Duration::from_secs(60));
}
