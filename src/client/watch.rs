//! Watching a key prefix (spec §4.1, WATCH) from one server, and from a
//! chain with resumption at another member when the one watched fails.

use super::chain::ChainClient;
use super::{unexpected, Client, ClientError};
use crate::wire::{Body, ErrorCode, Message, Retry, WatchChange, WATCH_FROM_NOW};
use std::io::Write;
use std::time::{Duration, Instant};

/// Every change under the prefix at one sequence number (the frames of a
/// split batch put back together), or none: a progress mark saying that
/// nothing under the prefix changed up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchUpdate {
    pub seq: u64,
    pub changes: Vec<WatchChange>,
}

/// A connection given over to one watch.
pub struct Watcher {
    client: Client,
    id: u64,
    /// Every change up to here was received.
    last_seq: u64,
}

impl Client {
    /// Opens a watch of `prefix` from `from_seq` (every change after it;
    /// [`WATCH_FROM_NOW`] for changes from now on). The connection is given
    /// over to the watch.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]: HISTORY_GONE when the server no longer keeps
    /// the changes after `from_seq`, NOT_TAIL at a joining member.
    pub fn watch(mut self, prefix: &[u8], from_seq: u64) -> Result<Watcher, ClientError> {
        let id = self.next_request_id;
        self.next_request_id += 1;
        let mut frame = Vec::new();
        let body = Body::Watch {
            from_seq,
            prefix: prefix.to_vec(),
        };
        Message::new(id, body).encode(&mut frame);
        let timeout_ms = crate::units::millis(self.opts.read_timeout);
        self.stream
            .write_all(&frame)
            .map_err(|e| ClientError::from_io(e, false, timeout_ms))?;
        let first = self.read_message(false)?;
        match first.body {
            Body::Error(e) => Err(ClientError::Server(e)),
            Body::WatchEvent(e) if first.request_id == id => Ok(Watcher {
                client: self,
                id,
                last_seq: e.seq,
            }),
            other => Err(unexpected(&other)),
        }
    }
}

impl Watcher {
    /// Every change up to this sequence number was received: where to
    /// resume.
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The server this watch is open at.
    #[must_use]
    pub fn addr(&self) -> &str {
        self.client.addr()
    }

    /// The next update, or `None` when none came within the client's
    /// read timeout.
    ///
    /// # Errors
    ///
    /// The ERROR that ended the watch (WATCH_TOO_SLOW, HISTORY_GONE,
    /// UNAVAILABLE, SHUTTING_DOWN), a broken connection, or a frame that
    /// does not belong to the stream.
    pub fn next_update(&mut self) -> Result<Option<WatchUpdate>, ClientError> {
        let mut update: Option<WatchUpdate> = None;
        loop {
            let msg = match self.client.read_message(false) {
                Ok(m) => m,
                Err(ClientError::Timeout { .. }) if update.is_none() => return Ok(None),
                Err(e) => return Err(e),
            };
            let event = match msg.body {
                Body::Error(e) => return Err(ClientError::Server(e)),
                Body::WatchEvent(e) if msg.request_id == self.id => e,
                other => return Err(unexpected(&other)),
            };
            if event.seq <= self.last_seq && update.is_none() {
                return Err(ClientError::Protocol(format!(
                    "watch event {} after {}: out of order",
                    event.seq, self.last_seq
                )));
            }
            let u = update.get_or_insert_with(|| WatchUpdate {
                seq: event.seq,
                changes: Vec::new(),
            });
            if u.seq != event.seq {
                return Err(ClientError::Protocol(format!(
                    "watch event {} inside the frames of {}",
                    event.seq, u.seq
                )));
            }
            u.changes.extend(event.changes);
            if !event.more {
                self.last_seq = u.seq;
                return Ok(update);
            }
        }
    }
}

/// A watch of a chain: opened at any member (the tail first), and resumed
/// from the last sequence number received at another member when its
/// member fails or stops serving, so that no change is missed or repeated.
pub struct ChainWatcher {
    chain: ChainClient,
    prefix: Vec<u8>,
    watcher: Option<Watcher>,
    last_seq: u64,
    /// Members tried in turn after a failure.
    next_member: usize,
    /// How long to keep trying to resume before giving up.
    pub retry_for: Duration,
}

impl ChainWatcher {
    /// Watches `prefix` in the chain from `from_seq` (see [`Client::watch`]).
    ///
    /// # Errors
    ///
    /// As [`ChainWatcher::next_update`], for the opening.
    pub fn open(
        chain: ChainClient,
        prefix: &[u8],
        from_seq: u64,
    ) -> Result<ChainWatcher, ClientError> {
        let retry_for = chain.retry_for;
        let mut w = ChainWatcher {
            chain,
            prefix: prefix.to_vec(),
            watcher: None,
            last_seq: from_seq,
            next_member: 0,
            retry_for,
        };
        w.reopen()?;
        Ok(w)
    }

    /// Every change up to here was received.
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The member the watch is open at.
    #[must_use]
    pub fn addr(&self) -> Option<&str> {
        self.watcher.as_ref().map(Watcher::addr)
    }

    /// The next update (see [`Watcher::next_update`]), resuming at another member
    /// after a retriable failure.
    ///
    /// # Errors
    ///
    /// A failure that is not retriable (HISTORY_GONE: the members keep no
    /// longer the changes after [`ChainWatcher::last_seq`]), or no member
    /// would resume the watch within `retry_for`.
    pub fn next_update(&mut self) -> Result<Option<WatchUpdate>, ClientError> {
        loop {
            let result = match self.watcher.as_mut() {
                Some(w) => w.next_update(),
                None => {
                    self.reopen()?;
                    continue;
                }
            };
            match result {
                Ok(u) => {
                    if let Some(u) = &u {
                        self.last_seq = u.seq;
                    }
                    return Ok(u);
                }
                Err(e) if e.retry() == Retry::NotRetriable && e.code().is_some() => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, last_seq = self.last_seq, "watch lost: resuming");
                    self.watcher = None;
                }
            }
        }
    }

    /// Opens the watch again after `last_seq`, trying the members in turn.
    fn reopen(&mut self) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.retry_for;
        let from = self.last_seq;
        loop {
            let members: Vec<String> = self
                .chain
                .members()
                .iter()
                .rev()
                .map(|m| m.addr.clone())
                .collect();
            let mut last_err = None;
            for _ in 0..members.len() {
                let addr = &members[self.next_member % members.len()];
                let opened = Client::connect_with(addr, self.chain.options().clone())
                    .and_then(|c| c.watch(&self.prefix, from));
                match opened {
                    Ok(w) => {
                        if from == WATCH_FROM_NOW {
                            self.last_seq = w.last_seq();
                        }
                        self.watcher = Some(w);
                        return Ok(());
                    }
                    Err(e) if e.code() == Some(ErrorCode::HistoryGone) => return Err(e),
                    Err(e) => {
                        self.next_member += 1;
                        last_err = Some(e);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(last_err.unwrap_or_else(|| ClientError::NoChain {
                    root: String::new(),
                }));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
