//! Scenario: many clients at once. 200 concurrent clients each run a
//! seeded mix of operations over their own keys and check every answer
//! against a model; the final table must equal the union of the models.
//! A pipelined client keeps 1000 requests in flight and gets 1000 replies
//! in order. SIGTERM drains queued writes and exits 0.

#![cfg(feature = "testing")]

mod common;

use chaintable::serialize::Key;
use chaintable::wire::{Body, WriteMode, WriteOutcome};
use common::ServerProc;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;

const CLIENTS: usize = 200;
const OPS_PER_CLIENT: usize = 150;

#[test]
fn two_hundred_concurrent_clients_end_with_the_model_table() {
    let s = ServerProc::start(16, &[]);
    let addr = s.addr();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let addr = addr.clone();
            std::thread::spawn(move || -> BTreeMap<Vec<u8>, Vec<u8>> {
                let mut rng = StdRng::seed_from_u64(id as u64);
                let mut c = chaintable::client::Client::connect(&addr).expect("connect");
                let mut model = BTreeMap::new();
                for op in 0..OPS_PER_CLIENT {
                    let key = format!("c{id}-k{}", rng.gen_range(0..10)).into_bytes();
                    match rng.gen_range(0..10) {
                        0..=4 => {
                            let value = format!("v{id}-{op}").into_bytes();
                            let w = c.put(&key, &value).expect("put");
                            let existed = model.insert(key, value).is_some();
                            assert_eq!(w.outcome == WriteOutcome::Existed, existed);
                        }
                        5..=6 => {
                            let w = c.del(&key).expect("del");
                            let existed = model.remove(&key).is_some();
                            assert_eq!(w.outcome == WriteOutcome::Existed, existed);
                        }
                        _ => {
                            let got = c.get(&key).expect("get").map(|v| v.value);
                            assert_eq!(got.as_ref(), model.get(&key), "client {id} op {op}");
                        }
                    }
                }
                model
            })
        })
        .collect();
    let mut expected = BTreeMap::new();
    for t in threads {
        expected.extend(t.join().expect("client thread"));
    }
    let mut c = s.client();
    let table: BTreeMap<Vec<u8>, Vec<u8>> = c
        .table()
        .unwrap()
        .into_iter()
        .map(|e| (e.key.into_bytes(), e.value))
        .collect();
    assert_eq!(table, expected);
    assert_eq!(c.size().unwrap(), expected.len() as u64);
    let stats = c.stats().unwrap();
    assert!(stats.get_count("ops_served").unwrap() >= (CLIENTS * OPS_PER_CLIENT) as u64);
    assert_eq!(stats.get_count("errors_sent"), Some(0));
}

#[test]
fn a_pipelined_client_gets_a_thousand_replies_in_order() {
    let s = ServerProc::start(4, &[]);
    let mut c = s.client();
    // Sync puts, async puts, gets and verifies interleaved: sync writes make
    // later replies wait for them, which is what ordering must survive.
    let bodies: Vec<Body> = (0..1000u64)
        .map(|i| {
            let key = Key::new(format!("p{}", i % 37)).unwrap();
            match i % 4 {
                0 => Body::Put {
                    key,
                    value: i.to_string().into_bytes(),
                    mode: WriteMode::Sync,
                },
                1 => Body::Put {
                    key,
                    value: i.to_string().into_bytes(),
                    mode: WriteMode::Async,
                },
                2 => Body::Get { key },
                _ => Body::Size,
            }
        })
        .collect();
    let replies = c.pipeline(bodies.clone()).expect("pipeline");
    assert_eq!(replies.len(), 1000);
    for (i, (req, reply)) in bodies.iter().zip(&replies).enumerate() {
        let reply = reply
            .as_ref()
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        match (req, reply) {
            (Body::Put { mode, .. }, Body::PutOk(w)) => {
                let pending = w.outcome == WriteOutcome::Pending;
                assert_eq!(pending, *mode == WriteMode::Async, "request {i}");
            }
            (Body::Get { .. }, Body::Value(v)) => {
                // A read sees every synchronous write sent before it on the
                // connection; async writes before it may or may not show.
                let got = v.as_ref().map(|v| v.value.clone());
                let i_written: Option<u64> = got
                    .as_ref()
                    .map(|g| String::from_utf8_lossy(g).parse().unwrap());
                let last_sync = (0..i as u64)
                    .rev()
                    .find(|j| j % 4 == 0 && j % 37 == (i as u64) % 37);
                if let Some(ls) = last_sync {
                    assert!(
                        i_written.unwrap_or(0) >= ls,
                        "request {i} read {i_written:?}, older than sync write {ls}"
                    );
                }
            }
            (Body::Size, Body::SizeOk { entries }) => assert!(*entries <= 37),
            other => panic!("request {i}: reply {:?} does not match", other.1),
        }
    }
}

#[test]
fn sigterm_finishes_queued_writes_and_exits_zero() {
    let mut s = ServerProc::start(4, &["--test-worker-delay-ms", "20"]);
    let mut c = s.client();
    // 20 async writes are queued behind a slow worker (20 ms each).
    let mut last = 0;
    for i in 0..20 {
        last = c.put_async(format!("t{i}").as_bytes(), b"v").unwrap().op_id;
    }
    assert_eq!(c.verify(last).unwrap(), chaintable::wire::OpState::Pending);
    s.signal(nix::sys::signal::Signal::SIGTERM);
    let code = s.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "log:\n{}", s.log_text());
    let log = s.log_text();
    assert!(log.contains("finishing queued writes"), "{log}");
    // Every queued write was executed before the process exited.
    assert!(log.contains(&format!("last_executed={last}")), "{log}");
}

#[test]
fn a_full_write_queue_answers_busy_instead_of_growing() {
    // A slow worker (50 ms per write) and a queue of 10: a burst of 100
    // async writes gets at most about 10 admitted, the rest BUSY.
    let s = ServerProc::start(2, &["--queue-depth", "10", "--test-worker-delay-ms", "50"]);
    let mut c = s.client();
    let bodies: Vec<Body> = (0..100)
        .map(|i| Body::Put {
            key: Key::new(format!("q{i}")).unwrap(),
            value: vec![1],
            mode: WriteMode::Async,
        })
        .collect();
    let replies = c.pipeline(bodies).unwrap();
    let busy = replies
        .iter()
        .filter(|r| matches!(r, Err(e) if e.code() == Some(chaintable::wire::ErrorCode::Busy)))
        .count();
    let admitted = replies.iter().filter(|r| r.is_ok()).count();
    assert_eq!(busy + admitted, 100, "every reply is a PUT_OK or BUSY");
    assert!(admitted <= 12, "{admitted} admitted past a queue of 10");
    assert!(busy >= 88);
    // BUSY is retriable and nothing was changed: the table holds exactly the admitted keys.
    let admitted_keys = common::wait_for(Duration::from_secs(10), || {
        let n = c.size().ok()?;
        (usize::try_from(n).ok() == Some(admitted)).then_some(n)
    });
    assert!(admitted_keys.is_some());
}
