//! A client for a chain: finds the members through ZooKeeper, sends writes
//! to the head and spreads reads over every member (CRAQ: a member answers
//! a clean key itself and redirects a dirty one to the tail, spec §5.5),
//! and re-routes on membership changes and redirects without the caller
//! noticing. A write whose outcome is unknown is never retried: the error
//! says so.

use super::{Client, ClientError, Options};
use crate::coord::{CoordConfig, CoordEvent, Coordinator};
use crate::member::Member;
use crate::wire::{Body, ErrorCode, Retry};
use std::time::{Duration, Instant};

/// Pause between attempts while the chain re-wires.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Redirects a read follows at once before pausing: a dirty key's member
/// names the tail, and a tail still joining names its predecessor.
const READ_HOPS_MAX: usize = 3;

pub struct ChainClient {
    coord: Coordinator,
    root: String,
    members: Vec<Member>,
    head: Option<Client>,
    /// Connections for reads, at most one per member.
    readers: Vec<Client>,
    /// Round-robin position over the members for the next read.
    next_read: usize,
    /// Reads answered, per member address (for `table-bench` and tests).
    pub reads_by_member: std::collections::BTreeMap<String, u64>,
    /// The highest sequence number this client has seen (a write's op id,
    /// a value's version; ZooKeeper's lastZxidSeen): every GET carries it
    /// as its floor (spec §5.7), so no read returns an older state than one
    /// this client already saw or made, whichever member answers.
    pub last_seq_seen: u64,
    write_redirect: Option<String>,
    opts: Options,
    /// How long one call keeps retrying retriable failures.
    pub retry_for: Duration,
}

