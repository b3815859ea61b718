//! The write-ahead log: segment files of UPDATE records, appended by the
//! worker in batches (group commit: one `write` and at most one
//! `fdatasync` per batch), rolled at a size limit.
//!
//! Failure handling follows what PostgreSQL learned ("fsyncgate"): after a
//! failed `write` or `fdatasync` the kernel may have dropped the pages, so
//! the log never trusts what it wrote since its last good sync. It cuts
//! the file back to that point and writes those bytes again, from its own
//! copy, until a sync succeeds.

use super::record::put_record;
use super::{segment_path, FsyncPolicy, StorageError, KIND_UPDATE, WAL_MAGIC};
use crate::serialize::Codec;
use crate::wire::Update;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes written since the last sync under `everysec` before a sync
/// is forced early: it bounds the copy the log keeps for a rewrite.
pub const UNSYNCED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// How often `everysec` syncs.
pub const EVERYSEC_INTERVAL: Duration = Duration::from_secs(1);

/// The open log (its newest segment).
pub struct Wal {
    dir: PathBuf,
    policy: FsyncPolicy,
    segment_bytes_max: u64,
    file: File,
    path: PathBuf,
    /// Records in this segment have sequence numbers above this.
    base: u64,
    /// Bytes of this segment known good on disk (or, under `no`, written).
    synced_len: u64,
    /// Bytes appended since `synced_len`: the batch being committed, and
    /// under `everysec` everything not yet synced.
    pending: Vec<u8>,
    /// How much of `pending` is in the file right now.
    pending_written: usize,
    /// The highest sequence number appended (in `pending` or on disk).
    last_seq: u64,
    /// The highest sequence number written to the file: everything in the
    /// table is at or below it, since writes are logged before they apply.
    written_seq: Arc<AtomicU64>,
    last_sync: Instant,
}

