//! table-server: a standalone server, or a chain member coordinated by
//! ZooKeeper when a third argument names it.

use chaintable::server::{Server, ServerConfig};
use chaintable::storage::StorageConfig;
use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

/// A chaintable server.
///
/// Standalone: `table-server 9000 16`. Chain member: `table-server 9001 16
/// 127.0.0.1:2181` (writes go to the head, reads to the tail; see README).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// TCP port to listen on.
    port: u16,
    /// Number of table partitions (independent lock stripes), 1..=65536.
    #[arg(value_parser = clap::value_parser!(u32).range(1..=65_536))]
    n_lists: u32,
    /// ZooKeeper `host:port`: run as a chain member.
    zookeeper: Option<String>,
    /// Address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    bind: String,
    /// `host:port` that clients and peers use to reach this server
    /// (registered in ZooKeeper). Default: 127.0.0.1:<port>.
    #[arg(long)]
    advertise: Option<String>,
    /// ZooKeeper path of the chain; several chains can share one ZooKeeper.
    #[arg(long, default_value = "/chain")]
    chain_root: String,
    /// A cluster of chains (spec §5.8): the ZooKeeper path whose data is the
    /// shard map. The chain root must then be a child of it, named after
    /// the chain (`--cluster-root /cluster --chain-root /cluster/a`), and
    /// the member takes only keys in its chain's ranges.
    #[arg(long, requires = "zookeeper")]
    cluster_root: Option<String>,
    /// Limit: largest frame payload accepted, bytes (FRAME_TOO_LARGE beyond),
    /// 4096..=4294967295. Also caps every reply, so the largest value
    /// stored is this less 13 bytes (or 8 MiB).
    #[arg(long, default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(4096..=u64::from(u32::MAX)))]
    frame_bytes_max: u64,
    /// Limit: most client connections (TOO_MANY_CONNECTIONS beyond).
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Limit: reply bytes queued for one client beyond which its requests
    /// are not read until it takes some (backpressure, not a disconnect).
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    output_bytes_max: usize,
    /// Limit: all clients' buffered input and output together; beyond it no
    /// new request is read from any client until replies drain.
    #[arg(long, default_value_t = 1024 * 1024 * 1024)]
    buffer_budget_bytes: usize,
    /// A connection that has not finished HELLO (or the peer handshake)
    /// within this many ms is closed.
    #[arg(long, default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    handshake_timeout_ms: u64,
    /// A client with nothing in flight that sends nothing for this many ms
    /// is closed.
    #[arg(long, default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    idle_timeout_ms: u64,
    /// A client whose queued replies do not move for this many ms is not
    /// reading and is closed.
    #[arg(long, default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    send_timeout_ms: u64,
    /// Chain mode: file holding the cluster secret (16..=4096 bytes,
    /// surrounding whitespace ignored), shared by every member. Peers prove
    /// it in their handshake and MAC every frame; ZooKeeper credentials and
    /// znode signatures derive from it.
    #[arg(long)]
    cluster_secret_file: Option<std::path::PathBuf>,
    /// Chain mode without a secret: anyone who can reach a member's port
    /// can act as its peer, and ZooKeeper nodes are world-writable. Only on
    /// a network you trust entirely.
    #[arg(long, conflicts_with = "cluster_secret_file")]
    insecure_peers: bool,
    /// Client TLS: PEM certificate chain. With --tls-key, clients must use
    /// TLS (`table-client --tls --ca FILE`); peers keep their own
    /// authentication on the same port.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// Client TLS: PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Client users: one per line, `<name> <readonly|readwrite>
    /// sha256:<hex of SHA-256 of the password>`. With it, clients must
    /// AUTH after HELLO; without it, any client may read and write.
    #[arg(long)]
    users_file: Option<std::path::PathBuf>,
    /// Limit: requests in progress per connection before reading pauses.
    #[arg(long, default_value_t = 4096)]
    inflight_max: usize,
    /// Limit: writes waiting for the worker (BUSY beyond).
    #[arg(long, default_value_t = 65_536)]
    queue_depth: usize,
    /// Limit: writes not yet acknowledged by the tail (BUSY at the head
    /// beyond), at most 1048576.
    #[arg(long, default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    sent_max: u32,
    /// Limit: key and value bytes of writes not yet acknowledged by the tail
    /// (BUSY at the head beyond).
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    sent_bytes_max: usize,
    /// Limit: key and value bytes of writes waiting for the worker (BUSY
    /// beyond).
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    queue_bytes_max: usize,
    /// Limit: bytes of recent changes kept for watches to start or resume
    /// in (at least 16 MiB); a watcher more than half of it behind is cut
    /// off with WATCH_TOO_SLOW.
    #[arg(long, default_value_t = chaintable::watch::WATCH_HISTORY_BYTES_DEFAULT,
          value_parser = parse_watch_history_bytes)]
    watch_history_bytes: usize,
    /// ZooKeeper session timeout in ms: a member that cannot confirm its
    /// session for this long stops serving (fencing).
    #[arg(long, default_value_t = 1000)]
    session_timeout_ms: u64,
    /// A successor link silent this long (in ms) while this member waits on
    /// it (connecting, or updates not yet acknowledged) is dropped and
    /// redialled: a healed partition then resumes within about this long.
    #[arg(long, default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    peer_timeout_ms: u64,
    /// Entries per chunk when sending state to a joining member.
    #[arg(long, default_value_t = 4096)]
    snapshot_chunk_entries: usize,
    /// Chain mode: `on`, every member answers reads of keys it holds no
    /// unacknowledged write to (CRAQ; reads stay linearizable); `off`, only
    /// the tail answers reads.
    #[arg(long, default_value = "on", value_parser = parse_on_off,
          action = clap::ArgAction::Set)]
    craq: bool,
    /// Chain mode: `on`, a member that is not the head forwards a client's
    /// write to the head and relays the answer (not with --users-file or
    /// TLS); `off`, it answers NOT_HEAD naming the head.
    #[arg(long, default_value = "on", value_parser = parse_on_off,
          action = clap::ArgAction::Set)]
    forward_writes: bool,
    /// Durability: keep a write-ahead log and snapshots in DIR, and recover
    /// the table from it at start (spec/STORAGE.md). Without it the table
    /// lives in memory only.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// When a logged write is on disk: `always` (fdatasync before the write
    /// is acknowledged; writes arriving together share one), `everysec`
    /// (at most a second later), `no` (when the kernel likes).
    #[arg(long, default_value = "always", requires = "data_dir")]
    fsync: chaintable::storage::FsyncPolicy,
    /// Limit: a log segment is closed at this many bytes.
    #[arg(long, default_value_t = chaintable::storage::SEGMENT_BYTES_MAX_DEFAULT,
          value_parser = clap::value_parser!(u64).range(4096..=(1u64 << 32)))]
    segment_bytes_max: u64,
    /// A snapshot is written after this many writes (and the log before it
    /// deleted).
    #[arg(long, default_value_t = chaintable::storage::SNAPSHOT_EVERY_WRITES_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_every_writes: u64,
    /// Also write a snapshot this many seconds after the last one, if any
    /// write came since.
    #[arg(long, value_name = "SECONDS", requires = "data_dir",
          value_parser = clap::value_parser!(u64).range(1..=86_400 * 365))]
    snapshot_every: Option<u64>,
    /// Start from this backup (`table-client ADDR snapshot save FILE`). With
    /// --data-dir, the directory must hold no history: the backup becomes
    /// its first snapshot.
    #[arg(long, value_name = "FILE")]
    restore: Option<std::path::PathBuf>,
    /// TEST ONLY: answer reads on any member. Breaks linearizability; exists
    /// so the fault-injection suite can show its checker catches that.
    #[cfg(feature = "testing")]
    #[arg(long, hide = true)]
    unsafe_reads_anywhere: bool,
    /// TEST ONLY: delay each write in the worker by this many ms.
    #[cfg(feature = "testing")]
    #[arg(long, hide = true, default_value_t = 0)]
    test_worker_delay_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (secret, tls, users) = match load_files(&args) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("table-server: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = config(args, secret, tls, users);
    let server = match Server::bind(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("table-server: {e}");
            return ExitCode::from(1);
        }
    };
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("table-server: {e}");
            ExitCode::from(1)
        }
    }
}

