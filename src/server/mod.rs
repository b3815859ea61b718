//! `table-server`: one network thread multiplexing every socket with
//! `poll`, one worker thread executing writes, and (in chain mode) one
//! coordination thread talking to ZooKeeper. The chain logic lives in the
//! sans-IO [`Replica`]; this module only moves bytes and time.

mod backup;
pub mod config;
mod conn;
mod dispatch;
mod event_loop;
mod forward;
mod handler;
#[doc(hidden)]
pub mod harness;
mod limits;
mod links;

use links::{finish_connect, listen};
mod peer;
mod stats;
mod watches;
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
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// Why the kernel refused.
        source: io::Error,
    },
    /// Something else the server needs could not be started.
    #[error("cannot start: {0}")]
    Setup(String),
}

/// A bound `table-server`: its listener, worker, replica and (in chain
/// mode) coordinator. [`Server::run`] serves until a shutdown signal.
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
    /// The data directory's state (`--data-dir`): writes are refused while
    /// the log cannot be written.
    health: Option<Arc<crate::storage::Health>>,
    /// The BACKUP in progress, if any (one at a time).
    backup: Option<backup::BackupRun>,
    /// The worker's last applied sequence number (BACKUP waits for its
    /// completions to catch up with it).
    worker_applied: Arc<std::sync::atomic::AtomicU64>,
    conns: HashMap<u64, Conn, BuildHasherDefault<IdHasher>>,
    /// Recent changes, for watches (spec §4.1, WATCH).
    history: crate::watch::History,
    /// The replica's history epoch the history follows.
    history_epoch: u64,
    /// The watch horizon when watchers were last pumped for it.
    watch_horizon_seen: Option<u64>,
    /// Connections with something to do since the last pump (events,
    /// completed writes, peer traffic): only these are pumped, so an idle
    /// connection costs nothing per loop iteration.
    dirty: Vec<u64>,
    next_conn_id: u64,
    counters: Counters,
    /// Reads a member that is not the tail answered itself, and reads it
    /// sent to the tail for a dirty key (CRAQ; counted where reads are
    /// answered, which borrows the server shared).
    craq_reads: std::cell::Cell<(u64, u64)>,
    /// Chain mode: the thread that forwards writes to the head (spec §5.6).
    forwarder: Option<forward::Forwarder>,
    /// A member of a cluster of chains (`--cluster-root`): its chain and
    /// the shard map, which say which keys it may take (spec §5.8).
    shard: Option<crate::cluster::Shard>,
    /// Requests refused with WRONG_SHARD (STATS).
    wrong_shard_refused: u64,
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
    ///
    /// # Errors
    ///
    /// [`ServerError::Listen`] when the address cannot be bound;
    /// [`ServerError::Setup`] when the worker, the eventfd, the signal pipe or
    /// the coordinator cannot be started, or a chain member has no cluster
    /// secret.
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
        let signals = signal_pipe(cfg.handle_signals)?;
        if cfg.zookeeper.is_some() && cfg.secret.is_none() {
            return Err(ServerError::Setup(
                "a chain member needs the cluster secret (--cluster-secret-file FILE), \
                 or --insecure-peers to let anyone who can reach it act as a peer"
                    .into(),
            ));
        }
        let table = Arc::new(Table::new(cfg.n_lists));
        let restored = restore_backup(&cfg, &table)?;
        let opened = open_storage(&cfg, &table)?;
        let opened = opened.map(|mut o| {
            if cfg.handle_signals {
                let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
                match signal_hook::flag::register(signal_hook::consts::SIGUSR1, flag.clone()) {
                    Ok(_) => o.store.snapshot_on(flag),
                    Err(e) => tracing::warn!(error = %e, "no SIGUSR1 snapshots"),
                }
            }
            o
        });
        let (store, resume) = match (opened, restored) {
            (Some(o), _) => (
                Some(o.store),
                Some((o.last_seq, o.gaps, o.restarted, Some(o.health))),
            ),
            (None, Some((seq, gaps))) => (None, Some((seq, gaps, true, None))),
            (None, None) => (None, None),
        };
        let queue = Arc::new(TaskQueue::new(cfg.queue_depth_max, cfg.queue_bytes_max));
        let completions = Arc::new(Completions::new(wake.clone()));
        let worker_applied = Arc::new(std::sync::atomic::AtomicU64::new(
            resume.as_ref().map_or(0, |r| r.0),
        ));
        let worker = worker::spawn(
            worker_applied.clone(),
            table.clone(),
            queue.clone(),
            completions.clone(),
            #[cfg(feature = "testing")]
            cfg.test.worker_delay,
            #[cfg(not(feature = "testing"))]
            Duration::ZERO,
            resume.as_ref().map_or(0, |r| r.0),
            store,
        )
        .map_err(|e| ServerError::Setup(e.to_string()))?;
        let coord = start_coordinator(&cfg, &wake)?;
        let forwarder = start_forwarder(&cfg, &wake)?;
        let mut replica = new_replica(&cfg);
        let history =
            crate::watch::History::new(resume.as_ref().map_or(0, |r| r.0), cfg.watch_history_bytes);
        let health = resume.and_then(|(last_seq, gaps, restarted, health)| {
            if cfg.zookeeper.is_some() {
                // A durable chain member: its table is its log's, kept
                // when it registers (see `replica/durable.rs`).
                replica.resume_durable(last_seq, &gaps);
            } else {
                replica.resume(last_seq, &gaps, restarted);
            }
            health
        });
        let shard = cfg.cluster_chain().map(crate::cluster::Shard::new);
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
            health,
            backup: None,
            worker_applied,
            conns: HashMap::default(),
            history_epoch: 0,
            history,
            watch_horizon_seen: None,
            dirty: Vec::new(),
            next_conn_id: 1,
            counters: Counters::default(),
            craq_reads: std::cell::Cell::new((0, 0)),
            forwarder,
            shard,
            wrong_shard_refused: 0,
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

    #[must_use]
    /// The address actually bound (the port, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// A socket that becomes readable on SIGINT/SIGTERM (when `handle` is set),
