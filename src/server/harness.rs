//! A server driven one connection at a time by a fuzzer or a test: bytes
//! go straight into the connection's decoder (no `poll`, no reading), the
//! server's own frame handling, reply ordering and budget checks run as in
//! production, and the harness checks after every step that no bound was
//! passed. Replies are written to a loopback socket whose other end the
//! harness drains (or, to play a client that stops reading, does not).
//!
//! Not part of the supported API: it exists for `fuzz/` and `tests/`.

use super::conn::{Conn, Kind};
use super::{Server, ServerConfig, HANDSHAKE_PAYLOAD_BYTES_MAX};
use crate::wire::HEADER_BYTES;
use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

#[doc(hidden)]
pub struct ConnHarness {
    server: Server,
    id: u64,
    /// The client's end of the connection: replies arrive here.
    client: TcpStream,
    scratch: Vec<u8>,
}

impl ConnHarness {
    /// Small limits, so that a fuzzer reaches every bound in a few steps.
    #[must_use]
    pub fn small_config() -> ServerConfig {
        ServerConfig {
            payload_bytes_max: 64 * 1024,
            output_bytes_max: 128 * 1024,
            inflight_max: 32,
            queue_depth_max: 64,
            ..ServerConfig::default()
        }
    }

    /// A client's HELLO frame (request id 1).
    #[must_use]
    pub fn hello_frame() -> Vec<u8> {
        use crate::wire::{Body, Hello, Message, PeerRole};
        let hello = Hello {
            role: PeerRole::Client,
            features: 0,
            node: String::new(),
        };
        Message::new(1, Body::Hello(hello)).to_bytes()
    }

    /// A standalone server (listening on a loopback port nobody uses) and
    /// one fresh connection to it, before HELLO.
    pub fn new(mut cfg: ServerConfig) -> io::Result<ConnHarness> {
        cfg.listen = "127.0.0.1:0".into();
        cfg.handle_signals = false;
        let server = Server::bind(cfg).map_err(|e| io::Error::other(e.to_string()))?;
        let pair = TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(pair.local_addr()?)?;
        let (stream, _) = pair.accept()?;
        stream.set_nonblocking(true)?;
        client.set_nonblocking(true)?;
        let mut h = ConnHarness {
            server,
            id: 0,
            client,
            scratch: vec![0; 64 * 1024],
        };
        h.id = h.server.next_conn_id;
        h.server.next_conn_id += 1;
        let mut conn = Conn::new(
            h.id,
            stream,
            Kind::AwaitHello,
            HANDSHAKE_PAYLOAD_BYTES_MAX,
            Instant::now(),
        );
        conn.counted = true;
        h.server.clients_connected += 1;
        h.server.conns.insert(h.id, conn);
        Ok(h)
    }

    /// Whether the server still holds the connection.
    #[must_use]
    pub fn open(&self) -> bool {
        self.server.conns.contains_key(&self.id)
    }

    /// Delivers `bytes` as if they had arrived on the socket (as many as the
    /// decoder takes now, which is what the server would read), then lets
    /// the server do everything it would: handle frames, finish writes,
    /// flush replies. `drain`: the client reads what was sent to it.
    /// Returns how many bytes were taken.
    pub fn step(&mut self, bytes: &[u8], drain: bool) -> usize {
        self.server.now = Instant::now();
        let taken = match self.server.conns.get_mut(&self.id) {
            Some(conn) if !conn.closing => conn.decoder.feed(bytes),
            _ => 0,
        };
        self.server.client_buffer_bytes = self.server.count_client_buffers();
        self.server.touch(self.id);
        // Twice: once for the frames, once more after the worker's
        // completions (synchronous writes) have come back.
        for _ in 0..2 {
            self.server.drain_background();
            self.server.pump_all();
        }
        if drain {
            while let Ok(n) = self.client.read(&mut self.scratch) {
                if n == 0 {
                    break;
                }
            }
        }
        taken
    }

    /// Waits (up to `timeout`) for the worker to finish the writes this
    /// connection is waiting for, handling their completions as they come.
    pub fn settle(&mut self, timeout: std::time::Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let waiting = self.server.conns.get(&self.id).is_some_and(|c| {
                c.slots
                    .iter()
                    .any(|s| matches!(s, super::conn::Slot::Write { .. }))
            });
            if !waiting {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            self.step(&[], false);
        }
    }

    /// A one-line description of the connection's state (for debugging).
    #[must_use]
    pub fn describe(&self) -> String {
        match self.server.conns.get(&self.id) {
            Some(c) => format!(
                "{:?} slots {} out {} closing {} frame_ready {} wants_read {}",
                c.kind,
                c.slots.len(),
                c.out_len(),
                c.closing,
                c.decoder.frame_ready(),
                self.server.wants_read(c)
            ),
            None => "closed".into(),
        }
    }

    /// Bytes of requests held unread in the decoder, and reply bytes queued.
    #[must_use]
    pub fn held(&self) -> (usize, usize) {
        self.server
            .conns
            .get(&self.id)
            .map_or((0, 0), |c| (c.decoder.buffered(), c.queued_bytes()))
    }

    /// The bounds the connection must keep, checked from outside; `Err`
    /// names the first one passed.
    pub fn check_bounds(&self) -> Result<(), String> {
        let Some(c) = self.server.conns.get(&self.id) else {
            return Ok(()); // closed: it holds nothing
        };
        let cfg = &self.server.cfg;
        let in_max = HEADER_BYTES + cfg.payload_bytes_max;
        if c.decoder.buffered() > in_max {
            return Err(format!("input {} > {}", c.decoder.buffered(), in_max));
        }
        if c.kind.in_handshake()
            && c.decoder.bytes_max() > HEADER_BYTES + HANDSHAKE_PAYLOAD_BYTES_MAX
        {
            return Err("a stranger may send full-size frames".into());
        }
        // One reply may land on top of the budget before reading stops.
        let out_max = cfg.output_bytes_max + HEADER_BYTES + cfg.payload_bytes_max;
        if c.queued_bytes() > out_max {
            return Err(format!("queued output {} > {}", c.queued_bytes(), out_max));
        }
        if c.slots.len() > cfg.inflight_max {
            return Err(format!(
                "{} requests in flight > {}",
                c.slots.len(),
                cfg.inflight_max
            ));
        }
        if self.server.replica.sent_len() > cfg.sent_max {
            return Err("Sent list over its bound".into());
        }
        Ok(())
    }
}

impl Drop for ConnHarness {
    /// Stops the server's worker thread (a fuzzer makes many harnesses).
    fn drop(&mut self) {
        self.server.queue.close();
        if let Some(w) = self.server.worker.take() {
            let _ = w.join();
        }
    }
}
