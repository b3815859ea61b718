//! The table: key -> (version, value), split into `n_lists` lists, each cut
//! into [`STRIPES_PER_LIST`] partitions: an ordered map (`BTreeMap`)
//! behind its own lock, so that reads on the network thread, writes on the
//! worker and a snapshot's copy rarely wait for each other. Keys go to
//! partitions by hash; each partition keeps its keys in order, so a range
//! scan reads only the front of each partition's part of the range
//! (see [`Table::range`]) instead of the whole table.

use crate::serialize::{Entry, Key};
use crate::wire::{BatchOp, Versioned, WriteOp, WriteOutcome};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// Most lists a table may have (a sanity bound on `n_lists`).
pub const N_LISTS_MAX: usize = 65_536;

/// Partitions (lock stripes) per list. A snapshot or a backup copies one
/// partition under its lock at a time, so this is what keeps the longest
/// wait a copy imposes short: at a million keys and 16 lists, 4,000 entries
/// (well under a millisecond) instead of 62,500 (8 ms, measured).
pub const STRIPES_PER_LIST: usize = 16;

/// One lock stripe: its entries and the sum of their digests.
#[derive(Debug, Default)]
struct Partition {
    map: BTreeMap<Key, Versioned>,
    digest: u64,
    /// Bytes of every key's encoding (GETKEYS' payload, but for the count).
    keys_encoded_bytes: usize,
    /// Bytes of every entry's encoding (GETTABLE's payload, but for the
    /// count): kept so a reply's size is known before anything is copied.
    entries_encoded_bytes: usize,
}

/// Encoded bytes of a key and of its entry.
/// (An entry is its key, a `u64` version, a `u32` length and the value:
/// [`Entry::encoded_len`], computed without building one.)
fn encoded_sizes(key: &Key, v: &Versioned) -> (usize, usize) {
    let k = key.encoded_len();
    (k, k + 8 + 4 + v.value.len())
}

/// A 64-bit digest of one entry. Summed (wrapping) over all entries it
/// gives an order-independent digest of the table, kept up to date on
/// every write, so replicas can be compared through STATS in O(1).
fn entry_digest(key: &Key, v: &Versioned) -> u64 {
    digest_of(key, v.version, &v.value)
}

