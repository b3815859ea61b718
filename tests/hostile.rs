//! Scenario: an outsider with no credentials attacks real servers, as the
//! hostile-network issue did with a few hundred lines of Python: what a
//! connection may cost (memory, slots, CPU, time), and the replies owed to
//! a connection that then breaks the stream. Each attack must fail, and a
//! well-behaved client beside it must keep working. Peer and ZooKeeper
//! attacks on a chain are in `hostile_chain.rs`.

#![cfg(feature = "testing")]

mod common;

use chaintable::serialize::Key;
use chaintable::wire::{op, Body, ErrorCode, Frame, Message, WriteMode};
use common::{Raw, ServerProc};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn error_code(m: &Message) -> Option<ErrorCode> {
    match &m.body {
        Body::Error(e) => e.error_code(),
        _ => None,
    }
}

fn get(id: u64, key: &str) -> Message {
    Message::new(
        id,
        Body::Get {
            key: Key::new(key).unwrap(),
        },
    )
}

/// Median latency of `n` GETs on a fresh client.
fn median_get_latency(addr: &str, n: usize) -> Duration {
    let mut c = chaintable::client::Client::connect(addr).expect("bystander connects");
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            c.get(b"probe").expect("bystander GET");
            t.elapsed()
        })
        .collect();
    samples.sort();
    samples[n / 2]
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

#[test]
fn a_stranger_cannot_make_the_server_buffer_a_large_frame_before_hello() {
    let s = ServerProc::start(4, &[]);
    let before = s.rss_kib();
    // A GETKEYS-reply header claiming 16 MiB, before any HELLO: refused
    // from the header alone (the handshake frame limit is 4 KiB).
    let mut header = Frame {
        opcode: op::REPLY | op::GETKEYS,
        flags: 0,
        request_id: 0,
        payload: vec![],
    }
    .to_bytes();
    header[16..20].copy_from_slice(&(16u32 << 20).to_be_bytes());
    let mut r = Raw::connect(&s.addr());
    r.send_bytes(&header);
    let reply = r.recv();
    assert_eq!(
        reply.as_ref().and_then(error_code),
        Some(ErrorCode::FrameTooLarge),
        "{reply:?}"
    );
    assert!(r.closed_within(Duration::from_secs(2)));
    // And a well-formed request other than HELLO is refused by opcode,
    // without being decoded: HANDSHAKE_REQUIRED, connection kept.
    let mut r = Raw::connect(&s.addr());
    r.send(&get(5, "k"));
    assert_eq!(
        r.recv().as_ref().and_then(error_code),
        Some(ErrorCode::HandshakeRequired)
    );
    // 32 strangers each pushing 16 MiB: none of it is held.
    let floods: Vec<std::thread::JoinHandle<()>> = (0..32)
        .map(|_| {
            let addr = s.addr();
            let header = header.clone();
            std::thread::spawn(move || {
                if let Ok(mut t) = TcpStream::connect(&addr) {
                    let _ = t.set_write_timeout(Some(Duration::from_secs(2)));
                    let _ = t.write_all(&header);
                    let _ = t.write_all(&vec![0u8; 16 << 20]);
                }
            })
        })
        .collect();
    for f in floods {
        let _ = f.join();
    }
    let grown_kib = s.rss_kib().saturating_sub(before);
    eprintln!("pre-HELLO floods: server RSS +{grown_kib} KiB");
    assert!(grown_kib < 32 * 1024, "server grew by {grown_kib} KiB");
    assert!(median_get_latency(&s.addr(), 20) < Duration::from_millis(50));
}

