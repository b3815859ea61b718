//! What the worker holds when the server has a data directory: the log,
//! the gaps in its history, and the background snapshot it schedules.

use super::recover::{recover, Recovered};
use super::snapshot::{write_snapshot, SnapshotJob, SnapshotWritten};
use super::wal::Wal;
use super::{DirLock, StorageConfig, StorageError};
use crate::table::Table;
use crate::wire::{SeqGap, Update};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the worker waits before retrying a log write that failed
/// (ENOSPC, EIO). Writes are refused meanwhile (`STORAGE_UNAVAILABLE`).
pub const STORAGE_RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// How often the worker looks whether a running snapshot has finished,
/// and whether one was asked for (SIGUSR1).
const SNAPSHOT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The storage's state as the network thread and STATS see it.
#[derive(Debug, Default)]
pub struct Health {
    failing: AtomicBool,
    why: Mutex<String>,
    /// Snapshots completed since start.
    pub snapshots: AtomicU64,
    /// Sequence number of the newest snapshot on disk.
    pub snapshot_seq: AtomicU64,
    /// The longest a write waited on a snapshot's copy, in microseconds.
    pub snapshot_pause_us_max: AtomicU64,
    /// Sequence number of the newest write in the log.
    pub logged_seq: AtomicU64,
}

impl Health {
    /// Whether the log cannot be written now: writes must be refused.
    #[must_use]
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Why, while failing.
    #[must_use]
    pub fn why(&self) -> String {
        self.why.lock().map(|w| w.clone()).unwrap_or_default()
    }

    fn set_failing(&self, why: String) {
        if let Ok(mut w) = self.why.lock() {
            *w = why;
        }
        self.failing.store(true, Ordering::Release);
    }
}

/// The worker's storage: log, gaps, snapshot scheduling.
pub struct Store {
    cfg: StorageConfig,
    wal: Wal,
    table: Arc<Table>,
    gaps: VecDeque<SeqGap>,
    health: Arc<Health>,
    writes_since_snapshot: u64,
    last_snapshot_at: Instant,
    snapshot: Option<JoinHandle<Result<SnapshotWritten, StorageError>>>,
    /// Set (by SIGUSR1) to ask for a snapshot now.
    requested: Option<Arc<AtomicBool>>,
    _lock: DirLock,
}

/// What a server learns from its data directory at startup.
pub struct Opened {
    pub store: Store,
    pub last_seq: u64,
    pub gaps: Vec<SeqGap>,
    /// Whether the directory held any history before (a restart): the
    /// server then skips ids it may have handed out and never logged.
    pub restarted: bool,
    pub health: Arc<Health>,
}

impl Store {
    /// Locks the data directory, recovers it into `table` and opens the
    /// log for appending.
    ///
    /// # Errors
    ///
    /// [`StorageError`] from the lock or from recovery.
    pub fn open(cfg: StorageConfig, table: &Arc<Table>) -> Result<Opened, StorageError> {
        let lock = DirLock::acquire(&cfg.dir)?;
        let r: Recovered = recover(&cfg, table)?;
        let restarted = r.had_history;
        let log_secs = (r.took - r.snapshot_took).as_secs_f64().max(1e-6);
        #[allow(clippy::cast_precision_loss)]
        let mb = r.replayed_bytes as f64 / 1e6;
        tracing::info!(
            dir = %cfg.dir.display(),
            snapshot_seq = r.snapshot.as_ref().map_or(0, |s| s.seq),
            snapshot_entries = r.snapshot.as_ref().map_or(0, |s| s.entries),
            snapshot_ms = r.snapshot_took.as_millis(),
            replayed_records = r.replayed_records,
            replayed_mb = format!("{mb:.1}"),
            replay_mb_per_s = format!("{:.0}", mb / log_secs),
            last_seq = r.last_seq,
            took_ms = r.took.as_millis(),
            "recovered the table from the data directory"
        );
        let health = Arc::new(Health::default());
        health.logged_seq.store(r.last_seq, Ordering::Relaxed);
        if let Some(s) = &r.snapshot {
            health.snapshot_seq.store(s.seq, Ordering::Relaxed);
        }
        let store = Store {
            cfg,
            wal: r.wal,
            table: table.clone(),
            gaps: r.gaps.iter().copied().collect(),
            health: health.clone(),
            writes_since_snapshot: r.replayed_records,
            last_snapshot_at: Instant::now(),
            snapshot: None,
            requested: None,
            _lock: lock,
        };
        Ok(Opened {
            store,
            last_seq: r.last_seq,
            gaps: r.gaps,
            restarted,
            health,
        })
    }

