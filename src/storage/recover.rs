//! Startup: the newest snapshot, then every log record after it, checked
//! link by link (each record names the one before it), into the table.
//!
//! Only a write a crash cut short may be dropped: a bad record that runs
//! to the end of the last segment (see `BadRecord::torn_tail`) is cut off
//! with a warning. A bad record anywhere else, a segment missing, or a log
//! that stops short of what the snapshot holds stops the start with an
//! error naming the file and the offset: serving a table with a hole in
//! the middle of its history would be silent data loss.

use super::apply::{Appliers, Origin};
use super::record::RecordReader;
use super::snapshot::{read_snapshot, SnapshotFile};
use super::wal::Wal;
use super::{list_dir, StorageConfig, StorageError, KIND_UPDATE, WAL_MAGIC};
use crate::serialize::Codec;
use crate::serialize::{DecodeError, Reader, KEY_BYTES_MAX};
use crate::table::Table;
use crate::wire::{op, BatchOp, SeqGap, Update, WriteOp};
use crate::wire::{UPDATE_KIND_BATCH, UPDATE_KIND_NOOP, UPDATE_KIND_UNCHANGED};
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
    /// Time spent reading the snapshot (the rest of `took` is the log).
    pub snapshot_took: Duration,
    pub took: Duration,
    /// A torn final record cut off: the segment and the offset kept.
    pub truncated: Option<(PathBuf, u64)>,
    /// Whether the directory held any log or snapshot (a restart).
    pub had_history: bool,
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
    let had_history = !listing.segments.is_empty() || !listing.snapshots.is_empty();
    for path in &listing.unfinished {
        let _ = std::fs::remove_file(path);
    }
    let snapshot = match listing.snapshots.last() {
        Some((_, path)) => Some(read_snapshot(path, table)?),
        None => None,
    };
    let snap_seq = snapshot.as_ref().map_or(0, |s| s.applied_through);
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
    let snapshot_took = started.elapsed();
    let first_base = to_replay.first().map_or(snap_seq, |(base, _)| *base);
    let replayed = std::thread::scope(|scope| {
        let mut replay = Replay {
            last: first_base,
            snap_seq,
            appliers: Appliers::start(scope, table),
            gaps: &mut gaps,
            records: 0,
            bytes: 0,
        };
        let ends = replay.segments(to_replay);
        let Replay {
            last,
            records,
            bytes,
            appliers,
            ..
        } = replay;
        if let Some((origin, why)) = appliers.finish() {
            let path = &to_replay[origin.segment as usize].1;
            return Err(StorageError::corrupt(path, origin.offset, why));
        }
        ends.map(|(tail, truncated)| (last, records, bytes, tail, truncated))
    });
    let (last, records, bytes, tail, truncated) = replayed?;
    let last_seq = last.max(snap_seq);
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
        snapshot_took,
        took: started.elapsed(),
        truncated,
        had_history,
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

/// The last segment as the log continues from it (path, base, good
/// length), and where a torn record was cut off, if one was.
type Ends = (Option<(PathBuf, u64, u64)>, Option<(PathBuf, u64)>);

struct Replay<'a, 'scope> {
    /// The last sequence number in the history read so far.
    last: u64,
    snap_seq: u64,
    appliers: Appliers<'scope>,
    gaps: &'a mut VecDeque<SeqGap>,
    records: u64,
    bytes: u64,
}

