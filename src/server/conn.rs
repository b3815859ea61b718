//! One TCP connection as the poll loop sees it: bytes in through a
//! [`FrameDecoder`], replies out through a bounded buffer, and the slots
//! that keep replies in request order while synchronous writes wait.

use crate::auth::{Initiator, LinkMac, Responder};
use crate::wire::{Access, Body, ErrorCode, ErrorReply, FrameDecoder, Message};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// Buffers above this capacity are given back once empty, so a connection
/// that once carried a large frame does not keep its memory while idle.
const IDLE_BUFFER_BYTES: usize = 64 * 1024;

/// What the other end is, as learned from its HELLO (or our own dial).
#[derive(Debug, Clone)]
pub enum Kind {
    /// Connected, no HELLO yet.
    AwaitHello,
    /// A client past HELLO on a server with users: only AUTH (or HELLO)
    /// until it has logged in.
    AwaitAuth,
    /// A client that may send requests, with what it may do.
    Client(Access),
    /// Sent PEER_HELLO and got our challenge; its proof decides whether it
    /// becomes our predecessor. Until then it displaces nothing.
    PeerHandshake {
        from: String,
        responder: Box<Responder>,
    },
    /// Our predecessor, authenticated, streaming updates to us.
    Predecessor {
        #[allow(dead_code)] // shown by Debug in logs
        node: String,
    },
    /// Our successor, which we dialled.
    Successor { node: String, stage: Stage },
}

/// What carries the frames of a connection.
pub enum Wire {
    /// Frames straight on TCP.
    Plain,
    /// A server with client TLS: the first byte will tell a TLS ClientHello
    /// from a plaintext frame (which may then only open a peer link).
    Sniffing(std::sync::Arc<rustls::ServerConfig>),
    Tls(Box<rustls::ServerConnection>),
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Wire::Plain => "Plain",
            Wire::Sniffing(_) => "Sniffing",
            Wire::Tls(_) => "Tls",
        })
    }
}

/// How far the handshake with a successor we dialled has got.
#[derive(Debug, Clone)]
pub enum Stage {
    /// PEER_HELLO sent; waiting for its PEER_CHALLENGE.
    Challenged(Box<Initiator>),
    /// Our proof sent; waiting for its (authenticated) HELLO_OK.
    Proved,
    /// HELLO_OK received: the link carries replication traffic.
    Ready,
}

impl Kind {
    pub fn is_ready_successor(&self) -> bool {
        matches!(
            self,
            Kind::Successor {
                stage: Stage::Ready,
                ..
            }
        )
    }

    /// Still proving who it is (counts against the handshake timeout).
    pub fn in_handshake(&self) -> bool {
        matches!(
            self,
            Kind::AwaitHello | Kind::AwaitAuth | Kind::PeerHandshake { .. }
        )
    }
}

/// A reply position on a connection. Replies leave in slot order.
#[derive(Debug)]
pub enum Slot {
    /// Encoded reply, ready to go.
    Ready(Vec<u8>),
    /// A synchronous write waiting for the tail.
    /// A synchronous write waiting for the tail; `opcode` is its request's
    /// (PUT, DEL, CPUT or CDEL), which picks its reply.
    Write { request_id: u64, opcode: u8 },
    /// A read queued behind a waiting write, evaluated when it reaches the
    /// front so that it sees the writes sent before it on this connection.
    Read(Message),
    /// A BACKUP streaming its chunks (see `backup.rs`); the replies after
    /// it wait until it ends.
    Backup,
    /// A WATCH or UNWATCH behind replies still owed: opened (or closed)
    /// when it reaches the front, so that a watch's first frame follows
    /// the replies to the requests before it, and its events follow that.
    Watch(Message),
}

