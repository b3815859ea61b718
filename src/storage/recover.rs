//! Startup: the newest snapshot, then every log record after it, checked
//! link by link (each record names the one before it), into the table.
//!
//! Only a write a crash cut short may be dropped: a bad record that runs
//! to the end of the last segment (see `BadRecord::torn_tail`) is cut off
//! with a warning. A bad record anywhere else, a segment missing, or a log
//! that stops short of what the snapshot holds stops the start with an
//! error naming the file and the offset: serving a table with a hole in
//! the middle of its history would be silent data loss.

use super::record::RecordReader;
use super::snapshot::{read_snapshot, SnapshotFile};
use super::wal::Wal;
use super::{list_dir, push_gap, StorageConfig, StorageError, KIND_UPDATE, WAL_MAGIC};
use crate::serialize::Codec;
use crate::table::Table;
use crate::wire::{SeqGap, Update};
use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What recovery found, and the log open for appending after it.
pub struct Recovered {
    /// The last write in the table.
    pub last_seq: u64,
    /// Gaps in the history (ids a takeover skipped), newest last.
    pub gaps: Vec<SeqGap>,
    pub wal: Wal,
    pub snapshot: Option<SnapshotFile>,
    pub replayed_records: u64,
    pub replayed_bytes: u64,
    pub took: Duration,
    /// A torn final record cut off: the segment and the offset kept.
    pub truncated: Option<(PathBuf, u64)>,
}

/// Loads the data directory into `table` (empty) and opens the log.
///
/// # Errors
///
/// [`StorageError::Corrupt`] for damage that is not a torn final record,
/// [`StorageError::Io`] when a file cannot be read or written.
pub fn recover(cfg: &StorageConfig, table: &Table) -> Result<Recovered, StorageError> {
    let started = Instant::now();
    let dir = cfg.dir.as_path();
    let listing = list_dir(dir)?;
    for path in &listing.unfinished {
        let _ = std::fs::remove_file(path);
    }
    let snapshot = match listing.snapshots.last() {
        Some((_, path)) => Some(read_snapshot(path, table)?),
        None => None,
    };
    let snap_seq = snapshot.as_ref().map_or(0, |s| s.seq);
    let mut gaps: VecDeque<SeqGap> = snapshot
        .as_ref()
        .map(|s| s.gaps.iter().copied().collect())
        .unwrap_or_default();
    // Replay from the newest segment that starts at or before the snapshot.
    let segments = &listing.segments;
    let start = segments.iter().rposition(|(base, _)| *base <= snap_seq);
    let to_replay = match start {
        Some(i) => &segments[i..],
        None if segments.is_empty() => &segments[..],
        None => {
            let (base, path) = &segments[0];
            let why =
                format!("the log starts after {base}, and no snapshot covers what comes before");
            return Err(StorageError::corrupt(path, 0, why));
        }
    };
    let mut replay = Replay {
        last: to_replay.first().map_or(snap_seq, |(base, _)| *base),
        snap_seq,
        table,
        gaps: &mut gaps,
        records: 0,
        bytes: 0,
    };
    let mut tail = None;
    let mut truncated = None;
    for (i, (base, path)) in to_replay.iter().enumerate() {
        let is_last = i + 1 == to_replay.len();
        if *base != replay.last {
            let why = format!(
                "segment starts after {base}, but the log before it ends at {}",
                replay.last
            );
            return Err(StorageError::corrupt(path, 0, why));
        }
        match replay.segment(path, is_last)? {
            SegmentEnd::Clean(len) => tail = Some((path.clone(), *base, len)),
            SegmentEnd::Torn(len) => {
                truncated = Some((path.clone(), len));
                tail = Some((path.clone(), *base, len));
            }
            SegmentEnd::NoMagic => {
                tracing::warn!(path = %path.display(), "removing a log segment whose creation a crash interrupted");
                std::fs::remove_file(path).map_err(|e| StorageError::io(path, e))?;
                tail = None;
            }
        }
    }
    let last_seq = replay.last.max(snap_seq);
    let (records, bytes) = (replay.records, replay.bytes);
    if let Some(s) = &snapshot {
        if last_seq < s.end_seq {
            let path = to_replay
                .last()
                .map_or(dir.to_path_buf(), |(_, p)| p.clone());
            let why = format!(
                "the log ends at {last_seq}, before the snapshot's last write {}",
                s.end_seq
            );
            return Err(StorageError::corrupt(&path, 0, why));
        }
    }
    let wal = Wal::open(dir, cfg.fsync, cfg.segment_bytes_max, tail, last_seq)?;
    Ok(Recovered {
        last_seq,
        gaps: gaps.into_iter().collect(),
        wal,
        snapshot,
        replayed_records: records,
        replayed_bytes: bytes,
        took: started.elapsed(),
        truncated,
    })
}

