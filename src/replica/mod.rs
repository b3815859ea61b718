//! The replica: a sans-IO state machine for one member of a chain (or a
//! standalone server, which is a chain of one that never changes).
//!
//! Inputs arrive through `handle_*` methods; outputs are [`Action`]s taken
//! with [`Replica::poll_action`]. It owns no socket, no thread and no clock,
//! so the same code runs in the server and in the deterministic simulation
//! in `tests/chain_sim.rs`.
//!
//! Contract with the IO layer (the Ready/advance idea of raft-rs):
//! - [`Action::Apply`] goes to the worker in order; the worker reports each
//!   one back with [`Replica::handle_applied`], in the same order.
//! - [`Action::Snapshot`] goes to the worker behind the applies already
//!   queued; the worker reports the consistent cut with
//!   [`Replica::handle_snapshot_taken`]. The cut then goes to the joining
//!   successor one chunk per [`Replica::handle_successor_writable`], which
//!   the IO layer calls while [`Replica::snapshot_pending`] and the link's
//!   output is short, so a large table is never encoded all at once.
//! - Nothing is acknowledged to a client before the tail has applied it.
//!
//! The paper's invariants hold after every input: a member's applied
//! history is a prefix of its predecessor's, and a member's history equals
//! its successor's history followed by its Sent list.

mod sent;

pub use sent::SentList;

use crate::serialize::Entry;
use crate::wire::{Body, ErrorCode, NodeRole, OpState, SeqGap, SnapshotChunk, Update, WriteOp};
use crate::wire::{WriteOk, WriteOutcome, SNAPSHOT_GAPS_MAX};
use std::collections::VecDeque;

/// A member that becomes head skips this many sequence numbers, so that ids
/// the failed head handed out (at most `sent_max` of them, which is capped
/// at this value) are never reused for another write.
pub const HEAD_TAKEOVER_SEQ_GAP: u64 = 1 << 20;

/// Default bound on the key and value bytes in Sent (unacknowledged writes).
pub const SENT_BYTES_MAX_DEFAULT: usize = 256 * 1024 * 1024;

/// Highest sequence number a head assigns (and a member accepts): far
/// beyond any real history (2^62 writes), and low enough that `seq +
/// HEAD_TAKEOVER_SEQ_GAP` can never wrap a `u64`.
pub const SEQ_MAX: u64 = 1 << 62;

/// Why an update from the predecessor was refused: it does not continue
/// this member's history. The IO layer closes the link and logs it; the
/// predecessor reconnects and resends from what this member holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamViolation {
    #[error("update {seq} follows {prev_seq}, but this member's last update is {last}")]
    NotNext { seq: u64, prev_seq: u64, last: u64 },
    #[error("update {seq} after {prev_seq} is not a valid step (at most {HEAD_TAKEOVER_SEQ_GAP} ids skipped, none past {SEQ_MAX})")]
    BadStep { seq: u64, prev_seq: u64 },
}

/// Largest SNAPSHOT chunk payload aimed for (a chunk holds at least one
/// entry, and an entry is at most a key and an 8 MiB value, so every chunk
/// fits the 16 MiB frame limit).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Splits a snapshot into chunks of at most `max_entries` entries and, but
/// for a single large entry, about `max_bytes` bytes. Always at least one
/// chunk (an empty table is one empty chunk).
fn split_chunks(entries: Vec<Entry>, max_entries: usize, max_bytes: usize) -> Vec<Vec<Entry>> {
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

/// Identifies the client request a synchronous write must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriteToken {
    pub conn: u64,
    pub request_id: u64,
}

/// One member of the chain as membership lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Unique, ordered name (the ZooKeeper sequential node name).
    pub name: String,
    /// `host:port` for clients and peers.
    pub addr: String,
}

/// What the replica asks the IO layer to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Execute this write on the table (via the worker), then report it.
    Apply(Update),
    /// Capture the table after every queued write, then report it.
    Snapshot,
    /// Install a snapshot chunk (via the worker, in order with applies):
    /// clear the table first if `first`; report `last` chunks with
    /// [`Replica::handle_snapshot_installed`].
    Install(SnapshotChunk),
    /// A synchronous write has been executed by the tail: answer the client.
    WriteDone { token: WriteToken, result: WriteOk },
    /// A synchronous write cannot be answered with certainty any more.
    WriteFailed { token: WriteToken, code: ErrorCode },
    /// Open a peer connection to this successor and send HELLO; report the
    /// answer with [`Replica::handle_successor_hello`].
    ConnectSuccessor(Member),
    /// Close the peer connection to the successor, if any.
    DropSuccessor,
    /// Close the connection from the predecessor, if any.
    DropPredecessor,
    /// Send to the successor (UPDATE, SNAPSHOT, HANDOFF).
    SendDown(Body),
    /// Send ACK to the predecessor.
    SendUp(u64),
}

