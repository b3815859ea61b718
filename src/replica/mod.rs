//! The replica: a sans-IO state machine for one member of a chain (or a
//! standalone server, which is a chain of one that never changes).
//!
//! Inputs arrive through `handle_*` methods; outputs are [`Action`]s taken
//! with [`Replica::poll_action`]. It owns no socket, no thread and no clock:
//! time arrives as [`Replica::handle_timeout`]`(now)` and the replica says
//! when it next needs it with [`Replica::poll_timeout`] (see `time.rs`), so
//! the same code runs in the server, in the deterministic simulation
//! (`tests/chain_sim.rs`) and under the model checker (`tests/model.rs`).
//!
//! | file            | concern                                              |
//! |-----------------|------------------------------------------------------|
//! | `client.rs`     | admitting writes at the head, where reads may go     |
//! | `stream.rs`     | applying, forwarding, acknowledging; neighbour links |
//! | `snapshot.rs`   | state transfer to and from a joiner                  |
//! | `membership.rs` | position, head takeover, rewiring, fencing, rejoin   |
//! | `gaps.rs`       | ids skipped by takeovers, and VERIFY                 |
//! | `time.rs`       | the lease, the silent-successor watch, redial pace   |
//! | `sent.rs`       | the paper's Sent list                                |
//!
//! Contract with the IO layer (the Ready/advance idea of raft-rs):
//! - Call `handle_timeout(now)` on every wake-up before its other inputs,
//!   and drain [`Replica::poll_action`] after every input: the queue is
//!   bounded by [`ACTIONS_MAX`] and the replica stops (an `assert!`) rather
//!   than grow it.
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

mod client;
mod dirty;
mod durable;
mod gaps;
mod membership;
#[cfg(feature = "testing")]
mod planted;
mod sent;
mod snapshot;
mod stream;
#[cfg(test)]
mod tests;
mod time;

use dirty::DirtyKeys;
use snapshot::OutgoingSnapshot;
use time::Timers;

pub use crate::member::Member;
pub use client::ReadScope;
pub use durable::{Transfers, ID_RESERVE_CHUNK, RECENT_BYTES_MAX};
#[cfg(feature = "testing")]
pub use planted::PlantedBug;
pub use sent::SentList;
pub use snapshot::SNAPSHOT_CHUNK_BYTES;
pub use time::{PEER_TIMEOUT_DEFAULT, REDIAL_DELAY};

use crate::wire::{
    Body, ErrorCode, NodeRole, SeqGap, SnapshotChunk, Update, WriteOk, WriteOutcome,
};
use std::collections::VecDeque;

/// A member that becomes head skips this many sequence numbers, so that ids
/// the failed head handed out (at most `sent_max` of them, which is capped
/// at this value) are never reused for another write.
pub const HEAD_TAKEOVER_SEQ_GAP: u64 = 1 << 20;

/// Default bound on the key and value bytes in Sent (unacknowledged writes).
pub const SENT_BYTES_MAX_DEFAULT: usize = 256 * 1024 * 1024;

/// Largest step one update may make from the update before it: a takeover
/// mark skips [`HEAD_TAKEOVER_SEQ_GAP`] ids, and a durable head's mark also
/// skips past the ids reserved in ZooKeeper (`durable.rs`, a few
/// `ID_RESERVE_CHUNK`s at most in practice). Anything larger is a broken
/// stream.
pub const SEQ_STEP_MAX: u64 = 1 << 40;

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
    /// The update does not follow this member's last one (`last`): a gap
    /// or a fork.
    NotNext {
        /// The update's sequence number.
        seq: u64,
        /// The one it claims to follow.
        prev_seq: u64,
        /// The last one this member holds.
        last: u64,
    },
    #[error("update {seq} after {prev_seq} is not a valid step (at most {SEQ_STEP_MAX} ids skipped, none past {SEQ_MAX})")]
    /// The step itself is impossible: backwards, too far, or past
    /// [`SEQ_MAX`].
    BadStep {
        /// The update's sequence number.
        seq: u64,
        /// The one it claims to follow.
        prev_seq: u64,
    },
    /// More unacknowledged work than an honest predecessor can cause (its
    /// own Sent list is bounded by the same capacity).
    #[error("the predecessor sent {held} updates past the last acknowledgement (at most {max})")]
    Overrun {
        /// Updates held, applied or queued, not acknowledged.
        held: usize,
        /// [`HELD_UPDATES_MAX`].
        max: usize,
    },
}

