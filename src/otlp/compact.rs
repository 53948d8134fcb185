//! Buffered spans copied out of their message.
//!
//! As decoded, a span is a slice of its message, so one buffered span would
//! keep its whole message alive (other traces' spans, the resource and
//! scope, the key) until every trace of it is decided. Before a trace's
//! spans from one message are buffered, their encodings are copied into
//! one buffer of their own, exactly their size, and their resource and
//! scope are shared with every other span under the same ones: a
//! partition's spans come from a handful of services, so the resource and
//! scope bytes are kept once per partition, not once per message. The
//! message is freed as soon as it is decoded.
//!
//! Pure: no clock, no Kafka.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;

use super::{Parts, Scope, SpanRecord};

/// Bytes a copy of a scope's parts costs beside the parts themselves: the
/// shared allocation holding it, and the allocator's headers of it and of
/// its buffer.
pub const PARTS_OVERHEAD: usize = 16 + std::mem::size_of::<Parts>() + 2 * ALLOCATION;

/// Bytes one trace's spans from one message cost beside their encodings
/// and records: the scope they share, and the allocator's headers of it and
/// of their buffer.
pub const CHUNK_OVERHEAD: usize = 16 + std::mem::size_of::<Scope>() + 2 * ALLOCATION;

/// What the allocator adds to an allocation, on average: its header and
/// rounding to 16 bytes.
const ALLOCATION: usize = 16;

/// A partition's resources and scopes, each kept once, for as long as a
/// buffered trace's spans use it.
#[derive(Debug, Default)]
pub struct Interner {
    /// By a hash of their bytes, with the buffered chunks of spans under
    /// them; of two different parts with the same hash, the second is not
    /// interned.
    parts: HashMap<u64, (Arc<Parts>, u32), foldhash::fast::RandomState>,
    hasher: foldhash::fast::RandomState,
    /// Bytes the interned parts keep alive.
    bytes: usize,
}

impl Interner {
    /// Bytes the interned parts keep alive.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Parts equal to `parts` for one more chunk of buffered spans, shared
    /// when they can be, and the bytes that are the caller's to count: none
    /// for shared parts (the interner counts them once), a copy's own size
    /// otherwise.
    fn intern(&mut self, parts: &Parts) -> (Arc<Parts>, usize) {
        let all = parts.all();
        match self.parts.entry(self.hasher.hash_one(all)) {
            Entry::Occupied(mut e) if e.get().0.all() == all => {
                e.get_mut().1 += 1;
                (e.get().0.clone(), 0)
            }
            Entry::Occupied(_) => {
                let own = Parts::copied(all);
                let size = own.size();
                (Arc::new(own), size)
            }
            Entry::Vacant(e) => {
                let own = Arc::new(Parts::copied(all));
                self.bytes += own.size();
                e.insert((own.clone(), 1));
                (own, 0)
            }
        }
    }

    /// One chunk of buffered spans under `parts` is gone: parts no chunk
    /// uses any more are dropped (spans still on their way out keep theirs).
    fn release(&mut self, parts: &Arc<Parts>) {
        if let Entry::Occupied(mut e) = self.parts.entry(self.hasher.hash_one(parts.all())) {
            if Arc::ptr_eq(&e.get().0, parts) {
                e.get_mut().1 -= 1;
                if e.get().1 == 0 {
                    self.bytes -= e.remove().0.size();
                }
            }
        }
    }
}

/// Copies the encodings of `spans` (one trace's spans from one message)
/// out of their message: spans under one scope into one buffer of exactly
/// their size, under a scope whose parts are interned. Returns the bytes
/// the copies keep alive beside the records and the interned parts.
pub fn compact(spans: &mut [SpanRecord], interner: &mut Interner) -> usize {
    let mut charged = 0;
    let mut i = 0;
    while i < spans.len() {
        let from = spans[i].scope.clone();
        let n = spans[i..]
            .iter()
            .take_while(|s| Arc::ptr_eq(&s.scope, &from))
            .count();
        let group = &mut spans[i..i + n];
        let len: usize = group.iter().map(|s| s.encoded().len()).sum();
        let mut buf = Vec::with_capacity(len);
        for s in group.iter_mut() {
            let encoded = s.encoded();
            // A buffer of one trace's spans from one message is far below 4 GiB.
            let at = u32::try_from(buf.len()).unwrap_or(u32::MAX);
            let len = encoded.len() as u32;
            buf.extend_from_slice(encoded);
            s.encoded_at = (at, len);
        }
        let (parts, own) = interner.intern(&from.parts);
        let scope = Arc::new(Scope {
            spans: Bytes::from(buf),
            parts,
        });
        for s in group.iter_mut() {
            s.scope = scope.clone();
        }
        charged += len + CHUNK_OVERHEAD + own;
        i += n;
    }
    charged
}

/// The spans of a trace that [`compact`] made are no longer buffered: each
/// chunk of them gives back its use of its interned parts.
pub fn release(spans: &[SpanRecord], interner: &mut Interner) {
    let mut last: Option<&Arc<Scope>> = None;
    for s in spans {
        if !last.is_some_and(|l| Arc::ptr_eq(l, &s.scope)) {
            interner.release(&s.scope.parts);
            last = Some(&s.scope);
        }
    }
}