    /// Logs `updates` (one write, at most one sync) before they are
    /// applied. While the disk refuses, retries every
    /// [`STORAGE_RETRY_INTERVAL`] with writes refused meanwhile; gives up
    /// (returns false) only when `stop` says the server is shutting down,
    /// and then nothing of the batch is reported applied.
    pub fn log(&mut self, updates: &[Update], stop: impl Fn() -> bool) -> bool {
        for u in updates {
            self.wal.append(u);
            SeqGap::record(&mut self.gaps, u.prev_seq, u.skipped_until());
        }
        loop {
            match self.wal.commit(Instant::now()) {
                Ok(()) => break,
                Err(e) => {
                    if !self.health.failing() {
                        tracing::error!(error = %e, "cannot write the log: refusing writes until it can");
                    }
                    self.health.set_failing(e.to_string());
                    if stop() {
                        return false;
                    }
                    std::thread::sleep(STORAGE_RETRY_INTERVAL);
                }
            }
        }
        self.recovered();
        self.health
            .logged_seq
            .store(self.wal.last_seq(), Ordering::Relaxed);
        self.writes_since_snapshot += updates.len() as u64;
        true
    }

    fn recovered(&self) {
        if self.health.failing() {
            tracing::info!("the log is writable again: accepting writes");
            self.health.failing.store(false, Ordering::Release);
        }
    }

