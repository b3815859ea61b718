//! Snapshots: the table written to one file in the background, so the
//! log before it can be deleted and recovery replays only what follows.
//!
//! A snapshot is *fuzzy*, as ZooKeeper's are: it is taken while writes
//! continue, one partition at a time (each under its lock for the time it
//! takes to encode it, which is the longest any write waits), so it holds
//! every key as of some moment between `seq`, the last write applied when
//! it began, and `end_seq`, the last write logged when it ended. That is
//! enough because every log record sets a key absolutely (a PUT writes
//! value and version, a DEL removes): replaying the log after `seq` over
//! the snapshot brings every key to its latest state, whichever moment it
//! was copied at. Recovery checks the log reaches `end_seq`.

use super::record::{begin_record, end_record, RecordReader};
use super::{
    list_dir, snapshot_path, sync_dir, StorageError, KIND_SNAP_END, KIND_SNAP_ENTRIES,
    KIND_SNAP_HEADER, KIND_UPDATE, SNAP_MAGIC,
};
use crate::serialize::{decode_list, encode_data, Codec, Entry, Reader};
use crate::table::Table;
use crate::wire::{SeqGap, Update, SNAPSHOT_GAPS_MAX};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A record of entries is closed once its payload passes this size.
pub const SNAPSHOT_RECORD_BYTES: usize = 1024 * 1024;

/// A snapshot to write: the table as of `seq`, and the gaps in the
/// history up to it (for VERIFY after a restart).
pub struct SnapshotJob<'a> {
    pub table: &'a Table,
    pub dir: &'a Path,
    pub seq: u64,
    pub gaps: Vec<SeqGap>,
    /// The log's highest sequence number written (see `Wal::written_seq`).
    pub written_seq: &'a AtomicU64,
}

/// What writing a snapshot did.
#[derive(Debug, Clone)]
pub struct SnapshotWritten {
    pub seq: u64,
    pub end_seq: u64,
    pub entries: u64,
    pub bytes: u64,
    /// The longest time one partition was locked for copying.
    pub longest_pause: Duration,
    pub took: Duration,
    pub path: PathBuf,
}

/// Writes a snapshot as `<seq>.snap` (through a `.tmp` file renamed only
/// once complete and synced), then deletes the log segments and older
/// snapshots it replaces.
///
/// # Errors
///
/// [`StorageError::Io`] when a file cannot be written, synced or renamed;
/// the data directory is left as it was (but for a stray `.tmp`).
pub fn write_snapshot(job: &SnapshotJob<'_>) -> Result<SnapshotWritten, StorageError> {
    let started = Instant::now();
    let path = snapshot_path(job.dir, job.seq);
    let tmp = path.with_extension("snap.tmp");
    let io = |e| StorageError::io(&tmp, e);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io)?;
    let mut out = Vec::new();
    parts::header(&mut out, job.seq, &job.gaps);
    let (mut entries, mut digest, mut bytes) = (0u64, 0u64, 0u64);
    let mut longest_pause = Duration::ZERO;
    for i in 0..job.table.partitions() {
        let t0 = Instant::now();
        let (n, d) = encode_partition(job.table, i, &mut out);
        longest_pause = longest_pause.max(t0.elapsed());
        entries += n;
        digest = digest.wrapping_add(d);
        file.write_all(&out).map_err(io)?;
        bytes += out.len() as u64;
        out.clear();
    }
    let end_seq = job.written_seq.load(Ordering::Acquire);
    sync_log_since(job.dir, job.seq)?;
    parts::end(&mut out, entries, digest, end_seq);
    file.write_all(&out).map_err(io)?;
    bytes += out.len() as u64;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| StorageError::io(&path, e))?;
    sync_dir(job.dir)?;
    remove_replaced(job.dir, job.seq)?;
    Ok(SnapshotWritten {
        seq: job.seq,
        end_seq,
        entries,
        bytes,
        longest_pause,
        took: started.elapsed(),
        path,
    })
}

/// The pieces of a snapshot file, for writers that assemble one (the
/// snapshot thread, and BACKUP, which streams one to a client).
pub mod parts {
    use super::super::record::put_record;
    use super::super::{KIND_SNAP_END, KIND_SNAP_HEADER, KIND_UPDATE, SNAP_MAGIC};
    use crate::serialize::{encode_list, Codec};
    use crate::table::Table;
    use crate::wire::{SeqGap, Update};

