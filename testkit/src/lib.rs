//! The test kit of tailgate's integration tests and of its end-to-end
//! benchmark: one home for what both need.
//!
//! - [`broker`]: the broker `scripts/test` started, and private brokers;
//! - [`names`]: names no other test uses, free ports;
//! - [`topics`]: creating topics and producing to them;
//! - [`workload`], [`policy`]: the shop workload with what the rules decide
//!   of it, and the settings a test runs tailgate with;
//! - [`process`], [`instance`]: a child process measured from `/proc`, and a
//!   running `tailgate run` with its metrics endpoint;
//! - [`output`], [`offsets`]: what an output topic holds, and how far a
//!   group has committed;
//! - [`log_dump`]: how the broker stored a topic's batches (their codecs);
//! - [`http`], [`prometheus_text`]: one GET, and the one reader of
//!   Prometheus text (`/metrics`).
//!
//! The tailgate binary exists only for the tailgate package's own
//! integration tests and benches (`CARGO_BIN_EXE_tailgate`), so they pass it
//! in: [`tailgate_bin!`] names it at the call site.

pub mod broker;
pub mod http;
pub mod instance;
pub mod log_dump;
pub mod names;
pub mod offsets;
pub mod output;
pub mod policy;
pub mod process;
pub mod prometheus_text;
pub mod topics;
pub mod workload;

pub use broker::{bootstrap, sasl, Broker, SaslListener};
pub use http::http_get;
pub use instance::{redelivery_logged, replay_topic, Tailgate};
pub use log_dump::batch_codecs;
pub use names::{free_port, now_ms, unique};
pub use offsets::{committed_and_end, wait_committed_to_end, OffsetReader};
pub use output::{missing, read_topic, read_with_headers, Output, OutputReader, TopicRecord};
pub use policy::{policy_dir, settings, RULES};
pub use process::Process;
pub use prometheus_text::{Metrics, Sample};
pub use topics::{
    add_partitions, create_topic, create_topic_with, partition_count, produce_in_order,
    produce_raw, produce_to, produce_traces, produce_traces_stamped, producer,
};
pub use workload::Workload;

/// The path of the tailgate binary Cargo built for the calling test or
/// bench (`CARGO_BIN_EXE_tailgate`, set only there), as a `&'static Path`.
#[macro_export]
macro_rules! tailgate_bin {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_tailgate"))
    };
}