#[test]
fn idle_strangers_cannot_lock_clients_out_and_are_closed_after_the_handshake_timeout() {
    let s = ServerProc::start(
        4,
        &["--max-connections", "64", "--handshake-timeout-ms", "1500"],
    );
    let addr = s.addr();
    let baseline = median_get_latency(&addr, 50);
    // 300 sockets that never send HELLO: 4x the limit.
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() >= 200, "the flood could not even connect");
    // A client arriving now still gets in (the oldest stranger makes room)
    // and its latency stays within 10x of what it was.
    let t = Instant::now();
    let during = median_get_latency(&addr, 50);
    eprintln!(
        "GET latency: baseline {baseline:?}, during the flood {during:?} (connected in {:?})",
        t.elapsed()
    );
    assert!(
        during < baseline * 10 + Duration::from_millis(2),
        "latency {during:?} vs {baseline:?}"
    );
    // The strangers are gone once the handshake timeout has passed.
    std::thread::sleep(Duration::from_millis(2500));
    // Evicted ones were told TOO_MANY_CONNECTIONS first; every one must
    // reach end of stream.
    let mut open = 0;
    for mut t in idle {
        let _ = t.set_read_timeout(Some(Duration::from_millis(50)));
        let mut b = [0u8; 256];
        loop {
            match t.read(&mut b) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(_) => {
                    open += 1;
                    break;
                }
            }
        }
    }
    assert_eq!(
        open, 0,
        "strangers still connected after the handshake timeout"
    );
    let st = s.client().stats().unwrap();
    let timeouts = st.get_count("handshake_timeouts").unwrap();
    let evictions = st.get_count("handshake_evictions").unwrap();
    eprintln!("handshake_timeouts {timeouts}, handshake_evictions {evictions}");
    assert!(timeouts > 0 && evictions > 0);
}

#[test]
fn an_idle_client_is_closed_after_the_idle_timeout() {
    let s = ServerProc::start(4, &["--idle-timeout-ms", "500"]);
    let mut r = Raw::hello(&s.addr());
    assert!(
        r.closed_within(Duration::from_secs(3)),
        "idle client kept open"
    );
    let mut busy = s.client();
    for _ in 0..10 {
        busy.get(b"k").expect("an active client is not idle");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        s.client()
            .stats()
            .unwrap()
            .get_count("idle_closed")
            .unwrap()
            >= 1
    );
}

/// One 29-byte GET of a 4 MiB value queues 4 MiB of reply. Pipelining a
/// thousand of them (and GETTABLEs of a 2 MiB table) must not grow the
/// server past its budgets: the server stops reading such a client while
/// its replies wait.
#[test]
fn pipelined_large_reads_cannot_amplify_memory() {
    let s = ServerProc::start(4, &[]);
    let mut c = s.client();
    c.put(b"big", &vec![7u8; 4 << 20]).unwrap();
    for i in 0..4 {
        c.put(format!("t{i}").as_bytes(), &vec![1u8; 512 << 10])
            .unwrap();
    }
    let before = s.rss_kib();
    let mut attackers = Vec::new();
    for n in 0..4 {
        let mut r = Raw::hello(&s.addr());
        let mut bytes = Vec::new();
        for i in 0..1000u64 {
            let m = if n % 2 == 0 {
                get(i + 2, "big")
            } else {
                Message::new(i + 2, Body::GetTable)
            };
            m.encode(&mut bytes);
        }
        let _ = r.stream.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = r.stream.write_all(&bytes);
        attackers.push(r); // never reads
    }
    let peak = s.peak_rss_kib(Duration::from_secs(2));
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!("4 x 1000 pipelined 4 MiB GETs / 2 MiB GETTABLEs: peak RSS +{grown_mib} MiB");
    // Per connection: 32 MiB of replies (64 MiB of buffer at worst) and
    // one reply over it, plus the kernel's socket buffers.
    assert!(grown_mib < 4 * 80, "server grew by {grown_mib} MiB");
    assert!(median_get_latency(&s.addr(), 20) < Duration::from_millis(100));
    drop(attackers);
}

/// GETTABLE over a table larger than a frame is refused from the table's
/// running size, before a byte is copied: repeating it costs the server
/// nothing. (Before, each request cloned the whole table, then refused.)
#[test]
fn gettable_over_a_table_larger_than_a_frame_copies_nothing() {
    let s = ServerProc::start(4, &["--frame-bytes-max", "1048576"]);
    let mut c = s.client();
    for i in 0..192u32 {
        let value = vec![(i % 251) as u8; 500 << 10];
        c.put(format!("v{i}").as_bytes(), &value).unwrap();
    }
    let before = s.rss_kib();
    let addr = s.addr();
    let attackers: Vec<_> = (0..2)
        .map(|n| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut r = Raw::hello(&addr);
                let mut refused = 0;
                for i in 0..40u64 {
                    r.send(&Message::new(n * 1000 + i + 2, Body::GetTable));
                    match r.recv().map(|m| m.body) {
                        Some(Body::Error(e)) if e.code == ErrorCode::ResultTooLarge as u16 => {
                            refused += 1
                        }
                        other => panic!("expected RESULT_TOO_LARGE, got {other:?}"),
                    }
                }
                refused
            })
        })
        .collect();
    let peak = s.peak_rss_kib(Duration::from_secs(2));
    let refused: u32 = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    assert_eq!(refused, 80);
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!("80 GETTABLEs of a 94 MiB table (1 MiB frames): peak RSS +{grown_mib} MiB");
    assert!(
        grown_mib < 16,
        "the server copied the table: +{grown_mib} MiB"
    );
}