type Loaded = (
    Option<chaintable::auth::Secret>,
    Option<std::sync::Arc<rustls::ServerConfig>>,
    Option<std::sync::Arc<chaintable::auth::Users>>,
);

/// Reads the files the flags name: the cluster secret, the TLS
/// certificate and key, the users. An error names the file.
fn load_files(args: &Args) -> Result<Loaded, String> {
    let secret = match (&args.cluster_secret_file, args.insecure_peers) {
        (Some(path), _) => {
            Some(chaintable::auth::Secret::from_file(path).map_err(|e| e.to_string())?)
        }
        (None, true) => Some(chaintable::auth::Secret::insecure()),
        (None, false) => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(chaintable::tls::server_config(cert, key).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let users = match &args.users_file {
        Some(path) => Some(std::sync::Arc::new(
            chaintable::auth::Users::from_file(path).map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    Ok((secret, tls, users))
}

/// The server configuration the flags describe.
fn config(
    args: Args,
    secret: Option<chaintable::auth::Secret>,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    users: Option<std::sync::Arc<chaintable::auth::Users>>,
) -> ServerConfig {
    ServerConfig {
        listen: format!("{}:{}", args.bind, args.port),
        advertise: args
            .advertise
            .unwrap_or_else(|| format!("127.0.0.1:{}", args.port)),
        n_lists: args.n_lists as usize,
        payload_bytes_max: usize::try_from(args.frame_bytes_max).unwrap_or(usize::MAX),
        connections_max: args.max_connections,
        output_bytes_max: args.output_bytes_max,
        buffer_budget_bytes: args.buffer_budget_bytes,
        handshake_timeout: Duration::from_millis(args.handshake_timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        send_timeout: Duration::from_millis(args.send_timeout_ms),
        secret,
        users,
        tls,
        inflight_max: args.inflight_max.max(1),
        queue_depth_max: args.queue_depth.max(1),
        sent_max: args.sent_max as usize,
        sent_bytes_max: args.sent_bytes_max.max(1),
        queue_bytes_max: args.queue_bytes_max.max(1),
        watch_history_bytes: args.watch_history_bytes,
        zookeeper: args.zookeeper,
        chain_root: args.chain_root,
        cluster_root: args.cluster_root,
        session_timeout: Duration::from_millis(args.session_timeout_ms),
        peer_timeout: Duration::from_millis(args.peer_timeout_ms),
        snapshot_chunk_entries: args.snapshot_chunk_entries.max(1),
        craq: args.craq,
        forward_writes: args.forward_writes,
        restore: args.restore,
        storage: args.data_dir.map(|dir| StorageConfig {
            dir,
            fsync: args.fsync,
            segment_bytes_max: args.segment_bytes_max,
            snapshot_every_writes: args.snapshot_every_writes,
            snapshot_every: args.snapshot_every.map(Duration::from_secs),
        }),
        #[cfg(feature = "testing")]
        test: chaintable::server::TestSwitches {
            unsafe_reads_anywhere: args.unsafe_reads_anywhere,
            worker_delay: Duration::from_millis(args.test_worker_delay_ms),
        },
        ..ServerConfig::default()
    }
}

/// `on` or `off`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, not {s:?}")),
    }
}

/// `--watch-history-bytes`: at least [`chaintable::watch::WATCH_HISTORY_BYTES_MIN`].
fn parse_watch_history_bytes(s: &str) -> Result<usize, String> {
    let min = chaintable::watch::WATCH_HISTORY_BYTES_MIN;
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n < min {
        return Err(format!("at least {min} (one largest batch must fit)"));
    }
    Ok(n)
}
