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

use std::collections::HashMap;
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

/// Interned parts at most, in bytes: beyond it a scope's parts are copied
/// for its spans alone (and counted with them).
const MAX_INTERNED: usize = 1 << 20;

/// Interned parts that no buffered span uses any more are dropped once the
/// interned bytes pass this, or twice what was in use at the last clean.
const CLEAN_FROM: usize = 64 << 10;

/// A partition's resources and scopes, each kept once.
#[derive(Debug, Default)]
pub struct Interner {
    /// By a hash of their bytes; of two different parts with the same hash,
    /// the second is not interned.
    parts: HashMap<u64, Arc<Parts>, foldhash::fast::RandomState>,
    hasher: foldhash::fast::RandomState,
    /// Bytes the interned parts keep alive.
    bytes: usize,
    /// Clean once `bytes` passes this.
    clean_at: usize,
}

impl Interner {
    /// Bytes the interned parts keep alive.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Parts equal to `parts`, shared when they can be, and the bytes that
    /// are the caller's to count: none for shared parts (the interner
    /// counts them once), a copy's own size otherwise.
    fn intern(&mut self, parts: &Parts) -> (Arc<Parts>, usize) {
        let all = parts.all();
        let key = self.hasher.hash_one(all);
        if let Some(shared) = self.parts.get(&key) {
            if shared.all() == all {
                return (shared.clone(), 0);
            }
            let own = Parts::copied(all);
            let size = own.size();
            return (Arc::new(own), size);
        }
        let own = Parts::copied(all);
        let size = own.size();
        if self.bytes + size > self.clean_at.max(CLEAN_FROM) {
            self.clean();
        }
        if self.bytes + size > MAX_INTERNED {
            return (Arc::new(own), size);
        }
        let own = Arc::new(own);
        self.parts.insert(key, own.clone());
        self.bytes += size;
        (own, 0)
    }

    /// Drops the parts no span outside the interner uses.
    pub fn clean(&mut self) {
        self.parts.retain(|_, p| Arc::strong_count(p) > 1);
        self.bytes = self.parts.values().map(|p| p.size()).sum();
        self.clean_at = 2 * self.bytes;
        if self.parts.capacity() > 4 * self.parts.len().max(16) {
            self.parts.shrink_to_fit();
        }
    }

    /// Drops every interned part (spans that use them keep theirs).
    pub fn clear(&mut self) {
        self.parts = HashMap::default();
        self.bytes = 0;
        self.clean_at = 0;
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
