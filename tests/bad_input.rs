//! Scenario: hostile or broken clients hit a standalone server while a
//! well-behaved client keeps working beside them. Each bad-input class gets
//! the answer the spec documents (§8), and nothing else is disturbed.

#![cfg(feature = "testing")]

mod common;

use chaintable::serialize::Key;
use chaintable::wire::{Body, ErrorCode, Frame, Message, WriteMode};
use common::{Raw, ServerProc};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn error_code(m: &Message) -> Option<ErrorCode> {
    match &m.body {
        Body::Error(e) => e.error_code(),
        _ => None,
    }
}

/// A client doing put/get in a loop, counting any error it sees.
fn bystander(
    addr: String,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    ops: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut c = chaintable::client::Client::connect(&addr).expect("bystander connects");
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let key = format!("bystander-{}", i % 50);
            let ok = c.put(key.as_bytes(), &i.to_be_bytes()).is_ok()
                && c.get(key.as_bytes()).ok().flatten().map(|v| v.value)
                    == Some(i.to_be_bytes().to_vec());
            if !ok {
                errors.fetch_add(1, Ordering::SeqCst);
            }
            ops.fetch_add(1, Ordering::SeqCst);
            i += 1;
        }
    })
}

fn get_frame(id: u64) -> Vec<u8> {
    Message::new(
        id,
        Body::Get {
            key: Key::new("foo").unwrap(),
        },
    )
    .to_bytes()
}

