//! WATCH and UNWATCH (spec §4.1): the IO side of `crate::watch`. The
//! history is fed from the worker's completions; each connection's
//! watches are pumped with the room its output has, whenever the
//! committed horizon moves or the connection drains.

use super::conn::{Conn, Slot};
use super::handler::{error, refusal};
use super::Server;
use crate::watch::{Watch, WatchEnd, WatchSink, WATCHES_PER_CONN_MAX};
use crate::wire::{Body, ErrorCode, Message, Update, WatchEvent};

/// A connection's output, as a watch sees it: room while less than the
/// per-connection output bound is queued.
struct ConnSink<'a> {
    conn: &'a mut Conn,
    watch_id: u64,
    out_bytes_max: usize,
    sent: u64,
}

impl WatchSink for ConnSink<'_> {
    fn has_room(&self) -> bool {
        self.conn.out_len() < self.out_bytes_max
    }
    fn send(&mut self, event: WatchEvent) {
        self.sent += 1;
        self.conn
            .send(&Message::new(self.watch_id, Body::WatchEvent(event)));
    }
}

impl Server {
    /// A change the worker applied and the replica took: recorded, once
    /// the history is known to continue this member's state.
    pub(super) fn record_applied(&mut self, update: &Update) {
        self.sync_history_epoch();
        self.history.record(update);
    }

    /// When the replica replaced its state (a snapshot, a rejoin), the
    /// history starts again after it, and the watches of the old state
    /// end: their next changes may not follow what they were sent.
    pub(super) fn sync_history_epoch(&mut self) {
        let epoch = self.replica.history_epoch();
        if epoch == self.history_epoch {
            return;
        }
        self.history_epoch = epoch;
        self.history.reset(self.replica.last_applied());
        let why = "this member's state was replaced; resume the watch (at any member)";
        for conn in self.conns.values_mut() {
            for w in std::mem::take(&mut conn.watches) {
                conn.send(&error(w.id, ErrorCode::Unavailable, why));
            }
        }
    }

    /// WATCH or UNWATCH: handled now when no reply is owed before it,
    /// else when it reaches the front of the connection's replies.
    pub(super) fn watch_request(&mut self, conn: &mut Conn, msg: Message) {
        if conn.slots.is_empty() {
            self.watch_now(conn, msg);
        } else {
            conn.slots.push_back(Slot::Watch(msg));
        }
    }

    /// Moves replies out in order, handling the WATCH and UNWATCH among
    /// them as they reach the front.
    pub(super) fn flush_with_watches(&mut self, conn: &mut Conn, budget: usize) {
        loop {
            conn.flush_slots(budget, |m| self.eval_read(m));
            if conn.out_len() > budget || !matches!(conn.slots.front(), Some(Slot::Watch(_))) {
                return;
            }
            if let Some(Slot::Watch(msg)) = conn.slots.pop_front() {
                self.watch_now(conn, msg);
            }
        }
    }

    fn watch_now(&mut self, conn: &mut Conn, msg: Message) {
        let id = msg.request_id;
        match msg.body {
            Body::Watch { from_seq, prefix } => {
                if let Err(reply) = self.open_watch(conn, id, from_seq, prefix) {
                    self.counters.errors_sent += 1;
                    conn.reply(&reply);
                }
            }
            Body::Unwatch { watch_id } => {
                let before = conn.watches.len();
                conn.watches.retain(|w| w.id != watch_id);
                let found = conn.watches.len() < before;
                conn.reply(&Message::new(id, Body::Unwatched { found }));
            }
            _ => {}
        }
    }

