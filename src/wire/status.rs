//! The error registry: one wire code per error, each classed by what a
//! client may do next. "Not found" is not here: it is a normal answer.

use thiserror::Error;

/// What a client may do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The request was not executed; sending it again (perhaps elsewhere,
    /// perhaps later) is safe.
    Retriable,
    /// Sending the same request again will fail the same way.
    NotRetriable,
    /// A write may or may not have taken effect. Never retry it blindly: read
    /// the key, or `verify` the operation id if one was returned.
    OutcomeUnknown,
}

/// What the server does with the connection after sending the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterError {
    KeepOpen,
    Close,
}

/// Wire status codes (`u16`). Codes are never reused; unknown codes must be
/// treated as [`Retry::NotRetriable`] by clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
#[repr(u16)]
pub enum ErrorCode {
    #[error("malformed frame (bad magic or CRC)")]
    BadFrame = 1,
    #[error("unsupported protocol version")]
    UnsupportedVersion = 2,
    #[error("frame larger than the server's limit")]
    FrameTooLarge = 3,
    #[error("unknown opcode")]
    UnknownOpcode = 4,
    #[error("invalid request")]
    BadRequest = 5,
    #[error("HELLO required before any other request")]
    HandshakeRequired = 6,
    #[error("too many connections")]
    TooManyConnections = 7,
    #[error("server busy: write queue full")]
    Busy = 8,
    #[error("not the head of the chain")]
    NotHead = 9,
    #[error("not the tail of the chain")]
    NotTail = 10,
    #[error("server unavailable (joining, fenced or no chain)")]
    Unavailable = 11,
    #[error("server shutting down")]
    ShuttingDown = 12,
    #[error("result larger than the frame limit")]
    ResultTooLarge = 13,
    #[error("write outcome unknown")]
    OutcomeUnknown = 14,
    #[error("internal server error")]
    Internal = 15,
    #[error("authentication required: send AUTH")]
    AuthRequired = 16,
    #[error("authentication failed")]
    AuthFailed = 17,
    #[error("not permitted for this user")]
    NotPermitted = 18,
    #[error("the server cannot write its log (disk full or failing); reads still work")]
    StorageUnavailable = 19,
    #[error("the watch's start is older than the history this member keeps")]
    HistoryGone = 20,
    #[error("the watcher fell too far behind and was cut off; resume from the last seq it saw")]
    WatchTooSlow = 21,
    #[error("this member has not applied the history the read asks for (its floor); try the redirect, or later")]
    Behind = 22,
    #[error("this member's chain does not own the key (or it has not read the shard map the client routed by); refresh the map and retry")]
    WrongShard = 23,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::BadFrame,
        ErrorCode::UnsupportedVersion,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnknownOpcode,
        ErrorCode::BadRequest,
        ErrorCode::HandshakeRequired,
        ErrorCode::TooManyConnections,
        ErrorCode::Busy,
        ErrorCode::NotHead,
        ErrorCode::NotTail,
        ErrorCode::Unavailable,
        ErrorCode::ShuttingDown,
        ErrorCode::ResultTooLarge,
        ErrorCode::OutcomeUnknown,
        ErrorCode::Internal,
        ErrorCode::AuthRequired,
        ErrorCode::AuthFailed,
        ErrorCode::NotPermitted,
        ErrorCode::StorageUnavailable,
        ErrorCode::HistoryGone,
        ErrorCode::WatchTooSlow,
        ErrorCode::Behind,
        ErrorCode::WrongShard,
    ];

    #[must_use]
    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| *c as u16 == code)
    }

    /// The registry's retry class for this code.
    #[must_use]
    pub fn retry(self) -> Retry {
        use ErrorCode::*;
        match self {
            TooManyConnections | Busy | NotHead | NotTail | Unavailable | ShuttingDown
            | StorageUnavailable | WatchTooSlow | Behind | WrongShard => Retry::Retriable,
            OutcomeUnknown | Internal => Retry::OutcomeUnknown,
            BadFrame | UnsupportedVersion | FrameTooLarge | UnknownOpcode | BadRequest
            | HandshakeRequired | ResultTooLarge | AuthRequired | AuthFailed | NotPermitted
            | HistoryGone => Retry::NotRetriable,
        }
    }

    /// Whether the server closes the connection after this error.
    #[must_use]
    pub fn after(self) -> AfterError {
        use ErrorCode::*;
        match self {
            BadFrame | UnsupportedVersion | FrameTooLarge | TooManyConnections | ShuttingDown
            | AuthFailed => AfterError::Close,
            _ => AfterError::KeepOpen,
        }
    }

    /// The name used in the spec and the test vectors.
    #[must_use]
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadFrame => "BAD_FRAME",
            UnsupportedVersion => "UNSUPPORTED_VERSION",
            FrameTooLarge => "FRAME_TOO_LARGE",
            UnknownOpcode => "UNKNOWN_OPCODE",
            BadRequest => "BAD_REQUEST",
            HandshakeRequired => "HANDSHAKE_REQUIRED",
            TooManyConnections => "TOO_MANY_CONNECTIONS",
            Busy => "BUSY",
            NotHead => "NOT_HEAD",
            NotTail => "NOT_TAIL",
            Unavailable => "UNAVAILABLE",
            ShuttingDown => "SHUTTING_DOWN",
            ResultTooLarge => "RESULT_TOO_LARGE",
            OutcomeUnknown => "OUTCOME_UNKNOWN",
            Internal => "INTERNAL",
            AuthRequired => "AUTH_REQUIRED",
            AuthFailed => "AUTH_FAILED",
            NotPermitted => "NOT_PERMITTED",
            StorageUnavailable => "STORAGE_UNAVAILABLE",
            HistoryGone => "HISTORY_GONE",
            WatchTooSlow => "WATCH_TOO_SLOW",
            Behind => "BEHIND",
            WrongShard => "WRONG_SHARD",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(usize::from(*code as u16), i + 1);
            assert_eq!(ErrorCode::from_u16(*code as u16), Some(*code));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(999), None);
    }

    #[test]
    fn redirects_are_retriable_and_timeouts_are_unknown() {
        assert_eq!(ErrorCode::NotHead.retry(), Retry::Retriable);
        assert_eq!(ErrorCode::NotTail.retry(), Retry::Retriable);
        assert_eq!(ErrorCode::OutcomeUnknown.retry(), Retry::OutcomeUnknown);
        assert_eq!(ErrorCode::BadRequest.after(), AfterError::KeepOpen);
        assert_eq!(ErrorCode::BadFrame.after(), AfterError::Close);
    }
}
