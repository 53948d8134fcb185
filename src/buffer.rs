//! The per-partition trace buffer: spans grouped by trace id, each trace with
//! a deadline, and the bytes it holds counted against a budget.
//!
//! Pure and synchronous: time comes in as `now`, nothing here knows Kafka.
//! Deadlines live in a binary heap keyed by `(deadline, seq, trace id)`, so
//! finding what is due never scans the buffer. A trace's deadline mostly
//! moves later (each span after the root extends the quiet period); the
//! heap is not touched for that: its entry stays where it was, and when it
//! comes up it is put back at the trace's real deadline. Only a deadline
//! that moves earlier adds an entry. Entries of traces decided by age or
//! another entry are dropped when they come up, or all at once when they
//! outnumber the traces. The age order is a queue in the order traces
//! began, whose decided traces are dropped the same way.
//!
//! Two clocks (see [`crate::clock`]): `wait` and `after_root` count on the
//! partition's stream clock, so a trace's deadlines do not depend on how
//! fast it is read; `max_trace_age` counts in wall-clock time from the
//! trace's first read, a bound on memory that holds even while the stream
//! clock stands.
//!
//! What the budget counts is what the buffered spans keep resident. A
//! trace's spans are copied out of their messages into one buffer of the
//! trace's own as they are buffered (see [`crate::otlp::compact`]), so no
//! message stays alive for them: a trace counts that buffer, its spans'
//! compact records and its own bookkeeping; the resources and scopes its
//! spans share with other traces are counted once, with the buffer.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::clock::Time;
use crate::otlp::compact::{MAX_TRACE_BYTES, PACKED_SPAN};
use crate::otlp::{Assembled, Encoding, Interner, SpanRecord, TraceId};

/// When traces are decided, and how much the buffer may hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BufferConfig {
    /// Decide this long after a trace's first span arrived.
    pub wait: Duration,
    /// Decide once no span arrived for this long after the root span arrived.
    pub after_root: Duration,
    /// Decide no later than this after the first span was read (wall-clock
    /// time), whatever else happens.
    pub max_trace_age: Duration,
    /// Hard budget for buffered bytes (the spans' encodings, records and
    /// bookkeeping); above it a trace that is over the budget by itself is
    /// decided at once, else the traces with the earliest deadlines are
    /// decided early.
    pub max_bytes: usize,
}

/// Why a trace was decided when it was; a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `decision.wait` after its first span.
    Wait,
    /// The quiet period after the root span.
    AfterRoot,
    /// `decision.max_trace_age`.
    MaxAge,
    /// The buffer reached its byte budget.
    Memory,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Wait,
        Reason::AfterRoot,
        Reason::MaxAge,
        Reason::Memory,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Wait => "wait",
            Reason::AfterRoot => "after_root",
            Reason::MaxAge => "max_age",
            Reason::Memory => "memory",
        }
    }
}

/// A trace being assembled.
#[derive(Debug)]
struct TraceState {
    /// Its spans, copied out of their messages.
    spans: Assembled,
    /// Arrival of the first span on the stream clock: `wait` counts from here.
    first_seen: Instant,
    /// Arrival of the latest span on the stream clock: the quiet period
    /// after the root counts from here.
    last_seen: Instant,
    /// Wall-clock time of the first span's read: `max_trace_age` counts from here.
    first_read: Instant,
    root_seen: bool,
    /// The trace's own bytes: its spans' copies and records.
    bytes: usize,
    /// When the trace is due (on the stream clock).
    deadline: Instant,
    /// The key of its entry in the deadline heap: at or before `deadline`.
    queued: Instant,
    /// When, among the buffer's traces, this one began: of traces due at the
    /// same instant (a batch read at once), the one that began first goes first.
    seq: u64,
    /// Offsets of the messages that brought its spans; each pins the commit watermark.
    offsets: Vec<i64>,
    encoding: Encoding,
}