/// Why a client write was refused before getting a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    /// Where to send it instead (`host:port`), if known.
    pub redirect: Option<String>,
}

/// Where this member stands with its successor.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Successor {
    None,
    /// Connecting; no HELLO_OK yet. Updates accumulate in Sent.
    Connecting(Member),
    /// A joiner receiving a snapshot: this member still acts as tail.
    Transferring {
        member: Member,
        snapshot_seq: Option<u64>,
    },
    /// Receiving updates and acknowledging them.
    Active(Member),
}

/// Where this member stands itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Holds a complete history; serves according to its position.
    Active,
    /// Receiving a snapshot; `handoff` is set once the predecessor handed
    /// over the tail role at that sequence number.
    Joining {
        installed: bool,
        handoff: Option<u64>,
    },
    Fenced,
}

#[derive(Debug)]
pub struct Replica {
    chain: bool,
    me: String,
    members: Vec<Member>,
    standing: Standing,
    successor: Successor,
    /// Highest sequence number handed to the worker (assigned or received).
    last_queued: u64,
    /// A new head assigns numbers above this (see [`HEAD_TAKEOVER_SEQ_GAP`]).
    seq_floor: u64,
    /// Highest sequence number the worker has reported applied.
    last_applied: u64,
    /// Highest sequence number known to be applied by the tail.
    last_acked: u64,
    sent: SentList,
    /// Synchronous writes waiting for the tail, in sequence order.
    waiting: VecDeque<(u64, WriteToken, Option<WriteOutcome>)>,
    /// Applies handed to the worker and not yet reported.
    unapplied: usize,
    /// Between a FIRST and a LAST snapshot chunk: the table is partial.
    partial_snapshot: bool,
    /// The LAST chunk (of this snapshot sequence number) has been handed to
    /// the worker: updates after it are queued behind the install, and only
    /// that install's completion counts (not a stale one from a predecessor
    /// that died meanwhile).
    awaiting_install: Option<u64>,
    actions: VecDeque<Action>,
    snapshot_chunk_entries: usize,
    /// A snapshot being streamed to a joining successor.
    outgoing: Option<OutgoingSnapshot>,
    /// Key and value bytes Sent may hold before the head answers BUSY.
    sent_bytes_max: usize,
    /// Ranges of ids skipped by head takeovers in this member's history,
    /// oldest first, at most [`SNAPSHOT_GAPS_MAX`]: VERIFY must not call a
    /// write executed because a later id was.
    gaps: VecDeque<SeqGap>,
    /// Ids at or below this are older than the gaps still remembered:
    /// VERIFY answers unknown for them rather than guess.
    verify_floor: u64,
}

/// The rest of a snapshot not yet handed to the IO layer, and the updates
/// applied since its cut: those may only follow the LAST chunk (the joiner
/// has no table to apply them to before), and acting as tail meanwhile
/// trims them from Sent, so they wait here.
#[derive(Debug)]
struct OutgoingSnapshot {
    seq: u64,
    /// The history's gaps up to `seq`, sent with the FIRST chunk.
    gaps: Vec<SeqGap>,
    chunks: VecDeque<Vec<Entry>>,
    first: bool,
    backlog: Vec<Update>,
}

impl Replica {
    /// A standalone server: head and tail of a chain that never changes.
    pub fn standalone(sent_max: usize) -> Replica {
        Replica::new(false, String::new(), sent_max, Standing::Active)
    }

    /// A chain member named `me` that has just registered. It holds no
    /// state and joins through a snapshot unless it turns out to be alone
    /// (then it is the first member and its empty table is the state).
    pub fn chain_member(me: impl Into<String>, sent_max: usize) -> Replica {
        let standing = Standing::Joining {
            installed: false,
            handoff: None,
        };
        Replica::new(true, me.into(), sent_max, standing)
    }

    fn new(chain: bool, me: String, sent_max: usize, standing: Standing) -> Replica {
        Replica {
            chain,
            me,
            members: Vec::new(),
            standing,
            successor: Successor::None,
            last_queued: 0,
            seq_floor: 0,
            last_applied: 0,
            last_acked: 0,
            sent: SentList::new(sent_max.min(HEAD_TAKEOVER_SEQ_GAP as usize)),
            waiting: VecDeque::new(),
            unapplied: 0,
            partial_snapshot: false,
            awaiting_install: None,
            actions: VecDeque::new(),
            snapshot_chunk_entries: 4096,
            outgoing: None,
            sent_bytes_max: SENT_BYTES_MAX_DEFAULT,
            gaps: VecDeque::new(),
            verify_floor: 0,
        }
    }

