//! CRAQ's clean and dirty keys (Terrace & Freedman, ATC 2009): which keys
//! a member that is not the tail may answer a read of itself.
//!
//! Why a clean key may be read anywhere: a member applies an update before
//! it forwards it (`stream.rs`), so every write the tail has applied (every
//! committed write) was applied here first. If no write to a key is held
//! here unacknowledged, the key's value here is the last committed one, and
//! nothing newer to it can commit without first passing through here, where
//! it would make the key dirty again. So a read of a clean key is
//! linearizable at the moment it reads the table.
//!
//! A key counts as dirty from the moment its update is *queued* for the
//! worker, not when the worker reports it applied: the worker writes the
//! table on its own thread, so a read on the network thread may already see
//! a write whose report is still on the way (and a DEL leaves no version
//! to notice it by). It stays dirty until the tail's acknowledgement of
//! that update comes back up the chain.
//!
//! Keys are remembered by a 64-bit keyed hash: two keys that collide only
//! make a clean key look dirty, which sends its read to the tail (never the
//! reverse), and the per-process random key stops a peer from choosing
//! collisions on purpose. Memory is bounded by the updates held
//! unacknowledged, themselves bounded by [`super::HELD_UPDATES_MAX`].

use crate::serialize::Key;
use crate::wire::{BatchOp, WriteOp};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// The counts are keyed by a key's keyed hash already: hashing it again
/// (SipHash, per write and per acknowledgement) would only cost time.
#[derive(Debug, Default, Clone, Copy)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the map's keys are u64); any other
        // input is folded in rather than dropped.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The keys of every update queued here and not yet acknowledged by the
/// tail.
#[derive(Debug, Clone, Default)]
pub struct DirtyKeys {
    hasher: RandomState,
    /// `(seq, key hash)` per key written, in sequence order.
    held: VecDeque<(u64, u64)>,
    /// How many entries of `held` each key hash has.
    counts: HashMap<u64, u32, BuildHasherDefault<AlreadyHashed>>,
    /// Every key counts as dirty: the history was dropped, and the worker
    /// may still be applying the old one's writes (or clearing the table)
    /// behind which no read may look.
    poisoned: bool,
    /// The first update queued after the poisoning: once it is
    /// acknowledged the worker is past everything queued before it.
    poison_until: Option<u64>,
}

impl DirtyKeys {
    fn hash(&self, key: &Key) -> u64 {
        self.hasher.hash_one(key.as_bytes())
    }

    /// Update `seq` with `op` has been queued: its keys are dirty.
    pub fn add(&mut self, seq: u64, op: &WriteOp) {
        if self.poisoned && self.poison_until.is_none() {
            self.poison_until = Some(seq);
        }
        match op {
            WriteOp::Put { key, .. }
            | WriteOp::PutIf { key, .. }
            | WriteOp::Del { key }
            | WriteOp::DelIf { key, .. } => self.add_key(seq, key),
            WriteOp::Batch(ops) => {
                for o in ops {
                    let (BatchOp::Put { key, .. } | BatchOp::Del { key }) = o;
                    self.add_key(seq, key);
                }
            }
            WriteOp::Noop | WriteOp::Unchanged { .. } => {}
        }
    }

    fn add_key(&mut self, seq: u64, key: &Key) {
        let h = self.hash(key);
        self.held.push_back((seq, h));
        *self.counts.entry(h).or_insert(0) += 1;
    }

    /// Every update through `seq` is acknowledged by the tail.
    pub fn clean_through(&mut self, seq: u64) {
        if self.poison_until.is_some_and(|p| seq >= p) {
            self.settled();
        }
        while let Some(&(s, h)) = self.held.front() {
            if s > seq {
                break;
            }
            self.held.pop_front();
            if let Some(n) = self.counts.get_mut(&h) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&h);
                }
            }
        }
    }

    /// Forgets every key and counts them all dirty: this member's history
    /// was dropped, and the worker may still apply writes of the old one
    /// or clear the table. Lifted by [`DirtyKeys::settled`], or once an
    /// update queued after this is acknowledged (the worker applies in
    /// order, so it is then past the old history).
    pub fn clear(&mut self) {
        self.held.clear();
        self.counts.clear();
        self.poisoned = true;
        self.poison_until = None;
    }

    /// The worker has reported finishing everything queued before now (a
    /// snapshot's install): a poisoning by [`DirtyKeys::clear`] is over.
    pub fn settled(&mut self) {
        self.poisoned = false;
        self.poison_until = None;
    }

    /// Whether a write to `key` is held here unacknowledged.
    #[must_use]
    pub fn is_dirty(&self, key: &Key) -> bool {
        self.poisoned || (!self.counts.is_empty() && self.counts.contains_key(&self.hash(key)))
    }

    /// Whether no write at all is held unacknowledged (a whole-table read
    /// is then clean).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.poisoned && self.held.is_empty()
    }

    /// Distinct keys (by hash) held dirty.
    #[must_use]
    pub fn keys(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Key {
        Key::new(s).expect("key")
    }

    fn put(k: &str) -> WriteOp {
        WriteOp::Put {
            key: key(k),
            value: vec![1],
        }
    }

    #[test]
    fn a_key_stays_dirty_until_its_last_write_is_acknowledged() {
        let mut d = DirtyKeys::default();
        d.add(1, &put("a"));
        d.add(2, &put("b"));
        d.add(3, &put("a"));
        assert!(d.is_dirty(&key("a")) && d.is_dirty(&key("b")));
        assert!(!d.is_dirty(&key("c")));
        d.clean_through(2);
        assert!(d.is_dirty(&key("a")), "write 3 to a is not acknowledged");
        assert!(!d.is_dirty(&key("b")));
        assert!(!d.is_empty());
        d.clean_through(3);
        assert!(!d.is_dirty(&key("a")) && d.is_empty() && d.keys() == 0);
    }

    #[test]
    fn batches_dirty_every_key_and_marks_none() {
        let mut d = DirtyKeys::default();
        let batch = WriteOp::Batch(vec![
            BatchOp::Put {
                key: key("x"),
                value: vec![],
            },
            BatchOp::Del { key: key("y") },
        ]);
        d.add(7, &batch);
        d.add(8, &WriteOp::Noop);
        assert!(d.is_dirty(&key("x")) && d.is_dirty(&key("y")));
        assert_eq!(d.keys(), 2);
    }

    #[test]
    fn a_dropped_history_makes_every_key_dirty_until_the_worker_is_past_it() {
        let mut d = DirtyKeys::default();
        d.add(3, &put("a"));
        d.clear();
        assert!(d.is_dirty(&key("zzz")) && !d.is_empty());
        d.clean_through(100);
        assert!(
            d.is_dirty(&key("zzz")),
            "nothing queued since: still poisoned"
        );
        d.add(101, &WriteOp::Noop);
        d.clean_through(100);
        assert!(d.is_dirty(&key("zzz")));
        d.clean_through(101);
        assert!(!d.is_dirty(&key("zzz")) && d.is_empty());
        d.clear();
        d.settled();
        assert!(!d.is_dirty(&key("a")) && d.is_empty());
    }
}
