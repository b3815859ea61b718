//! Typed messages: what each opcode's payload holds.
//!
//! Requests use opcodes 0x01..=0x3F, peer (replication) messages 0x40..=0x7F,
//! replies the request's opcode with the top bit set, and ERROR is 0xFF.

use super::decode::decode_body;
use super::encode::encode_body;
use super::frame::{encode_frame, Frame, FLAG_ASYNC, FLAG_AT_LEAST};
pub use super::opcode::{op, OpClass};
use super::status::ErrorCode;
#[cfg(feature = "arbitrary")]
use crate::serialize::types::arbitrary_text;
use crate::serialize::{Codec, DecodeError, Entry, Key, Reader, Stats};
#[cfg(feature = "arbitrary")]
use arbitrary::{Arbitrary, Unstructured};
use thiserror::Error;

/// Who opens a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum PeerRole {
    Client = 1,
    /// A chain member connecting to its successor.
    Peer = 2,
}

/// A server's place in its chain, as HELLO_OK and STATS report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum NodeRole {
    Standalone = 0,
    Head = 1,
    Middle = 2,
    Tail = 3,
    /// Head and tail at once: a chain of one.
    Solo = 4,
    /// Receiving state; serves nothing yet.
    Joining = 5,
    /// Lost its coordination session; serves nothing.
    Fenced = 6,
}

impl NodeRole {
    pub(super) const ALL: [NodeRole; 7] = [
        NodeRole::Standalone,
        NodeRole::Head,
        NodeRole::Middle,
        NodeRole::Tail,
        NodeRole::Solo,
        NodeRole::Joining,
        NodeRole::Fenced,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Standalone => "standalone",
            NodeRole::Head => "head",
            NodeRole::Middle => "middle",
            NodeRole::Tail => "tail",
            NodeRole::Solo => "solo",
            NodeRole::Joining => "joining",
            NodeRole::Fenced => "fenced",
        }
    }
}

/// HELLO_OK feature bit: the server requires AUTH before other requests.
pub const FEATURE_AUTH_REQUIRED: u32 = 1;
/// HELLO_OK feature bit: the 1.1 extension follows the 1.0 fields (spec
/// §4.1.1). Never set in [`HelloOk::features`]: it is implied by
/// [`HelloOk::extension`], so that a decoded reply has one form.
pub const FEATURE_EXTENSION: u32 = 1 << 1;
/// HELLO_OK feature bit: the server logs writes to a data directory
/// (`STORAGE.md`).
pub const FEATURE_DATA_DIR: u32 = 1 << 2;
/// HELLO_OK feature bit: the server takes CPUT and CDEL (compare-and-set).
pub const FEATURE_CAS: u32 = 1 << 3;
/// HELLO_OK feature bit: the server takes MGET and MWRITE (batches).
pub const FEATURE_BATCH: u32 = 1 << 4;
/// HELLO_OK feature bit: the server takes WATCH and UNWATCH.
pub const FEATURE_WATCH: u32 = 1 << 5;
/// HELLO_OK feature bit: this chain member answers reads of clean keys
/// even when it is not the tail (CRAQ, spec §5.5).
pub const FEATURE_CRAQ_READS: u32 = 1 << 6;
/// HELLO_OK feature bit: the server takes a GET with a floor (header flag
/// AT_LEAST, spec §5.7).
pub const FEATURE_READ_FLOORS: u32 = 1 << 7;
/// HELLO_OK feature bit: the server takes RANGE (ordered scans).
pub const FEATURE_RANGE: u32 = 1 << 8;
/// Most entries one RANGE may ask for.
pub const RANGE_LIMIT_MAX: u32 = 1024;
/// HELLO feature bit (from the client): it speaks protocol 1.1 and wants
/// HELLO_OK's extension. A 1.0 server ignores it and answers as in 1.0.
pub const HELLO_WANTS_EXTENSION: u32 = 1;
/// The minor protocol version this release speaks (announced in the
/// HELLO_OK extension).
pub const PROTOCOL_MINOR: u16 = 1;
/// Most limits one HELLO_OK extension may carry.
pub const HELLO_LIMITS_MAX: usize = 64;

/// A limit the server announces in HELLO_OK's extension, by number (spec
/// §4.1.1); receivers ignore numbers they do not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct ServerLimit {
    pub id: u16,
    pub value: u64,
}

