//! The client library: one connection to one server, typed calls for every
//! operation, and pipelined batches. [`chain::ChainClient`] builds on it to
//! follow a chain through ZooKeeper.

pub mod chain;
pub mod cli;
pub mod cluster;
mod error;
mod watch;

pub use error::ClientError;
pub use watch::{ChainWatcher, WatchUpdate, Watcher};

use crate::serialize::{Entry, Key, Stats};
use crate::wire::{BatchOp, Body, CasOk, FrameDecoder, Hello, HelloOk, Message, PeerRole};
use crate::wire::{
    OpState, Versioned, WriteMode, WriteOk, FLAG_NO_FORWARD, PAYLOAD_BYTES_MAX_DEFAULT,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long to wait for the TCP connection (and TLS handshake).
    pub connect_timeout: Duration,
    /// How long to wait for each reply.
    pub read_timeout: Duration,
    /// Logged in with AUTH right after HELLO, when set.
    pub credentials: Option<Credentials>,
    /// Speak TLS, trusting this configuration's CAs (see
    /// [`crate::tls::client_config`]); the server's certificate must name
    /// the host of the address dialled.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Send every write with the NO_FORWARD flag (spec §5.6): a member
    /// that is not the head redirects it (NOT_HEAD) instead of forwarding.
    pub no_forward: bool,
}

/// The byte stream under a client: plain TCP or TLS over it.
enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.sock,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
        }
    }
}

/// A user of the server's users file and its password.
#[derive(Clone)]
pub struct Credentials {
    /// The user name, as in the users file.
    pub user: String,
    /// The password, sent in AUTH (use TLS on an untrusted network).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, password hidden)", self.user)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(10),
            credentials: None,
            tls: None,
            no_forward: false,
        }
    }
}

/// A connection to one table-server.
pub struct Client {
    addr: String,
    stream: Transport,
    decoder: FrameDecoder,
    /// Bytes read from the socket that the decoder had no room for yet.
    unfed: Vec<u8>,
    next_request_id: u64,
    opts: Options,
    hello: HelloOk,
    /// What the server granted after AUTH (`None`: no AUTH sent).
    access: Option<crate::wire::Access>,
}