/// Most updates a member holds applied-or-queued but unacknowledged: an
/// honest predecessor holds at most its own Sent capacity, itself capped at
/// [`HEAD_TAKEOVER_SEQ_GAP`] whatever `--sent-max` each member was given;
/// twice that is refused as [`StreamViolation::Overrun`].
#[allow(clippy::cast_possible_truncation)] // 2^21 fits any usize we build for
pub const HELD_UPDATES_MAX: usize = 2 * HEAD_TAKEOVER_SEQ_GAP as usize;

/// Bound on actions produced and not yet taken. The largest burst one
/// input causes is a resend of Sent or a snapshot's backlog (each at most
/// [`HELD_UPDATES_MAX`]) plus the answers to writes waiting on them; the
/// slack covers control actions and snapshot chunks between two drains.
/// The IO layer drains the queue after every input.
pub const ACTIONS_MAX: usize = 4 * HELD_UPDATES_MAX + 4096;

/// Identifies the client request a synchronous write must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriteToken {
    /// The connection the request came on (the IO layer's id).
    pub conn: u64,
    /// The request's id on that connection, echoed in the reply.
    pub request_id: u64,
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
    WriteDone {
        /// The request to answer.
        token: WriteToken,
        /// Its op id and what it found.
        result: WriteOk,
        /// The key's version after it: the op id after a PUT, 0 after a
        /// DEL, what the compare found after a compare-and-set that did
        /// not match (CPUT_OK and CDEL_OK carry it).
        version: u64,
    },
    /// A synchronous write cannot be answered with certainty any more.
    WriteFailed {
        /// The request to answer.
        token: WriteToken,
        /// OUTCOME_UNKNOWN (fenced) or SHUTTING_DOWN.
        code: ErrorCode,
    },
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
    /// Raise the chain's durable floor and reserved ids in ZooKeeper to at
    /// least these (0: as they are); report the result with
    /// [`Replica::handle_durable_floor`].
    RaiseFloor(crate::member::DurableFloor),
    /// Leave the front of the chain and register again (this durable
    /// member may not found the chain; see `durable.rs`).
    StepAside,
}

/// Why a client write was refused before getting a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status to answer with.
    pub code: ErrorCode,
    /// The error message for the client; empty for the code's own text.
    pub why: &'static str,
    /// Where to send it instead (`host:port`), if known.
    pub redirect: Option<String>,
}

impl Refusal {
    /// A refusal with the status code's own text.
    #[must_use]
    pub fn new(code: ErrorCode, redirect: Option<String>) -> Refusal {
        Refusal {
            code,
            why: "",
            redirect,
        }
    }

    /// NOT_HEAD or NOT_TAIL naming `to`; UNAVAILABLE when this member does
    /// not know where to send the client yet (it has not read the chain's
    /// membership, or its view does not list it yet): a redirect always
    /// names a member (spec §3.1).
    #[must_use]
    pub fn redirect(code: ErrorCode, to: Option<String>) -> Refusal {
        match to {
            Some(addr) if !addr.is_empty() => Refusal::new(code, Some(addr)),
            _ => Refusal {
                code: ErrorCode::Unavailable,
                why: "this member does not know the chain's membership yet; retry",
                redirect: None,
            },
        }
    }