impl ServerLimit {
    pub const ENCODED_LEN: usize = 10;
    /// Requests in progress per connection before the server stops reading.
    pub const INFLIGHT_MAX: u16 = 1;
    /// Reply bytes queued per connection before the server stops reading.
    pub const OUTPUT_BYTES_MAX: u16 = 2;
    /// Largest value a PUT may carry on this server: the largest whose
    /// VALUE reply fits the announced `payload_bytes_max`.
    pub const VALUE_BYTES_MAX: u16 = 3;
    /// Largest key.
    pub const KEY_BYTES_MAX: u16 = 4;
    /// A client with nothing in flight that sends nothing is closed after it.
    pub const IDLE_TIMEOUT_MS: u16 = 5;
    /// A client whose replies do not move is closed after it.
    pub const SEND_TIMEOUT_MS: u16 = 6;
    /// Watches open at once on one connection.
    pub const WATCHES_PER_CONN_MAX: u16 = 7;
    /// Bytes of recent changes each member keeps for watches to resume in.
    pub const WATCH_HISTORY_BYTES: u16 = 8;
}

/// HELLO_OK's 1.1 extension: sent only to a client whose HELLO set
/// [`HELLO_WANTS_EXTENSION`], and flagged by [`FEATURE_EXTENSION`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct HelloExtension {
    /// Minor protocol version: 1 for protocol 1.1.
    pub minor: u16,
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_limits))]
    pub limits: Vec<ServerLimit>,
}

impl HelloExtension {
    /// The announced value of limit `id`, if the server sent it.
    #[must_use]
    pub fn limit(&self, id: u16) -> Option<u64> {
        self.limits.iter().find(|l| l.id == id).map(|l| l.value)
    }
}

/// HELLO_OK features as the struct holds them: bit 1 lives in `extension`.
#[cfg(feature = "arbitrary")]
fn arbitrary_features(u: &mut Unstructured<'_>) -> arbitrary::Result<u32> {
    Ok(u32::arbitrary(u)? & !FEATURE_EXTENSION)
}

#[cfg(feature = "arbitrary")]
fn arbitrary_limits(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<ServerLimit>> {
    let n = u.int_in_range(0..=8)?;
    (0..n).map(|_| ServerLimit::arbitrary(u)).collect()
}

/// What an authenticated user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum Access {
    /// Reads, STATS and VERIFY; writes answer NOT_PERMITTED.
    ReadOnly = 1,
    ReadWrite = 2,
}

/// Whether a write is answered when queued (async) or when executed (sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum WriteMode {
    Sync,
    Async,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Hello {
    pub role: PeerRole,
    /// Feature bits: [`HELLO_WANTS_EXTENSION`]; others are reserved (send
    /// 0, ignore unknown).
    pub features: u32,
    /// For peers: the sender's member name (e.g. `node0000000007`); else empty.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_text))]
    pub node: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct HelloOk {
    pub version: u8,
    /// Feature bits, without [`FEATURE_EXTENSION`] (see `extension`).
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_features))]
    pub features: u32,
    /// Largest payload this server accepts.
    pub payload_bytes_max: u32,
    pub role: NodeRole,
    /// Highest sequence number this server has applied; a predecessor
    /// resends everything after it.
    pub last_seq: u64,
    /// Protocol 1.1's extension, when the HELLO asked for it.
    pub extension: Option<HelloExtension>,
}

/// The result of a PUT or DEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct WriteOk {
    /// Operation id: the write's sequence number, and the entry's version.
    pub op_id: u64,
    pub outcome: WriteOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum WriteOutcome {
    /// Async write: queued, not executed yet (ask VERIFY).
    Pending = 0,
    /// Executed; the key did not exist before (for DEL: nothing deleted).
    Absent = 1,
    /// Executed; the key existed (PUT replaced it, DEL removed it).
    Existed = 2,
    /// A compare-and-set whose expected version did not match: executed
    /// (it has its place in the history), and nothing changed. Only in
    /// CPUT_OK and CDEL_OK.
    #[cfg_attr(feature = "arbitrary", arbitrary(skip))]
    Mismatch = 3,
}

/// The result of a CPUT or CDEL (spec §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct CasOk {
    /// The operation's sequence number, written or not (VERIFY: executed).
    pub op_id: u64,
    /// Absent or Existed: written (the key was absent or existed before);
    /// Mismatch: nothing changed.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_cas_outcome))]
    pub outcome: WriteOutcome,
    /// The key's version now: `op_id` after a CPUT, 0 after a CDEL, the
    /// current one (0: absent) after a mismatch.
    pub version: u64,
}

#[cfg(feature = "arbitrary")]
fn arbitrary_cas_outcome(u: &mut Unstructured<'_>) -> arbitrary::Result<WriteOutcome> {
    Ok(*u.choose(&[
        WriteOutcome::Absent,
        WriteOutcome::Existed,
        WriteOutcome::Mismatch,
    ])?)
}

/// A found value with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Versioned {
    pub version: u64,
    pub value: Vec<u8>,
}

/// What VERIFY says of an operation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum OpState {
    /// Never assigned by this server (or its chain).
    Unknown = 0,
    /// Assigned, not yet executed (in a chain: not yet at the tail).
    Pending = 1,
    /// Executed (in a chain, at the tail: by every replica).
    Executed = 2,
}

