//! Test harness: real `table-server` processes on free loopback ports, a
//! real ZooKeeper (see `zk.rs`), and raw-socket helpers. Every process is
//! killed when its handle drops, so a failing test leaves nothing behind.
#![allow(dead_code)]

pub mod chain;
pub mod cluster;
pub mod lincheck;
pub mod netns;
pub mod torture;
pub mod zk;

use chaintable::client::{Client, Options};
use chaintable::wire::{decode_frame, Body, Hello, Message, PeerRole};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The environment variable that lets a test skip a scenario this
/// environment cannot stage (`netns`: network namespaces; `tmpfs`: a small
/// tmpfs mount), e.g. `CHAINTABLE_ALLOW_SKIP=netns,tmpfs`. Without it such
/// a test fails, so a scenario that did not run never passes for one that
/// did.
pub const ALLOW_SKIP_ENV: &str = "CHAINTABLE_ALLOW_SKIP";

/// Whether a test that needs `needs` (which this environment lacks) may
/// skip, saying so loudly, rather than fail; panics with the reason
/// otherwise.
pub fn skip_allowed(kind: &str, needs: &str, what: &str, why: &str) -> bool {
    let allowed = std::env::var(ALLOW_SKIP_ENV).is_ok_and(|v| v.split(',').any(|s| s == kind));
    if !allowed {
        panic!(
            "{what} needs {needs}, which this environment cannot provide: {why}\n\
             (run as root, as scripts/test.sh does, or set {ALLOW_SKIP_ENV}={kind} to skip it)"
        );
    }
    eprintln!("SKIPPED ({what}, allowed by {ALLOW_SKIP_ENV}={kind}): {why}");
    true
}

pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_table-server"))
}

pub fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_table-client"))
}

/// The lowest port a test server or ZooKeeper is given.
const FIRST_TEST_PORT: u16 = 10_000;

/// A port nobody listens on right now, for a server the test starts next.
///
/// Ports come from below the kernel's ephemeral range: a port inside it
/// (what binding port 0 returns) can be handed to any outgoing connection
/// as its source port between this check and the server's bind, and the
/// server then fails with "address in use" (seen in CI). Within one test
/// binary a counter hands out each port once; it starts at an offset
/// derived from the pid so that concurrent binaries rarely meet, and every
/// candidate is checked by binding it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let below = ephemeral_range_start().unwrap_or(32_768);
    if below <= FIRST_TEST_PORT + 1_000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        return l.local_addr().expect("local addr").port();
    }
    let span = u32::from(below - FIRST_TEST_PORT);
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST_TEST_PORT + u16::try_from((offset + n) % span).expect("under span");
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST_TEST_PORT}..{below}");
}

/// The first port of the kernel's ephemeral range, if it says.
fn ephemeral_range_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// A client's HELLO (request id 1).
pub fn client_hello() -> Message {
    Message::new(
        1,
        Body::Hello(Hello {
            role: PeerRole::Client,
            features: 0,
            node: String::new(),
        }),
    )
}

/// The cluster secret every test chain shares (what an operator would
/// generate with `head -c 32 /dev/urandom | base64`).
pub const TEST_SECRET: &str = "test-cluster-secret-0123456789abcdef";

/// A file holding [`TEST_SECRET`], written once per test binary.
pub fn cluster_secret_file() -> String {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join(format!("cluster-secret-{}", std::process::id()));
        std::fs::write(&path, format!("{TEST_SECRET}\n")).expect("write the test secret");
        path.display().to_string()
    })
    .clone()
}

/// The ZooKeeper digest login of test chains (derived from [`TEST_SECRET`]
/// as members derive it): what an insider holding the secret can do.
pub fn cluster_login() -> Vec<u8> {
    let secret = chaintable::auth::Secret::new(TEST_SECRET.as_bytes().to_vec());
    chaintable::coord::digest_credentials(&secret)
}

