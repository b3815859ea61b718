//! The byte-level serializer: a bounds-checked reader, the [`Codec`] trait
//! and the encodings of the table's data types.
//!
//! Every multi-byte integer is big-endian. Every length prefix is checked
//! against a named limit *and* against the bytes actually left in the input
//! before anything is allocated, so a hostile length can never make the
//! decoder allocate more than the frame it was handed.

mod reader;
pub(crate) mod types;

pub use reader::Reader;
pub use types::{Entry, Key, Stat, StatValue, Stats};

use thiserror::Error;

/// Largest key, in bytes. Keys are 1..=`KEY_BYTES_MAX` arbitrary bytes.
pub const KEY_BYTES_MAX: usize = 1024;
/// Largest value, in bytes. Values may be empty.
pub const VALUE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Largest human-readable text field (error messages, stat names, addresses).
pub const TEXT_BYTES_MAX: usize = 1024;
/// Most named counters in one statistics record.
pub const STATS_FIELDS_MAX: usize = 256;

/// Why a byte string could not be decoded. Decoding never panics: every
/// malformed input maps to one of these.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("input ended {needed} byte(s) early while reading {what}")]
    Truncated { what: &'static str, needed: usize },
    #[error("{what} is {len} bytes, over the limit of {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{count} trailing byte(s) after the message")]
    TrailingBytes { count: usize },
    #[error("invalid {what}: {value}")]
    Invalid { what: &'static str, value: u64 },
    #[error("{what} is not valid UTF-8")]
    NotUtf8 { what: &'static str },
}

/// A type with a wire encoding. Encoding cannot fail (values are validated
/// when they are built); decoding is fallible and bounded.
pub trait Codec: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value from `r`, advancing it past the bytes consumed.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the bytes do not hold a valid value: truncated,
    /// over a limit, or an invalid field.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Decodes a whole buffer: leftover bytes are an error.
    ///
    /// # Errors
    ///
    /// As [`Codec::decode`], and [`DecodeError::TrailingBytes`] when bytes are
    /// left over.
    fn decode_exact(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let value = Self::decode(&mut r)?;
        r.finish()?;
        Ok(value)
    }

    /// Encodes into a fresh buffer.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Appends data: a `u32` length, then the bytes.
pub fn encode_data(out: &mut Vec<u8>, data: &[u8]) {
    types::put_bytes_u32(out, data);
}

/// Reads data: a `u32` length (at most [`VALUE_BYTES_MAX`]), then the bytes.
///
/// # Errors
///
/// [`DecodeError`] when truncated or over [`VALUE_BYTES_MAX`].
pub fn decode_data(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let len = r.len_u32("data", VALUE_BYTES_MAX)?;
    Ok(r.take(len, "data")?.to_vec())
}

/// Appends a list: a `u32` count, then each item.
pub fn encode_list<T: Codec>(out: &mut Vec<u8>, items: &[T]) {
    types::put_u32(out, items.len());
    for item in items {
        item.encode(out);
    }
}

/// Bytes [`encode_list`] would append, computed without encoding: lets the
/// server refuse an over-large GETKEYS/GETTABLE reply before building it.
pub fn list_encoded_len(items_encoded_len: impl Iterator<Item = usize>) -> usize {
    4 + items_encoded_len.sum::<usize>()
}

/// Reads a list. The count is checked against the bytes left (each item
/// needs at least `min_item_bytes`) before the vector is allocated, so a
/// forged count cannot reserve more memory than the input could fill.
///
/// # Errors
///
/// [`DecodeError`] when truncated, when the count is over `max` (or more
/// than the bytes left could hold), or when an item does not decode.
pub fn decode_list<T: Codec>(
    r: &mut Reader<'_>,
    what: &'static str,
    min_item_bytes: usize,
) -> Result<Vec<T>, DecodeError> {
    decode_list_within(r, what, min_item_bytes, 0..=usize::MAX)
}

/// [`decode_list`] with the item count held to `counts`, checked before
/// anything is allocated.
///
/// # Errors
///
/// As [`decode_list`], and [`DecodeError::Invalid`] for a count outside
/// `counts`.
pub fn decode_list_within<T: Codec>(
    r: &mut Reader<'_>,
    what: &'static str,
    min_item_bytes: usize,
    counts: std::ops::RangeInclusive<usize>,
) -> Result<Vec<T>, DecodeError> {
    let count = r.count_u32(what, min_item_bytes)?;
    if !counts.contains(&count) {
        return Err(DecodeError::Invalid {
            what,
            value: count as u64,
        });
    }
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        items.push(T::decode(r)?);
    }
    Ok(items)
}