    /// After fencing, registered again as `name`: a fresh member with an
    /// empty table, which joins through a snapshot. Its old table is never
    /// kept: the session was lost, so the rest of the chain may have
    /// acknowledged writes without it since, and a stale table that found
    /// itself first in the chain would serve old values and give them to
    /// every joiner (seen in a torture run: a member cut off and fenced
    /// before a ZooKeeper restart re-registered first and founded the
    /// chain with a table two seconds old).
    pub fn rejoin(&mut self, name: impl Into<String>) {
        self.me = name.into();
        self.members.clear();
        self.successor = Successor::None;
        self.outgoing = None;
        self.standing = Standing::Joining {
            installed: false,
            handoff: None,
        };
        self.partial_snapshot = false;
        self.awaiting_install = None;
        self.sent.trim_through(u64::MAX);
        self.waiting.clear();
        self.last_queued = 0;
        self.last_applied = 0;
        self.last_acked = 0;
        self.seq_floor = 0;
        self.forget_gaps();
        self.clear_table();
    }

    fn forget_gaps(&mut self) {
        self.gaps.clear();
        self.verify_floor = 0;
    }

    /// Records ids skipped between `prev` and `seq`, keeping the newest
    /// [`SNAPSHOT_GAPS_MAX`].
    fn note_gap(&mut self, prev: u64, seq: u64) {
        if seq <= prev.saturating_add(1) {
            return;
        }
        if self.gaps.len() == SNAPSHOT_GAPS_MAX {
            if let Some(old) = self.gaps.pop_front() {
                self.verify_floor = old.last;
            }
        }
        self.gaps.push_back(SeqGap {
            first: prev + 1,
            last: seq - 1,
        });
    }

    /// Takes a snapshot's gaps as this member's history, keeping only a
    /// well-formed increasing list below `snapshot_seq` (a sender's list
    /// is already bounded by [`SNAPSHOT_GAPS_MAX`] when decoded).
    fn adopt_gaps(&mut self, gaps: &[SeqGap], snapshot_seq: u64) {
        self.forget_gaps();
        let mut after = 0;
        for g in gaps {
            if g.first > after && g.first <= g.last && g.last < snapshot_seq {
                self.gaps.push_back(*g);
                after = g.last;
            }
        }
    }

    /// The gaps at or below `seq` (what a snapshot taken at `seq` carries).
    fn gaps_through(&self, seq: u64) -> Vec<SeqGap> {
        self.gaps.iter().filter(|g| g.last < seq).copied().collect()
    }

    /// Empties the table through the worker, in order with other writes.
    fn clear_table(&mut self) {
        self.actions.push_back(Action::Install(SnapshotChunk {
            snapshot_seq: 0,
            first: true,
            last: false,
            gaps: Vec::new(),
            entries: Vec::new(),
        }));
    }

    /// Key and value bytes Sent may hold before the head answers BUSY.
    pub fn set_sent_bytes_max(&mut self, bytes: usize) {
        self.sent_bytes_max = bytes.max(1);
    }

    /// How many entries go in one SNAPSHOT chunk.
    pub fn set_snapshot_chunk_entries(&mut self, n: usize) {
        self.snapshot_chunk_entries = n.max(1);
    }

