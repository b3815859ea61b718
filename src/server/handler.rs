//! Turning frames into replies: the connection state machine of the spec
//! (AWAIT_HELLO -> READY, or the peer handshake -> PEER), reads answered
//! here on the network thread, writes handed to the replica.
//!
//! What a frame may do is decided from its opcode and the connection's
//! state before its payload is decoded: before a handshake only HELLO and
//! PEER_HELLO are ever decoded (and the frame limit is small), a client
//! cannot get a peer or reply opcode decoded, and on a peer link nothing is
//! decoded before its MAC checks out.

use super::conn::{Conn, Kind, Slot};
use super::forward::NotForwarded;
use super::Server;
use crate::replica::{ReadScope, Refusal, WriteToken};
use crate::serialize::{list_encoded_len, Entry, Key, Stats};
use crate::serialize::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::wire::{
    op, Access, Body, ErrorCode, ErrorReply, Frame, FrameError, Hello, HelloOk, NodeRole,
};
use crate::wire::{BatchOp, PROTOCOL_VERSION};
use crate::wire::{HelloExtension, ServerLimit, HELLO_WANTS_EXTENSION, PROTOCOL_MINOR};
use crate::wire::{Message, MessageError, PeerRole, WriteMode, WriteOk, WriteOp, WriteOutcome};
use crate::wire::{OpClass, FEATURE_AUTH_REQUIRED, FEATURE_BATCH, FEATURE_CAS, FEATURE_DATA_DIR};
use crate::wire::{
    FEATURE_CRAQ_READS, FEATURE_RANGE, FEATURE_READ_FLOORS, FEATURE_WATCH, FLAG_NO_FORWARD,
};
use std::time::{Duration, Instant};

/// VALUE reply bytes besides the value: `u8 found`, `u64 version`, `u32`
/// length.
const VALUE_REPLY_OVERHEAD: usize = 13;