/// A write as it travels down the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Update {
    pub seq: u64,
    /// The sequence number of the update before it in the sender's history.
    /// A receiver applies an update only if this is its own last one, so a
    /// gap, a jump or a fork in a stream is caught instead of applied; a
    /// difference above 1 is a range of ids that were never in the history
    /// (a new head skipping ids its failed predecessor may have handed out).
    pub prev_seq: u64,
    pub op: WriteOp,
}

/// An UPDATE's payload (spec §5.2), also the payload of a write-ahead log
/// record (spec/STORAGE.md): `seq`, `prev_seq`, then the write as a kind
/// byte (PUT's or DEL's opcode), the key, and for a PUT the value.
impl Codec for Update {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.prev_seq.to_be_bytes());
        match &self.op {
            WriteOp::Put { key, value } => {
                out.push(op::PUT);
                key.encode(out);
                crate::serialize::encode_data(out, value);
            }
            WriteOp::Del { key } => {
                out.push(op::DEL);
                key.encode(out);
            }
            WriteOp::Noop => out.push(UPDATE_KIND_NOOP),
            WriteOp::Unchanged { version } => {
                out.push(UPDATE_KIND_UNCHANGED);
                out.extend_from_slice(&version.to_be_bytes());
            }
            WriteOp::Batch(ops) => {
                out.push(UPDATE_KIND_BATCH);
                crate::serialize::encode_list(out, ops);
            }
            // Never sent or logged (the worker resolves them first); the
            // encoding exists so that one slipping through is refused by
            // its receiver, loudly, rather than misread.
            WriteOp::PutIf {
                key,
                value,
                expected,
            } => {
                out.push(op::CPUT);
                key.encode(out);
                out.extend_from_slice(&expected.to_be_bytes());
                crate::serialize::encode_data(out, value);
            }
            WriteOp::DelIf { key, expected } => {
                out.push(op::CDEL);
                key.encode(out);
                out.extend_from_slice(&expected.to_be_bytes());
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let seq = r.u64("seq")?;
        let prev_seq = r.u64("prev seq")?;
        let op = match r.u8("update kind")? {
            op::PUT => WriteOp::Put {
                key: Key::decode(r)?,
                value: crate::serialize::decode_data(r)?,
            },
            op::DEL => WriteOp::Del {
                key: Key::decode(r)?,
            },
            UPDATE_KIND_NOOP => WriteOp::Noop,
            UPDATE_KIND_UNCHANGED => WriteOp::Unchanged {
                version: r.u64("version")?,
            },
            UPDATE_KIND_BATCH => {
                WriteOp::Batch(decode_batch(r, "batch writes", BatchOp::MIN_ENCODED_LEN)?)
            }
            other => {
                return Err(DecodeError::Invalid {
                    what: "update kind",
                    value: other.into(),
                })
            }
        };
        Ok(Update { seq, prev_seq, op })
    }
}

/// Sequence numbers `first..=last` that are not in a member's history: a
/// new head skipped them (see `HEAD_TAKEOVER_SEQ_GAP`). VERIFY answers
/// unknown for them, whatever the head that failed had promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqGap {
    pub first: u64,
    pub last: u64,
}

#[cfg(feature = "arbitrary")]
impl<'a> Arbitrary<'a> for SeqGap {
    /// Only well-formed gaps (`first <= last`), as a receiver accepts.
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let first = u64::arbitrary(u)?;
        let len = u64::arbitrary(u)?;
        Ok(SeqGap {
            first,
            last: first.saturating_add(len),
        })
    }
}

#[cfg(feature = "arbitrary")]
fn arbitrary_gaps(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<SeqGap>> {
    let n = u.int_in_range(0..=8)?;
    (0..n).map(|_| SeqGap::arbitrary(u)).collect()
}

impl SeqGap {
    pub const ENCODED_LEN: usize = 16;

    /// Records in `gaps` the ids skipped between `prev` and `seq` (a
    /// takeover's or a restart's jump), keeping the newest
    /// [`SNAPSHOT_GAPS_MAX`]; returns the oldest gap it dropped to make
    /// room. The replica and the log both keep their gaps this way.
    pub fn record(
        gaps: &mut std::collections::VecDeque<SeqGap>,
        prev: u64,
        seq: u64,
    ) -> Option<SeqGap> {
        if seq <= prev.saturating_add(1) {
            return None;
        }
        let dropped = if gaps.len() >= SNAPSHOT_GAPS_MAX {
            gaps.pop_front()
        } else {
            None
        };
        gaps.push_back(SeqGap {
            first: prev + 1,
            last: seq - 1,
        });
        dropped
    }
}

impl Codec for SeqGap {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.first.to_be_bytes());
        out.extend_from_slice(&self.last.to_be_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let first = r.u64("gap first")?;
        let last = r.u64("gap last")?;
        if last < first {
            return Err(DecodeError::Invalid {
                what: "gap (last before first)",
                value: last,
            });
        }
        Ok(SeqGap { first, last })
    }
}

