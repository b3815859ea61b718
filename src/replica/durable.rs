//! Durable chains (README design notes, "Durable chains"): members that
//! log to disk keep their table across a restart, acknowledge nothing the
//! chain's durable floor in ZooKeeper does not cover, and found the chain
//! again after a total outage only if their log reaches that floor.
//!
//! Why the floor suffices: every acknowledged write is at or below it,
//! and a member whose log reaches it holds every write at or below it
//! (members apply one history in order, and a member cut off from the
//! chain never receives a sequence number the chain assigns afterwards,
//! since every new head skips past what any member may hold). So the
//! founder holds every acknowledged write, and the members that join it
//! take its state (a snapshot) whatever they held.
//!
//! "Every new head skips past what any member may hold" needs one more
//! piece across total outages, where a founder cannot see what the heads
//! of the last era handed out: the ids reserved in ZooKeeper. A durable
//! head reserves ids before it hands them out, and a new head starts past
//! the reservation, so a sequence number names one update in the chain's
//! whole life (which VERIFY and the delta rejoin below rely on).

use super::{Action, Replica, Standing, Successor};
use crate::member::{DurableFloor, Member};
use crate::wire::{Body, SnapshotChunk, Update};

/// Key and value bytes of recent updates a durable member keeps, so that a
/// successor restarting on its disk receives only what it misses (Redis's
/// replication backlog). Beyond, the oldest are dropped, and a successor
/// whose disk ends before them receives a whole snapshot.
pub const RECENT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Sequence numbers a durable head reserves in ZooKeeper at a time (one
/// ZooKeeper write per this many writes); it asks for more once half of a
/// reservation is used, so that writes seldom wait for it.
pub const ID_RESERVE_CHUNK: u64 = 1 << 24;
/// What one kept update counts besides its key and value bytes.
const RECENT_OVERHEAD_BYTES: usize = 64;

/// State transfers this member made to successors (STATS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Whole snapshots.
    pub full: u64,
    /// Deltas: the successor kept its table and received the updates after
    /// it.
    pub delta: u64,
    /// Updates sent in deltas.
    pub delta_updates: u64,
}

impl Replica {
    /// This chain member logs to a data directory and resumes from it:
    /// its table holds the history up to `last_seq`. It keeps that table
    /// when it registers (see [`Replica::rejoin`]) and may found a chain
    /// with it.
    pub fn resume_durable(&mut self, last_seq: u64, gaps: &[crate::wire::SeqGap]) {
        self.durable = true;
        self.last_queued = last_seq;
        self.last_applied = last_seq;
        // Its log may end in writes that were never acknowledged: none is
        // clean until the chain it serves in has acknowledged past them.
        self.dirty.clear();
        self.adopt_gaps(gaps, last_seq.saturating_add(1));
    }

    /// Whether this member logs to disk (a durable chain member).
    #[must_use]
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// The chain's durable floor as last read or raised (0 before).
    #[must_use]
    pub fn durable_floor(&self) -> u64 {
        self.durable_floor.map_or(0, |d| d.floor)
    }

    /// The ids reserved in ZooKeeper as last read or raised (0 before).
    #[must_use]
    pub fn ids_reserved(&self) -> u64 {
        self.durable_floor.map_or(0, |d| d.reserved)
    }

    /// ZooKeeper holds `d`: writes up to its floor may be acknowledged,
    /// and ids up to its reservation handed out.
    pub fn handle_durable_floor(&mut self, d: DurableFloor) {
        let d = self.durable_floor.map_or(d, |now| now.max(d));
        self.durable_floor = Some(d);
        if !self.durable {
            return;
        }
        if let Some(mark) = self.deferred_mark.filter(|m| *m <= d.reserved) {
            self.deferred_mark = None;
            self.log_mark(mark);
        }
        if self.acting_tail() && !self.backlog_full() {
            self.ack_through(self.last_applied.min(d.floor));
        }
    }

    /// Whether id `seq` may be handed out: always, unless this member is
    /// durable and its reservation does not cover it yet (then it asks for
    /// more). It asks ahead once half of the reservation is used.
    pub(super) fn reserve_for(&mut self, seq: u64) -> bool {
        if !self.durable {
            return true;
        }
        let reserved = self.ids_reserved();
        let want = seq.saturating_add(ID_RESERVE_CHUNK);
        if seq.saturating_add(ID_RESERVE_CHUNK / 2) > reserved && want > self.reserve_asked {
            self.reserve_asked = want;
            self.emit(Action::RaiseFloor(DurableFloor {
                floor: 0,
                reserved: want,
            }));
        }
        seq <= reserved
    }

    /// Acknowledges, as the acting tail, what it applied up to `seq`. A
    /// durable member first asks for the floor to cover it, and
    /// acknowledges only what the floor already covers; the rest follows
    /// with [`Replica::handle_durable_floor`].
    pub(super) fn tail_ack(&mut self, seq: u64) {
        if !self.durable {
            self.ack_through(seq);
            return;
        }
        let seq = seq.min(self.last_applied);
        let floor = self.durable_floor();
        if seq > floor && seq > self.floor_asked {
            self.floor_asked = seq;
            self.emit(Action::RaiseFloor(DurableFloor {
                floor: seq,
                reserved: 0,
            }));
        }
        self.ack_through(seq.min(floor));
    }