/// The digest of one entry (spec/STORAGE.md §4 gives the formula); the
/// table's digest is the wrapping sum over its entries.
#[must_use]
pub fn digest_of(key: &Key, version: u64, value: &[u8]) -> u64 {
    let mut h = crc32fast::Hasher::new();
    #[allow(clippy::cast_possible_truncation)] // keys are under 2^16 bytes
    h.update(&(key.as_bytes().len() as u32).to_be_bytes());
    h.update(key.as_bytes());
    h.update(&version.to_be_bytes());
    h.update(value);
    // splitmix64 spreads the 32-bit CRC (and the value length) over 64 bits.
    let mut z = u64::from(h.finalize()) ^ ((value.len() as u64) << 32);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Partition {
    fn insert(&mut self, key: Key, v: Versioned) -> bool {
        use std::collections::btree_map::Entry as Slot;
        self.digest = self.digest.wrapping_add(entry_digest(&key, &v));
        self.count(&key, &v, true);
        // One lookup, and the key is moved in, never cloned.
        let (old_digest, old_sizes) = match self.map.entry(key) {
            Slot::Occupied(mut slot) => {
                let old = slot.insert(v);
                (
                    entry_digest(slot.key(), &old),
                    encoded_sizes(slot.key(), &old),
                )
            }
            Slot::Vacant(slot) => {
                slot.insert(v);
                return false;
            }
        };
        self.digest = self.digest.wrapping_sub(old_digest);
        self.keys_encoded_bytes -= old_sizes.0;
        self.entries_encoded_bytes -= old_sizes.1;
        true
    }

    fn remove(&mut self, key: &Key) -> bool {
        match self.map.remove(key) {
            Some(old) => {
                self.digest = self.digest.wrapping_sub(entry_digest(key, &old));
                self.count(key, &old, false);
                true
            }
            None => false,
        }
    }

    fn count(&mut self, key: &Key, v: &Versioned, added: bool) {
        let (k, e) = encoded_sizes(key, v);
        if added {
            self.keys_encoded_bytes += k;
            self.entries_encoded_bytes += e;
        } else {
            self.keys_encoded_bytes -= k;
            self.entries_encoded_bytes -= e;
        }
    }
}

/// The key-value table: `n_lists` × [`STRIPES_PER_LIST`] partitions, each
/// a map behind its own lock.
#[derive(Debug)]
pub struct Table {
    n_lists: usize,
    partitions: Vec<Mutex<Partition>>,
}

impl Table {
    /// A table with `n_lists` lists (at least one).
    #[must_use]
    pub fn new(n_lists: usize) -> Table {
        let n_lists = n_lists.clamp(1, N_LISTS_MAX);
        let partitions = n_lists * STRIPES_PER_LIST;
        Table {
            n_lists,
            partitions: (0..partitions)
                .map(|_| Mutex::new(Partition::default()))
                .collect(),
        }
    }

    /// Lists (the server's `n_lists` argument, clamped).
    #[must_use]
    pub fn n_lists(&self) -> usize {
        self.n_lists
    }

    /// Partitions: the lock stripes, numbered `0..partitions()` (what
    /// [`Table::visit_partition`] and [`Table::partition_of`] count).
    #[must_use]
    pub fn partitions(&self) -> usize {
        self.partitions.len()
    }

    fn lock_index(&self, index: usize) -> MutexGuard<'_, Partition> {
        // A panic while holding a partition lock cannot leave a BTreeMap
        // half-updated (its operations are panic-safe), so poisoning is
        // recovered from rather than spread.
        self.partitions[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The partition of a key. CRC-32 (hardware-accelerated) is plenty to
    /// spread keys over lock stripes; the maps themselves keep std's keyed
    /// SipHash, which is what protects them from chosen-key collisions.
    fn lock_key(&self, key: &Key) -> MutexGuard<'_, Partition> {
        self.lock_index(self.partition_of(key))
    }

    /// The index of the partition that holds `key`.
    #[must_use]
    pub fn partition_of(&self, key: &Key) -> usize {
        self.partition_of_bytes(key.as_bytes())
    }

    /// [`Table::partition_of`] for a key's bytes (not yet a [`Key`]).
    #[must_use]
    pub fn partition_of_bytes(&self, key: &[u8]) -> usize {
        crc32fast::hash(key) as usize % self.partitions.len()
    }

    /// The entry for `key`, if any (a copy: the lock is not held).
    #[must_use]
    pub fn get(&self, key: &Key) -> Option<Versioned> {
        self.lock_key(key).map.get(key).cloned()
    }

    /// Locks the partitions holding `keys`, each once and in ascending
    /// order: the one order every multi-partition lock takes, so that two
    /// of them never deadlock. Single-key operations hold one lock at a
    /// time and cannot be part of a cycle.
    fn lock_many<'a>(
        &'a self,
        keys: impl Iterator<Item = &'a Key>,
    ) -> BTreeMap<usize, MutexGuard<'a, Partition>> {
        let mut indices: Vec<usize> = keys.map(|k| self.partition_of(k)).collect();
        indices.sort_unstable();
        indices.dedup();
        indices
            .into_iter()
            .map(|i| (i, self.lock_index(i)))
            .collect()
    }

    /// An MWRITE's writes, all at `version`, under the locks of every
    /// partition they touch: a reader (MGET, GET) sees all of them or none.
    fn apply_batch(&self, version: u64, ops: Vec<BatchOp>) {
        let keys: Vec<Key> = ops.iter().map(|o| o.key().clone()).collect();
        let mut parts = self.lock_many(keys.iter());
        for op in ops {
            let Some(part) = parts.get_mut(&self.partition_of(op.key())) else {
                continue; // cannot happen: every key's partition is locked
            };
            match op {
                BatchOp::Put { key, value } => {
                    part.insert(key, Versioned { version, value });
                }
                BatchOp::Del { key } => {
                    part.remove(&key);
                }
            }
        }
    }

    /// The values of `keys`, in order, read at one instant: their
    /// partitions are all locked while they are read (an MWRITE is seen
    /// whole or not at all).
    #[must_use]
    pub fn get_many(&self, keys: &[Key]) -> Vec<Option<Versioned>> {
        self.get_many_within(keys, |_| true).unwrap_or_default()
    }

    /// [`Table::get_many`], but only if `fits` accepts the values' sizes
    /// (one per key: `Some(value length)`, `None` when absent), which it
    /// is asked under the same locks and *before* anything is copied: an
    /// MGET of 1024 keys of 8 MiB each must not make the server copy
    /// 8 GiB to find out that its reply is too large. `None` when it
    /// does not.
    #[must_use]
    pub fn get_many_within(
        &self,
        keys: &[Key],
        fits: impl FnOnce(&mut dyn Iterator<Item = Option<usize>>) -> bool,
    ) -> Option<Vec<Option<Versioned>>> {
        let parts = self.lock_many(keys.iter());
        let find = |k: &Key| parts.get(&self.partition_of(k)).and_then(|p| p.map.get(k));
        let mut sizes = keys.iter().map(|k| find(k).map(|v| v.value.len()));
        if !fits(&mut sizes) {
            return None;
        }
        Some(keys.iter().map(|k| find(k).cloned()).collect())
    }

    /// The version of `key`, 0 when absent (what a compare-and-set
    /// compares with).
    #[must_use]
    pub fn version_of(&self, key: &Key) -> u64 {
        self.lock_key(key).map.get(key).map_or(0, |v| v.version)
    }

    /// Applies one write; `version` is its sequence number.
    #[must_use]
    pub fn apply(&self, version: u64, op: &WriteOp) -> WriteOutcome {
        self.apply_owned(version, op.clone())
    }

    /// [`Table::apply`] for a write the caller no longer needs (log
    /// replay): key and value move into the table without a copy.
    #[must_use]
    pub fn apply_owned(&self, version: u64, op: WriteOp) -> WriteOutcome {
        let existed = match op {
            WriteOp::Put { key, value } => {
                let v = Versioned { version, value };
                self.lock_key(&key).insert(key, v)
            }
            WriteOp::Del { key } => self.lock_key(&key).remove(&key),
            WriteOp::Noop => false,
            WriteOp::Unchanged { .. } => return WriteOutcome::Mismatch,
            // The worker resolves these before they get here; one applied
            // directly is decided the same way (the table has one writer).
            op @ (WriteOp::PutIf { .. } | WriteOp::DelIf { .. }) => {
                let resolved = op.resolve(|key| self.version_of(key));
                return self.apply_owned(version, resolved);
            }
            WriteOp::Batch(ops) => {
                self.apply_batch(version, ops);
                false
            }
        };
        if existed {
            WriteOutcome::Existed
        } else {
            WriteOutcome::Absent
        }
    }

    /// Entries, summed over partitions (not atomic across them).
    #[must_use]
    pub fn len(&self) -> usize {
        (0..self.partitions.len())
            .map(|i| self.lock_index(i).map.len())
            .sum()
    }

    /// Whether the table holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes GETKEYS' list of every key would encode to (see
    /// [`crate::serialize::list_encoded_len`]), without copying a key.
    #[must_use]
    pub fn keys_encoded_len(&self) -> usize {
        4 + (0..self.partitions.len())
            .map(|i| self.lock_index(i).keys_encoded_bytes)
            .sum::<usize>()
    }

    /// Bytes GETTABLE's list of every entry would encode to, without
    /// copying an entry: a reply over the frame limit is refused before
    /// the table is cloned.
    #[must_use]
    pub fn entries_encoded_len(&self) -> usize {
        4 + (0..self.partitions.len())
            .map(|i| self.lock_index(i).entries_encoded_bytes)
            .sum::<usize>()
    }

    /// Every key, partition by partition (no global order).
    #[must_use]
    pub fn keys(&self) -> Vec<Key> {
        let mut keys = Vec::new();
        for i in 0..self.partitions.len() {
            keys.extend(self.lock_index(i).map.keys().cloned());
        }
        keys
    }

    /// Every entry. Not atomic across partitions: callers that need a
    /// consistent cut (state transfer) call it where no write can run.
    #[must_use]
    pub fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for i in 0..self.partitions.len() {
            out.extend(self.lock_index(i).map.iter().map(|(k, v)| Entry {
                key: k.clone(),
                version: v.version,
                value: v.value.clone(),
            }));
        }
        out
    }

    /// Up to `limit` entries with `from <= key < to` (no end when `to` is
    /// `None`), in key order, and the key after the last one returned when
    /// the range holds more (where the next page starts). Keys are spread
    /// over the partitions by hash, so each partition (under its own lock,
    /// as [`Table::entries`]) is read in order from `from` until its next
    /// key could not be among the `limit + 1` smallest held so far: time
    /// O(partitions × log entries + limit × log limit) and memory O(limit),
    /// whatever the table's size.
    #[must_use]
    pub fn range(&self, from: &[u8], to: Option<&[u8]>, limit: usize) -> (Vec<Entry>, Option<Key>) {
        /// A candidate, ordered by key alone (a max-heap: the greatest
        /// key is the one to drop when the heap is over `limit + 1`).
        struct ByKey(Key, Versioned);
        impl PartialEq for ByKey {
            fn eq(&self, other: &Self) -> bool {
                self.0 == other.0
            }
        }
        impl Eq for ByKey {}
        impl PartialOrd for ByKey {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for ByKey {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.0.cmp(&other.0)
            }
        }
        let keep = limit.saturating_add(1);
        let mut heap = std::collections::BinaryHeap::with_capacity(keep.min(4096));
        for i in 0..self.partitions.len() {
            let p = self.lock_index(i);
            // (`to` is checked by hand: `BTreeMap::range` panics on an end
            // below the start, which a client may send.)
            let start = std::ops::Bound::Included(from);
            let in_order = p.map.range::<[u8], _>((start, std::ops::Bound::Unbounded));
            for (k, v) in in_order {
                if to.is_some_and(|t| k.as_bytes() >= t) {
                    break;
                }
                if heap.len() == keep {
                    // Full: only a key below the greatest held gets in,
                    // and every later key of this partition is greater.
                    if heap.peek().is_some_and(|top: &ByKey| top.0 <= *k) {
                        break;
                    }
                    heap.pop();
                }
                heap.push(ByKey(k.clone(), v.clone()));
            }
        }
        let mut sorted = heap.into_sorted_vec();
        let next = (sorted.len() > limit).then(|| sorted.swap_remove(limit).0);
        sorted.truncate(limit);
        let entries = sorted
            .into_iter()
            .map(|ByKey(key, v)| Entry {
                key,
                version: v.version,
                value: v.value,
            })
            .collect();
        (entries, next)
    }

    /// Calls `f` on every entry of partition `index` (of
    /// [`Table::partitions`]) under its lock, and returns the partition's
    /// digest at that moment: the digest of exactly the entries visited.
    /// A background snapshot copies the table this way one partition at a
    /// time, so a write waits at most for one partition's visit.
    pub fn visit_partition(&self, index: usize, mut f: impl FnMut(&Key, &Versioned)) -> u64 {
        let p = self.lock_index(index);
        for (k, v) in &p.map {
            f(k, v);
        }
        p.digest
    }

    /// Removes everything (a joining member starting a new snapshot).
    pub fn clear(&self) {
        for i in 0..self.partitions.len() {
            *self.lock_index(i) = Partition::default();
        }
    }

    /// Inserts an entry as-is, keeping its version (snapshot install).
    pub fn install(&self, entry: Entry) {
        let v = Versioned {
            version: entry.version,
            value: entry.value,
        };
        self.lock_key(&entry.key).insert(entry.key, v);
    }

    /// Order-independent digest of every entry (key, version, value):
    /// equal tables have equal digests.
    #[must_use]
    pub fn digest(&self) -> u64 {
        (0..self.partitions.len())
            .map(|i| self.lock_index(i).digest)
            .fold(0u64, |a, d| a.wrapping_add(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn key(s: &str) -> Key {
        Key::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn a_range_pages_through_keys_in_order_and_holds_no_more_than_asked() {
        let table = Table::new(4);
        for i in 0..500u32 {
            let op = WriteOp::Put {
                key: key(&format!("k{i:03}")),
                value: i.to_be_bytes().to_vec(),
            };
            assert_eq!(table.apply(u64::from(i) + 1, &op), WriteOutcome::Absent);
        }
        let names = |e: &[Entry]| -> Vec<String> {
            e.iter()
                .map(|e| String::from_utf8_lossy(e.key.as_bytes()).to_string())
                .collect()
        };
        let (page, next) = table.range(b"k100", Some(b"k200"), 7);
        assert_eq!(
            names(&page),
            ["k100", "k101", "k102", "k103", "k104", "k105", "k106"]
        );
        assert_eq!(next, Some(key("k107")));
        assert_eq!(page[3].version, 104, "each entry carries its own version");
        // Paging by `next` visits every key of the range once, in order.
        let mut seen = Vec::new();
        let mut from = b"k100".to_vec();
        loop {
            let (page, next) = table.range(&from, Some(b"k200"), 13);
            seen.extend(names(&page));
            match next {
                Some(k) => from = k.as_bytes().to_vec(),
                None => break,
            }
        }
        let want: Vec<String> = (100..200).map(|i| format!("k{i:03}")).collect();
        assert_eq!(seen, want);
        let (tail, next) = table.range(b"k498", None, 10);
        assert_eq!(
            (names(&tail), next),
            (vec!["k498".to_string(), "k499".to_string()], None)
        );
        assert_eq!(table.range(b"z", None, 10).0.len(), 0);
        assert_eq!(
            table.range(b"k3", Some(b"k2"), 10).0.len(),
            0,
            "an empty interval"
        );
    }

    #[test]
    fn a_compare_and_set_applied_directly_is_decided_as_resolved() {
        let table = Table::new(2);
        let put_if = |value: &[u8], expected| WriteOp::PutIf {
            key: key("k"),
            value: value.to_vec(),
            expected,
        };
        assert_eq!(table.apply(1, &put_if(b"a", 0)), WriteOutcome::Absent);
        assert_eq!(table.apply(2, &put_if(b"b", 0)), WriteOutcome::Mismatch);
        assert_eq!(table.apply(3, &put_if(b"c", 1)), WriteOutcome::Existed);
        let del_if = |expected| WriteOp::DelIf {
            key: key("k"),
            expected,
        };
        assert_eq!(table.apply(4, &del_if(1)), WriteOutcome::Mismatch);
        assert_eq!(table.get(&key("k")).map(|v| v.value), Some(b"c".to_vec()));
        assert_eq!(table.apply(5, &del_if(3)), WriteOutcome::Existed);
        assert_eq!(table.get(&key("k")), None);
    }

    #[test]
    fn behaves_like_a_map_model_with_versions() {
        let table = Table::new(4);
        let mut model = BTreeMap::new();
        for seq in 1..=500u64 {
            let k = key(&format!("k{}", seq * 7 % 37));
            let op = if seq % 3 == 0 {
                WriteOp::Del { key: k.clone() }
            } else {
                WriteOp::Put {
                    key: k.clone(),
                    value: seq.to_be_bytes().to_vec(),
                }
            };
            let existed = match &op {
                WriteOp::Put { value, .. } => model.insert(k.clone(), (seq, value.clone())),
                WriteOp::Del { .. } => model.remove(&k),
                _ => None,
            }
            .is_some();
            let expected = if existed {
                WriteOutcome::Existed
            } else {
                WriteOutcome::Absent
            };
            assert_eq!(table.apply(seq, &op), expected);
        }
        assert_eq!(table.len(), model.len());
        let mut entries = table.entries();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        let from_model: Vec<Entry> = model
            .into_iter()
            .map(|(key, (version, value))| Entry {
                key,
                version,
                value,
            })
            .collect();
        assert_eq!(entries, from_model);
    }

    #[test]
    fn digest_depends_on_content_not_history_or_partitioning() {
        let a = Table::new(1);
        let b = Table::new(7);
        let put = |k: &str, v: &[u8]| WriteOp::Put {
            key: key(k),
            value: v.to_vec(),
        };
        let _ = a.apply(1, &put("x", b"1"));
        let _ = a.apply(2, &put("y", b"2"));
        let _ = a.apply(3, &WriteOp::Del { key: key("y") });
        let _ = b.apply(1, &put("x", b"1"));
        assert_eq!(a.digest(), b.digest());
        let _ = b.apply(4, &put("x", b"1"));
        assert_ne!(a.digest(), b.digest(), "versions count");
        a.clear();
        assert_eq!(a.digest(), Table::new(3).digest());
    }

    #[test]
    fn zero_lists_means_one() {
        assert_eq!(Table::new(0).n_lists(), 1);
    }

    #[test]
    fn reply_sizes_are_known_without_copying_and_match_the_copies() {
        use crate::serialize::list_encoded_len;
        let t = Table::new(4);
        let put = |t: &Table, k: &str, n: usize, seq: u64| {
            let op = WriteOp::Put {
                key: Key::new(k).unwrap(),
                value: vec![1; n],
            };
            let _ = t.apply(seq, &op);
        };
        let sizes_match = |t: &Table| {
            let keys = list_encoded_len(t.keys().iter().map(Key::encoded_len));
            let entries = list_encoded_len(t.entries().iter().map(Entry::encoded_len));
            assert_eq!(t.keys_encoded_len(), keys);
            assert_eq!(t.entries_encoded_len(), entries);
        };
        sizes_match(&t);
        for i in 0..50 {
            put(&t, &format!("key{i}"), i * 7, i as u64);
        }
        sizes_match(&t);
        put(&t, "key3", 1000, 99); // overwrite: the old size goes
        let _ = t.apply(
            100,
            &WriteOp::Del {
                key: Key::new("key4").unwrap(),
            },
        );
        let _ = t.apply(
            101,
            &WriteOp::Del {
                key: Key::new("absent").unwrap(),
            },
        );
        sizes_match(&t);
        t.install(Entry {
            key: Key::new("key5").unwrap(),
            version: 7,
            value: vec![2; 3],
        });
        sizes_match(&t);
        t.clear();
        sizes_match(&t);
        assert_eq!(t.entries_encoded_len(), 4);
    }
}