/// A trace whose time has come, handed to the rules.
#[derive(Debug)]
pub struct ReadyTrace {
    pub trace_id: TraceId,
    pub spans: Vec<SpanRecord>,
    /// Message offsets this trace pins; release them once its decision is done.
    pub offsets: Vec<i64>,
    pub encoding: Encoding,
    pub reason: Reason,
    /// When it was due (on the stream clock; for `MaxAge`, the wall
    /// clock); `now - deadline` is the decision's lateness.
    pub deadline: Instant,
    /// The trace's own bytes: its spans' copies and records.
    pub bytes: usize,
}

/// Counts of what the buffer holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    pub traces: usize,
    pub spans: usize,
    pub bytes: usize,
}

/// Bytes a buffered trace costs besides its spans: its state, its entries in
/// the trace map, the deadline heap and the age queue (each of those can
/// hold up to twice as many entries as there are traces before it is
/// compacted).
pub const TRACE_OVERHEAD: usize = std::mem::size_of::<TraceState>() + 184;
/// Entries the deadline heap and the age queue may hold beyond twice the
/// traces before they are compacted.
const SLACK: usize = 64;
/// Bytes a buffered span's record costs (besides its encoding's copy).
pub const SPAN_OVERHEAD: usize = PACKED_SPAN;

/// Traces of one partition, waiting for their deadlines.
#[derive(Debug)]
pub struct TraceBuffer {
    config: BufferConfig,
    traces: HashMap<TraceId, TraceState, foldhash::fast::RandomState>,
    /// `(deadline, seq, trace id)`: earliest first; at the same deadline the
    /// trace that began first — under memory pressure the one most likely
    /// complete, not one whose next message is still being read. A trace's
    /// live entry is the one whose key is its `queued` and `seq` its `seq`;
    /// others are stale (see the module's comment).
    deadlines: BinaryHeap<Reverse<(Instant, u64, TraceId)>>,
    /// `(seq, first read, trace id)` in the order traces began, which is the
    /// order of their first reads: the front is the first to reach
    /// `max_trace_age`. Entries of decided traces are stale.
    ages: VecDeque<(u64, Instant, TraceId)>,
    /// The next trace's `seq`.
    next_seq: u64,
    /// The resources and scopes of the buffered spans, each kept once.
    interner: Interner,
    /// The most bytes of span encodings one trace holds
    /// ([`MAX_TRACE_BYTES`]; less in tests).
    max_trace_bytes: usize,
    spans: usize,
    /// What the budget counts, but for the interned resources and scopes:
    /// the traces' own bytes and states.
    bytes: usize,
}

impl TraceBuffer {
    pub fn new(config: BufferConfig) -> Self {
        Self {
            config,
            traces: HashMap::default(),
            deadlines: BinaryHeap::new(),
            ages: VecDeque::new(),
            next_seq: 0,
            interner: Interner::default(),
            max_trace_bytes: MAX_TRACE_BYTES,
            spans: 0,
            bytes: 0,
        }
    }

    pub fn occupancy(&self) -> Occupancy {
        Occupancy {
            traces: self.traces.len(),
            spans: self.spans,
            bytes: self.bytes(),
        }
    }

    /// True if the trace is being assembled.
    pub fn contains(&self, trace_id: &TraceId) -> bool {
        self.traces.contains_key(trace_id)
    }

    /// The trace's deadline on the stream clock (`max_trace_age`, on the
    /// wall clock, is kept by `ages`).
    fn deadline_of(config: &BufferConfig, s: &TraceState) -> (Instant, Reason) {
        let mut best = (s.first_seen + config.wait, Reason::Wait);
        if s.root_seen {
            let quiet = s.last_seen + config.after_root;
            if quiet < best.0 {
                best = (quiet, Reason::AfterRoot);
            }
        }
        best
    }

    /// What the budget counts.
    fn bytes(&self) -> usize {
        self.bytes + self.interner.bytes()
    }

