//! Protocol 1.1: the points where a client writer had to guess (issue 17),
//! each answered in `spec/PROTOCOL.md` and checked here against a real
//! `table-server`: what the spec says is what the server does.

#![cfg(feature = "testing")]

mod common;

use chaintable::wire::{
    Body, ErrorCode, Frame, Hello, HelloOk, Message, PeerHello, PeerRole, ServerLimit,
    HELLO_WANTS_EXTENSION,
};
use common::chain::Chain;
use common::{Raw, ServerProc};
use std::time::Duration;
use zookeeper_client as zk;

fn error_code(m: &Message) -> Option<ErrorCode> {
    match &m.body {
        Body::Error(e) => e.error_code(),
        _ => None,
    }
}

fn hello(id: u64, role: PeerRole, features: u32) -> Message {
    Message::new(
        id,
        Body::Hello(Hello {
            role,
            features,
            node: String::new(),
        }),
    )
}

fn raw_frame(opcode: u8, flags: u16, request_id: u64, payload: &[u8]) -> Vec<u8> {
    Frame {
        opcode,
        flags,
        request_id,
        payload: payload.to_vec(),
    }
    .to_bytes()
}

fn hello_ok(m: &Message) -> &HelloOk {
    match &m.body {
        Body::HelloOk(h) => h,
        other => panic!("expected HELLO_OK, got {other:?}"),
    }
}

/// Spec §3 (order of checks): before HELLO the opcode decides, not the
/// payload; in READY the opcode class decides before the payload is
/// decoded; a stream error comes after the replies owed, with request id 0.
#[test]
fn point_2_the_order_of_checks_and_the_request_id_of_stream_errors() {
    let s = ServerProc::start(2, &[]);
    let addr = s.addr();
    let mut r = Raw::connect(&addr);
    r.send_bytes(&raw_frame(0x02, 0, 7, &[0])); // a malformed PUT
    r.send_bytes(&raw_frame(0x3e, 0, 8, &[])); // an unassigned opcode
    for want_id in [7, 8] {
        let m = r.recv().expect("a reply");
        assert_eq!(
            (m.request_id, error_code(&m)),
            (want_id, Some(ErrorCode::HandshakeRequired))
        );
    }
    // In READY: a reply opcode with a payload that would not decode is
    // still UNKNOWN_OPCODE (its class is decided first).
    let mut r = Raw::hello(&addr);
    r.send_bytes(&raw_frame(0x83, 0, 9, &[1, 2, 3]));
    let m = r.recv().unwrap();
    assert_eq!(
        (m.request_id, error_code(&m)),
        (9, Some(ErrorCode::UnknownOpcode))
    );
    // Two good requests, then a frame with a bad CRC: both replies first,
    // then ERROR BAD_FRAME with request id 0, then the close.
    let mut bytes = Message::new(10, Body::Size).to_bytes();
    bytes.extend(Message::new(11, Body::Size).to_bytes());
    let mut bad = Message::new(12, Body::Size).to_bytes();
    bad[20] ^= 0xff;
    bytes.extend(bad);
    r.send_bytes(&bytes);
    for id in [10, 11] {
        let m = r.recv().unwrap();
        assert!(
            matches!(m.body, Body::SizeOk { .. }) && m.request_id == id,
            "{m:?}"
        );
    }
    let m = r.recv().unwrap();
    assert_eq!(
        (m.request_id, error_code(&m)),
        (0, Some(ErrorCode::BadFrame))
    );
    assert!(r.closed_within(Duration::from_secs(2)));
}

