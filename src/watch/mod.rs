//! Watches (spec §4.1, WATCH): a client names a key prefix and a sequence
//! number, and receives every change under the prefix after it, in
//! sequence order, with no gaps.
//!
//! Sans-IO, like the replica: [`History`] is the bounded record of recent
//! changes every member keeps (fed with what its worker applied), and a
//! [`Watch`] is one subscriber's cursor into it. The server feeds the
//! history, says how far changes are committed (the horizon), and hands
//! each watch the room its connection has; the watch says what to send.
//!
//! Why every member keeps a history and any active member serves a watch:
//! a change a member has seen acknowledged by the tail is committed and
//! stays in every member's history (the chain's prefix property), so a
//! watcher that loses its member resumes at another from the last `seq`
//! it saw and misses nothing, provided that member still keeps the
//! changes after it (else HISTORY_GONE: re-read, then watch from now).

use crate::serialize::{Codec, Key, Reader};
use crate::wire::{op, BatchOp, Update, WatchChange, WatchEvent, WriteOp, WATCH_FROM_NOW};
use std::collections::VecDeque;

/// Default for `--watch-history-bytes`.
pub const WATCH_HISTORY_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
/// Smallest `--watch-history-bytes`: one largest batch fits, so a watcher
/// never loses a change to the history's own bound between two pumps.
pub const WATCH_HISTORY_BYTES_MIN: usize = 16 * 1024 * 1024;
/// Watches open at once on one connection (spec §7).
pub const WATCHES_PER_CONN_MAX: usize = 8;
/// Most history records one [`Watch::pump`] passes over, so that a
/// watcher far behind (or of a quiet prefix) cannot hold the network
/// thread for a whole history's scan.
pub const RECORDS_PER_PUMP: usize = 4096;
/// What the history counts for one recorded update besides its changes'
/// bytes: the record, its vector and the deque slot.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// Changes at one sequence number.
#[derive(Debug)]
struct Recorded {
    seq: u64,
    /// The changes, encoded as a WATCH_EVENT lists them (kind, key, and
    /// for a put the value), one after the other: one allocation per
    /// write, on the network thread's hot path; they are decoded only
    /// for a watch that is sent them.
    changes: Vec<u8>,
    /// Bytes this record counts against the bound.
    bytes: usize,
    /// Bytes recorded since the history began, this record included: the
    /// distance between two records is the difference of their `end`s.
    end: u64,
}

/// The recent changes a member applied, oldest first, bounded in bytes.
#[derive(Debug)]
pub struct History {
    records: VecDeque<Recorded>,
    /// Every change after this sequence number is kept.
    floor: u64,
    /// The last sequence number recorded (with changes or without).
    last: u64,
    bytes: usize,
    bytes_max: usize,
    /// Bytes ever recorded (see [`Recorded::end`]).
    total: u64,
}

impl History {
    /// An empty history that starts after `seq` and holds `bytes_max`.
    #[must_use]
    pub fn new(seq: u64, bytes_max: usize) -> History {
        History {
            records: VecDeque::new(),
            floor: seq,
            last: seq,
            bytes: 0,
            bytes_max,
            total: 0,
        }
    }

    /// Forgets everything: the member's state was replaced (a snapshot, a
    /// rejoin), and its history now starts after `seq`.
    pub fn reset(&mut self, seq: u64) {
        *self = History::new(seq, self.bytes_max);
    }