pub(super) fn error(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Message {
    Message::new(request_id, Body::Error(ErrorReply::new(code, message)))
}

pub(super) fn refusal(request_id: u64, r: Refusal) -> Message {
    let why = if r.why.is_empty() {
        r.code.to_string()
    } else {
        r.why.to_string()
    };
    let mut e = ErrorReply::new(r.code, why);
    e.redirect = r.redirect.unwrap_or_default();
    Message::new(request_id, Body::Error(e))
}

/// The error code a payload decoding failure maps to.
fn decode_error_code(e: &MessageError) -> ErrorCode {
    match e {
        MessageError::UnknownOpcode(_) => ErrorCode::UnknownOpcode,
        MessageError::BadPayload { .. } => ErrorCode::BadRequest,
    }
}

impl Server {
    /// Handles the frames buffered on `conn`, as long as it may take more.
    pub(super) fn process_frames(&mut self, conn: &mut Conn) {
        // Timed per batch of frames, not per frame: two clock reads per
        // request showed up at high request rates.
        let started = Instant::now();
        self.process_frames_untimed(conn);
        self.counters.serve_time_us += crate::units::micros(started.elapsed());
    }

    fn process_frames_untimed(&mut self, conn: &mut Conn) {
        // Replies queued here count against the server-wide budget at once,
        // so the connections served later in this iteration see them.
        let queued_before = conn.queued_bytes();
        self.process_frames_counted(conn);
        let grown = conn.queued_bytes().saturating_sub(queued_before);
        if !conn.is_peer() {
            self.client_buffer_bytes += grown;
        }
    }

    fn process_frames_counted(&mut self, conn: &mut Conn) {
        while self.wants_read(conn) {
            match conn.decoder.next_frame() {
                Ok(Some(frame)) => {
                    conn.last_frame_at = self.now;
                    self.handle_frame(conn, frame);
                }
                Ok(None) => return,
                Err(e) => {
                    let code = match e {
                        FrameError::BadMagic(_) | FrameError::BadCrc { .. } => ErrorCode::BadFrame,
                        FrameError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
                        FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                    };
                    if self.noise.allow(self.now) {
                        tracing::info!(conn = conn.id, peer = %conn.peer, error = %e, "stream error");
                    }
                    self.counters.errors_sent += 1;
                    conn.fail(code, e.to_string(), self.now);
                    return;
                }
            }
        }
    }

    fn handle_frame(&mut self, conn: &mut Conn, mut frame: Frame) {
        if let Some(mac) = conn.mac.as_mut() {
            if let Err(e) = mac.open(&mut frame) {
                self.counters.peer_auth_failures += 1;
                tracing::warn!(conn = conn.id, peer = %conn.peer, error = %e, "peer frame refused: closing the link");
                conn.start_closing(self.now);
                return;
            }
        }
        tracing::debug!(
            conn = conn.id,
            request_id = frame.request_id,
            opcode = frame.opcode,
            "frame"
        );
        match &conn.kind {
            Kind::AwaitHello => self.await_hello(conn, frame),
            Kind::AwaitAuth => self.await_auth(conn, frame),
            Kind::Client(access) => self.client_frame(conn, frame, *access),
            Kind::PeerHandshake { .. } => self.peer_proof(conn, frame),
            Kind::Predecessor { .. } => self.predecessor_frame(conn, frame),
            Kind::Successor { .. } => self.successor_frame(conn, frame),
        }
    }

    /// Decodes a frame already judged acceptable by opcode; a malformed
    /// payload is answered BAD_REQUEST (the stream itself is intact).
    fn decode_or_reply(&mut self, conn: &mut Conn, frame: &Frame) -> Option<Message> {
        match Message::from_frame(frame) {
            Ok(m) => Some(m),
            Err(e) => {
                self.counters.errors_sent += 1;
                conn.reply(&error(
                    frame.request_id,
                    decode_error_code(&e),
                    e.to_string(),
                ));
                None
            }
        }
    }

    fn await_hello(&mut self, conn: &mut Conn, frame: Frame) {
        let request_id = frame.request_id;
        match frame.opcode {
            op::PEER_HELLO => {
                let Ok(Message {
                    body: Body::PeerHello(h),
                    ..
                }) = Message::from_frame(&frame)
                else {
                    return self.refuse_peer(conn, "malformed PEER_HELLO");
                };
                self.peer_hello(conn, h);
            }
            _ if conn.peer_only => {
                // Admitted into a slot reserved for peers: nothing else.
                self.counters.connections_refused += 1;
                conn.fail(ErrorCode::TooManyConnections, self.at_limit(), self.now);
            }
            op::HELLO if conn.plaintext_on_tls_port => {
                self.counters.errors_sent += 1;
                let why = "this server serves clients over TLS only";
                conn.reply(&error(request_id, ErrorCode::BadRequest, why));
            }
            op::HELLO => {
                if let Some(msg) = self.decode_or_reply(conn, &frame) {
                    if let Body::Hello(h) = msg.body {
                        self.counters.count_request(op::HELLO);
                        self.hello(conn, request_id, h);
                    }
                }
            }
            other => {
                self.counters.errors_sent += 1;
                let why = format!("send HELLO first (got opcode 0x{other:02x})");
                conn.reply(&error(request_id, ErrorCode::HandshakeRequired, why));
            }
        }
    }

    /// HELLO_OK, with protocol 1.1's extension (spec §4.1.1) for a client
    /// that asked for it.
    pub(super) fn hello_ok(&self, request_id: u64, extension: bool) -> Message {
        let mut features =
            FEATURE_CAS | FEATURE_BATCH | FEATURE_WATCH | FEATURE_READ_FLOORS | FEATURE_RANGE;
        if self.cfg.users.is_some() {
            features |= FEATURE_AUTH_REQUIRED;
        }
        if self.cfg.storage.is_some() {
            features |= FEATURE_DATA_DIR;
        }
        if self.replica.craq() {
            features |= FEATURE_CRAQ_READS;
        }
        let payload_bytes_max = u32::try_from(self.cfg.payload_bytes_max).unwrap_or(u32::MAX);
        let extension = extension.then(|| HelloExtension {
            minor: PROTOCOL_MINOR,
            limits: self.announced_limits(),
        });
        Message::new(
            request_id,
            Body::HelloOk(HelloOk {
                version: PROTOCOL_VERSION,
                features,
                payload_bytes_max,
                role: self.replica.role(),
                last_seq: self.replica.hello_last_seq(),
                extension,
            }),
        )
    }

    /// The limits a 1.1 client learns in HELLO_OK (spec §4.1.1).
    fn announced_limits(&self) -> Vec<ServerLimit> {
        let cfg = &self.cfg;
        let ms = |d: Duration| crate::units::millis(d);
        [
            (ServerLimit::INFLIGHT_MAX, cfg.inflight_max as u64),
            (ServerLimit::OUTPUT_BYTES_MAX, cfg.output_bytes_max as u64),
            (ServerLimit::VALUE_BYTES_MAX, self.value_bytes_max() as u64),
            (ServerLimit::KEY_BYTES_MAX, KEY_BYTES_MAX as u64),
            (ServerLimit::IDLE_TIMEOUT_MS, ms(cfg.idle_timeout)),
            (ServerLimit::SEND_TIMEOUT_MS, ms(cfg.send_timeout)),
            (
                ServerLimit::WATCHES_PER_CONN_MAX,
                crate::watch::WATCHES_PER_CONN_MAX as u64,
            ),
            (
                ServerLimit::WATCH_HISTORY_BYTES,
                cfg.watch_history_bytes as u64,
            ),
        ]
        .into_iter()
        .map(|(id, value)| ServerLimit { id, value })
        .collect()
    }

    /// The largest value this server stores: one whose VALUE reply (13
    /// bytes and the value) fits the `payload_bytes_max` it announces, so
    /// that every value written can be read back (spec §7).
    pub(super) fn value_bytes_max(&self) -> usize {
        VALUE_BYTES_MAX.min(
            self.cfg
                .payload_bytes_max
                .saturating_sub(VALUE_REPLY_OVERHEAD),
        )
    }

    /// HELLO, first or again. Only the first moves the connection on; a
    /// later one is answered as the first was and changes nothing. HELLO
    /// with the obsolete peer role is refused and closed, first or not.
    fn hello(&mut self, conn: &mut Conn, request_id: u64, h: Hello) {
        if h.role == PeerRole::Peer {
            self.counters.errors_sent += 1;
            let why = "peer links open with PEER_HELLO and the cluster secret (spec 5.2)";
            conn.reply(&error(request_id, ErrorCode::Unavailable, why));
            conn.start_closing(self.now);
            return;
        }
        if matches!(conn.kind, Kind::AwaitHello) {
            if self.cfg.users.is_some() {
                // Still a stranger: small frames and the handshake timeout
                // until AUTH succeeds.
                conn.kind = Kind::AwaitAuth;
            } else {
                conn.kind = Kind::Client(Access::ReadWrite);
                conn.decoder
                    .set_payload_bytes_max(self.cfg.payload_bytes_max);
            }
        }
        let extension = h.features & HELLO_WANTS_EXTENSION != 0;
        conn.reply(&self.hello_ok(request_id, extension));
    }

    /// A frame from a client that has not logged in yet: HELLO and AUTH
    /// are decoded, anything else is refused by its opcode.
    fn await_auth(&mut self, conn: &mut Conn, frame: Frame) {
        if !matches!(frame.opcode, op::HELLO | op::AUTH) {
            self.counters.errors_sent += 1;
            let why = format!("send AUTH first (got opcode 0x{:02x})", frame.opcode);
            conn.reply(&error(frame.request_id, ErrorCode::AuthRequired, why));
            return;
        }
        if let Some(msg) = self.decode_or_reply(conn, &frame) {
            self.client_request(conn, msg, Access::ReadOnly, frame.flags);
        }
    }

    /// A frame on a ready client connection.
    fn client_frame(&mut self, conn: &mut Conn, frame: Frame, access: Access) {
        if OpClass::of(frame.opcode) != OpClass::ClientRequest {
            self.counters.errors_sent += 1;
            let why = format!("opcode 0x{:02x} is not a client request", frame.opcode);
            conn.reply(&error(frame.request_id, ErrorCode::UnknownOpcode, why));
            return;
        }
        if let Some(msg) = self.decode_or_reply(conn, &frame) {
            self.client_request(conn, msg, access, frame.flags);
        }
    }

    /// AUTH: log in as a user of the users file. A wrong user or password
    /// closes the connection, so each guess costs a connection.
    fn auth(&mut self, conn: &mut Conn, request_id: u64, user: &str, password: &str) {
        let Some(users) = self.cfg.users.clone() else {
            self.counters.errors_sent += 1;
            let why = "this server has no users (started without --users-file)";
            conn.reply(&error(request_id, ErrorCode::BadRequest, why));
            return;
        };
        match users.check(user, password) {
            Some(access) => {
                tracing::info!(conn = conn.id, user, ?access, "authenticated");
                conn.kind = Kind::Client(access);
                conn.decoder
                    .set_payload_bytes_max(self.cfg.payload_bytes_max);
                conn.reply(&Message::new(request_id, Body::AuthOk(access)));
            }
            None => {
                self.counters.auth_failures += 1;
                self.counters.errors_sent += 1;
                if self.noise.allow(self.now) {
                    tracing::warn!(conn = conn.id, peer = %conn.peer, user, "authentication failed");
                }
                conn.reply(&error(
                    request_id,
                    ErrorCode::AuthFailed,
                    "wrong user or password",
                ));
                conn.start_closing(self.now);
            }
        }
    }

    /// A decoded client request; `flags` are its frame header's (NO_FORWARD
    /// matters to writes at a member that is not the head).
    fn client_request(&mut self, conn: &mut Conn, msg: Message, access: Access, flags: u16) {
        let forward = flags & FLAG_NO_FORWARD == 0;
        self.counters.count_request(msg.body.opcode());
        if let Some(Err(r)) = self.shard.as_ref().map(|s| s.check(&msg.body)) {
            self.counters.errors_sent += 1;
            self.wrong_shard_refused += u64::from(r.code == ErrorCode::WrongShard);
            conn.reply(&refusal(msg.request_id, r));
            return;
        }
        match msg.body {
            Body::Hello(h) => self.hello(conn, msg.request_id, h),
            Body::Auth { user, password } => self.auth(conn, msg.request_id, &user, &password),
            ref body if body.is_write() && access == Access::ReadOnly => {
                self.counters.errors_sent += 1;
                let why = "this user may only read";
                conn.reply(&error(msg.request_id, ErrorCode::NotPermitted, why));
            }
            Body::Put { key, value, mode } => self.write(
                conn,
                (msg.request_id, forward),
                WriteOp::Put { key, value },
                mode,
            ),
            Body::Del { key, mode } => {
                self.write(conn, (msg.request_id, forward), WriteOp::Del { key }, mode)
            }
            // A compare-and-set is always synchronous: its answer is its
            // point (ASYNC is ignored, as on every request but PUT/DEL).
            Body::PutIf {
                key,
                expected,
                value,
            } => {
                let op = WriteOp::PutIf {
                    key,
                    value,
                    expected,
                };
                self.write(conn, (msg.request_id, forward), op, WriteMode::Sync);
            }
            Body::DelIf { key, expected } => {
                let op = WriteOp::DelIf { key, expected };
                self.write(conn, (msg.request_id, forward), op, WriteMode::Sync);
            }
            // One write, all or nothing, answered once the tail holds it.
            Body::MWrite { ops } => {
                self.write(
                    conn,
                    (msg.request_id, forward),
                    WriteOp::Batch(ops),
                    WriteMode::Sync,
                );
            }
            Body::Watch { .. } | Body::Unwatch { .. } => self.watch_request(conn, msg),
            Body::Backup => {
                if let Some(refused) = self.start_backup(conn, msg.request_id) {
                    self.counters.errors_sent += 1;
                    conn.reply(&refused);
                }
            }
            _ if conn.slots.is_empty() => {
                let reply = self.eval_read(&msg);
                conn.reply(&reply);
            }
            _ => conn.slots.push_back(Slot::Read(msg)),
        }
    }

    /// A write with `(request_id, forward)`: `forward` unless the client
    /// set NO_FORWARD (see `forward.rs`).
    fn write(&mut self, conn: &mut Conn, req: (u64, bool), op: WriteOp, mode: WriteMode) {
        let (request_id, forward) = req;
        let opcode = match op {
            WriteOp::Put { .. } => op::PUT,
            WriteOp::PutIf { .. } => op::CPUT,
            WriteOp::DelIf { .. } => op::CDEL,
            WriteOp::Batch(_) => op::MWRITE,
            _ => op::DEL,
        };
        let longest_value = match &op {
            WriteOp::Put { value, .. } | WriteOp::PutIf { value, .. } => value.len(),
            WriteOp::Batch(ops) => ops
                .iter()
                .map(|o| match o {
                    BatchOp::Put { value, .. } => value.len(),
                    BatchOp::Del { .. } => 0,
                })
                .max()
                .unwrap_or(0),
            _ => 0,
        };
        if let WriteOp::Batch(ops) = &op {
            let bytes = crate::wire::batch_encoded_len(ops);
            if bytes > crate::wire::BATCH_BYTES_MAX {
                // It must fit one log record (spec §7, BATCH_BYTES_MAX).
                self.counters.errors_sent += 1;
                let max = crate::wire::BATCH_BYTES_MAX;
                let why = format!("a batch of {bytes} bytes: at most {max} (BATCH_BYTES_MAX)");
                conn.reply(&error(request_id, ErrorCode::BadRequest, why));
                return;
            }
        }
        let max = self.value_bytes_max();
        if longest_value > max {
            // A value whose VALUE reply would not fit the frame limit
            // announced could never be read back (spec §7).
            self.counters.errors_sent += 1;
            let why = format!("value of {longest_value} bytes: this server stores at most {max} (its frame limit less the VALUE reply's 13 bytes)");
            conn.reply(&error(request_id, ErrorCode::BadRequest, why));
            return;
        }
        if let Some(h) = self.health.as_ref().filter(|h| h.failing()) {
            self.counters.errors_sent += 1;
            let why = format!("cannot write the log: {}", h.why());
            conn.reply(&error(request_id, ErrorCode::StorageUnavailable, why));
            return;
        }
        if !self.queue_has_room() {
            self.counters.errors_sent += 1;
            let why = "write queue full; retry later";
            conn.reply(&error(request_id, ErrorCode::Busy, why));
            return;
        }
        let token = (mode == WriteMode::Sync).then_some(WriteToken {
            conn: conn.id,
            request_id,
        });
        if forward && self.forwarder.is_some() && !self.replica.is_head() {
            if let Some(head) = self.replica.forward_target() {
                self.forward_write(conn, request_id, opcode, head, op, mode);
                return;
            }
        }
        match self.replica.handle_client_write(op, token) {
            Ok(_) if mode == WriteMode::Sync => {
                conn.slots.push_back(Slot::Write { request_id, opcode });
            }
            Ok(seq) => {
                let result = WriteOk {
                    op_id: seq,
                    outcome: WriteOutcome::Pending,
                };
                let body = if opcode == op::PUT {
                    Body::PutOk(result)
                } else {
                    Body::DelOk(result)
                };
                conn.reply(&Message::new(request_id, body));
            }
            Err(r) => {
                self.counters.errors_sent += 1;
                conn.reply(&refusal(request_id, r));
            }
        }
    }

    /// Hands a write this member may not take to the forwarding thread
    /// (see `forward.rs`); its answer fills the write's slot.
    fn forward_write(
        &mut self,
        conn: &mut Conn,
        request_id: u64,
        opcode: u8,
        head: String,
        op: WriteOp,
        mode: WriteMode,
    ) {
        let bytes = op.held_bytes();
        let body = match op {
            WriteOp::Put { key, value } => Body::Put { key, value, mode },
            WriteOp::Del { key } => Body::Del { key, mode },
            WriteOp::PutIf {
                key,
                value,
                expected,
            } => Body::PutIf {
                key,
                expected,
                value,
            },
            WriteOp::DelIf { key, expected } => Body::DelIf { key, expected },
            WriteOp::Batch(ops) => Body::MWrite { ops },
            WriteOp::Noop | WriteOp::Unchanged { .. } => {
                conn.reply(&error(
                    request_id,
                    ErrorCode::Internal,
                    "not a client write",
                ));
                return;
            }
        };
        let Some(forwarder) = self.forwarder.as_mut() else {
            return;
        };
        match forwarder.forward(conn.id, request_id, head, body, bytes) {
            Ok(()) => {
                self.counters.writes_forwarded += 1;
                conn.slots.push_back(Slot::Write { request_id, opcode });
            }
            Err(NotForwarded::Full) => {
                self.counters.errors_sent += 1;
                let (n, bytes) = (forwarder.inflight(), forwarder.inflight_bytes());
                let why = format!(
                    "{n} forwarded writes ({bytes} bytes) in flight: at most {} (FORWARDS_INFLIGHT_MAX) and {} bytes (FORWARD_BYTES_MAX); retry",
                    super::forward::FORWARDS_INFLIGHT_MAX,
                    super::forward::FORWARD_BYTES_MAX
                );
                conn.reply(&error(request_id, ErrorCode::Busy, why));
            }
            Err(NotForwarded::Stopped) => {
                self.counters.errors_sent += 1;
                let why = "the forwarding thread stopped; send writes to the head";
                conn.reply(&error(request_id, ErrorCode::Unavailable, why));
            }
        }
    }

    /// Answers a read (or STATS) from the current state.
    pub(super) fn eval_read(&self, msg: &Message) -> Message {
        let id = msg.request_id;
        let scope = match &msg.body {
            Body::Stats | Body::Hello(_) => None,
            Body::Get { key } | Body::GetAtLeast { key, .. } => {
                Some(ReadScope::Keys(std::slice::from_ref(key)))
            }
            Body::MGet { keys } => Some(ReadScope::Keys(keys)),
            Body::Size | Body::GetKeys | Body::GetTable | Body::Range { .. } => {
                Some(ReadScope::Table)
            }
            _ => Some(ReadScope::TailOnly),
        };
        if let Some(scope) = scope {
            let off_tail = matches!(self.replica.role(), NodeRole::Head | NodeRole::Middle);
            let checked = self.replica.check_can_read(scope);
            if off_tail {
                let (mut answered, mut sent) = self.craq_reads.get();
                match checked {
                    Ok(()) => answered += 1,
                    Err(_) => sent += 1,
                }
                self.craq_reads.set((answered, sent));
            }
            if let Err(r) = checked {
                return refusal(id, r);
            }
        }
        if let Body::GetAtLeast { min_seq, .. } = &msg.body {
            if let Err(r) = self.replica.check_floor(*min_seq) {
                return refusal(id, r);
            }
        }
        // A list's size is known before anything is copied: one over the
        // frame limit is refused without cloning the table.
        let list_bytes = match &msg.body {
            Body::GetKeys => self.table.keys_encoded_len(),
            Body::GetTable => self.table.entries_encoded_len(),
            _ => 0,
        };
        if let Some(refused) = self.over_frame_limit(id, list_bytes) {
            return refused;
        }
        let body = match &msg.body {
            Body::Get { key } | Body::GetAtLeast { key, .. } => Body::Value(self.table.get(key)),
            Body::MGet { keys } => {
                // Sized before anything is copied (see `get_many_within`).
                let max = self.cfg.payload_bytes_max;
                let fits = |sizes: &mut dyn Iterator<Item = Option<usize>>| {
                    let reply = sizes
                        .map(|s| s.map_or(1, |len| VALUE_REPLY_OVERHEAD + len))
                        .fold(4usize, usize::saturating_add);
                    reply <= max
                };
                match self.table.get_many_within(keys, fits) {
                    Some(values) => Body::MGetOk(values),
                    None => {
                        let why = format!("the reply exceeds the {max}-byte frame limit");
                        return error(id, ErrorCode::ResultTooLarge, why);
                    }
                }
            }
            Body::Size => Body::SizeOk {
                entries: self.table.len() as u64,
            },
            Body::GetKeys => Body::Keys(self.table.keys()),
            Body::Range { from, to, limit } => match self.range(from, to, *limit) {
                Some(page) => page,
                None => {
                    let why = "the range's first entry alone exceeds the frame limit";
                    return error(id, ErrorCode::ResultTooLarge, why);
                }
            },
            Body::GetTable => Body::Entries(self.table.entries()),
            Body::Verify { op_id } => Body::VerifyOk(self.replica.verify(*op_id)),
            Body::Stats => Body::StatsOk(self.stats()),
            Body::Hello(h) => return self.hello_ok(id, h.features & HELLO_WANTS_EXTENSION != 0),
            _ => return error(id, ErrorCode::Internal, "not a read"),
        };
        // The worker may have written between the check and the copy:
        // the copy's own size is what the frame limit is held to.
        // Every reply is held to the limit announced in HELLO_OK (spec §7):
        // a VALUE too (a member with a larger limit may have admitted it).
        let payload_bytes = match &body {
            Body::Keys(keys) => list_encoded_len(keys.iter().map(Key::encoded_len)),
            Body::Entries(entries) => list_encoded_len(entries.iter().map(Entry::encoded_len)),
            // (A RANGE page was cut to the limit as it was built.)
            // (An MGET was sized under the locks it was copied under.)
            Body::Value(Some(v)) => VALUE_REPLY_OVERHEAD + v.value.len(),
            Body::StatsOk(s) => crate::serialize::Codec::to_bytes(s).len(),
            _ => 0,
        };
        self.over_frame_limit(id, payload_bytes)
            .unwrap_or_else(|| Message::new(id, body))
    }

    /// A RANGE page: the table's entries from `from`, cut where the reply
    /// would pass the frame limit (the next page then starts at the first
    /// entry left out); `None` if not even one entry fits.
    fn range(&self, from: &[u8], to: &[u8], limit: u32) -> Option<Body> {
        let to = (!to.is_empty()).then_some(to);
        let (mut entries, mut next) = self.table.range(from, to, limit as usize);
        // The list's count, and the longest `next` there can be.
        let mut bytes = 4 + 2 + crate::serialize::KEY_BYTES_MAX;
        let fits = entries
            .iter()
            .take_while(|e| {
                bytes = bytes.saturating_add(e.encoded_len());
                bytes <= self.cfg.payload_bytes_max
            })
            .count();
        if fits < entries.len() {
            if fits == 0 {
                return None;
            }
            next = Some(entries.swap_remove(fits).key);
            entries.truncate(fits);
        }
        let next = next.map(|k| k.as_bytes().to_vec()).unwrap_or_default();
        Some(Body::RangeOk { entries, next })
    }

    /// RESULT_TOO_LARGE if a reply of `payload_bytes` would not fit a frame.
    fn over_frame_limit(&self, id: u64, payload_bytes: usize) -> Option<Message> {
        let max = self.cfg.payload_bytes_max;
        (payload_bytes > max).then(|| {
            let why = format!("the reply exceeds the {max}-byte frame limit");
            error(id, ErrorCode::ResultTooLarge, why)
        })
    }

    fn stats(&self) -> Stats {
        let mut s = Stats::default();
        let mut counters = self.counters.clone();
        counters.successor_timeouts = self.replica.successor_timeouts();
        counters.fill(&mut s);
        s.count("clients_connected", self.client_count() as u64);
        s.count("entries", self.table.len() as u64);
        s.count("table_digest", self.table.digest());
        s.count("n_lists", self.table.n_lists() as u64);
        s.count("queue_depth", self.queue.depth() as u64);
        s.count("last_assigned", self.replica.last_queued());
        s.count("last_executed", self.replica.last_applied());
        s.text("role", self.replica.role().name());
        s.count("watches_open", self.watches_open() as u64);
        s.count("watch_history_floor", self.history.floor());
        s.count("watch_history_bytes", self.history.bytes() as u64);
        if self.coord.is_some() {
            s.text("node", self.replica.name());
            s.count(
                "session_timeout_ms",
                crate::units::millis(self.replica.lease()),
            );
            let pred = self
                .replica
                .predecessor()
                .map(|m| format!("{} {}", m.name, m.addr));
            let succ = self
                .replica
                .successor_member()
                .map(|m| format!("{} {}", m.name, m.addr));
            s.text("predecessor", pred.as_deref().unwrap_or("-"));
            s.text("successor", succ.as_deref().unwrap_or("-"));
            s.count("last_applied", self.replica.last_applied());
            s.count("last_acked", self.replica.last_acked());
            s.count("sent_len", self.replica.sent_len() as u64);
            let (answered, sent) = self.craq_reads.get();
            s.count("craq", u64::from(self.replica.craq()));
            s.count("dirty_keys", self.replica.dirty_keys() as u64);
            s.count("reads_off_tail", answered);
            s.count("reads_sent_to_tail", sent);
            let f = self.forwarder.as_ref();
            s.count("forwards_inflight", f.map_or(0, |f| f.inflight()) as u64);
            s.count(
                "forward_bytes_inflight",
                f.map_or(0, |f| f.inflight_bytes()) as u64,
            );
            if self.replica.is_durable() {
                s.count("durable_floor", self.replica.durable_floor());
                s.count("ids_reserved", self.replica.ids_reserved());
            }
            let t = self.replica.transfers();
            s.count("transfers_full", t.full);
            s.count("transfers_delta", t.delta);
            s.count("transfer_delta_updates", t.delta_updates);
        }
        if let Some(shard) = &self.shard {
            s.text("shard_chain", shard.chain());
            let map = shard.map();
            s.count("shard_map_version", map.map_or(0, |m| m.version));
            let owned = map.map_or(0, |m| {
                m.ranges()
                    .iter()
                    .filter(|r| r.chain == shard.chain())
                    .count()
            });
            s.count("shard_ranges_owned", owned as u64);
            s.count("wrong_shard_refused", self.wrong_shard_refused);
        }
        if let (Some(h), Some(st)) = (&self.health, &self.cfg.storage) {
            use std::sync::atomic::Ordering::Relaxed;
            s.text("fsync", st.fsync.name());
            s.count("storage_failing", u64::from(h.failing()));
            s.count("logged_seq", h.logged_seq.load(Relaxed));
            s.count("snapshots", h.snapshots.load(Relaxed));
            s.count("snapshot_seq", h.snapshot_seq.load(Relaxed));
            s.count(
                "snapshot_pause_us_max",
                h.snapshot_pause_us_max.load(Relaxed),
            );
        }
        s
    }
}