#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub stream: TcpStream,
    pub kind: Kind,
    pub peer: String,
    pub decoder: FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    pub slots: VecDeque<Slot>,
    /// Bytes of encoded replies in `slots` (kept, not summed, so checking
    /// the output budget per request costs nothing).
    slot_bytes: usize,
    /// Counted in the server's client total (not a peer, not peer-only).
    pub counted: bool,
    /// Close once the output is flushed (after a stream error).
    pub closing: bool,
    /// Non-blocking connect still in progress (successor links).
    pub connecting: bool,
    /// The authenticated peer link's MAC state: every frame in and out
    /// carries a tag (spec §5.2).
    pub mac: Option<LinkMac>,
    pub wire: Wire,
    /// A plaintext connection on a server that requires TLS for clients:
    /// only a peer handshake is accepted on it.
    pub plaintext_on_tls_port: bool,
    /// Accepted into the slots reserved for peers while clients fill the
    /// connection limit: it may only open a peer link.
    pub peer_only: bool,
    pub opened_at: Instant,
    /// Last complete frame received.
    pub last_frame_at: Instant,
    /// Last time output was empty or the socket took some of it: a client
    /// whose output has not moved for the send timeout is not reading.
    pub last_drain_at: Instant,
    /// When `closing` was set: a closing connection gets a grace period to
    /// receive what it is owed, then is closed regardless.
    pub closing_since: Option<Instant>,
    /// Open watches (spec §4.1, WATCH): their events go straight to the
    /// output, between replies, at most `WATCHES_PER_CONN_MAX` of them.
    pub watches: Vec<crate::watch::Watch>,
}

/// Result of reading from the socket.
pub enum ReadOutcome {
    /// Some bytes were read (maybe zero); the connection is open.
    Open,
    /// The peer closed its side or the socket failed.
    Closed,
}

impl Conn {
    pub fn new(
        id: u64,
        stream: TcpStream,
        kind: Kind,
        payload_bytes_max: usize,
        now: Instant,
    ) -> Conn {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        Conn {
            mac: None,
            wire: Wire::Plain,
            plaintext_on_tls_port: false,
            peer_only: false,
            opened_at: now,
            last_frame_at: now,
            last_drain_at: now,
            closing_since: None,
            watches: Vec::new(),
            id,
            stream,
            kind,
            peer,
            decoder: FrameDecoder::new(payload_bytes_max),
            out: Vec::new(),
            out_pos: 0,
            slots: VecDeque::new(),
            slot_bytes: 0,
            counted: false,
            closing: false,
            connecting: false,
        }
    }

    /// A peer link, or a connection on its way to becoming one: not a
    /// client, and not counted against the client limit.
    pub fn is_peer(&self) -> bool {
        matches!(
            self.kind,
            Kind::Predecessor { .. } | Kind::Successor { .. } | Kind::PeerHandshake { .. }
        )
    }

