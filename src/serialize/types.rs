//! Encodings of the table's data types: key, entry, text and statistics.
//!
//! | type   | encoding                                           |
//! |--------|----------------------------------------------------|
//! | key    | `u16` length (1..=1024), bytes                      |
//! | data   | `u32` length (0..=8 MiB), bytes                     |
//! | entry  | key, `u64` version, data                            |
//! | text   | `u16` length (0..=1024), UTF-8 bytes                |
//! | list   | `u32` count, items                                  |
//! | stats  | `u16` count, then per field: text name, `u8` kind, value |

use super::{decode_data, encode_data, Codec, DecodeError, Reader};
use super::{KEY_BYTES_MAX, STATS_FIELDS_MAX, TEXT_BYTES_MAX};
#[cfg(feature = "arbitrary")]
use arbitrary::{Arbitrary, Unstructured};
use byteorder::{BigEndian, WriteBytesExt};
use std::fmt;

pub(crate) fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Lengths are validated against limits far below u32::MAX when values
    // are built (VALUE_BYTES_MAX, the frame limit), so this cannot truncate.
    #[allow(clippy::cast_possible_truncation)]
    let _ = out.write_u32::<BigEndian>(n as u32);
}

pub(crate) fn put_bytes_u32(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_bytes_u16(out: &mut Vec<u8>, bytes: &[u8]) {
    // Only keys and short texts, both checked below 2^16 when built.
    #[allow(clippy::cast_possible_truncation)]
    let _ = out.write_u16::<BigEndian>(bytes.len() as u16);
    out.extend_from_slice(bytes);
}

/// A key: 1..=[`KEY_BYTES_MAX`] arbitrary bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(KeyBytes);

/// Bytes of a key held inline (no allocation of their own): most keys are
/// short, so they live inside the map's node, where comparing them during
/// a search touches no other memory.
pub const KEY_INLINE_BYTES: usize = 24;

type KeyBytes = smallvec::SmallVec<[u8; KEY_INLINE_BYTES]>;

/// A key compares, hashes and orders exactly as its bytes (the derived
/// impls of a `Vec<u8>` newtype), so maps of keys can be searched by a
/// byte slice: a range scan starts at a bound that need not be a key.
impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl Key {
    /// Smallest possible encoding: a 2-byte length and one byte.
    pub const MIN_ENCODED_LEN: usize = 3;

    /// Validates the length; the error says which limit was broken.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Empty`] or [`DecodeError::TooLong`] (over
    /// [`KEY_BYTES_MAX`]).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Key, DecodeError> {
        Key::checked(KeyBytes::from_vec(bytes.into()))
    }

    /// The length checks every key passes, however it was built.
    fn checked(bytes: KeyBytes) -> Result<Key, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty { what: "key" });
        }
        if bytes.len() > KEY_BYTES_MAX {
            return Err(DecodeError::TooLong {
                what: "key",
                len: bytes.len(),
                max: KEY_BYTES_MAX,
            });
        }
        Ok(Key(bytes))
    }

    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.0.into_vec()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", String::from_utf8_lossy(&self.0))
    }
}

impl Key {
    /// Bytes its encoding takes: a `u16` length, then the key.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        2 + self.0.len()
    }
}

impl Codec for Key {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes_u16(out, &self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = r.len_u16("key", KEY_BYTES_MAX)?;
        // Straight from the input: no Vec for a key that fits inline.
        Key::checked(KeyBytes::from_slice(r.take(len, "key")?))
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> Arbitrary<'a> for Key {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = u.int_in_range(1..=KEY_BYTES_MAX.min(u.len().max(1)))?;
        let mut bytes = u.bytes(len.min(u.len()))?.to_vec();
        if bytes.is_empty() {
            bytes.push(u8::arbitrary(u)?);
        }
        Ok(Key(KeyBytes::from_vec(bytes)))
    }
}

/// One stored entry: key, the version (sequence number of the write that
/// produced it) and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Entry {
    pub key: Key,
    pub version: u64,
    pub value: Vec<u8>,
}

impl Entry {
    /// Key (3) + version (8) + empty data (4).
    pub const MIN_ENCODED_LEN: usize = Key::MIN_ENCODED_LEN + 8 + 4;
}

impl Entry {
    /// Bytes its encoding takes: key, `u64` version, `u32` length, value.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.key.encoded_len() + 8 + 4 + self.value.len()
    }
}