    /// Adds the spans of one trace that arrived in the message at `offset`,
    /// copied out of it. The offset is pinned by this trace until its
    /// decision is done. Returns the traces decided early because the byte
    /// budget was exceeded.
    pub fn insert(
        &mut self,
        trace_id: TraceId,
        spans: impl Into<Vec<SpanRecord>>,
        offset: i64,
        encoding: Encoding,
        now: impl Into<Time>,
    ) -> Vec<ReadyTrace> {
        let Time { stream: now, wall } = now.into();
        let spans = spans.into();
        // One lookup of the trace (the fields touched beside it are others).
        let (state, is_new) = match self.traces.entry(trace_id) {
            Entry::Occupied(e) => (e.into_mut(), false),
            Entry::Vacant(e) => {
                self.bytes += TRACE_OVERHEAD;
                self.next_seq += 1;
                self.ages.push_back((self.next_seq, wall, trace_id));
                let state = e.insert(TraceState {
                    spans: Assembled::default(),
                    first_seen: now,
                    last_seen: now,
                    first_read: wall,
                    root_seen: false,
                    bytes: 0,
                    deadline: now,
                    queued: now,
                    seq: self.next_seq,
                    offsets: Vec::new(),
                    encoding,
                });
                (state, true)
            }
        };
        let before = state.spans.bytes();
        state.spans.add(&spans, &mut self.interner);
        let added = state.spans.bytes() - before;
        state.root_seen |= spans.iter().any(SpanRecord::is_root);
        state.bytes += added;
        self.bytes += added;
        self.spans += spans.len();
        // A span placed at an outlier's own (later) time may have come
        // before one placed at the clock's.
        state.last_seen = state.last_seen.max(now);
        if state.offsets.last() != Some(&offset) {
            state.offsets.push(offset);
        }
        let (deadline, _) = Self::deadline_of(&self.config, state);
        state.deadline = deadline;
        // A later deadline leaves the entry where it is (it is put back when
        // it comes up); an earlier one needs one of its own.
        if is_new || deadline < state.queued {
            self.deadlines
                .push(Reverse((deadline, state.seq, trace_id)));
            state.queued = deadline;
        }
        self.enforce_budget(trace_id)
    }

    /// The trace, decided now (for memory) if `incoming` more bytes of
    /// span encodings would pass what its buffer can address (4 GiB, so
    /// only with a budget above that): its later spans follow its decision
    /// as late spans do.
    pub fn take_if_full(&mut self, trace_id: &TraceId, incoming: usize) -> Option<ReadyTrace> {
        let full = self
            .traces
            .get(trace_id)
            .is_some_and(|s| s.spans.encoded_len() + incoming > self.max_trace_bytes);
        if full {
            self.take(*trace_id, Reason::Memory)
        } else {
            None
        }
    }

    /// Over the budget, a trace that is over it by itself (`added`, the one
    /// that just grew) is decided alone; else the earliest deadlines go.
    fn enforce_budget(&mut self, added: TraceId) -> Vec<ReadyTrace> {
        let mut out = Vec::new();
        let max = self.config.max_bytes;
        if self.bytes() > max && self.traces.get(&added).is_some_and(|s| s.bytes > max) {
            out.extend(self.take(added, Reason::Memory));
        }
        self.shrink_to(self.config.max_bytes, &mut out);
        out
    }

    /// Decides traces early, for memory, until the buffer holds at most
    /// `bytes`: the earliest deadlines first (of equal deadlines, the
    /// trace that began first) — the traces most likely complete, not one
    /// whose next message is still to be read.
    pub fn shrink_to(&mut self, bytes: usize, out: &mut Vec<ReadyTrace>) {
        while self.bytes() > bytes {
            let Some((_, _, id)) = self.earliest() else {
                break;
            };
            self.deadlines.pop();
            if let Some(s) = self.traces.remove(&id) {
                out.push(self.taken(id, s, Reason::Memory));
            }
        }
    }

    /// The live entry at the top of the deadline heap, exact: stale entries
    /// above it are dropped, and one whose trace's deadline moved later is
    /// put back at it.
    fn earliest(&mut self) -> Option<(Instant, u64, TraceId)> {
        while let Some(&Reverse((key, seq, id))) = self.deadlines.peek() {
            match self.traces.get_mut(&id) {
                Some(s) if s.seq == seq && s.queued == key => {
                    if s.deadline <= key {
                        return Some((key, seq, id));
                    }
                    s.queued = s.deadline;
                    let again = Reverse((s.deadline, seq, id));
                    self.deadlines.pop();
                    self.deadlines.push(again);
                }
                _ => {
                    self.deadlines.pop();
                }
            }
        }
        None
    }

