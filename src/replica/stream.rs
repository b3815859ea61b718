//! The update stream: applying, forwarding, acknowledging, and the links
//! to the neighbours that carry it.

use super::{Action, Replica, Standing, StreamViolation, Successor};
use super::{SEQ_MAX, SEQ_STEP_MAX};
use crate::wire::{Body, NodeRole, Update, WriteOk, WriteOp, WriteOutcome};

impl Replica {
    /// The worker executed update `seq` with `outcome`.
    /// Whether [`Replica::handle_applied`] will take the next completion,
    /// update `seq`, into this member's history (it skips the applies of a
    /// state it dropped, and repeats).
    #[must_use]
    pub fn takes_applied(&self, seq: u64) -> bool {
        self.stale_applies == 0 && seq > self.last_applied
    }

    pub fn handle_applied(&mut self, update: Update, outcome: WriteOutcome) {
        if self.stale_applies > 0 {
            self.stale_applies -= 1;
            return;
        }
        self.unapplied = self.unapplied.saturating_sub(1);
        let seq = update.seq;
        if seq <= self.last_applied {
            return;
        }
        self.last_applied = seq;
        if self.durable {
            self.remember(&update);
        }
        if let Some(w) = self.waiting.iter_mut().find(|w| w.0 == seq) {
            // The key's version now, as the update the worker resolved says.
            let version = match update.op {
                WriteOp::Put { .. } => seq,
                WriteOp::Unchanged { version } => version,
                _ => 0,
            };
            w.2 = Some((outcome, version));
        }
        if let Standing::Joining {
            installed: true,
            handoff: Some(t),
        } = self.standing
        {
            if seq >= t {
                self.become_active_tail();
                return;
            }
        }
        if matches!(self.standing, Standing::Joining { .. }) {
            // A joiner acknowledges progress so its predecessor can hand off.
            self.emit(Action::SendUp(seq));
            return;
        }
        self.sent.push(update.clone());
        if let Some(out) = self.outgoing.as_mut() {
            out.backlog.push(update.clone());
        }
        if let Successor::Active(_) | Successor::Transferring { .. } = self.successor {
            if self.transfer_done_or_active() {
                self.actions
                    .push_back(Action::SendDown(Body::Update(update)));
            }
        }
        if self.acting_tail() && !self.backlog_full() {
            self.tail_ack(seq);
        }
        #[cfg(feature = "testing")]
        if self.planted(super::PlantedBug::AckBeforeSuccessor) && self.is_head() {
            self.answer_waiting(seq);
        }
    }

    /// An UPDATE from the predecessor. It must continue this member's
    /// history exactly (its `prev_seq` is our last one); anything else is a
    /// broken or hostile stream, refused whole.
    ///
    /// # Errors
    ///
    /// A [`StreamViolation`] when the update does not continue this member's
    /// history, steps too far, or the predecessor overruns [`super::HELD_UPDATES_MAX`];
    /// the IO layer closes the link.
    pub fn handle_update(&mut self, update: Update) -> Result<(), StreamViolation> {
        if self.standing == Standing::Fenced || update.seq <= self.last_queued {
            return Ok(()); // a resend of something already queued
        }
        if let Standing::Joining {
            installed: false, ..
        } = self.standing
        {
            if self.awaiting_install.is_none() {
                return Ok(()); // no snapshot to apply it on
            }
        }
        let (seq, prev_seq) = (update.seq, update.prev_seq);
        let step_ok = seq > prev_seq && seq <= SEQ_MAX && seq - prev_seq <= SEQ_STEP_MAX;
        if !step_ok {
            return Err(StreamViolation::BadStep { seq, prev_seq });
        }
        let held = self.sent.len() + self.unapplied;
        if held >= super::HELD_UPDATES_MAX {
            let max = super::HELD_UPDATES_MAX;
            return Err(StreamViolation::Overrun { held, max });
        }
        if prev_seq != self.last_queued {
            let last = self.last_queued;
            return Err(StreamViolation::NotNext {
                seq,
                prev_seq,
                last,
            });
        }
        self.last_queued = seq;
        self.queue_apply(update);
        Ok(())
    }

    pub(super) fn queue_apply(&mut self, update: Update) {
        self.note_gap(update.prev_seq, update.skipped_until());
        if self.craq {
            self.dirty.add(update.seq, &update.op);
        }
        self.unapplied += 1;
        self.emit(Action::Apply(update));
    }

    /// Whether this member is waiting on its successor link: connecting
    /// (no HELLO_OK yet) or holding sent updates it has not acknowledged.
    /// The replica's successor watch (`time.rs`) redials a link that stays
    /// silent meanwhile. A snapshot transfer is not watched: a joiner
    /// installing a large table is slow by design.
    #[must_use]
    pub fn waiting_on_successor(&self) -> bool {
        match self.successor {
            Successor::Connecting(_) => true,
            Successor::Active(_) => !self.sent.is_empty(),
            Successor::None | Successor::Transferring { .. } => false,
        }
    }