    /// A durable acting tail whose applied writes wait for the floor asks
    /// for it again (with every lease renewal): a raise ZooKeeper did not
    /// take (it was down, the member was cut off) is not retried by
    /// anything else, and the writes behind it would wait forever if no
    /// other write came.
    pub(super) fn ask_floor_again(&mut self) {
        if !self.durable {
            return;
        }
        let mut want = DurableFloor::default();
        if self.standing == Standing::Active
            && self.acting_tail()
            && self.last_applied > self.durable_floor()
        {
            self.floor_asked = self.last_applied;
            want.floor = self.last_applied;
        }
        if self.reserve_asked > self.ids_reserved() {
            want.reserved = self.reserve_asked;
        }
        if want != DurableFloor::default() {
            self.emit(Action::RaiseFloor(want));
        }
    }

    /// Whether this joining member, first in the chain, may found it with
    /// what it holds. A durable one may only if its log reaches the floor
    /// (and it holds no half-installed snapshot); otherwise it steps aside
    /// once, and registers again behind the others.
    pub(super) fn may_found(&mut self) -> bool {
        if !self.durable {
            return true;
        }
        let reaches = self
            .durable_floor
            .is_some_and(|d| self.last_applied >= d.floor && !self.partial_snapshot);
        if !reaches && !self.stepping_aside {
            self.stepping_aside = true;
            tracing::warn!(
                last_seq = self.last_applied,
                floor = ?self.durable_floor,
                "this member's log stops before the chain's durable floor: it may not found the chain; stepping aside"
            );
            self.emit(Action::StepAside);
        }
        reaches && self.standing != Standing::Fenced
    }

    /// State transfers made to successors.
    #[must_use]
    pub fn transfers(&self) -> Transfers {
        self.transfers
    }

    /// Keeps an applied update among the recent ones.
    pub(super) fn remember(&mut self, update: &Update) {
        self.recent_bytes += update.op.held_bytes() + RECENT_OVERHEAD_BYTES;
        self.recent.push_back(update.clone());
        while self.recent_bytes > RECENT_BYTES_MAX {
            let Some(old) = self.recent.pop_front() else {
                break;
            };
            self.recent_bytes -= old.op.held_bytes() + RECENT_OVERHEAD_BYTES;
        }
    }

    /// The history was replaced (a snapshot installed): what was kept no
    /// longer continues it.
    pub(super) fn forget_recent(&mut self) {
        self.recent.clear();
        self.recent_bytes = 0;
    }

    /// A joining successor whose log ends at `last_seq`: when this member
    /// applied that very update and keeps every update after it, the
    /// successor keeps its table (a KEEP snapshot) and receives only those.
    /// A sequence number names one update in the whole chain's life (a new
    /// head skips past every id its predecessors may have used), so a log
    /// that ends at an update this member applied holds this member's
    /// history up to it. Returns whether the delta was sent.
    pub(super) fn send_delta(&mut self, member: &Member, last_seq: u64) -> bool {
        if !self.durable || last_seq == 0 || last_seq > self.last_applied {
            return false;
        }
        let after: Vec<Update> = if last_seq == self.last_applied {
            Vec::new()
        } else {
            let Some(i) = self.recent.iter().position(|u| u.seq == last_seq) else {
                return false;
            };
            self.recent.iter().skip(i + 1).cloned().collect()
        };
        self.transfers.delta += 1;
        self.transfers.delta_updates += after.len() as u64;
        tracing::info!(
            successor = %member.name,
            from_seq = last_seq,
            updates = after.len(),
            "the successor keeps its disk's table: sending the updates after it"
        );
        self.successor = Successor::Transferring {
            member: member.clone(),
            snapshot_seq: Some(last_seq),
        };
        self.emit(Action::SendDown(Body::Snapshot(SnapshotChunk {
            snapshot_seq: last_seq,
            first: true,
            last: true,
            keep: true,
            gaps: Vec::new(),
            entries: Vec::new(),
        })));
        for u in after {
            self.emit(Action::SendDown(Body::Update(u)));
        }
        // The joiner is not a replica yet: this member is the tail.
        self.tail_ack(self.last_applied);
        true
    }

    /// KEEP from the predecessor: this joining member's table, its log up
    /// to `seq`, is the predecessor's history there; the updates after it
    /// follow. Ignored unless this member is durable and holds exactly
    /// that, with nothing in flight (the predecessor's next UPDATE then
    /// does not continue its history, the link closes, and the next
    /// handshake reports where it stands).
    pub(super) fn keep_own_table(&mut self, seq: u64) {
        if !self.durable || self.last_applied != seq || self.unapplied > 0 || self.partial_snapshot
        {
            tracing::warn!(
                seq,
                last_applied = self.last_applied,
                "a KEEP snapshot that does not match this member's table: ignored"
            );
            return;
        }
        self.standing = Standing::Joining {
            installed: true,
            handoff: None,
        };
        self.awaiting_install = None;
        self.last_queued = seq;
        self.last_acked = seq;
        self.emit(Action::SendUp(seq));
    }
}
