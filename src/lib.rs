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

pub mod app;
pub mod buffer;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod kafka;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod reload;
pub mod replay;
pub mod rules;
pub mod watermark;
pub mod workload;