/// Most gaps a snapshot carries (one per head takeover that the history
/// has seen; older ones are forgotten, see `Replica`).
pub const SNAPSHOT_GAPS_MAX: usize = 4096;

/// PEER_HELLO: a predecessor opens a link (spec §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct PeerHello {
    /// The sender's member name.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_text))]
    pub from: String,
    /// The member it believes it is talking to.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_text))]
    pub to: String,
    /// The chain's ZooKeeper root, so a link cannot cross chains.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_text))]
    pub root: String,
    pub nonce: [u8; 32],
}

/// PEER_CHALLENGE: the successor's nonce and its proof of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct PeerChallenge {
    pub nonce: [u8; 32],
    pub proof: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum WriteOp {
    Put {
        key: Key,
        value: Vec<u8>,
    },
    Del {
        key: Key,
    },
    /// Changes nothing. A new head's first update (spec §5.4): its
    /// sequence number claims the ids the head skips, so that every member
    /// knows of the skip before the head hands out any id.
    Noop,
    /// A compare-and-set that did not match: changes nothing, but is in
    /// the history (VERIFY: executed). `version` is what the compare found.
    Unchanged {
        version: u64,
    },
    /// A client's CPUT, between the head's replica and its worker only:
    /// the worker resolves it, in sequence order and before logging it,
    /// into the `Put` or `Unchanged` it becomes; no link or log carries it.
    #[cfg_attr(feature = "arbitrary", arbitrary(skip))]
    PutIf {
        key: Key,
        value: Vec<u8>,
        expected: u64,
    },
    /// A client's CDEL; as [`WriteOp::PutIf`].
    #[cfg_attr(feature = "arbitrary", arbitrary(skip))]
    DelIf {
        key: Key,
        expected: u64,
    },
    /// An MWRITE: its writes, in order, as one update (one sequence
    /// number, every entry it writes at that version), applied all at once.
    Batch(#[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_batch))] Vec<BatchOp>),
}

impl Update {
    /// The end (exclusive) of the ids this update shows were never given
    /// to a write: those after `prev_seq`, up to its own for a write, and
    /// including its own for a NOOP (a mark is no write: VERIFY answers
    /// unknown for its id too).
    #[must_use]
    pub fn skipped_until(&self) -> u64 {
        match self.op {
            WriteOp::Noop => self.seq.saturating_add(1),
            _ => self.seq,
        }
    }
}

/// UPDATE kind byte of [`WriteOp::Noop`] (PUT and DEL use their opcodes).
pub const UPDATE_KIND_NOOP: u8 = 0x00;
/// UPDATE kind byte of [`WriteOp::Unchanged`].
pub const UPDATE_KIND_UNCHANGED: u8 = 0x01;
/// UPDATE kind byte of [`WriteOp::Batch`].
pub const UPDATE_KIND_BATCH: u8 = 0x03;
/// Most keys in one MGET, and most writes in one MWRITE (spec §7).
pub const BATCH_OPS_MAX: usize = 1024;
/// Most bytes of an MWRITE's list of writes, as encoded (spec §7): what
/// keeps its log record within `RECORD_PAYLOAD_BYTES_MAX`, whatever the
/// frame limit (a larger batch would be logged and then refused by
/// recovery as a corrupt record).
pub const BATCH_BYTES_MAX: usize = crate::serialize::VALUE_BYTES_MAX;

/// Bytes `ops` take encoded as a batch's list (a `u32` count, then each
/// write), computed without encoding.
#[must_use]
pub fn batch_encoded_len(ops: &[BatchOp]) -> usize {
    4 + ops
        .iter()
        .map(|o| match o {
            BatchOp::Put { key, value } => 1 + key.encoded_len() + 4 + value.len(),
            BatchOp::Del { key } => 1 + key.encoded_len(),
        })
        .sum::<usize>()
}

/// One write of an MWRITE batch: `u8 kind` (PUT 0x02, DEL 0x04), `key`,
/// and for a PUT `data value`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum BatchOp {
    Put { key: Key, value: Vec<u8> },
    Del { key: Key },
}

impl BatchOp {
    /// Smallest encoding: a kind byte and a one-byte key.
    pub const MIN_ENCODED_LEN: usize = 1 + Key::MIN_ENCODED_LEN;

    #[must_use]
    pub fn key(&self) -> &Key {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Del { key } => key,
        }
    }
}

impl Codec for BatchOp {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            BatchOp::Put { key, value } => {
                out.push(op::PUT);
                key.encode(out);
                crate::serialize::encode_data(out, value);
            }
            BatchOp::Del { key } => {
                out.push(op::DEL);
                key.encode(out);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("batch write kind")? {
            op::PUT => Ok(BatchOp::Put {
                key: Key::decode(r)?,
                value: crate::serialize::decode_data(r)?,
            }),
            op::DEL => Ok(BatchOp::Del {
                key: Key::decode(r)?,
            }),
            other => Err(DecodeError::Invalid {
                what: "batch write kind",
                value: other.into(),
            }),
        }
    }
}

