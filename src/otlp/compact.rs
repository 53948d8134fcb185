//! Buffered spans copied out of their message, into their trace.
//!
//! As decoded, a span is a slice of its message, so one buffered span would
//! keep its whole message alive (other traces' spans, the resource and
//! scope, the key) until every trace of it is decided. Instead, as a
//! trace's spans are buffered their encodings are appended to one buffer of
//! the trace's own, each described by a compact record pointing into it,
//! and their resource and scope are shared with every other trace under the
//! same ones: a partition's spans come from a handful of services, so the
//! resource and scope bytes are kept once per partition, not once per
//! message. The message is freed as soon as it is decoded. When the trace
//! is decided its spans become ordinary [`SpanRecord`]s again, slices of
//! the trace's buffer.
//!
//! Pure: no clock, no Kafka.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use super::{Parts, Scope, SpanRecord};

/// Bytes a copy of a scope's parts costs beside the parts themselves: the
/// shared allocation holding it, and the allocator's headers of it and of
/// its buffer.
pub const PARTS_OVERHEAD: usize = 16 + std::mem::size_of::<Parts>() + 2 * ALLOCATION;

/// Bytes a buffered span's record costs.
pub const PACKED_SPAN: usize = std::mem::size_of::<Packed>();

/// What the allocator adds to an allocation, on average: its header and
/// rounding to 16 bytes.
pub const ALLOCATION: usize = 16;

/// The most bytes of span encodings one trace's buffer holds: records
/// point into it with 32-bit offsets.
pub const MAX_TRACE_BYTES: usize = u32::MAX as usize;

/// Bytes of each part's head and tail that its hash reads.
const HASHED: usize = 256;

/// A partition's resources and scopes, each kept once, for as long as a
/// buffered trace uses it.
#[derive(Debug, Default)]
pub struct Interner {
    /// By a hash of their bytes, with the buffered traces that use them; of
    /// two different parts with the same hash, the second is not interned.
    parts: HashMap<u64, (Arc<Parts>, u32), foldhash::fast::RandomState>,
    hasher: foldhash::fast::RandomState,
    /// Bytes the interned parts keep alive.
    bytes: usize,
    /// The last parts (as decoded, in their message) looked up, and the
    /// interned ones equal to them: a message's traces share their
    /// resource, which is hashed once, not once per trace. Weak, so that
    /// neither keeps anything alive (nor can an address be reused).
    last: Option<(Weak<Parts>, Weak<Parts>)>,
}

impl Interner {
    /// Bytes the interned parts keep alive.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Parts equal to `parts` for one more buffered trace, shared when
    /// they can be, and the bytes that are the caller's to count: none for
    /// shared parts (the interner counts them once), a copy's own size
    /// otherwise.
    fn intern(&mut self, parts: &Arc<Parts>) -> (Arc<Parts>, usize) {
        if let Some((from, to)) = &self.last {
            if from.as_ptr() == Arc::as_ptr(parts) {
                if let Some(shared) = to.upgrade() {
                    if let Some(entry) = self.parts.get_mut(&shared.hash) {
                        if Arc::ptr_eq(&entry.0, &shared) {
                            entry.1 += 1;
                            return (shared, 0);
                        }
                    }
                }
            }
        }
        let all = parts.all();
        let hash = self.hash_of(all);
        let (shared, own) = match self.parts.entry(hash) {
            Entry::Occupied(mut e) if e.get().0.all() == all => {
                e.get_mut().1 += 1;
                (e.get().0.clone(), 0)
            }
            Entry::Occupied(_) => {
                let own = Parts::copied(all);
                let size = own.size();
                return (Arc::new(own), size);
            }
            Entry::Vacant(e) => {
                let mut own = Parts::copied(all);
                own.hash = hash;
                let own = Arc::new(own);
                self.bytes += own.size();
                e.insert((own.clone(), 1));
                (own, 0)
            }
        };
        self.last = Some((Arc::downgrade(parts), Arc::downgrade(&shared)));
        (shared, own)
    }

    /// A hash of the parts' lengths and of at most their first and last
    /// [`HASHED`] bytes each: a resource of hundreds of kilobytes is not
    /// read whole for it (its equality, on a match, is a `memcmp`). Parts
    /// that differ only in their middle share a hash; the second is copied
    /// for its trace and counted there.
    fn hash_of(&self, all: [&[u8]; 5]) -> u64 {
        let sampled = all.map(|p| {
            let head = &p[..p.len().min(HASHED)];
            let tail = &p[p.len().saturating_sub(HASHED).max(head.len())..];
            (p.len(), head, tail)
        });
        self.hasher.hash_one(sampled)
    }

    /// One buffered trace that used `parts` is gone: parts no trace uses any
    /// more are dropped (spans still on their way out keep theirs).
    fn release(&mut self, parts: &Arc<Parts>) {
        if let Entry::Occupied(mut e) = self.parts.entry(parts.hash) {
            if Arc::ptr_eq(&e.get().0, parts) {
                e.get_mut().1 -= 1;
                if e.get().1 == 0 {
                    self.bytes -= e.remove().0.size();
                }
            }
        }
    }
}

