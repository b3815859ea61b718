//! Client requests: admitting writes at the head, deciding where reads go.

use super::{Refusal, Replica, Standing, WriteToken, SEQ_MAX};
use crate::serialize::Key;
use crate::wire::{ErrorCode, Update, WriteOp};

/// What a read looks at, which decides whether a member that is not the
/// tail may answer it (CRAQ, see `dirty.rs`).
#[derive(Debug, Clone, Copy)]
pub enum ReadScope<'a> {
    /// These keys (GET, MGET): clean if none has a write held here.
    Keys(&'a [Key]),
    /// The whole table (SIZE, GETKEYS, GETTABLE, a backup): clean if no
    /// write at all is held here.
    Table,
    /// Only the tail answers (VERIFY: only it knows what is committed).
    TailOnly,
}

impl Replica {
    /// Admits a client write at the head: assigns its sequence number and
    /// queues it. `token` is `Some` for a synchronous write.
    ///
    /// # Errors
    ///
    /// A [`Refusal`] when this member may not take the write now: not the head
    /// (with a redirect), no lease, joining or fenced, Sent full (BUSY), or
    /// sequence numbers exhausted.
    pub fn handle_client_write(
        &mut self,
        op: WriteOp,
        token: Option<WriteToken>,
    ) -> Result<u64, Refusal> {
        self.check_can_write()?;
        let prev_seq = self.last_queued;
        let seq = prev_seq.max(self.seq_floor) + 1;
        if seq > SEQ_MAX {
            return Err(Refusal {
                code: ErrorCode::Unavailable,
                why: "sequence numbers exhausted",
                redirect: None,
            });
        }
        if !self.reserve_for(seq) {
            return Err(Refusal {
                code: ErrorCode::Unavailable,
                why: "reserving sequence numbers in ZooKeeper; retry",
                redirect: None,
            });
        }
        self.last_queued = seq;
        if let Some(token) = token {
            self.waiting.push_back((seq, token, None));
        }
        self.queue_apply(Update { seq, prev_seq, op });
        Ok(seq)
    }

    /// The head to forward a client write to, when this member would
    /// refuse it with NOT_HEAD naming one (spec §5.6); `None` at the head
    /// and whenever the refusal is another (UNAVAILABLE, fenced, no lease).
    #[must_use]
    pub fn forward_target(&self) -> Option<String> {
        match self.check_can_write() {
            Err(r) if r.code == ErrorCode::NotHead => r.redirect,
            _ => None,
        }
    }

    pub(super) fn check_can_write(&self) -> Result<(), Refusal> {
        let refuse = |code, redirect| Err(Refusal::new(code, redirect));
        if !self.lease_valid() {
            return Err(Refusal::no_lease());
        }
        match self.standing {
            Standing::Fenced => return refuse(ErrorCode::Unavailable, None),
            Standing::Joining { .. } if !self.is_head() => {
                return Err(Refusal::redirect(ErrorCode::NotHead, self.head_addr()))
            }
            Standing::Joining { .. } => return refuse(ErrorCode::Unavailable, None),
            Standing::Active => {}
        }
        if self.chain && self.members.is_empty() {
            return refuse(ErrorCode::Unavailable, None);
        }
        if !self.is_head() {
            return Err(Refusal::redirect(ErrorCode::NotHead, self.head_addr()));
        }
        if self.takeover_mark.is_some_and(|m| self.last_acked < m) {
            return Err(Refusal {
                code: ErrorCode::Unavailable,
                why:
                    "waiting for its id skip (a new head's or a restart's mark) to be acknowledged",
                redirect: None,
            });
        }
        // Sent holds applied-but-unacknowledged writes; queued ones will
        // join it. Bounding both bounds the head's memory.
        if self.sent.len() + self.unapplied >= self.sent.capacity()
            || self.sent.bytes() >= self.sent_bytes_max
        {
            return refuse(ErrorCode::Busy, None);
        }
        Ok(())
    }

    /// Whether this member may answer a read of `scope` now, or where to
    /// send it: the acting tail answers every read; with CRAQ any other
    /// active member answers one whose keys are clean here.
    ///
    /// # Errors
    ///
    /// A [`Refusal`] saying where to go instead (NOT_TAIL with a redirect) or
    /// why not now (no lease, fenced).
    pub fn check_can_read(&self, scope: ReadScope<'_>) -> Result<(), Refusal> {
        let refuse = |code, redirect| Err(Refusal::new(code, redirect));
        if !self.lease_valid() {
            return Err(Refusal::no_lease());
        }
        #[cfg(feature = "testing")]
        if self.reads_anywhere {
            return Ok(());
        }
        match self.standing {
            Standing::Fenced => refuse(ErrorCode::Unavailable, None),
            Standing::Joining { .. } => Err(Refusal::redirect(
                ErrorCode::NotTail,
                self.predecessor().map(|m| m.addr.clone()),
            )),
            Standing::Active if self.acting_tail() => Ok(()),
            Standing::Active if self.craq && self.clean(scope) => Ok(()),
            // The tail as membership lists it (spec §5.4): one hop, not a
            // walk down the chain. If it is still joining it names its
            // predecessor, which is then the acting tail.
            Standing::Active => Err(Refusal::redirect(ErrorCode::NotTail, self.tail_addr())),
        }
    }

    /// Whether this member's history reaches `min_seq`, a read's floor
    /// (spec §5.7): a client that has seen sequence number `min_seq` (a
    /// write's op id, a value's version) must not read an older state.
    ///
    /// # Errors
    ///
    /// BEHIND: naming the tail when this member is not it; with no redirect
    /// at the tail (the chain itself is behind what the client saw: it may
    /// catch up, as when an asynchronous write is still on its way, or it
    /// lost writes beyond what it tolerates).
    pub fn check_floor(&self, min_seq: u64) -> Result<(), Refusal> {
        if self.last_applied >= min_seq {
            return Ok(());
        }
        let redirect = if self.acting_tail() {
            None
        } else {
            self.tail_addr()
        };
        Err(Refusal {
            code: ErrorCode::Behind,
            why: "this member's history does not reach the read's floor",
            redirect,
        })
    }

    fn clean(&self, scope: ReadScope<'_>) -> bool {
        if self.chain && self.members.is_empty() {
            return false;
        }
        #[cfg(feature = "testing")]
        if self.planted(super::PlantedBug::ReadDirtyKeys) {
            return true;
        }
        match scope {
            ReadScope::Keys(keys) => !keys.iter().any(|k| self.dirty.is_dirty(k)),
            ReadScope::Table => self.dirty.is_empty(),
            ReadScope::TailOnly => false,
        }
    }

    /// Whether this member may serve a WATCH: any active member may (it
    /// sends only committed changes, see [`Replica::watch_horizon`]).
    ///
    /// # Errors
    ///
    /// A [`Refusal`]: fenced or without a chain (UNAVAILABLE), joining
    /// (NOT_TAIL naming its predecessor, as for reads).
    pub fn check_can_watch(&self) -> Result<(), Refusal> {
        match self.standing {
            Standing::Fenced => Err(Refusal::new(ErrorCode::Unavailable, None)),
            Standing::Joining { .. } => Err(Refusal::redirect(
                ErrorCode::NotTail,
                self.predecessor().map(|m| m.addr.clone()),
            )),
            Standing::Active if self.chain && self.members.is_empty() => {
                Err(Refusal::new(ErrorCode::Unavailable, None))
            }
            Standing::Active => Ok(()),
        }
    }
}