    /// ACK from the successor.
    pub fn handle_ack(&mut self, seq: u64) {
        self.handle_successor_heard();
        if let Successor::Transferring {
            member,
            snapshot_seq: Some(s),
        } = &self.successor
        {
            if seq >= *s {
                // The joiner has the snapshot: stop acting as tail.
                let member = member.clone();
                self.successor = Successor::Active(member);
                self.emit(Action::SendDown(Body::Handoff {
                    seq: self.last_queued,
                }));
            }
            return;
        }
        if !matches!(self.successor, Successor::Active(_)) {
            return;
        }
        self.ack_through(seq);
    }

    /// Everything up to `seq` is at the tail: trim Sent, tell the
    /// predecessor, answer waiting writes.
    pub(super) fn ack_through(&mut self, seq: u64) {
        let seq = seq.min(self.last_applied);
        if seq <= self.last_acked {
            return;
        }
        self.last_acked = seq;
        self.sent.trim_through(seq);
        if self.chain && self.predecessor().is_some() {
            self.emit(Action::SendUp(seq));
        }
        self.answer_waiting(seq);
    }

    /// Answers the synchronous writes up to `seq`, which the tail holds.
    fn answer_waiting(&mut self, seq: u64) {
        while let Some(&(s, token, outcome)) = self.waiting.front() {
            if s > seq {
                break;
            }
            self.waiting.pop_front();
            let (outcome, version) = outcome.unwrap_or((WriteOutcome::Pending, 0));
            let result = WriteOk { op_id: s, outcome };
            self.emit(Action::WriteDone {
                token,
                result,
                version,
            });
        }
    }

    /// The successor answered HELLO_OK.
    pub fn handle_successor_hello(&mut self, role: NodeRole, last_seq: u64) {
        self.handle_successor_heard();
        let Successor::Connecting(member) = &self.successor else {
            return;
        };
        let member = member.clone();
        if role == NodeRole::Joining || last_seq < self.last_acked {
            if role == NodeRole::Joining && self.send_delta(&member, last_seq) {
                return;
            }
            self.transfers.full += 1;
            self.successor = Successor::Transferring {
                member,
                snapshot_seq: None,
            };
            self.emit(Action::Snapshot);
            // A joiner is not a replica yet: this member is the tail.
            self.tail_ack(self.last_applied);
            return;
        }
        self.successor = Successor::Active(member);
        let resend: Vec<Update> = self.sent.after(last_seq).cloned().collect();
        for u in resend {
            self.emit(Action::SendDown(Body::Update(u)));
        }
    }

    /// The peer connection to the successor broke (or could not be opened).
    pub fn handle_successor_lost(&mut self) {
        if self.successor == Successor::None {
            return;
        }
        self.successor = Successor::None;
        self.outgoing = None;
        // The member may be alive (a broken link) or dead (membership will
        // say so): either way reconnect while it is listed, and acknowledge
        // nothing meanwhile. Only a member with no successor is the tail.
        match self.successor_member().cloned() {
            Some(next) if self.standing == Standing::Active => self.connect_successor(next),
            Some(_) => {}
            None if self.standing == Standing::Active => self.tail_ack(self.last_applied),
            None => {}
        }
    }

    /// The predecessor's connection broke. A joiner that has not finished
    /// must start over with whoever becomes its predecessor.
    pub fn handle_predecessor_lost(&mut self) {
        if let Standing::Joining { .. } = self.standing {
            self.standing = Standing::Joining {
                installed: false,
                handoff: None,
            };
            self.awaiting_install = None;
        }
    }

    /// A new predecessor link is up (this member sent its HELLO_OK). An
    /// active member repeats its acknowledgement level on it: the ACK that
    /// last raised it may have been lost with the old link, and ACKs are
    /// only sent when the level rises, so without this a predecessor whose
    /// writes were all acknowledged meanwhile would wait for an ACK that
    /// never comes, time the link out, redial, and wait again (found by a
    /// 30,000-schedule simulation run: seed 3192).
    pub fn handle_predecessor_linked(&mut self) {
        if self.standing == Standing::Active && self.last_acked > 0 {
            self.emit(Action::SendUp(self.last_acked));
        }
    }

    /// Whether a peer HELLO from `node` comes from the expected predecessor.
    #[must_use]
    pub fn accepts_predecessor(&self, node: &str) -> bool {
        #[cfg(feature = "testing")]
        if self.planted(super::PlantedBug::AcceptStalePredecessor) {
            return self.standing != Standing::Fenced && node != self.me;
        }
        self.standing != Standing::Fenced && self.predecessor().is_some_and(|p| p.name == node)
    }
}
