//! Membership changes: position in the chain, head takeover, rewiring,
//! fencing and registering again.

use super::{Action, Replica, Standing, Successor, HEAD_TAKEOVER_SEQ_GAP};
use crate::member::Member;
use crate::wire::ErrorCode;

impl Replica {
    /// A new membership list, ordered head first.
    pub fn handle_membership(&mut self, members: Vec<Member>) {
        if self.standing == Standing::Fenced || !self.chain {
            return;
        }
        let was_head = self.chain && self.is_head() && !self.members.is_empty();
        let was_listed = self.my_index().is_some();
        let old_pred = self.predecessor().cloned();
        self.members = members;
        if self.my_index().is_none() {
            if was_listed {
                // Our ephemeral node is gone: the session is over.
                self.fence();
            }
            return; // not listed yet: wait
        }
        if self.predecessor().is_none() {
            self.becomes_head(was_head, old_pred.is_some());
        }
        if old_pred.is_some() && old_pred.as_ref() != self.predecessor() {
            self.emit(Action::DropPredecessor);
            self.handle_predecessor_lost();
        }
        self.rewire_successor();
    }

    pub(super) fn becomes_head(&mut self, was_head: bool, had_predecessor: bool) {
        if let Standing::Joining { .. } = self.standing {
            if !self.may_found() {
                return; // stays joining: it serves nothing, and steps aside
            }
            // No member is left before it. Every member after it joined
            // later and holds less, so what it holds is the best state
            // left: empty for a new chain, or a whole snapshot from a tail
            // that has since failed with every member before it (beyond
            // what a chain tolerates; persistence is what would cover it).
            // Only a half-received snapshot is not a state: drop it.
            if self.partial_snapshot {
                self.partial_snapshot = false;
                self.forget_unapplied();
                self.last_queued = 0;
                self.last_applied = 0;
                self.last_acked = 0;
                self.forget_gaps();
                self.clear_table();
            }
            self.standing = Standing::Active;
        }
        // Also with an empty history when this member had a predecessor:
        // the head that failed may have handed out ids it never saw (seed
        // 42234 of a 100,000-schedule run: it had seen none, and gave id 1
        // again). The first member of a new chain has had no predecessor;
        // but in a durable chain, ids reserved in ZooKeeper say that heads
        // before it may have handed out ids (a fresh member founding the
        // chain after an outage gave id 1 again: durable seed 3841).
        let ids_used_before = self.durable && self.ids_reserved() > 0;
        if !was_head && (self.last_queued > 0 || had_predecessor || ids_used_before) {
            self.mark_id_skip();
        }
    }

    /// Skips the ids a failed head (or this server before a restart) may
    /// have handed out, and says so down the chain before handing out any:
    /// a NOOP at the new floor, `last + 2^20`. Were this head to fail
    /// before a successor had the skip, the next head would skip from the
    /// same point and hand out the same ids again (the simulator found
    /// that: seed 6661 of 40,000, one id naming two writes). With the mark,
    /// a successor either has it (and skips past it) or this head never
    /// admitted a write. A standalone server logs the mark before it
    /// admits a write, so a second crash skips from past it too.
    pub(super) fn mark_id_skip(&mut self) {
        // last_queued <= SEQ_MAX (checked on receipt), so no overflow.
        let mut mark = self.last_queued.saturating_add(HEAD_TAKEOVER_SEQ_GAP);
        if self.durable {
            // Past every id any head may have handed out, those of heads
            // whose members all died included (`durable.rs`).
            mark = mark.max(self.ids_reserved().saturating_add(1));
        }
        self.seq_floor = mark;
        if mark > super::SEQ_MAX {
            return; // ids exhausted: this head admits no write at all
        }
        self.takeover_mark = Some(mark);
        if !self.reserve_for(mark) {
            // Logged once the reservation covers it; no write is admitted
            // before (the takeover mark is not acknowledged yet).
            self.deferred_mark = Some(mark);
            return;
        }
        self.log_mark(mark);
    }

    /// Queues the NOOP mark `mark` after this member's last update.
    pub(super) fn log_mark(&mut self, mark: u64) {
        let prev_seq = self.last_queued;
        self.last_queued = mark;
        self.queue_apply(crate::wire::Update {
            seq: mark,
            prev_seq,
            op: crate::wire::WriteOp::Noop,
        });
    }

    pub(super) fn rewire_successor(&mut self) {
        let wanted = self.successor_member().cloned();
        let current = match &self.successor {
            Successor::None => None,
            Successor::Connecting(m) | Successor::Active(m) => Some(m.clone()),
            Successor::Transferring { member, .. } => Some(member.clone()),
        };
        if wanted == current {
            return;
        }
        if current.is_some() {
            self.emit(Action::DropSuccessor);
            self.successor = Successor::None;
            self.outgoing = None;
        }
        if self.standing != Standing::Active {
            return; // a joiner serves no successor until it is complete
        }
        match wanted {
            Some(next) => self.connect_successor(next),
            // No successor: this member is the tail for all it holds.
            None => self.tail_ack(self.last_applied),
        }
    }

    pub(super) fn connect_successor(&mut self, next: Member) {
        self.outgoing = None;
        self.successor = Successor::Connecting(next);
        self.dial_successor();
    }

    /// The coordination session is lost: stop serving at once. Waiting
    /// writes may or may not survive in the chain, so their outcome is
    /// unknown. The IO layer then registers a fresh member.
    pub fn fence(&mut self) {
        if self.standing == Standing::Fenced {
            return;
        }
        self.standing = Standing::Fenced;
        if self.successor != Successor::None {
            self.emit(Action::DropSuccessor);
        }
        self.successor = Successor::None;
        self.outgoing = None;
        self.emit(Action::DropPredecessor);
        for (_, token, _) in std::mem::take(&mut self.waiting) {
            self.emit(Action::WriteFailed {
                token,
                code: ErrorCode::OutcomeUnknown,
            });
        }
        self.sent.trim_through(u64::MAX);
    }

    /// Writes still waiting for the tail (for shutdown).
    pub fn fail_waiting(&mut self, code: ErrorCode) {
        for (_, token, _) in std::mem::take(&mut self.waiting) {
            self.emit(Action::WriteFailed { token, code });
        }
    }
}