    /// Actions produced and not yet taken.
    pub fn pending_actions(&self) -> usize {
        self.actions.len()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ----- position ---------------------------------------------------------

    fn my_index(&self) -> Option<usize> {
        self.members.iter().position(|m| m.name == self.me)
    }

    fn is_head(&self) -> bool {
        !self.chain || self.my_index() == Some(0)
    }

    pub fn predecessor(&self) -> Option<&Member> {
        let i = self.my_index()?;
        i.checked_sub(1).map(|p| &self.members[p])
    }

    pub fn successor_member(&self) -> Option<&Member> {
        let i = self.my_index()?;
        self.members.get(i + 1)
    }

    fn head_addr(&self) -> Option<String> {
        self.members.first().map(|m| m.addr.clone())
    }

    /// Whether this member serves reads and acknowledges writes itself:
    /// it is active and no successor has taken over the tail role.
    /// A successor that is still connecting may be an established member
    /// that lacks recent writes, so nothing is acknowledged until it answers.
    fn acting_tail(&self) -> bool {
        self.standing == Standing::Active
            && matches!(
                self.successor,
                Successor::None | Successor::Transferring { .. }
            )
    }

    /// The role reported in HELLO_OK and STATS.
    pub fn role(&self) -> NodeRole {
        if !self.chain {
            return NodeRole::Standalone;
        }
        match self.standing {
            Standing::Fenced => return NodeRole::Fenced,
            Standing::Joining { .. } => return NodeRole::Joining,
            Standing::Active => {}
        }
        match (self.is_head(), self.acting_tail()) {
            (true, true) => NodeRole::Solo,
            (true, false) => NodeRole::Head,
            (false, true) => NodeRole::Tail,
            (false, false) => NodeRole::Middle,
        }
    }

    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    pub fn last_acked(&self) -> u64 {
        self.last_acked
    }

    pub fn last_queued(&self) -> u64 {
        self.last_queued
    }

    pub fn sent_len(&self) -> usize {
        self.sent.len()
    }

    pub fn sent(&self) -> &SentList {
        &self.sent
    }

    pub fn name(&self) -> &str {
        &self.me
    }

    /// `last_seq` for HELLO_OK: 0 while the state is not usable.
    pub fn hello_last_seq(&self) -> u64 {
        match self.standing {
            Standing::Active => self.last_applied,
            _ => 0,
        }
    }

    // ----- client requests --------------------------------------------------

    /// Admits a client write at the head: assigns its sequence number and
    /// queues it. `token` is `Some` for a synchronous write.
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

    fn check_can_write(&self) -> Result<(), Refusal> {
        let refuse = |code, redirect| Err(Refusal { code, redirect });
        match self.standing {
            Standing::Fenced => return refuse(ErrorCode::Unavailable, None),
            Standing::Joining { .. } if !self.is_head() => {
                return refuse(ErrorCode::NotHead, self.head_addr())
            }
            Standing::Joining { .. } => return refuse(ErrorCode::Unavailable, None),
            Standing::Active => {}
        }
        if self.chain && self.members.is_empty() {
            return refuse(ErrorCode::Unavailable, None);
        }
        if !self.is_head() {
            return refuse(ErrorCode::NotHead, self.head_addr());
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

    /// Whether this member may answer a read now, or where to send it.
    pub fn check_can_read(&self) -> Result<(), Refusal> {
        let refuse = |code, redirect| Err(Refusal { code, redirect });
        match self.standing {
            Standing::Fenced => refuse(ErrorCode::Unavailable, None),
            Standing::Joining { .. } => refuse(
                ErrorCode::NotTail,
                self.predecessor().map(|m| m.addr.clone()),
            ),
            Standing::Active if self.acting_tail() => Ok(()),
            Standing::Active => {
                let next = self.successor_member().map(|m| m.addr.clone());
                refuse(ErrorCode::NotTail, next)
            }
        }
    }

    /// VERIFY: executed here, pending, or not in this member's history
    /// (never assigned, or lost with a head that failed before passing it
    /// on: those ids fall in a gap the next head skipped).
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

    fn in_gap(&self, op_id: u64) -> bool {
        // Gaps are in increasing order: binary search on `last`.
        let i = self.gaps.partition_point(|g| g.last < op_id);
        self.gaps.get(i).is_some_and(|g| g.first <= op_id)
    }

    // ----- worker reports ---------------------------------------------------

    /// The worker executed update `seq` with `outcome`.
    pub fn handle_applied(&mut self, update: Update, outcome: WriteOutcome) {
        self.unapplied = self.unapplied.saturating_sub(1);
        let seq = update.seq;
        if seq <= self.last_applied {
            return;
        }
        self.last_applied = seq;
        if let Some(w) = self.waiting.iter_mut().find(|w| w.0 == seq) {
            w.2 = Some(outcome);
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
            self.actions.push_back(Action::SendUp(seq));
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
            self.ack_through(seq);
        }
    }

    /// Whether the updates waiting for a snapshot's LAST chunk have reached
    /// Sent's capacity. An acting tail then stops acknowledging, so the
    /// head's Sent list fills and it answers BUSY (the backlog stays under
    /// twice Sent's capacity): without this the backlog grew with every
    /// write for as long as the transfer lasted (the acting tail's acks
    /// kept trimming Sent upstream, so nothing pushed back).
    fn backlog_full(&self) -> bool {
        self.outgoing
            .as_ref()
            .is_some_and(|o| o.backlog.len() >= self.sent.capacity())
    }

    /// Updates flow to a transferring successor only after its snapshot.
    fn transfer_done_or_active(&self) -> bool {
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
                self.actions.push_back(Action::SendDown(Body::Update(u)));
            }
            // Acknowledgements held back while the backlog was full.
            if self.acting_tail() {
                self.ack_through(self.last_applied);
            }
        }
    }

    fn push_chunk(
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
            gaps,
            entries,
        };
        self.actions
            .push_back(Action::SendDown(Body::Snapshot(chunk)));
    }

