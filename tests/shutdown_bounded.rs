//! Every stage of the shutdown is bounded.
//!
//! librdkafka does not always keep its own timeouts: with the consumer
//! group's coordinator gone, `send_offsets_to_transaction` waits without end
//! (librdkafka #5456; it is what hung `kafka_stall` when the single broker,
//! frozen longer than `broker.session.timeout.ms`, was fenced by its own
//! controller on thaw). The exactly-once commit under way then never
//! returns. The shutdown must still end, within its bounds, and in an error:
//! the open transaction was not committed.
//!
//! librdkafka's in-process mock cluster (three brokers, the group's
//! coordinator on its own broker, taken down mid-run) makes that commit
//! hang here in a few seconds, without a real broker.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use tailgate::config::{Settings, Sources};
use tailgate::otlp::Encoding;
use tailgate::workload::{encode, ShopWorkload};

const GROUP: &str = "tailgate-shutdown";
const TXN: &str = "tailgate-shutdown-txn";

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Writes `traces` traces of the shop workload to `topic`.
async fn produce(producer: &FutureProducer, workload: &mut ShopWorkload, traces: usize) {
    for _ in 0..traces {
        let t = workload.next_trace(unix_nanos());
        let key = t.truth.trace_id.to_hex();
        for m in &t.messages {
            let payload = encode(m, Encoding::OtlpProto);
            let sent = producer
                .send(
                    FutureRecord::to("in").key(&key).payload(&payload),
                    Duration::from_secs(5),
                )
                .await;
            assert!(sent.is_ok(), "input not written: {sent:?}");
        }
    }
}

#[test]
fn the_shutdown_ends_when_an_exactly_once_commit_never_returns() {
    // A runtime of the test's own: the hung librdkafka call stays behind on
    // a blocking thread, which dropping a runtime would wait for without end.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic("in", 2, 1).expect("input topic");
    cluster.create_topic("out", 1, 1).expect("output topic");
    for p in 0..2 {
        cluster.partition_leader("in", p, Some(1)).expect("leader");
    }
    cluster.partition_leader("out", 0, Some(1)).expect("leader");
    cluster
        .coordinator(MockCoordinator::Transaction(TXN.into()), 1)
        .expect("transaction coordinator");
    cluster
        .coordinator(MockCoordinator::Group(GROUP.into()), 2)
        .expect("group coordinator");

    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("test.yaml");
    std::fs::write(
        &policy,
        format!(
            "kafka:
  brokers: {brokers}
  group_id: {GROUP}
  input_topic: in
  output_topic: out
  exactly_once: true
  transactional_id: {TXN}
  decision_log: false
  commit_interval: 200ms
  drain_timeout: 3s
metrics:
  listen: 127.0.0.1:0
decision:
  wait: 1s
  after_root: 200ms
  clock_ahead: 100ms
  max_trace_age: 5s
rules: [{{name: all, sample: keep}}]
",
            brokers = cluster.bootstrap_servers()
        ),
    )
    .expect("write policy");
    let loaded = Settings::load(&Sources {
        files: vec![policy],
        environment: false,
        overrides: Vec::new(),
    })
    .expect("settings");
    let drain = loaded.settings.kafka.drain_timeout;

    let (ended, shutdown_took) = runtime.block_on(async {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .expect("input producer");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handles = tailgate::app::Handles::default();
        let health = handles.health.clone();
        let app = tokio::spawn(tailgate::app::run(
            loaded,
            async move {
                let _ = stopped.await;
            },
            handles,
        ));
        let mut workload = ShopWorkload::new(7);
        let started = Instant::now();
        while !health.is_ready() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no partitions assigned within 30 s"
            );
            produce(&producer, &mut workload, 5).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Traces decided and written with their offsets into the open
        // transaction: its next commit sends offsets to the group's
        // coordinator, which is gone from now on.
        produce(&producer, &mut workload, 50).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.broker_down(2).expect("group coordinator down");
        for _ in 0..20 {
            produce(&producer, &mut workload, 10).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = producer.flush(Duration::from_secs(5));
        let asked = Instant::now();
        let _ = stop.send(());
        // Every stage within its bound: the drain and the commit under way
        // (3 s), the flush (3 s), the closes (3 s each), the tasks (3 s),
        // with room to spare; never the commit's own two and a half minutes.
        let ended = tokio::time::timeout(Duration::from_secs(60), app).await;
        (ended, asked.elapsed())
    });
    // Before any assertion: a failing one must not leave the test waiting
    // on the blocked thread as the runtime drops.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let ended = ended.unwrap_or_else(|_| {
        panic!("the shutdown did not end within 60 s (drain timeout {drain:?})")
    });
    let result = ended.expect("the run panicked");
    let error = format!("{:#}", result.expect_err(
        "the transaction under way was never committed: the run must end in an error (exit non-zero)",
    ));
    assert!(
        error.contains("exactly-once commit under way"),
        "the error names the stage that was abandoned: {error}"
    );
    eprintln!("shutdown took {shutdown_took:.1?}: {error}");
}
