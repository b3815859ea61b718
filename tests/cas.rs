//! Compare-and-set (CPUT, CDEL) against real servers: what each outcome
//! means, increments from many clients that lose no update, the answer
//! surviving a restart from the log, and every member of a chain agreeing
//! on every outcome.

#![cfg(feature = "testing")]

mod common;

use chaintable::client::chain::ChainClient;
use chaintable::client::Client;
use chaintable::serialize::Key;
use chaintable::wire::{Body, CasOk, OpState, WriteOutcome};
use common::chain::Chain;
use common::ServerProc;
use std::sync::Arc;
use std::thread;

#[test]
fn each_outcome_of_a_compare_and_set() {
    let s = ServerProc::start(2, &[]);
    let mut c = s.client();
    // 0 means "must be absent".
    let created = c.put_if(b"k", b"one", 0).unwrap();
    assert_eq!(created.outcome, WriteOutcome::Absent);
    assert_eq!(created.version, created.op_id);
    let again = c.put_if(b"k", b"two", 0).unwrap();
    assert_eq!(
        (again.outcome, again.version),
        (WriteOutcome::Mismatch, created.op_id),
        "a mismatch reports the current version"
    );
    assert_eq!(
        c.get(b"k").unwrap().unwrap().value,
        b"one",
        "nothing changed"
    );
    // A mismatch is executed: it has its place in the history.
    assert_eq!(c.verify(again.op_id).unwrap(), OpState::Executed);
    let replaced = c.put_if(b"k", b"two", created.op_id).unwrap();
    assert_eq!(replaced.outcome, WriteOutcome::Existed);
    let v = c.get(b"k").unwrap().unwrap();
    assert_eq!(
        (v.value.as_slice(), v.version),
        (&b"two"[..], replaced.op_id)
    );

    let stale = c.del_if(b"k", created.op_id).unwrap();
    assert_eq!(
        (stale.outcome, stale.version),
        (WriteOutcome::Mismatch, replaced.op_id)
    );
    let deleted = c.del_if(b"k", replaced.op_id).unwrap();
    assert_eq!(
        (deleted.outcome, deleted.version),
        (WriteOutcome::Existed, 0)
    );
    assert_eq!(c.get(b"k").unwrap(), None);
    let on_absent = c.put_if(b"k", b"x", replaced.op_id).unwrap();
    assert_eq!(
        (on_absent.outcome, on_absent.version),
        (WriteOutcome::Mismatch, 0)
    );
    let hello = c.server_hello().features;
    assert_ne!(
        hello & chaintable::wire::FEATURE_CAS,
        0,
        "HELLO_OK announces CAS"
    );
}

/// Adds 1 to the counter at `key` by read, compare-and-set, retry; returns
/// how many compare-and-sets did not match on the way.
fn increment(cas: &mut dyn FnMut(&[u8], u64) -> CasOk, get: &mut dyn FnMut() -> (u64, u64)) -> u64 {
    let mut mismatches = 0;
    loop {
        let (value, version) = get();
        let next = (value + 1).to_string();
        if cas(next.as_bytes(), version).outcome != WriteOutcome::Mismatch {
            return mismatches;
        }
        mismatches += 1;
    }
}

fn counter(v: Option<chaintable::wire::Versioned>) -> (u64, u64) {
    v.map_or((0, 0), |v| {
        let n = String::from_utf8(v.value).unwrap().parse().unwrap();
        (n, v.version)
    })
}

const WRITERS: u64 = 4;
const EACH: u64 = 60;

