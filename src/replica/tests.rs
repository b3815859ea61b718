//! Unit tests of single-replica behaviour (the chain as a whole is
//! exercised by `tests/chain_sim.rs`).

use super::snapshot::split_chunks;
use super::*;
use crate::serialize::Entry;
use crate::serialize::Key;
use crate::wire::{OpState, WriteOp};
use std::time::{Duration, Instant};

/// A chain member whose clock reads `t0` and whose lease runs an hour.
fn leased_at(name: &str, sent_max: usize, t0: Instant) -> Replica {
    let mut r = Replica::chain_member(name, sent_max);
    r.handle_timeout(t0);
    r.handle_lease(t0, Duration::from_secs(3600));
    r
}

fn leased(name: &str, sent_max: usize) -> Replica {
    leased_at(name, sent_max, Instant::now())
}

fn entry(i: usize, value_bytes: usize) -> Entry {
    Entry {
        key: Key::new(format!("k{i}")).unwrap(),
        version: i as u64,
        value: vec![0; value_bytes],
    }
}

#[test]
fn snapshot_chunks_are_bounded_by_bytes_and_entries() {
    // 100 KiB values: about ten per 1 MiB chunk, never one huge frame.
    let big: Vec<Entry> = (0..100).map(|i| entry(i, 100 * 1024)).collect();
    let chunks = split_chunks(big, 4096, SNAPSHOT_CHUNK_BYTES);
    assert!(chunks.len() >= 10);
    assert!(chunks.iter().all(|c| !c.is_empty()));
    for c in &chunks {
        let bytes: usize = c.iter().map(|e| e.value.len()).sum();
        assert!(bytes <= SNAPSHOT_CHUNK_BYTES, "{bytes}");
    }
    assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 100);
    // Small entries: the entry cap applies.
    let small: Vec<Entry> = (0..10).map(|i| entry(i, 1)).collect();
    assert_eq!(split_chunks(small, 3, SNAPSHOT_CHUNK_BYTES).len(), 4);
    // One entry larger than the byte target still gets its own chunk.
    let huge = vec![entry(0, 2 * SNAPSHOT_CHUNK_BYTES), entry(1, 1)];
    assert_eq!(split_chunks(huge, 100, SNAPSHOT_CHUNK_BYTES).len(), 2);
    // An empty table is one empty chunk (FIRST and LAST at once).
    assert_eq!(split_chunks(Vec::new(), 10, 10), vec![Vec::<Entry>::new()]);
}

#[test]
fn waits_on_its_successor_only_while_connecting_or_unacknowledged() {
    let m = |n: &str| Member {
        name: n.into(),
        addr: format!("{n}:1"),
    };
    let apply_all = |r: &mut Replica| {
        while let Some(a) = r.poll_action() {
            if let Action::Apply(u) = a {
                r.handle_applied(u, WriteOutcome::Absent);
            }
        }
    };
    let mut r = leased("n1", 16);
    r.handle_membership(vec![m("n1")]);
    apply_all(&mut r);
    assert!(!r.waiting_on_successor(), "a chain of one has no successor");
    r.handle_membership(vec![m("n1"), m("n2")]);
    assert!(r.waiting_on_successor(), "connecting");
    r.handle_successor_hello(NodeRole::Tail, 0);
    assert!(!r.waiting_on_successor(), "linked, nothing outstanding");
    let key = Key::new("k").unwrap();
    let seq = r.handle_client_write(WriteOp::Del { key }, None).unwrap();
    apply_all(&mut r);
    assert!(r.waiting_on_successor(), "an update awaits its ACK");
    r.handle_ack(seq);
    assert!(!r.waiting_on_successor(), "acknowledged");
    r.handle_successor_lost();
    assert!(r.waiting_on_successor(), "redialling");
    r.handle_successor_hello(NodeRole::Joining, 0);
    assert!(
        !r.waiting_on_successor(),
        "a joiner's transfer is not timed"
    );
}

fn member(n: &str) -> Member {
    Member {
        name: n.into(),
        addr: format!("{n}:1"),
    }
}

fn del(seq: u64, prev_seq: u64) -> Update {
    Update {
        seq,
        prev_seq,
        op: WriteOp::Del {
            key: Key::new("k").unwrap(),
        },
    }
}

/// A middle member of an established chain that has applied up to 5.
fn middle_at_5() -> Replica {
    let mut r = leased("n2", 16);
    r.handle_membership(vec![member("n1"), member("n2")]);
    r.standing = Standing::Active;
    r.last_queued = 5;
    r.last_applied = 5;
    r
}