    /// Every change after this sequence number is kept.
    #[must_use]
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Bytes held.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records an update the worker applied (in sequence order); drops the
    /// oldest records beyond the bound. Updates that change no key (marks,
    /// compare-and-sets that did not match) only move `last`.
    pub fn record(&mut self, update: &Update) {
        if update.seq <= self.last {
            return;
        }
        self.last = update.seq;
        let mut changes = Vec::new();
        match &update.op {
            WriteOp::Put { key, value } => {
                changes.reserve_exact(1 + key.encoded_len() + 4 + value.len());
                changes.push(op::PUT);
                key.encode(&mut changes);
                crate::serialize::encode_data(&mut changes, value);
            }
            WriteOp::Del { key } => {
                changes.push(op::DEL);
                key.encode(&mut changes);
            }
            // A batch write encodes as the change it makes.
            WriteOp::Batch(ops) => ops.iter().for_each(|o| BatchOp::encode(o, &mut changes)),
            _ => return,
        }
        let bytes = ENTRY_OVERHEAD_BYTES + changes.len();
        self.total += bytes as u64;
        self.bytes += bytes;
        self.records.push_back(Recorded {
            seq: update.seq,
            changes,
            bytes,
            end: self.total,
        });
        while self.bytes > self.bytes_max {
            let Some(old) = self.records.pop_front() else {
                break;
            };
            self.bytes -= old.bytes;
            self.floor = old.seq;
        }
    }

    /// Index of the first record after `seq`.
    fn after(&self, seq: u64) -> usize {
        self.records.partition_point(|r| r.seq <= seq)
    }

    /// Bytes of the records in (`from`, `to`].
    fn bytes_between(&self, from: u64, to: u64) -> u64 {
        let (a, b) = (self.after(from), self.after(to));
        if a >= b {
            return 0;
        }
        let start = self.records[a].end - self.records[a].bytes as u64;
        self.records[b - 1].end - start
    }
}

/// The changes of a record whose key starts with `prefix`, decoded. The
/// bytes are our own encoding, so a decoding error cannot happen; were it
/// to, the rest of the record is skipped rather than trusted.
fn matching(changes: &[u8], prefix: &[u8]) -> Vec<WatchChange> {
    let mut r = Reader::new(changes);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let Ok(kind) = r.u8("kind") else { break };
        let Ok(len) = r.u16("key length") else { break };
        let Ok(key) = r.take(usize::from(len), "key") else {
            break;
        };
        let value = if kind == op::PUT {
            let Ok(n) = r.u32("value length") else { break };
            let Ok(v) = r.take(n as usize, "value") else {
                break;
            };
            Some(v)
        } else {
            None
        };
        if !key.starts_with(prefix) {
            continue;
        }
        let Ok(key) = Key::new(key) else { break };
        out.push(match value {
            Some(v) => WatchChange::Put {
                key,
                value: v.to_vec(),
            },
            None => WatchChange::Del { key },
        });
    }
    out
}

/// Why a watch ended (each is an ERROR frame with the watch's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// Its start is before the history's floor: changes it asks for are
    /// no longer kept (HISTORY_GONE).
    HistoryGone { floor: u64 },
    /// It fell more than the lag bound behind the committed changes
    /// (WATCH_TOO_SLOW); it may resume from the last `seq` it received
    /// while the history still holds what follows.
    TooSlow { lag_bytes: u64 },
}

/// One subscriber: a prefix and a cursor into the history.
#[derive(Debug)]
pub struct Watch {
    /// The WATCH request's id, which every frame of the stream carries.
    pub id: u64,
    prefix: Vec<u8>,
    /// Every change up to this sequence number has been sent.
    after: u64,
    /// History bytes passed over since the last frame sent: a progress
    /// mark goes out once they reach the progress interval, so that a
    /// watcher of a quiet prefix always holds a recent place to resume.
    passed_bytes: u64,
}

impl Watch {
    /// Opens a watch from `from_seq` ([`WATCH_FROM_NOW`]: from `horizon`)
    /// and returns its first frame: a progress mark at its start.
    ///
    /// # Errors
    ///
    /// [`WatchEnd::HistoryGone`] when changes after `from_seq` are no
    /// longer all kept.
    pub fn open(
        id: u64,
        prefix: Vec<u8>,
        from_seq: u64,
        history: &History,
        horizon: u64,
    ) -> Result<(Watch, WatchEvent), WatchEnd> {
        let after = if from_seq == WATCH_FROM_NOW {
            horizon
        } else {
            from_seq
        };
        if after < history.floor() {
            return Err(WatchEnd::HistoryGone {
                floor: history.floor(),
            });
        }
        let first = WatchEvent {
            seq: after,
            more: false,
            changes: Vec::new(),
        };
        let watch = Watch {
            id,
            prefix,
            after,
            passed_bytes: 0,
        };
        Ok((watch, first))
    }