/// A batch's list: 1 ..= [`BATCH_OPS_MAX`] items.
///
/// # Errors
///
/// [`DecodeError`] for a malformed item, an empty list or one over the
/// limit (checked from the count, before anything is allocated).
pub fn decode_batch<T: Codec>(
    r: &mut Reader<'_>,
    what: &'static str,
    min_item_bytes: usize,
) -> Result<Vec<T>, DecodeError> {
    crate::serialize::decode_list_within(r, what, min_item_bytes, 1..=BATCH_OPS_MAX)
}

/// WATCH's `from_seq` for "changes from now on": the stream starts at the
/// member's committed sequence number, which the first WATCH_EVENT names.
pub const WATCH_FROM_NOW: u64 = u64::MAX;

/// One key's change in a WATCH_EVENT: `u8 kind`, `key`, and for a PUT
/// `data value` (spec §4.1, WATCH).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum WatchChange {
    /// Kind 0x02: the key now holds `value`, at the event's version.
    Put { key: Key, value: Vec<u8> },
    /// Kind 0x04: the key was deleted.
    Del { key: Key },
    /// Kind 0x03: the key was written, but its value would not fit in one
    /// frame under the server's limit: GET it (the version is the event's).
    Changed { key: Key },
}

impl WatchChange {
    /// Smallest encoding: a kind byte and a one-byte key.
    pub const MIN_ENCODED_LEN: usize = 1 + Key::MIN_ENCODED_LEN;

    #[must_use]
    pub fn key(&self) -> &Key {
        match self {
            WatchChange::Put { key, .. }
            | WatchChange::Del { key }
            | WatchChange::Changed { key } => key,
        }
    }

    /// Bytes of its encoding.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        match self {
            WatchChange::Put { key, value } => 1 + key.encoded_len() + 4 + value.len(),
            WatchChange::Del { key } | WatchChange::Changed { key } => 1 + key.encoded_len(),
        }
    }
}

impl Codec for WatchChange {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            WatchChange::Put { key, value } => {
                out.push(op::PUT);
                key.encode(out);
                crate::serialize::encode_data(out, value);
            }
            WatchChange::Del { key } => {
                out.push(op::DEL);
                key.encode(out);
            }
            WatchChange::Changed { key } => {
                out.push(op::GET);
                key.encode(out);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("change kind")? {
            op::PUT => Ok(WatchChange::Put {
                key: Key::decode(r)?,
                value: crate::serialize::decode_data(r)?,
            }),
            op::DEL => Ok(WatchChange::Del {
                key: Key::decode(r)?,
            }),
            op::GET => Ok(WatchChange::Changed {
                key: Key::decode(r)?,
            }),
            other => Err(DecodeError::Invalid {
                what: "change kind",
                value: other.into(),
            }),
        }
    }
}

/// WATCH_EVENT (reply 0x90): every change under the watch's prefix at
/// sequence number `seq`, or none (a progress mark: nothing under the
/// prefix changed up to `seq`). `more` says that the changes of this `seq`
/// continue in the next frame (a batch too large for one frame).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct WatchEvent {
    pub seq: u64,
    pub more: bool,
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_batch))]
    pub changes: Vec<WatchChange>,
}

impl WatchEvent {
    /// Bytes of `seq`, `more` and the change count.
    pub const HEADER_LEN: usize = 8 + 1 + 4;
}

impl Codec for WatchEvent {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.push(u8::from(self.more));
        crate::serialize::encode_list(out, &self.changes);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let seq = r.u64("seq")?;
        let more = match r.u8("more")? {
            0 => false,
            1 => true,
            other => {
                return Err(DecodeError::Invalid {
                    what: "more (0 or 1)",
                    value: other.into(),
                })
            }
        };
        let changes = crate::serialize::decode_list_within(
            r,
            "changes",
            WatchChange::MIN_ENCODED_LEN,
            0..=BATCH_OPS_MAX,
        )?;
        Ok(WatchEvent { seq, more, changes })
    }
}

#[cfg(feature = "arbitrary")]
fn arbitrary_bound<'a>(u: &mut Unstructured<'a>) -> arbitrary::Result<Vec<u8>> {
    let n = u.int_in_range(0..=16)?;
    (0..n).map(|_| u8::arbitrary(u)).collect()
}

#[cfg(feature = "arbitrary")]
fn arbitrary_range_limit(u: &mut Unstructured<'_>) -> arbitrary::Result<u32> {
    u.int_in_range(1..=RANGE_LIMIT_MAX)
}