/// Runs `table-client` with `args` and extra environment variables.
pub fn table_client(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(client_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run table-client")
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `table-server` child process.
pub struct ServerProc {
    pub child: Child,
    /// The address clients use: 127.0.0.1, or the member's own address
    /// when it runs in a test network namespace (see `netns.rs`).
    pub host: String,
    pub port: u16,
    pub log: PathBuf,
}

impl ServerProc {
    /// Starts `table-server <port> <n_lists> [extra...]` and waits until
    /// it accepts connections.
    pub fn start(n_lists: u32, extra: &[&str]) -> ServerProc {
        ServerProc::start_on(free_port(), n_lists, extra)
    }

    pub fn start_on(port: u16, n_lists: u32, extra: &[&str]) -> ServerProc {
        let cmd = Command::new(server_bin());
        ServerProc::spawn(cmd, "127.0.0.1", port, n_lists, extra)
    }

    /// Starts a server inside network namespace `ns`, reachable (and
    /// registered in ZooKeeper) as `host:port`. `ip netns exec` execs the
    /// server, so the child's pid is the server's own.
    pub fn start_in(ns: &str, host: &str, port: u16, n_lists: u32, extra: &[&str]) -> ServerProc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(server_bin());
        let advertise = format!("{host}:{port}");
        let mut args: Vec<&str> = vec!["--advertise", &advertise];
        args.extend_from_slice(extra);
        ServerProc::spawn(cmd, host, port, n_lists, &args)
    }

    fn spawn(mut cmd: Command, host: &str, port: u16, n_lists: u32, extra: &[&str]) -> ServerProc {
        let log = std::env::temp_dir().join(format!(
            "chaintable-server-{host}-{port}-{}.log",
            std::process::id()
        ));
        let log_file = std::fs::File::create(&log).expect("create server log");
        let child = cmd
            .arg(port.to_string())
            .arg(n_lists.to_string())
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn table-server");
        let mut p = ServerProc {
            child,
            host: host.to_string(),
            port,
            log,
        };
        // A server that exits (e.g. cannot bind) must fail here, not leave
        // the test talking to whatever else answers on that port.
        let up = wait_for(Duration::from_secs(10), || {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Some(Err(status));
            }
            TcpStream::connect(p.addr()).ok().map(|_| Ok(()))
        });
        match up {
            Some(Ok(())) => p,
            Some(Err(status)) => panic!(
                "table-server on {}:{port} exited ({status}) before serving; log:\n{}",
                p.host,
                p.log_text()
            ),
            None => panic!(
                "table-server on {}:{port} did not start; log:\n{}",
                p.host,
                p.log_text()
            ),
        }
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid fits an i32")
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.addr()).expect("connect to test server")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Highest resident set size seen over `over`, sampled every 100 ms.
    pub fn peak_rss_kib(&self, over: Duration) -> u64 {
        let mut peak = 0;
        let end = Instant::now() + over;
        while Instant::now() < end {
            peak = peak.max(self.rss_kib());
            std::thread::sleep(Duration::from_millis(100));
        }
        peak
    }

    /// The high-water mark of resident memory in KiB (VmHWM): the peak,
    /// however briefly it was reached.
    pub fn peak_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// A KiB field of /proc/<pid>/status (0 if it cannot be read).
    fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        wait_for(timeout, || self.child.try_wait().ok().flatten())?.code()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- log of table-server :{} ---\n{}",
                self.port,
                self.log_text()
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Client options for tests: short timeouts so failures are quick.
pub fn quick_opts() -> Options {
    Options {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

/// A raw connection for sending hand-made bytes.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).expect("raw connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("set timeout");
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and completes the handshake.
    pub fn hello(addr: &str) -> Raw {
        let mut r = Raw::connect(addr);
        r.send(&client_hello());
        let reply = r.recv().expect("HELLO_OK");
        assert!(matches!(reply.body, Body::HelloOk(_)), "{reply:?}");
        r
    }

    pub fn send(&mut self, m: &Message) {
        self.send_bytes(&m.to_bytes());
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("raw write");
    }

    /// The next message, or `None` on EOF or timeout.
    pub fn recv(&mut self) -> Option<Message> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Ok(Some((frame, used))) = decode_frame(&self.buf, usize::MAX) {
                self.buf.drain(..used);
                return Message::from_frame(&frame).ok();
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Whether the server has closed the connection (EOF within `timeout`).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(timeout));
        let mut b = [0u8; 1024];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}