#[test]
fn every_bad_input_class_gets_its_documented_answer() {
    let s = ServerProc::start(
        4,
        &[
            "--max-connections",
            "40",
            "--output-bytes-max",
            "1000000",
            "--send-timeout-ms",
            "1000",
        ],
    );
    let addr = s.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let by = bystander(addr.clone(), stop.clone(), errors.clone(), ops.clone());

    // Bad CRC: BAD_FRAME, then the server closes.
    let mut r = Raw::hello(&addr);
    let mut bytes = get_frame(2);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    r.send_bytes(&bytes);
    assert_eq!(
        r.recv().as_ref().and_then(error_code),
        Some(ErrorCode::BadFrame)
    );
    assert!(r.closed_within(Duration::from_secs(2)));

    // Garbage (an HTTP request): BAD_FRAME, closed.
    let mut r = Raw::connect(&addr);
    r.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        r.recv().as_ref().and_then(error_code),
        Some(ErrorCode::BadFrame)
    );
    assert!(r.closed_within(Duration::from_secs(2)));

    // Oversized length: FRAME_TOO_LARGE from the header alone, closed.
    let mut r = Raw::hello(&addr);
    let mut header = get_frame(3)[..24].to_vec();
    header[16..20].copy_from_slice(&(64u32 << 20).to_be_bytes());
    r.send_bytes(&header);
    assert_eq!(
        r.recv().as_ref().and_then(error_code),
        Some(ErrorCode::FrameTooLarge)
    );
    assert!(r.closed_within(Duration::from_secs(2)));

    // Wrong version: UNSUPPORTED_VERSION, closed.
    let mut r = Raw::connect(&addr);
    let mut bytes = get_frame(4);
    bytes[2] = 9;
    r.send_bytes(&bytes);
    assert_eq!(
        r.recv().as_ref().and_then(error_code),
        Some(ErrorCode::UnsupportedVersion)
    );
    assert!(r.closed_within(Duration::from_secs(2)));

    // Unknown opcode: UNKNOWN_OPCODE with the request id, connection kept.
    let mut r = Raw::hello(&addr);
    r.send_bytes(
        &Frame {
            opcode: 0x3f,
            flags: 0,
            request_id: 77,
            payload: vec![],
        }
        .to_bytes(),
    );
    let reply = r.recv().unwrap();
    assert_eq!(
        (reply.request_id, error_code(&reply)),
        (77, Some(ErrorCode::UnknownOpcode))
    );
    // A reply opcode or a peer message from a client is unknown too.
    r.send(&Message::new(78, Body::Ack { seq: 1 }));
    assert_eq!(
        r.recv().as_ref().and_then(error_code),
        Some(ErrorCode::UnknownOpcode)
    );
    // Bad payload (trailing byte after SIZE): BAD_REQUEST, kept.
    r.send_bytes(
        &Frame {
            opcode: 0x05,
            flags: 0,
            request_id: 79,
            payload: vec![0],
        }
        .to_bytes(),
    );
    assert_eq!(
        r.recv().as_ref().and_then(error_code),
        Some(ErrorCode::BadRequest)
    );
    r.send(&Message::new(80, Body::Size));
    assert!(
        matches!(r.recv().unwrap().body, Body::SizeOk { .. }),
        "connection still usable"
    );

    // Request before HELLO: HANDSHAKE_REQUIRED, kept.
    let mut r = Raw::connect(&addr);
    r.send(&Message::new(5, Body::Size));
    assert_eq!(
        r.recv().as_ref().and_then(error_code),
        Some(ErrorCode::HandshakeRequired)
    );

    // Truncated frame: the server waits (no reply, not closed)...
    let mut r = Raw::hello(&addr);
    let bytes = get_frame(6);
    r.send_bytes(&bytes[..bytes.len() - 2]);
    assert!(
        !r.closed_within(Duration::from_millis(300)),
        "a partial frame is not an error"
    );
    // ...and answers once the rest arrives.
    r.send_bytes(&bytes[bytes.len() - 2..]);
    let _ = r.stream.set_read_timeout(Some(Duration::from_secs(3)));
    assert!(matches!(r.recv().unwrap().body, Body::Value(_)));

    // A client that never reads: its requests stop being read once 1 MB
    // of replies is queued (it cannot grow server memory), and when its
    // replies have not moved for the send timeout (1 s here) it is cut.
    let mut c = s.client();
    c.put(b"big", &vec![1u8; 200_000]).unwrap();
    let mut r = Raw::hello(&addr);
    let gets: Vec<u8> = (0..200)
        .flat_map(|i| {
            Message::new(
                i,
                Body::Get {
                    key: Key::new("big").unwrap(),
                },
            )
            .to_bytes()
        })
        .collect();
    let _ = r.stream.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = std::io::Write::write_all(&mut r.stream, &gets);
    let slow_cut = common::wait_for(Duration::from_secs(5), || {
        let st = c.stats().ok()?;
        (st.get_count("disconnected_slow_readers")? >= 1).then_some(())
    });
    assert!(
        slow_cut.is_some(),
        "the non-reading client was not disconnected"
    );

    // Connection flood: past --max-connections the next one is refused
    // (these complete HELLO; idle strangers are evicted instead, see
    // tests/hostile.rs).
    let mut held = Vec::new();
    let refused = (0..60).find_map(|_| {
        let mut r = Raw::connect(&addr);
        r.send(&common::client_hello());
        let refused = r.recv().as_ref().and_then(error_code) == Some(ErrorCode::TooManyConnections);
        held.push(r);
        refused.then_some(())
    });
    assert!(
        refused.is_some(),
        "no connection was refused past the limit"
    );
    assert!(held
        .last_mut()
        .unwrap()
        .closed_within(Duration::from_secs(2)));
    let st = c.stats().unwrap();
    assert!(st.get_count("connections_refused").unwrap() >= 1);
    drop(held);

    stop.store(true, Ordering::SeqCst);
    by.join().unwrap();
    assert!(
        ops.load(Ordering::SeqCst) > 10,
        "the bystander made progress"
    );
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "the well-behaved client saw errors"
    );
    // The server is still healthy.
    assert_eq!(c.get(b"big").unwrap().map(|v| v.value.len()), Some(200_000));
}

