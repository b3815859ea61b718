//! A bounds-checked cursor over a byte slice. Every read either returns the
//! bytes it promised or a [`DecodeError`]; nothing here can panic.

use super::DecodeError;
use byteorder::{BigEndian, ByteOrder};

/// Reads big-endian fields from a borrowed buffer, front to back.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes exactly `n` bytes, or reports how many were missing.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] when fewer than `n` bytes are left.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let left = self.remaining();
        if n > left {
            return Err(DecodeError::Truncated {
                what,
                needed: n - left,
            });
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// One byte.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] at the end of the input.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    /// A big-endian `u16`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] when fewer bytes are left than it needs.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(BigEndian::read_u16(self.take(2, what)?))
    }

    /// A big-endian `u32`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] when fewer bytes are left than it needs.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(BigEndian::read_u32(self.take(4, what)?))
    }

    /// A big-endian `u64`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] when fewer bytes are left than it needs.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(BigEndian::read_u64(self.take(8, what)?))
    }

    /// A `u32` length prefix, capped at `max` as it is read.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`], or [`DecodeError::TooLong`] when the length
    /// is over `max`.
    pub fn len_u32(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let len = self.u32(what)? as usize;
        check_len(what, len, max)
    }

    /// A `u16` length prefix, capped at `max` as it is read.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`], or [`DecodeError::TooLong`] when the length
    /// is over `max`.
    pub fn len_u16(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let len = self.u16(what)? as usize;
        check_len(what, len, max)
    }

    /// A `u32` item count. Each item takes at least `min_item_bytes`, so a
    /// count the remaining input cannot hold is rejected before allocation.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`], or [`DecodeError::TooLong`] when the count
    /// is over `max` or more than the bytes left could hold.
    pub fn count_u32(
        &mut self,
        what: &'static str,
        min_item_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let count = self.u32(what)? as usize;
        let max = self.remaining() / min_item_bytes.max(1);
        check_len(what, count, max)
    }

    /// Succeeds only if every byte has been consumed.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TrailingBytes`] when bytes are left over.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<usize, DecodeError> {
    if len > max {
        return Err(DecodeError::TooLong { what, len, max });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_fields_in_order() {
        let mut r = Reader::new(&[1, 0, 2, 0, 0, 0, 3, 9]);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 2);
        assert_eq!(r.u32("c").unwrap(), 3);
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes { count: 1 }));
    }

    #[test]
    fn take_past_the_end_reports_the_shortfall() {
        let mut r = Reader::new(&[1, 2]);
        assert_eq!(
            r.u32("x"),
            Err(DecodeError::Truncated {
                what: "x",
                needed: 2
            })
        );
    }

    #[test]
    fn counts_are_capped_by_the_bytes_left() {
        // Claims 1000 items of at least 4 bytes with only 8 bytes left.
        let mut r = Reader::new(&[0, 0, 3, 232, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(
            r.count_u32("list", 4),
            Err(DecodeError::TooLong { max: 2, .. })
        ));
    }

    #[test]
    fn lengths_are_capped_at_the_named_limit() {
        let mut r = Reader::new(&[0, 9]);
        assert!(matches!(
            r.len_u16("key", 8),
            Err(DecodeError::TooLong { len: 9, max: 8, .. })
        ));
    }
}