#[test]
fn an_update_must_continue_the_history_exactly() {
    let mut r = middle_at_5();
    // A resend of something held is ignored, whatever it claims.
    assert_eq!(r.handle_update(del(5, 99)), Ok(()));
    assert_eq!(r.last_queued(), 5);
    // A gap: update 7 after 6, which this member never got.
    assert_eq!(
        r.handle_update(del(7, 6)),
        Err(StreamViolation::NotNext {
            seq: 7,
            prev_seq: 6,
            last: 5
        })
    );
    // Jumps too far, backwards steps, and seqs near the top of u64.
    let far = 5 + crate::replica::SEQ_STEP_MAX + 1;
    assert!(matches!(
        r.handle_update(del(far, 5)),
        Err(StreamViolation::BadStep { .. })
    ));
    assert!(matches!(
        r.handle_update(del(1 << 62 | 1, 5)),
        Err(StreamViolation::BadStep { .. })
    ));
    assert!(matches!(
        r.handle_update(del(u64::MAX, 5)),
        Err(StreamViolation::BadStep { .. })
    ));
    assert_eq!(r.last_queued(), 5, "nothing refused was queued");
    // The next one, and a head takeover's largest legal jump, are taken.
    assert_eq!(r.handle_update(del(6, 5)), Ok(()));
    let jump = 6 + HEAD_TAKEOVER_SEQ_GAP + 1;
    assert_eq!(r.handle_update(del(jump, 6)), Ok(()));
    assert_eq!(r.last_queued(), jump);
}

#[test]
fn verify_answers_unknown_for_ids_a_takeover_skipped() {
    let mut r = middle_at_5();
    let jump = 5 + HEAD_TAKEOVER_SEQ_GAP + 1;
    r.handle_update(del(jump, 5)).unwrap();
    while let Some(a) = r.poll_action() {
        if let Action::Apply(u) = a {
            r.handle_applied(u, WriteOutcome::Absent);
        }
    }
    assert_eq!(r.verify(5), OpState::Executed);
    assert_eq!(r.verify(6), OpState::Unknown, "lost with the old head");
    assert_eq!(r.verify(jump - 1), OpState::Unknown);
    assert_eq!(r.verify(jump), OpState::Executed);
    // A snapshot taken now carries the gap to a joiner.
    assert_eq!(
        r.gaps_through(jump),
        vec![SeqGap {
            first: 6,
            last: jump - 1
        }]
    );
}

#[test]
fn a_new_head_marks_its_skip_down_the_chain_before_it_admits_a_write() {
    let mut r = middle_at_5();
    r.handle_membership(vec![member("n2"), member("n3")]); // n1 died
    let mark = 5 + HEAD_TAKEOVER_SEQ_GAP;
    let noop = Update {
        seq: mark,
        prev_seq: 5,
        op: WriteOp::Noop,
    };
    assert!(drain(&mut r).contains(&Action::Apply(noop.clone())));
    // Until the chain has the mark, a write could be given an id that a
    // next head, skipping from the same point, would give again.
    let refused = put(&mut r, 1).map_err(|e| e.code);
    assert_eq!(refused, Err(ErrorCode::Unavailable));
    r.handle_applied(noop.clone(), WriteOutcome::Absent);
    r.handle_successor_hello(NodeRole::Tail, 5);
    assert!(drain(&mut r).contains(&Action::SendDown(Body::Update(noop))));
    r.handle_ack(mark);
    assert_eq!(put(&mut r, 1).map_err(|e| e.code), Ok(mark + 1));
    assert_eq!(r.verify(mark - 1), OpState::Unknown, "skipped");
    assert_eq!(r.verify(mark), OpState::Unknown, "a mark is no write");
    assert_eq!(r.verify(mark + 1), OpState::Pending);
}

#[test]
fn a_new_head_never_wraps_its_sequence_numbers() {
    let mut r = middle_at_5();
    r.last_queued = SEQ_MAX;
    r.last_applied = SEQ_MAX;
    r.handle_membership(vec![member("n2")]); // the head died
    let key = Key::new("k").unwrap();
    let refused = r.handle_client_write(WriteOp::Del { key }, None);
    assert_eq!(refused.map_err(|e| e.code), Err(ErrorCode::Unavailable));
}

