//! The shard map (spec §5.8): which chain owns which range of keys.
//!
//! Ranges are ordered by their first key and cover the whole key space:
//! range `i` holds the keys `k` with `start_i <= k < start_{i+1}` (bytes
//! compared lexicographically), the first starts at the empty key and the
//! last has no end. Ordered ranges rather than hash slots, so that a range
//! scan touches the chains it names and a split is a new boundary.
//!
//! The map lives in ZooKeeper as the data of the cluster root, as text
//! (readable with `zkCli get`), and is untrusted input: every line is
//! checked, lengths and counts are capped as they are read, and with a
//! cluster secret it must carry a signature over the root and the text.

use crate::auth::{hex, unhex, Secret};
use crate::serialize::KEY_BYTES_MAX;
use thiserror::Error;

/// Most ranges a map may have.
pub const RANGES_MAX: usize = 256;
/// Longest map data read (256 ranges of 1024-byte boundaries in hex and
/// 64-byte names fit, under ZooKeeper's 1 MiB node limit).
pub const MAP_BYTES_MAX: usize = 640 * 1024;
/// Longest chain name; names are `[A-Za-z0-9_-]`, and a chain's root is
/// the cluster root followed by `/name`.
pub const CHAIN_NAME_BYTES_MAX: usize = 64;

const HEADER: &str = "shard-map ";
const RANGE: &str = "range ";
const SIGNATURE_PREFIX: &str = "sig:";
const SIGNATURE_LABEL: &str = "shard map";

/// Why map data or a proposed map is not a valid map.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MapError {
    #[error("shard map data over {MAP_BYTES_MAX} bytes")]
    TooLong,
    #[error("shard map is not UTF-8 text")]
    NotText,
    #[error("shard map line {line}: {why}")]
    BadLine { line: usize, why: &'static str },
    #[error("shard map has no ranges")]
    Empty,
    #[error("shard map has more than {RANGES_MAX} ranges")]
    TooManyRanges,
    #[error("shard map ranges must start with the empty key and rise strictly")]
    Unordered,
    #[error("chain name {0:?} is empty, too long, or not [A-Za-z0-9_-]")]
    BadChainName(String),
    #[error("shard map is not signed")]
    Unsigned,
    #[error("shard map signature does not verify (not written by a cluster member)")]
    BadSignature,
}

/// One range: its first key and the chain that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub start: Vec<u8>,
    pub chain: String,
}

/// A version of the map. Versions only grow: a member or client holding
/// a lower one than it is shown refreshes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    pub version: u64,
    ranges: Vec<Range>,
}

impl ShardMap {
    /// A map from ranges ordered by start.
    ///
    /// # Errors
    ///
    /// [`MapError`] when the ranges do not start at the empty key, do not
    /// rise strictly, are too many, or name a chain badly.
    pub fn new(version: u64, ranges: Vec<Range>) -> Result<ShardMap, MapError> {
        if ranges.is_empty() {
            return Err(MapError::Empty);
        }
        if ranges.len() > RANGES_MAX {
            return Err(MapError::TooManyRanges);
        }
        if !ranges[0].start.is_empty()
            || ranges.windows(2).any(|w| w[0].start >= w[1].start)
            || ranges.iter().any(|r| r.start.len() > KEY_BYTES_MAX)
        {
            return Err(MapError::Unordered);
        }
        if let Some(bad) = ranges.iter().find(|r| !valid_chain_name(&r.chain)) {
            return Err(MapError::BadChainName(bad.chain.clone()));
        }
        Ok(ShardMap { version, ranges })
    }

    /// A map that splits the key space at `boundaries` (ascending) and
    /// gives the pieces to `chains` in turn.
    ///
    /// # Errors
    ///
    /// As [`ShardMap::new`]; also when `chains` is empty.
    pub fn split(
        version: u64,
        chains: &[String],
        boundaries: &[Vec<u8>],
    ) -> Result<ShardMap, MapError> {
        if chains.is_empty() {
            return Err(MapError::Empty);
        }
        let starts = std::iter::once(Vec::new()).chain(boundaries.iter().cloned());
        let ranges = starts
            .enumerate()
            .map(|(i, start)| Range {
                start,
                chain: chains[i % chains.len()].clone(),
            })
            .collect();
        ShardMap::new(version, ranges)
    }