    /// A chain member whose coordination lease has lapsed serves nothing:
    /// another member may already have taken its place.
    #[must_use]
    pub fn no_lease() -> Refusal {
        Refusal {
            code: ErrorCode::Unavailable,
            why: "cannot confirm the coordination session; not serving",
            redirect: None,
        }
    }
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

/// A synchronous write waiting for the tail: its sequence number, who to
/// answer, and once applied its outcome and the key's version after it.
type Waiting = (u64, WriteToken, Option<(WriteOutcome, u64)>);

/// One chain member's replication state (see the module doc for the
/// contract with the IO layer). Cloneable so that a model checker can
/// branch on it.
#[derive(Debug, Clone)]
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
    /// A new head's NOOP mark (spec §5.4): no client write is admitted
    /// until the tail has acknowledged it, so that every member knows of
    /// the ids this head skipped before it hands out any.
    takeover_mark: Option<u64>,
    /// A chain member with a data directory (see `durable.rs`).
    durable: bool,
    /// The chain's durable floor and reserved ids, once read from
    /// ZooKeeper.
    durable_floor: Option<crate::member::DurableFloor>,
    /// The highest reservation asked for so far.
    reserve_asked: u64,
    /// A durable head's id-skip mark, waiting for the reservation to
    /// cover it before it is logged.
    deferred_mark: Option<u64>,
    /// The highest floor asked for so far.
    floor_asked: u64,
    /// A step aside was asked for and the member has not registered again.
    stepping_aside: bool,
    /// A durable member's most recent updates, in order, for a successor
    /// whose disk ends among them (see `durable.rs`).
    recent: VecDeque<Update>,
    /// Key and value bytes in `recent`.
    recent_bytes: usize,
    /// State transfers to a successor: whole snapshots, and deltas (the
    /// updates after what its disk holds), with the updates the deltas sent.
    pub(super) transfers: Transfers,
    /// Highest sequence number the worker has reported applied.
    last_applied: u64,
    /// Highest sequence number known to be applied by the tail.
    last_acked: u64,
    /// CRAQ: members that are not the tail answer reads of clean keys.
    craq: bool,
    /// The keys written by updates queued here and not yet acknowledged
    /// (kept by chain members with `craq` on; see `dirty.rs`).
    dirty: DirtyKeys,
    sent: SentList,
    /// Synchronous writes waiting for the tail, in sequence order.
    waiting: VecDeque<Waiting>,
    /// Applies handed to the worker and not yet reported.
    unapplied: usize,
    /// Applies queued before this member started over (rejoin, or a
    /// half-installed snapshot dropped): the worker still reports them,
    /// first and in order, and they belong to a history this member no
    /// longer holds, so they are ignored.
    stale_applies: usize,
    /// Bumped whenever this member's history is replaced (its table
    /// cleared, a snapshot installed): watches of the old one end, and the
    /// IO layer's record of recent changes starts again.
    history_epoch: u64,
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
    /// The lease, the successor watch and the redial pace (see `time.rs`).
    timers: Timers,
    /// A bug planted on purpose (see `planted.rs`).
    #[cfg(feature = "testing")]
    planted: Option<PlantedBug>,
    /// Reads answered in any role (see `planted.rs`).
    #[cfg(feature = "testing")]
    reads_anywhere: bool,
}

