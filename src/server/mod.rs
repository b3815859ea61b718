//! `table-server`: one network thread multiplexing every socket with
//! `poll`, one worker thread executing writes, and (in chain mode) one
//! coordination thread talking to ZooKeeper. The chain logic lives in the
//! sans-IO [`Replica`]; this module only moves bytes and time.

pub mod config;
mod conn;
mod dispatch;
mod handler;
#[doc(hidden)]
pub mod harness;
mod limits;
mod peer;
mod stats;
mod worker;

pub use config::ServerConfig;
#[cfg(feature = "testing")]
pub use config::TestSwitches;

use crate::coord::{CoordConfig, CoordEvent, Coordinator};
use crate::member::Member;
use crate::replica::Replica;
use crate::table::Table;
use conn::{Conn, Kind, ReadOutcome};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use socket2::{Domain, Protocol, Socket, Type};
use stats::Counters;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use worker::{Completions, TaskQueue};

/// A snapshot streams to a joiner while less than this is queued on the
/// link: a few chunks in flight keep the link busy, and the tail never
/// holds the whole table encoded.
const SNAPSHOT_QUEUE_BYTES: usize = 4 * crate::replica::SNAPSHOT_CHUNK_BYTES;
/// How long shutdown waits for replies to drain before closing.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// Bytes read from a socket per `read` call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Largest frame payload accepted before a handshake: HELLO and PEER_HELLO
/// are at most three texts and a nonce (~3.1 KB), so nothing larger is
/// ever buffered or CRC-checked for a stranger.
pub const HANDSHAKE_PAYLOAD_BYTES_MAX: usize = 4096;
/// Connections accepted beyond `connections_max` that may only open a
/// peer link, so a member whose client slots are all taken can still be
/// reached by its predecessor.
pub const PEER_SLOTS_RESERVED: usize = 8;

/// Hasher for connection ids: they are our own sequential numbers, not
/// attacker-chosen, so a multiply is enough (SipHash showed in profiles).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | *b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: io::Error },
    #[error("cannot start: {0}")]
    Setup(String),
}

pub struct Server {
    cfg: ServerConfig,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    wake: Arc<EventFd>,
    signals: UnixStream,
    table: Arc<Table>,
    queue: Arc<TaskQueue>,
    completions: Arc<Completions>,
    worker: Option<std::thread::JoinHandle<()>>,
    replica: Replica,
    coord: Option<Coordinator>,
    conns: HashMap<u64, Conn, BuildHasherDefault<IdHasher>>,
    /// Connections with something to do since the last pump (events,
    /// completed writes, peer traffic): only these are pumped, so an idle
    /// connection costs nothing per loop iteration.
    dirty: Vec<u64>,
    next_conn_id: u64,
    counters: Counters,
    clients_connected: usize,
    shutting_down: bool,
    /// The loop's clock, read once per iteration.
    now: Instant,
    /// Reply bytes queued for clients and client buffer memory, summed at
    /// the start of each iteration (see `limits.rs`).
    client_buffer_bytes: usize,
    /// Peer-only connections open (see [`PEER_SLOTS_RESERVED`]).
    peer_only_open: usize,
    last_sweep: Instant,
    /// Accepting is paused until then after EMFILE/ENFILE.
    accept_paused_until: Option<Instant>,
    /// Last time an accept error was logged (once per interval).
    accept_error_logged_at: Option<Instant>,
    /// Rate limit for log lines outsiders can cause.
    noise: limits::NoiseGate,
}

