//! Counters the network thread keeps (it is the only writer, so no atomics).

use crate::serialize::Stats;
use crate::wire::op;

#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Requests answered, STATS excluded (as the seeds define it).
    pub ops_served: u64,
    pub serve_time_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub errors_sent: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub disconnected_slow: u64,
    /// Handshakes (peer proofs, PEER_HELLOs) refused and peer frames whose
    /// MAC did not check out.
    pub peer_auth_failures: u64,
    /// Updates refused because they did not continue the history.
    pub peer_stream_violations: u64,
    pub handshake_timeouts: u64,
    /// Connections closed to make room before their HELLO.
    pub handshake_evictions: u64,
    pub idle_closed: u64,
    /// Idle clients closed to admit a newcomer at the connection limit.
    pub idle_evictions: u64,
    pub accept_errors: u64,
    /// AUTH attempts with a wrong user or password.
    pub auth_failures: u64,
    /// Successor links dropped and redialled for staying silent.
    pub successor_timeouts: u64,
    /// WATCH_EVENT frames sent.
    pub watch_events_sent: u64,
    /// Watches ended with WATCH_TOO_SLOW.
    pub watches_cut_slow: u64,
    /// Client writes forwarded to the head (spec §5.6).
    pub writes_forwarded: u64,
    /// Per request opcode 0x01..=LAST_REQUEST (index 0 unused).
    pub per_op: [u64; op::LAST_REQUEST as usize + 1],
}

impl Counters {
    pub fn count_request(&mut self, opcode: u8) {
        if opcode != op::STATS {
            self.ops_served += 1;
        }
        if let Some(n) = self.per_op.get_mut(opcode as usize) {
            *n += 1;
        }
    }

    pub fn fill(&self, s: &mut Stats) {
        s.count("ops_served", self.ops_served);
        s.count("serve_time_us", self.serve_time_us);
        s.count("bytes_in", self.bytes_in);
        s.count("bytes_out", self.bytes_out);
        s.count("errors_sent", self.errors_sent);
        s.count("connections_accepted", self.connections_accepted);
        s.count("connections_refused", self.connections_refused);
        s.count("disconnected_slow_readers", self.disconnected_slow);
        s.count("successor_timeouts", self.successor_timeouts);
        s.count("peer_auth_failures", self.peer_auth_failures);
        s.count("peer_stream_violations", self.peer_stream_violations);
        s.count("handshake_timeouts", self.handshake_timeouts);
        s.count("handshake_evictions", self.handshake_evictions);
        s.count("idle_closed", self.idle_closed);
        s.count("idle_evictions", self.idle_evictions);
        s.count("accept_errors", self.accept_errors);
        s.count("auth_failures", self.auth_failures);
        s.count("watch_events_sent", self.watch_events_sent);
        s.count("watches_cut_slow", self.watches_cut_slow);
        s.count("writes_forwarded", self.writes_forwarded);
        let names = [
            (op::HELLO, "ops_hello"),
            (op::PUT, "ops_put"),
            (op::GET, "ops_get"),
            (op::DEL, "ops_del"),
            (op::SIZE, "ops_size"),
            (op::GETKEYS, "ops_getkeys"),
            (op::GETTABLE, "ops_gettable"),
            (op::STATS, "ops_stats"),
            (op::VERIFY, "ops_verify"),
            (op::AUTH, "ops_auth"),
            (op::BACKUP, "ops_backup"),
            (op::CPUT, "ops_cput"),
            (op::CDEL, "ops_cdel"),
            (op::MGET, "ops_mget"),
            (op::MWRITE, "ops_mwrite"),
            (op::WATCH, "ops_watch"),
            (op::UNWATCH, "ops_unwatch"),
            (op::RANGE, "ops_range"),
        ];
        for (code, name) in names {
            s.count(name, self.per_op[code as usize]);
        }
    }
}
