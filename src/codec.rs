//! The one checked writer and reader behind every binary encoding of sitelog: record frames
//! (`storage::record`), Raft messages, entries and snapshots (`raft::wire`, `raft::entry`,
//! `raft::snapshot`), the client protocol (`node::protocol`), segment fetch and the handshake
//! (`net::fetch`, `net::handshake`).
//!
//! All integers are little-endian. The writer never cuts anything: a string, byte string or
//! list longer than its limit (or than its length prefix can say) is refused with
//! [`Error::TooLong`]. The reader never panics and never allocates by a length it read before
//! checking it against the bytes left and the limit: short input, over-long lengths, counts
//! over a limit, invalid values and trailing bytes are each a typed [`DecodeError`].

use crate::{Error, Result};

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends before the value does.
    #[error("{what}: {need} bytes needed, {left} left")]
    Short {
        /// What was being decoded.
        what: &'static str,
        /// Bytes the value needs.
        need: usize,
        /// Bytes left.
        left: usize,
    },
    /// A declared length or count is over its limit (or over what the input can hold).
    #[error("{what}: declared {count} over the limit {max}")]
    TooMany {
        /// What was being decoded.
        what: &'static str,
        /// The declared length or count.
        count: usize,
        /// The most allowed here.
        max: usize,
    },
    /// A value outside its domain (an unknown tag, a bool that is not 0/1, bad UTF-8).
    #[error("{what}: invalid value")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
    },
    /// Bytes left over after the whole message.
    #[error("{what}: {left} trailing bytes")]
    Trailing {
        /// What was being decoded.
        what: &'static str,
        /// Bytes left over.
        left: usize,
    },
}

/// Result of decoding.
pub type DecodeResult<T> = std::result::Result<T, DecodeError>;

