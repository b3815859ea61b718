//! Durability (`--data-dir`): a write-ahead log of every applied write and
//! snapshots of the table, so that a server restarted on the same
//! directory comes back with what it acknowledged. The formats are in
//! spec/STORAGE.md.
//!
//! | file          | concern                                                |
//! |---------------|--------------------------------------------------------|
//! | `record.rs`   | length + CRC framing, streaming and bounded reads      |
//! | `wal.rs`      | log segments, group commit, the fsync policy           |
//! | `snapshot.rs` | writing snapshots in the background, reading them      |
//! | `recover.rs`  | startup: newest snapshot, then the log after it        |
//! | `store.rs`    | what the worker holds: the log, snapshot scheduling    |
//!
//! Writes are logged *before* they are applied to the table, and the
//! worker reports a write applied (which is what lets the replica answer
//! the client or acknowledge upstream) only after the log holds it under
//! the policy. So nothing is acknowledged that the log does not hold, and
//! everything in the table is in the log.

mod apply;
mod record;
mod recover;
mod snapshot;
mod store;
mod wal;

pub use record::{BadRecord, RECORD_PAYLOAD_BYTES_MAX};
pub use recover::{recover, Recovered};
pub use snapshot::parts as backup_parts;
pub use snapshot::{
    read_snapshot, write_snapshot, SnapshotFile, SnapshotJob, SnapshotWritten,
    SNAPSHOT_RECORD_BYTES,
};
pub use store::{Health, Opened, Store, STORAGE_RETRY_INTERVAL};
pub use wal::{Wal, EVERYSEC_INTERVAL, UNSYNCED_BYTES_MAX};

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// First bytes of a log segment.
pub const WAL_MAGIC: &[u8; 8] = b"CTWAL\0\0\x01";
/// First bytes of a snapshot file.
pub const SNAP_MAGIC: &[u8; 8] = b"CTSNP\0\0\x01";

/// Record kinds (the first payload byte).
pub const KIND_UPDATE: u8 = 1;
pub const KIND_SNAP_HEADER: u8 = 2;
pub const KIND_SNAP_ENTRIES: u8 = 3;
pub const KIND_SNAP_END: u8 = 4;

/// Default size at which a log segment is closed and the next begun.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default number of writes between two snapshots.
pub const SNAPSHOT_EVERY_WRITES_DEFAULT: u64 = 1_000_000;

/// When a write is on disk (Redis's `appendfsync` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// `fdatasync` before a write is reported applied: an acknowledged
    /// write survives a power cut. Writes that arrive together share one.
    #[default]
    Always,
    /// `fdatasync` at most a second after a write: a power cut loses at
    /// most the last second; a process crash loses nothing acknowledged.
    EverySec,
    /// Never `fdatasync` the log (the kernel writes it back when it
    /// likes): a process crash loses nothing acknowledged, a power cut may
    /// lose anything not yet written back.
    No,
}

impl FsyncPolicy {
    /// The flag's spelling.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::No => "no",
        }
    }
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::EverySec),
            "no" => Ok(FsyncPolicy::No),
            _ => Err(format!("`{s}`: expected always, everysec or no")),
        }
    }
}

/// Where and how a server keeps its data.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes_max: u64,
    /// A snapshot starts after this many writes since the last one.
    pub snapshot_every_writes: u64,
    /// And also this long after the last one, if any write came since.
    pub snapshot_every: Option<Duration>,
}

impl StorageConfig {
    /// The defaults for `dir`.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> StorageConfig {
        StorageConfig {
            dir: dir.into(),
            fsync: FsyncPolicy::default(),
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            snapshot_every_writes: SNAPSHOT_EVERY_WRITES_DEFAULT,
            snapshot_every: None,
        }
    }
}

/// Why the data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Damage recovery must not paper over: a bad record before the end
    /// of the log, a broken snapshot, or a hole in the history.
    #[error("{path} at offset {offset}: {why}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("{path}: the data directory is in use by another process")]
    Locked { path: PathBuf },
}