impl Codec for Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        self.key.encode(out);
        let _ = out.write_u64::<BigEndian>(self.version);
        encode_data(out, &self.value);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Entry {
            key: Key::decode(r)?,
            version: r.u64("entry version")?,
            value: decode_data(r)?,
        })
    }
}

/// Appends text: `u16` length and UTF-8 bytes, cut at [`TEXT_BYTES_MAX`]
/// on a character boundary (text is for humans; cutting is harmless).
pub fn encode_text(out: &mut Vec<u8>, text: &str) {
    put_bytes_u16(out, clip_text(text).as_bytes());
}

/// Reads text written by [`encode_text`].
pub fn decode_text(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    let len = r.len_u16(what, TEXT_BYTES_MAX)?;
    let bytes = r.take(len, what)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8 { what })
}

/// The longest prefix of `text` that fits [`TEXT_BYTES_MAX`].
pub fn clip_text(text: &str) -> &str {
    if text.len() <= TEXT_BYTES_MAX {
        return text;
    }
    let mut end = TEXT_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(feature = "arbitrary")]
/// A text value that already fits, for `Arbitrary` message generation.
pub(crate) fn arbitrary_text(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let s = String::arbitrary(u)?;
    Ok(clip_text(&s).to_string())
}

/// One named statistic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub name: String,
    pub value: StatValue,
}

/// A statistic is a counter or a short text (a role, an address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatValue {
    Count(u64),
    Text(String),
}

/// Statistics as an ordered list of named fields, so that servers can add
/// fields without a protocol change and old clients show what they get.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    pub fields: Vec<Stat>,
}

impl Stats {
    pub fn count(&mut self, name: &str, value: u64) {
        self.push(name, StatValue::Count(value));
    }

    pub fn text(&mut self, name: &str, value: &str) {
        self.push(name, StatValue::Text(clip_text(value).to_string()));
    }

    fn push(&mut self, name: &str, value: StatValue) {
        if self.fields.len() < STATS_FIELDS_MAX {
            let name = clip_text(name).to_string();
            self.fields.push(Stat { name, value });
        }
    }

    /// The counter called `name`, if present.
    #[must_use]
    pub fn get_count(&self, name: &str) -> Option<u64> {
        self.fields.iter().find_map(|f| match &f.value {
            StatValue::Count(n) if f.name == name => Some(*n),
            _ => None,
        })
    }

    /// The text field called `name`, if present.
    #[must_use]
    pub fn get_text(&self, name: &str) -> Option<&str> {
        self.fields.iter().find_map(|f| match &f.value {
            StatValue::Text(t) if f.name == name => Some(t.as_str()),
            _ => None,
        })
    }
}

const STAT_KIND_COUNT: u8 = 0;
const STAT_KIND_TEXT: u8 = 1;

