//! BACKUP (spec §4.1): a consistent snapshot of the table streamed to a
//! client as a snapshot file (spec/STORAGE.md §4), without stopping writes.
//!
//! The table is copied one partition at a time while writes go on (a
//! fuzzy copy, as for snapshots on disk), and every write applied after
//! the copy began is captured from the worker's completions ("the tee")
//! and appended as UPDATE records. Replaying those over the copy gives the
//! table exactly as of the last one: the file is consistent on its own, so
//! `table-server --restore FILE` needs nothing else. One backup runs at a
//! time per server; its memory is one partition's encoding plus the tee,
//! which is bounded (writes faster than the copy end the backup with BUSY).

use super::conn::{Conn, Slot};
use super::Server;
use crate::replica::ReadScope;
use crate::storage::backup_parts;
use crate::table::Table;
use crate::wire::{Body, ErrorCode, Message, SeqGap, Update};
use std::sync::atomic::Ordering;

/// Most bytes of UPDATE records a backup holds for the writes applied
/// while it copies; beyond, it fails with BUSY.
pub const BACKUP_TEE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Largest data in one BACKUP_CHUNK (also kept under the frame limit).
pub const BACKUP_CHUNK_BYTES: usize = 1024 * 1024;
/// A backup produces more only while less than this is queued for its
/// client, so a slow reader holds back the copy, not our memory.
const BACKUP_QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// A backup in progress.
pub(super) struct BackupRun {
    pub conn: u64,
    request_id: u64,
    /// The copy reflects every write up to this one (at least).
    seq: u64,
    gaps: Vec<SeqGap>,
    next_partition: Option<usize>,
    entries: u64,
    digest: u64,
    /// UPDATE records for the writes applied after `seq`, in order.
    tee: Vec<u8>,
    tee_last: u64,
    /// The worker's last applied write when the copy ended: the tee must
    /// reach it before the file can end.
    copy_end: Option<u64>,
    failed: Option<String>,
}

enum Step {
    /// Send these bytes; `true` when they end the file.
    Data(Vec<u8>, bool),
    /// Nothing to send until the tee catches up.
    Wait,
    Failed(String),
}

impl BackupRun {
    fn new(conn: u64, request_id: u64, seq: u64, gaps: Vec<SeqGap>) -> BackupRun {
        BackupRun {
            conn,
            request_id,
            seq,
            gaps,
            next_partition: None,
            entries: 0,
            digest: 0,
            tee: Vec::new(),
            tee_last: seq,
            copy_end: None,
            failed: None,
        }
    }

    /// A write the worker applied: captured if it is after the copy began.
    pub fn on_applied(&mut self, update: &Update) {
        if update.seq <= self.tee_last || self.failed.is_some() {
            return;
        }
        backup_parts::update_record(&mut self.tee, update);
        self.tee_last = update.seq;
        if self.tee.len() > BACKUP_TEE_BYTES_MAX {
            self.tee = Vec::new();
            self.failed = Some(format!(
                "writes outpaced the backup ({BACKUP_TEE_BYTES_MAX} bytes of them held); retry when writes are slower"
            ));
        }
    }

    fn step(&mut self, table: &Table, worker_applied: u64) -> Step {
        if let Some(why) = &self.failed {
            return Step::Failed(why.clone());
        }
        let mut out = Vec::new();
        let Some(i) = self.next_partition else {
            backup_parts::header(&mut out, self.seq, &self.gaps);
            self.next_partition = Some(0);
            return Step::Data(out, false);
        };
        if i < table.partitions() {
            let (n, d) = backup_parts::partition(table, i, &mut out);
            self.entries += n;
            self.digest = self.digest.wrapping_add(d);
            self.next_partition = Some(i + 1);
            return Step::Data(out, false);
        }
        let copy_end = *self.copy_end.get_or_insert(worker_applied);
        if self.tee_last < copy_end {
            return Step::Wait;
        }
        out = std::mem::take(&mut self.tee);
        backup_parts::end(&mut out, self.entries, self.digest, self.tee_last);
        Step::Data(out, true)
    }
}

impl Server {
    /// BACKUP from `conn`: starts the stream, or refuses.
    pub(super) fn start_backup(&mut self, conn: &mut Conn, request_id: u64) -> Option<Message> {
        if let Err(r) = self.replica.check_can_read(ReadScope::TailOnly) {
            return Some(super::handler::refusal(request_id, r));
        }
        if self.backup.is_some() {
            let why = "a backup is already running on this server; retry when it ends";
            return Some(super::handler::error(request_id, ErrorCode::Busy, why));
        }
        let seq = self.replica.last_applied();
        let gaps = self.replica.history_gaps(seq);
        self.backup = Some(BackupRun::new(conn.id, request_id, seq, gaps));
        conn.slots.push_back(Slot::Backup);
        tracing::info!(conn = conn.id, seq, "backup started");
        None
    }