impl Client {
    /// Connects with default timeouts and performs the handshake.
    ///
    /// # Errors
    ///
    /// As [`Client::connect_with`].
    pub fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, Options::default())
    }

    /// Connects to `addr` with `opts` (timeouts, credentials, TLS) and
    /// performs HELLO (and AUTH).
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the address does not resolve, the connection or
    /// the TLS handshake fails, or the server refuses HELLO or AUTH.
    pub fn connect_with(addr: &str, opts: Options) -> Result<Client, ClientError> {
        let tcp = open(addr, opts.connect_timeout)?;
        let _ = tcp.set_nodelay(true);
        let stream = match &opts.tls {
            None => Transport::Plain(tcp),
            Some(cfg) => {
                let tls_error = |e: String| ClientError::Connect {
                    addr: addr.to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                };
                let name = crate::tls::server_name(addr).map_err(|e| tls_error(e.to_string()))?;
                let conn = rustls::ClientConnection::new(cfg.clone(), name)
                    .map_err(|e| tls_error(e.to_string()))?;
                Transport::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        };
        let mut client = Client {
            addr: addr.to_string(),
            stream,
            decoder: FrameDecoder::new(PAYLOAD_BYTES_MAX_DEFAULT),
            unfed: Vec::new(),
            next_request_id: 1,
            access: None,
            opts,
            hello: HelloOk {
                version: 0,
                features: 0,
                payload_bytes_max: 0,
                role: crate::wire::NodeRole::Standalone,
                last_seq: 0,
                extension: None,
            },
        };
        // A 1.1 client: a 1.0 server ignores the bit and answers as 1.0.
        let hello = Body::Hello(Hello {
            role: PeerRole::Client,
            features: crate::wire::HELLO_WANTS_EXTENSION,
            node: String::new(),
        });
        match client.call(hello)? {
            Body::HelloOk(h) => client.hello = h,
            other => return Err(unexpected(&other)),
        }
        if let Some(c) = client.opts.credentials.clone() {
            let auth = Body::Auth {
                user: c.user,
                password: c.password,
            };
            match client.call(auth)? {
                Body::AuthOk(access) => client.access = Some(access),
                other => return Err(unexpected(&other)),
            }
        }
        Ok(client)
    }

    /// The `host:port` this client is connected to.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The options this connection was made with.
    #[must_use]
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// What the server said in its HELLO_OK.
    #[must_use]
    pub fn server_hello(&self) -> &HelloOk {
        &self.hello
    }

    /// What AUTH granted, if credentials were given.
    #[must_use]
    pub fn access(&self) -> Option<crate::wire::Access> {
        self.access
    }

    /// Sends one request and waits for its reply. ERROR replies become
    /// `ClientError::Server`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] on a broken connection, a timeout (the outcome of a
    /// write is then unknown), or an ERROR reply.
    pub fn call(&mut self, body: Body) -> Result<Body, ClientError> {
        let mut replies = self.pipeline(vec![body])?;
        replies
            .pop()
            .unwrap_or_else(|| Err(ClientError::Protocol("no reply".into())))
    }

    /// Sends every request at once, then reads every reply (in order).
    /// The outer error means the connection failed; inner ones are per request.
    ///
    /// # Errors
    ///
    /// As [`Client::call`], for the first request that fails.
    pub fn pipeline(
        &mut self,
        bodies: Vec<Body>,
    ) -> Result<Vec<Result<Body, ClientError>>, ClientError> {
        let has_write = bodies.iter().any(Body::is_write);
        let first_id = self.next_request_id;
        let count = bodies.len() as u64;
        let mut out = Vec::new();
        for body in bodies {
            let flags = if self.opts.no_forward {
                FLAG_NO_FORWARD
            } else {
                0
            };
            Message::new(self.next_request_id, body).encode_flagged(flags, &mut out);
            self.next_request_id += 1;
        }
        let timeout_ms = crate::units::millis(self.opts.read_timeout);
        self.stream
            .write_all(&out)
            .map_err(|e| ClientError::from_io(e, has_write, timeout_ms))?;
        let mut replies = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for i in 0..count {
            let msg = self.read_message(has_write)?;
            if msg.request_id != first_id + i {
                // Request id 0: an unsolicited error before the server closes.
                if let Body::Error(e) = msg.body {
                    return Err(ClientError::Server(e));
                }
                return Err(ClientError::Protocol(format!(
                    "reply for request {} while waiting for {}",
                    msg.request_id,
                    first_id + i
                )));
            }
            replies.push(match msg.body {
                Body::Error(e) => Err(ClientError::Server(e)),
                other => Ok(other),
            });
        }
        Ok(replies)
    }

    fn read_message(&mut self, write: bool) -> Result<Message, ClientError> {
        let timeout_ms = crate::units::millis(self.opts.read_timeout);
        let _ = self
            .stream
            .tcp()
            .set_read_timeout(Some(self.opts.read_timeout));
        let mut buf = [0u8; 64 * 1024];
        loop {
            if !self.unfed.is_empty() {
                let taken = self.decoder.feed(&self.unfed);
                self.unfed.drain(..taken);
            }
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Message::from_frame(&frame)?);
            }
            let n = self
                .stream
                .read(&mut buf)
                .map_err(|e| ClientError::from_io(e, write, timeout_ms))?;
            if n == 0 {
                return Err(ClientError::Disconnected {
                    reason: "server closed the connection".into(),
                    write,
                });
            }
            self.unfed.extend_from_slice(&buf[..n]);
        }
    }

    fn write(&mut self, body: Body) -> Result<WriteOk, ClientError> {
        match self.call(body)? {
            Body::PutOk(w) | Body::DelOk(w) => Ok(w),
            other => Err(unexpected(&other)),
        }
    }

    /// Stores `value` under `key`; returns once executed (by every replica).
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer a PUT.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<WriteOk, ClientError> {
        self.put_mode(key, value, WriteMode::Sync)
    }

    /// Stores without waiting for execution; check the op id with `verify`.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer a PUT.
    pub fn put_async(&mut self, key: &[u8], value: &[u8]) -> Result<WriteOk, ClientError> {
        self.put_mode(key, value, WriteMode::Async)
    }

    /// PUT, synchronous or asynchronous.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer a PUT.
    pub fn put_mode(
        &mut self,
        key: &[u8],
        value: &[u8],
        mode: WriteMode,
    ) -> Result<WriteOk, ClientError> {
        let key = Key::new(key)?;
        self.write(Body::Put {
            key,
            value: value.to_vec(),
            mode,
        })
    }

    /// Compare-and-set: stores `value` under `key` only if the key's
    /// version is `expected` (0: only if absent). Always synchronous. A
    /// mismatch is not an error: the result's outcome says `Mismatch` and
    /// its `version` is the key's current one.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer a CPUT.
    pub fn put_if(
        &mut self,
        key: &[u8],
        value: &[u8],
        expected: u64,
    ) -> Result<CasOk, ClientError> {
        let key = Key::new(key)?;
        let value = value.to_vec();
        match self.call(Body::PutIf {
            key,
            expected,
            value,
        })? {
            Body::PutIfOk(c) => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    /// Compare-and-delete: deletes `key` only if its version is
    /// `expected`; as [`Client::put_if`].
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer a CDEL.
    pub fn del_if(&mut self, key: &[u8], expected: u64) -> Result<CasOk, ClientError> {
        let key = Key::new(key)?;
        match self.call(Body::DelIf { key, expected })? {
            Body::DelIfOk(c) => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    /// The values of `keys` (up to [`crate::wire::BATCH_OPS_MAX`]), read at
    /// one instant, in order.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; a key that is not a valid key; a reply that
    /// does not answer an MGET.
    pub fn mget(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Versioned>>, ClientError> {
        let keys = keys
            .iter()
            .map(|k| Key::new(*k))
            .collect::<Result<Vec<_>, _>>()?;
        match self.call(Body::MGet { keys })? {
            Body::MGetOk(values) => Ok(values),
            other => Err(unexpected(&other)),
        }
    }

    /// Executes `ops` (PUTs and DELs, up to [`crate::wire::BATCH_OPS_MAX`])
    /// as one write, all or nothing, and returns its operation id: the
    /// version of every entry it wrote.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer an MWRITE.
    pub fn mwrite(&mut self, ops: Vec<BatchOp>) -> Result<u64, ClientError> {
        match self.call(Body::MWrite { ops })? {
            Body::MWriteOk { op_id } => Ok(op_id),
            other => Err(unexpected(&other)),
        }
    }

    /// Synchronous DEL.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer a DEL.
    pub fn del(&mut self, key: &[u8]) -> Result<WriteOk, ClientError> {
        self.del_mode(key, WriteMode::Sync)
    }

    /// DEL, synchronous or asynchronous.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer a DEL.
    pub fn del_mode(&mut self, key: &[u8], mode: WriteMode) -> Result<WriteOk, ClientError> {
        let key = Key::new(key)?;
        self.write(Body::Del { key, mode })
    }

    /// The value and its version, or `None` if the key is absent.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer a GET.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Versioned>, ClientError> {
        match self.call(Body::Get {
            key: Key::new(key)?,
        })? {
            Body::Value(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// SIZE: the number of entries.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer SIZE.
    pub fn size(&mut self) -> Result<u64, ClientError> {
        match self.call(Body::Size)? {
            Body::SizeOk { entries } => Ok(entries),
            other => Err(unexpected(&other)),
        }
    }

    /// GETKEYS: every key.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer GETKEYS.
    pub fn keys(&mut self) -> Result<Vec<Key>, ClientError> {
        match self.call(Body::GetKeys)? {
            Body::Keys(k) => Ok(k),
            other => Err(unexpected(&other)),
        }
    }

    /// GETTABLE: every entry.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer GETTABLE.
    pub fn table(&mut self) -> Result<Vec<Entry>, ClientError> {
        match self.call(Body::GetTable)? {
            Body::Entries(e) => Ok(e),
            other => Err(unexpected(&other)),
        }
    }

    /// STATS: the server's counters and state.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer STATS.
    pub fn stats(&mut self) -> Result<Stats, ClientError> {
        match self.call(Body::Stats)? {
            Body::StatsOk(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    /// BACKUP: streams a consistent snapshot of the table (a snapshot file,
    /// spec/STORAGE.md) into `out`; returns the bytes written.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; an ERROR reply ends the stream (BUSY when a
    /// backup is already running or writes outpaced it; NOT_TAIL in a chain
    /// at a member that is not the tail), and so does a failed write to
    /// `out` ([`ClientError::Protocol`]).
    pub fn backup_to(&mut self, out: &mut dyn std::io::Write) -> Result<u64, ClientError> {
        let id = self.next_request_id;
        self.next_request_id += 1;
        let mut frame = Vec::new();
        Message::new(id, Body::Backup).encode(&mut frame);
        let timeout_ms = crate::units::millis(self.opts.read_timeout);
        self.stream
            .write_all(&frame)
            .map_err(|e| ClientError::from_io(e, false, timeout_ms))?;
        let mut bytes = 0u64;
        loop {
            let msg = self.read_message(false)?;
            match msg.body {
                Body::Error(e) => return Err(ClientError::Server(e)),
                _ if msg.request_id != id => {
                    return Err(ClientError::Protocol(format!(
                        "reply for request {} during backup {id}",
                        msg.request_id
                    )))
                }
                Body::BackupChunk { last, data } => {
                    out.write_all(&data).map_err(|e| {
                        ClientError::Protocol(format!("cannot write the backup: {e}"))
                    })?;
                    bytes += data.len() as u64;
                    if last {
                        return Ok(bytes);
                    }
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// VERIFY: whether the write with `op_id` was executed.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; also a reply that does not answer VERIFY.
    pub fn verify(&mut self, op_id: u64) -> Result<OpState, ClientError> {
        match self.call(Body::Verify { op_id })? {
            Body::VerifyOk(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }
}

pub(crate) fn unexpected(body: &Body) -> ClientError {
    ClientError::Protocol(format!("unexpected reply opcode 0x{:02x}", body.opcode()))
}

fn open(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        })?
        .collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => ClientError::Refused {
            addr: addr.to_string(),
        },
        Some(source) => ClientError::Connect {
            addr: addr.to_string(),
            source,
        },
        None => ClientError::Connect {
            addr: addr.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"),
        },
    })
}
