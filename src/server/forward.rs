//! Writes accepted anywhere (spec §5.6): a chain member that is not the
//! head forwards a client's write to the head over its own connection and
//! relays the answer, so a client that knows one member can write.
//!
//! The network thread never blocks on the head: it hands each write to a
//! forwarding thread through a bounded queue and gets the answers back
//! like the worker's completions (a list and a wake-up of `poll`). The
//! thread sends what is queued as one pipeline over one client connection
//! to the head, with the NO_FORWARD flag so that a member that is no
//! longer the head redirects instead of forwarding again (no loops).
//!
//! What the client gets, per forwarded write:
//! - the head's own reply (same op id, same outcome), or its error (same
//!   code, so the same retry class, and its redirect);
//! - UNAVAILABLE when the head could not be reached: nothing was sent, so
//!   the write certainly did not run and may be retried;
//! - OUTCOME_UNKNOWN when the connection failed after the write was sent.

use crate::client::{Client, ClientError, Options};
use crate::wire::{Body, ErrorCode, ErrorReply, Message};
use nix::sys::eventfd::EventFd;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most forwarded writes a member holds at once (queued for the head or
/// waiting for its answer); one more is answered BUSY.
pub const FORWARDS_INFLIGHT_MAX: usize = 1024;

/// Most key and value bytes those writes may hold: a client that sends
/// large writes to a member whose head is slow (or frozen) gets BUSY
/// rather than making the member hold them all.
pub const FORWARD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// How long the forwarding thread waits to connect to the head.
const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long it waits for the head's answers to one pipeline before it
/// gives up on them (OUTCOME_UNKNOWN).
const FORWARD_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One write to forward.
struct Job {
    conn: u64,
    request_id: u64,
    head: String,
    body: Body,
    /// Key and value bytes of `body`, counted against [`FORWARD_BYTES_MAX`].
    bytes: usize,
}

/// A forwarded write's answer, for connection `conn`.
pub struct Forwarded {
    pub conn: u64,
    pub request_id: u64,
    /// The reply to send, with the client's request id.
    pub reply: Message,
    /// The write's bytes, released now.
    bytes: usize,
}

/// Why a write was not forwarded.
pub enum NotForwarded {
    /// [`FORWARDS_INFLIGHT_MAX`] writes, or [`FORWARD_BYTES_MAX`] bytes,
    /// are already in flight.
    Full,
    /// The forwarding thread is gone.
    Stopped,
}

/// The network thread's end: hands writes over, collects answers.
pub struct Forwarder {
    jobs: SyncSender<Job>,
    done: Arc<Mutex<Vec<Forwarded>>>,
    inflight: usize,
    /// Key and value bytes of the writes in flight.
    inflight_bytes: usize,
}

impl Forwarder {
    /// Starts the forwarding thread; answers wake `poll` through `wake`.
    ///
    /// # Errors
    ///
    /// The thread could not be spawned.
    pub fn start(wake: Arc<EventFd>) -> std::io::Result<Forwarder> {
        let (jobs, rx) = sync_channel(FORWARDS_INFLIGHT_MAX);
        let done = Arc::new(Mutex::new(Vec::new()));
        let thread_done = done.clone();
        std::thread::Builder::new()
            .name("forward".into())
            .spawn(move || run(&rx, &thread_done, &wake))?;
        Ok(Forwarder {
            jobs,
            done,
            inflight: 0,
            inflight_bytes: 0,
        })
    }

    /// Queues `body` (a write from `conn` holding `bytes` of keys and
    /// values) for `head`.
    ///
    /// # Errors
    ///
    /// [`NotForwarded`]: too many in flight, or the thread stopped.
    pub fn forward(
        &mut self,
        conn: u64,
        request_id: u64,
        head: String,
        body: Body,
        bytes: usize,
    ) -> Result<(), NotForwarded> {
        // One write alone may always go (a lone 8 MiB value is admitted).
        let over_bytes = self.inflight > 0 && self.inflight_bytes + bytes > FORWARD_BYTES_MAX;
        if self.inflight >= FORWARDS_INFLIGHT_MAX || over_bytes {
            return Err(NotForwarded::Full);
        }
        let job = Job {
            conn,
            request_id,
            head,
            body,
            bytes,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.inflight += 1;
                self.inflight_bytes += bytes;
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(NotForwarded::Full),
            Err(TrySendError::Disconnected(_)) => Err(NotForwarded::Stopped),
        }
    }

    /// Every answer received so far.
    pub fn drain(&mut self) -> Vec<Forwarded> {
        let done = std::mem::take(&mut *self.done.lock().unwrap_or_else(|p| p.into_inner()));
        self.inflight = self.inflight.saturating_sub(done.len());
        let released: usize = done.iter().map(|f| f.bytes).sum();
        self.inflight_bytes = self.inflight_bytes.saturating_sub(released);
        done
    }

    /// Writes handed over and not yet answered.
    #[must_use]
    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// Key and value bytes of those writes.
    #[must_use]
    pub fn inflight_bytes(&self) -> usize {
        self.inflight_bytes
    }
}

/// The forwarding thread: pipelines what is queued to the head, one batch
/// at a time, until the network thread drops its end.
fn run(rx: &Receiver<Job>, done: &Mutex<Vec<Forwarded>>, wake: &EventFd) {
    let mut head: Option<Client> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Jobs for another head than the first's wait for the next round.
        let addr = batch[0].head.clone();
        let (now, later): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.head == addr);
        let answers = send_batch(&mut head, &addr, now);
        publish(done, wake, answers);
        for job in later {
            let addr = job.head.clone();
            let answers = send_batch(&mut head, &addr, vec![job]);
            publish(done, wake, answers);
        }
    }
}

