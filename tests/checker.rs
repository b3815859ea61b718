//! The checker's own tests: hand-written histories with known verdicts.

#![cfg(feature = "testing")]

mod common;

use common::lincheck::{check, smallest_slice, KvOp, Recorded, Verdict, MAX_OPS_PER_KEY};
use std::time::{Duration, Instant};

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

fn cas(expected: Option<u64>, value: Option<u64>, applied: Option<bool>) -> KvOp {
    KvOp::Cas {
        expected,
        value,
        applied,
    }
}

#[test]
fn compare_and_set_histories() {
    // Two clients race to replace 1: one wins, the other's compare fails,
    // and a read after both sees the winner.
    let h = vec![
        op(1, put(1), 0, Some(10)),
        op(2, cas(Some(1), Some(2), Some(true)), 20, Some(40)),
        op(3, cas(Some(1), Some(3), Some(false)), 25, Some(45)),
        op(1, get(Some(2)), 50, Some(60)),
        // A CDEL that matched, then a create-if-absent.
        op(2, cas(Some(2), None, Some(true)), 70, Some(80)),
        op(3, cas(None, Some(4), Some(true)), 90, Some(100)),
        op(1, get(Some(4)), 110, Some(120)),
    ];
    assert_eq!(check(&h, LIMIT), Verdict::Linearizable);
    // Both winning is not linearizable: only one can find 1 there.
    let both = vec![
        op(1, put(1), 0, Some(10)),
        op(2, cas(Some(1), Some(2), Some(true)), 20, Some(40)),
        op(3, cas(Some(1), Some(3), Some(true)), 25, Some(45)),
    ];
    assert!(matches!(
        check(&both, LIMIT),
        Verdict::Anomaly { key: 1, .. }
    ));
    // A compare that failed although nothing else ran: an anomaly.
    let lost = vec![
        op(1, put(1), 0, Some(10)),
        op(2, cas(Some(1), Some(2), Some(false)), 20, Some(40)),
    ];
    assert!(matches!(
        check(&lost, LIMIT),
        Verdict::Anomaly { key: 1, .. }
    ));
    // An unknown outcome may have happened or not.
    let unknown = vec![
        op(1, put(1), 0, Some(10)),
        op(2, cas(Some(1), Some(2), None), 20, None),
        op(3, get(Some(2)), 50, Some(60)),
    ];
    assert_eq!(check(&unknown, LIMIT), Verdict::Linearizable);
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

/// The unknown write took effect, was overwritten, then appeared again.
fn timed_out_write_observed_twice() -> Vec<Recorded> {
    vec![
        op(1, put(1), 0, None),
        op(2, get(Some(1)), 10, Some(20)),
        op(3, put(3), 30, Some(40)),
        op(2, get(Some(3)), 50, Some(60)),
        op(2, get(Some(1)), 70, Some(80)),
    ]
}

#[test]
fn a_timed_out_write_observed_twice_is_an_anomaly() {
    let h = timed_out_write_observed_twice();
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
    for i in 0..10_000u32 {
        let key = i % 100;
        let v = u64::from(i);
        let i = i64::from(i);
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
        (0..i64::try_from(n).expect("small")).map(move |i| Recorded {
            client: 1,
            key,
            op: put(i.unsigned_abs()),
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

/// The values and call times of a slice, for comparing with what we wrote.
fn slice_of(h: &[Recorded]) -> (bool, Vec<(KvOp, i64)>) {
    let refs: Vec<&Recorded> = h.iter().collect();
    let slice = smallest_slice(&refs, Instant::now() + LIMIT);
    let ops = slice.ops.into_iter().map(|r| (r.op, r.call_ns)).collect();
    (slice.from_empty, ops)
}

/// `n` sequential writes of 1..=n by client 1, 10 ns apart, then the rest.
fn after_writes(n: i64, rest: Vec<Recorded>) -> Vec<Recorded> {
    let mut h: Vec<Recorded> = (1..=n)
        .map(|i| op(1, put(i.unsigned_abs()), i * 10, Some(i * 10 + 5)))
        .collect();
    h.extend(rest);
    h
}

#[test]
fn the_slice_of_a_stale_read_is_the_write_it_missed_and_the_read() {
    // A thousand good writes, the stale read, and later operations that
    // have nothing to do with it.
    let h = after_writes(
        1000,
        vec![
            op(2, get(Some(999)), 20_000, Some(20_010)),
            op(1, put(5000), 20_100, Some(20_110)),
            op(2, get(Some(5000)), 20_200, Some(20_210)),
        ],
    );
    assert!(matches!(check(&h, LIMIT), Verdict::Anomaly { key: 1, .. }));
    assert_eq!(
        slice_of(&h),
        (false, vec![(put(1000), 10_000), (get(Some(999)), 20_000)])
    );
}

#[test]
fn the_slice_ends_where_the_history_became_illegal_even_if_a_read_was_slow() {
    // The read started after put(2) returned but returned long after put(3)
    // and before put(9): the history turns illegal when the read returns,
    // so put(9) is not part of the slice. put(3) ran inside the window.
    let h = after_writes(
        3,
        vec![
            op(2, get(Some(1)), 26, Some(500)),
            op(1, put(9), 600, Some(610)),
        ],
    );
    assert_eq!(
        slice_of(&h),
        (false, vec![(put(2), 20), (get(Some(1)), 26), (put(3), 30)])
    );
}

#[test]
fn the_slice_of_a_timed_out_write_observed_twice_spans_both_reads() {
    let mut h = timed_out_write_observed_twice();
    h.push(op(3, put(4), 90, Some(100)));
    let (from_empty, ops) = slice_of(&h);
    // From any starting value the key could have held 1 already, so only
    // the empty start makes this illegal: the slice is the history up to
    // the second sighting of 1, and put(4) after it is cut off.
    assert!(from_empty);
    let calls: Vec<i64> = ops.iter().map(|(_, call)| *call).collect();
    assert_eq!(calls, vec![0, 10, 30, 50, 70]);
}

#[test]
fn a_slice_that_needs_the_empty_start_says_so() {
    let h = after_writes(
        2,
        vec![op(
            2,
            KvOp::Del {
                existed: Some(true),
            },
            100,
            Some(110),
        )],
    );
    assert_eq!(check(&h, LIMIT), Verdict::Linearizable);
    let wrong = vec![
        op(
            1,
            KvOp::Put {
                value: 1,
                existed: Some(true),
            },
            0,
            Some(10),
        ),
        op(2, get(Some(1)), 20, Some(30)),
    ];
    let (from_empty, ops) = slice_of(&wrong);
    assert!(from_empty, "{ops:?}");
    assert_eq!(ops.len(), 1);
    let Verdict::Anomaly { slice, .. } = check(&wrong, LIMIT) else {
        panic!("not an anomaly");
    };
    assert!(slice[0].contains("empty initial state"), "{slice:?}");
}