impl Replica {
    /// A standalone server: head and tail of a chain that never changes.
    #[must_use]
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
            takeover_mark: None,
            durable: false,
            durable_floor: None,
            reserve_asked: 0,
            deferred_mark: None,
            floor_asked: 0,
            stepping_aside: false,
            recent: VecDeque::new(),
            recent_bytes: 0,
            transfers: Transfers::default(),
            last_applied: 0,
            last_acked: 0,
            craq: chain,
            dirty: DirtyKeys::default(),
            sent: SentList::new(sent_max.min(HELD_UPDATES_MAX / 2)),
            waiting: VecDeque::new(),
            unapplied: 0,
            stale_applies: 0,
            history_epoch: 0,
            partial_snapshot: false,
            awaiting_install: None,
            actions: VecDeque::new(),
            snapshot_chunk_entries: 4096,
            outgoing: None,
            sent_bytes_max: SENT_BYTES_MAX_DEFAULT,
            gaps: VecDeque::new(),
            verify_floor: 0,
            timers: Timers::new(),
            #[cfg(feature = "testing")]
            planted: None,
            #[cfg(feature = "testing")]
            reads_anywhere: false,
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
        self.awaiting_install = None;
        self.sent.trim_through(u64::MAX);
        self.waiting.clear();
        self.seq_floor = 0;
        self.takeover_mark = None;
        self.deferred_mark = None;
        self.stepping_aside = false;
        self.last_acked = 0;
        if self.durable && !self.partial_snapshot {
            // Its table is its log: kept, to found a chain with (when it
            // reaches the durable floor) or to be replaced by the snapshot
            // it receives as a joiner. Writes still with the worker land
            // in both, in order.
            return;
        }
        self.partial_snapshot = false;
        self.forget_unapplied();
        self.last_queued = 0;
        self.last_applied = 0;
        self.forget_gaps();
        self.clear_table();
    }

    /// A standalone server restarted from its data directory: its history
    /// ends at `last_seq` with `gaps` in it. After a `restart`, the ids
    /// after `last_seq` may have been handed to asynchronous writes that
    /// were never logged, so they are skipped (as a new head skips its
    /// predecessor's, see [`HEAD_TAKEOVER_SEQ_GAP`]): VERIFY answers
    /// unknown for them instead of calling another write's id executed.
    pub fn resume(&mut self, last_seq: u64, gaps: &[SeqGap], restart: bool) {
        self.last_queued = last_seq;
        self.last_applied = last_seq;
        self.last_acked = last_seq;
        self.adopt_gaps(gaps, last_seq.saturating_add(1));
        if restart {
            self.mark_id_skip();
        }
    }

    /// Whether this standalone server restarted from its data directory
    /// and its id skip (see [`Replica::resume`]) is not yet logged.
    #[must_use]
    pub fn restart_mark_pending(&self) -> bool {
        !self.chain && self.takeover_mark.is_some_and(|m| self.last_acked < m)
    }

    /// Marks every apply still with the worker as stale (see
    /// `stale_applies`).
    pub(super) fn forget_unapplied(&mut self) {
        self.stale_applies += self.unapplied;
        self.unapplied = 0;
        self.dirty.clear();
    }

    /// Empties the table through the worker, in order with other writes.
    pub(super) fn clear_table(&mut self) {
        self.history_epoch += 1;
        self.dirty.clear();
        self.emit(Action::Install(SnapshotChunk {
            snapshot_seq: 0,
            first: true,
            last: false,
            keep: false,
            gaps: Vec::new(),
            entries: Vec::new(),
        }));
    }

    /// Whether `bug` was planted (never, without the `testing` feature).
    #[cfg(feature = "testing")]
    fn planted(&self, bug: PlantedBug) -> bool {
        self.planted == Some(bug)
    }

    /// Key and value bytes Sent may hold before the head answers BUSY.
    pub fn set_sent_bytes_max(&mut self, bytes: usize) {
        self.sent_bytes_max = bytes.max(1);
    }

    /// CRAQ reads (on by default for chain members): a member that is not
    /// the tail answers reads of keys it holds no unacknowledged write to.
    pub fn set_craq(&mut self, on: bool) {
        self.craq = on && self.chain;
        self.dirty = DirtyKeys::default();
    }

    /// Whether this member answers CRAQ reads (HELLO_OK feature bit 6).
    #[must_use]
    pub fn craq(&self) -> bool {
        self.craq
    }

    /// Distinct keys held dirty here (STATS `dirty_keys`).
    #[must_use]
    pub fn dirty_keys(&self) -> usize {
        self.dirty.keys()
    }

    /// How many entries go in one SNAPSHOT chunk.
    pub fn set_snapshot_chunk_entries(&mut self, n: usize) {
        self.snapshot_chunk_entries = n.max(1);
    }

    /// Queues an action for the IO layer. Exceeding [`ACTIONS_MAX`] is a
    /// bug in the replica or in an IO layer that stopped draining: stop
    /// rather than grow without bound.
    pub(super) fn emit(&mut self, action: Action) {
        assert!(
            self.actions.len() < ACTIONS_MAX,
            "replica actions over their bound ({ACTIONS_MAX}): the IO layer is not draining them"
        );
        self.actions.push_back(action);
    }

    /// Cheap checks of the replica's own bookkeeping, kept in release
    /// builds: a replica that breaks one would acknowledge or resend the
    /// wrong writes, so it stops instead.
    pub(super) fn assert_invariants(&self) {
        assert!(
            self.last_acked <= self.last_applied,
            "acknowledged {} beyond applied {}",
            self.last_acked,
            self.last_applied
        );
        assert!(
            self.last_applied <= self.last_queued,
            "applied {} beyond queued {}",
            self.last_applied,
            self.last_queued
        );
        assert!(
            self.sent.len() <= HELD_UPDATES_MAX,
            "Sent holds {} updates, over {HELD_UPDATES_MAX}",
            self.sent.len()
        );
        if let Some(o) = &self.outgoing {
            assert!(
                o.backlog.len() <= HELD_UPDATES_MAX,
                "snapshot backlog over its bound"
            );
        }
    }

    /// Actions produced and not yet taken.
    #[must_use]
    pub fn pending_actions(&self) -> usize {
        self.actions.len()
    }

    /// The next action for the IO layer; `None` once drained, which is
    /// also when the replica checks its invariants.
    pub fn poll_action(&mut self) -> Option<Action> {
        let next = self.actions.pop_front();
        if next.is_none() {
            // Every input that moves the acknowledged point is followed by
            // a drain: the one place to clean keys, whatever moved it.
            self.dirty.clean_through(self.last_acked);
            self.assert_invariants();
        }
        next
    }

    // ----- position ---------------------------------------------------------

    pub(super) fn my_index(&self) -> Option<usize> {
        self.members.iter().position(|m| m.name == self.me)
    }

    /// Whether this member is the head (a standalone server always is).
    #[must_use]
    pub fn is_head(&self) -> bool {
        !self.chain || self.my_index() == Some(0)
    }

    #[must_use]
    /// The member before this one in its current view (none at the head).
    pub fn predecessor(&self) -> Option<&Member> {
        let i = self.my_index()?;
        i.checked_sub(1).map(|p| &self.members[p])
    }

    #[must_use]
    /// The member after this one in its current view (none at the tail);
    /// the link to it may not be up.
    pub fn successor_member(&self) -> Option<&Member> {
        let i = self.my_index()?;
        self.members.get(i + 1)
    }

    pub(super) fn head_addr(&self) -> Option<String> {
        self.members.first().map(|m| m.addr.clone())
    }

    pub(super) fn tail_addr(&self) -> Option<String> {
        self.members.last().map(|m| m.addr.clone())
    }

    /// Whether this member serves reads and acknowledges writes itself:
    /// it is active and no successor has taken over the tail role.
    /// A successor that is still connecting may be an established member
    /// that lacks recent writes, so nothing is acknowledged until it answers.
    pub(super) fn acting_tail(&self) -> bool {
        self.standing == Standing::Active
            && matches!(
                self.successor,
                Successor::None | Successor::Transferring { .. }
            )
    }

    /// The role reported in HELLO_OK and STATS.
    #[must_use]
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

    #[must_use]
    /// Highest sequence number the worker has reported applied.
    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    #[must_use]
    /// Highest sequence number known to be applied at the tail.
    pub fn last_acked(&self) -> u64 {
        self.last_acked
    }

    #[must_use]
    /// Highest sequence number handed to the worker (STATS `last_assigned`).
    pub fn last_queued(&self) -> u64 {
        self.last_queued
    }

    #[must_use]
    /// Updates in Sent: applied here, not yet acknowledged by the tail.
    pub fn sent_len(&self) -> usize {
        self.sent.len()
    }

    #[must_use]
    /// The Sent list itself (what a new successor is resent).
    pub fn sent(&self) -> &SentList {
        &self.sent
    }

    #[must_use]
    /// This member's node name (empty until it registers).
    pub fn name(&self) -> &str {
        &self.me
    }

    /// Changes every time this member's history is replaced (see
    /// `history_epoch`).
    #[must_use]
    pub fn history_epoch(&self) -> u64 {
        self.history_epoch
    }

    /// How far a watch may be sent changes (spec §4.1, WATCH): the last
    /// update this member has applied and knows the tail has applied, so
    /// committed; `None` while it serves no watch (joining, fenced).
    #[must_use]
    pub fn watch_horizon(&self) -> Option<u64> {
        match self.standing {
            Standing::Active => Some(self.last_acked.min(self.last_applied)),
            _ => None,
        }
    }

    /// `last_seq` for HELLO_OK: 0 while the state is not usable.
    #[must_use]
    pub fn hello_last_seq(&self) -> u64 {
        match self.standing {
            Standing::Active => self.last_applied,
            // A durable joiner says where its log ends: its predecessor
            // may then send only what follows (see `durable.rs`).
            Standing::Joining {
                installed: false, ..
            } if self.durable && !self.partial_snapshot && self.unapplied == 0 => self.last_applied,
            _ => 0,
        }
    }
}