    /// Bytes queued for this connection and not yet written.
    pub fn out_len(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Reply bytes owed to this connection: written-out buffer plus encoded
    /// replies waiting behind a synchronous write.
    pub fn queued_bytes(&self) -> usize {
        self.out_len() + self.slot_bytes
    }

    /// Memory this connection's buffers hold: buffer capacities (not
    /// lengths) and replies waiting in slots.
    pub fn memory_bytes(&self) -> usize {
        self.out.capacity() + self.decoder.capacity() + self.slot_bytes
    }

    /// Nothing in flight, nothing to send, nothing half-received, and no
    /// watch open (a watcher waits for changes, not for itself).
    pub fn is_idle(&self) -> bool {
        self.slots.is_empty()
            && !self.wants_write()
            && self.decoder.buffered() == 0
            && self.watches.is_empty()
    }

    /// Marks the connection for closing once what it is owed is sent.
    pub fn start_closing(&mut self, now: Instant) {
        self.closing = true;
        self.closing_since.get_or_insert(now);
    }

    /// Gives back large buffers that are empty (see [`IDLE_BUFFER_BYTES`]).
    pub fn shrink_idle_buffers(&mut self) {
        if self.out_len() == 0 && self.out.capacity() > IDLE_BUFFER_BYTES {
            self.out = Vec::new();
            self.out_pos = 0;
        }
        self.decoder.shrink_if_empty(IDLE_BUFFER_BYTES);
    }

    /// Whether output is waiting for the socket (ours, or TLS records).
    pub fn wants_write(&self) -> bool {
        self.out_len() > 0 || matches!(&self.wire, Wire::Tls(t) if t.wants_write())
    }

    /// Reads what the socket has, up to what the decoder can hold; returns
    /// the bytes read through `bytes_in`.
    pub fn read_some(&mut self, scratch: &mut [u8], bytes_in: &mut u64) -> ReadOutcome {
        if let Wire::Sniffing(cfg) = &self.wire {
            let cfg = cfg.clone();
            // `None`: decided (TLS or plaintext); read on below.
            if let Some(outcome) = self.sniff(cfg, scratch, bytes_in) {
                return outcome;
            }
        }
        if matches!(self.wire, Wire::Tls(_)) {
            return self.read_tls(scratch, bytes_in);
        }
        loop {
            let room = room(&self.decoder);
            if room == 0 {
                return ReadOutcome::Open;
            }
            let want = room.min(scratch.len());
            match self.stream.read(&mut scratch[..want]) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => {
                    *bytes_in += n as u64;
                    // `room` was computed above, so the decoder takes it all.
                    let taken = self.decoder.feed(&scratch[..n]);
                    assert_eq!(taken, n, "the decoder took less than the room it offered");
                    if n < want {
                        return ReadOutcome::Open;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }

    /// Reads the first bytes and decides between TLS and plaintext.
    /// `Some` when there is nothing more to do now.
    fn sniff(
        &mut self,
        cfg: std::sync::Arc<rustls::ServerConfig>,
        scratch: &mut [u8],
        bytes_in: &mut u64,
    ) -> Option<ReadOutcome> {
        let want = room(&self.decoder).min(scratch.len()).max(1);
        let n = match self.stream.read(&mut scratch[..want]) {
            Ok(0) => return Some(ReadOutcome::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(ReadOutcome::Open),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Some(ReadOutcome::Open),
            Err(_) => return Some(ReadOutcome::Closed),
        };
        *bytes_in += n as u64;
        if scratch[0] != crate::tls::TLS_HANDSHAKE_RECORD {
            self.wire = Wire::Plain;
            self.plaintext_on_tls_port = true;
            self.decoder.feed(&scratch[..n]);
            return Some(ReadOutcome::Open);
        }
        let Ok(mut tls) = rustls::ServerConnection::new(cfg) else {
            return Some(ReadOutcome::Closed);
        };
        if tls.read_tls(&mut &scratch[..n]).is_err() || tls.process_new_packets().is_err() {
            return Some(ReadOutcome::Closed);
        }
        self.wire = Wire::Tls(Box::new(tls));
        None
    }

    /// TLS: moves decrypted bytes into the decoder while it has room, and
    /// reads more records only once rustls holds no plaintext (so its
    /// buffer never grows past one read's worth).
    fn read_tls(&mut self, scratch: &mut [u8], bytes_in: &mut u64) -> ReadOutcome {
        let Wire::Tls(tls) = &mut self.wire else {
            return ReadOutcome::Closed;
        };
        loop {
            loop {
                let room = room(&self.decoder);
                if room == 0 {
                    return ReadOutcome::Open;
                }
                let want = room.min(scratch.len());
                match tls.reader().read(&mut scratch[..want]) {
                    Ok(0) => return ReadOutcome::Closed, // close_notify
                    Ok(n) => {
                        self.decoder.feed(&scratch[..n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return ReadOutcome::Closed,
                }
            }
            match tls.read_tls(&mut self.stream) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => *bytes_in += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadOutcome::Closed,
            }
            if let Err(e) = tls.process_new_packets() {
                tracing::debug!(conn = self.id, peer = %self.peer, error = %e, "TLS error");
                let _ = tls.write_tls(&mut self.stream); // the alert, if it fits
                return ReadOutcome::Closed;
            }
        }
    }

    /// Queues an encoded frame for sending (no ordering: peers, errors);
    /// on an authenticated peer link it carries the link's MAC.
    pub fn send(&mut self, msg: &Message) {
        match self.mac.as_mut() {
            Some(mac) => msg.encode_sealed(&mut self.out, mac),
            None => msg.encode(&mut self.out),
        }
    }

    /// Queues a reply in request order.
    pub fn reply(&mut self, msg: &Message) {
        if self.slots.is_empty() {
            self.send(msg);
        } else {
            let bytes = msg.to_bytes();
            self.slot_bytes += bytes.len();
            self.slots.push_back(Slot::Ready(bytes));
        }
    }

    /// Sends an unsolicited error (request id 0) after every reply already
    /// owed, and closes once they are all flushed: a stream error never
    /// overtakes the answers to requests that came before it.
    pub fn fail(&mut self, code: ErrorCode, message: impl Into<String>, now: Instant) {
        let reply = Message::new(0, Body::Error(ErrorReply::new(code, message)));
        self.reply(&reply);
        self.start_closing(now);
    }

    /// Moves ready slots at the front into the output buffer, until more
    /// than `out_bytes_max` is queued. Deferred reads are handed to `eval`
    /// when they reach the front, so a pipeline of large reads is encoded
    /// only as fast as the client takes it.
    pub fn flush_slots(&mut self, out_bytes_max: usize, mut eval: impl FnMut(&Message) -> Message) {
        while let Some(slot) = self.slots.front() {
            if self.out_len() > out_bytes_max {
                return;
            }
            match slot {
                Slot::Write { .. } | Slot::Backup | Slot::Watch(_) => return,
                Slot::Ready(bytes) => {
                    self.slot_bytes -= bytes.len();
                    self.out.extend_from_slice(bytes)
                }
                Slot::Read(msg) => {
                    let reply = eval(msg);
                    reply.encode(&mut self.out);
                }
            }
            self.slots.pop_front();
        }
    }

    /// Whether [`Conn::flush_slots`] would move something now.
    pub fn slots_flushable(&self, out_bytes_max: usize) -> bool {
        self.out_len() <= out_bytes_max
            && self
                .slots
                .front()
                .is_some_and(|s| !matches!(s, Slot::Write { .. } | Slot::Backup))
    }

    /// Fills the first waiting write slot with `request_id`.
    pub fn complete_write(&mut self, request_id: u64, make: impl FnOnce(u8) -> Message) {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| matches!(s, Slot::Write { request_id: r, .. } if *r == request_id));
        if let Some(slot) = slot {
            let Slot::Write { opcode, .. } = *slot else {
                return;
            };
            let bytes = make(opcode).to_bytes();
            self.slot_bytes += bytes.len();
            *slot = Slot::Ready(bytes);
        }
    }

    /// Writes as much output as the socket takes. Err means the connection
    /// is dead.
    pub fn write_some(&mut self, bytes_out: &mut u64, now: Instant) -> io::Result<()> {
        if !self.wants_write() {
            self.last_drain_at = now;
        }
        if let Wire::Tls(tls) = &mut self.wire {
            write_tls(
                tls,
                &self.out,
                &mut self.out_pos,
                &mut self.stream,
                bytes_out,
                &mut self.last_drain_at,
                now,
            )?;
        }
        while self.out_pos < self.out.len() && matches!(self.wire, Wire::Plain | Wire::Sniffing(_))
        {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    *bytes_out += n as u64;
                    self.last_drain_at = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > self.out.len() / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }
}

/// Bytes the decoder can take now.
fn room(decoder: &FrameDecoder) -> usize {
    decoder.bytes_max().saturating_sub(decoder.buffered())
}

/// Hands queued output to rustls (as much as its buffer takes) and writes
/// its records to the socket, until the socket is full or all is sent.
fn write_tls(
    tls: &mut rustls::ServerConnection,
    out: &[u8],
    out_pos: &mut usize,
    stream: &mut TcpStream,
    bytes_out: &mut u64,
    last_drain_at: &mut Instant,
    now: Instant,
) -> io::Result<()> {
    loop {
        let mut progressed = false;
        if *out_pos < out.len() {
            let n = tls.writer().write(&out[*out_pos..])?;
            *out_pos += n;
            progressed |= n > 0;
        }
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    *bytes_out += n as u64;
                    *last_drain_at = now;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if !progressed || *out_pos == out.len() {
            return Ok(());
        }
    }
}
