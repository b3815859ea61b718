//! One TCP connection as the poll loop sees it: bytes in through a
//! [`FrameDecoder`], replies out through a bounded buffer, and the slots
//! that keep replies in request order while synchronous writes wait.

use crate::wire::{Body, ErrorCode, ErrorReply, FrameDecoder, Message};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;

/// What the other end is, as learned from its HELLO (or our own dial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Connected, no HELLO yet.
    AwaitHello,
    Client,
    /// Our predecessor, streaming updates to us.
    Predecessor {
        node: String,
    },
    /// Our successor, which we dialled; `ready` once it sent HELLO_OK.
    Successor {
        node: String,
        ready: bool,
    },
}

/// A reply position on a connection. Replies leave in slot order.
#[derive(Debug)]
pub enum Slot {
    /// Encoded reply, ready to go.
    Ready(Vec<u8>),
    /// A synchronous write waiting for the tail.
    Write { request_id: u64, is_put: bool },
    /// A read queued behind a waiting write, evaluated when it reaches the
    /// front so that it sees the writes sent before it on this connection.
    Read(Message),
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
    /// Close once the output is flushed (after a stream error).
    pub closing: bool,
    /// Non-blocking connect still in progress (successor links).
    pub connecting: bool,
}

/// Result of reading from the socket.
pub enum ReadOutcome {
    /// Some bytes were read (maybe zero); the connection is open.
    Open,
    /// The peer closed its side or the socket failed.
    Closed,
}

impl Conn {
    pub fn new(id: u64, stream: TcpStream, kind: Kind, payload_bytes_max: usize) -> Conn {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        Conn {
            id,
            stream,
            kind,
            peer,
            decoder: FrameDecoder::new(payload_bytes_max),
            out: Vec::new(),
            out_pos: 0,
            slots: VecDeque::new(),
            closing: false,
            connecting: false,
        }
    }

    pub fn is_peer(&self) -> bool {
        matches!(self.kind, Kind::Predecessor { .. } | Kind::Successor { .. })
    }

    /// Bytes queued for this connection and not yet written.
    pub fn out_len(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Reads what the socket has, up to what the decoder can hold; returns
    /// the bytes read through `bytes_in`.
    pub fn read_some(&mut self, scratch: &mut [u8], bytes_in: &mut u64) -> ReadOutcome {
        loop {
            let room = self.decoder.bytes_max() - self.decoder.buffered();
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
                    debug_assert_eq!(taken, n);
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

    /// Queues an encoded frame for sending (no ordering: peers, errors).
    pub fn send(&mut self, msg: &Message) {
        msg.encode(&mut self.out);
    }

    /// Queues a reply in request order.
    pub fn reply(&mut self, msg: &Message) {
        if self.slots.is_empty() {
            self.send(msg);
        } else {
            self.slots.push_back(Slot::Ready(msg.to_bytes()));
        }
    }

    /// Sends an unsolicited error and closes once it is flushed.
    pub fn fail(&mut self, code: ErrorCode, message: impl Into<String>) {
        let reply = Message::new(0, Body::Error(ErrorReply::new(code, message)));
        self.send(&reply);
        self.closing = true;
    }

    /// Moves ready slots at the front into the output buffer. Deferred reads
    /// are handed to `eval` when they reach the front.
    pub fn flush_slots(&mut self, mut eval: impl FnMut(&Message) -> Message) {
        while let Some(slot) = self.slots.front() {
            match slot {
                Slot::Write { .. } => return,
                Slot::Ready(bytes) => self.out.extend_from_slice(bytes),
                Slot::Read(msg) => {
                    let reply = eval(msg);
                    reply.encode(&mut self.out);
                }
            }
            self.slots.pop_front();
        }
    }

    /// Fills the first waiting write slot with `request_id`.
    pub fn complete_write(&mut self, request_id: u64, make: impl FnOnce(bool) -> Message) {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| matches!(s, Slot::Write { request_id: r, .. } if *r == request_id));
        if let Some(slot) = slot {
            let Slot::Write { is_put, .. } = *slot else {
                return;
            };
            *slot = Slot::Ready(make(is_put).to_bytes());
        }
    }

    /// Writes as much output as the socket takes. Err means the connection
    /// is dead.
    pub fn write_some(&mut self, bytes_out: &mut u64) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    *bytes_out += n as u64;
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