/// While a snapshot streams to a joiner, the updates that must follow
/// its LAST chunk wait in a backlog. That backlog is bounded: once it
/// holds Sent's capacity, the acting tail stops acknowledging (so the
/// head fills up and answers BUSY), and resumes after the LAST chunk.
/// Here the acting tail is also the head, as in a chain of one.
#[test]
fn the_backlog_behind_a_snapshot_is_bounded_by_holding_back_acks() {
    const CAP: usize = 4;
    let mut r = leased("n1", CAP);
    r.set_snapshot_chunk_entries(1);
    r.handle_membership(vec![member("n1")]);
    let apply_all = |r: &mut Replica| {
        let mut snapshot_asked = false;
        while let Some(a) = r.poll_action() {
            match a {
                Action::Apply(u) => r.handle_applied(u, WriteOutcome::Absent),
                Action::Snapshot => snapshot_asked = true,
                _ => {}
            }
        }
        snapshot_asked
    };
    let write = |r: &mut Replica, i: u64| {
        let key = Key::new(format!("k{i}")).unwrap();
        r.handle_client_write(WriteOp::Del { key }, None)
    };
    for i in 0..2 {
        write(&mut r, i).unwrap();
    }
    apply_all(&mut r);
    // A joiner arrives; the snapshot is cut at the current state.
    r.handle_membership(vec![member("n1"), member("n2")]);
    r.handle_successor_hello(NodeRole::Joining, 0);
    assert!(apply_all(&mut r), "a snapshot was asked for");
    r.handle_snapshot_taken(r.last_applied(), vec![entry(0, 1), entry(1, 1)]);
    // Writes go on while the transfer waits on the link: acknowledged
    // until the backlog is full, then BUSY.
    let mut admitted = 0;
    for i in 10..30 {
        if write(&mut r, i).is_err() {
            break;
        }
        admitted += 1;
        apply_all(&mut r);
    }
    assert!((CAP..20).contains(&admitted), "admitted {admitted}");
    // Acks stop at CAP; Sent then fills to CAP before BUSY.
    assert!(r.outgoing.as_ref().unwrap().backlog.len() <= 2 * CAP);
    let acked = r.last_acked();
    assert!(acked < r.last_applied(), "acks were held back");
    // The transfer proceeds: after the LAST chunk, acks resume.
    while r.snapshot_pending() {
        r.handle_successor_writable();
    }
    assert_eq!(r.last_acked(), r.last_applied());
    assert!(write(&mut r, 99).is_ok(), "writes are admitted again");
}

#[test]
fn a_member_that_lost_its_session_never_founds_a_chain_from_its_old_table() {
    let m = |n: &str| Member {
        name: n.into(),
        addr: format!("{n}:1"),
    };
    let mut r = leased("n1", 16);
    r.handle_membership(vec![m("n1")]);
    let key = Key::new("k").unwrap();
    let op = WriteOp::Put {
        key,
        value: b"old".to_vec(),
    };
    r.handle_client_write(op, None).unwrap();
    while let Some(a) = r.poll_action() {
        if let Action::Apply(u) = a {
            r.handle_applied(u, WriteOutcome::Absent);
        }
    }
    assert_eq!(r.last_applied(), 1);
    // The session is lost; the others may go on without this member.
    r.fence();
    r.rejoin("n7");
    let cleared = std::iter::from_fn(|| r.poll_action())
        .any(|a| matches!(a, Action::Install(c) if c.first && c.entries.is_empty()));
    assert!(cleared, "the old table must be emptied");
    // Even alone in the chain (everyone before it gone), it starts empty.
    r.handle_membership(vec![m("n7")]);
    assert_eq!(r.role(), NodeRole::Solo);
    assert_eq!(r.last_applied(), 0);
    assert_eq!(r.last_queued(), 0);
}

fn drain(r: &mut Replica) -> Vec<Action> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

fn put(r: &mut Replica, i: u64) -> Result<u64, Refusal> {
    let key = Key::new(format!("k{i}")).unwrap();
    r.handle_client_write(WriteOp::Del { key }, None)
}