/// The other side of the same limit: a client that pipelines big reads
/// and reads as fast as it can is slowed down, never cut off.
#[test]
fn an_honest_pipelining_reader_gets_every_reply() {
    let s = ServerProc::start(4, &[]);
    s.client().put(b"big", &vec![3u8; 8 << 20]).unwrap();
    let mut r = Raw::hello(&s.addr());
    let mut bytes = Vec::new();
    for i in 0..10 {
        get(100 + i, "big").encode(&mut bytes);
    }
    r.send_bytes(&bytes);
    let _ = r.stream.set_read_timeout(Some(Duration::from_secs(10)));
    for i in 0..10 {
        let m = r
            .recv()
            .unwrap_or_else(|| panic!("reply {i} of 10 missing"));
        assert_eq!(m.request_id, 100 + i);
        match m.body {
            Body::Value(Some(v)) => assert_eq!(v.value.len(), 8 << 20),
            other => panic!("reply {i}: {other:?}"),
        }
    }
}

/// Many clients each at their own limit: the server-wide budget holds.
#[test]
fn the_server_wide_buffer_budget_bounds_many_amplifying_clients() {
    let s = ServerProc::start(4, &["--buffer-budget-bytes", "67108864"]);
    s.client().put(b"big", &vec![7u8; 4 << 20]).unwrap();
    let before = s.rss_kib();
    let attackers: Vec<Raw> = (0..16)
        .map(|_| {
            let mut r = Raw::hello(&s.addr());
            let mut bytes = Vec::new();
            for i in 0..100 {
                get(i + 2, "big").encode(&mut bytes);
            }
            r.send_bytes(&bytes);
            r
        })
        .collect();
    let peak = s.peak_rss_kib(Duration::from_secs(2));
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!("16 clients x 100 pipelined 4 MiB GETs, 64 MiB budget: peak RSS +{grown_mib} MiB");
    // Without the budget each client could hold 32 MiB + one reply (576
    // MiB); with it, the budget plus one client's overshoot and the kernel.
    assert!(grown_mib < 64 + 48 + 64, "server grew by {grown_mib} MiB");
    assert!(median_get_latency(&s.addr(), 20) < Duration::from_millis(200));
    drop(attackers);
}

#[test]
fn out_of_file_descriptors_the_server_backs_off_and_keeps_serving() {
    // 48 descriptors in all: the flood below runs the process out.
    let port = common::free_port();
    let bin = common::server_bin();
    let script = format!("ulimit -n 48 && exec {} {port} 4", bin.display());
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the server under ulimit");
    let addr = format!("127.0.0.1:{port}");
    assert!(common::wait_for(Duration::from_secs(5), || TcpStream::connect(&addr).ok()).is_some());
    let mut keeper = chaintable::client::Client::connect(&addr).expect("a client before the flood");
    let flood: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    let pid = i32::try_from(child.id()).expect("a pid fits an i32");
    let cpu_before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_seconds(pid) - cpu_before;
    eprintln!(
        "{} flood sockets; server CPU over 2 s: {cpu:.2} s",
        flood.len()
    );
    assert!(
        cpu < 0.5,
        "the accept loop spins: {cpu:.2} CPU-seconds in 2 s"
    );
    // The connection it already had is served throughout.
    keeper.put(b"k", b"v").expect("existing client served");
    assert_eq!(
        keeper.get(b"k").unwrap().map(|v| v.value),
        Some(b"v".to_vec())
    );
    let errors = keeper.stats().unwrap().get_count("accept_errors").unwrap();
    assert!(
        errors > 0,
        "the flood should have run it out of descriptors"
    );
    // Once the flood is gone, new clients get in again.
    drop(flood);
    let back = common::wait_for(Duration::from_secs(10), || {
        let mut c = chaintable::client::Client::connect(&addr).ok()?;
        c.get(b"k").ok()
    });
    assert!(back.is_some(), "no new client after the flood ended");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    let _ = child.wait();
    let mut log = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut log);
    }
    let lines = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(lines <= 2, "accept errors logged {lines} times");
}