impl Codec for Stats {
    fn encode(&self, out: &mut Vec<u8>) {
        // `Stats::count`/`text` keep at most STATS_FIELDS_MAX (< 2^16).
        #[allow(clippy::cast_possible_truncation)]
        let _ = out.write_u16::<BigEndian>(self.fields.len() as u16);
        for field in &self.fields {
            encode_text(out, &field.name);
            match &field.value {
                StatValue::Count(n) => {
                    out.push(STAT_KIND_COUNT);
                    let _ = out.write_u64::<BigEndian>(*n);
                }
                StatValue::Text(t) => {
                    out.push(STAT_KIND_TEXT);
                    encode_text(out, t);
                }
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.len_u16("stats count", STATS_FIELDS_MAX)?;
        let mut fields = Vec::with_capacity(count.min(r.remaining() / 3));
        for _ in 0..count {
            let name = decode_text(r, "stat name")?;
            let value = match r.u8("stat kind")? {
                STAT_KIND_COUNT => StatValue::Count(r.u64("stat value")?),
                STAT_KIND_TEXT => StatValue::Text(decode_text(r, "stat text")?),
                other => {
                    return Err(DecodeError::Invalid {
                        what: "stat kind",
                        value: other.into(),
                    })
                }
            };
            fields.push(Stat { name, value });
        }
        Ok(Stats { fields })
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> Arbitrary<'a> for Stats {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut stats = Stats::default();
        let n = u.int_in_range(0..=8)?;
        for _ in 0..n {
            let name = arbitrary_text(u)?;
            if bool::arbitrary(u)? {
                stats.count(&name, u64::arbitrary(u)?);
            } else {
                stats.text(&name, &arbitrary_text(u)?);
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode_list, encode_list, VALUE_BYTES_MAX};
    use super::*;

    fn key(s: &str) -> Key {
        Key::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn key_bounds_are_enforced_both_ways() {
        assert!(Key::new(vec![]).is_err());
        assert!(Key::new(vec![0; KEY_BYTES_MAX]).is_ok());
        assert!(Key::new(vec![0; KEY_BYTES_MAX + 1]).is_err());
        // A zero-length key on the wire is rejected too.
        assert_eq!(
            Key::decode_exact(&[0, 0]),
            Err(DecodeError::Empty { what: "key" })
        );
    }

    #[test]
    fn encoded_lengths_match_the_encodings() {
        let entries: Vec<Entry> = [("a", 0), ("bb", 5), ("κλειδί", 70_000)]
            .into_iter()
            .map(|(k, n)| Entry {
                key: key(k),
                version: n as u64,
                value: vec![7; n],
            })
            .collect();
        let mut keys_out = Vec::new();
        let keys: Vec<Key> = entries.iter().map(|e| e.key.clone()).collect();
        encode_list(&mut keys_out, &keys);
        let mut entries_out = Vec::new();
        encode_list(&mut entries_out, &entries);
        for e in &entries {
            assert_eq!(e.encoded_len(), e.to_bytes().len());
            assert_eq!(e.key.encoded_len(), e.key.to_bytes().len());
        }
        use super::super::list_encoded_len;
        assert_eq!(
            list_encoded_len(keys.iter().map(Key::encoded_len)),
            keys_out.len()
        );
        assert_eq!(
            list_encoded_len(entries.iter().map(Entry::encoded_len)),
            entries_out.len()
        );
    }

    #[test]
    fn entry_round_trips_with_empty_value() {
        let e = Entry {
            key: key("a"),
            version: 7,
            value: vec![],
        };
        let bytes = e.to_bytes();
        assert_eq!(bytes, [0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0]);
        assert_eq!(bytes.len(), Entry::MIN_ENCODED_LEN);
        assert_eq!(Entry::decode_exact(&bytes).unwrap(), e);
    }

    #[test]
    fn data_length_over_the_limit_is_refused_before_reading() {
        let mut bytes = vec![];
        put_u32(&mut bytes, VALUE_BYTES_MAX + 1);
        let err = decode_data(&mut Reader::new(&bytes)).unwrap_err();
        assert!(matches!(err, DecodeError::TooLong { what: "data", .. }));
    }

    #[test]
    fn key_list_round_trips_and_rejects_forged_counts() {
        let keys = vec![key("x"), key("yy")];
        let mut bytes = vec![];
        encode_list(&mut bytes, &keys);
        let mut r = Reader::new(&bytes);
        let back: Vec<Key> = decode_list(&mut r, "keys", Key::MIN_ENCODED_LEN).unwrap();
        assert_eq!(back, keys);
        r.finish().unwrap();
        let forged = [0xff, 0xff, 0xff, 0xff, 0, 1, b'a'];
        let err = decode_list::<Key>(&mut Reader::new(&forged), "keys", 3).unwrap_err();
        assert!(matches!(err, DecodeError::TooLong { .. }));
    }

    #[test]
    fn stats_round_trip_and_reject_unknown_kinds() {
        let mut s = Stats::default();
        s.count("ops", 3);
        s.text("role", "head");
        assert_eq!(Stats::decode_exact(&s.to_bytes()).unwrap(), s);
        assert_eq!(s.get_count("ops"), Some(3));
        assert_eq!(s.get_text("role"), Some("head"));
        let bad = [0, 1, 0, 1, b'x', 9];
        assert!(matches!(
            Stats::decode_exact(&bad),
            Err(DecodeError::Invalid {
                what: "stat kind",
                ..
            })
        ));
    }

    #[test]
    fn text_is_clipped_on_a_char_boundary() {
        let long = "é".repeat(TEXT_BYTES_MAX);
        let clipped = clip_text(&long);
        assert!(clipped.len() <= TEXT_BYTES_MAX);
        assert!(clipped.len() > TEXT_BYTES_MAX - 2);
    }
}
