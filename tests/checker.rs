//! The checker's own tests: hand-written histories with known verdicts.

mod common;

use common::lincheck::{check, KvOp, Recorded, Verdict, MAX_OPS_PER_KEY};
use std::time::Duration;

fn op(client: u32, op: KvOp, call: i64, ret: Option<i64>) -> Recorded {
    Recorded {
        client,
        key: 1,
        op,
        call_ns: call,
        return_ns: ret,
    }
}

fn put(v: u64) -> KvOp {
    KvOp::Put {
        value: v,
        existed: None,
    }
}

fn get(v: Option<u64>) -> KvOp {
    KvOp::Get { value: v }
}

const LIMIT: Duration = Duration::from_secs(5);

#[test]
fn sequential_and_overlapping_histories_are_linearizable() {
    let h = vec![
        op(1, put(1), 0, Some(10)),
        op(2, get(Some(1)), 20, Some(30)),
        // A read concurrent with a write may see either value.
        op(1, put(2), 40, Some(60)),
        op(2, get(Some(1)), 45, Some(50)),
        op(3, get(Some(2)), 55, Some(70)),
        op(
            1,
            KvOp::Del {
                existed: Some(true),
            },
            80,
            Some(90),
        ),
        op(2, get(None), 95, Some(99)),
    ];
    assert_eq!(check(&h, LIMIT), Verdict::Linearizable);
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_an_anomaly() {
    let h = vec![
        op(1, put(1), 0, Some(10)),
        op(1, put(2), 20, Some(30)),
        op(2, get(Some(1)), 40, Some(50)),
    ];
    assert!(matches!(check(&h, LIMIT), Verdict::Anomaly { key: 1, .. }));
}

#[test]
fn a_value_that_was_never_written_is_an_anomaly() {
    let h = vec![
        op(1, put(1), 0, Some(10)),
        op(2, get(Some(7)), 20, Some(30)),
    ];
    assert!(matches!(check(&h, LIMIT), Verdict::Anomaly { .. }));
}

#[test]
fn a_timed_out_write_may_or_may_not_have_happened() {
    // Unknown outcome, then reads that saw it and reads that did not yet.
    let seen = vec![
        op(1, put(1), 0, Some(10)),
        op(1, put(2), 20, None),
        op(2, get(Some(1)), 30, Some(40)),
        op(2, get(Some(2)), 50, Some(60)),
    ];
    assert_eq!(check(&seen, LIMIT), Verdict::Linearizable);
    let never = vec![
        op(1, put(1), 0, Some(10)),
        op(1, put(2), 20, None),
        op(2, get(Some(1)), 50, Some(60)),
    ];
    assert_eq!(check(&never, LIMIT), Verdict::Linearizable);
}

#[test]
fn a_timed_out_write_observed_twice_is_an_anomaly() {
    // The unknown write took effect, was overwritten, then appeared again.
    let h = vec![
        op(1, put(1), 0, None),
        op(2, get(Some(1)), 10, Some(20)),
        op(3, put(3), 30, Some(40)),
        op(2, get(Some(3)), 50, Some(60)),
        op(2, get(Some(1)), 70, Some(80)),
    ];
    assert!(matches!(check(&h, LIMIT), Verdict::Anomaly { .. }));
}

#[test]
fn a_wrong_existed_flag_is_an_anomaly() {
    let h = vec![op(
        1,
        KvOp::Put {
            value: 1,
            existed: Some(true),
        },
        0,
        Some(10),
    )];
    assert!(matches!(check(&h, LIMIT), Verdict::Anomaly { .. }));
}

#[test]
fn keys_are_checked_independently_and_quickly() {
    // 10,000 sequential operations over 100 keys.
    let mut h = Vec::new();
    for i in 0..10_000i64 {
        let key = (i % 100) as u32;
        let v = i as u64;
        h.push(Recorded {
            client: 1,
            key,
            op: put(v),
            call_ns: i * 10,
            return_ns: Some(i * 10 + 5),
        });
    }
    let started = std::time::Instant::now();
    assert_eq!(check(&h, LIMIT), Verdict::Linearizable);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_key_over_the_operation_limit_is_refused_not_searched() {
    let writes = |n: usize, key: u32| {
        (0..n as i64).map(move |i| Recorded {
            client: 1,
            key,
            op: put(i as u64),
            call_ns: i * 10,
            return_ns: Some(i * 10 + 5),
        })
    };
    // At the limit on two keys: checked.
    let at: Vec<Recorded> = writes(MAX_OPS_PER_KEY, 1)
        .chain(writes(MAX_OPS_PER_KEY, 2))
        .collect();
    assert_eq!(check(&at, LIMIT), Verdict::Linearizable);
    // One more on key 2: refused, naming the key.
    let over: Vec<Recorded> = writes(10, 1)
        .chain(writes(MAX_OPS_PER_KEY + 1, 2))
        .collect();
    assert_eq!(
        check(&over, LIMIT),
        Verdict::TooLarge {
            key: 2,
            ops: MAX_OPS_PER_KEY + 1
        }
    );
}
