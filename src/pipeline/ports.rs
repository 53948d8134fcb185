//! The ports of a partition worker: what it reads, and the three ways out —
//! the output (kept spans and dead letters), the offset store, and in
//! exactly-once mode the transaction. `kafka/` implements them; tests use
//! in-memory stand-ins.

use bytes::Bytes;
use futures::future::BoxFuture;

/// One message read from the input partition.
#[derive(Debug, Clone)]
pub struct InputMessage {
    pub offset: i64,
    /// The message's timestamp, milliseconds since the Unix epoch (the
    /// partition's stream clock, see [`crate::clock`]); `None` if it has none.
    pub timestamp: Option<i64>,
    /// The message key, kept for the dead-letter copy.
    pub key: Option<Bytes>,
    pub payload: Bytes,
}

/// What the consumer hands a partition's worker, in the order it happened.
#[derive(Debug, Clone)]
pub enum Input {
    Message(InputMessage),
    /// The consumer reached the end of the partition: nothing more to read
    /// for now, so the partition's clock may run with wall-clock time.
    CaughtUp,
}

impl Input {
    /// Payload bytes it holds.
    pub fn len(&self) -> usize {
        match self {
            Input::Message(m) => m.payload.len(),
            Input::CaughtUp => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<InputMessage> for Input {
    fn from(m: InputMessage) -> Self {
        Input::Message(m)
    }
}

/// Which topic an outgoing message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The output topic: kept spans.
    Sampled,
    /// The dead-letter topic: malformed input unchanged, or kept spans that
    /// can never reach the output topic.
    DeadLetter(DeadLetterOf),
    /// The decision log, on this partition number (the input partition's).
    Decisions(i32),
}

/// One message to produce.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub destination: Destination,
    pub key: Option<Bytes>,
    pub payload: Bytes,
    pub headers: Vec<(&'static str, String)>,
}

/// What a dead letter is a copy of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterOf {
    /// A malformed input message, unchanged.
    Input,
    /// Kept spans that can never reach the output topic (they carry their
    /// trace id in a header).
    Output,
}

impl DeadLetterOf {
    /// The `source` label of `tailgate_dead_letters_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
        }
    }
}

/// Header naming why a dead-lettered message was rejected: a decode-error
/// reason for input, a produce-error kind (or `span_too_large`) for output.
pub const DLQ_REASON_HEADER: &str = "tailgate.error.reason";
/// Header with a human-readable description of the problem.
pub const DLQ_DETAIL_HEADER: &str = "tailgate.error.detail";
/// Headers locating the original message (for output, its lowest input offset).
pub const DLQ_PARTITION_HEADER: &str = "tailgate.source.partition";
pub const DLQ_OFFSET_HEADER: &str = "tailgate.source.offset";
/// Header naming the trace of dead-lettered kept spans.
pub const DLQ_TRACE_HEADER: &str = "tailgate.trace.id";

/// What kind of produce failure it is; a bounded metric label. Only
/// [`ProduceErrorKind::Transient`] is worth retrying: the others fail the
/// same way every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProduceErrorKind {
    /// A broker away, a timeout, a leader moving: retried.
    Transient,
    /// Over the producer's `message.max.bytes` or the topic's `max.message.bytes`.
    MessageTooLarge,
    /// The topic or partition does not exist.
    UnknownTopic,
    /// Not authorised to write to the topic.
    Authorization,
    /// The broker refused the record itself (invalid record, policy, timestamp).
    InvalidRecord,
    /// A dead letter, but no `kafka.dead_letter_topic`.
    NoDeadLetterTopic,
    /// Exactly-once: a transactional write from a worker whose partition
    /// was revoked since it started (its lease ended): refused, and the
    /// worker stops; the partition's owner reads those messages again.
    Fenced,
    /// The producer is in librdkafka's fatal state (fenced by another
    /// producer with its transactional id, or its idempotent identity
    /// refused): nothing it holds or is given is ever delivered. Neither
    /// retried nor released: the offsets stay uncommitted, and the process
    /// stops so that a new producer takes over.
    Fatal,
}

impl ProduceErrorKind {
    pub const ALL: [ProduceErrorKind; 8] = [
        Self::Transient,
        Self::MessageTooLarge,
        Self::UnknownTopic,
        Self::Authorization,
        Self::InvalidRecord,
        Self::NoDeadLetterTopic,
        Self::Fenced,
        Self::Fatal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::MessageTooLarge => "message_too_large",
            Self::UnknownTopic => "unknown_topic",
            Self::Authorization => "authorization",
            Self::InvalidRecord => "invalid_record",
            Self::NoDeadLetterTopic => "no_dead_letter_topic",
            Self::Fenced => "fenced",
            Self::Fatal => "fatal",
        }
    }

    /// No retry can fix it, and the message is given up (dead-lettered
    /// where it can be, released) so that the partition goes on.
    pub fn permanent(self) -> bool {
        !matches!(self, Self::Transient | Self::Fatal)
    }
}

/// Why a produce (or a transactional write) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ProduceError {
    pub kind: ProduceErrorKind,
    pub detail: String,
}

impl ProduceError {
    pub fn new(kind: ProduceErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    pub fn transient(detail: impl Into<String>) -> Self {
        Self::new(ProduceErrorKind::Transient, detail)
    }
}

/// Where kept spans (and dead letters) go.
pub trait Output: Send + Sync + 'static {
    /// Sends one message; resolves once it is acknowledged or has definitively failed.
    fn send(&self, message: Outgoing) -> BoxFuture<'static, Result<(), ProduceError>>;
}

/// Where the watermark goes (the consumer's stored offsets).
pub trait OffsetStore: Send + Sync + 'static {
    /// Stores `next_offset`, the next offset to read after a restart; false
    /// if it could not be stored (the partition was revoked meanwhile).
    fn store(&self, partition: i32, next_offset: i64) -> bool;
}

/// Exactly-once mode: kept spans and the partition's next offset enter the
/// open Kafka transaction together, so they commit, or abort, together.
pub trait Transaction: Send + Sync + 'static {
    /// Enqueues `messages` into the open transaction and records `next_offset`
    /// as the partition's offset to commit with them; no commit can fall
    /// between the two. An error means the transaction is lost: it will be
    /// aborted, and the process stops without committing.
    fn write(
        self: std::sync::Arc<Self>,
        partition: i32,
        messages: Vec<Outgoing>,
        next_offset: Option<i64>,
    ) -> BoxFuture<'static, Result<(), ProduceError>>;
}

/// Where a partition's earlier decisions are read back from when its worker
/// starts: the decision log (`kafka.decision_topic`).
pub trait DecisionSource: Send + Sync {
    /// The records of `partition` made at or after `since_ms` (milliseconds
    /// since the Unix epoch), in the order written, the latest `at_most` of
    /// them (the older ones are counted as forgotten). Dropping the future
    /// cancels the read.
    fn load(
        &self,
        partition: i32,
        since_ms: i64,
        at_most: usize,
    ) -> BoxFuture<'static, Result<Vec<super::Recalled>, LoadError>>;
}

/// What kind of failure reading the decision log back is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadErrorKind {
    /// The log could not be read now (a broker away, a timeout): worth
    /// trying again.
    Unavailable,
    /// The read was cancelled: its partition went.
    Cancelled,
    /// The read did not reach the partition's end in its time: trying
    /// again would hold the partition as long again.
    TooSlow,
}

/// Why the decision log could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct LoadError {
    pub kind: LoadErrorKind,
    pub detail: String,
}
