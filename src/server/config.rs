//! Server settings: every limit the server enforces, with its default.

use crate::wire::PAYLOAD_BYTES_MAX_DEFAULT;
use std::time::Duration;

/// Everything `table-server` can be told. Defaults are the documented limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `0.0.0.0:9000`.
    pub listen: String,
    /// Address other members and clients use to reach this server
    /// (what goes into ZooKeeper), e.g. `127.0.0.1:9000`.
    pub advertise: String,
    /// Number of table partitions (lock stripes).
    pub n_lists: usize,
    /// Largest frame payload accepted (FRAME_TOO_LARGE beyond).
    pub payload_bytes_max: usize,
    /// Most open client connections (TOO_MANY_CONNECTIONS beyond).
    pub connections_max: usize,
    /// Reply bytes queued for one client beyond which its requests are not
    /// read until it takes some (backpressure).
    pub output_bytes_max: usize,
    /// All clients' buffered input and output together, beyond which no new
    /// request is read from any client until replies drain.
    pub buffer_budget_bytes: usize,
    /// A connection that has not completed HELLO (or the peer handshake)
    /// this long after connecting is closed.
    pub handshake_timeout: Duration,
    /// A client with nothing in flight and no request this long is closed.
    pub idle_timeout: Duration,
    /// A client whose queued replies do not move this long is not reading:
    /// it is closed.
    pub send_timeout: Duration,
    /// Chain mode: the cluster secret peers prove in the handshake
    /// (`Secret::insecure()` with `--insecure-peers`). Required in chain mode.
    pub secret: Option<crate::auth::Secret>,
    /// Client TLS (`--tls-cert`/`--tls-key`): when set, clients must use
    /// TLS; plaintext is accepted only for the peer handshake.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Stop on SIGINT/SIGTERM. Off for servers embedded in another
    /// program (the fuzz harness), where the process owns its signals:
    /// handlers, once registered, stay for the life of the process.
    pub handle_signals: bool,
    /// Client users (`--users-file`): when set, clients must AUTH first.
    pub users: Option<std::sync::Arc<crate::auth::Users>>,
    /// Most requests in progress on one connection (reading pauses beyond).
    pub inflight_max: usize,
    /// Most writes in the worker's queue (BUSY beyond).
    pub queue_depth_max: usize,
    /// Most unacknowledged writes in the chain (BUSY at the head beyond).
    pub sent_max: usize,
    /// Key and value bytes of unacknowledged writes (BUSY at the head beyond).
    pub sent_bytes_max: usize,
    /// Key and value bytes of writes waiting for the worker (BUSY beyond).
    pub queue_bytes_max: usize,
    /// Bytes of recent changes kept for watches to start or resume in
    /// (spec §4.1, WATCH); a watcher further behind than half of it is cut
    /// off with WATCH_TOO_SLOW.
    pub watch_history_bytes: usize,
    /// Listen backlog.
    pub backlog: i32,
    /// Chain mode: ZooKeeper `host:port` and the chain's root path.
    pub zookeeper: Option<String>,
    /// The chain's root znode (`--chain-root`): one chain per root.
    pub chain_root: String,
    /// A cluster of chains (`--cluster-root`): the path whose data is the
    /// shard map; `chain_root` is then `<cluster_root>/<chain name>`.
    pub cluster_root: Option<String>,
    /// ZooKeeper session timeout: the fencing bound.
    pub session_timeout: Duration,
    /// How long a successor link may stay silent while this member waits on
    /// it (connecting, or holding updates it has not acknowledged) before
    /// the link is dropped and redialled. A partition drops packets
    /// silently and TCP's retransmission backoff grows with its length, so
    /// without this a healed link could stay idle for minutes.
    pub peer_timeout: Duration,
    /// Entries per SNAPSHOT chunk during state transfer.
    pub snapshot_chunk_entries: usize,
    /// Chain mode: members that are not the tail answer reads of clean
    /// keys (CRAQ, spec §5.5); off, only the tail answers reads.
    pub craq: bool,
    /// Chain mode: a member that is not the head forwards client writes to
    /// it (spec §5.6); off, it redirects them (NOT_HEAD).
    pub forward_writes: bool,
    /// `--data-dir` and its settings: a durable server (see `storage`).
    pub storage: Option<crate::storage::StorageConfig>,
    /// `--restore FILE`: start from this backup (standalone servers).
    pub restore: Option<std::path::PathBuf>,
    /// Switches that exist only in test builds (cargo feature `testing`).
    #[cfg(feature = "testing")]
    pub test: TestSwitches,
}

/// Switches for tests only, compiled only with the `testing` feature, so
/// that no build for users can turn them on by accident.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Default)]
pub struct TestSwitches {
    /// Answer reads on any member (breaks linearizability), so the
    /// fault-injection suite can prove its checker notices.
    pub unsafe_reads_anywhere: bool,
    /// The worker sleeps this long before each write, standing in for a
    /// slow disk so tests can observe pending writes.
    pub worker_delay: Duration,
}

impl ServerConfig {
    /// In a cluster, this member's chain name: the last part of its chain
    /// root, whose parent must be the cluster root (checked at start-up).
    #[must_use]
    pub fn cluster_chain(&self) -> Option<String> {
        self.cluster_root.as_ref()?;
        self.chain_root
            .rsplit_once('/')
            .map(|(_, name)| name.to_string())
    }

    /// Bytes a peer link may have queued for sending before it is closed
    /// (and the replica redials and resends). An honest link never holds
    /// more than the unacknowledged updates (at most `sent_bytes_max` of
    /// keys and values, and [`crate::replica::HELD_UPDATES_MAX`] frames of
    /// at most 64 bytes of headers each), a few snapshot chunks, and one
    /// frame; a peer that stops reading hits this instead of our memory.
    #[must_use]
    pub fn peer_output_bytes_max(&self) -> usize {
        self.sent_bytes_max
            .saturating_add(crate::replica::HELD_UPDATES_MAX * 64)
            .saturating_add(4 * crate::replica::SNAPSHOT_CHUNK_BYTES)
            .saturating_add(self.payload_bytes_max)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:9000".into(),
            advertise: "127.0.0.1:9000".into(),
            n_lists: 16,
            payload_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT,
            connections_max: 1024,
            output_bytes_max: 32 * 1024 * 1024,
            buffer_budget_bytes: 1024 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            send_timeout: Duration::from_secs(30),
            secret: None,
            users: None,
            handle_signals: true,
            tls: None,
            inflight_max: 4096,
            queue_depth_max: 65_536,
            sent_max: 65_536,
            sent_bytes_max: crate::replica::SENT_BYTES_MAX_DEFAULT,
            queue_bytes_max: 32 * 1024 * 1024,
            watch_history_bytes: crate::watch::WATCH_HISTORY_BYTES_DEFAULT,
            backlog: 1024,
            zookeeper: None,
            chain_root: "/chain".into(),
            cluster_root: None,
            session_timeout: Duration::from_millis(2000),
            peer_timeout: crate::replica::PEER_TIMEOUT_DEFAULT,
            snapshot_chunk_entries: 4096,
            craq: true,
            forward_writes: true,
            storage: None,
            restore: None,
            #[cfg(feature = "testing")]
            test: TestSwitches::default(),
        }
    }
}
