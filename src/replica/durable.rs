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

use super::{Action, Replica, Standing};

impl Replica {
    /// This chain member logs to a data directory and resumes from it:
    /// its table holds the history up to `last_seq`. It keeps that table
    /// when it registers (see [`Replica::rejoin`]) and may found a chain
    /// with it.
    pub fn resume_durable(&mut self, last_seq: u64, gaps: &[crate::wire::SeqGap]) {
        self.durable = true;
        self.last_queued = last_seq;
        self.last_applied = last_seq;
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
        self.durable_floor.unwrap_or(0)
    }

    /// ZooKeeper holds `floor`: writes up to it may be acknowledged.
    pub fn handle_durable_floor(&mut self, floor: u64) {
        let floor = self.durable_floor.map_or(floor, |f| f.max(floor));
        self.durable_floor = Some(floor);
        if self.durable && self.acting_tail() && !self.backlog_full() {
            self.ack_through(self.last_applied.min(floor));
        }
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
            self.emit(Action::PublishFloor(seq));
        }
        self.ack_through(seq.min(floor));
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
            .is_some_and(|f| self.last_applied >= f && !self.partial_snapshot);
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
}
