//! State transfer to a joining successor, and installing one as a joiner.

use super::{Action, Replica, Standing, Successor};
use crate::serialize::Entry;
use crate::wire::{Body, SeqGap, SnapshotChunk, Update};
use std::collections::VecDeque;

/// Largest SNAPSHOT chunk payload aimed for (a chunk holds at least one
/// entry, and an entry is at most a key and an 8 MiB value, so every chunk
/// fits the 16 MiB frame limit).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Splits a snapshot into chunks of at most `max_entries` entries and, but
/// for a single large entry, about `max_bytes` bytes. Always at least one
/// chunk (an empty table is one empty chunk).
pub(super) fn split_chunks(
    entries: Vec<Entry>,
    max_entries: usize,
    max_bytes: usize,
) -> Vec<Vec<Entry>> {
    let mut chunks = vec![Vec::new()];
    let mut bytes = 0;
    for e in entries {
        let size = Entry::MIN_ENCODED_LEN + e.key.as_bytes().len() + e.value.len();
        let current = chunks.last().map_or(0, Vec::len);
        if current > 0 && (current >= max_entries || bytes + size > max_bytes) {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(c) = chunks.last_mut() {
            c.push(e);
        }
    }
    chunks
}

/// The rest of a snapshot not yet handed to the IO layer, and the updates
/// applied since its cut: those may only follow the LAST chunk (the joiner
/// has no table to apply them to before), and acting as tail meanwhile
/// trims them from Sent, so they wait here.
#[derive(Debug, Clone)]
pub(super) struct OutgoingSnapshot {
    pub(super) seq: u64,
    /// The history's gaps up to `seq`, sent with the FIRST chunk.
    pub(super) gaps: Vec<SeqGap>,
    pub(super) chunks: VecDeque<Vec<Entry>>,
    pub(super) first: bool,
    pub(super) backlog: Vec<Update>,
}

impl Replica {
    /// Whether the updates waiting for a snapshot's LAST chunk have reached
    /// Sent's capacity. An acting tail then stops acknowledging, so the
    /// head's Sent list fills and it answers BUSY (the backlog stays under
    /// twice Sent's capacity): without this the backlog grew with every
    /// write for as long as the transfer lasted (the acting tail's acks
    /// kept trimming Sent upstream, so nothing pushed back).
    pub(super) fn backlog_full(&self) -> bool {
        self.outgoing
            .as_ref()
            .is_some_and(|o| o.backlog.len() >= self.sent.capacity())
    }

    /// Updates flow to a transferring successor only after its snapshot.
    pub(super) fn transfer_done_or_active(&self) -> bool {
        match &self.successor {
            Successor::Active(_) => true,
            Successor::Transferring { snapshot_seq, .. } => {
                snapshot_seq.is_some() && self.outgoing.is_none()
            }
            _ => false,
        }
    }

    /// The worker captured the table after applying everything up to `seq`.
    pub fn handle_snapshot_taken(&mut self, seq: u64, entries: Vec<Entry>) {
        let Successor::Transferring {
            member,
            snapshot_seq: None,
        } = &self.successor
        else {
            return; // The successor went away meanwhile.
        };
        self.successor = Successor::Transferring {
            member: member.clone(),
            snapshot_seq: Some(seq),
        };
        let chunks = split_chunks(entries, self.snapshot_chunk_entries, SNAPSHOT_CHUNK_BYTES);
        self.outgoing = Some(OutgoingSnapshot {
            gaps: self.gaps_through(seq),
            seq,
            chunks: chunks.into(),
            first: true,
            backlog: self.sent.after(seq).cloned().collect(),
        });
    }

    /// Whether snapshot chunks are waiting for [`Replica::handle_successor_writable`].
    #[must_use]
    pub fn snapshot_pending(&self) -> bool {
        self.outgoing.is_some()
    }

    /// The successor link has room: emits the next snapshot chunk; after
    /// the LAST one, the updates applied since the cut.
    pub fn handle_successor_writable(&mut self) {
        let Some(out) = self.outgoing.as_mut() else {
            return;
        };
        let chunk = out.chunks.pop_front().unwrap_or_default();
        let (seq, first, last) = (out.seq, out.first, out.chunks.is_empty());
        let gaps = if first {
            std::mem::take(&mut out.gaps)
        } else {
            Vec::new()
        };
        out.first = false;
        self.push_chunk(seq, (first, last), gaps, chunk);
        if last {
            let backlog = self.outgoing.take().map(|o| o.backlog).unwrap_or_default();
            for u in backlog {
                self.emit(Action::SendDown(Body::Update(u)));
            }
            // Acknowledgements held back while the backlog was full.
            if self.acting_tail() {
                self.tail_ack(self.last_applied);
            }
        }
    }

    pub(super) fn push_chunk(
        &mut self,
        seq: u64,
        flags: (bool, bool),
        gaps: Vec<SeqGap>,
        entries: Vec<Entry>,
    ) {
        let chunk = SnapshotChunk {
            snapshot_seq: seq,
            first: flags.0,
            last: flags.1,
            keep: false,
            gaps,
            entries,
        };
        self.emit(Action::SendDown(Body::Snapshot(chunk)));
    }

    /// A SNAPSHOT chunk from the predecessor (this member is joining).
    pub fn handle_snapshot_chunk(&mut self, chunk: SnapshotChunk) {
        let Standing::Joining { installed, .. } = self.standing else {
            return;
        };
        if chunk.keep {
            self.keep_own_table(chunk.snapshot_seq);
            return;
        }
        if installed && !chunk.first {
            return;
        }
        if chunk.first {
            // Writes a durable joiner still had with the worker when it
            // registered again land before the snapshot, which replaces
            // them: their completions are not this history's (found by a
            // durable torture run: "applied 3013 beyond queued 3012").
            // Nor is what its disk held: the table is being replaced, and
            // its log may even run past the snapshot (an old head's writes
            // that were never acknowledged).
            self.forget_unapplied();
            self.last_queued = 0;
            self.last_applied = 0;
            self.last_acked = 0;
            self.standing = Standing::Joining {
                installed: false,
                handoff: None,
            };
            self.partial_snapshot = true;
            self.awaiting_install = None;
            self.adopt_gaps(&chunk.gaps, chunk.snapshot_seq);
        }
        if chunk.last {
            self.awaiting_install = Some(chunk.snapshot_seq);
            self.last_queued = chunk.snapshot_seq;
        }
        self.emit(Action::Install(chunk));
    }

    /// The worker installed the LAST chunk of a snapshot taken at `seq`.
    pub fn handle_snapshot_installed(&mut self, seq: u64) {
        if self.awaiting_install != Some(seq) {
            return;
        }
        self.history_epoch += 1;
        self.forget_recent();
        self.awaiting_install = None;
        // The worker is past every write queued before the install.
        self.dirty.settled();
        let Standing::Joining {
            installed: false, ..
        } = self.standing
        else {
            return;
        };
        self.standing = Standing::Joining {
            installed: true,
            handoff: None,
        };
        self.partial_snapshot = false;
        // Updates after the snapshot may already be queued behind the
        // install: keep counting from them (found by the simulation once
        // updates had to continue the history exactly).
        self.last_queued = self.last_queued.max(seq);
        self.last_applied = seq;
        self.last_acked = seq;
        self.emit(Action::SendUp(seq));
    }

    /// HANDOFF from the predecessor: become tail once `seq` is applied.
    pub fn handle_handoff(&mut self, seq: u64) {
        if let Standing::Joining {
            installed: true, ..
        } = self.standing
        {
            self.standing = Standing::Joining {
                installed: true,
                handoff: Some(seq),
            };
            if self.last_applied >= seq {
                self.become_active_tail();
            }
        }
    }

    pub(super) fn become_active_tail(&mut self) {
        self.standing = Standing::Active;
        if self.durable {
            // What it applied past the floor is acknowledged once the
            // floor covers it.
            self.tail_ack(self.last_applied);
            self.emit(Action::SendUp(self.last_acked));
        } else {
            self.last_acked = self.last_applied;
            self.emit(Action::SendUp(self.last_applied));
        }
        // A successor that registered while this member was joining waits
        // for it to be complete before it is served.
        if let Some(next) = self.successor_member().cloned() {
            self.connect_successor(next);
        }
    }
}