#[cfg(feature = "arbitrary")]
fn arbitrary_batch<'a, T: Arbitrary<'a>>(u: &mut Unstructured<'a>) -> arbitrary::Result<Vec<T>> {
    let n = u.int_in_range(1..=8)?;
    (0..n).map(|_| T::arbitrary(u)).collect()
}

impl WriteOp {
    /// Bytes of key and value this write holds in memory while queued
    /// (what byte bounds on queues count).
    #[must_use]
    pub fn held_bytes(&self) -> usize {
        match self {
            WriteOp::Put { key, value } | WriteOp::PutIf { key, value, .. } => {
                key.as_bytes().len() + value.len()
            }
            WriteOp::Del { key } | WriteOp::DelIf { key, .. } => key.as_bytes().len(),
            WriteOp::Noop | WriteOp::Unchanged { .. } => 0,
            WriteOp::Batch(ops) => ops
                .iter()
                .map(|o| match o {
                    BatchOp::Put { key, value } => key.as_bytes().len() + value.len(),
                    BatchOp::Del { key } => key.as_bytes().len(),
                })
                .sum(),
        }
    }

    /// A compare-and-set decided against `version_now` (the key's version
    /// in sequence order, 0: absent): the PUT or DEL it becomes, or
    /// UNCHANGED. Any other write is itself. The head's worker does this
    /// before logging (see `server::worker`), and the simulator's alike.
    #[must_use]
    pub fn resolve(self, version_now: impl FnOnce(&Key) -> u64) -> WriteOp {
        match self {
            WriteOp::PutIf {
                key,
                value,
                expected,
            } => match version_now(&key) {
                v if v == expected => WriteOp::Put { key, value },
                version => WriteOp::Unchanged { version },
            },
            WriteOp::DelIf { key, expected } => match version_now(&key) {
                v if v == expected => WriteOp::Del { key },
                version => WriteOp::Unchanged { version },
            },
            other => other,
        }
    }

    /// Whether the worker must resolve this write before logging it.
    #[must_use]
    pub fn is_conditional(&self) -> bool {
        matches!(self, WriteOp::PutIf { .. } | WriteOp::DelIf { .. })
    }
}

/// One piece of a state transfer to a joining member.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct SnapshotChunk {
    /// The state is exactly that after applying every update <= this.
    pub snapshot_seq: u64,
    /// Set on the first chunk: the receiver discards whatever it held.
    pub first: bool,
    /// Set on the final chunk; UPDATEs after `snapshot_seq` follow.
    pub last: bool,
    /// KEEP (flag bit 2, with FIRST and LAST, no entries): the receiver
    /// already holds the sender's history up to `snapshot_seq` (its log
    /// ends there) and keeps its table; only the UPDATEs after it follow.
    #[cfg_attr(feature = "arbitrary", arbitrary(default))]
    pub keep: bool,
    /// The gaps in the history up to `snapshot_seq` (FIRST chunk only;
    /// empty in the others).
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_gaps))]
    pub gaps: Vec<SeqGap>,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct ErrorReply {
    /// A registry code; kept raw so that codes from newer servers survive.
    pub code: u16,
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_text))]
    pub message: String,
    /// `host:port` to send the request to instead (NOT_HEAD / NOT_TAIL), or empty.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_text))]
    pub redirect: String,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            code: code as u16,
            message: message.into(),
            redirect: String::new(),
        }
    }

    #[must_use]
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u16(self.code)
    }
}

