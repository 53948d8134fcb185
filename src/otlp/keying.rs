//! Is a message keyed by its trace? tailgate decides whole traces only if
//! every span of a trace reaches the same partition, which Kafka does when
//! messages are keyed by the trace id — what the Collector's Kafka exporter
//! writes with `partition_traces_by_id: true` (32 lowercase hex characters).
//! Without it (the exporter's default) messages are unkeyed batches of many
//! traces spread over partitions, and each instance decides fragments.

use super::TraceId;

/// Why a message is not keyed by its trace id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unkeyed {
    /// The message has no key (or an empty one): Kafka spreads such
    /// messages over partitions, whatever traces they hold.
    NoKey,
    /// Spans of several traces in one message: whatever its key, all but
    /// one of them are on a partition their other spans may not be on.
    SeveralTraces,
    /// One trace, keyed by something else than its id: its spans land
    /// where that key hashes, which other messages of the trace may not
    /// share.
    OtherKey,
}

impl Unkeyed {
    pub const ALL: [Self; 3] = [Self::NoKey, Self::SeveralTraces, Self::OtherKey];

    /// The `why` label of `tailgate_unkeyed_messages_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoKey => "no_key",
            Self::SeveralTraces => "several_traces",
            Self::OtherKey => "other_key",
        }
    }
}

/// Whether `key` names `id`: its 32 hex characters (either case, as the
/// Collector writes them lowercase), or its 16 bytes as they are.
pub fn key_names(key: &[u8], id: &TraceId) -> bool {
    match key.len() {
        16 => key == id.0,
        32 => key.chunks_exact(2).zip(id.0).all(|(pair, byte)| {
            let nibble = |c: u8| (c as char).to_digit(16);
            matches!((nibble(pair[0]), nibble(pair[1])), (Some(h), Some(l)) if (h << 4 | l) as u8 == byte)
        }),
        _ => false,
    }
}

/// Why a message with `key` whose valid spans belong to `traces` (in any
/// order, repeated as often as they have spans) is not keyed by its trace,
/// or `None` if it is. A message without valid spans is not judged.
pub fn unkeyed<'a>(
    key: Option<&[u8]>,
    mut traces: impl Iterator<Item = &'a TraceId>,
) -> Option<Unkeyed> {
    let first = traces.next()?;
    let key = key.filter(|k| !k.is_empty());
    if key.is_none() {
        return Some(Unkeyed::NoKey);
    }
    if traces.any(|id| id != first) {
        return Some(Unkeyed::SeveralTraces);
    }
    match key {
        Some(k) if key_names(k, first) => None,
        _ => Some(Unkeyed::OtherKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: TraceId = TraceId([0xab; 16]);
    const B: TraceId = TraceId([0x01; 16]);

    #[test]
    fn a_message_keyed_by_its_one_trace_is_keyed() {
        let hex = A.to_hex();
        assert_eq!(unkeyed(Some(hex.as_bytes()), [A, A].iter()), None);
        let upper = hex.to_uppercase();
        assert_eq!(unkeyed(Some(upper.as_bytes()), [A].iter()), None);
        assert_eq!(unkeyed(Some(&A.0), [A].iter()), None, "raw bytes");
    }

    #[test]
    fn each_way_of_not_being_keyed_has_its_reason() {
        let hex = A.to_hex();
        assert_eq!(unkeyed(None, [A].iter()), Some(Unkeyed::NoKey));
        assert_eq!(unkeyed(Some(b""), [A].iter()), Some(Unkeyed::NoKey));
        assert_eq!(unkeyed(None, [A, B].iter()), Some(Unkeyed::NoKey));
        assert_eq!(
            unkeyed(Some(hex.as_bytes()), [A, B, A].iter()),
            Some(Unkeyed::SeveralTraces)
        );
        assert_eq!(
            unkeyed(Some(B.to_hex().as_bytes()), [A].iter()),
            Some(Unkeyed::OtherKey)
        );
        assert_eq!(
            unkeyed(Some(b"checkout-7"), [A].iter()),
            Some(Unkeyed::OtherKey)
        );
        assert_eq!(unkeyed(None, [].iter()), None, "no spans, no judgement");
    }

    proptest! {
        /// A key names a trace exactly when it is that trace's id, in hex
        /// of either case or as bytes.
        #[test]
        fn a_key_names_only_its_own_trace(id in any::<[u8; 16]>(), other in any::<[u8; 16]>(), upper in any::<bool>()) {
            let (id, other) = (TraceId(id), TraceId(other));
            let hex = if upper { id.to_hex().to_uppercase() } else { id.to_hex() };
            prop_assert!(key_names(hex.as_bytes(), &id));
            prop_assert!(key_names(&id.0, &id));
            prop_assert_eq!(key_names(hex.as_bytes(), &other), id == other);
            prop_assert_eq!(key_names(&id.0, &other), id == other);
        }

        /// Any key that is not 16 bytes or 32 hex characters names nothing.
        #[test]
        fn other_keys_name_no_trace(key in proptest::collection::vec(any::<u8>(), 0..40), id in any::<[u8; 16]>()) {
            let id = TraceId(id);
            let hexish = key.len() == 32 && key.iter().all(u8::is_ascii_hexdigit);
            if key.len() != 16 && !hexish {
                prop_assert!(!key_names(&key, &id));
            }
        }
    }
}