fn publish(done: &Mutex<Vec<Forwarded>>, wake: &EventFd, answers: Vec<Forwarded>) {
    let was_empty = {
        let mut d = done.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = d.is_empty();
        d.extend(answers);
        was_empty
    };
    if was_empty {
        let _ = wake.write(1);
    }
}

/// Sends `jobs` to `addr` as one pipeline and returns one answer each.
fn send_batch(head: &mut Option<Client>, addr: &str, jobs: Vec<Job>) -> Vec<Forwarded> {
    if head.as_ref().is_none_or(|c| c.addr() != addr) {
        let opts = Options {
            connect_timeout: FORWARD_CONNECT_TIMEOUT,
            read_timeout: FORWARD_REPLY_TIMEOUT,
            no_forward: true,
            ..Options::default()
        };
        match Client::connect_with(addr, opts) {
            Ok(c) => *head = Some(c),
            Err(e) => {
                *head = None;
                // Nothing was sent: the writes certainly did not run.
                let why = format!("cannot reach the head {addr} to forward the write: {e}");
                return answer_all(jobs, ErrorCode::Unavailable, &why);
            }
        }
    }
    let Some(client) = head.as_mut() else {
        return answer_all(jobs, ErrorCode::Unavailable, "no connection to the head");
    };
    for j in &jobs {
        tracing::debug!(
            conn = j.conn,
            request_id = j.request_id,
            head = addr,
            "forwarding a write"
        );
    }
    // Moved, not copied: the bytes held stay what FORWARD_BYTES_MAX counts.
    let mut jobs = jobs;
    let bodies: Vec<Body> = jobs
        .iter_mut()
        .map(|j| std::mem::replace(&mut j.body, Body::Size))
        .collect();
    let replies = match client.pipeline(bodies) {
        Ok(r) => r,
        Err(e) => {
            *head = None;
            let why = format!(
                "the connection to the head {addr} failed after the write was forwarded: {e}"
            );
            return answer_all(jobs, ErrorCode::OutcomeUnknown, &why);
        }
    };
    let mut lost = false;
    let answers = jobs
        .into_iter()
        .zip(replies)
        .map(|(j, r)| {
            let body = match r {
                Ok(body) => body,
                Err(ClientError::Server(e)) => Body::Error(e),
                Err(e) => {
                    lost = true;
                    let why = format!("forwarded to {addr}, then: {e}");
                    Body::Error(ErrorReply::new(ErrorCode::OutcomeUnknown, why))
                }
            };
            Forwarded {
                conn: j.conn,
                request_id: j.request_id,
                reply: Message::new(j.request_id, body),
                bytes: j.bytes,
            }
        })
        .collect();
    if lost {
        *head = None;
    }
    answers
}

fn answer_all(jobs: Vec<Job>, code: ErrorCode, why: &str) -> Vec<Forwarded> {
    jobs.into_iter()
        .map(|j| Forwarded {
            conn: j.conn,
            request_id: j.request_id,
            reply: Message::new(j.request_id, Body::Error(ErrorReply::new(code, why))),
            bytes: j.bytes,
        })
        .collect()
}