enum SegmentEnd {
    /// Every record good; the segment's length.
    Clean(u64),
    /// A torn final record cut off at this length.
    Torn(u64),
    /// The last segment, created but its magic never written whole.
    NoMagic,
}

struct Replay<'a> {
    /// The last sequence number in the history read so far.
    last: u64,
    snap_seq: u64,
    table: &'a Table,
    gaps: &'a mut VecDeque<SeqGap>,
    records: u64,
    bytes: u64,
}

impl Replay<'_> {
    fn segment(&mut self, path: &Path, is_last: bool) -> Result<SegmentEnd, StorageError> {
        let io = |e| StorageError::io(path, e);
        let mut file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let magic_len = WAL_MAGIC.len() as u64;
        let mut magic = [0u8; 8];
        if len < magic_len {
            if is_last {
                return Ok(SegmentEnd::NoMagic);
            }
            return Err(StorageError::corrupt(
                path,
                0,
                "segment shorter than its magic",
            ));
        }
        file.read_exact(&mut magic).map_err(io)?;
        if &magic != WAL_MAGIC {
            return Err(StorageError::corrupt(
                path,
                0,
                "not a chaintable log segment",
            ));
        }
        let mut reader = RecordReader::new(file, magic_len, len);
        loop {
            let at = reader.offset();
            match reader.next_record() {
                Ok(Some(payload)) => {
                    let update = decode_update(payload)
                        .map_err(|why| StorageError::corrupt(path, at, why))?;
                    self.apply(update)
                        .map_err(|why| StorageError::corrupt(path, at, why))?;
                }
                Ok(None) => {
                    self.bytes += len;
                    return Ok(SegmentEnd::Clean(len));
                }
                Err(Ok(bad)) if bad.torn_tail && is_last => {
                    tracing::warn!(
                        path = %path.display(),
                        offset = bad.offset,
                        why = %bad.why,
                        "the log ends in a torn record (a write a crash cut short); \
                         truncating it to the last good record"
                    );
                    self.bytes += bad.offset;
                    return Ok(SegmentEnd::Torn(bad.offset));
                }
                Err(Ok(bad)) => {
                    let why = format!("{} (not at the end of the log: refusing to start)", bad.why);
                    return Err(StorageError::corrupt(path, bad.offset, why));
                }
                Err(Err(e)) => return Err(io(e)),
            }
        }
    }

    fn apply(&mut self, u: Update) -> Result<(), String> {
        if u.prev_seq != self.last || u.seq <= u.prev_seq {
            return Err(format!(
                "record {} follows {}, but the log before it ends at {}",
                u.seq, u.prev_seq, self.last
            ));
        }
        self.last = u.seq;
        self.records += 1;
        if u.seq > self.snap_seq {
            push_gap(self.gaps, u.prev_seq, u.seq);
            let _ = self.table.apply(u.seq, &u.op);
        }
        Ok(())
    }
}

fn decode_update(payload: &[u8]) -> Result<Update, String> {
    match payload.split_first() {
        Some((&KIND_UPDATE, body)) => Update::decode_exact(body).map_err(|e| e.to_string()),
        Some((kind, _)) => Err(format!("unexpected record kind {kind} in a log segment")),
        None => Err("empty record".into()),
    }
}