impl Wal {
    /// Continues the segment at `path` (whose first `good_len` bytes are
    /// good records ending at `last_seq`), or starts a new one when `path`
    /// is `None`.
    ///
    /// # Errors
    ///
    /// [`StorageError::Io`] when the segment cannot be opened or cut back.
    pub fn open(
        dir: &Path,
        policy: FsyncPolicy,
        segment_bytes_max: u64,
        tail: Option<(PathBuf, u64, u64)>,
        last_seq: u64,
    ) -> Result<Wal, StorageError> {
        let (file, path, base, synced_len) = match tail {
            Some((path, base, good_len)) => {
                let io = |e| StorageError::io(&path, e);
                let file = OpenOptions::new().write(true).open(&path).map_err(io)?;
                file.set_len(good_len).map_err(io)?;
                file.sync_all().map_err(io)?;
                (file, path, base, good_len)
            }
            None => {
                let (file, path) = create_segment(dir, last_seq)?;
                (file, path, last_seq, WAL_MAGIC.len() as u64)
            }
        };
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            policy,
            segment_bytes_max,
            file,
            path,
            base,
            synced_len,
            pending: Vec::new(),
            pending_written: 0,
            last_seq,
            written_seq: Arc::new(AtomicU64::new(last_seq)),
            last_sync: Instant::now(),
        };
        wal.file
            .seek(SeekFrom::Start(synced_len))
            .map_err(|e| StorageError::io(&wal.path, e))?;
        Ok(wal)
    }

    /// Shared view of the highest sequence number written to the file.
    #[must_use]
    pub fn written_seq(&self) -> Arc<AtomicU64> {
        self.written_seq.clone()
    }

    /// The highest sequence number appended.
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Records in the current segment are above this.
    #[must_use]
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Queues one update for the next [`Wal::commit`].
    pub fn append(&mut self, update: &Update) {
        put_record(&mut self.pending, KIND_UPDATE, |out| update.encode(out));
        self.last_seq = update.seq;
    }

    /// Writes what was appended and syncs it when the policy says so; on
    /// success everything appended is as durable as the policy promises.
    ///
    /// # Errors
    ///
    /// The `write` or `fdatasync` error. The file is cut back to its last
    /// good length and the batch kept: calling `commit` again retries it.
    pub fn commit(&mut self, now: Instant) -> io::Result<()> {
        let result = self.try_commit(now);
        if result.is_err() {
            self.cut_back();
        }
        result
    }

    fn try_commit(&mut self, now: Instant) -> io::Result<()> {
        self.file.write_all(&self.pending[self.pending_written..])?;
        self.pending_written = self.pending.len();
        self.written_seq.store(self.last_seq, Ordering::Release);
        let sync_now = match self.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::EverySec => {
                now.duration_since(self.last_sync) >= EVERYSEC_INTERVAL
                    || self.pending.len() >= UNSYNCED_BYTES_MAX
            }
            FsyncPolicy::No => false,
        };
        if sync_now {
            self.sync(now)?;
        } else if self.policy == FsyncPolicy::No {
            self.mark_synced();
        }
        if self.synced_len + self.pending.len() as u64 >= self.segment_bytes_max {
            self.roll()?;
        }
        Ok(())
    }

    /// `fdatasync` now, if anything is unsynced.
    ///
    /// # Errors
    ///
    /// The `fdatasync` error (the caller cuts back through `commit`).
    fn sync(&mut self, now: Instant) -> io::Result<()> {
        self.last_sync = now;
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file.sync_data()?;
        self.mark_synced();
        Ok(())
    }

    fn mark_synced(&mut self) {
        self.synced_len += self.pending.len() as u64;
        self.pending.clear();
        self.pending_written = 0;
    }

    /// After a failed write or sync: drop whatever reached the file since
    /// the last good sync, so a retry writes it again from `pending`.
    fn cut_back(&mut self) {
        self.pending_written = 0;
        let _ = self.file.set_len(self.synced_len);
        let _ = self.file.seek(SeekFrom::Start(self.synced_len));
    }

    /// When the next `everysec` sync is due (none if nothing is unsynced).
    #[must_use]
    pub fn sync_due(&self) -> Option<Instant> {
        (self.policy == FsyncPolicy::EverySec && !self.pending.is_empty())
            .then(|| self.last_sync + EVERYSEC_INTERVAL)
    }

    /// Syncs what `everysec` has waiting once its second is up (and at
    /// shutdown with `force`).
    ///
    /// # Errors
    ///
    /// The `fdatasync` error; the file is cut back and the bytes kept.
    pub fn sync_if_due(&mut self, now: Instant, force: bool) -> io::Result<()> {
        let due = self.sync_due().is_some_and(|at| force || now >= at);
        if !due {
            return Ok(());
        }
        let result = self
            .file
            .write_all(&self.pending[self.pending_written..])
            .and_then(|()| {
                self.pending_written = self.pending.len();
                self.sync(now)
            });
        if result.is_err() {
            self.cut_back();
        }
        result
    }

    /// Closes this segment (synced, whatever the policy, so that a
    /// snapshot never depends on unsynced log) and starts the next, whose
    /// records are above the last sequence number appended.
    ///
    /// # Errors
    ///
    /// The sync or create error; the current segment stays open.
    pub fn roll(&mut self) -> io::Result<()> {
        self.file.write_all(&self.pending[self.pending_written..])?;
        self.pending_written = self.pending.len();
        self.file.sync_data()?;
        self.mark_synced();
        let (file, path) = create_segment(&self.dir, self.last_seq).map_err(io::Error::other)?;
        self.file = file;
        self.path = path;
        self.base = self.last_seq;
        self.synced_len = WAL_MAGIC.len() as u64;
        Ok(())
    }
}

/// Creates the segment whose records follow `base`: its magic, synced,
/// and its directory entry synced.
fn create_segment(dir: &Path, base: u64) -> Result<(File, PathBuf), StorageError> {
    let path = segment_path(dir, base);
    let io = |e| StorageError::io(&path, e);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io)?;
    file.write_all(WAL_MAGIC).map_err(io)?;
    file.sync_all().map_err(io)?;
    super::sync_dir(dir)?;
    Ok((file, path))
}
