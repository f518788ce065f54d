//! Pure decoding of the logical replication wire format: no I/O, no catalog lookups.
//!
//! Two layers, because Postgres nests them: [`copy_data`] unwraps the streaming-replication
//! CopyData envelope (`XLogData`, keepalives) and builds standby status replies;
//! [`decode()`] turns an `XLogData` payload into a [`LogicalMessage`] (protocol versions 1–4).
//!
//! Everything here treats the server as untrusted input: any byte string yields either a
//! message or a [`DecodeError`], never a panic, and row values are zero-copy slices of the
//! received buffer so the hot path allocates only the column vector.

pub mod copy_data;
pub mod decode;
pub mod message;

pub use copy_data::{
    parse_copy_data, pg_epoch_micros_now, standby_status_update, ReplicationMessage,
};
pub use decode::{decode, message_kind, DecodeError};
pub use message::*;

use bytes::Bytes;

use crate::lsn::Lsn;

/// Bounds-checked cursor over one message. `bytes::Buf` panics on short input, and every
/// read here must instead become an error naming the message and field that ran out.
#[derive(Debug)]
struct Reader {
    buf: Bytes,
    pos: usize,
    kind: &'static str,
}

impl Reader {
    /// Starts just past the one-byte tag the caller already dispatched on.
    fn after_tag(buf: Bytes, kind: &'static str) -> Self {
        let pos = buf.len().min(1);
        Reader { buf, pos, kind }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn rest(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn truncated(&self, field: &'static str, needed: usize) -> DecodeError {
        DecodeError::Truncated {
            kind: self.kind,
            field,
            needed,
            remaining: self.remaining(),
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        match self.rest().first_chunk::<N>() {
            Some(a) => {
                let a = *a;
                self.pos += N;
                Ok(a)
            }
            None => Err(self.truncated(field, N)),
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(field).map(|[b]| b)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_be_bytes)
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    fn lsn(&mut self, field: &'static str) -> Result<Lsn, DecodeError> {
        self.u64(field).map(Lsn)
    }

    /// A count or length sent as Int32; the server never sends a negative one, so a
    /// negative value means corruption, not "empty".
    fn len_i32(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let len = self.i32(field)?;
        usize::try_from(len).map_err(|_| DecodeError::NegativeLength {
            kind: self.kind,
            field,
            len,
        })
    }

    /// `len` bytes as a view into the original buffer (no copy).
    fn bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        if len > self.remaining() {
            return Err(self.truncated(field, len));
        }
        let start = self.pos;
        self.pos += len;
        Ok(self.buf.slice(start..self.pos))
    }

    /// Everything left, for payloads whose length is implied by the envelope.
    fn take_rest(&mut self) -> Bytes {
        let start = self.pos;
        self.pos = self.buf.len();
        self.buf.slice(start..)
    }

    /// A NUL-terminated name. Names become `String` because consumers key maps by them and
    /// compare them with SQL identifiers; a non-UTF-8 name would break both silently.
    fn cstr(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let rest = self.rest();
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::MissingNul {
                kind: self.kind,
                field,
            });
        };
        let s = std::str::from_utf8(&rest[..nul]).map_err(|_| DecodeError::InvalidUtf8 {
            kind: self.kind,
            field,
        })?;
        let s = s.to_owned();
        self.pos += nul + 1;
        Ok(s)
    }

    /// Trailing bytes mean we misread the layout (or the server speaks a newer protocol),
    /// and silently ignoring them would hide exactly that.
    fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            remaining => Err(DecodeError::UnexpectedTrailing {
                kind: self.kind,
                remaining,
            }),
        }
    }
}

/// Big-endian byte-string builder for hand-made test messages.
#[cfg(test)]
#[derive(Debug, Default)]
struct Wire(Vec<u8>);

#[cfg(test)]
impl Wire {
    fn tag(t: u8) -> Self {
        Wire(vec![t])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    fn cstr(self, s: &str) -> Self {
        self.raw(s.as_bytes()).u8(0)
    }
    fn bytes(self) -> Bytes {
        Bytes::from(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(b: &'static [u8]) -> Reader {
        Reader::after_tag(Bytes::from_static(b), "Test")
    }

    #[test]
    fn reads_big_endian_fields_in_order() {
        let mut r = reader(b"X\x01\x00\x02\xff\xff\xff\xfe\x00\x00\x00\x00\x00\x00\x00\x07ab\0");
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 2);
        assert_eq!(r.i32("c").unwrap(), -2);
        assert_eq!(r.lsn("d").unwrap(), Lsn(7));
        assert_eq!(r.cstr("e").unwrap(), "ab");
        r.finish().unwrap();
    }

    #[test]
    fn short_reads_are_errors_that_name_the_field() {
        let mut r = reader(b"X\x00\x01");
        assert_eq!(
            r.u32("relation id"),
            Err(DecodeError::Truncated {
                kind: "Test",
                field: "relation id",
                needed: 4,
                remaining: 2
            })
        );
        // A failed read consumes nothing.
        assert_eq!(r.u16("x").unwrap(), 1);
    }

    #[test]
    fn bytes_are_views_into_the_input() {
        let input = Bytes::from_static(b"Xhello");
        let mut r = Reader::after_tag(input.clone(), "Test");
        let got = r.bytes(5, "v").unwrap();
        assert_eq!(got.as_ptr(), input[1..].as_ptr());
        assert!(r.bytes(1, "v").is_err());
        assert!(r.bytes(usize::MAX, "v").is_err());
    }

    #[test]
    fn cstr_needs_nul_and_utf8() {
        assert!(matches!(
            reader(b"Xabc").cstr("n"),
            Err(DecodeError::MissingNul { field: "n", .. })
        ));
        assert!(matches!(
            reader(b"X\xff\0").cstr("n"),
            Err(DecodeError::InvalidUtf8 { field: "n", .. })
        ));
        assert_eq!(reader(b"X\0").cstr("n").unwrap(), "");
    }

    #[test]
    fn negative_lengths_are_rejected() {
        assert!(matches!(
            reader(b"X\xff\xff\xff\xff").len_i32("len"),
            Err(DecodeError::NegativeLength { len: -1, .. })
        ));
    }

    #[test]
    fn finish_rejects_leftovers() {
        assert_eq!(
            reader(b"X\x00").finish(),
            Err(DecodeError::UnexpectedTrailing {
                kind: "Test",
                remaining: 1
            })
        );
        assert!(reader(b"").finish().is_ok());
    }
}