    /// The ranges, ordered by start.
    #[must_use]
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// The range holding `key`, and its index.
    #[must_use]
    pub fn range_of(&self, key: &[u8]) -> (usize, &Range) {
        // The first range starts at the empty key, so at least one start is
        // <= key and the index is at least 1.
        let i = self.ranges.partition_point(|r| r.start.as_slice() <= key) - 1;
        (i, &self.ranges[i])
    }

    /// The chain owning `key`.
    #[must_use]
    pub fn chain_of(&self, key: &[u8]) -> &str {
        &self.range_of(key).1.chain
    }

    /// The end of range `i` (exclusive); `None` for the last.
    #[must_use]
    pub fn end_of(&self, i: usize) -> Option<&[u8]> {
        self.ranges.get(i + 1).map(|r| r.start.as_slice())
    }

    /// Range `i` for people: `["h", "p")`, keys shown as (lossy) text,
    /// `(end)` for no end.
    #[must_use]
    pub fn range_text(&self, i: usize) -> String {
        let show = |k: &[u8]| format!("{:?}", String::from_utf8_lossy(k));
        let end = self.end_of(i).map_or("(end)".to_string(), show);
        format!("[{}, {end})", show(&self.ranges[i].start))
    }

    /// Every chain named, once each, in the order of its first range.
    #[must_use]
    pub fn chains(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.ranges {
            if !out.contains(&r.chain.as_str()) {
                out.push(&r.chain);
            }
        }
        out
    }

    /// The map's data in ZooKeeper: `shard-map <version>`, one `range
    /// <start in hex, or -> <chain>` line per range, and with a secret a
    /// last line `sig:<hex>` over the root and every line before it.
    #[must_use]
    pub fn encode(&self, secret: Option<&Secret>, root: &str) -> Vec<u8> {
        let mut text = format!("{HEADER}{}\n", self.version);
        for r in &self.ranges {
            let start = if r.start.is_empty() {
                "-".to_string()
            } else {
                hex(&r.start)
            };
            text.push_str(&format!("{RANGE}{start} {}\n", r.chain));
        }
        if let Some(s) = secret {
            let tag = hex(&signature(s, root, &text));
            text.push_str(SIGNATURE_PREFIX);
            text.push_str(&tag);
        }
        text.into_bytes()
    }

    /// Parses and checks map data read from `root`. With a secret, data
    /// that does not carry its signature is refused.
    ///
    /// # Errors
    ///
    /// [`MapError`] naming the first thing wrong.
    pub fn decode(secret: Option<&Secret>, root: &str, data: &[u8]) -> Result<ShardMap, MapError> {
        if data.len() > MAP_BYTES_MAX {
            return Err(MapError::TooLong);
        }
        let text = std::str::from_utf8(data).map_err(|_| MapError::NotText)?;
        let (body, sig) = match text.rfind(SIGNATURE_PREFIX) {
            Some(at) if text[..at].ends_with('\n') => (&text[..at], Some(text[at + 4..].trim())),
            _ => (text, None),
        };
        if let Some(s) = secret {
            let tag = unhex(sig.ok_or(MapError::Unsigned)?).ok_or(MapError::BadSignature)?;
            let key = Secret::new(s.derive(SIGNATURE_LABEL).to_vec());
            if !key.verify(&[root.as_bytes(), b"\0", body.as_bytes()], &tag) {
                return Err(MapError::BadSignature);
            }
        }
        let mut lines = body.lines().enumerate().map(|(i, l)| (i + 1, l));
        let bad = |line, why| MapError::BadLine { line, why };
        let (n, first) = lines.next().ok_or(MapError::Empty)?;
        let version = first
            .strip_prefix(HEADER)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(bad(n, "expected `shard-map <version>`"))?;
        let mut ranges = Vec::new();
        for (n, line) in lines {
            if ranges.len() == RANGES_MAX {
                return Err(MapError::TooManyRanges);
            }
            let rest = line
                .strip_prefix(RANGE)
                .ok_or(bad(n, "expected `range <start> <chain>`"))?;
            let (start, chain) = rest
                .split_once(' ')
                .ok_or(bad(n, "expected `range <start> <chain>`"))?;
            let start = match start {
                "-" => Vec::new(),
                h => unhex(h)
                    .filter(|k| !k.is_empty())
                    .ok_or(bad(n, "start is not hex"))?,
            };
            ranges.push(Range {
                start,
                chain: chain.to_string(),
            });
        }
        ShardMap::new(version, ranges)
    }
}