#[test]
fn a_member_serves_only_while_its_lease_runs() {
    let t0 = Instant::now();
    let mut r = Replica::chain_member("n1", 16);
    r.handle_membership(vec![member("n1")]);
    r.handle_timeout(t0);
    assert_eq!(
        put(&mut r, 1).map_err(|e| e.code),
        Err(ErrorCode::Unavailable)
    );
    assert!(
        r.check_can_read(ReadScope::TailOnly).is_err(),
        "no lease granted yet"
    );
    r.handle_lease(t0, Duration::from_secs(10));
    assert!(put(&mut r, 1).is_ok());
    assert!(r.check_can_read(ReadScope::TailOnly).is_ok());
    assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    r.handle_timeout(t0 + Duration::from_secs(10));
    let refused = r.check_can_read(ReadScope::TailOnly).unwrap_err();
    assert_eq!(refused, Refusal::no_lease());
    assert!(put(&mut r, 2).is_err());
    // A confirmation sent later extends it; an older one never shortens it.
    r.handle_lease(t0 + Duration::from_secs(9), Duration::from_secs(10));
    r.handle_lease(t0, Duration::from_secs(1));
    assert!(r.check_can_read(ReadScope::TailOnly).is_ok());
    // Time never runs backwards inside the replica.
    r.handle_timeout(t0);
    r.handle_timeout(t0 + Duration::from_secs(19));
    assert!(r.check_can_read(ReadScope::TailOnly).is_err());
    // A standalone server has no lease.
    assert!(Replica::standalone(4)
        .check_can_read(ReadScope::TailOnly)
        .is_ok());
}

#[test]
fn a_silent_successor_is_dropped_after_the_peer_timeout_and_redialled_at_a_pace() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut r = leased_at("n1", 16, t0);
    r.set_peer_timeout(ms(500));
    r.handle_membership(vec![member("n1"), member("n2")]);
    assert_eq!(drain(&mut r), vec![Action::ConnectSuccessor(member("n2"))]);
    r.handle_timeout(t0 + ms(100));
    r.handle_successor_hello(NodeRole::Tail, 0);
    put(&mut r, 1).unwrap();
    for a in drain(&mut r) {
        if let Action::Apply(u) = a {
            r.handle_applied(u, WriteOutcome::Absent);
        }
    }
    assert!(matches!(drain(&mut r)[..], [Action::SendDown(_)]));
    assert!(r.waiting_on_successor());
    assert_eq!(r.poll_timeout(), Some(t0 + ms(600)), "heard at HELLO_OK");
    r.handle_timeout(t0 + ms(599));
    assert!(drain(&mut r).is_empty(), "not yet");
    r.handle_timeout(t0 + ms(600));
    assert_eq!(
        drain(&mut r),
        vec![
            Action::DropSuccessor,
            Action::ConnectSuccessor(member("n2"))
        ]
    );
    assert_eq!(r.successor_timeouts(), 1);
    // The new link breaks at once: the next dial waits for REDIAL_DELAY.
    r.handle_successor_lost();
    assert!(drain(&mut r).is_empty(), "held back");
    assert_eq!(r.poll_timeout(), Some(t0 + ms(600) + REDIAL_DELAY));
    r.handle_timeout(t0 + ms(600) + REDIAL_DELAY);
    assert_eq!(drain(&mut r), vec![Action::ConnectSuccessor(member("n2"))]);
    // Heard from: the watch restarts from then, and an ACK ends it.
    r.handle_timeout(t0 + ms(1000));
    r.handle_successor_hello(NodeRole::Tail, 0);
    let resent = drain(&mut r);
    assert!(
        matches!(resent[..], [Action::SendDown(Body::Update(_))]),
        "{resent:?}"
    );
    r.handle_ack(1);
    assert!(!r.waiting_on_successor());
    r.handle_timeout(t0 + ms(5000));
    assert!(drain(&mut r)
        .iter()
        .all(|a| !matches!(a, Action::DropSuccessor)));
    assert_eq!(r.successor_timeouts(), 1);
}

#[test]
fn a_predecessor_cannot_make_a_member_hold_more_than_its_bound() {
    let mut r = middle_at_5();
    let mut last = 5;
    let mut refused = None;
    for _ in 0..HELD_UPDATES_MAX + 1 {
        match r.handle_update(del(last + 1, last)) {
            Ok(()) => last += 1,
            Err(v) => {
                refused = Some(v);
                break;
            }
        }
        while r.poll_action().is_some() {} // taken by the IO layer, never applied
    }
    assert_eq!(
        refused,
        Some(StreamViolation::Overrun {
            held: HELD_UPDATES_MAX,
            max: HELD_UPDATES_MAX
        })
    );
    assert_eq!(last - 5, HELD_UPDATES_MAX as u64);
}

