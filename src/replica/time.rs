//! Time inside the replica: the coordination lease, the watch on a silent
//! successor, and the pace of redials. The replica reads no clock; the IO
//! layer (or the simulation) tells it the time with
//! [`Replica::handle_timeout`] on every wake-up, before the wake-up's other
//! inputs, and sleeps no longer than [`Replica::poll_timeout`] says. The
//! decisions are all made here, so the simulation can drive them with a
//! virtual clock (quinn-proto's `handle_timeout` / `poll_timeout`).

use super::{Action, Replica, Successor};
use std::time::{Duration, Instant};

/// How long a successor link may stay silent while this member waits on it
/// before it is dropped and redialled (`--peer-timeout-ms`).
pub const PEER_TIMEOUT_DEFAULT: Duration = Duration::from_millis(2000);

/// Least time between two dials of the successor: a successor that refuses
/// or breaks every link is not hammered.
pub const REDIAL_DELAY: Duration = Duration::from_millis(100);

/// The replica's timers. Every instant is one the IO layer reported.
#[derive(Debug, Clone, Default)]
pub(super) struct Timers {
    /// The time as of the last [`Replica::handle_timeout`]; `None` before
    /// the first one.
    pub(super) now: Option<Instant>,
    /// Chain mode: clients are served only before this instant.
    pub(super) lease_until: Option<Instant>,
    /// Length of the last lease granted (the negotiated session timeout).
    pub(super) lease: Duration,
    /// Last sign of life on the successor link, or when waiting on it began.
    pub(super) heard_at: Option<Instant>,
    /// A dial held back by [`REDIAL_DELAY`], due at this instant.
    pub(super) dial_at: Option<Instant>,
    pub(super) last_dial: Option<Instant>,
    pub(super) peer_timeout: Duration,
    /// Successor links dropped for silence (STATS `successor_timeouts`).
    pub(super) successor_timeouts: u64,
}

impl Timers {
    pub(super) fn new() -> Timers {
        Timers {
            peer_timeout: PEER_TIMEOUT_DEFAULT,
            ..Timers::default()
        }
    }
}

impl Replica {
    /// How long a successor may stay silent while awaited.
    pub fn set_peer_timeout(&mut self, timeout: Duration) {
        self.timers.peer_timeout = timeout.max(Duration::from_millis(1));
    }

    /// The coordination session was confirmed by a request sent at `sent`:
    /// ZooKeeper cannot expire it before `sent + lease`, so no other member
    /// can take over this one's place before then. Serving stops at that
    /// instant unless a later confirmation extends it.
    pub fn handle_lease(&mut self, sent: Instant, lease: Duration) {
        self.timers.lease = lease;
        let until = sent + lease;
        let t = &mut self.timers.lease_until;
        *t = Some(t.map_or(until, |u| u.max(until)));
        self.ask_floor_again();
    }

    /// Whether the lease allows serving clients now: always for a
    /// standalone server; in a chain only before the lease runs out.
    #[must_use]
    pub fn lease_valid(&self) -> bool {
        #[cfg(feature = "testing")]
        if self.planted(super::PlantedBug::ServeAfterLeaseLapsed) {
            return true;
        }
        !self.chain
            || matches!((self.timers.now, self.timers.lease_until),
                (Some(now), Some(until)) if now < until)
    }

    /// The lease length last granted (STATS `session_timeout_ms`).
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.timers.lease
    }

    /// Successor links dropped because they stayed silent.
    #[must_use]
    pub fn successor_timeouts(&self) -> u64 {
        self.timers.successor_timeouts
    }

    /// The time is `now`: fire whatever is due (a held-back dial, a silent
    /// successor). Time never goes back: an earlier `now` is ignored.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timers.now.is_some_and(|t| now < t) {
            return;
        }
        self.timers.now = Some(now);
        self.watch_successor(now);
        if self.timers.dial_at.is_some_and(|at| now >= at) {
            self.timers.dial_at = None;
            self.dial_successor();
        }
    }

    /// The next instant at which [`Replica::handle_timeout`] has something
    /// to do, if any. The lease's end is included so that a member's role
    /// and refusals change on time even when nothing else happens.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Waiting with the watch not started yet: wake now to start it
        // (else the watch waited for whatever woke the loop next).
        let watch = if self.waiting_on_successor() {
            match self.timers.heard_at {
                Some(t) => Some(t + self.timers.peer_timeout),
                None => self.timers.now,
            }
        } else {
            None
        };
        let lease_end = self
            .timers
            .lease_until
            .filter(|u| self.timers.now.is_some_and(|now| now < *u));
        [self.timers.dial_at, watch, lease_end]
            .into_iter()
            .flatten()
            .min()
    }

    /// A frame arrived on the successor link (any frame, the handshake's
    /// included): it is alive, whatever it says. HELLO_OK and ACK count by
    /// themselves, for IO layers that report only those.
    pub fn handle_successor_heard(&mut self) {
        self.timers.heard_at = self.timers.now;
    }

    /// Drops a successor link that has stayed silent for the peer timeout
    /// while this member waits on it, and redials. Closing costs nothing
    /// when the link was merely slow, since updates carry sequence numbers
    /// and resends are ignored; keeping a silent link can cost minutes once
    /// a partition heals, as TCP's retransmission backoff has grown.
    fn watch_successor(&mut self, now: Instant) {
        if !self.waiting_on_successor() {
            self.timers.heard_at = None;
            return;
        }
        let since = *self.timers.heard_at.get_or_insert(now);
        if now < since + self.timers.peer_timeout || self.timers.dial_at.is_some() {
            return;
        }
        self.timers.successor_timeouts += 1;
        self.timers.heard_at = Some(now);
        self.emit(Action::DropSuccessor);
        self.handle_successor_lost();
    }

    /// Asks the IO layer to dial the successor now, or holds the dial back
    /// until [`REDIAL_DELAY`] after the previous one.
    pub(super) fn dial_successor(&mut self) {
        let Successor::Connecting(member) = &self.successor else {
            self.timers.dial_at = None;
            return;
        };
        let member = member.clone();
        if let (Some(now), Some(last)) = (self.timers.now, self.timers.last_dial) {
            if now < last + REDIAL_DELAY {
                self.timers.dial_at = Some(last + REDIAL_DELAY);
                return;
            }
        }
        self.timers.last_dial = self.timers.now;
        self.timers.heard_at = self.timers.now;
        self.emit(Action::ConnectSuccessor(member));
    }
}