impl Replay<'_, '_> {
    /// Replays `segments` in order, checking each starts where the one
    /// before it ended.
    fn segments(&mut self, segments: &[(u64, PathBuf)]) -> Result<Ends, StorageError> {
        let (mut tail, mut truncated) = (None, None);
        for (i, (base, path)) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            if *base != self.last {
                let why = format!(
                    "segment starts after {base}, but the log before it ends at {}",
                    self.last
                );
                return Err(StorageError::corrupt(path, 0, why));
            }
            #[allow(clippy::cast_possible_truncation)] // far fewer than 2^32 segments
            match self.segment(path, i as u32, is_last)? {
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
        Ok((tail, truncated))
    }

    fn segment(
        &mut self,
        path: &Path,
        index: u32,
        is_last: bool,
    ) -> Result<SegmentEnd, StorageError> {
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
                    let origin = Origin {
                        segment: index,
                        offset: at,
                    };
                    self.take(payload, origin)
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

    /// Checks one UPDATE record's place in the history (its `seq` and
    /// `prev_seq`) and hands its body to the appliers, which decode it in
    /// full and apply it. Only the fixed fields and the key are read here.
    fn take(&mut self, payload: &[u8], origin: Origin) -> Result<(), String> {
        let body = match payload.split_first() {
            Some((&KIND_UPDATE, body)) => body,
            Some((kind, _)) => {
                return Err(format!("unexpected record kind {kind} in a log segment"))
            }
            None => return Err("empty record".into()),
        };
        let (seq, prev_seq, kind, key) = peek_update(body).map_err(|e| e.to_string())?;
        if prev_seq != self.last || seq <= prev_seq {
            return Err(format!(
                "record {seq} follows {prev_seq}, but the log before it ends at {}",
                self.last
            ));
        }
        self.last = seq;
        self.records += 1;
        if seq > self.snap_seq {
            // A NOOP's own id is skipped too (see `Update::skipped_until`);
            // an UNCHANGED one is in the history.
            SeqGap::record(
                self.gaps,
                prev_seq,
                if kind == UPDATE_KIND_NOOP {
                    seq + 1
                } else {
                    seq
                },
            );
            // A NOOP or an UNCHANGED changes no key: nothing to apply.
            if let Some(key) = key {
                self.appliers.push(key, body, origin);
            } else if kind == UPDATE_KIND_BATCH {
                self.split_batch(body, origin)?;
            }
        }
        Ok(())
    }

    /// An MWRITE's record touches many partitions: it is handed to their
    /// appliers as one PUT or DEL record per write, at the batch's `seq`
    /// (replay happens before anything is served, so nobody can see the
    /// batch half applied).
    fn split_batch(&mut self, body: &[u8], origin: Origin) -> Result<(), String> {
        let update = Update::decode_exact(body).map_err(|e| e.to_string())?;
        let WriteOp::Batch(ops) = update.op else {
            return Err("a batch record that holds no batch".into());
        };
        let mut one = Vec::new();
        for op in ops {
            let op = match op {
                BatchOp::Put { key, value } => WriteOp::Put { key, value },
                BatchOp::Del { key } => WriteOp::Del { key },
            };
            one.clear();
            Update { op, ..update }.encode(&mut one);
            let (.., key) = peek_update(&one).map_err(|e| e.to_string())?;
            if let Some(key) = key {
                self.appliers.push(key, &one, origin);
            }
        }
        Ok(())
    }
}

/// An UPDATE body's `seq`, `prev_seq`, kind and key (none for a NOOP or
/// an UNCHANGED).
type Peeked<'a> = (u64, u64, u8, Option<&'a [u8]>);

/// Reads [`Peeked`] without copying anything.
fn peek_update(body: &[u8]) -> Result<Peeked<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let seq = r.u64("seq")?;
    let prev_seq = r.u64("prev seq")?;
    let kind = r.u8("update kind")?;
    match kind {
        UPDATE_KIND_NOOP => {}
        UPDATE_KIND_UNCHANGED => {
            r.u64("version")?;
        }
        // Checked whole when it is split (`Replay::split_batch`).
        UPDATE_KIND_BATCH => return Ok((seq, prev_seq, kind, None)),
        op::PUT | op::DEL => {
            let len = r.len_u16("key", KEY_BYTES_MAX)?;
            return Ok((seq, prev_seq, kind, Some(r.take(len, "key")?)));
        }
        other => {
            return Err(DecodeError::Invalid {
                what: "update kind",
                value: other.into(),
            })
        }
    }
    r.finish()?;
    Ok((seq, prev_seq, kind, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serialize::{Codec, Key};
    use crate::storage::record::put_record;
    use crate::wire::{Update, WriteOp};

    fn put(seq: u64, prev_seq: u64) -> Vec<u8> {
        let u = Update {
            seq,
            prev_seq,
            op: WriteOp::Put {
                key: Key::new(format!("k{seq}").as_bytes()).unwrap(),
                value: vec![1, 2, 3],
            },
        };
        let mut out = Vec::new();
        put_record(&mut out, KIND_UPDATE, |o| u.encode(o));
        out
    }

    #[test]
    fn a_record_with_a_good_crc_that_does_not_decode_is_named_by_offset() {
        let dir = std::env::temp_dir().join(format!("chaintable-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut seg = WAL_MAGIC.to_vec();
        seg.extend(put(1, 0));
        let bad_at = seg.len() as u64;
        // seq 2 after 1, an update kind that does not exist (7), key "k".
        put_record(&mut seg, KIND_UPDATE, |o| {
            o.extend_from_slice(&2u64.to_be_bytes());
            o.extend_from_slice(&1u64.to_be_bytes());
            o.extend_from_slice(&[7, 0, 1, b'k']);
        });
        seg.extend(put(3, 2));
        let path = super::super::segment_path(&dir, 0);
        std::fs::write(&path, &seg).unwrap();
        let table = Table::new(4);
        let err = recover(&StorageConfig::new(&dir), &table)
            .err()
            .expect("refused");
        match err {
            StorageError::Corrupt {
                path: p,
                offset,
                why,
            } => {
                assert_eq!((p, offset), (path, bad_at), "{why}");
                assert!(why.contains("update kind"), "{why}");
            }
            other => panic!("{other}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