    /// Moves the backup of `conn` forward while its client keeps up; ends
    /// it (with the last chunk, or an error) when it is done. Returns
    /// whether it stopped only because enough is queued: the caller pumps
    /// again once the output drains below [`BACKUP_QUEUE_BYTES`] (no
    /// socket event says so when it drains completely).
    pub(super) fn pump_backup(&mut self, conn: &mut Conn) -> bool {
        let Some(run) = self.backup.as_mut().filter(|b| b.conn == conn.id) else {
            return false;
        };
        if !matches!(conn.slots.front(), Some(Slot::Backup)) {
            return false;
        }
        let chunk_max =
            BACKUP_CHUNK_BYTES.min(self.cfg.payload_bytes_max.saturating_sub(16).max(1));
        while conn.out_len() < BACKUP_QUEUE_BYTES {
            let applied = self.worker_applied.load(Ordering::Acquire);
            let (data, last) = match run.step(&self.table, applied) {
                Step::Data(data, last) => (data, last),
                // A completion of the worker's touches this connection.
                Step::Wait => return false,
                Step::Failed(why) => {
                    let id = run.request_id;
                    conn.slots.pop_front();
                    conn.reply(&super::handler::error(id, ErrorCode::Busy, why));
                    self.backup = None;
                    return false;
                }
            };
            send_chunks(conn, run.request_id, &data, last, chunk_max);
            if last {
                tracing::info!(
                    conn = conn.id,
                    end_seq = run.tee_last,
                    entries = run.entries,
                    "backup sent"
                );
                conn.slots.pop_front();
                self.backup = None;
                return false;
            }
        }
        true
    }

    /// Whether a backup that paused on a full output may go on now.
    pub(super) fn backup_may_resume(conn: &Conn) -> bool {
        conn.out_len() < BACKUP_QUEUE_BYTES
    }
}

/// Sends `data` as BACKUP_CHUNK frames of at most `chunk_max` bytes; the
/// last frame carries `last` (an empty one if `data` is empty).
fn send_chunks(conn: &mut Conn, request_id: u64, data: &[u8], last: bool, chunk_max: usize) {
    let mut pieces = data.chunks(chunk_max).peekable();
    if pieces.peek().is_none() {
        if last {
            let body = Body::BackupChunk {
                last,
                data: Vec::new(),
            };
            conn.send(&Message::new(request_id, body));
        }
        return;
    }
    while let Some(piece) = pieces.next() {
        let body = Body::BackupChunk {
            last: last && pieces.peek().is_none(),
            data: piece.to_vec(),
        };
        conn.send(&Message::new(request_id, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serialize::Key;
    use crate::storage::read_snapshot;
    use crate::wire::WriteOp;

    fn put(table: &Table, seq: u64, key: &str, value: &str) -> Update {
        let u = Update {
            seq,
            prev_seq: seq - 1,
            op: WriteOp::Put {
                key: Key::new(key.as_bytes()).unwrap(),
                value: value.as_bytes().to_vec(),
            },
        };
        let _ = table.apply(u.seq, &u.op);
        u
    }

    #[test]
    fn writes_during_the_copy_end_up_in_the_file_and_the_file_is_exact() {
        let table = Table::new(4);
        for i in 1..=40 {
            put(&table, i, &format!("k{i}"), "old");
        }
        let mut run = BackupRun::new(1, 7, 40, Vec::new());
        let mut file = Vec::new();
        let mut seq = 40;
        let mut steps = 0;
        loop {
            // Writes land between the steps of the copy, some in partitions
            // already copied, some in partitions still to come.
            seq += 1;
            let u = put(&table, seq, &format!("k{}", seq % 45), &format!("new{seq}"));
            run.on_applied(&u);
            match run.step(&table, seq) {
                Step::Data(d, last) => {
                    file.extend(d);
                    if last {
                        break;
                    }
                }
                Step::Wait => panic!("the tee was complete"),
                Step::Failed(why) => panic!("{why}"),
            }
            steps += 1;
            assert!(steps < 100);
        }
        let dir = std::env::temp_dir().join(format!("chaintable-backup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.snap");
        std::fs::write(&path, &file).unwrap();
        let restored = Table::new(2);
        let snap = read_snapshot(&path, &restored).unwrap();
        assert_eq!(snap.applied_through, seq, "the file runs to the last write");
        assert_eq!(
            restored.digest(),
            table.digest(),
            "the restored table is the source's"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_file_cannot_end_before_the_tee_reaches_the_copy() {
        let table = Table::new(1);
        put(&table, 1, "a", "1");
        let mut run = BackupRun::new(1, 7, 1, Vec::new());
        assert!(matches!(run.step(&table, 1), Step::Data(_, false))); // header
        let u = put(&table, 2, "a", "2"); // applied, completion not seen yet
        for _ in 0..table.partitions() {
            assert!(matches!(run.step(&table, 2), Step::Data(_, false))); // the copy
        }
        assert!(matches!(run.step(&table, 2), Step::Wait));
        run.on_applied(&u);
        assert!(matches!(run.step(&table, 2), Step::Data(_, true)));
    }
}
