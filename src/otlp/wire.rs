//! A minimal protobuf wire-format reader and writer.
//!
//! The hot path reads only the OTLP fields the rules need, straight from the
//! message bytes, and keeps every span as a slice of the message buffer. This
//! module is the whole of the protobuf knowledge that needs: varints, tags and
//! length-delimited fields. It never allocates.

use thiserror::Error;

/// Why a buffer is not well-formed protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    /// A varint or a length-delimited field runs past the end of the buffer.
    #[error("truncated protobuf: a field runs past the end of the message")]
    Truncated,
    /// A varint longer than ten bytes, a wire type protobuf does not define, or a
    /// field number of zero.
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
}

/// Protobuf wire types (group wire types 3 and 4 are deprecated and rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

/// One field read from a message: its number and its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

/// Iterates the fields of one protobuf message, yielding `(field number, value)`
/// together with the byte range the value occupies (for `Len`, the payload).
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Position of the next unread byte, relative to the start of the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        // Tags, lengths of short fields and small numbers: one byte.
        match self.buf.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            _ => self.long_varint(),
        }
    }

    fn long_varint(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(WireError::Truncated);
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::Malformed("varint longer than 10 bytes"))
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let slice = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    /// The next field, or `None` at the end of the message.
    #[allow(clippy::should_implement_trait)]
    #[inline]
    pub fn next(&mut self) -> Result<Option<(u32, Value<'a>)>, WireError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field =
            u32::try_from(tag >> 3).map_err(|_| WireError::Malformed("field number too large"))?;
        if field == 0 {
            return Err(WireError::Malformed("field number 0"));
        }
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Value::Fixed64(u64::from_le_bytes(
                    b.try_into().map_err(|_| WireError::Truncated)?,
                ))
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
                Value::Len(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes(
                    b.try_into().map_err(|_| WireError::Truncated)?,
                ))
            }
            _ => return Err(WireError::Malformed("unknown wire type")),
        };
        Ok(Some((field, value)))
    }
}

/// Offset of `inner` within `outer`; `inner` must be a sub-slice of `outer`.
pub fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    inner.as_ptr() as usize - outer.as_ptr() as usize
}

/// Appends a varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a tag for `field` with `wire`.
pub fn put_tag(out: &mut Vec<u8>, field: u32, wire: WireType) {
    let w = match wire {
        WireType::Varint => 0,
        WireType::Fixed64 => 1,
        WireType::Len => 2,
        WireType::Fixed32 => 5,
    };
    put_varint(out, (u64::from(field) << 3) | w);
}

/// Appends a length-delimited field.
pub fn put_len(out: &mut Vec<u8>, field: u32, payload: &[u8]) {
    put_tag(out, field, WireType::Len);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Bytes a length-delimited field of a field number under 16 takes with a
/// payload of `n` bytes: its tag, its length and the payload.
pub fn len_field_size(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

/// Number of bytes `v` takes as a varint.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_length() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "length of {v}");
            let mut tagged = Vec::new();
            put_tag(&mut tagged, 1, WireType::Varint);
            tagged.extend_from_slice(&out);
            let mut f = Fields::new(&tagged);
            assert_eq!(f.next(), Ok(Some((1, Value::Varint(v)))));
            assert_eq!(f.next(), Ok(None));
        }
    }

    #[test]
    fn truncated_length_is_reported() {
        let mut out = Vec::new();
        put_len(&mut out, 2, b"hello");
        out.truncate(out.len() - 1);
        assert_eq!(Fields::new(&out).next(), Err(WireError::Truncated));
    }

    #[test]
    fn unknown_wire_type_and_field_zero_are_malformed() {
        assert!(matches!(
            Fields::new(&[0x0b]).next(),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            Fields::new(&[0x00, 0x01]).next(),
            Err(WireError::Malformed(_))
        ));
    }
}