/// so that `poll` wakes for a shutdown like for any other event.
fn signal_pipe(handle: bool) -> Result<UnixStream, ServerError> {
    let setup = |e: io::Error| ServerError::Setup(e.to_string());
    let (signals, writer) = UnixStream::pair().map_err(setup)?;
    signals.set_nonblocking(true).map_err(setup)?;
    if handle {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let w = writer.try_clone().map_err(setup)?;
            signal_hook::low_level::pipe::register(sig, w).map_err(setup)?;
        }
    }
    Ok(signals)
}

/// `--restore FILE`: the backup seeds the data directory (or, without one,
/// the table itself); returns what to resume from when there is no data
/// directory.
fn restore_backup(
    cfg: &ServerConfig,
    table: &Arc<Table>,
) -> Result<Option<(u64, Vec<crate::wire::SeqGap>)>, ServerError> {
    let Some(file) = &cfg.restore else {
        return Ok(None);
    };
    if cfg.zookeeper.is_some() {
        return Err(ServerError::Setup(
            "--restore is for standalone servers: chain members receive the state from the chain"
                .into(),
        ));
    }
    let (seq, gaps) = crate::storage::restore(file, cfg.storage.as_ref(), table)
        .map_err(|e| ServerError::Setup(format!("--restore {}: {e}", file.display())))?;
    tracing::info!(file = %file.display(), seq, "restored from a backup");
    Ok(cfg.storage.is_none().then_some((seq, gaps)))
}

/// With `--data-dir`: locks the directory and recovers the table from it.
fn open_storage(
    cfg: &ServerConfig,
    table: &Arc<Table>,
) -> Result<Option<crate::storage::Opened>, ServerError> {
    let Some(storage) = &cfg.storage else {
        return Ok(None);
    };
    crate::storage::Store::open(storage.clone(), table)
        .map(Some)
        .map_err(|e| ServerError::Setup(format!("data directory: {e}")))
}

/// Chain mode: the coordination thread, which wakes the loop through
/// `wake` whenever it has an event.
fn start_coordinator(
    cfg: &ServerConfig,
    wake: &Arc<EventFd>,
) -> Result<Option<Coordinator>, ServerError> {
    let Some(zk) = &cfg.zookeeper else {
        return Ok(None);
    };
    if let Some(cluster) = &cfg.cluster_root {
        let parent = cfg.chain_root.rsplit_once('/').map(|(p, _)| p);
        let name = cfg.cluster_chain().unwrap_or_default();
        let probe = crate::cluster::ShardMap::split(0, std::slice::from_ref(&name), &[]);
        if parent != Some(cluster.trim_end_matches('/')) || probe.is_err() {
            return Err(ServerError::Setup(format!(
                "--chain-root {} must be --cluster-root {cluster} followed by /<chain name> ([A-Za-z0-9_-], at most {} bytes)",
                cfg.chain_root,
                crate::cluster::map::CHAIN_NAME_BYTES_MAX
            )));
        }
    }
    let coord_cfg = CoordConfig {
        secret: cfg.secret.clone(),
        zookeeper: zk.clone(),
        root: cfg.chain_root.clone(),
        advertise: Some(cfg.advertise.clone()),
        session_timeout: cfg.session_timeout,
        cluster: cfg.cluster_root.clone(),
    };
    let wake = wake.clone();
    let c = Coordinator::start(coord_cfg, move || {
        let _ = wake.write(1);
    })
    .map_err(|e| ServerError::Setup(format!("ZooKeeper {zk}: {e}")))?;
    Ok(Some(c))
}

/// Chain mode with `--forward-writes on`: the forwarding thread. Not with
/// client authentication or TLS: the member would have to log in to the
/// head as the client (it holds no password) or speak TLS to it; those
/// clusters redirect writes (NOT_HEAD) as before.
fn start_forwarder(
    cfg: &ServerConfig,
    wake: &Arc<EventFd>,
) -> Result<Option<forward::Forwarder>, ServerError> {
    if cfg.zookeeper.is_none() || !cfg.forward_writes {
        return Ok(None);
    }
    if cfg.users.is_some() || cfg.tls.is_some() {
        tracing::info!("writes are not forwarded to the head with --users-file or TLS: NOT_HEAD redirects them");
        return Ok(None);
    }
    forward::Forwarder::start(wake.clone())
        .map(Some)
        .map_err(|e| ServerError::Setup(format!("forwarding thread: {e}")))
}

/// The replica for this configuration: standalone, or a chain member that
/// learns its name when it registers.
fn new_replica(cfg: &ServerConfig) -> Replica {
    let mut replica = if cfg.zookeeper.is_some() {
        Replica::chain_member(String::new(), cfg.sent_max)
    } else {
        Replica::standalone(cfg.sent_max)
    };
    replica.set_snapshot_chunk_entries(cfg.snapshot_chunk_entries);
    replica.set_sent_bytes_max(cfg.sent_bytes_max);
    replica.set_peer_timeout(cfg.peer_timeout);
    replica.set_craq(cfg.craq);
    #[cfg(feature = "testing")]
    replica.set_reads_anywhere(cfg.test.unsafe_reads_anywhere);
    replica
}