    fn open_watch(
        &mut self,
        conn: &mut Conn,
        id: u64,
        from_seq: u64,
        prefix: Vec<u8>,
    ) -> Result<(), Message> {
        self.replica.check_can_watch().map_err(|r| refusal(id, r))?;
        let horizon = self.replica.watch_horizon().unwrap_or(0);
        if conn.watches.len() >= WATCHES_PER_CONN_MAX {
            let why = format!(
                "at most {WATCHES_PER_CONN_MAX} watches per connection (WATCHES_PER_CONN_MAX)"
            );
            return Err(error(id, ErrorCode::BadRequest, why));
        }
        if conn.watches.iter().any(|w| w.id == id) {
            let why = format!("request id {id} already names an open watch on this connection");
            return Err(error(id, ErrorCode::BadRequest, why));
        }
        let (watch, first) =
            Watch::open(id, prefix, from_seq, &self.history, horizon).map_err(|end| {
                let code = end_code(end);
                error(id, code, end_message(end, self.history.floor()))
            })?;
        conn.reply(&Message::new(id, Body::WatchEvent(first)));
        conn.watches.push(watch);
        self.touch(conn.id);
        Ok(())
    }

    /// Sends each watch of `conn` what it is owed and has room for; ends
    /// the ones that fell behind. Returns whether committed changes are
    /// left for it (the caller pumps again).
    pub(super) fn pump_watches(&mut self, conn: &mut Conn) -> bool {
        if conn.watches.is_empty() {
            return false;
        }
        let Some(horizon) = self.replica.watch_horizon() else {
            let why = "this member stopped serving (fenced or rejoining); resume elsewhere";
            for w in std::mem::take(&mut conn.watches) {
                conn.send(&error(w.id, ErrorCode::Unavailable, why));
            }
            return false;
        };
        let lag_bytes_max = (self.cfg.watch_history_bytes / 2) as u64;
        let payload_bytes_max = self.cfg.payload_bytes_max;
        let mut watches = std::mem::take(&mut conn.watches);
        let mut more = false;
        watches.retain_mut(|w| {
            let mut sink = ConnSink {
                conn,
                watch_id: w.id,
                out_bytes_max: self.cfg.output_bytes_max,
                sent: 0,
            };
            let result = w.pump(
                &self.history,
                horizon,
                payload_bytes_max,
                lag_bytes_max,
                &mut sink,
            );
            self.counters.watch_events_sent += sink.sent;
            match result {
                Ok(left) => {
                    more |= left && conn.out_len() < self.cfg.output_bytes_max;
                    true
                }
                Err(end) => {
                    if matches!(end, WatchEnd::TooSlow { .. }) {
                        self.counters.watches_cut_slow += 1;
                        tracing::info!(
                            conn = conn.id,
                            watch = w.id,
                            ?end,
                            "watcher too slow: cut off"
                        );
                    }
                    let why = end_message(end, self.history.floor());
                    conn.send(&error(w.id, end_code(end), why));
                    false
                }
            }
        });
        conn.watches = watches;
        more
    }

    /// Marks every connection with a watch for pumping when the committed
    /// horizon moved since the last time.
    pub(super) fn touch_watchers(&mut self) {
        let horizon = self.replica.watch_horizon();
        if horizon == self.watch_horizon_seen {
            return;
        }
        self.watch_horizon_seen = horizon;
        let ids = self
            .conns
            .values()
            .filter(|c| !c.watches.is_empty())
            .map(|c| c.id);
        self.dirty.extend(ids);
    }

    /// Watches open on this server (STATS `watches_open`).
    pub(super) fn watches_open(&self) -> usize {
        self.conns.values().map(|c| c.watches.len()).sum()
    }
}

fn end_code(end: WatchEnd) -> ErrorCode {
    match end {
        WatchEnd::HistoryGone { .. } => ErrorCode::HistoryGone,
        WatchEnd::TooSlow { .. } => ErrorCode::WatchTooSlow,
    }
}

fn end_message(end: WatchEnd, floor: u64) -> String {
    match end {
        WatchEnd::HistoryGone { .. } => format!(
            "this member keeps the changes after seq {floor} only: read the keys, then watch from now"
        ),
        WatchEnd::TooSlow { lag_bytes } => format!(
            "{lag_bytes} bytes of changes behind: resume from the last seq received"
        ),
    }
}