/// Every message body, requests, peer messages and replies alike.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum Body {
    Hello(Hello),
    Put {
        key: Key,
        value: Vec<u8>,
        mode: WriteMode,
    },
    Get {
        key: Key,
    },
    /// GET with a floor (header flag AT_LEAST, spec §5.7): answered only by
    /// a member whose history reaches `min_seq` (else BEHIND). Its reply is
    /// GET's.
    GetAtLeast {
        key: Key,
        min_seq: u64,
    },
    Del {
        key: Key,
        mode: WriteMode,
    },
    Size,
    GetKeys,
    GetTable,
    Stats,
    Verify {
        op_id: u64,
    },
    /// Log in as a user of the server's users file.
    Auth {
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_text))]
        user: String,
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_text))]
        password: String,
    },
    /// Stream a consistent snapshot of the table (spec §4.1, BACKUP).
    Backup,
    /// CPUT: write `key` = `value` only if its version is `expected` (0:
    /// only if absent). Always synchronous.
    PutIf {
        key: Key,
        expected: u64,
        value: Vec<u8>,
    },
    /// CDEL: delete `key` only if its version is `expected`.
    DelIf {
        key: Key,
        expected: u64,
    },
    /// MGET: the values of up to [`BATCH_OPS_MAX`] keys, read at once.
    MGet {
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_batch))]
        keys: Vec<Key>,
    },
    /// MWRITE: up to [`BATCH_OPS_MAX`] PUTs and DELs executed as one write,
    /// all or nothing. Always synchronous.
    MWrite {
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_batch))]
        ops: Vec<BatchOp>,
    },
    /// WATCH: stream every change under `prefix` after `from_seq` (or
    /// from now: [`WATCH_FROM_NOW`]) as WATCH_EVENT replies, until
    /// UNWATCH or an error ends it.
    Watch {
        from_seq: u64,
        prefix: Vec<u8>,
    },
    /// UNWATCH: end the watch opened by request `watch_id`.
    Unwatch {
        watch_id: u64,
    },
    /// RANGE: up to `limit` entries with `from <= key < to` (no end when
    /// `to` is empty), in key order.
    Range {
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_bound))]
        from: Vec<u8>,
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_bound))]
        to: Vec<u8>,
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_range_limit))]
        limit: u32,
    },
    Update(Update),
    Ack {
        seq: u64,
    },
    Snapshot(SnapshotChunk),
    /// From an acting tail to its newly joined successor: "serve reads and
    /// acknowledge once you have applied `seq`; I no longer do".
    Handoff {
        seq: u64,
    },
    PeerHello(PeerHello),
    PeerChallenge(PeerChallenge),
    PeerProof {
        proof: [u8; 32],
    },
    HelloOk(HelloOk),
    PutOk(WriteOk),
    Value(Option<Versioned>),
    DelOk(WriteOk),
    SizeOk {
        entries: u64,
    },
    Keys(Vec<Key>),
    Entries(Vec<Entry>),
    StatsOk(Stats),
    VerifyOk(OpState),
    AuthOk(Access),
    /// One piece of a BACKUP's snapshot file; `last` ends the stream.
    BackupChunk {
        last: bool,
        data: Vec<u8>,
    },
    PutIfOk(CasOk),
    DelIfOk(CasOk),
    /// MGET's values, one per key asked, in order.
    MGetOk(
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_batch))]
        Vec<Option<Versioned>>,
    ),
    /// MWRITE done: its one operation id, the version of every entry it
    /// wrote.
    MWriteOk {
        op_id: u64,
    },
    WatchEvent(WatchEvent),
    /// UNWATCH done: whether the watch was open. No frame of it follows.
    Unwatched {
        found: bool,
    },
    /// RANGE's entries in key order, and where the next page starts
    /// (empty when the range holds nothing more).
    RangeOk {
        entries: Vec<Entry>,
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_bound))]
        next: Vec<u8>,
    },
    Error(ErrorReply),
}

/// A message: its body and the request id the reply echoes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub struct Message {
    pub request_id: u64,
    pub body: Body,
}

/// Why a well-framed message could not be understood. The stream is intact,
/// so the receiver answers with an error and keeps the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageError {
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    #[error("bad payload for opcode 0x{opcode:02x}: {source}")]
    BadPayload { opcode: u8, source: DecodeError },
}

impl Body {
    /// Whether this is a client write (PUT, DEL, CPUT, CDEL, MWRITE): one
    /// whose outcome is unknown, not retriable, when its reply is lost.
    /// The one list every client consults (a torture run caught the client
    /// retrying a CPUT whose reply a failover had lost: it ran twice).
    #[must_use]
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Body::Put { .. }
                | Body::Del { .. }
                | Body::PutIf { .. }
                | Body::DelIf { .. }
                | Body::MWrite { .. }
        )
    }

    /// The opcode this body travels under.
    #[must_use]
    pub fn opcode(&self) -> u8 {
        use Body::*;
        match self {
            Hello(_) => op::HELLO,
            Put { .. } => op::PUT,
            Get { .. } | GetAtLeast { .. } => op::GET,
            Del { .. } => op::DEL,
            Size => op::SIZE,
            GetKeys => op::GETKEYS,
            GetTable => op::GETTABLE,
            Stats => op::STATS,
            Verify { .. } => op::VERIFY,
            Auth { .. } => op::AUTH,
            Backup => op::BACKUP,
            PutIf { .. } => op::CPUT,
            DelIf { .. } => op::CDEL,
            MGet { .. } => op::MGET,
            MWrite { .. } => op::MWRITE,
            Watch { .. } => op::WATCH,
            Unwatch { .. } => op::UNWATCH,
            Range { .. } => op::RANGE,
            Update(_) => op::UPDATE,
            Ack { .. } => op::ACK,
            Snapshot(_) => op::SNAPSHOT,
            Handoff { .. } => op::HANDOFF,
            PeerHello(_) => op::PEER_HELLO,
            PeerChallenge(_) => op::PEER_CHALLENGE,
            PeerProof { .. } => op::PEER_PROOF,
            HelloOk(_) => op::REPLY | op::HELLO,
            PutOk(_) => op::REPLY | op::PUT,
            Value(_) => op::REPLY | op::GET,
            DelOk(_) => op::REPLY | op::DEL,
            SizeOk { .. } => op::REPLY | op::SIZE,
            Keys(_) => op::REPLY | op::GETKEYS,
            Entries(_) => op::REPLY | op::GETTABLE,
            StatsOk(_) => op::REPLY | op::STATS,
            VerifyOk(_) => op::REPLY | op::VERIFY,
            AuthOk(_) => op::REPLY | op::AUTH,
            BackupChunk { .. } => op::REPLY | op::BACKUP,
            PutIfOk(_) => op::REPLY | op::CPUT,
            DelIfOk(_) => op::REPLY | op::CDEL,
            MGetOk(_) => op::REPLY | op::MGET,
            MWriteOk { .. } => op::REPLY | op::MWRITE,
            WatchEvent(_) => op::REPLY | op::WATCH,
            Unwatched { .. } => op::REPLY | op::UNWATCH,
            RangeOk { .. } => op::REPLY | op::RANGE,
            Error(_) => op::ERROR,
        }
    }

    fn flags(&self) -> u16 {
        match self {
            Body::Put {
                mode: WriteMode::Async,
                ..
            }
            | Body::Del {
                mode: WriteMode::Async,
                ..
            } => FLAG_ASYNC,
            Body::GetAtLeast { .. } => FLAG_AT_LEAST,
            _ => 0,
        }
    }
}