    fn take(&mut self, id: TraceId, reason: Reason) -> Option<ReadyTrace> {
        let s = self.traces.remove(&id)?;
        Some(self.taken(id, s, reason))
    }

    /// What is left to do once a trace's state is out of the map (its
    /// entries in the deadline heap and the age queue are stale from here).
    fn taken(&mut self, id: TraceId, s: TraceState, reason: Reason) -> ReadyTrace {
        // When it was due, on the clock its reason counts on.
        let deadline = match reason {
            Reason::MaxAge => s.first_read + self.config.max_trace_age,
            _ => s.deadline,
        };
        self.tidy();
        self.spans -= s.spans.len();
        self.bytes -= TRACE_OVERHEAD + s.bytes;
        ReadyTrace {
            trace_id: id,
            spans: s.spans.into_spans(&mut self.interner),
            offsets: s.offsets,
            encoding: s.encoding,
            reason,
            deadline,
            bytes: s.bytes,
        }
    }

    /// Drops stale entries from the front of the age queue, and compacts
    /// it and the deadline heap when stale entries outnumber the traces.
    fn tidy(&mut self) {
        let live = |traces: &HashMap<_, TraceState, _>, seq: u64, id: &TraceId| {
            traces.get(id).is_some_and(|s: &TraceState| s.seq == seq)
        };
        while let Some((seq, _, id)) = self.ages.front() {
            if live(&self.traces, *seq, id) {
                break;
            }
            self.ages.pop_front();
        }
        let most = 2 * self.traces.len() + SLACK;
        if self.ages.len() > most {
            let traces = &self.traces;
            self.ages.retain(|(seq, _, id)| live(traces, *seq, id));
        }
        if self.deadlines.len() > most {
            self.deadlines = self
                .traces
                .iter_mut()
                .map(|(id, s)| {
                    s.queued = s.deadline;
                    Reverse((s.deadline, s.seq, *id))
                })
                .collect();
        }
        // Their room goes back once the buffer has emptied out, so that
        // what a burst left behind is not kept uncounted.
        if self.ages.capacity() > 4 * most {
            self.ages.shrink_to(2 * most);
        }
        if self.deadlines.capacity() > 4 * most {
            self.deadlines.shrink_to(2 * most);
        }
    }

    /// The earliest deadline on the stream clock.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.earliest().map(|(d, _, _)| d)
    }

    /// When the oldest trace reaches `max_trace_age`, in wall-clock time.
    pub fn next_age_limit(&self) -> Option<Instant> {
        // `tidy` keeps a live entry at the front.
        let (_, first_read, _) = self.ages.front()?;
        Some(*first_read + self.config.max_trace_age)
    }

    /// Removes and returns every trace whose deadline is at or before
    /// `now.stream`, earliest first, then every trace read `max_trace_age`
    /// or longer before `now.wall`, oldest first.
    pub fn pop_due(&mut self, now: impl Into<Time>, out: &mut Vec<ReadyTrace>) {
        let Time { stream: now, wall } = now.into();
        while let Some((d, _, id)) = self.earliest() {
            if d > now {
                break;
            }
            self.deadlines.pop();
            if let Some(s) = self.traces.remove(&id) {
                let reason = Self::deadline_of(&self.config, &s).1;
                out.push(self.taken(id, s, reason));
            }
        }
        while let Some(&(_, first_read, id)) = self.ages.front() {
            if first_read + self.config.max_trace_age > wall {
                break;
            }
            match self.take(id, Reason::MaxAge) {
                Some(t) => out.push(t),
                // Never the case: `tidy` keeps a live entry at the front.
                // Not a loop if it were.
                None => {
                    self.ages.pop_front();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
