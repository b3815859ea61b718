//! Client errors, keeping the wire's retry classes.

use crate::serialize::DecodeError;
use crate::wire::{ErrorCode, ErrorReply, FrameError, MessageError, Retry};
use std::io;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("connection refused: is table-server running on {addr}?")]
    Refused { addr: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("no reply within {timeout_ms} ms")]
    Timeout { timeout_ms: u64, write: bool },
    #[error("connection lost: {reason}")]
    Disconnected { reason: String, write: bool },
    #[error("server error {}: {}", name(.0.code), .0.message)]
    Server(ErrorReply),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("invalid argument: {0}")]
    Invalid(#[from] DecodeError),
    #[error("no chain members are registered in ZooKeeper under {root}")]
    NoChain { root: String },
    #[error("no valid shard map at {cluster} in ZooKeeper (create one with `table-client cluster create`)")]
    NoShardMap { cluster: String },
    #[error("{0}")]
    CrossShard(String),
}

fn name(code: u16) -> String {
    match ErrorCode::from_u16(code) {
        Some(c) => c.name().to_string(),
        None => format!("code {code}"),
    }
}

impl ClientError {
    /// What the caller may do next (see the spec's error registry). A
    /// write whose reply never came may have been executed.
    #[must_use]
    pub fn retry(&self) -> Retry {
        match self {
            ClientError::Refused { .. } | ClientError::Connect { .. } => Retry::Retriable,
            ClientError::NoChain { .. } | ClientError::NoShardMap { .. } => Retry::Retriable,
            ClientError::Timeout { write, .. } | ClientError::Disconnected { write, .. } => {
                if *write {
                    Retry::OutcomeUnknown
                } else {
                    Retry::Retriable
                }
            }
            ClientError::Server(e) => e.error_code().map_or(Retry::NotRetriable, |c| c.retry()),
            ClientError::Protocol(_) | ClientError::Invalid(_) | ClientError::CrossShard(_) => {
                Retry::NotRetriable
            }
        }
    }

    /// The registry code of a server error.
    #[must_use]
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(e) => e.error_code(),
            _ => None,
        }
    }

    pub(crate) fn from_io(e: io::Error, write: bool, timeout_ms: u64) -> ClientError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                ClientError::Timeout { timeout_ms, write }
            }
            _ => ClientError::Disconnected {
                reason: e.to_string(),
                write,
            },
        }
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

impl From<MessageError> for ClientError {
    fn from(e: MessageError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}
