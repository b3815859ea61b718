//! Writes sent to any chain member (spec §5.6), with real `table-server`
//! processes over a real ZooKeeper: a member that is not the head forwards
//! a client's write to the head and relays its answer; NO_FORWARD and
//! `--forward-writes off` get the redirect instead; a forward lost with the
//! head is OUTCOME_UNKNOWN.

#![cfg(feature = "testing")]

mod common;

use chaintable::client::{Client, ClientError, Options};
use chaintable::wire::{BatchOp, ErrorCode, OpState, WriteOutcome};
use common::chain::{refusal, stat_u64 as stat, Chain};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

fn key(s: &str) -> chaintable::serialize::Key {
    chaintable::serialize::Key::new(s.as_bytes()).unwrap()
}

#[test]
fn a_write_sent_to_the_middle_or_the_tail_is_executed_once() {
    let chain = Chain::start_with(3, false, &[]);
    let (head, middle, tail) = (
        chain.member(0).addr(),
        chain.member(1).addr(),
        chain.member(2).addr(),
    );
    let assigned_before = stat(&head, "last_assigned");
    let mut at_middle = Client::connect(&middle).unwrap();
    let mut at_tail = Client::connect(&tail).unwrap();
    let m = at_middle.put(b"m", b"via middle").unwrap();
    let t = at_tail.put(b"t", b"via tail").unwrap();
    assert_eq!(
        (m.outcome, t.outcome),
        (WriteOutcome::Absent, WriteOutcome::Absent)
    );
    // A compare-and-set and a batch keep their answers through a forward.
    let cas = at_middle.put_if(b"m", b"swapped", m.op_id).unwrap();
    assert_eq!(cas.outcome, WriteOutcome::Existed);
    let refused = at_tail.put_if(b"m", b"stale", m.op_id).unwrap();
    assert_eq!(
        (refused.outcome, refused.version),
        (WriteOutcome::Mismatch, cas.op_id),
        "the compare saw the swap"
    );
    let batch = at_tail
        .mwrite(vec![
            BatchOp::Put {
                key: key("b1"),
                value: b"1".to_vec(),
            },
            BatchOp::Del { key: key("t") },
        ])
        .unwrap();
    let gone = at_middle.del(b"b1").unwrap();
    assert_eq!(gone.outcome, WriteOutcome::Existed);
    // Six writes, six ids at the head: none ran twice, none was lost.
    assert_eq!(stat(&head, "last_assigned") - assigned_before, 6);
    assert!(stat(&middle, "writes_forwarded") >= 3);
    assert!(stat(&tail, "writes_forwarded") >= 3);
    let mut reader = Client::connect(&tail).unwrap();
    let v = reader.get(b"m").unwrap().expect("m is there");
    assert_eq!(
        (v.value.as_slice(), v.version),
        (&b"swapped"[..], cas.op_id)
    );
    assert_eq!(reader.get(b"t").unwrap(), None, "the batch deleted t");
    assert_eq!(reader.get(b"b1").unwrap(), None);
    for id in [m.op_id, t.op_id, batch, gone.op_id] {
        assert_eq!(reader.verify(id).unwrap(), OpState::Executed, "op {id}");
    }
    assert_eq!(stat(&middle, "forwards_inflight"), 0);
}

#[test]
fn no_forward_and_forwarding_off_get_the_redirect() {
    let chain = Chain::start_with(3, false, &[]);
    let head = chain.member(0).addr();
    let opts = Options {
        no_forward: true,
        ..Options::default()
    };
    let mut asks_not = Client::connect_with(&chain.member(1).addr(), opts).unwrap();
    let r = asks_not.put(b"k", b"v");
    assert_eq!(refusal(r), (Some(ErrorCode::NotHead), head.clone()));
    assert_eq!(stat(&chain.member(1).addr(), "writes_forwarded"), 0);
    drop(chain);

    let chain = Chain::start_with(3, false, &["--forward-writes", "off"]);
    let head = chain.member(0).addr();
    let mut plain = Client::connect(&chain.member(2).addr()).unwrap();
    let r = plain.put(b"k", b"v");
    assert_eq!(refusal(r), (Some(ErrorCode::NotHead), head));
}