    // ----- peers ------------------------------------------------------------

    /// An UPDATE from the predecessor. It must continue this member's
    /// history exactly (its `prev_seq` is our last one); anything else is a
    /// broken or hostile stream, refused whole.
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
        let step_ok =
            seq > prev_seq && seq <= SEQ_MAX && seq - prev_seq <= HEAD_TAKEOVER_SEQ_GAP + 1;
        if !step_ok {
            return Err(StreamViolation::BadStep { seq, prev_seq });
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

    fn queue_apply(&mut self, update: Update) {
        self.note_gap(update.prev_seq, update.seq);
        self.unapplied += 1;
        self.actions.push_back(Action::Apply(update));
    }

    /// A SNAPSHOT chunk from the predecessor (this member is joining).
    pub fn handle_snapshot_chunk(&mut self, chunk: SnapshotChunk) {
        let Standing::Joining { installed, .. } = self.standing else {
            return;
        };
        if installed && !chunk.first {
            return;
        }
        if chunk.first {
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
        self.actions.push_back(Action::Install(chunk));
    }

    /// The worker installed the LAST chunk of a snapshot taken at `seq`.
    pub fn handle_snapshot_installed(&mut self, seq: u64) {
        if self.awaiting_install != Some(seq) {
            return;
        }
        self.awaiting_install = None;
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
        self.actions.push_back(Action::SendUp(seq));
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

    fn become_active_tail(&mut self) {
        self.standing = Standing::Active;
        self.last_acked = self.last_applied;
        self.actions.push_back(Action::SendUp(self.last_applied));
        // A successor that registered while this member was joining waits
        // for it to be complete before it is served.
        if let Some(next) = self.successor_member().cloned() {
            self.connect_successor(next);
        }
    }

    /// Whether this member is waiting on its successor link: connecting
    /// (no HELLO_OK yet) or holding sent updates it has not acknowledged.
    /// The I/O layer, which has the clock, redials a link that stays silent
    /// meanwhile. A snapshot transfer is not watched: a joiner installing a
    /// large table is slow by design.
    pub fn waiting_on_successor(&self) -> bool {
        match self.successor {
            Successor::Connecting(_) => true,
            Successor::Active(_) => !self.sent.is_empty(),
            Successor::None | Successor::Transferring { .. } => false,
        }
    }

    /// ACK from the successor.
    pub fn handle_ack(&mut self, seq: u64) {
        if let Successor::Transferring {
            member,
            snapshot_seq: Some(s),
        } = &self.successor
        {
            if seq >= *s {
                // The joiner has the snapshot: stop acting as tail.
                let member = member.clone();
                self.successor = Successor::Active(member);
                self.actions.push_back(Action::SendDown(Body::Handoff {
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
    fn ack_through(&mut self, seq: u64) {
        let seq = seq.min(self.last_applied);
        if seq <= self.last_acked {
            return;
        }
        self.last_acked = seq;
        self.sent.trim_through(seq);
        if self.chain && self.predecessor().is_some() {
            self.actions.push_back(Action::SendUp(seq));
        }
        while let Some(&(s, token, outcome)) = self.waiting.front() {
            if s > seq {
                break;
            }
            self.waiting.pop_front();
            let result = WriteOk {
                op_id: s,
                outcome: outcome.unwrap_or(WriteOutcome::Pending),
            };
            self.actions.push_back(Action::WriteDone { token, result });
        }
    }

    /// The successor answered HELLO_OK.
    pub fn handle_successor_hello(&mut self, role: NodeRole, last_seq: u64) {
        let Successor::Connecting(member) = &self.successor else {
            return;
        };
        let member = member.clone();
        if role == NodeRole::Joining || last_seq < self.last_acked {
            self.successor = Successor::Transferring {
                member,
                snapshot_seq: None,
            };
            self.actions.push_back(Action::Snapshot);
            // A joiner is not a replica yet: this member is the tail.
            self.ack_through(self.last_applied);
            return;
        }
        self.successor = Successor::Active(member);
        let resend: Vec<Update> = self.sent.after(last_seq).cloned().collect();
        for u in resend {
            self.actions.push_back(Action::SendDown(Body::Update(u)));
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
            None if self.standing == Standing::Active => self.ack_through(self.last_applied),
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

    /// Whether a peer HELLO from `node` comes from the expected predecessor.
    pub fn accepts_predecessor(&self, node: &str) -> bool {
        self.standing != Standing::Fenced && self.predecessor().is_some_and(|p| p.name == node)
    }

    // ----- membership -------------------------------------------------------

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
            self.becomes_head(was_head);
        }
        if old_pred.is_some() && old_pred.as_ref() != self.predecessor() {
            self.actions.push_back(Action::DropPredecessor);
            self.handle_predecessor_lost();
        }
        self.rewire_successor();
    }

    fn becomes_head(&mut self, was_head: bool) {
        if let Standing::Joining { .. } = self.standing {
            // No member is left before it. Every member after it joined
            // later and holds less, so what it holds is the best state
            // left: empty for a new chain, or a whole snapshot from a tail
            // that has since failed with every member before it (beyond
            // what a chain tolerates; persistence is what would cover it).
            // Only a half-received snapshot is not a state: drop it.
            if self.partial_snapshot {
                self.partial_snapshot = false;
                self.last_queued = 0;
                self.last_applied = 0;
                self.last_acked = 0;
                self.forget_gaps();
                self.clear_table();
            }
            self.standing = Standing::Active;
        }
        if !was_head && self.last_queued > 0 {
            // last_queued <= SEQ_MAX (checked on receipt), so no overflow.
            self.seq_floor = self.last_queued.saturating_add(HEAD_TAKEOVER_SEQ_GAP);
        }
    }

    fn rewire_successor(&mut self) {
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
            self.actions.push_back(Action::DropSuccessor);
            self.successor = Successor::None;
            self.outgoing = None;
        }
        if self.standing != Standing::Active {
            return; // a joiner serves no successor until it is complete
        }
        match wanted {
            Some(next) => self.connect_successor(next),
            // No successor: this member is the tail for all it holds.
            None => self.ack_through(self.last_applied),
        }
    }

    fn connect_successor(&mut self, next: Member) {
        self.outgoing = None;
        self.successor = Successor::Connecting(next.clone());
        self.actions.push_back(Action::ConnectSuccessor(next));
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
            self.actions.push_back(Action::DropSuccessor);
        }
        self.successor = Successor::None;
        self.outgoing = None;
        self.actions.push_back(Action::DropPredecessor);
        for (_, token, _) in self.waiting.drain(..) {
            self.actions.push_back(Action::WriteFailed {
                token,
                code: ErrorCode::OutcomeUnknown,
            });
        }
        self.sent.trim_through(u64::MAX);
    }

    /// Writes still waiting for the tail (for shutdown).
    pub fn fail_waiting(&mut self, code: ErrorCode) {
        for (_, token, _) in self.waiting.drain(..) {
            self.actions.push_back(Action::WriteFailed { token, code });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serialize::Key;

    fn entry(i: usize, value_bytes: usize) -> Entry {
        Entry {
            key: Key::new(format!("k{i}")).unwrap(),
            version: i as u64,
            value: vec![0; value_bytes],
        }
    }

    #[test]
    fn snapshot_chunks_are_bounded_by_bytes_and_entries() {
        // 100 KiB values: about ten per 1 MiB chunk, never one huge frame.
        let big: Vec<Entry> = (0..100).map(|i| entry(i, 100 * 1024)).collect();
        let chunks = split_chunks(big, 4096, SNAPSHOT_CHUNK_BYTES);
        assert!(chunks.len() >= 10);
        assert!(chunks.iter().all(|c| !c.is_empty()));
        for c in &chunks {
            let bytes: usize = c.iter().map(|e| e.value.len()).sum();
            assert!(bytes <= SNAPSHOT_CHUNK_BYTES, "{bytes}");
        }
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 100);
        // Small entries: the entry cap applies.
        let small: Vec<Entry> = (0..10).map(|i| entry(i, 1)).collect();
        assert_eq!(split_chunks(small, 3, SNAPSHOT_CHUNK_BYTES).len(), 4);
        // One entry larger than the byte target still gets its own chunk.
        let huge = vec![entry(0, 2 * SNAPSHOT_CHUNK_BYTES), entry(1, 1)];
        assert_eq!(split_chunks(huge, 100, SNAPSHOT_CHUNK_BYTES).len(), 2);
        // An empty table is one empty chunk (FIRST and LAST at once).
        assert_eq!(split_chunks(Vec::new(), 10, 10), vec![Vec::<Entry>::new()]);
    }

    #[test]
    fn waits_on_its_successor_only_while_connecting_or_unacknowledged() {
        let m = |n: &str| Member {
            name: n.into(),
            addr: format!("{n}:1"),
        };
        let apply_all = |r: &mut Replica| {
            while let Some(a) = r.poll_action() {
                if let Action::Apply(u) = a {
                    r.handle_applied(u, WriteOutcome::Absent);
                }
            }
        };
        let mut r = Replica::chain_member("n1", 16);
        r.handle_membership(vec![m("n1")]);
        apply_all(&mut r);
        assert!(!r.waiting_on_successor(), "a chain of one has no successor");
        r.handle_membership(vec![m("n1"), m("n2")]);
        assert!(r.waiting_on_successor(), "connecting");
        r.handle_successor_hello(NodeRole::Tail, 0);
        assert!(!r.waiting_on_successor(), "linked, nothing outstanding");
        let key = Key::new("k").unwrap();
        let seq = r.handle_client_write(WriteOp::Del { key }, None).unwrap();
        apply_all(&mut r);
        assert!(r.waiting_on_successor(), "an update awaits its ACK");
        r.handle_ack(seq);
        assert!(!r.waiting_on_successor(), "acknowledged");
        r.handle_successor_lost();
        assert!(r.waiting_on_successor(), "redialling");
        r.handle_successor_hello(NodeRole::Joining, 0);
        assert!(
            !r.waiting_on_successor(),
            "a joiner's transfer is not timed"
        );
    }

    fn member(n: &str) -> Member {
        Member {
            name: n.into(),
            addr: format!("{n}:1"),
        }
    }

    fn del(seq: u64, prev_seq: u64) -> Update {
        Update {
            seq,
            prev_seq,
            op: WriteOp::Del {
                key: Key::new("k").unwrap(),
            },
        }
    }

    /// A middle member of an established chain that has applied up to 5.
    fn middle_at_5() -> Replica {
        let mut r = Replica::chain_member("n2", 16);
        r.handle_membership(vec![member("n1"), member("n2")]);
        r.standing = Standing::Active;
        r.last_queued = 5;
        r.last_applied = 5;
        r
    }

    #[test]
    fn an_update_must_continue_the_history_exactly() {
        let mut r = middle_at_5();
        // A resend of something held is ignored, whatever it claims.
        assert_eq!(r.handle_update(del(5, 99)), Ok(()));
        assert_eq!(r.last_queued(), 5);
        // A gap: update 7 after 6, which this member never got.
        assert_eq!(
            r.handle_update(del(7, 6)),
            Err(StreamViolation::NotNext {
                seq: 7,
                prev_seq: 6,
                last: 5
            })
        );
        // Jumps too far, backwards steps, and seqs near the top of u64.
        let far = 5 + HEAD_TAKEOVER_SEQ_GAP + 2;
        assert!(matches!(
            r.handle_update(del(far, 5)),
            Err(StreamViolation::BadStep { .. })
        ));
        assert!(matches!(
            r.handle_update(del(1 << 62 | 1, 5)),
            Err(StreamViolation::BadStep { .. })
        ));
        assert!(matches!(
            r.handle_update(del(u64::MAX, 5)),
            Err(StreamViolation::BadStep { .. })
        ));
        assert_eq!(r.last_queued(), 5, "nothing refused was queued");
        // The next one, and a head takeover's largest legal jump, are taken.
        assert_eq!(r.handle_update(del(6, 5)), Ok(()));
        let jump = 6 + HEAD_TAKEOVER_SEQ_GAP + 1;
        assert_eq!(r.handle_update(del(jump, 6)), Ok(()));
        assert_eq!(r.last_queued(), jump);
    }

    #[test]
    fn verify_answers_unknown_for_ids_a_takeover_skipped() {
        let mut r = middle_at_5();
        let jump = 5 + HEAD_TAKEOVER_SEQ_GAP + 1;
        r.handle_update(del(jump, 5)).unwrap();
        while let Some(a) = r.poll_action() {
            if let Action::Apply(u) = a {
                r.handle_applied(u, WriteOutcome::Absent);
            }
        }
        assert_eq!(r.verify(5), OpState::Executed);
        assert_eq!(r.verify(6), OpState::Unknown, "lost with the old head");
        assert_eq!(r.verify(jump - 1), OpState::Unknown);
        assert_eq!(r.verify(jump), OpState::Executed);
        // A snapshot taken now carries the gap to a joiner.
        assert_eq!(
            r.gaps_through(jump),
            vec![SeqGap {
                first: 6,
                last: jump - 1
            }]
        );
    }

    #[test]
    fn a_new_head_never_wraps_its_sequence_numbers() {
        let mut r = middle_at_5();
        r.last_queued = SEQ_MAX;
        r.last_applied = SEQ_MAX;
        r.handle_membership(vec![member("n2")]); // the head died
        let key = Key::new("k").unwrap();
        let refused = r.handle_client_write(WriteOp::Del { key }, None);
        assert_eq!(refused.map_err(|e| e.code), Err(ErrorCode::Unavailable));
    }

    /// While a snapshot streams to a joiner, the updates that must follow
    /// its LAST chunk wait in a backlog. That backlog is bounded: once it
    /// holds Sent's capacity, the acting tail stops acknowledging (so the
    /// head fills up and answers BUSY), and resumes after the LAST chunk.
    /// Here the acting tail is also the head, as in a chain of one.
    #[test]
    fn the_backlog_behind_a_snapshot_is_bounded_by_holding_back_acks() {
        const CAP: usize = 4;
        let mut r = Replica::chain_member("n1", CAP);
        r.set_snapshot_chunk_entries(1);
        r.handle_membership(vec![member("n1")]);
        let apply_all = |r: &mut Replica| {
            let mut snapshot_asked = false;
            while let Some(a) = r.poll_action() {
                match a {
                    Action::Apply(u) => r.handle_applied(u, WriteOutcome::Absent),
                    Action::Snapshot => snapshot_asked = true,
                    _ => {}
                }
            }
            snapshot_asked
        };
        let write = |r: &mut Replica, i: u64| {
            let key = Key::new(format!("k{i}")).unwrap();
            r.handle_client_write(WriteOp::Del { key }, None)
        };
        for i in 0..2 {
            write(&mut r, i).unwrap();
        }
        apply_all(&mut r);
        // A joiner arrives; the snapshot is cut at the current state.
        r.handle_membership(vec![member("n1"), member("n2")]);
        r.handle_successor_hello(NodeRole::Joining, 0);
        assert!(apply_all(&mut r), "a snapshot was asked for");
        r.handle_snapshot_taken(r.last_applied(), vec![entry(0, 1), entry(1, 1)]);
        // Writes go on while the transfer waits on the link: acknowledged
        // until the backlog is full, then BUSY.
        let mut admitted = 0;
        for i in 10..30 {
            if write(&mut r, i).is_err() {
                break;
            }
            admitted += 1;
            apply_all(&mut r);
        }
        assert!((CAP..20).contains(&admitted), "admitted {admitted}");
        // Acks stop at CAP; Sent then fills to CAP before BUSY.
        assert!(r.outgoing.as_ref().unwrap().backlog.len() <= 2 * CAP);
        let acked = r.last_acked();
        assert!(acked < r.last_applied(), "acks were held back");
        // The transfer proceeds: after the LAST chunk, acks resume.
        while r.snapshot_pending() {
            r.handle_successor_writable();
        }
        assert_eq!(r.last_acked(), r.last_applied());
        assert!(write(&mut r, 99).is_ok(), "writes are admitted again");
    }

    #[test]
    fn a_member_that_lost_its_session_never_founds_a_chain_from_its_old_table() {
        let m = |n: &str| Member {
            name: n.into(),
            addr: format!("{n}:1"),
        };
        let mut r = Replica::chain_member("n1", 16);
        r.handle_membership(vec![m("n1")]);
        let key = Key::new("k").unwrap();
        let op = WriteOp::Put {
            key,
            value: b"old".to_vec(),
        };
        r.handle_client_write(op, None).unwrap();
        while let Some(a) = r.poll_action() {
            if let Action::Apply(u) = a {
                r.handle_applied(u, WriteOutcome::Absent);
            }
        }
        assert_eq!(r.last_applied(), 1);
        // The session is lost; the others may go on without this member.
        r.fence();
        r.rejoin("n7");
        let cleared = std::iter::from_fn(|| r.poll_action())
            .any(|a| matches!(a, Action::Install(c) if c.first && c.entries.is_empty()));
        assert!(cleared, "the old table must be emptied");
        // Even alone in the chain (everyone before it gone), it starts empty.
        r.handle_membership(vec![m("n7")]);
        assert_eq!(r.role(), NodeRole::Solo);
        assert_eq!(r.last_applied(), 0);
        assert_eq!(r.last_queued(), 0);
    }
}
