//! The table: key -> (version, value), split into `n_lists` independent
//! partitions, each a standard `HashMap` behind its own lock, so that reads
//! on the network thread and writes on the worker rarely contend.

use crate::serialize::{Entry, Key};
use crate::wire::{Versioned, WriteOp, WriteOutcome};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

/// Most partitions a table may have (a sanity bound on `n_lists`).
pub const N_LISTS_MAX: usize = 65_536;

type Partition = HashMap<Key, Versioned>;

#[derive(Debug)]
pub struct Table {
    partitions: Vec<Mutex<Partition>>,
}

impl Table {
    /// A table with `n_lists` partitions (at least one).
    pub fn new(n_lists: usize) -> Table {
        let n = n_lists.clamp(1, N_LISTS_MAX);
        Table {
            partitions: (0..n).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub fn n_lists(&self) -> usize {
        self.partitions.len()
    }

    fn lock_index(&self, index: usize) -> MutexGuard<'_, Partition> {
        // A panic while holding a partition lock cannot leave a HashMap
        // half-updated (its operations are panic-safe), so poisoning is
        // recovered from rather than spread.
        self.partitions[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_key(&self, key: &Key) -> MutexGuard<'_, Partition> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        self.lock_index((h.finish() % self.partitions.len() as u64) as usize)
    }

    pub fn get(&self, key: &Key) -> Option<Versioned> {
        self.lock_key(key).get(key).cloned()
    }

    /// Applies one write; `version` is its sequence number.
    pub fn apply(&self, version: u64, op: &WriteOp) -> WriteOutcome {
        let existed = match op {
            WriteOp::Put { key, value } => {
                let v = Versioned {
                    version,
                    value: value.clone(),
                };
                self.lock_key(key).insert(key.clone(), v).is_some()
            }
            WriteOp::Del { key } => self.lock_key(key).remove(key).is_some(),
        };
        if existed {
            WriteOutcome::Existed
        } else {
            WriteOutcome::Absent
        }
    }

    pub fn len(&self) -> usize {
        (0..self.partitions.len())
            .map(|i| self.lock_index(i).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key, partition by partition (no global order).
    pub fn keys(&self) -> Vec<Key> {
        let mut keys = Vec::new();
        for i in 0..self.partitions.len() {
            keys.extend(self.lock_index(i).keys().cloned());
        }
        keys
    }

    /// Every entry. Not atomic across partitions: callers that need a
    /// consistent cut (state transfer) call it where no write can run.
    pub fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for i in 0..self.partitions.len() {
            out.extend(self.lock_index(i).iter().map(|(k, v)| Entry {
                key: k.clone(),
                version: v.version,
                value: v.value.clone(),
            }));
        }
        out
    }

    /// Removes everything (a joining member starting a new snapshot).
    pub fn clear(&self) {
        for i in 0..self.partitions.len() {
            self.lock_index(i).clear();
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn key(s: &str) -> Key {
        Key::new(s.as_bytes()).unwrap()
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
    fn zero_lists_means_one() {
        assert_eq!(Table::new(0).n_lists(), 1);
    }
}