/// Spec §3 item 5: a second HELLO is answered as a first and changes
/// nothing; HELLO with the peer role is UNAVAILABLE and closes, in every
/// state; PEER_HELLO to a standalone server likewise.
#[test]
fn point_3_a_second_hello_and_hello_as_a_peer() {
    let s = ServerProc::start(2, &["--frame-bytes-max", "65536"]);
    let addr = s.addr();
    let mut r = Raw::hello(&addr);
    r.send(&hello(2, PeerRole::Client, 0));
    let again = r.recv().unwrap();
    assert_eq!(hello_ok(&again).extension, None);
    // The second HELLO may ask for the extension; the frame limit stays.
    r.send(&hello(3, PeerRole::Client, HELLO_WANTS_EXTENSION));
    let again = r.recv().unwrap();
    assert_eq!(hello_ok(&again).payload_bytes_max, 65536);
    assert!(hello_ok(&again).extension.is_some());
    r.send(&Message::new(4, Body::Size));
    assert!(matches!(r.recv().unwrap().body, Body::SizeOk { .. }));

    for ready in [false, true] {
        let mut r = if ready {
            Raw::hello(&addr)
        } else {
            Raw::connect(&addr)
        };
        r.send(&hello(5, PeerRole::Peer, 0));
        let m = r.recv().unwrap();
        assert_eq!(
            (m.request_id, error_code(&m)),
            (5, Some(ErrorCode::Unavailable)),
            "HELLO(peer), ready: {ready}"
        );
        assert!(r.closed_within(Duration::from_secs(2)), "ready: {ready}");
    }

    let mut r = Raw::connect(&addr);
    let peer_hello = PeerHello {
        from: "node0000000001".into(),
        to: "node0000000002".into(),
        root: "/chain".into(),
        nonce: [7; 32],
    };
    r.send(&Message::new(0, Body::PeerHello(peer_hello)));
    let m = r.recv().unwrap();
    assert_eq!(error_code(&m), Some(ErrorCode::Unavailable));
    assert!(r.closed_within(Duration::from_secs(2)));
}

/// Spec §8: reply, ERROR and peer opcodes from a client are UNKNOWN_OPCODE
/// whatever their payload (empty, or the `bad-update-kind` vector's), and
/// the connection stays usable.
#[test]
fn points_4_and_5_reply_and_peer_opcodes_from_a_client() {
    let s = ServerProc::start(2, &[]);
    let mut r = Raw::hello(&s.addr());
    let bad_update = {
        let mut p = vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        p.extend([0, 1, b'k']);
        p
    };
    let cases: [(u8, &[u8]); 6] = [
        (0x81, &[]),
        (0x89, &[]),
        (0xff, &[]),
        (0x40, &bad_update),
        (0x41, &[]),
        (0x44, &[1, 2, 3]),
    ];
    for (i, (opcode, payload)) in cases.iter().enumerate() {
        let id = 100 + i as u64;
        r.send_bytes(&raw_frame(*opcode, 0, id, payload));
        let m = r.recv().expect("an answer");
        assert_eq!(
            (m.request_id, error_code(&m)),
            (id, Some(ErrorCode::UnknownOpcode)),
            "opcode 0x{opcode:02x}"
        );
    }
    r.send(&Message::new(200, Body::Size));
    assert!(matches!(r.recv().unwrap().body, Body::SizeOk { .. }));
}

/// Spec §2.1: the server never sends a payload above the limit it
/// announced. The largest value it stores is the limit less 13 bytes, so
/// its VALUE reply is exactly the limit; one byte more is refused at PUT.
#[test]
fn point_6_no_reply_exceeds_the_announced_frame_limit() {
    const LIMIT: usize = 4096;
    let s = ServerProc::start(2, &["--frame-bytes-max", &LIMIT.to_string()]);
    let mut r = Raw::connect(&s.addr());
    r.send(&hello(1, PeerRole::Client, HELLO_WANTS_EXTENSION));
    let m = r.recv().unwrap();
    let h = hello_ok(&m);
    assert_eq!(h.payload_bytes_max as usize, LIMIT);
    let ext = h.extension.as_ref().expect("the 1.1 extension");
    let value_max = usize::try_from(ext.limit(ServerLimit::VALUE_BYTES_MAX).unwrap()).unwrap();
    assert_eq!(value_max, LIMIT - 13);

    let mut c = s.client();
    c.put(b"k", &vec![b'v'; value_max])
        .expect("the largest value");
    let err = c.put(b"k", &vec![b'v'; value_max + 1]).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err:?}");
    // Read back raw, and measure the frames: the VALUE fills the limit
    // exactly; STATS and every other reply stays within it.
    let mut bytes = Vec::new();
    for (id, body) in [
        (
            2,
            Body::Get {
                key: chaintable::serialize::Key::new("k").unwrap(),
            },
        ),
        (3, Body::Stats),
        (4, Body::GetTable),
    ] {
        bytes.extend(Message::new(id, body).to_bytes());
    }
    r.send_bytes(&bytes);
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let m = r.recv().unwrap();
        sizes.push((m.request_id, m.to_frame().payload.len()));
    }
    assert_eq!(sizes[0], (2, LIMIT), "VALUE of the largest value");
    assert!(sizes.iter().all(|(_, n)| *n <= LIMIT), "{sizes:?}");
}