/// Replies owed before a stream error leave first, in order; the error
/// comes last; then the connection closes. The PUT was executed, so its
/// reply must not be lost.
#[test]
fn a_stream_error_never_overtakes_the_replies_owed_before_it() {
    let s = ServerProc::start(4, &[]);
    let mut r = Raw::hello(&s.addr());
    let mut bytes = Vec::new();
    Message::new(
        2,
        Body::Put {
            key: Key::new("k").unwrap(),
            value: b"v".to_vec(),
            mode: WriteMode::Sync,
        },
    )
    .encode(&mut bytes);
    get(3, "k").encode(&mut bytes);
    bytes.extend_from_slice(b"garbage that is not a frame");
    r.send_bytes(&bytes);
    let first = r.recv().expect("PUT_OK");
    assert!(
        matches!(first.body, Body::PutOk(_)) && first.request_id == 2,
        "{first:?}"
    );
    let second = r.recv().expect("VALUE");
    assert!(
        matches!(second.body, Body::Value(Some(_))) && second.request_id == 3,
        "{second:?}"
    );
    let third = r.recv().expect("the stream error, last");
    assert_eq!(error_code(&third), Some(ErrorCode::BadFrame));
    assert!(r.closed_within(Duration::from_secs(2)));
}

/// VERIFY says executed only for a write in this server's history.
#[test]
fn verify_never_calls_an_unassigned_id_executed() {
    let s = ServerProc::start(4, &[]);
    let mut c = s.client();
    let id = c.put(b"k", b"v").unwrap().op_id;
    assert_eq!(c.verify(id).unwrap(), chaintable::wire::OpState::Executed);
    assert_eq!(
        c.verify(id + 1).unwrap(),
        chaintable::wire::OpState::Unknown
    );
    assert_eq!(
        c.verify(u64::MAX).unwrap(),
        chaintable::wire::OpState::Unknown
    );
}

/// A users file with a read-write and a read-only user.
fn users_file() -> String {
    use chaintable::auth::password_hash;
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("users-{}", std::process::id()));
    let text = format!(
        "# test users\nalice readwrite {}\nbob readonly {}\n",
        password_hash("wonderland"),
        password_hash("builder")
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn auth(id: u64, user: &str, password: &str) -> Message {
    Message::new(
        id,
        Body::Auth {
            user: user.into(),
            password: password.into(),
        },
    )
}

fn login(addr: &str, user: &str, password: &str) -> chaintable::client::Client {
    let opts = chaintable::client::Options {
        credentials: Some(chaintable::client::Credentials {
            user: user.into(),
            password: password.into(),
        }),
        ..Default::default()
    };
    chaintable::client::Client::connect_with(addr, opts).expect("login")
}

#[test]
fn with_a_users_file_only_authenticated_clients_are_served() {
    let users = users_file();
    let s = ServerProc::start(4, &["--users-file", &users]);
    let addr = s.addr();
    // HELLO says AUTH is required; nothing else is served before it, and
    // the frame limit stays the handshake's (4 KiB).
    let mut r = Raw::connect(&addr);
    r.send(&common::client_hello());
    match r.recv().map(|m| m.body) {
        Some(Body::HelloOk(h)) => {
            assert_eq!(h.features & chaintable::wire::FEATURE_AUTH_REQUIRED, 1)
        }
        other => panic!("{other:?}"),
    }
    r.send(&get(2, "k"));
    assert_eq!(
        r.recv().as_ref().and_then(error_code),
        Some(ErrorCode::AuthRequired)
    );
    r.send(&Message::new(3, Body::Stats));
    assert_eq!(
        r.recv().as_ref().and_then(error_code),
        Some(ErrorCode::AuthRequired)
    );
    let big = Message::new(
        4,
        Body::Put {
            key: Key::new("k").unwrap(),
            value: vec![0; 64 * 1024],
            mode: WriteMode::Sync,
        },
    );
    r.send(&big);
    assert_eq!(
        r.recv().as_ref().and_then(error_code),
        Some(ErrorCode::FrameTooLarge)
    );
    assert!(r.closed_within(Duration::from_secs(2)));
    // A wrong password closes the connection (each guess costs one).
    let mut r = Raw::connect(&addr);
    r.send(&common::client_hello());
    r.recv().expect("HELLO_OK");
    r.send(&auth(2, "alice", "guess"));
    assert_eq!(
        r.recv().as_ref().and_then(error_code),
        Some(ErrorCode::AuthFailed)
    );
    assert!(r.closed_within(Duration::from_secs(2)));
    // alice reads and writes; bob only reads.
    let mut alice = login(&addr, "alice", "wonderland");
    assert_eq!(alice.access(), Some(chaintable::wire::Access::ReadWrite));
    alice.put(b"k", b"v").unwrap();
    let mut bob = login(&addr, "bob", "builder");
    assert_eq!(bob.get(b"k").unwrap().map(|v| v.value), Some(b"v".to_vec()));
    let err = bob.put(b"k", b"w").unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotPermitted));
    assert_eq!(
        alice.get(b"k").unwrap().map(|v| v.value),
        Some(b"v".to_vec())
    );
    let st = alice.stats().unwrap();
    assert!(st.get_count("auth_failures").unwrap() >= 1);
    // table-client logs in with --user and the password from the
    // environment; without them its request is refused.
    let out = common::table_client(
        &["--user", "alice", &addr, "get", "k"],
        &[("CHAINTABLE_PASSWORD", "wonderland")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains('v'));
    let out = common::table_client(&[&addr, "get", "k"], &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no credentials: the operation fails"
    );
}