#[test]
fn memory_stays_bounded_while_a_client_floods_writes_and_never_reads() {
    // Replies wait for a reader up to --output-bytes-max (4 MB here), then
    // the server stops reading this client (backpressure); queued writes are
    // bounded by --queue-bytes-max (32 MiB by default). The history kept
    // for watches (spec 4.1.2) fills too: 16 MiB here.
    let s = ServerProc::start(
        8,
        &[
            "--output-bytes-max",
            "4000000",
            "--watch-history-bytes",
            "16777216",
        ],
    );
    let before = s.rss_kib();
    let mut r = Raw::hello(&s.addr());
    r.stream.set_nonblocking(true).unwrap();
    // Synchronous puts, 1 KiB each, over 100 keys, for 3 seconds, never
    // reading a reply. The table stays small; only buffers could grow.
    let frame = |i: u64| {
        Message::new(
            i,
            Body::Put {
                key: Key::new(format!("flood-{}", i % 100)).unwrap(),
                value: vec![b'x'; 1024],
                mode: WriteMode::Sync,
            },
        )
        .to_bytes()
    };
    let started = std::time::Instant::now();
    let mut sent_bytes = 0usize;
    let mut peak_kib = 0;
    let mut i = 0u64;
    let mut pending: Vec<u8> = Vec::new();
    while started.elapsed() < Duration::from_secs(3) {
        if pending.is_empty() {
            for _ in 0..64 {
                pending.extend(frame(i));
                i += 1;
            }
        }
        match std::io::Write::write(&mut r.stream, &pending) {
            Ok(n) => {
                sent_bytes += n;
                pending.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => break, // disconnected: also bounded
        }
        peak_kib = peak_kib.max(s.rss_kib());
    }
    let growth_kib = peak_kib.saturating_sub(before);
    eprintln!("flood: sent {} MiB in 3 s; server RSS {before} KiB -> peak {peak_kib} KiB (+{growth_kib} KiB)", sent_bytes >> 20);
    assert!(sent_bytes > 1 << 20, "the flood should get somewhere");
    // Bound: one input frame buffer, 4 MB of replies (8 MB of buffer
    // capacity at worst), 32 MiB of queued writes, 16 MiB of watch history
    // and kernel-side buffering; 80 MiB would mean unbounded growth.
    assert!(growth_kib < 80 * 1024, "server grew by {growth_kib} KiB");
    // And it still serves others.
    let mut c = s.client();
    assert!(c.size().unwrap() <= 100);
}

/// A GETTABLE/GETKEYS reply that would not fit in one frame is refused with
/// RESULT_TOO_LARGE, exactly at the boundary, and the connection stays
/// usable.
#[test]
fn a_reply_over_the_frame_limit_is_refused_at_the_exact_boundary() {
    const LIMIT: usize = 4096;
    let server = ServerProc::start(2, &["--frame-bytes-max", &LIMIT.to_string()]);
    let mut c = server.client();
    // One entry, "k0" with a value of n bytes, encodes in the GETTABLE
    // reply as: u32 count + (u16 key length + key + u64 version + u32 value
    // length + value) = 4 + 16 + n bytes. Fill the frame exactly.
    let value = vec![b'v'; LIMIT - 20];
    c.put(b"k0", &value).expect("put within the limit");
    let table = c.table().expect("a reply of exactly the limit is sent");
    assert_eq!(table.len(), 1);
    // One more (empty) entry makes the reply 16 bytes too large.
    c.put(b"k1", b"").expect("put");
    match c.table() {
        Err(chaintable::client::ClientError::Server(e)) => {
            assert_eq!(e.error_code(), Some(ErrorCode::ResultTooLarge), "{e:?}")
        }
        other => panic!("expected RESULT_TOO_LARGE, got {other:?}"),
    }
    // GETKEYS is small, and the connection still serves.
    assert_eq!(c.keys().expect("keys").len(), 2);
    assert_eq!(c.get(b"k0").expect("get").map(|v| v.value), Some(value));
}