    /// The magic and the HEADER record: the copy starts at `seq`.
    pub fn header(out: &mut Vec<u8>, seq: u64, gaps: &[SeqGap]) {
        out.extend_from_slice(SNAP_MAGIC);
        put_record(out, KIND_SNAP_HEADER, |o| {
            o.extend_from_slice(&seq.to_be_bytes());
            encode_list(o, gaps);
        });
    }

    /// Partition `i` as ENTRIES records (see [`super::encode_partition`]).
    pub fn partition(table: &Table, i: usize, out: &mut Vec<u8>) -> (u64, u64) {
        super::encode_partition(table, i, out)
    }

    /// A write applied after the copy began (a self-contained snapshot).
    pub fn update_record(out: &mut Vec<u8>, update: &Update) {
        put_record(out, KIND_UPDATE, |o| update.encode(o));
    }

    /// The END record.
    pub fn end(out: &mut Vec<u8>, entries: u64, digest: u64, end_seq: u64) {
        put_record(out, KIND_SNAP_END, |o| {
            o.extend_from_slice(&entries.to_be_bytes());
            o.extend_from_slice(&digest.to_be_bytes());
            o.extend_from_slice(&end_seq.to_be_bytes());
        });
    }
}

/// Encodes partition `i` as records of entries onto `out`, under the
/// partition's lock; returns the entries and their digest.
fn encode_partition(table: &Table, i: usize, out: &mut Vec<u8>) -> (u64, u64) {
    let mut total = 0u64;
    let mut open: Option<(usize, u32)> = None;
    let digest = table.visit_partition(i, |key, v| {
        let (start, count) = open.get_or_insert_with(|| {
            let start = begin_record(out, KIND_SNAP_ENTRIES);
            out.extend_from_slice(&[0; 4]); // count, filled in below
            (start, 0)
        });
        key.encode(out);
        out.extend_from_slice(&v.version.to_be_bytes());
        encode_data(out, &v.value);
        *count += 1;
        total += 1;
        if out.len() - *start >= SNAPSHOT_RECORD_BYTES {
            close_entries(out, *start, *count);
            open = None;
        }
    });
    if let Some((start, count)) = open {
        close_entries(out, start, count);
    }
    (total, digest)
}

fn close_entries(out: &mut [u8], start: usize, count: u32) {
    let at = start + super::record::RECORD_HEADER_BYTES + 1;
    out[at..at + 4].copy_from_slice(&count.to_be_bytes());
    end_record(out, start);
}