impl Server {
    /// Binds the listener and starts the worker (and coordinator in chain
    /// mode). `run` then serves until SIGINT/SIGTERM.
    pub fn bind(cfg: ServerConfig) -> Result<Server, ServerError> {
        let listener = listen(&cfg.listen, cfg.backlog).map_err(|source| ServerError::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| ServerError::Setup(e.to_string()))?;
        let setup = |e: nix::Error| ServerError::Setup(e.to_string());
        let wake = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(setup)?,
        );
        let (signals, signal_writer) =
            UnixStream::pair().map_err(|e| ServerError::Setup(e.to_string()))?;
        signals
            .set_nonblocking(true)
            .map_err(|e| ServerError::Setup(e.to_string()))?;
        let signals_wanted = if cfg.handle_signals {
            vec![signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
        } else {
            Vec::new()
        };
        for sig in signals_wanted {
            let w = signal_writer
                .try_clone()
                .map_err(|e| ServerError::Setup(e.to_string()))?;
            signal_hook::low_level::pipe::register(sig, w)
                .map_err(|e| ServerError::Setup(e.to_string()))?;
        }
        if cfg.zookeeper.is_some() && cfg.secret.is_none() {
            return Err(ServerError::Setup(
                "a chain member needs the cluster secret (--cluster-secret-file FILE), \
                 or --insecure-peers to let anyone who can reach it act as a peer"
                    .into(),
            ));
        }
        let table = Arc::new(Table::new(cfg.n_lists));
        let queue = Arc::new(TaskQueue::new(cfg.queue_depth_max, cfg.queue_bytes_max));
        let completions = Arc::new(Completions::new(wake.clone()));
        let worker = worker::spawn(
            table.clone(),
            queue.clone(),
            completions.clone(),
            #[cfg(feature = "testing")]
            cfg.test.worker_delay,
            #[cfg(not(feature = "testing"))]
            Duration::ZERO,
        )
        .map_err(|e| ServerError::Setup(e.to_string()))?;
        let mut replica = Replica::standalone(cfg.sent_max);
        let coord = match &cfg.zookeeper {
            None => None,
            Some(zk) => {
                replica = Replica::chain_member(String::new(), cfg.sent_max);
                let coord_cfg = CoordConfig {
                    secret: cfg.secret.clone(),
                    zookeeper: zk.clone(),
                    root: cfg.chain_root.clone(),
                    advertise: Some(cfg.advertise.clone()),
                    session_timeout: cfg.session_timeout,
                };
                let wake2 = wake.clone();
                let c = Coordinator::start(coord_cfg, move || {
                    let _ = wake2.write(1);
                })
                .map_err(|e| ServerError::Setup(format!("ZooKeeper {zk}: {e}")))?;
                Some(c)
            }
        };
        replica.set_snapshot_chunk_entries(cfg.snapshot_chunk_entries);
        replica.set_sent_bytes_max(cfg.sent_bytes_max);
        replica.set_peer_timeout(cfg.peer_timeout);
        #[cfg(feature = "testing")]
        replica.set_reads_anywhere(cfg.test.unsafe_reads_anywhere);
        Ok(Server {
            cfg,
            listener: Some(listener),
            local_addr,
            wake,
            signals,
            table,
            queue,
            completions,
            worker: Some(worker),
            replica,
            coord,
            conns: HashMap::default(),
            dirty: Vec::new(),
            next_conn_id: 1,
            counters: Counters::default(),
            clients_connected: 0,
            shutting_down: false,
            now: Instant::now(),
            client_buffer_bytes: 0,
            peer_only_open: 0,
            last_sweep: Instant::now(),
            accept_paused_until: None,
            accept_error_logged_at: None,
            noise: limits::NoiseGate::new(Instant::now()),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until a shutdown signal, then drains and returns.
    pub fn run(mut self) -> io::Result<()> {
        tracing::info!(addr = %self.local_addr, n_lists = self.table.n_lists(), "serving");
        let mut scratch = vec![0u8; READ_CHUNK_BYTES];
        while !self.shutting_down {
            self.poll_once(&mut scratch)?;
        }
        self.shutdown();
        Ok(())
    }

    fn poll_once(&mut self, scratch: &mut [u8]) -> io::Result<()> {
        self.tick();
        self.sweep();
        self.client_buffer_bytes = self.count_client_buffers();
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        let accepting = self.listener.is_some() && !self.accept_paused();
        let ready = {
            let mut fds = Vec::with_capacity(ids.len() + 3);
            fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
            if let (true, Some(l)) = (accepting, &self.listener) {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            for id in &ids {
                let c = &self.conns[id];
                let mut flags = PollFlags::empty();
                if self.wants_read(c) {
                    flags |= PollFlags::POLLIN;
                }
                if c.wants_write() || c.connecting {
                    flags |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.stream.as_fd(), flags));
            }
            match poll(&mut fds, self.poll_timeout()) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            fds.iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect::<Vec<_>>()
        };
        if !ready[0].is_empty() {
            let _ = self.wake.read();
        }
        if !ready[1].is_empty() {
            let mut buf = [0u8; 64];
            let _ = self.signals.read(&mut buf);
            tracing::info!("shutdown signal received");
            self.shutting_down = true;
        }
        self.tick();
        let offset = if accepting {
            if !ready[2].is_empty() {
                self.accept_all();
            }
            3
        } else {
            2
        };
        for (i, id) in ids.iter().enumerate() {
            let ev = ready[offset + i];
            if !ev.is_empty() {
                self.on_socket_event(*id, ev, scratch);
            }
        }
        self.drain_background();
        self.pump_all();
        self.feed_successor();
        Ok(())
    }

    /// Hands the joining successor snapshot chunks while its link has less
    /// than [`SNAPSHOT_QUEUE_BYTES`] queued; the link, now dirty, is
    /// written on the next iteration, and POLLOUT brings us back here.
    fn feed_successor(&mut self) {
        while self.replica.snapshot_pending() {
            let queued = self
                .conns
                .values()
                .find(|c| c.kind.is_ready_successor())
                .map(|c| c.out_len());
            match queued {
                Some(bytes) if bytes < SNAPSHOT_QUEUE_BYTES => {
                    self.replica.handle_successor_writable();
                    self.dispatch();
                }
                _ => return,
            }
        }
    }

    /// Reads the clock once for this stretch of the loop and gives the
    /// replica the time: it fires its own timers (lease, successor watch,
    /// redials) and the actions they produce are carried out.
    fn tick(&mut self) {
        self.now = Instant::now();
        let timeouts = self.replica.successor_timeouts();
        self.replica.handle_timeout(self.now);
        if self.replica.successor_timeouts() > timeouts {
            tracing::warn!(
                timeout_ms = self.cfg.peer_timeout.as_millis() as u64,
                "successor link silent: redialling"
            );
        }
        self.dispatch();
    }

    /// How long `poll` may sleep: until the replica's next timer, the end
    /// of an accept pause or the next sweep, and at most a second.
    fn poll_timeout(&self) -> PollTimeout {
        if !self.dirty.is_empty() {
            return PollTimeout::ZERO;
        }
        let now = Instant::now();
        let mut wake_at = now + Duration::from_millis(1000);
        if let Some(at) = self.replica.poll_timeout() {
            wake_at = wake_at.min(at);
        }
        if let Some(at) = self.accept_paused_until {
            wake_at = wake_at.min(at);
        }
        wake_at = wake_at.min(self.last_sweep + limits::SWEEP_INTERVAL);
        let ms = wake_at.saturating_duration_since(now).as_millis();
        PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX).saturating_add(1))
    }

    /// Room in the worker's queue, counting writes the replica has produced
    /// but `dispatch` has not handed over yet.
    fn queue_has_room(&self) -> bool {
        self.queue.has_room(self.replica.pending_actions())
    }

    fn wants_read(&self, c: &Conn) -> bool {
        if c.closing || c.connecting || c.slots.len() >= self.cfg.inflight_max {
            return false;
        }
        match c.kind {
            // Stop taking updates from the predecessor while the worker is full.
            Kind::Predecessor { .. } => self.queue_has_room(),
            Kind::Successor { .. } | Kind::PeerHandshake { .. } => true,
            Kind::AwaitHello | Kind::AwaitAuth | Kind::Client(_) => self.client_may_send(c),
        }
    }

    /// Open connections that are not peer links (kept as a counter because
    /// the connection being served is out of `conns` while it is handled).
    fn client_count(&self) -> usize {
        self.clients_connected
    }

    fn on_socket_event(&mut self, id: u64, ev: PollFlags, scratch: &mut [u8]) {
        let now = self.now;
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        let mut alive = true;
        if conn.connecting
            && ev.intersects(PollFlags::POLLOUT | PollFlags::POLLERR | PollFlags::POLLHUP)
            && !finish_connect(&mut conn)
        {
            self.close(conn, "connect failed");
            return;
        }
        if alive && ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            if let ReadOutcome::Closed = conn.read_some(scratch, &mut self.counters.bytes_in) {
                alive = false;
            }
            // Frames already buffered are still processed below, so a
            // client that sends and half-closes gets its replies.
            self.process_frames(&mut conn);
            if !alive && conn.out_len() == 0 && conn.slots.is_empty() {
                self.close(conn, "peer closed");
                return;
            }
        }
        if alive && ev.contains(PollFlags::POLLOUT) {
            if let Err(e) = conn.write_some(&mut self.counters.bytes_out, now) {
                self.close(conn, &format!("write failed: {e}"));
                return;
            }
        }
        if !alive {
            // Half-closed with replies pending: try to deliver, then close.
            let _ = conn.write_some(&mut self.counters.bytes_out, now);
            conn.start_closing(now);
        }
        self.conns.insert(id, conn);
        self.dirty.push(id);
    }

