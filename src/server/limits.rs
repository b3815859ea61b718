//! What a connection may cost, and what happens at each limit (spec §7).
//!
//! - **Connections.** At most `connections_max` clients (connections past
//!   their handshake or still in it). When full, a newcomer evicts the
//!   oldest connection that has not finished its handshake, so idle sockets
//!   cannot lock clients out; failing that, the client idle longest if it
//!   has been idle [`IDLE_EVICT_AFTER`] with nothing in flight (so sockets
//!   that said HELLO and went quiet cannot either); with none to evict it
//!   gets one of
//!   [`PEER_SLOTS_RESERVED`] slots in which only a peer handshake is
//!   accepted, so a flooded member's predecessor still gets through; past
//!   those it is refused with TOO_MANY_CONNECTIONS.
//! - **Time.** A connection must finish its handshake within
//!   `handshake_timeout`; a client with nothing in flight is closed after
//!   `idle_timeout`; a client whose replies do not move for `send_timeout`
//!   is not reading and is closed. A closing connection gets
//!   [`CLOSING_GRACE`] to take what it is owed.
//! - **Memory.** A client's requests are not read while more than
//!   `output_bytes_max` of replies are queued for it (backpressure: an
//!   honest pipelining reader slows down, it is not cut off). While all
//!   clients' buffers together exceed `buffer_budget_bytes`, a connection
//!   with replies still queued gets nothing more read (one with none may
//!   still send a request, and a frame already begun may be finished). So
//!   the server's buffers stay under the budget plus one client's
//!   `output_bytes_max` plus, per connection actually reading its
//!   replies, one frame in and one reply out.
//! - **File descriptors.** EMFILE/ENFILE on accept pause accepting for
//!   [`ACCEPT_BACKOFF`] (the listener is left out of `poll`, so the loop
//!   does not spin) and are logged once per [`ACCEPT_LOG_INTERVAL`].

use super::conn::{Conn, Kind, Wire};
use super::{Server, HANDSHAKE_PAYLOAD_BYTES_MAX, PEER_SLOTS_RESERVED};
use crate::wire::ErrorCode;
use std::io;
use std::time::{Duration, Instant};

/// At the connection limit, a client idle this long (nothing in flight,
/// nothing sent) may be closed to admit a newcomer.
pub const IDLE_EVICT_AFTER: Duration = Duration::from_secs(10);

