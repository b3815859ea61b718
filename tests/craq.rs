//! Reads at every member (CRAQ, spec §5.5), with real `table-server`
//! processes over a real ZooKeeper: a clean key is answered by whichever
//! member is asked, a key with a write still on its way to the tail is
//! sent to the tail, and with `--craq off` only the tail answers.

#![cfg(feature = "testing")]

mod common;

use chaintable::client::{Client, ClientError};
use chaintable::wire::{Body, ErrorCode, FEATURE_CRAQ_READS};
use common::chain::{refusal, stat_u64 as stat, Chain};
use std::time::{Duration, Instant};

fn key(s: &str) -> chaintable::serialize::Key {
    chaintable::serialize::Key::new(s.as_bytes()).unwrap()
}

#[test]
fn a_committed_write_is_read_at_every_member() {
    let chain = Chain::start_with(3, false, &[]);
    assert_eq!(chain.roles(), ["head", "middle", "tail"]);
    let mut c = chain.client();
    let (reply, _) = c
        .call(Body::Put {
            key: key("colour"),
            value: b"blue".to_vec(),
            mode: chaintable::wire::WriteMode::Sync,
        })
        .unwrap();
    let Body::PutOk(w) = reply else {
        panic!("{reply:?}")
    };
    // The client spreads reads over the members, and each answers itself
    // with the committed value.
    for _ in 0..6 {
        let (reply, _) = c.call(Body::Get { key: key("colour") }).unwrap();
        let Body::Value(Some(v)) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!((v.value.as_slice(), v.version), (&b"blue"[..], w.op_id));
    }
    let served: Vec<u64> = chain
        .addrs()
        .iter()
        .map(|a| c.reads_by_member.get(a).copied().unwrap_or(0))
        .collect();
    assert_eq!(served, [2, 2, 2], "reads per member, head first");
    for (i, addr) in chain.addrs().iter().enumerate() {
        let hello = Client::connect(addr).unwrap().server_hello().clone();
        assert_ne!(hello.features & FEATURE_CRAQ_READS, 0, "member {i}");
        // Whole-table reads too, once nothing is on its way.
        let mut direct = Client::connect(addr).unwrap();
        assert_eq!(direct.size().unwrap(), 1, "SIZE at member {i}");
    }
    let head = chain.member(0).addr();
    assert_eq!(stat(&head, "craq"), 1);
    assert!(stat(&head, "reads_off_tail") >= 3, "2 GETs and a SIZE");
    // VERIFY is answered by the tail alone: only it knows what committed.
    let mut at_head = Client::connect(&head).unwrap();
    let r = at_head.call(Body::Verify { op_id: w.op_id });
    assert_eq!(
        refusal(r),
        (Some(ErrorCode::NotTail), chain.member(2).addr())
    );
    c.close();
}