impl ChainClient {
    /// Connects to ZooKeeper at `zookeeper` and waits for the chain's members.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when ZooKeeper cannot be reached or no listed member
    /// answers.
    pub fn connect(zookeeper: &str, root: &str, opts: Options) -> Result<ChainClient, ClientError> {
        let cfg = CoordConfig {
            secret: None,
            zookeeper: zookeeper.to_string(),
            root: root.to_string(),
            advertise: None,
            session_timeout: Duration::from_secs(4),
            cluster: None,
        };
        let coord = Coordinator::start(cfg, || {}).map_err(|source| ClientError::Connect {
            addr: zookeeper.to_string(),
            source,
        })?;
        let mut c = ChainClient {
            coord,
            root: root.to_string(),
            members: Vec::new(),
            head: None,
            readers: Vec::new(),
            next_read: 0,
            reads_by_member: std::collections::BTreeMap::new(),
            last_seq_seen: 0,
            write_redirect: None,
            retry_for: opts.read_timeout,
            opts,
        };
        let deadline = Instant::now() + c.opts.connect_timeout;
        while c.members.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match c
                .coord
                .events
                .recv_timeout(left.max(Duration::from_millis(1)))
            {
                Ok(e) => c.on_event(e),
                Err(_) => {
                    return Err(ClientError::NoChain {
                        root: root.to_string(),
                    })
                }
            }
        }
        Ok(c)
    }

    /// The chain as last seen, head first.
    pub fn members(&mut self) -> &[Member] {
        self.refresh();
        &self.members
    }

    fn on_event(&mut self, e: CoordEvent) {
        if let CoordEvent::Members(m) = e {
            if m != self.members {
                let head_changed = m.first() != self.members.first();
                self.members = m;
                if head_changed {
                    self.head = None;
                    self.write_redirect = None;
                }
                let members = &self.members;
                self.readers
                    .retain(|c| members.iter().any(|m| m.addr == c.addr()));
            }
        }
    }

    fn refresh(&mut self) {
        while let Ok(e) = self.coord.events.try_recv() {
            self.on_event(e);
        }
    }

    /// Where the next write goes: a redirect's target, else the head.
    fn write_target(&self) -> Option<String> {
        self.write_redirect
            .clone()
            .or_else(|| self.members.first().map(|m| m.addr.clone()))
    }

    /// The tail as last seen.
    fn tail_addr(&self) -> Option<String> {
        self.members.last().map(|m| m.addr.clone())
    }

    /// Where the next read goes: the next member in turn.
    fn read_target(&mut self) -> Option<String> {
        if self.members.is_empty() {
            return None;
        }
        self.next_read = self.next_read.wrapping_add(1);
        Some(
            self.members[self.next_read % self.members.len()]
                .addr
                .clone(),
        )
    }

    /// Sends `body` to the right member; returns the reply and which server
    /// answered. Retriable failures are retried for `retry_for`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when no member answers within the retries, or the
    /// request is refused for good (an error that is not retriable). A write
    /// whose outcome is unknown is reported as such, never retried.
    pub fn call(&mut self, body: Body) -> Result<(Body, String), ClientError> {
        let write = body.is_write();
        let body = match body {
            Body::Get { key } if self.last_seq_seen > 0 => Body::GetAtLeast {
                key,
                min_seq: self.last_seq_seen,
            },
            other => other,
        };
        let deadline = Instant::now() + self.retry_for;
        let mut read_redirect: Option<String> = None;
        let mut hops = 0;
        loop {
            self.refresh();
            let addr = if write {
                self.write_target()
            } else if read_redirect.is_some() {
                read_redirect.clone()
            } else if matches!(body, Body::Verify { .. }) {
                // Only the tail knows what is committed.
                self.tail_addr()
            } else {
                self.read_target()
            };
            let result = match addr {
                Some(addr) => self.try_at(write, &addr, body.clone()),
                None => Err(ClientError::NoChain {
                    root: self.root.clone(),
                }),
            };
            let err = match result {
                Ok((reply, addr)) => {
                    self.saw(&reply);
                    if !write {
                        *self.reads_by_member.entry(addr.clone()).or_insert(0) += 1;
                    }
                    return Ok((reply, addr));
                }
                Err(e) => e,
            };
            if matches!(err.retry(), Retry::OutcomeUnknown | Retry::NotRetriable)
                || err.code() == Some(ErrorCode::WrongShard)
            {
                // (WRONG_SHARD: the key belongs to another chain; routing
                // it is the cluster client's business.)
                return Err(err);
            }
            let redirect = match &err {
                ClientError::Server(e)
                    if !e.redirect.is_empty()
                        && matches!(
                            err.code(),
                            Some(ErrorCode::NotHead | ErrorCode::NotTail | ErrorCode::Behind)
                        ) =>
                {
                    Some(e.redirect.clone())
                }
                _ => None,
            };
            if write {
                self.head = None;
                self.write_redirect.clone_from(&redirect);
            } else {
                read_redirect.clone_from(&redirect);
            }
            if Instant::now() >= deadline {
                return Err(err);
            }
            if !write && redirect.is_some() && hops < READ_HOPS_MAX {
                // A dirty key, or a tail that moved: go there at once.
                hops += 1;
                continue;
            }
            hops = 0;
            std::thread::sleep(RETRY_PAUSE);
        }
    }

    /// Raises [`ChainClient::last_seq_seen`] to what `reply` shows.
    fn saw(&mut self, reply: &Body) {
        let seen = match reply {
            Body::PutOk(w) | Body::DelOk(w) => w.op_id,
            Body::PutIfOk(c) | Body::DelIfOk(c) => c.op_id.max(c.version),
            Body::MWriteOk { op_id } => *op_id,
            Body::Value(Some(v)) => v.version,
            Body::RangeOk { entries, .. } => entries.iter().map(|e| e.version).max().unwrap_or(0),
            Body::MGetOk(values) => values
                .iter()
                .flatten()
                .map(|v| v.version)
                .max()
                .unwrap_or(0),
            _ => 0,
        };
        self.last_seq_seen = self.last_seq_seen.max(seen);
    }

    /// One attempt at `addr`, over the head connection (writes) or that
    /// member's read connection, made if there is none.
    fn try_at(
        &mut self,
        write: bool,
        addr: &str,
        body: Body,
    ) -> Result<(Body, String), ClientError> {
        let client = if write {
            if self.head.as_ref().is_none_or(|c| c.addr() != addr) {
                self.head = Some(Client::connect_with(addr, self.opts.clone())?);
            }
            self.head
                .as_mut()
                .ok_or_else(|| ClientError::Protocol("no connection".into()))?
        } else {
            let i = match self.readers.iter().position(|c| c.addr() == addr) {
                Some(i) => i,
                None => {
                    if self.readers.len() > self.members.len() {
                        self.readers.remove(0);
                    }
                    self.readers
                        .push(Client::connect_with(addr, self.opts.clone())?);
                    self.readers.len() - 1
                }
            };
            &mut self.readers[i]
        };
        let reply = client.call(body);
        if matches!(
            reply,
            Err(ClientError::Timeout { .. } | ClientError::Disconnected { .. })
        ) {
            // A fresh connection next time: the old one may be mid-stream.
            if write {
                self.head = None;
            } else {
                self.readers.retain(|c| c.addr() != addr);
            }
        }
        reply.map(|b| (b, addr.to_string()))
    }

    /// BACKUP from the tail (see [`Client::backup_to`]); returns the bytes
    /// written and the member that sent them.
    ///
    /// # Errors
    ///
    /// As [`Client::backup_to`]; not retried (a backup is simply run again).
    pub fn backup_to(
        &mut self,
        out: &mut dyn std::io::Write,
    ) -> Result<(u64, String), ClientError> {
        self.refresh();
        let addr = self.tail_addr().ok_or_else(|| ClientError::NoChain {
            root: self.root.clone(),
        })?;
        let mut client = Client::connect_with(&addr, self.opts.clone())?;
        client.backup_to(out).map(|n| (n, addr))
    }

    /// The options each connection is made with.
    #[must_use]
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Stops the ZooKeeper watcher.
    pub fn close(self) {
        self.coord.stop();
    }
}