/// How often timeouts are checked.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(200);
/// How long a closing connection may wait for replies it is owed.
pub const CLOSING_GRACE: Duration = Duration::from_secs(5);
/// Pause in accepting after the process or system ran out of descriptors.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per this interval about failing accepts.
pub const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Log lines that strangers can cause (refusals, stream errors, failed
/// logins and handshakes) allowed per [`NOISE_WINDOW`]; the rest are
/// counted and summed up in one line, so a flood of bad connections does
/// not become a flood of log lines.
pub const NOISE_LINES_MAX: u32 = 20;
pub const NOISE_WINDOW: Duration = Duration::from_secs(10);

/// Rate limit for log lines that outsiders can trigger.
#[derive(Debug)]
pub struct NoiseGate {
    window_start: Instant,
    lines: u32,
    suppressed: u64,
}

impl NoiseGate {
    pub fn new(now: Instant) -> NoiseGate {
        NoiseGate {
            window_start: now,
            lines: 0,
            suppressed: 0,
        }
    }

    /// Whether one more such line may be logged now.
    pub fn allow(&mut self, now: Instant) -> bool {
        if now >= self.window_start + NOISE_WINDOW {
            if self.suppressed > 0 {
                tracing::warn!(
                    suppressed = self.suppressed,
                    window_s = NOISE_WINDOW.as_secs(),
                    "log lines about refused or failed connections suppressed"
                );
            }
            *self = NoiseGate::new(now);
        }
        self.lines += 1;
        if self.lines > NOISE_LINES_MAX {
            self.suppressed += 1;
        }
        self.lines <= NOISE_LINES_MAX
    }
}

impl Server {
    /// Whether a client (or a connection before HELLO) may have another
    /// request read: its own queued replies and the server's buffers are
    /// within budget.
    pub(super) fn client_may_send(&self, c: &Conn) -> bool {
        if c.queued_bytes() > self.cfg.output_bytes_max {
            return false;
        }
        // Over the server-wide budget, the connections holding replies wait
        // for them to drain; one with nothing queued may still be served
        // (so light clients are not starved by heavy ones), and a frame
        // already begun may be completed (refusing it could deadlock).
        self.client_buffer_bytes <= self.cfg.buffer_budget_bytes
            || c.queued_bytes() == 0
            || c.decoder.buffered() > 0 && !c.decoder.frame_ready()
    }

    /// Reply bytes queued plus buffer memory of every client connection.
    pub(super) fn count_client_buffers(&self) -> usize {
        self.conns
            .values()
            .filter(|c| !c.is_peer())
            .map(Conn::memory_bytes)
            .sum()
    }

    pub(super) fn accept_paused(&mut self) -> bool {
        match self.accept_paused_until {
            Some(at) if self.now < at => true,
            Some(_) => {
                self.accept_paused_until = None;
                false
            }
            None => false,
        }
    }

    pub(super) fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.accept_failed(e),
            };
            let _ = stream.set_nonblocking(true);
            let _ = stream.set_nodelay(true);
            let id = self.next_conn_id;
            self.next_conn_id += 1;
            let limit = HANDSHAKE_PAYLOAD_BYTES_MAX;
            let mut conn = Conn::new(id, stream, Kind::AwaitHello, limit, self.now);
            if let Some(cfg) = &self.cfg.tls {
                conn.wire = Wire::Sniffing(cfg.clone());
            }
            self.admit(conn);
        }
    }

    /// Gives a new connection a client slot, a peer-only slot, or a refusal.
    fn admit(&mut self, mut conn: Conn) {
        if self.clients_connected >= self.cfg.connections_max && !self.evict_oldest_stranger() {
            self.evict_longest_idle();
        }
        if self.clients_connected < self.cfg.connections_max {
            conn.counted = true;
            self.clients_connected += 1;
        } else if self.coord.is_some() && self.peer_only_open < PEER_SLOTS_RESERVED {
            conn.peer_only = true;
            self.peer_only_open += 1;
        } else {
            self.counters.connections_refused += 1;
            if self.noise.allow(self.now) {
                tracing::info!(peer = %conn.peer, "refused: too many connections");
            }
            let why = self.at_limit();
            self.turn_away(conn, &why);
            return;
        }
        self.counters.connections_accepted += 1;
        tracing::debug!(conn = conn.id, peer = %conn.peer, peer_only = conn.peer_only, "connection opened");
        let id = conn.id;
        self.conns.insert(id, conn);
        self.dirty.push(id);
    }

    /// Closes the oldest client connection that has not finished its
    /// handshake, to make room for a newcomer. Whether one was closed.
    fn evict_oldest_stranger(&mut self) -> bool {
        let oldest = self
            .conns
            .values()
            .filter(|c| c.counted && c.kind.in_handshake())
            .min_by_key(|c| c.opened_at)
            .map(|c| c.id);
        let Some(conn) = oldest.and_then(|id| self.conns.remove(&id)) else {
            return false;
        };
        self.counters.handshake_evictions += 1;
        self.turn_away(
            conn,
            "evicted: connection limit reached before its handshake",
        );
        true
    }

    /// Closes the client idle longest, if it has been idle at least
    /// [`IDLE_EVICT_AFTER`] with nothing in flight.
    fn evict_longest_idle(&mut self) {
        let now = self.now;
        let idlest = self
            .conns
            .values()
            .filter(|c| c.counted && c.is_idle())
            .filter(|c| now.saturating_duration_since(c.last_frame_at) >= IDLE_EVICT_AFTER)
            .min_by_key(|c| c.last_frame_at)
            .map(|c| c.id);
        if let Some(conn) = idlest.and_then(|id| self.conns.remove(&id)) {
            self.counters.idle_evictions += 1;
            self.turn_away(conn, "evicted: connection limit reached while idle");
        }
    }

    /// What TOO_MANY_CONNECTIONS says.
    pub(super) fn at_limit(&self) -> String {
        let max = self.cfg.connections_max;
        format!("server is at its limit of {max} connections")
    }

    /// Tells a connection TOO_MANY_CONNECTIONS (best effort: one write;
    /// refused and evicted connections owe no other replies, so the error
    /// goes straight to the output) and closes it.
    fn turn_away(&mut self, mut conn: Conn, why: &str) {
        conn.fail(ErrorCode::TooManyConnections, why, self.now);
        let _ = conn.write_some(&mut self.counters.bytes_out, self.now);
        self.close(conn, why);
    }

    fn accept_failed(&mut self, e: io::Error) {
        self.counters.accept_errors += 1;
        let out_of_fds = matches!(
            e.raw_os_error(),
            Some(nix::libc::EMFILE)
                | Some(nix::libc::ENFILE)
                | Some(nix::libc::ENOMEM)
                | Some(nix::libc::ENOBUFS)
        );
        // Keep serving the connections we have; stop polling the listener
        // for a moment, or it stays readable and the loop spins.
        if out_of_fds {
            self.accept_paused_until = Some(self.now + ACCEPT_BACKOFF);
        }
        let log_due = self
            .accept_error_logged_at
            .is_none_or(|at| self.now >= at + ACCEPT_LOG_INTERVAL);
        if log_due {
            self.accept_error_logged_at = Some(self.now);
            tracing::warn!(error = %e, total = self.counters.accept_errors, "accept failed; backing off (logged once per 10 s)");
        }
    }

    /// Closes connections past a time limit (see the module docs).
    pub(super) fn sweep(&mut self) {
        if self.now < self.last_sweep + SWEEP_INTERVAL {
            return;
        }
        self.last_sweep = self.now;
        let now = self.now;
        let expired: Vec<(u64, Expiry)> = self
            .conns
            .values()
            .filter_map(|c| self.expiry(c, now).map(|e| (c.id, e)))
            .collect();
        for (id, expiry) in expired {
            if let Some(conn) = self.conns.remove(&id) {
                match expiry {
                    Expiry::Handshake => self.counters.handshake_timeouts += 1,
                    Expiry::Idle => self.counters.idle_closed += 1,
                    Expiry::NotReading => self.counters.disconnected_slow += 1,
                    Expiry::ClosingGrace => {}
                }
                self.close(conn, expiry.why());
            }
        }
    }

    fn expiry(&self, c: &Conn, now: Instant) -> Option<Expiry> {
        let since = |t: Instant| now.saturating_duration_since(t);
        if c.closing_since.is_some_and(|t| since(t) > CLOSING_GRACE) {
            return Some(Expiry::ClosingGrace);
        }
        if c.kind.in_handshake() && since(c.opened_at) > self.cfg.handshake_timeout {
            return Some(Expiry::Handshake);
        }
        if c.is_peer() {
            return None; // peer links have their own timeout (peer_timeout)
        }
        if c.out_len() > 0 && since(c.last_drain_at) > self.cfg.send_timeout {
            return Some(Expiry::NotReading);
        }
        if c.is_idle() && since(c.last_frame_at) > self.cfg.idle_timeout {
            return Some(Expiry::Idle);
        }
        None
    }
}

/// Which time limit a connection passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    ClosingGrace,
    Handshake,
    NotReading,
    Idle,
}

impl Expiry {
    fn why(self) -> &'static str {
        match self {
            Expiry::ClosingGrace => "closing grace over",
            Expiry::Handshake => "handshake timeout",
            Expiry::NotReading => "not reading its replies",
            Expiry::Idle => "idle timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_noise_gate_lets_a_few_lines_through_per_window() {
        let t0 = Instant::now();
        let mut g = NoiseGate::new(t0);
        let allowed = (0..1000).filter(|_| g.allow(t0)).count();
        assert_eq!(allowed, NOISE_LINES_MAX as usize);
        assert_eq!(g.suppressed, 1000 - u64::from(NOISE_LINES_MAX));
        // A new window opens after the interval.
        assert!(g.allow(t0 + NOISE_WINDOW));
        assert_eq!(g.suppressed, 0);
    }
}
