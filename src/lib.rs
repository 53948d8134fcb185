//! tailgate: a tail-sampling stream processor for distributed traces on Kafka.
//!
//! The pipeline, one module per stage:
//!
//! - consume: [`kafka::consumer`] — a consumer-group member; messages go to one
//!   worker per assigned partition ([`app`]).
//! - decode: [`otlp`] — OTLP protobuf/JSON to span records that keep their bytes.
//! - buffer: [`buffer`] — traces assembled per partition, decided at deadlines
//!   measured on each partition's stream clock ([`clock`]).
//! - decide: [`rules`] — ordered rules, first match wins, deterministic.
//! - produce: [`kafka::producer`] — kept spans, regrouped, to the output topic.
//! - commit: [`watermark`] — offsets committed only behind what is
//!   decided and delivered.
//!
//! [`pipeline`] is where the stages meet; [`config`] loads settings and rule
//! files; [`metrics`] names every metric; [`workload`] generates the demo's
//! synthetic shop traffic; [`demo`] runs it all on an in-process Kafka.

// The pure core: no Kafka, no I/O, no reading of time (tests/architecture.rs
// keeps it so). Public: a library user can decode, buffer and decide with it.
pub mod buffer;
pub mod clock;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod route;
pub mod rules;
pub(crate) mod watermark;

// Settings, and the synthetic shop traffic the demo, tests and benchmark use.
pub mod config;
pub mod workload;

// The edge and the wiring: `app::run` is the whole of `tailgate run`,
// `cli::main` the binary; `replay` runs rules over captured traffic.
pub mod app;
pub mod cli;
pub(crate) mod demo;
pub(crate) mod kafka;
pub(crate) mod reload;
pub mod replay;
