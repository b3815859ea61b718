//! Replay's appliers: recovery reads and checks the log on one thread and
//! decodes and applies it on one thread per core, each owning a disjoint
//! set of the table's partitions. A key always lands in the same
//! partition, so each key's writes apply in log order. The reader hands
//! over raw record bodies (one buffer per batch, no allocation per record):
//! decoding allocates key and value, and allocating and freeing them on
//! the thread that owns the partition is what made replay fast (profiled:
//! a reader that decoded spent a third of its time in malloc).

use crate::serialize::Codec;
use crate::table::Table;
use crate::wire::Update;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

/// Most applier threads.
const APPLIERS_MAX: usize = 8;
/// Bytes of record bodies handed to an applier at once.
const BATCH_BYTES: usize = 256 * 1024;
/// Batches queued per applier: bounds what replay holds in memory.
const BATCHES_QUEUED: usize = 4;
/// Per record in a batch: `u32` segment index, `u64` offset, `u32` length.
const ITEM_HEADER_BYTES: usize = 16;

/// Where a record came from, for an error that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Origin {
    pub segment: u32,
    pub offset: u64,
}

/// The first record (in log order) an applier could not decode.
pub(super) type Failure = Option<(Origin, String)>;

struct Lane<'scope> {
    tx: SyncSender<Vec<u8>>,
    batch: Vec<u8>,
    handle: ScopedJoinHandle<'scope, Failure>,
}

pub(super) struct Appliers<'scope> {
    table: &'scope Table,
    lanes: Vec<Lane<'scope>>,
}

impl<'scope> Appliers<'scope> {
    pub(super) fn start<'env>(scope: &'scope Scope<'scope, 'env>, table: &'scope Table) -> Self {
        let n = std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .clamp(1, APPLIERS_MAX);
        let lanes = (0..n)
            .map(|_| {
                let (tx, rx) = sync_channel::<Vec<u8>>(BATCHES_QUEUED);
                let handle = scope.spawn(move || {
                    let mut failure = None;
                    for batch in rx {
                        apply_batch(table, &batch, &mut failure);
                    }
                    failure
                });
                Lane {
                    tx,
                    batch: Vec::with_capacity(BATCH_BYTES),
                    handle,
                }
            })
            .collect();
        Appliers { table, lanes }
    }

    /// Queues the UPDATE body `body` (read at `origin`) whose key is `key`.
    pub(super) fn push(&mut self, key: &[u8], body: &[u8], origin: Origin) {
        let i = self.table.partition_of_bytes(key) % self.lanes.len();
        let lane = &mut self.lanes[i];
        lane.batch.extend_from_slice(&origin.segment.to_be_bytes());
        lane.batch.extend_from_slice(&origin.offset.to_be_bytes());
        #[allow(clippy::cast_possible_truncation)] // a record body is under 9 MiB
        lane.batch
            .extend_from_slice(&(body.len() as u32).to_be_bytes());
        lane.batch.extend_from_slice(body);
        if lane.batch.len() >= BATCH_BYTES {
            let batch = std::mem::replace(&mut lane.batch, Vec::with_capacity(BATCH_BYTES));
            // A lane whose thread died (a panic) is caught by `finish`.
            let _ = lane.tx.send(batch);
        }
    }

    /// Applies what is left, waits for every applier, and returns the
    /// first record (in log order) that did not decode.
    pub(super) fn finish(self) -> Failure {
        let mut first: Failure = None;
        for lane in self.lanes {
            let _ = lane.tx.send(lane.batch);
            drop(lane.tx);
            match lane.handle.join() {
                Ok(Some(f)) if first.as_ref().is_none_or(|g| f.0 < g.0) => first = Some(f),
                Ok(_) => {}
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        first
    }
}

/// Decodes and applies one batch (items written by `push`, so their
/// framing is trusted; their bodies are checked by the decoder).
fn apply_batch(table: &Table, batch: &[u8], failure: &mut Failure) {
    let mut at = 0;
    while at + ITEM_HEADER_BYTES <= batch.len() {
        let h = &batch[at..at + ITEM_HEADER_BYTES];
        let origin = Origin {
            segment: u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
            offset: u64::from_be_bytes([h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11]]),
        };
        let len = u32::from_be_bytes([h[12], h[13], h[14], h[15]]) as usize;
        let body = &batch[at + ITEM_HEADER_BYTES..at + ITEM_HEADER_BYTES + len];
        at += ITEM_HEADER_BYTES + len;
        match Update::decode_exact(body) {
            Ok(u) => {
                let _ = table.apply_owned(u.seq, u.op);
            }
            Err(e) if failure.as_ref().is_none_or(|f| origin < f.0) => {
                *failure = Some((origin, e.to_string()));
            }
            Err(_) => {}
        }
    }
}