/// Appends encoded values to a buffer; refuses (never cuts) what does not fit its prefix.
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Writer { out }
    }

    /// Writes one byte.
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    /// Writes a bool as one byte, 0 or 1.
    pub fn bool(&mut self, v: bool) {
        self.out.push(u8::from(v));
    }
    /// Writes a u16.
    pub fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    /// Writes a u32.
    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    /// Writes a u64.
    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    /// Writes bytes as they are (no length prefix).
    pub fn raw(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    /// Writes a u8 length or count `n` after checking it against `max` (at most 255).
    pub fn len_u8(&mut self, what: &'static str, n: usize, max: usize) -> Result<()> {
        let v = check_len(what, n, max.min(u8::MAX as usize))?;
        self.u8(v as u8);
        Ok(())
    }
    /// Writes a u16 length or count `n` after checking it against `max` (at most 65,535).
    pub fn len_u16(&mut self, what: &'static str, n: usize, max: usize) -> Result<()> {
        let v = check_len(what, n, max.min(u16::MAX as usize))?;
        self.u16(v as u16);
        Ok(())
    }
    /// Writes a u32 length or count `n` after checking it against `max`.
    pub fn len_u32(&mut self, what: &'static str, n: usize, max: usize) -> Result<()> {
        let v = check_len(what, n, max.min(u32::MAX as usize))?;
        self.u32(v as u32);
        Ok(())
    }

    /// Writes `u8 len, bytes` of a string of at most `max` bytes.
    pub fn str_u8(&mut self, what: &'static str, s: &str, max: usize) -> Result<()> {
        self.len_u8(what, s.len(), max)?;
        self.raw(s.as_bytes());
        Ok(())
    }
    /// Writes `u16 len, bytes` of a string of at most `max` bytes.
    pub fn str_u16(&mut self, what: &'static str, s: &str, max: usize) -> Result<()> {
        self.len_u16(what, s.len(), max)?;
        self.raw(s.as_bytes());
        Ok(())
    }
    /// Writes `u32 len, bytes` of at most `max` bytes.
    pub fn bytes_u32(&mut self, what: &'static str, b: &[u8], max: usize) -> Result<()> {
        self.len_u32(what, b.len(), max)?;
        self.raw(b);
        Ok(())
    }
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<usize> {
    if len > max {
        return Err(Error::TooLong { what, len, max });
    }
    Ok(len)
}

/// The longest prefix of `s` of at most `max_bytes` that ends on a character boundary. Only
/// for diagnostic texts (remote error messages), whose cap is part of their documented
/// format; data strings are refused by the writer instead.
pub fn clip_utf8(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Little-endian u32 at `at`; the caller has checked the bounds (fixed
/// layouts: record headers, superblock and metadata slots).
#[inline]
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Little-endian u64 at `at`; the caller has checked the bounds (fixed
/// layouts: record headers, superblock and metadata slots).
#[inline]
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reads encoded values from a byte slice, every read checked against what is left.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    whole_len: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader of `buf`; `what` names the message in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader {
            buf,
            whole_len: buf.len(),
            what,
        }
    }

    /// Bytes read so far (the position in the input given to [`Reader::new`]).
    pub fn position(&self) -> usize {
        self.whole_len - self.buf.len()
    }
    /// The bytes not read yet (without consuming them).
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// An [`DecodeError::Invalid`] for this message.
    pub fn invalid(&self) -> DecodeError {
        DecodeError::Invalid { what: self.what }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        if self.buf.len() < n {
            return Err(DecodeError::Short {
                what: self.what,
                need: n,
                left: self.buf.len(),
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.array::<1>()?[0])
    }
    /// Reads a bool (a byte that must be 0 or 1).
    pub fn bool(&mut self) -> DecodeResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.invalid()),
        }
    }
    /// Reads a u16.
    pub fn u16(&mut self) -> DecodeResult<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// Reads a u32.
    pub fn u32(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Reads a u64.
    pub fn u64(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Checks a declared count of items of at least `min_item_bytes` each against `max` and
    /// against what the input can still hold, before anything is allocated for them.
    pub fn check_count(&self, n: usize, max: usize, min_item_bytes: usize) -> DecodeResult<usize> {
        // An item of no bytes (a count of things that follow elsewhere) is bounded by `max`
        // alone.
        let fits = match min_item_bytes {
            0 => usize::MAX,
            m => self.buf.len() / m,
        };
        if n > max || n > fits {
            return Err(DecodeError::TooMany {
                what: self.what,
                count: n,
                max: max.min(fits),
            });
        }
        Ok(n)
    }
    /// Reads a u16 count, checked as [`Reader::check_count`] does.
    pub fn count_u16(&mut self, max: usize, min_item_bytes: usize) -> DecodeResult<usize> {
        let n = usize::from(self.u16()?);
        self.check_count(n, max, min_item_bytes)
    }
    /// Reads a u32 count, checked as [`Reader::check_count`] does.
    pub fn count_u32(&mut self, max: usize, min_item_bytes: usize) -> DecodeResult<usize> {
        let n = self.u32()? as usize;
        self.check_count(n, max, min_item_bytes)
    }

    /// Reads `u32 len, bytes` of at most `max` bytes.
    pub fn bytes_u32(&mut self, max: usize) -> DecodeResult<&'a [u8]> {
        let n = self.count_u32(max, 1)?;
        self.take(n)
    }
    /// Reads `u8 len, bytes` as a UTF-8 string.
    pub fn str_u8(&mut self) -> DecodeResult<String> {
        let n = usize::from(self.u8()?);
        let b = self.take(n)?;
        self.utf8(b)
    }
    /// Reads `u16 len, bytes` of at most `max` bytes as a UTF-8 string.
    pub fn str_u16(&mut self, max: usize) -> DecodeResult<String> {
        let n = self.count_u16(max, 1)?;
        let b = self.take(n)?;
        self.utf8(b)
    }
    /// Reads `u16 len, bytes` of at most `max` bytes as text, invalid UTF-8 replaced (for
    /// diagnostic texts from a peer, shown but never interpreted).
    pub fn text_u16(&mut self, max: usize) -> DecodeResult<String> {
        let n = self.count_u16(max, 1)?;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn utf8(&self, b: &[u8]) -> DecodeResult<String> {
        String::from_utf8(b.to_vec()).map_err(|_| self.invalid())
    }

    /// Ends the message: `v` if every byte was read.
    pub fn finish<T>(self, v: T) -> DecodeResult<T> {
        if !self.buf.is_empty() {
            return Err(DecodeError::Trailing {
                what: self.what,
                left: self.buf.len(),
            });
        }
        Ok(v)
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