/// A predecessor that reconnects learns the acknowledgement level again:
/// the ACK that raised it may have died with the old link.
#[test]
fn a_new_predecessor_link_repeats_the_acknowledgement_level() {
    let mut r = middle_at_5();
    r.last_acked = 5;
    r.handle_predecessor_linked();
    assert_eq!(drain(&mut r), vec![Action::SendUp(5)]);
    // A joiner acknowledges its own progress instead; nothing to repeat.
    let mut j = leased("n9", 16);
    j.handle_membership(vec![member("n1"), member("n9")]);
    drain(&mut j);
    j.handle_predecessor_linked();
    assert!(drain(&mut j).is_empty());
}

/// Takes every action, handing applies straight back as applied; returns
/// the other actions.
fn drain_applying(r: &mut Replica) -> Vec<Action> {
    let mut other = Vec::new();
    while let Some(a) = r.poll_action() {
        match a {
            Action::Apply(u) => r.handle_applied(u, WriteOutcome::Absent),
            a => other.push(a),
        }
    }
    other
}

fn floor(floor: u64, reserved: u64) -> crate::member::DurableFloor {
    crate::member::DurableFloor { floor, reserved }
}

#[test]
fn a_durable_solo_acknowledges_only_what_the_floor_covers() {
    let mut r = leased("n1", 16);
    r.resume_durable(0, &[]);
    r.rejoin("n1");
    r.handle_durable_floor(floor(0, 0));
    r.handle_membership(vec![member("n1")]);
    assert_eq!(r.role(), NodeRole::Solo, "an empty log reaches floor 0");
    // No id is reserved yet: the write waits for ZooKeeper (retriable).
    let token = WriteToken {
        conn: 1,
        request_id: 1,
    };
    let del = |k: u64| WriteOp::Del {
        key: Key::new(format!("k{k}")).unwrap(),
    };
    let refused = r.handle_client_write(del(1), Some(token)).unwrap_err();
    assert_eq!(refused.code, ErrorCode::Unavailable);
    let asked = drain_applying(&mut r);
    assert!(
        asked
            .iter()
            .any(|a| matches!(a, Action::RaiseFloor(d) if d.reserved > 0)),
        "{asked:?}"
    );
    r.handle_durable_floor(floor(0, ID_RESERVE_CHUNK));
    let seq = r.handle_client_write(del(1), Some(token)).unwrap();
    let after_apply = drain_applying(&mut r);
    assert!(
        !after_apply
            .iter()
            .any(|a| matches!(a, Action::WriteDone { .. })),
        "applied but above the floor: not acknowledged yet"
    );
    assert!(after_apply
        .iter()
        .any(|a| matches!(a, Action::RaiseFloor(d) if d.floor == seq)));
    r.handle_durable_floor(floor(seq, ID_RESERVE_CHUNK));
    let done = drain_applying(&mut r);
    assert!(
        done.iter()
            .any(|a| matches!(a, Action::WriteDone { result, .. } if result.op_id == seq)),
        "{done:?}"
    );
}

#[test]
fn a_durable_member_whose_log_stops_before_the_floor_steps_aside() {
    let mut r = leased("n1", 16);
    r.resume_durable(10, &[]);
    r.rejoin("n7");
    r.handle_durable_floor(floor(50, 100));
    r.handle_membership(vec![member("n7")]);
    assert_eq!(r.role(), NodeRole::Joining, "it serves nothing");
    let actions = drain_applying(&mut r);
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::StepAside))
            .count(),
        1,
        "{actions:?}"
    );
    // A member whose log reaches the floor founds the chain, and its mark
    // skips past every id reserved (so no id is handed out twice).
    let mut f = leased("n2", 16);
    f.resume_durable(60, &[]);
    f.rejoin("n8");
    f.handle_durable_floor(floor(50, 100 + ID_RESERVE_CHUNK));
    f.handle_membership(vec![member("n8")]);
    assert_eq!(f.role(), NodeRole::Solo);
    let reserved = 100 + ID_RESERVE_CHUNK;
    let asked = drain_applying(&mut f);
    assert_eq!(
        f.last_queued(),
        60,
        "the mark waits for ids reserved past it"
    );
    let Some(want) = asked.iter().find_map(|a| match a {
        Action::RaiseFloor(d) if d.reserved > reserved => Some(d.reserved),
        _ => None,
    }) else {
        panic!("no reservation asked: {asked:?}")
    };
    f.handle_durable_floor(floor(50, want));
    let _ = drain_applying(&mut f);
    assert_eq!(
        f.last_queued(),
        reserved + 1,
        "the mark skips every id reserved"
    );
}