/// Syncs the log segments written since the snapshot began (the one
/// started at `seq` and any after it), whatever the fsync policy: the
/// snapshot may hold writes up to its `end_seq`, and must never be on disk
/// without the log records that lead to them.
fn sync_log_since(dir: &Path, seq: u64) -> Result<(), StorageError> {
    for (base, path) in list_dir(dir)?.segments {
        if base >= seq {
            File::open(&path)
                .and_then(|f| f.sync_data())
                .map_err(|e| StorageError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Deletes the segments whose records are all at or below `seq` and the
/// snapshots older than `seq`.
fn remove_replaced(dir: &Path, seq: u64) -> Result<(), StorageError> {
    let listing = list_dir(dir)?;
    let segs = &listing.segments;
    for pair in segs.windows(2) {
        // Every record of pair[0] is at or below pair[1]'s base.
        if pair[1].0 <= seq {
            let _ = std::fs::remove_file(&pair[0].1);
        }
    }
    for (s, path) in &listing.snapshots {
        if *s < seq {
            let _ = std::fs::remove_file(path);
        }
    }
    sync_dir(dir)
}

/// A snapshot read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The copy began after this write.
    pub seq: u64,
    /// The log must reach at least this.
    pub end_seq: u64,
    /// Gaps in the history, newest last (the header's, then any in the
    /// file's own UPDATE records).
    pub gaps: Vec<SeqGap>,
    pub entries: u64,
    pub digest: u64,
    /// The last write the table now reflects exactly: `seq`, or the last
    /// UPDATE record of a self-contained snapshot (a backup).
    pub applied_through: u64,
}

/// Reads the snapshot at `path` into `table` (which should be empty): its
/// entries, then any UPDATE records after them, in order.
///
/// # Errors
///
/// [`StorageError::Corrupt`] naming the offset of the first record that
/// does not check out (a snapshot is renamed into place only complete, so
/// any defect is damage), or [`StorageError::Io`].
pub fn read_snapshot(path: &Path, table: &Table) -> Result<SnapshotFile, StorageError> {
    let io = |e| StorageError::io(path, e);
    let mut file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut magic = [0u8; 8];
    if len < 8 || file.read_exact(&mut magic).is_err() || &magic != SNAP_MAGIC {
        return Err(StorageError::corrupt(path, 0, "not a chaintable snapshot"));
    }
    let mut records = RecordReader::new(file, 8, len);
    let mut s = SnapshotRead::default();
    loop {
        let at = records.offset();
        let corrupt = |why: String| StorageError::corrupt(path, at, why);
        let payload = match records.next_record() {
            Ok(Some(p)) => p,
            Ok(None) => return Err(corrupt("the snapshot ends without its END record".into())),
            Err(Ok(bad)) => return Err(StorageError::corrupt(path, bad.offset, bad.why)),
            Err(Err(e)) => return Err(io(e)),
        };
        let end = s.record(payload, table).map_err(corrupt)?;
        let Some((entries, digest, end_seq)) = end else {
            continue;
        };
        if !matches!(records.next_record(), Ok(None)) {
            return Err(corrupt("bytes after the END record".into()));
        }
        if entries != s.installed || digest != s.digest {
            return Err(corrupt(format!(
                "END says {entries} entries with digest {digest:016x}; read {} with digest {:016x}",
                s.installed, s.digest
            )));
        }
        if s.has_updates && end_seq != s.last {
            let why = format!(
                "END says {end_seq}, but the UPDATE records end at {}",
                s.last
            );
            return Err(corrupt(why));
        }
        return Ok(SnapshotFile {
            seq: s.seq,
            end_seq,
            gaps: s.gaps.into_iter().collect(),
            entries,
            digest,
            applied_through: s.last,
        });
    }
}

/// What reading a snapshot has seen so far.
#[derive(Default)]
struct SnapshotRead {
    header: bool,
    seq: u64,
    gaps: std::collections::VecDeque<SeqGap>,
    installed: u64,
    /// Digest of the entries installed (before any UPDATE applies).
    digest: u64,
    has_updates: bool,
    /// The last write the table reflects exactly.
    last: u64,
}

impl SnapshotRead {
    /// One record; the END record's fields when it is the END.
    fn record(&mut self, payload: &[u8], table: &Table) -> Result<Option<(u64, u64, u64)>, String> {
        let mut r = Reader::new(&payload[1..]);
        let bad = |e: crate::serialize::DecodeError| e.to_string();
        let mut end = None;
        match (payload[0], self.header) {
            (KIND_SNAP_HEADER, false) => {
                self.seq = r.u64("snapshot seq").map_err(bad)?;
                let gaps = decode_list::<SeqGap>(&mut r, "gaps", SeqGap::ENCODED_LEN);
                let gaps = gaps.map_err(bad)?;
                if gaps.len() > SNAPSHOT_GAPS_MAX {
                    return Err(format!("{} gaps", gaps.len()));
                }
                self.gaps = gaps.into_iter().collect();
                self.last = self.seq;
                self.header = true;
            }
            (KIND_SNAP_ENTRIES, true) if !self.has_updates => {
                let list = decode_list::<Entry>(&mut r, "entries", Entry::MIN_ENCODED_LEN);
                for e in list.map_err(bad)? {
                    self.digest = self
                        .digest
                        .wrapping_add(crate::table::digest_of(&e.key, e.version, &e.value));
                    self.installed += 1;
                    table.install(e);
                }
            }
            (KIND_UPDATE, true) => {
                let u = Update::decode(&mut r).map_err(bad)?;
                if u.prev_seq != self.last || u.seq <= u.prev_seq {
                    let last = self.last;
                    return Err(format!(
                        "update {} follows {}, but the snapshot is at {last}",
                        u.seq, u.prev_seq
                    ));
                }
                SeqGap::record(&mut self.gaps, u.prev_seq, u.skipped_until());
                self.last = u.seq;
                self.has_updates = true;
                let _ = table.apply_owned(u.seq, u.op);
            }
            (KIND_SNAP_END, true) => {
                let entries = r.u64("entry count").map_err(bad)?;
                let digest = r.u64("digest").map_err(bad)?;
                let end_seq = r.u64("end seq").map_err(bad)?;
                end = Some((entries, digest, end_seq));
            }
            (kind, _) => return Err(format!("unexpected record kind {kind}")),
        }
        r.finish().map_err(bad)?;
        Ok(end)
    }
}