/// Spec §4.1.1: the 1.1 extension announces the limits the server was
/// started with (pipelining depth included); a 1.0 HELLO gets the 1.0
/// reply, 18 bytes, no extension.
#[test]
fn point_7_the_extension_announces_the_pipelining_depth_and_limits() {
    let s = ServerProc::start(
        2,
        &[
            "--inflight-max",
            "64",
            "--output-bytes-max",
            "1000000",
            "--idle-timeout-ms",
            "12345",
            "--send-timeout-ms",
            "6789",
        ],
    );
    let mut r = Raw::connect(&s.addr());
    r.send(&hello(1, PeerRole::Client, 0));
    let m = r.recv().unwrap();
    assert_eq!(hello_ok(&m).extension, None);
    assert_eq!(m.to_frame().payload.len(), 18, "the 1.0 HELLO_OK");

    r.send(&hello(2, PeerRole::Client, HELLO_WANTS_EXTENSION));
    let m = r.recv().unwrap();
    let ext = hello_ok(&m).extension.clone().expect("extension");
    assert_eq!(ext.minor, 1);
    let limit = |id| ext.limit(id).unwrap_or_else(|| panic!("limit {id}"));
    assert_eq!(limit(ServerLimit::INFLIGHT_MAX), 64);
    assert_eq!(limit(ServerLimit::OUTPUT_BYTES_MAX), 1_000_000);
    assert_eq!(limit(ServerLimit::KEY_BYTES_MAX), 1024);
    assert_eq!(limit(ServerLimit::VALUE_BYTES_MAX), 8 << 20);
    assert_eq!(limit(ServerLimit::IDLE_TIMEOUT_MS), 12345);
    assert_eq!(limit(ServerLimit::SEND_TIMEOUT_MS), 6789);
    // The Rust client is a 1.1 client.
    let c = s.client();
    assert!(c.server_hello().extension.is_some());
}

/// Spec §1 and §8: a text that is not UTF-8 is BAD_REQUEST and the
/// connection is kept; ASYNC and reserved flag bits on a GET or SIZE are
/// ignored.
#[test]
fn point_10_invalid_utf8_and_meaningless_flags() {
    let s = ServerProc::start(2, &[]);
    let mut c = s.client();
    c.put(b"k", b"v").unwrap();
    let mut r = Raw::connect(&s.addr());
    // HELLO with node = 0xff 0xfe.
    r.send_bytes(&raw_frame(0x01, 0, 1, &[1, 0, 0, 0, 0, 0, 2, 0xff, 0xfe]));
    let m = r.recv().unwrap();
    assert_eq!(
        (m.request_id, error_code(&m)),
        (1, Some(ErrorCode::BadRequest))
    );
    r.send(&hello(2, PeerRole::Client, 0));
    assert!(matches!(r.recv().unwrap().body, Body::HelloOk(_)));
    let get = Message::new(
        3,
        Body::Get {
            key: chaintable::serialize::Key::new("k").unwrap(),
        },
    )
    .to_frame();
    for flags in [0x0001, 0x8000] {
        r.send_bytes(&raw_frame(get.opcode, flags, 3, &get.payload));
        match r.recv().unwrap().body {
            Body::Value(Some(v)) => assert_eq!(v.value, b"v"),
            other => panic!("flags {flags:#x}: {other:?}"),
        }
    }
    r.send_bytes(&raw_frame(0x05, 0x0001, 4, &[]));
    assert_eq!(r.recv().unwrap().body, Body::SizeOk { entries: 1 });
}