fn valid_chain_name(name: &str) -> bool {
    (1..=CHAIN_NAME_BYTES_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn signature(secret: &Secret, root: &str, body: &str) -> [u8; 32] {
    let key = secret.derive(SIGNATURE_LABEL);
    crate::auth::hmac_parts(&key, &[root.as_bytes(), b"\0", body.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> ShardMap {
        let chains = ["a", "b", "c"].map(String::from);
        ShardMap::split(1, &chains, &[b"h".to_vec(), b"p".to_vec()]).unwrap()
    }

    #[test]
    fn keys_go_to_the_range_whose_start_is_the_greatest_at_or_below_them() {
        let m = three();
        assert_eq!(m.chain_of(b"\0"), "a");
        assert_eq!(m.chain_of(b"apple"), "a");
        assert_eq!(
            m.chain_of(b"h"),
            "b",
            "a boundary belongs to the range it starts"
        );
        assert_eq!(m.chain_of(b"gzzz"), "a");
        assert_eq!(m.chain_of(b"ozzz"), "b");
        assert_eq!(m.chain_of(b"p"), "c");
        assert_eq!(m.chain_of(&[0xff; 1024]), "c");
        assert_eq!(m.end_of(0), Some(&b"h"[..]));
        assert_eq!(m.end_of(2), None);
        assert_eq!(m.chains(), ["a", "b", "c"]);
    }

    #[test]
    fn maps_round_trip_and_a_forged_or_unsigned_one_is_refused() {
        let secret = Secret::new(b"s3cret".to_vec());
        let m = three();
        let data = m.encode(Some(&secret), "/cluster");
        assert_eq!(
            ShardMap::decode(Some(&secret), "/cluster", &data),
            Ok(m.clone())
        );
        assert_eq!(
            ShardMap::decode(Some(&secret), "/elsewhere", &data),
            Err(MapError::BadSignature)
        );
        let forged = String::from_utf8(data)
            .unwrap()
            .replace("range 68 b", "range 68 c");
        assert_eq!(
            ShardMap::decode(Some(&secret), "/cluster", forged.as_bytes()),
            Err(MapError::BadSignature)
        );
        let plain = m.encode(None, "/cluster");
        assert_eq!(ShardMap::decode(None, "/cluster", &plain), Ok(m));
        assert_eq!(
            ShardMap::decode(Some(&secret), "/cluster", &plain),
            Err(MapError::Unsigned)
        );
    }

    #[test]
    fn malformed_maps_are_refused_with_the_reason() {
        let d = |s: &str| ShardMap::decode(None, "/c", s.as_bytes());
        assert!(matches!(d(""), Err(MapError::Empty)));
        assert!(matches!(
            d("shard-map x\nrange - a\n"),
            Err(MapError::BadLine { line: 1, .. })
        ));
        assert!(matches!(d("shard-map 1\n"), Err(MapError::Empty)));
        assert!(matches!(
            d("shard-map 1\nrange 61 a\n"),
            Err(MapError::Unordered)
        ));
        assert!(matches!(
            d("shard-map 1\nrange - a\nrange 62 b\nrange 61 c\n"),
            Err(MapError::Unordered)
        ));
        assert!(matches!(
            d("shard-map 1\nrange - a\nrange 6 b\n"),
            Err(MapError::BadLine { line: 3, .. })
        ));
        assert!(matches!(
            d("shard-map 1\nrange - a/b\n"),
            Err(MapError::BadChainName(_))
        ));
        assert!(matches!(
            d("shard-map 1\nrange -\n"),
            Err(MapError::BadLine { line: 2, .. })
        ));
        let many: String = (0..=RANGES_MAX)
            .map(|i| {
                format!(
                    "range {} a\n",
                    if i == 0 {
                        "-".into()
                    } else {
                        format!("{i:04x}")
                    }
                )
            })
            .collect();
        assert_eq!(
            d(&format!("shard-map 1\n{many}")),
            Err(MapError::TooManyRanges)
        );
        assert_eq!(
            ShardMap::decode(None, "/c", &vec![b'x'; MAP_BYTES_MAX + 1]),
            Err(MapError::TooLong)
        );
        assert_eq!(
            ShardMap::decode(None, "/c", &[0xff, 0xfe]),
            Err(MapError::NotText)
        );
    }
}
