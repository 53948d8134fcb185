//! SASL_SSL on a real broker: the broker `scripts/test` starts also listens
//! with SCRAM-SHA-512 over TLS (`KAFKA_SASL_SSL=1`, a CA and certificate
//! made with openssl, the SCRAM user created when its storage is formatted).
//! `tailgate route` and `tailgate run` work through it, the password coming
//! from the environment (`${env:…}`); a wrong password and an untrusted
//! broker certificate each give a clear error, counted by kind, never a
//! ready instance, and nothing committed.
#![cfg(feature = "kafka-tests")]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::TracesData;
use rdkafka::producer::FutureRecord;
use tailgate::otlp::Encoding;
use tailgate::workload::encode;
use tailgate_testkit::*;

/// `settings` for the test broker, reached through its SASL_SSL listener
/// with `options` (the PLAINTEXT address replaced).
fn through_sasl(yaml: &str, listener: &SaslListener, options: &[String]) -> String {
    let quoted: Vec<String> = options.iter().map(|o| format!("'{o}'")).collect();
    yaml.replacen(
        &format!("brokers: {}", bootstrap()),
        &format!(
            "brokers: {}\n  librdkafka_options: [{}]",
            listener.address,
            quoted.join(", ")
        ),
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_and_run_work_through_sasl_ssl() {
    let listener = sasl();
    let (unkeyed, spans, output) = (unique("unkeyed"), unique("spans"), unique("out"));
    create_topic(&unkeyed, 2).await;
    create_topic(&spans, 2).await;
    create_topic(&output, 1).await;
    let (group, route_group) = (unique("tailgate"), unique("route"));
    // Unkeyed batches of 5 traces each, as an exporter without
    // partition_traces_by_id writes them.
    let w = Workload::shop(51, 200);
    let expected = w.expected_kept(RULES);
    let p = producer();
    for chunk in w.traces.chunks(5) {
        let mut batch = TracesData::default();
        for t in chunk {
            for m in &t.messages {
                batch.resource_spans.extend(m.resource_spans.clone());
            }
        }
        let payload = encode(&batch, Encoding::OtlpProto);
        p.send(
            FutureRecord::<(), [u8]>::to(&unkeyed).payload(payload.as_slice()),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produced");
    }
    // The password from the environment, as the Helm chart passes it.
    let options = listener.options(&listener.ca, "${env:TAILGATE_TEST_KAFKA_PASSWORD}");
    let yaml = format!(
        "{}route:\n  from_topic: {unkeyed}\n  group_id: {route_group}\n",
        through_sasl(
            &settings(&group, &spans, &output, RULES, "10s", None)
                .replace("after_root: 1s", "after_root: 5s"),
            &listener,
            &options
        )
    );
    let dir = policy_dir(&yaml);
    let env = [("TAILGATE_TEST_KAFKA_PASSWORD", listener.password.as_str())];
    let mut route = Tailgate::start_command(
        tailgate_bin!(),
        "route",
        dir.path(),
        free_port(),
        "route.log",
        &env,
    );
    let mut run =
        Tailgate::start_with_env(tailgate_bin!(), dir.path(), free_port(), "run.log", &env);
    route.wait_ready(Duration::from_secs(60));
    run.wait_ready(Duration::from_secs(60));
    let mut reader = OutputReader::new(&output);
    let complete = reader.until(Duration::from_secs(90), |o| {
        missing(&expected, o).is_empty()
    });
    assert!(
        complete,
        "{} of {} kept traces missing:\nroute:\n{}\nrun:\n{}",
        missing(&expected, &reader.output).len(),
        expected.len(),
        route.log_text(),
        run.log_text()
    );
    let got: HashSet<_> = reader.output.spans.keys().copied().collect();
    let want: HashSet<_> = expected.keys().copied().collect();
    assert_eq!(got, want);
    // run commits through the listener too: every span route wrote, once
    // its trace is decided (the dropped ones as well).
    wait_committed_to_end(&group, &spans, 2, Duration::from_secs(30), || {
        run.log_text()
    });
    for t in [&mut route, &mut run] {
        let status = t.terminate(Duration::from_secs(40));
        assert!(status.success(), "exit {status}:\n{}", t.log_text());
        let m = t.log_text();
        assert!(
            !m.contains(&listener.password),
            "the password is never logged"
        );
    }
    for (p, (committed, end)) in committed_and_end(&route_group, &unkeyed, 2)
        .into_iter()
        .enumerate()
    {
        assert_eq!(committed, end, "route's partition {p}");
    }
}

/// A tailgate that cannot log in or cannot trust the broker: within 20 s it
/// names the failure in its log (once per 10 s, not in a loop), counts it
/// by kind, is never ready, and commits nothing.
async fn refused(options: Vec<String>, kind: &str, says: &[&str]) {
    let listener = sasl();
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 1).await;
    produce_raw(&input, "k", b"anything").await;
    let yaml = through_sasl(
        &settings(&group, &input, &output, RULES, "3s", None),
        &listener,
        &options,
    );
    let dir = policy_dir(&yaml);
    let tailgate = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "refused.log");
    let started = Instant::now();
    let mut counted = 0.0;
    while started.elapsed() < Duration::from_secs(20) {
        assert_ne!(
            tailgate.http_get("/readyz").map(|r| r.0),
            Some(200),
            "ready though the broker refuses it:\n{}",
            tailgate.log_text()
        );
        if let Some(m) = tailgate.metrics() {
            counted = m.sum("tailgate_kafka_errors_total", &[("kind", kind)]);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        counted >= 1.0,
        "no tailgate_kafka_errors_total{{kind=\"{kind}\"}}:\n{}",
        tailgate.log_text()
    );
    let log = tailgate.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("kind=\"{kind}\"")) || l.contains(&format!("kind={kind}")))
        .filter(|l| l.contains("WARN"))
        .collect();
    // Each client (consumer, producer, admin) names it at most once per
    // 10 s: in 20 s, at most 3 lines per client, whatever librdkafka's
    // retries count.
    let clients: HashSet<&str> = lines
        .iter()
        .filter_map(|l| l.split("client=").nth(1))
        .filter_map(|rest| rest.trim_start_matches('"').split(['"', ' ']).next())
        .collect();
    assert!(
        !lines.is_empty() && lines.len() <= 3 * clients.len().max(1),
        "want the failure named once per 10 s per client, got {} lines from {clients:?}:\n{log}",
        lines.len()
    );
    for word in says {
        assert!(
            lines.iter().any(|l| l.contains(word)),
            "no line names {word:?}:\n{}",
            lines.join("\n")
        );
    }
    assert!(
        !log.contains(&listener.password),
        "the password is never logged"
    );
    // Nothing committed. (A group that never joined may first be answered
    // with "not coordinator" while its coordinator loads: asked again.)
    let reader = OffsetReader::new(&bootstrap(), &group).expect("offset reader");
    let mut committed = Err(String::new());
    for _ in 0..20 {
        committed = reader.committed(&input, 1);
        if committed.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let committed = committed.expect("the group's committed offsets");
    assert!(committed.iter().all(|c| *c < 0), "committed {committed:?}");
    drop(tailgate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_named_counted_and_never_ready() {
    let listener = sasl();
    refused(
        listener.options(&listener.ca, "not-the-password"),
        "authentication",
        &["Authentication failed", "SCRAM-SHA-512"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_certificate_is_refused_the_same_way() {
    let listener = sasl();
    refused(
        listener.options(&listener.other_ca, &listener.password),
        "tls",
        &["certificate verify failed"],
    )
    .await;
}