/// One buffered trace's spans: their encodings one after another in one
/// buffer, a compact record for each, and the resources and scopes they
/// are under (interned).
#[derive(Debug, Default)]
pub struct Assembled {
    buf: Vec<u8>,
    spans: Vec<Packed>,
    /// The distinct resources and scopes of the spans.
    parts: Vec<Arc<Parts>>,
    /// Bytes of parts that could not be interned, copied for this trace.
    own: usize,
}

/// A buffered span: [`SpanRecord`]'s fields, with an index into its
/// trace's parts instead of a reference to its scope.
#[derive(Debug)]
struct Packed {
    /// `(start, len)` of its encoding in the trace's buffer.
    encoded_at: (u32, u32),
    span_id: [u8; 8],
    parent_span_id: [u8; 8],
    start_ns: u64,
    end_ns: u64,
    name_at: (u32, u32),
    parts: u32,
    kind: u8,
    status: u8,
    has_trace_state: bool,
}

impl Assembled {
    /// Buffered spans.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes of span encodings held.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// What the trace's spans keep alive: the buffer, the records, the
    /// list of parts (each allocated exactly), parts copied for it alone,
    /// and the allocator's headers. Interned parts are the interner's.
    pub fn bytes(&self) -> usize {
        let capacities = [
            self.buf.capacity(),
            self.spans.capacity() * PACKED_SPAN,
            self.parts.capacity() * std::mem::size_of::<Arc<Parts>>(),
        ];
        capacities.iter().sum::<usize>()
            + capacities.iter().filter(|c| **c > 0).count() * ALLOCATION
            + self.own
    }

    /// Appends `spans` (decoded from one message) to the trace: their
    /// encodings copied, their resources and scopes interned. The caller
    /// keeps the buffer within [`MAX_TRACE_BYTES`].
    pub fn add(&mut self, spans: &[SpanRecord], interner: &mut Interner) {
        let len: usize = spans.iter().map(|s| s.encoded().len()).sum();
        grow(&mut self.buf, len);
        grow(&mut self.spans, spans.len());
        let mut last: Option<(&Arc<Parts>, u32)> = None;
        for s in spans {
            let parts = match last {
                Some((parts, at)) if Arc::ptr_eq(parts, &s.scope.parts) => at,
                _ => {
                    let at = self.parts_of(&s.scope.parts, interner);
                    last = Some((&s.scope.parts, at));
                    at
                }
            };
            let encoded = s.encoded();
            let at = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
            self.buf.extend_from_slice(encoded);
            self.spans.push(Packed {
                encoded_at: (at, encoded.len() as u32),
                span_id: s.span_id,
                parent_span_id: s.parent_span_id,
                start_ns: s.start_ns,
                end_ns: s.end_ns,
                name_at: s.name_at,
                parts,
                kind: s.kind,
                status: s.status,
                has_trace_state: s.has_trace_state,
            });
        }
    }

    /// The index of the trace's parts equal to `parts`, added (interned)
    /// if the trace has none yet.
    fn parts_of(&mut self, parts: &Arc<Parts>, interner: &mut Interner) -> u32 {
        let (shared, own) = interner.intern(parts);
        // The trace's own use of them is counted once.
        if let Some(at) = self.parts.iter().position(|p| Arc::ptr_eq(p, &shared)) {
            interner.release(&shared);
            return at as u32;
        }
        self.own += own;
        grow(&mut self.parts, 1);
        self.parts.push(shared);
        (self.parts.len() - 1) as u32
    }

    /// The spans as records of their own, slices of the trace's buffer;
    /// the trace gives back its uses of interned parts.
    pub fn into_spans(self, interner: &mut Interner) -> Vec<SpanRecord> {
        for p in &self.parts {
            interner.release(p);
        }
        let buf = Bytes::from(self.buf);
        let scopes: Vec<Arc<Scope>> = self
            .parts
            .into_iter()
            .map(|parts| {
                Arc::new(Scope {
                    spans: buf.clone(),
                    parts,
                })
            })
            .collect();
        self.spans
            .into_iter()
            .map(|p| SpanRecord {
                // Every index was made by `parts_of`, into `parts`.
                scope: scopes[p.parts as usize].clone(),
                encoded_at: p.encoded_at,
                span_id: p.span_id,
                parent_span_id: p.parent_span_id,
                start_ns: p.start_ns,
                end_ns: p.end_ns,
                name_at: p.name_at,
                kind: p.kind,
                status: p.status,
                has_trace_state: p.has_trace_state,
            })
            .collect()
    }
}

/// Room for `more` items in `v`: exactly what a trace of a few messages
/// needs, but at least a quarter more than it holds, so that a trace of
/// thousands of messages is not copied whole for each of them.
fn grow<T>(v: &mut Vec<T>, more: usize) {
    if v.capacity() - v.len() < more {
        v.reserve_exact(more.max(v.len() / 4));
    }
}