impl StorageError {
    pub(crate) fn io(path: &Path, source: io::Error) -> StorageError {
        StorageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, offset: u64, why: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: path.to_path_buf(),
            offset,
            why: why.into(),
        }
    }
}

/// The segment whose records follow sequence number `base`.
#[must_use]
pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.wal"))
}

/// The snapshot of the table as of sequence number `seq`.
#[must_use]
pub fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.snap"))
}

/// Makes a directory's entries (files created, renamed, removed) durable.
///
/// # Errors
///
/// [`StorageError::Io`] when the directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

/// The data directory's files, by kind, each sorted by its number.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub segments: Vec<(u64, PathBuf)>,
    pub snapshots: Vec<(u64, PathBuf)>,
    /// Snapshots being written, or whose writing a crash interrupted
    /// (never renamed, so never used): recovery removes them.
    pub unfinished: Vec<PathBuf>,
}

pub(crate) fn list_dir(dir: &Path) -> Result<Listing, StorageError> {
    let mut listing = Listing::default();
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| StorageError::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let numbered = |suffix: &str| {
            name.strip_suffix(suffix)
                .filter(|n| n.len() == 20)
                .and_then(|n| n.parse::<u64>().ok())
        };
        if let Some(base) = numbered(".wal") {
            listing.segments.push((base, path));
        } else if let Some(seq) = numbered(".snap") {
            listing.snapshots.push((seq, path));
        } else if name.ends_with(".snap.tmp") {
            listing.unfinished.push(path);
        }
    }
    listing.segments.sort();
    listing.snapshots.sort();
    Ok(listing)
}

/// Holds the data directory for this process (an exclusive `flock` on
/// its LOCK file): two servers appending to one log would corrupt it.
#[derive(Debug)]
pub struct DirLock {
    _lock: nix::fcntl::Flock<File>,
}

impl DirLock {
    /// Creates `dir` if needed and locks it.
    ///
    /// # Errors
    ///
    /// [`StorageError::Locked`] when another process holds it,
    /// [`StorageError::Io`] when it cannot be created or opened.
    pub fn acquire(dir: &Path) -> Result<DirLock, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let path = dir.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| StorageError::Locked { path })?;
        Ok(DirLock { _lock: lock })
    }
}

/// `table-server --restore FILE`: a backup (`table-client snapshot save`)
/// becomes the server's starting state. With a data directory, which must
/// hold no history, the backup is rewritten there as an ordinary snapshot
/// (so the log continues from it); without one, it is loaded into `table`.
/// Returns the last write the restored table reflects and the gaps before
/// it.
///
/// # Errors
///
/// [`StorageError`] when the backup does not read back whole, or the data
/// directory already holds history or cannot be written.
pub fn restore(
    file: &Path,
    storage: Option<&StorageConfig>,
    table: &crate::table::Table,
) -> Result<(u64, Vec<crate::wire::SeqGap>), StorageError> {
    let Some(cfg) = storage else {
        let snap = read_snapshot(file, table)?;
        return Ok((snap.applied_through, snap.gaps));
    };
    let _lock = DirLock::acquire(&cfg.dir)?;
    let listing = list_dir(&cfg.dir)?;
    if !listing.segments.is_empty() || !listing.snapshots.is_empty() {
        let why =
            "--restore needs a data directory without history (this one has a log or snapshots)";
        return Err(StorageError::corrupt(&cfg.dir, 0, why));
    }
    let scratch = crate::table::Table::new(table.n_lists());
    let snap = read_snapshot(file, &scratch)?;
    let seq = snap.applied_through;
    let written = std::sync::atomic::AtomicU64::new(seq);
    write_snapshot(&SnapshotJob {
        table: &scratch,
        dir: &cfg.dir,
        seq,
        gaps: snap.gaps.clone(),
        written_seq: &written,
    })?;
    Ok((seq, snap.gaps))
}