    /// The last sequence number whose changes were all sent.
    #[must_use]
    pub fn after(&self) -> u64 {
        self.after
    }

    /// Sends the committed changes after the cursor, up to `horizon`, to
    /// `sink` while it has room, and at most [`RECORDS_PER_PUMP`] records
    /// at a time; every frame's payload stays within `payload_bytes_max`.
    /// The changes of one sequence number are sent whole, so the cursor
    /// never stops inside a batch. Returns whether committed records are
    /// left to send.
    ///
    /// # Errors
    ///
    /// How the watch ends, when it does: it is more than `lag_bytes_max`
    /// behind, or the history dropped changes it had not sent.
    pub fn pump(
        &mut self,
        history: &History,
        horizon: u64,
        payload_bytes_max: usize,
        lag_bytes_max: u64,
        sink: &mut impl WatchSink,
    ) -> Result<bool, WatchEnd> {
        if self.after < history.floor() {
            return Err(WatchEnd::HistoryGone {
                floor: history.floor(),
            });
        }
        let lag_bytes = history.bytes_between(self.after, horizon);
        if lag_bytes > lag_bytes_max {
            return Err(WatchEnd::TooSlow { lag_bytes });
        }
        let progress_bytes = (history.bytes_max as u64 / 8).max(1);
        let mut i = history.after(self.after);
        for _ in 0..RECORDS_PER_PUMP {
            let Some(rec) = history.records.get(i).filter(|r| r.seq <= horizon) else {
                return Ok(false);
            };
            if !sink.has_room() {
                return Ok(true);
            }
            let mine = matching(&rec.changes, &self.prefix);
            if mine.is_empty() {
                self.passed_bytes += rec.bytes as u64;
            } else {
                for event in frames(rec.seq, mine, payload_bytes_max) {
                    sink.send(event);
                }
                self.passed_bytes = 0;
            }
            self.after = rec.seq;
            i += 1;
            if self.passed_bytes >= progress_bytes {
                self.passed_bytes = 0;
                sink.send(WatchEvent {
                    seq: self.after,
                    more: false,
                    changes: Vec::new(),
                });
            }
        }
        Ok(history.records.get(i).is_some_and(|r| r.seq <= horizon))
    }
}

/// Where a watch's frames go: the IO layer's connection.
pub trait WatchSink {
    /// Whether more may be queued now (the connection's output is short).
    fn has_room(&self) -> bool;
    /// Queues one frame of the stream.
    fn send(&mut self, event: WatchEvent);
}

/// The frames for the changes at `seq`: as few as fit `payload_bytes_max`
/// each, all but the last with `more` set. A PUT too large for any frame
/// travels as [`WatchChange::Changed`] (its key and the version only).
fn frames(seq: u64, changes: Vec<WatchChange>, payload_bytes_max: usize) -> Vec<WatchEvent> {
    let room = payload_bytes_max.saturating_sub(WatchEvent::HEADER_LEN);
    let mut out = vec![WatchEvent {
        seq,
        more: false,
        changes: Vec::new(),
    }];
    let mut used = 0;
    for change in changes {
        let change = if change.encoded_len() > room {
            WatchChange::Changed {
                key: change.key().clone(),
            }
        } else {
            change
        };
        let len = change.encoded_len();
        let full = used + len > room
            || out
                .last()
                .is_some_and(|e| e.changes.len() >= crate::wire::BATCH_OPS_MAX);
        if full && used > 0 {
            if let Some(e) = out.last_mut() {
                e.more = true;
            }
            out.push(WatchEvent {
                seq,
                more: false,
                changes: Vec::new(),
            });
            used = 0;
        }
        used += len;
        if let Some(e) = out.last_mut() {
            e.changes.push(change);
        }
    }
    out
}

#[cfg(test)]
mod tests;