    /// Handles worker completions and coordination events.
    fn drain_background(&mut self) {
        let completions = self.completions.drain();
        if !completions.is_empty() {
            // The worker made room: a paused predecessor link may resume.
            self.touch_peers();
        }
        for c in completions {
            self.on_completion(c);
        }
        let events: Vec<CoordEvent> = match &self.coord {
            Some(c) => c.events.try_iter().collect(),
            None => Vec::new(),
        };
        for e in events {
            self.on_coord_event(e);
        }
        self.dispatch();
    }

    /// Processes buffered frames, flushes replies and writes output for
    /// every connection; closes the ones that are done or over a limit.
    /// Pumps dirty connections until none are left (or a few rounds have
    /// passed: the rest wait for the next iteration, which then does not
    /// block in `poll`).
    fn pump_all(&mut self) {
        for _round in 0..8 {
            if self.dirty.is_empty() {
                return;
            }
            self.pump_dirty();
        }
    }

    fn pump_dirty(&mut self) {
        let now = self.now;
        let mut ids = std::mem::take(&mut self.dirty);
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let Some(mut conn) = self.conns.remove(&id) else {
                continue;
            };
            if conn.decoder.buffered() > 0 && self.wants_read(&conn) {
                self.process_frames(&mut conn);
            }
            let budget = self.cfg.output_bytes_max;
            conn.flush_slots(budget, |m| self.eval_read(m));
            if !conn.connecting {
                if let Err(e) = conn.write_some(&mut self.counters.bytes_out, now) {
                    self.close(conn, &format!("write failed: {e}"));
                    continue;
                }
            }
            if conn.closing && conn.out_len() == 0 && conn.slots.is_empty() {
                self.close(conn, "closed after error");
                continue;
            }
            // Requests already buffered that were held back (output over
            // budget, inflight limit) and may go now: no socket event will
            // come for them, so come back next round.
            let held_frames = conn.decoder.frame_ready() && self.wants_read(&conn);
            if held_frames || conn.slots_flushable(budget) {
                self.dirty.push(id);
            }
            conn.shrink_idle_buffers();
            self.conns.insert(id, conn);
        }
        // Processing frames may have produced replica actions, which may
        // make more connections dirty.
        self.dispatch();
    }

    pub(super) fn touch(&mut self, id: u64) {
        self.dirty.push(id);
    }

    pub(super) fn touch_peers(&mut self) {
        let peers = self.conns.values().filter(|c| c.is_peer()).map(|c| c.id);
        self.dirty.extend(peers);
    }

    /// Drops a connection and tells the replica if it was a peer link.
    fn close(&mut self, conn: Conn, why: &str) {
        // Client connections come and go by the thousand (and a flood of
        // them must not become a flood of log lines): debug level. Peer
        // links are few and matter: info.
        if conn.is_peer() {
            tracing::info!(conn = conn.id, peer = %conn.peer, why, "peer connection closed");
        } else {
            tracing::debug!(conn = conn.id, peer = %conn.peer, why, "connection closed");
        }
        if conn.counted {
            self.clients_connected -= 1;
        }
        if conn.peer_only {
            self.peer_only_open -= 1;
        }
        match conn.kind {
            Kind::Successor { .. } => {
                self.replica.handle_successor_lost();
                self.dispatch();
            }
            Kind::Predecessor { .. } => {
                self.replica.handle_predecessor_lost();
                self.dispatch();
            }
            _ => {}
        }
    }

    /// Closes peer links of one kind without telling the replica (it asked).
    fn drop_links(&mut self, successor: bool) {
        self.conns.retain(|_, c| {
            let hit = match c.kind {
                Kind::Successor { .. } => successor,
                Kind::Predecessor { .. } => !successor,
                _ => false,
            };
            if hit {
                tracing::info!(conn = c.id, peer = %c.peer, "peer link dropped");
            }
            !hit
        });
    }

    /// Opens the link to a successor (non-blocking connect). The replica
    /// paces redials (see [`crate::replica::REDIAL_DELAY`]).
    fn dial(&mut self, member: Member) {
        let now = self.now;
        match start_connect(&member.addr) {
            Ok(stream) => {
                let id = self.next_conn_id;
                self.next_conn_id += 1;
                let (stage, hello) = self.open_handshake(&member);
                let kind = Kind::Successor {
                    node: member.name.clone(),
                    stage,
                };
                let mut conn = Conn::new(id, stream, kind, self.cfg.payload_bytes_max, now);
                conn.peer = member.addr.clone();
                conn.connecting = true;
                conn.send(&hello);
                tracing::info!(conn = id, successor = %member.name, addr = %member.addr, "dialling successor");
                self.conns.insert(id, conn);
                self.dirty.push(id);
            }
            Err(e) => {
                tracing::warn!(addr = %member.addr, error = %e, "cannot dial successor");
                self.replica.handle_successor_lost();
            }
        }
    }

    fn shutdown(mut self) {
        tracing::info!("shutting down: no new connections, finishing queued writes");
        self.listener = None;
        self.queue.close();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        for c in self.completions.drain() {
            self.on_completion(c);
        }
        self.replica
            .fail_waiting(crate::wire::ErrorCode::ShuttingDown);
        self.dispatch();
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in &ids {
            if let Some(mut conn) = self.conns.remove(id) {
                conn.flush_slots(usize::MAX, |m| self.eval_read(m));
                if !conn.is_peer() {
                    let now = self.now;
                    conn.fail(
                        crate::wire::ErrorCode::ShuttingDown,
                        "server shutting down",
                        now,
                    );
                    conn.flush_slots(usize::MAX, |m| self.eval_read(m));
                }
                let _ = conn.stream.set_nonblocking(false);
                let _ = conn.stream.set_write_timeout(Some(SHUTDOWN_FLUSH));
                let _ = conn.write_some(&mut self.counters.bytes_out, Instant::now());
            }
        }
        if let Some(c) = self.coord.take() {
            c.stop();
        }
        tracing::info!(last_executed = self.replica.last_applied(), "stopped");
    }
}

/// Resolves `addr` and makes a TCP socket of the matching family.
fn tcp_socket(addr: &str) -> io::Result<(Socket, SocketAddr)> {
    let addr: SocketAddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    Ok((socket, addr))
}

/// A listening socket with the options a server wants (socket2).
fn listen(addr: &str, backlog: i32) -> io::Result<TcpListener> {
    let (socket, addr) = tcp_socket(addr)?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Starts a non-blocking connect; completion is seen as POLLOUT.
fn start_connect(addr: &str) -> io::Result<std::net::TcpStream> {
    let (socket, addr) = tcp_socket(addr)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

fn finish_connect(conn: &mut Conn) -> bool {
    conn.connecting = false;
    match conn.stream.take_error() {
        Ok(None) => conn.stream.peer_addr().is_ok(),
        _ => false,
    }
}