#[test]
fn a_key_with_a_write_on_its_way_is_read_at_the_tail() {
    // The tail's worker takes 1.5 s per write: a write stays dirty at the
    // head and the middle for that long.
    let mut chain = Chain::start_with(2, false, &[]);
    chain.add_member_with(&["--test-worker-delay-ms", "1500"]);
    chain.wait_chain_len(3);
    let (head, middle, tail) = (
        chain.member(0).addr(),
        chain.member(1).addr(),
        chain.member(2).addr(),
    );
    let mut at_head = Client::connect(&head).unwrap();
    let before = at_head.put(b"hot", b"old").unwrap();
    at_head.put(b"cold", b"still").unwrap();

    let writer_head = head.clone();
    let writer = std::thread::spawn(move || {
        let mut c = Client::connect(&writer_head).unwrap();
        c.put(b"hot", b"new").unwrap()
    });
    // Wait until the write has reached the middle (applied, not acknowledged).
    let deadline = Instant::now() + Duration::from_secs(5);
    while stat(&middle, "dirty_keys") == 0 {
        assert!(
            Instant::now() < deadline,
            "the write never reached the middle"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for addr in [&head, &middle] {
        let mut c = Client::connect(addr).unwrap();
        // The dirty key is sent to the tail, named in the redirect...
        let r = c.call(Body::Get { key: key("hot") });
        assert_eq!(
            refusal(r),
            (Some(ErrorCode::NotTail), tail.clone()),
            "GET at {addr}"
        );
        let r = c.call(Body::MGet {
            keys: vec![key("cold"), key("hot")],
        });
        assert_eq!(
            refusal(r),
            (Some(ErrorCode::NotTail), tail.clone()),
            "MGET at {addr}"
        );
        let r = c.call(Body::Size);
        assert_eq!(
            refusal(r),
            (Some(ErrorCode::NotTail), tail.clone()),
            "SIZE at {addr}"
        );
        // ...a clean one is answered here.
        let v = c.get(b"cold").unwrap().expect("cold is there");
        assert_eq!(v.value, b"still");
    }
    // The tail answers the old value: the new one is not committed yet.
    let mut at_tail = Client::connect(&tail).unwrap();
    let v = at_tail.get(b"hot").unwrap().expect("hot is there");
    assert_eq!((v.value.as_slice(), v.version), (&b"old"[..], before.op_id));
    assert!(stat(&head, "reads_sent_to_tail") >= 3);

    let written = writer.join().unwrap();
    // Acknowledged: clean again everywhere, with the new value.
    for addr in [&head, &middle, &tail] {
        let v = Client::connect(addr).unwrap().get(b"hot").unwrap().unwrap();
        assert_eq!(
            (v.value.as_slice(), v.version),
            (&b"new"[..], written.op_id)
        );
        assert_eq!(stat(addr, "dirty_keys"), 0, "{addr}");
    }
}

#[test]
fn with_craq_off_only_the_tail_answers_reads() {
    let chain = Chain::start_with(3, false, &["--craq", "off"]);
    let mut c = chain.client();
    c.call(Body::Put {
        key: key("k"),
        value: b"v".to_vec(),
        mode: chaintable::wire::WriteMode::Sync,
    })
    .unwrap();
    let tail = chain.member(2).addr();
    for i in 0..2 {
        let addr = chain.member(i).addr();
        let mut direct = Client::connect(&addr).unwrap();
        assert_eq!(direct.server_hello().features & FEATURE_CRAQ_READS, 0);
        let r = direct.call(Body::Get { key: key("k") });
        assert_eq!(refusal(r), (Some(ErrorCode::NotTail), tail.clone()));
        assert_eq!(stat(&addr, "craq"), 0);
    }
    // The chain client still reads everything, following the redirects.
    for _ in 0..3 {
        let (reply, at) = c.call(Body::Get { key: key("k") }).unwrap();
        assert!(matches!(reply, Body::Value(Some(_))), "{reply:?}");
        assert_eq!(at, tail);
    }
    c.close();
}

/// Every NOT_HEAD and NOT_TAIL names a member (never an empty redirect),
/// and the right one: right after the tail fails, and while a new member
/// joins (it names its predecessor, the acting tail, or says UNAVAILABLE
/// before it knows the chain).
#[test]
fn redirects_name_the_right_member_after_a_failover_and_during_a_join() {
    let mut chain = Chain::start_with(3, false, &[]);
    let head = chain.member(0).addr();
    let op = Client::connect(&head).unwrap().put(b"k", b"v").unwrap();
    chain.kill9(2);
    chain.wait_chain_len(2);
    let new_tail = chain.member(1).addr();
    let mut at_head = Client::connect(&head).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // The head's view may lag ZooKeeper by a moment; it must never name
        // the dead tail once it has moved on, nor an empty address.
        let (code, to) = refusal(at_head.call(Body::Verify { op_id: op.op_id }));
        assert!(
            !to.is_empty() || code == Some(ErrorCode::Unavailable),
            "{code:?}"
        );
        if to == new_tail {
            break;
        }
        assert!(Instant::now() < deadline, "the head still names {to}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let no_forward = chaintable::client::Options {
        no_forward: true,
        ..chaintable::client::Options::default()
    };
    let mut at_tail = Client::connect_with(&new_tail, no_forward).unwrap();
    let r = at_tail.call(Body::Put {
        key: key("x"),
        value: b"y".to_vec(),
        mode: chaintable::wire::WriteMode::Sync,
    });
    assert_eq!(refusal(r), (Some(ErrorCode::NotHead), head.clone()));

    // A member joins: ask it for a read from its first moment on.
    let joiner_port = common::free_port();
    let joiner_addr = format!("127.0.0.1:{joiner_port}");
    let watcher = std::thread::spawn(move || {
        let mut answers = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            let Ok(mut c) = Client::connect(&joiner_addr) else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            while Instant::now() < deadline {
                match c.call(Body::Verify { op_id: 1 }) {
                    Ok(_) => return answers,
                    Err(ClientError::Server(e)) => answers.push((e.error_code(), e.redirect)),
                    Err(_) => break,
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        answers
    });
    chain.add_member_on(joiner_port);
    chain.wait_chain_len(3);
    let answers = watcher.join().unwrap();
    assert!(!answers.is_empty(), "the joiner was never asked");
    for (code, to) in &answers {
        match code {
            Some(ErrorCode::Unavailable) => assert!(to.is_empty()),
            Some(ErrorCode::NotTail) => assert_eq!(to, &new_tail, "the joiner's predecessor"),
            other => panic!("the joiner answered {other:?} {to}"),
        }
    }
}

/// Version floors (spec §5.7): a client's reads carry the highest sequence
/// number it has seen, so it reads its own asynchronous write back even
/// while that write is still on its way to the tail, and a member whose
/// history does not reach the floor says BEHIND instead of answering.
#[test]
fn a_client_reads_its_own_asynchronous_write_whichever_member_answers() {
    let mut chain = Chain::start_with(2, false, &[]);
    chain.add_member_with(&["--test-worker-delay-ms", "1500"]);
    chain.wait_chain_len(3);
    let tail = chain.member(2).addr();
    let mut c = chain.client();
    let put = |value: &str| Body::Put {
        key: key("mine"),
        value: value.as_bytes().to_vec(),
        mode: chaintable::wire::WriteMode::Async,
    };
    let (reply, _) = c.call(put("first")).unwrap();
    let Body::PutOk(w) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(w.outcome, chaintable::wire::WriteOutcome::Pending);
    assert_eq!(c.last_seq_seen, w.op_id);
    // The tail has not applied it yet: with the floor it says so...
    let mut at_tail = Client::connect(&tail).unwrap();
    let r = at_tail.call(Body::GetAtLeast {
        key: key("mine"),
        min_seq: w.op_id,
    });
    assert_eq!(refusal(r), (Some(ErrorCode::Behind), String::new()));
    // ...and without one it answers what it has: nothing yet.
    assert_eq!(at_tail.get(b"mine").unwrap(), None);
    // The client's own reads, at whichever member, wait for its write.
    for _ in 0..3 {
        let (reply, at) = c.call(Body::Get { key: key("mine") }).unwrap();
        let Body::Value(Some(v)) = reply else {
            panic!("{reply:?} from {at}")
        };
        assert_eq!(
            (v.value.as_slice(), v.version),
            (&b"first"[..], w.op_id),
            "at {at}"
        );
    }
    // A floor beyond anything the chain has done: BEHIND everywhere, the
    // tail's without a redirect, the others' naming the tail.
    let far = w.op_id + 1_000_000;
    for (i, addr) in chain.addrs().iter().enumerate() {
        let mut direct = Client::connect(addr).unwrap();
        let r = direct.call(Body::GetAtLeast {
            key: key("other"),
            min_seq: far,
        });
        let expected = if i == 2 { String::new() } else { tail.clone() };
        assert_eq!(
            refusal(r),
            (Some(ErrorCode::Behind), expected),
            "member {i}"
        );
    }
    c.close();
}
