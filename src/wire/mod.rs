//! The framed binary protocol: frames ([`frame`]), typed messages
//! ([`message`]) and the error registry ([`status`]). `spec/PROTOCOL.md` is
//! the normative description; this module implements it.

mod decode;
mod encode;
pub mod frame;
pub mod message;
pub mod opcode;
pub mod status;

pub use frame::{decode_frame, Frame, FrameDecoder, FrameError};
pub use frame::{
    FLAG_ASYNC, FLAG_AT_LEAST, FLAG_NO_FORWARD, HEADER_BYTES, PAYLOAD_BYTES_MAX_DEFAULT,
    PROTOCOL_VERSION,
};
pub use message::{
    batch_encoded_len, decode_batch, BatchOp, CasOk, HelloExtension, ServerLimit, WatchChange,
    WatchEvent, BATCH_BYTES_MAX, BATCH_OPS_MAX, FEATURE_BATCH, FEATURE_CAS, FEATURE_CRAQ_READS,
    FEATURE_DATA_DIR, FEATURE_EXTENSION, FEATURE_RANGE, FEATURE_READ_FLOORS, FEATURE_WATCH,
    HELLO_LIMITS_MAX, HELLO_WANTS_EXTENSION, PROTOCOL_MINOR, RANGE_LIMIT_MAX, WATCH_FROM_NOW,
};
pub use message::{
    op, Access, Body, ErrorReply, Hello, HelloOk, Message, MessageError, NodeRole, OpClass,
    OpState, PeerChallenge, PeerHello, PeerRole, SeqGap, SnapshotChunk, Update, Versioned,
    WriteMode, WriteOk, WriteOp, WriteOutcome, FEATURE_AUTH_REQUIRED, SNAPSHOT_GAPS_MAX,
    UPDATE_KIND_BATCH, UPDATE_KIND_NOOP, UPDATE_KIND_UNCHANGED,
};
pub use status::{AfterError, ErrorCode, Retry};
