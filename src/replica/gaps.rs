//! Ids a head takeover skipped, and what VERIFY can say because of them.

use super::Replica;
use crate::wire::{OpState, SeqGap};

impl Replica {
    pub(super) fn forget_gaps(&mut self) {
        self.gaps.clear();
        self.verify_floor = 0;
    }

    /// Records ids skipped between `prev` and `seq`, keeping the newest
    /// [`crate::wire::SNAPSHOT_GAPS_MAX`].
    pub(super) fn note_gap(&mut self, prev: u64, seq: u64) {
        if let Some(old) = SeqGap::record(&mut self.gaps, prev, seq) {
            self.verify_floor = old.last;
        }
    }

    /// Takes a snapshot's gaps as this member's history, keeping only a
    /// well-formed increasing list below `snapshot_seq` (a sender's list
    /// is already bounded by [`crate::wire::SNAPSHOT_GAPS_MAX`] when decoded).
    pub(super) fn adopt_gaps(&mut self, gaps: &[SeqGap], snapshot_seq: u64) {
        self.forget_gaps();
        let mut after = 0;
        for g in gaps {
            if g.first > after && g.first <= g.last && g.last <= snapshot_seq {
                self.gaps.push_back(*g);
                after = g.last;
            }
        }
    }

    /// The gaps below `seq` in this member's history (what a backup of the
    /// table as of `seq` carries, for VERIFY after a restore).
    #[must_use]
    pub fn history_gaps(&self, seq: u64) -> Vec<crate::wire::SeqGap> {
        self.gaps_through(seq)
    }

    /// The gaps at or below `seq` (what a snapshot taken at `seq` carries).
    pub(super) fn gaps_through(&self, seq: u64) -> Vec<SeqGap> {
        // `<=`: a takeover mark at `seq` ends a gap at `seq` itself.
        self.gaps
            .iter()
            .filter(|g| g.last <= seq)
            .copied()
            .collect()
    }

    /// VERIFY: executed here, pending, or not in this member's history
    /// (never assigned, or lost with a head that failed before passing it
    /// on: those ids fall in a gap the next head skipped).
    #[must_use]
    pub fn verify(&self, op_id: u64) -> OpState {
        if op_id == 0 || op_id <= self.verify_floor || self.in_gap(op_id) {
            OpState::Unknown
        } else if op_id <= self.last_applied {
            OpState::Executed
        } else if op_id <= self.last_queued || self.chain {
            // In a chain the head assigns ids: a tail cannot tell an id on
            // its way down from one not yet assigned.
            OpState::Pending
        } else {
            OpState::Unknown
        }
    }

    pub(super) fn in_gap(&self, op_id: u64) -> bool {
        // Gaps are in increasing order: binary search on `last`.
        let i = self.gaps.partition_point(|g| g.last < op_id);
        self.gaps.get(i).is_some_and(|g| g.first <= op_id)
    }
}