    /// When the worker must wake even without work: an `everysec` sync
    /// or a periodic snapshot.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        let periodic = self
            .cfg
            .snapshot_every
            .filter(|_| self.writes_since_snapshot > 0)
            .map(|every| self.last_snapshot_at + every);
        // A snapshot in progress is looked at every so often, so that it
        // is reported (and the next can start) even if no write comes.
        let reap = (self.snapshot.is_some() || self.requested.is_some())
            .then(|| Instant::now() + SNAPSHOT_POLL_INTERVAL);
        [self.wal.sync_due(), periodic, reap]
            .into_iter()
            .flatten()
            .min()
    }

    /// Time-driven work, and a snapshot when one is due. Called by the
    /// worker between batches, when every logged write is applied.
    pub fn tick(&mut self, now: Instant) {
        match self.wal.sync_if_due(now, false) {
            Err(e) => {
                if !self.health.failing() {
                    tracing::error!(error = %e, "cannot sync the log: refusing writes until it can");
                }
                self.health.set_failing(e.to_string());
            }
            // Writes are refused while failing, so no batch would come to
            // clear it: a good background sync must.
            Ok(()) if self.wal.sync_due().is_none() => self.recovered(),
            Ok(()) => {}
        }
        self.reap_snapshot();
        let asked = self
            .requested
            .as_ref()
            .is_some_and(|r| self.snapshot.is_none() && r.swap(false, Ordering::AcqRel));
        if asked {
            tracing::info!("snapshot asked for (SIGUSR1)");
            self.start_snapshot(now);
            return;
        }
        let by_count = self.writes_since_snapshot >= self.cfg.snapshot_every_writes;
        let by_time = self
            .cfg
            .snapshot_every
            .is_some_and(|every| now >= self.last_snapshot_at + every)
            && self.writes_since_snapshot > 0;
        if (by_count || by_time) && self.snapshot.is_none() {
            self.start_snapshot(now);
        }
    }

    /// Begins a snapshot at the last write applied: closes the segment
    /// (so the log before the snapshot is whole files) and copies the
    /// table on a thread of its own.
    fn start_snapshot(&mut self, now: Instant) {
        self.last_snapshot_at = now;
        if let Err(e) = self.wal.roll() {
            tracing::error!(error = %e, "cannot close the log segment for a snapshot; will retry");
            return;
        }
        self.writes_since_snapshot = 0;
        let seq = self.wal.last_seq();
        let table = self.table.clone();
        let dir = self.cfg.dir.clone();
        let gaps: Vec<SeqGap> = self.gaps.iter().copied().collect();
        let written = self.wal.written_seq();
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                write_snapshot(&SnapshotJob {
                    table: &table,
                    dir: &dir,
                    seq,
                    gaps,
                    written_seq: &written,
                })
            });
        match spawned {
            Ok(h) => self.snapshot = Some(h),
            Err(e) => tracing::error!(error = %e, "cannot start the snapshot thread"),
        }
    }

    /// Collects a finished snapshot and reports it.
    fn reap_snapshot(&mut self) {
        if !self.snapshot.as_ref().is_some_and(JoinHandle::is_finished) {
            return;
        }
        let Some(handle) = self.snapshot.take() else {
            return;
        };
        match handle.join() {
            Ok(Ok(s)) => {
                let pause_us = u64::try_from(s.longest_pause.as_micros()).unwrap_or(u64::MAX);
                self.health.snapshots.fetch_add(1, Ordering::Relaxed);
                self.health.snapshot_seq.store(s.seq, Ordering::Relaxed);
                self.health
                    .snapshot_pause_us_max
                    .fetch_max(pause_us, Ordering::Relaxed);
                tracing::info!(
                    seq = s.seq,
                    end_seq = s.end_seq,
                    entries = s.entries,
                    bytes = s.bytes,
                    longest_pause_us = pause_us,
                    took_ms = s.took.as_millis(),
                    path = %s.path.display(),
                    "snapshot written; the log before it is deleted"
                );
            }
            Ok(Err(e)) => tracing::error!(error = %e, "snapshot failed; the log is kept"),
            Err(_) => tracing::error!("the snapshot thread panicked; the log is kept"),
        }
    }

    /// At shutdown: syncs what `everysec` still holds and waits for a
    /// snapshot in progress.
    pub fn close(&mut self) {
        if let Err(e) = self.wal.sync_if_due(Instant::now(), true) {
            tracing::error!(error = %e, "cannot sync the log at shutdown");
        }
        if let Some(h) = self.snapshot.take() {
            let _ = h.join();
        }
        self.snapshot = None;
    }

    /// Replaces everything the directory holds by the table as it is now,
    /// at `seq` (a chain member installed a snapshot from its
    /// predecessor): the old log and snapshots are deleted first, then the
    /// table is written as a snapshot and a new log starts after it. A
    /// crash in between leaves an empty directory (a member with nothing),
    /// never the old log continued by the new history.
    ///
    /// # Errors
    ///
    /// [`StorageError`] when a file cannot be deleted or written.
    pub fn replace(&mut self, seq: u64, gaps: Vec<SeqGap>) -> Result<(), StorageError> {
        if let Some(h) = self.snapshot.take() {
            let _ = h.join();
        }
        let dir = self.cfg.dir.clone();
        let listing = super::list_dir(&dir)?;
        let old = listing.segments.iter().chain(&listing.snapshots);
        for path in old.map(|(_, p)| p).chain(&listing.unfinished) {
            std::fs::remove_file(path).map_err(|e| StorageError::io(path, e))?;
        }
        super::sync_dir(&dir)?;
        let written = AtomicU64::new(seq);
        write_snapshot(&SnapshotJob {
            table: &self.table,
            dir: &dir,
            seq,
            gaps: gaps.clone(),
            written_seq: &written,
        })?;
        self.wal = Wal::open(&dir, self.cfg.fsync, self.cfg.segment_bytes_max, None, seq)?;
        super::sync_dir(&dir)?;
        self.gaps = gaps.into_iter().collect();
        self.writes_since_snapshot = 0;
        self.health.logged_seq.store(seq, Ordering::Relaxed);
        self.health.snapshot_seq.store(seq, Ordering::Relaxed);
        Ok(())
    }

    /// Takes a snapshot whenever `flag` is set (the server sets it on
    /// SIGUSR1), as soon as no other is running.
    pub fn snapshot_on(&mut self, flag: Arc<AtomicBool>) {
        self.requested = Some(flag);
    }
}