#[test]
fn auth_on_a_server_without_users_is_a_clear_error() {
    let s = ServerProc::start(4, &[]);
    let mut r = Raw::hello(&s.addr());
    r.send(&auth(2, "alice", "wonderland"));
    let reply = r.recv();
    assert_eq!(
        reply.as_ref().and_then(error_code),
        Some(ErrorCode::BadRequest),
        "{reply:?}"
    );
    r.send(&get(3, "k"));
    assert!(matches!(r.recv().map(|m| m.body), Some(Body::Value(None))));
}

/// Connections that once carried a large frame give its memory back when
/// idle (before, 64 idle connections kept 1 GiB of receive buffers).
#[test]
fn idle_connections_give_back_the_buffers_of_large_frames() {
    // The watch history (spec 4.1.2) keeps the last 16 MiB of changes.
    let s = ServerProc::start(4, &["--watch-history-bytes", "16777216"]);
    let before = s.rss_kib();
    let value = vec![5u8; 8 << 20];
    let clients: Vec<chaintable::client::Client> = (0..24)
        .map(|i| {
            let mut c = s.client();
            c.put(format!("big{i}").as_bytes(), &value).unwrap();
            c.get(format!("big{i}").as_bytes()).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // The table holds 24 x 8 MiB = 192 MiB; 24 connections keeping an
    // 8 MiB receive buffer and an 8 MiB send buffer each would add 384 MiB;
    // the watch history holds 16 MiB of the values.
    let grown_mib = s.rss_kib().saturating_sub(before) / 1024;
    eprintln!("24 idle connections after 8 MiB frames: RSS +{grown_mib} MiB (table: 192 MiB)");
    assert!(grown_mib < 192 + 16 + 96, "buffers kept: +{grown_mib} MiB");
    drop(clients);
}

/// Sockets that said HELLO and went quiet cannot hold the connection limit
/// either: at the limit, a client idle for 10 s makes room for a newcomer
/// (and is told why); before that, the newcomer is refused.
#[test]
fn idle_clients_make_room_at_the_connection_limit() {
    let s = ServerProc::start(4, &["--max-connections", "8"]);
    let addr = s.addr();
    let mut idle: Vec<Raw> = (0..8).map(|_| Raw::hello(&addr)).collect();
    let mut r = Raw::connect(&addr);
    r.send(&common::client_hello());
    assert_eq!(
        r.recv().as_ref().and_then(error_code),
        Some(ErrorCode::TooManyConnections)
    );
    std::thread::sleep(Duration::from_millis(10_500));
    let mut newcomer = Raw::hello(&addr);
    newcomer.send(&get(2, "k"));
    assert!(matches!(
        newcomer.recv().map(|m| m.body),
        Some(Body::Value(None))
    ));
    let mut told = 0;
    for r in idle.iter_mut() {
        let _ = r.stream.set_read_timeout(Some(Duration::from_millis(200)));
        if r.recv().as_ref().and_then(error_code) == Some(ErrorCode::TooManyConnections) {
            told += 1;
        }
    }
    assert_eq!(
        told, 1,
        "exactly one idle client made room, and was told why"
    );
    let st = chaintable::wire::Body::Stats;
    newcomer.send(&Message::new(3, st));
    match newcomer.recv().map(|m| m.body) {
        Some(Body::StatsOk(stats)) => assert_eq!(stats.get_count("idle_evictions"), Some(1)),
        other => panic!("{other:?}"),
    }
}
