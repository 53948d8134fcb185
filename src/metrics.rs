//! Every metric name in one place: a leaf the core records against (through
//! the `metrics` facade) without knowing where the numbers go. The recorder
//! and the HTTP endpoint that serves them are the app's
//! ([`crate::app::http`]).
//!
//! Names follow `tailgate_<name>_<unit>[_total]`; labels are bounded (rule
//! names come from the rule file, reasons and decisions are fixed sets).

/// Kafka messages read from the input topic.
pub const MESSAGES_RECEIVED: &str = "tailgate_messages_received_total";
/// Valid spans decoded from the input.
pub const SPANS_RECEIVED: &str = "tailgate_spans_received_total";
/// Rejected messages or spans, by `reason` (see `DecodeErrorKind`).
pub const DECODE_ERRORS: &str = "tailgate_decode_errors_total";
/// Input messages not keyed by the trace id of their spans, by `why`:
/// `no_key`, `several_traces` (spans of more than one trace in the message),
/// `other_key` (see `otlp::keying`). Such input is decided in fragments
/// unless `tailgate route` keys it first.
pub const UNKEYED_MESSAGES: &str = "tailgate_unkeyed_messages_total";
/// `tailgate route`: input messages that were not OTLP, forwarded unchanged
/// to the spans topic (where `tailgate run` counts and dead-letters them).
/// Route's other counts are `run`'s names: messages and spans received,
/// messages and spans produced (one message per trace and input message),
/// decode and produce errors.
pub const ROUTE_FORWARDED: &str = "tailgate_route_forwarded_total";
/// `tailgate route`: its input messages by keying, as
/// [`UNKEYED_MESSAGES`] counts `run`'s (there unkeyed input is expected;
/// a name of its own keeps it out of the `TailgateInputUnkeyed` alert).
pub const ROUTE_UNKEYED: &str = "tailgate_route_unkeyed_messages_total";
/// Message timestamps the partitions' stream clocks did not take as they
/// were, by `reason` (see `clock::Clamp`): `ahead` (further ahead of
/// wall-clock time than `decision.clock_ahead`), `behind` (further behind
/// than `decision.clock_behind`: none), `missing` (no timestamp), `outlier`
/// (over `clock_ahead` from its partition's clock: it moved nothing),
/// `jump` (the stamp that confirmed a move of the clock).
pub const CLOCK_CLAMPED: &str = "tailgate_clock_clamped_total";
/// Traces decided, by `rule`, `decision` (keep|drop) and `reason` (wait|after_root|max_age|memory).
pub const TRACES_DECIDED: &str = "tailgate_traces_decided_total";
/// Spans decided, by `rule` and `decision`.
pub const SPANS_DECIDED: &str = "tailgate_spans_decided_total";
/// Spans that arrived after their trace was decided and followed that
/// decision, by `decision` and by `source`: `memory` (decided by this
/// worker) or `log` (read back from the decision log when the partition was
/// assigned: decided before a restart or by another instance).
pub const LATE_SPANS: &str = "tailgate_late_spans_total";
/// Kept spans whose incoming sampling threshold (`ot=th:` in their
/// `tracestate`) was erased, by `why`: `malformed` (cannot be read, or a
/// `tracestate` that is not UTF-8) or `inconsistent` (its span's randomness
/// is below it). Such a span leaves
/// without a threshold or an adjusted count.
pub const THRESHOLDS_ERASED: &str = "tailgate_thresholds_erased_total";
/// Decision records written to the decision log and acknowledged.
pub const DECISIONS_WRITTEN: &str = "tailgate_decisions_written_total";
/// Decision records read back from the decision log when partitions were
/// assigned, and how long each partition's read took.
pub const DECISIONS_LOADED: &str = "tailgate_decisions_loaded_total";
pub const DECISIONS_LOAD_SECONDS: &str = "tailgate_decisions_load_seconds";
/// Decisions remembered for late spans, and the bytes they take (counted in
/// their own budget), against `decision.remembered_bytes`.
pub const DECISIONS_REMEMBERED: &str = "tailgate_remembered_decisions";
pub const DECISIONS_REMEMBERED_BYTES: &str = "tailgate_remembered_decisions_bytes";
pub const DECISIONS_REMEMBERED_BUDGET: &str = "tailgate_remembered_decisions_budget_bytes";
/// Decisions forgotten before `decision.decided_ttl` because
/// `decision.remembered_bytes` was full: their late spans are decided anew.
pub const DECISIONS_FORGOTTEN: &str = "tailgate_decisions_forgotten_total";
/// Traces being assembled.
pub const TRACES_BUFFERED: &str = "tailgate_buffered_traces";
/// Spans being assembled.
pub const SPANS_BUFFERED: &str = "tailgate_buffered_spans";
/// Bytes held by the buffers (span encodings plus per-span records).
pub const BYTES_BUFFERED: &str = "tailgate_buffered_bytes";
/// The configured byte budget of all buffers together.
pub const BYTES_BUDGET: &str = "tailgate_buffer_budget_bytes";
/// How long after its deadline a trace was decided (the decision latency).
pub const DECISION_LATENESS: &str = "tailgate_decision_lateness_seconds";
/// Messages and spans written to the output topic and acknowledged.
pub const MESSAGES_PRODUCED: &str = "tailgate_messages_produced_total";
pub const SPANS_PRODUCED: &str = "tailgate_spans_produced_total";
/// Produce attempts that failed, by `kind`: `transient` ones are retried
/// (the offset does not advance), the others (`message_too_large`,
/// `unknown_topic`, `authorization`, `invalid_record`, `no_dead_letter_topic`)
/// can never succeed and are not.
pub const PRODUCE_ERRORS: &str = "tailgate_produce_errors_total";
/// Kept spans given up on because they can never reach the output topic, by
/// `reason` (`span_too_large`, or a permanent produce error's kind); copied to
/// the dead-letter topic where one is set, then released.
pub const UNDELIVERABLE_SPANS: &str = "tailgate_undeliverable_spans_total";
/// Messages copied to the dead-letter topic and acknowledged, by `source`:
/// `input` (malformed input) or `output` (undeliverable kept spans).
pub const DEAD_LETTERS: &str = "tailgate_dead_letters_total";
/// Encoded kept spans awaiting the producer's acknowledgement or, in
/// exactly-once mode, their turn in the transaction.
pub const OUTPUT_PENDING_BYTES: &str = "tailgate_output_pending_bytes";
/// Kafka client errors (broker unreachable, transport failures), by `kind`.
pub const KAFKA_ERRORS: &str = "tailgate_kafka_errors_total";
/// The `kind` label values of [`KAFKA_ERRORS`].
pub const KAFKA_ERROR_KINDS: [&str; 6] = [
    "all_brokers_down",
    "broker_transport_failure",
    "resolve",
    "authentication",
    "tls",
    "other",
];
/// Kafka clients found in librdkafka's fatal state (fenced, or refused
/// their idempotent or transactional identity), by `client`: the process
/// becomes not ready and stops, exit 1.
pub const KAFKA_FATAL_ERRORS: &str = "tailgate_kafka_fatal_errors_total";
/// The `client` label values of [`KAFKA_FATAL_ERRORS`].
pub const KAFKA_FATAL_CLIENTS: [&str; 2] = ["producer", "consumer"];
/// Input partitions currently assigned to this instance.
pub const PARTITIONS_ASSIGNED: &str = "tailgate_partitions_assigned";
/// Consumer-group rebalances seen, by `kind` (assign|revoke).
pub const REBALANCES: &str = "tailgate_rebalances_total";
/// Offsets still pinned by undecided or undelivered spans, over all partitions.
pub const OFFSETS_PENDING: &str = "tailgate_offsets_pending";
/// Offsets stored for commit (the watermark moved).
pub const OFFSETS_STORED: &str = "tailgate_offsets_stored_total";
/// Kept spans delivered from messages past the committed offset of a partition
/// this instance let go (rebalance or shutdown): its next reader reads those
/// messages again and delivers up to this many spans a second time.
pub const REDELIVERED_SPANS: &str = "tailgate_handover_redelivered_spans_total";
/// Rule-file reloads, by `result` (ok|error); on error the previous rules stay.
pub const RULE_RELOADS: &str = "tailgate_rule_reloads_total";
/// Rules in force (not counting the implicit `unmatched`).
pub const RULES_LOADED: &str = "tailgate_rules_loaded";
/// Input partitions paused because the buffers are above their high-water mark.
pub const PARTITIONS_PAUSED: &str = "tailgate_partitions_paused";
/// Messages between the consumer's position and the partition's end, by
/// `partition`, from librdkafka's statistics.
pub const CONSUMER_LAG: &str = "tailgate_consumer_lag_messages";
/// Exactly-once mode: transactions by `result` (`committed`, `aborted`).
pub const TRANSACTIONS: &str = "tailgate_transactions_total";
/// Decision records that could not be written to the decision log and were
/// given up on (the decision stands; a later owner of the partition decides
/// the trace's late spans anew): a decision topic lacking the partition
/// (fewer partitions than the input, and not grown), or another error no
/// retry can fix. The input is not held for them.
pub const DECISIONS_UNLOGGED: &str = "tailgate_decisions_unlogged_total";
/// Each service's time on the critical path of every decided trace it is
/// on, kept or dropped (measured before sampling), by `service`.
pub const CRITICAL_PATH_SECONDS: &str = "tailgate_critical_path_seconds";
/// Decided traces whose critical path has the most time in each service,
/// by `service`.
pub const CRITICAL_PATH_DOMINANT: &str = "tailgate_critical_path_dominant_total";
/// Decided traces' durations (earliest span start to latest end), by
/// `root_service` (the root span's service, or the top-most span's).
pub const TRACE_DURATION_SECONDS: &str = "tailgate_trace_duration_seconds";
/// Observations of the three above whose service was counted as `(other)`:
/// the process had named `metrics.max_services` services already.
pub const LABELS_FOLDED: &str = "tailgate_critical_path_services_folded_total";