/// The STATS names the spec's table documents (§4.1).
fn documented_stats() -> Vec<String> {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/PROTOCOL.md"))
        .expect("spec");
    let start = spec
        .find("| name | kind | unit | when | meaning |")
        .expect("table");
    spec[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .flat_map(|l| {
            let first = l.split('|').nth(1).unwrap_or("");
            first
                .split(',')
                .map(|n| n.trim().trim_matches('`').to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn assert_stats_documented(addr: &str, what: &str) -> usize {
    let documented = documented_stats();
    let mut c = chaintable::client::Client::connect(addr).unwrap();
    let stats = c.stats().unwrap();
    let names: Vec<String> = stats.fields.iter().map(|f| f.name.clone()).collect();
    for name in &names {
        assert!(
            documented.contains(name),
            "{what}: STATS field {name} is not in spec §4.1's table"
        );
    }
    names.len()
}

/// Spec §4.1: every STATS field a server sends, standalone and with a data
/// directory, is in the spec's table.
#[test]
fn point_9_every_stats_field_is_documented() {
    let plain = ServerProc::start(2, &[]);
    let n_plain = assert_stats_documented(&plain.addr(), "standalone");
    let dir = std::env::temp_dir().join(format!("chaintable-spec-stats-{}", std::process::id()));
    let durable = ServerProc::start(2, &["--data-dir", dir.to_str().unwrap()]);
    let n_durable = assert_stats_documented(&durable.addr(), "data dir");
    assert!(n_durable > n_plain, "the data directory adds fields");
    drop(durable);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The spec §5.1 recipe: children named `node` + ten digits, ephemeral,
/// address up to the first newline, ordered by number. Followed from
/// ZooKeeper alone it finds the head and the tail; NOT_TAIL and NOT_HEAD
/// name them (point 1); a chain member's STATS are all documented (point
/// 9); after the head dies, the new head's first write is `last + 2^20 + 1`
/// and the mark's id is unknown (point 8).
#[test]
fn points_1_8_9_a_client_finds_the_chain_by_the_recipe() {
    // Without the test-only reads-anywhere switch: real redirects.
    let mut chain = Chain::start_with(3, false, &[]);
    let members = smol::block_on(async {
        let c = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(5))
            .connect(&chain.zk.addr())
            .await
            .expect("ZooKeeper");
        let (children, _) = c.get_children("/chain").await.expect("readable");
        let mut found = Vec::new();
        for name in children {
            let Some(digits) = name.strip_prefix("node") else {
                continue;
            };
            if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok((data, stat)) = c.get_data(&format!("/chain/{name}")).await else {
                continue;
            };
            if stat.ephemeral_owner == 0 {
                continue;
            }
            let text = String::from_utf8(data).expect("UTF-8");
            let addr = text.split('\n').next().unwrap().to_string();
            found.push((digits.parse::<u64>().unwrap(), addr));
        }
        found.sort();
        found.into_iter().map(|(_, a)| a).collect::<Vec<_>>()
    });
    assert_eq!(members, chain.addrs(), "the recipe's chain order");
    let (head, tail) = (members[0].clone(), members[2].clone());
    let role_of = |addr: &str| {
        let c = chaintable::client::Client::connect(addr).unwrap();
        c.server_hello().role.name()
    };
    assert_eq!((role_of(&head), role_of(&tail)), ("head", "tail"));

    let mut at_head = chaintable::client::Client::connect(&head).unwrap();
    let last = at_head.put(b"k", b"1").unwrap().op_id;
    // VERIFY is answered at the tail alone (a GET of a clean key is
    // answered anywhere, spec §5.5).
    let chaintable::client::ClientError::Server(e) = at_head.verify(last).unwrap_err() else {
        panic!("a VERIFY at the head")
    };
    assert_eq!(
        (e.error_code(), e.redirect.as_str()),
        (Some(ErrorCode::NotTail), tail.as_str()),
        "NOT_TAIL names the tail, not the successor"
    );
    // A write that asks not to be forwarded (NO_FORWARD, spec §5.6).
    let no_forward = chaintable::client::Options {
        no_forward: true,
        ..chaintable::client::Options::default()
    };
    let mut at_tail = chaintable::client::Client::connect_with(&tail, no_forward).unwrap();
    let chaintable::client::ClientError::Server(e) = at_tail.put(b"x", b"y").unwrap_err() else {
        panic!("a write at the tail")
    };
    assert_eq!(
        (e.error_code(), e.redirect.as_str()),
        (Some(ErrorCode::NotHead), head.as_str())
    );
    for addr in &members {
        assert_stats_documented(addr, "chain member");
    }

    // Point 8: the takeover's ids, exactly.
    chain.kill9(0);
    chain.wait_chain_len(2);
    let mut c = chain.client();
    let put = Body::Put {
        key: chaintable::serialize::Key::new("after").unwrap(),
        value: b"takeover".to_vec(),
        mode: chaintable::wire::WriteMode::Sync,
    };
    let Body::PutOk(first) = c.call(put).unwrap().0 else {
        panic!("a write after the takeover")
    };
    assert_eq!(
        first.op_id,
        last + (1 << 20) + 1,
        "first write after a takeover"
    );
    let (reply, _) = c
        .call(Body::Verify {
            op_id: last + (1 << 20),
        })
        .unwrap();
    assert_eq!(
        reply,
        Body::VerifyOk(chaintable::wire::OpState::Unknown),
        "the mark's id"
    );
    c.close();
}