#[test]
fn concurrent_increments_lose_no_update_and_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("chaintable-cas-{}", std::process::id()));
    let dir_arg = dir.to_str().unwrap().to_string();
    let mut s = ServerProc::start(4, &["--data-dir", &dir_arg]);
    let addr = Arc::new(s.addr());
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut c = Client::connect(&addr).unwrap();
                let mut c2 = Client::connect(&addr).unwrap();
                let mut mismatches = 0;
                for _ in 0..EACH {
                    mismatches += increment(
                        &mut |v, version| c.put_if(b"counter", v, version).unwrap(),
                        &mut || counter(c2.get(b"counter").unwrap()),
                    );
                }
                mismatches
            })
        })
        .collect();
    let mismatches: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let mut c = s.client();
    let (value, version) = counter(c.get(b"counter").unwrap());
    assert_eq!(value, WRITERS * EACH, "every increment counted once");
    assert!(
        mismatches > 0,
        "the writers never raced; the test proved little"
    );
    // One mismatch's id, to VERIFY after the restart: the last op before
    // the final write that did not change the counter.
    let before = c.put_if(b"counter", b"stale", version - 1).unwrap();
    assert_eq!(before.outcome, WriteOutcome::Mismatch);

    s.kill9();
    let s = ServerProc::start(4, &["--data-dir", &dir_arg]);
    let mut c = s.client();
    assert_eq!(counter(c.get(b"counter").unwrap()), (value, version));
    assert_eq!(
        c.verify(before.op_id).unwrap(),
        OpState::Executed,
        "a mismatch stays in the history across a restart"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_member_of_a_chain_agrees_on_every_compare_and_set() {
    let mut chain = Chain::start_with(3, false, &[]);
    let zk = Arc::new(chain.zk.addr());
    let writers: Vec<_> = (0..3)
        .map(|_| {
            let zk = zk.clone();
            thread::spawn(move || {
                let opts = chaintable::client::Options::default();
                let mut c = ChainClient::connect(&zk, "/chain", opts).unwrap();
                let key = || Key::new("counter").unwrap();
                let mut cas_client = |v: &[u8], expected: u64| {
                    let body = Body::PutIf {
                        key: key(),
                        expected,
                        value: v.to_vec(),
                    };
                    match c.call(body).unwrap().0 {
                        Body::PutIfOk(r) => r,
                        other => panic!("{other:?}"),
                    }
                };
                let mut mismatches = 0;
                let opts = chaintable::client::Options::default();
                let mut reader = ChainClient::connect(&zk, "/chain", opts).unwrap();
                for _ in 0..30 {
                    mismatches += increment(&mut cas_client, &mut || match reader
                        .call(Body::Get { key: key() })
                        .unwrap()
                        .0
                    {
                        Body::Value(v) => counter(v),
                        other => panic!("{other:?}"),
                    });
                }
                mismatches
            })
        })
        .collect();
    let mismatches: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(mismatches > 0, "the writers never raced");
    // A member that joins now receives the state the others agree on.
    chain.add_member();
    chain.wait_chain_len(4);
    let (digest, entries) = chain.converged_digest().expect("members agree");
    assert_eq!(entries, "1", "digest {digest}");
    let tail = chain.addrs().last().cloned().unwrap();
    let mut at_tail = Client::connect(&tail).unwrap();
    assert_eq!(counter(at_tail.get(b"counter").unwrap()).0, 90);
}

/// A compare-and-set (or a batch) whose reply does not come is a write of
/// unknown outcome, never a retriable read: the chain client retried such
/// a CPUT after a failover lost its reply, and the retry, finding the
/// first attempt's own write, answered "mismatch" (a torture run caught
/// it).
#[test]
fn a_lost_reply_to_a_cas_or_a_batch_is_outcome_unknown() {
    let s = ServerProc::start(2, &["--test-worker-delay-ms", "1500"]);
    let opts = chaintable::client::Options {
        read_timeout: std::time::Duration::from_millis(300),
        ..chaintable::client::Options::default()
    };
    let mut c = Client::connect_with(&s.addr(), opts.clone()).unwrap();
    let e = c.put_if(b"k", b"v", 0).unwrap_err();
    assert_eq!(e.retry(), chaintable::wire::Retry::OutcomeUnknown, "{e:?}");
    let mut c = Client::connect_with(&s.addr(), opts).unwrap();
    let ops = vec![chaintable::wire::BatchOp::Del {
        key: Key::new("k").unwrap(),
    }];
    let e = c.mwrite(ops).unwrap_err();
    assert_eq!(e.retry(), chaintable::wire::Retry::OutcomeUnknown, "{e:?}");
}
