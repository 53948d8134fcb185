//! The metrics endpoint: the Prometheus recorder, the series registered at
//! zero from the start, and `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::clock::Clamp;
use crate::metrics as m;
use crate::otlp::keying::Unkeyed;
use crate::pipeline::{undeliverable_reasons, ProduceErrorKind};

/// Registers the series that only move on rare events, so that dashboards and
/// alerts see them (at zero) from the start.
pub fn register_rare() {
    for result in ["ok", "error"] {
        metrics::counter!(m::RULE_RELOADS, "result" => result).increment(0);
    }
    metrics::gauge!(m::PARTITIONS_PAUSED).set(0.0);
    for kind in ProduceErrorKind::ALL {
        metrics::counter!(m::PRODUCE_ERRORS, "kind" => kind.as_str()).increment(0);
    }
    for reason in undeliverable_reasons() {
        metrics::counter!(m::UNDELIVERABLE_SPANS, "reason" => reason).increment(0);
    }
    for source in ["input", "output"] {
        metrics::counter!(m::DEAD_LETTERS, "source" => source).increment(0);
    }
    metrics::counter!(m::REDELIVERED_SPANS).increment(0);
    for why in Unkeyed::ALL {
        metrics::counter!(m::UNKEYED_MESSAGES, "why" => why.as_str()).increment(0);
    }
    for clamp in Clamp::ALL {
        metrics::counter!(m::CLOCK_CLAMPED, "reason" => clamp.as_str()).increment(0);
    }
    metrics::counter!(m::DECISIONS_FORGOTTEN).increment(0);
    metrics::counter!(m::DECISIONS_WRITTEN).increment(0);
    metrics::counter!(m::DECISIONS_LOADED).increment(0);
    for source in ["memory", "log"] {
        for decision in ["keep", "drop"] {
            metrics::counter!(m::LATE_SPANS, "decision" => decision, "source" => source)
                .increment(0);
        }
    }
    for kind in m::KAFKA_ERROR_KINDS {
        metrics::counter!(m::KAFKA_ERRORS, "kind" => kind).increment(0);
    }
    for client in m::KAFKA_FATAL_CLIENTS {
        metrics::counter!(m::KAFKA_FATAL_ERRORS, "client" => client).increment(0);
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets of the latency attribution histograms, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(m::DECISION_LATENESS.into()),
                    &[
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full(m::DECISIONS_LOAD_SECONDS.into()),
                    &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
                )
                .expect("bucket list is not empty")
                // Request latencies: a few ms to a minute.
                .set_buckets_for_metric(
                    Matcher::Full(m::CRITICAL_PATH_SECONDS.into()),
                    &LATENCY_BUCKETS,
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full(m::TRACE_DURATION_SECONDS.into()),
                    &LATENCY_BUCKETS,
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // A recorder may already be set (e.g. by a test harness); then this
            // handle still renders what it records for this process' metrics.
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .expect("spawn metrics upkeep thread");
            handle
        })
        .clone()
}

/// Liveness and readiness, shared with the HTTP endpoints.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    /// A Kafka client is in a fatal state: never ready again.
    failed: AtomicBool,
}

impl Health {
    /// Ready once the consumer has received its first partition assignment.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The run cannot go on (a Kafka client in a fatal state): not ready
    /// from now on, whatever is assigned.
    pub fn set_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.is_failed()
    }
}

#[derive(Clone)]
struct HttpState {
    handle: PrometheusHandle,
    health: Arc<Health>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(s): State<HttpState>| async move { s.handle.render() }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(s): State<HttpState>| async move {
                if s.health.is_ready() {
                    (StatusCode::OK, "ready\n")
                } else if s.health.is_failed() {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "a Kafka client is in a fatal state; stopping\n",
                    )
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "waiting for partition assignment\n",
                    )
                }
            }),
        )
        .with_state(HttpState { handle, health });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the metrics address, with a clear error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