#[test]
fn a_forward_lost_with_a_frozen_head_is_outcome_unknown() {
    let chain = Chain::start_with(3, false, &[]);
    let middle = chain.member(1).addr();
    let opts = Options {
        read_timeout: Duration::from_secs(30),
        ..Options::default()
    };
    let mut at_middle = Client::connect_with(&middle, opts).unwrap();
    // The middle's forwarding connection to the head is up...
    at_middle.put(b"before", b"1").unwrap();
    // ...and the head freezes with the next write on it.
    chain.member(0).signal(Signal::SIGSTOP);
    let started = Instant::now();
    let r = at_middle.put(b"during", b"2");
    let (code, _) = refusal(r);
    assert_eq!(
        code,
        Some(ErrorCode::OutcomeUnknown),
        "sent, never answered"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // The chain moved on without the frozen head: the middle is head now
    // and takes writes itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match at_middle.put(b"after", b"3") {
            Ok(w) => break w,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no write after the failover: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(after.outcome, WriteOutcome::Absent);
    chain.member(0).signal(Signal::SIGCONT);
}

/// An attack on the forwarding path: 200 writes of 1 MiB sent to the
/// middle while the head is frozen. The member forwards at most
/// FORWARD_BYTES_MAX (64 MiB) of them, answers the rest BUSY at once, and
/// its memory stays bounded (it would hold all 200 MiB without the bound).
#[test]
fn forwarded_writes_stay_bounded_while_the_head_is_frozen() {
    let chain = Chain::start_with(3, false, &[]);
    let middle = chain.member(1);
    let opts = Options {
        read_timeout: Duration::from_secs(30),
        ..Options::default()
    };
    let mut c = Client::connect_with(&middle.addr(), opts).unwrap();
    c.put(b"warm", b"1").unwrap();
    let hwm_before = middle.peak_kib();
    let started = Instant::now();
    chain.member(0).signal(Signal::SIGSTOP);
    let value = vec![7u8; 1 << 20];
    let bodies = (0..200)
        .map(|i| chaintable::wire::Body::Put {
            key: key(&format!("big{i}")),
            value: value.clone(),
            mode: chaintable::wire::WriteMode::Sync,
        })
        .collect();
    let replies = c.pipeline(bodies).expect("every write answered");
    chain.member(0).signal(Signal::SIGCONT);
    let code =
        |r: &Result<chaintable::wire::Body, ClientError>| r.as_ref().err().and_then(|e| e.code());
    let busy = replies
        .iter()
        .filter(|r| code(r) == Some(ErrorCode::Busy))
        .count();
    // Forwarded: the first batch reached the frozen head (OUTCOME_UNKNOWN
    // once the forwarding thread gave up on it); the rest could not even
    // get a HELLO answered (UNAVAILABLE: never sent).
    let forwarded = replies
        .iter()
        .filter(|r| {
            matches!(
                code(r),
                Some(ErrorCode::OutcomeUnknown | ErrorCode::Unavailable)
            )
        })
        .count();
    let unknown = replies
        .iter()
        .filter(|r| code(r) == Some(ErrorCode::OutcomeUnknown))
        .count();
    let written = replies.iter().filter(|r| r.is_ok()).count();
    let summary =
        format!("{busy} BUSY, {forwarded} forwarded ({unknown} unknown), {written} written");
    assert_eq!(busy + forwarded + written, 200, "{summary}");
    assert!(busy >= 100, "the bound did not hold: {summary}");
    assert!((1..=64).contains(&forwarded), "{summary}");
    assert!(unknown >= 1, "{summary}");
    let grown_mib = middle.peak_kib().saturating_sub(hwm_before) / 1024;
    assert!(grown_mib < 140, "the middle grew by {grown_mib} MiB");
    // Bounded in time too: two forwarding timeouts (the frozen head's
    // write, then its unanswered HELLO), not one per write.
    assert!(
        started.elapsed() < Duration::from_secs(28),
        "{:?}",
        started.elapsed()
    );
}