impl Message {
    #[must_use]
    pub fn new(request_id: u64, body: Body) -> Self {
        Message { request_id, body }
    }

    /// The frame that carries this message.
    #[must_use]
    pub fn to_frame(&self) -> Frame {
        let mut payload = Vec::new();
        encode_body(&self.body, &mut payload);
        Frame {
            opcode: self.body.opcode(),
            flags: self.body.flags(),
            request_id: self.request_id,
            payload,
        }
    }

    /// Appends the encoded frame to `out`, payload written in place.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_flagged(0, out);
    }

    /// As [`Message::encode`], with header flags `extra` set besides those
    /// the body implies (a client's NO_FORWARD).
    pub fn encode_flagged(&self, extra: u16, out: &mut Vec<u8>) {
        let (opcode, flags) = (self.body.opcode(), self.body.flags() | extra);
        encode_frame(out, opcode, flags, self.request_id, |o| {
            encode_body(&self.body, o)
        });
    }

    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// As [`Message::encode`], with the authenticated peer link's MAC tag
    /// after the body (spec §5.2).
    pub fn encode_sealed(&self, out: &mut Vec<u8>, mac: &mut crate::auth::LinkMac) {
        let (opcode, flags) = (self.body.opcode(), self.body.flags());
        encode_frame(out, opcode, flags, self.request_id, |o| {
            let start = o.len();
            encode_body(&self.body, o);
            let tag = mac.seal(opcode, flags, self.request_id, &o[start..]);
            o.extend_from_slice(&tag);
        });
    }

    /// Interprets a frame's payload. Flags other than ASYNC on PUT/DEL are
    /// ignored, as are the reserved header bytes.
    ///
    /// # Errors
    ///
    /// [`MessageError`] for an unknown opcode, or a payload that does not
    /// decode or has bytes left over.
    pub fn from_frame(frame: &Frame) -> Result<Message, MessageError> {
        let mut r = Reader::new(&frame.payload);
        let mode = if frame.flags & FLAG_ASYNC != 0 {
            WriteMode::Async
        } else {
            WriteMode::Sync
        };
        if frame.opcode == super::opcode::op::GET && frame.flags & FLAG_AT_LEAST != 0 {
            return Message::get_at_least(frame);
        }
        let body = decode_body(frame.opcode, mode, &mut r)?;
        r.finish().map_err(|source| MessageError::BadPayload {
            opcode: frame.opcode,
            source,
        })?;
        Ok(Message {
            request_id: frame.request_id,
            body,
        })
    }
}

impl Message {
    /// A GET with the AT_LEAST flag: `u64 min_seq`, then the key.
    fn get_at_least(frame: &Frame) -> Result<Message, MessageError> {
        let bad = |source| MessageError::BadPayload {
            opcode: frame.opcode,
            source,
        };
        let mut r = Reader::new(&frame.payload);
        let min_seq = r.u64("min_seq").map_err(bad)?;
        let key = Key::decode(&mut r).map_err(bad)?;
        r.finish().map_err(bad)?;
        Ok(Message {
            request_id: frame.request_id,
            body: Body::GetAtLeast { key, min_seq },
        })
    }
}

#[cfg(feature = "arbitrary")]
/// Builds an arbitrary message from fuzzer bytes (used by tests and fuzz targets).
///
/// # Errors
///
/// When the fuzzer's bytes run out.
pub fn arbitrary_message(data: &[u8]) -> arbitrary::Result<Message> {
    Message::arbitrary(&mut Unstructured::new(data))
}
