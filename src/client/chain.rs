//! A client for a chain: finds head and tail through ZooKeeper, sends
//! writes to the head and reads to the tail, and re-routes on membership
//! changes and redirects without the caller noticing. A write whose outcome
//! is unknown is never retried: the error says so.

use super::{Client, ClientError, Options};
use crate::coord::{CoordConfig, CoordEvent, Coordinator};
use crate::member::Member;
use crate::wire::{Body, ErrorCode, Retry};
use std::time::{Duration, Instant};

/// Pause between attempts while the chain re-wires.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

pub struct ChainClient {
    coord: Coordinator,
    root: String,
    members: Vec<Member>,
    head: Option<Client>,
    tail: Option<Client>,
    /// Where a redirect told us to send reads (a joining tail's predecessor).
    read_redirect: Option<String>,
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
            tail: None,
            read_redirect: None,
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
                let tail_changed = m.last() != self.members.last();
                self.members = m;
                if head_changed {
                    self.head = None;
                    self.write_redirect = None;
                }
                if tail_changed {
                    self.tail = None;
                    self.read_redirect = None;
                }
            }
        }
    }

    fn refresh(&mut self) {
        while let Ok(e) = self.coord.events.try_recv() {
            self.on_event(e);
        }
    }

    fn target(&self, write: bool) -> Option<String> {
        let redirect = if write {
            &self.write_redirect
        } else {
            &self.read_redirect
        };
        if let Some(r) = redirect {
            return Some(r.clone());
        }
        let m = if write {
            self.members.first()
        } else {
            self.members.last()
        };
        m.map(|m| m.addr.clone())
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
        let deadline = Instant::now() + self.retry_for;
        loop {
            self.refresh();
            let result = self.try_once(write, body.clone());
            let err = match result {
                Ok(ok) => return Ok(ok),
                Err(e) => e,
            };
            match (&err, err.retry()) {
                (_, Retry::OutcomeUnknown | Retry::NotRetriable) => return Err(err),
                (ClientError::Server(e), _) if !e.redirect.is_empty() => {
                    let slot = if write {
                        &mut self.write_redirect
                    } else {
                        &mut self.read_redirect
                    };
                    *slot = Some(e.redirect.clone());
                }
                _ => {}
            }
            if write {
                self.head = None;
            } else {
                self.tail = None;
            }
            if Instant::now() >= deadline {
                return Err(err);
            }
            if err.code() != Some(ErrorCode::NotHead) && err.code() != Some(ErrorCode::NotTail) {
                // Not a redirect: let membership catch up before retrying.
                self.write_redirect = None;
                self.read_redirect = None;
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }

    fn try_once(&mut self, write: bool, body: Body) -> Result<(Body, String), ClientError> {
        let addr = self.target(write).ok_or_else(|| ClientError::NoChain {
            root: self.root.clone(),
        })?;
        let slot = if write {
            &mut self.head
        } else {
            &mut self.tail
        };
        if slot.as_ref().is_none_or(|c| c.addr() != addr) {
            *slot = Some(Client::connect_with(&addr, self.opts.clone())?);
        }
        let client = slot
            .as_mut()
            .ok_or_else(|| ClientError::Protocol("no connection".into()))?;
        let reply = client.call(body);
        if reply.is_err() {
            // A fresh connection next time: the old one may be mid-stream.
            if matches!(
                reply,
                Err(ClientError::Timeout { .. } | ClientError::Disconnected { .. })
            ) {
                *slot = None;
            }
        }
        reply.map(|b| (b, addr))
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
        let addr = self.target(false).ok_or_else(|| ClientError::NoChain {
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
