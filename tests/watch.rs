//! Watches against real servers (spec §4.1.2): a watcher receives every
//! committed change under its prefix after its start, in order, with no
//! gap; it resumes from its last seq, at the same member or, in a chain,
//! at another after its member is killed; a watcher that does not read is
//! cut off with WATCH_TOO_SLOW while the server's memory stays bounded.

#![cfg(feature = "testing")]

mod common;

use chaintable::client::{ChainWatcher, Client, WatchUpdate};
use chaintable::serialize::Key;
use chaintable::wire::{BatchOp, Body, ErrorCode, Message, WatchChange, WATCH_FROM_NOW};
use common::chain::{Chain, Fate, Writer};
use common::{quick_opts, Raw, ServerProc};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

/// The next update, waiting at most 5 s.
fn next(w: &mut chaintable::client::Watcher) -> WatchUpdate {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(u) = w.next_update().expect("watch") {
            return u;
        }
        assert!(Instant::now() < deadline, "no watch update within 5 s");
    }
}

#[test]
fn a_watcher_gets_every_change_under_its_prefix_in_order_and_resumes_exactly() {
    let s = ServerProc::start(4, &[]);
    let mut c = s.client();
    let start = c.put(b"before", b"x").unwrap().op_id;
    let mut w = s.client().watch(b"user/", start).unwrap();
    assert_eq!(w.last_seq(), start, "the first frame names the start");

    let ann = c.put(b"user/ann", b"1").unwrap().op_id;
    c.put(b"other", b"not watched").unwrap();
    let lost = c.put_if(b"user/ann", b"2", 999).unwrap(); // a mismatch: no change
    let del = c.del(b"user/ann").unwrap().op_id;
    let batch = c
        .mwrite(vec![
            BatchOp::Put {
                key: key("user/bob"),
                value: b"2".to_vec(),
            },
            BatchOp::Put {
                key: key("zed"),
                value: b"3".to_vec(),
            },
        ])
        .unwrap();

    let got: Vec<WatchUpdate> = (0..3).map(|_| next(&mut w)).collect();
    assert_eq!(
        got.iter().map(|u| u.seq).collect::<Vec<_>>(),
        [ann, del, batch],
        "the mismatched CPUT ({}) and other keys send nothing",
        lost.op_id
    );
    assert_eq!(
        got[0].changes,
        [WatchChange::Put {
            key: key("user/ann"),
            value: b"1".to_vec()
        }]
    );
    assert_eq!(
        got[1].changes,
        [WatchChange::Del {
            key: key("user/ann")
        }]
    );
    assert_eq!(
        got[2].changes,
        [WatchChange::Put {
            key: key("user/bob"),
            value: b"2".to_vec()
        }],
        "only the batch's writes under the prefix"
    );

    // From the first event's seq, a new watch gives exactly what followed.
    let mut again = s.client().watch(b"user/", ann).unwrap();
    assert_eq!(next(&mut again).seq, del);
    assert_eq!(next(&mut again).seq, batch);
    // From now: only later changes.
    let mut now = s.client().watch(b"", WATCH_FROM_NOW).unwrap();
    assert!(now.last_seq() >= batch);
    let later = c.put(b"later", b"y").unwrap().op_id;
    assert_eq!(next(&mut now).seq, later);
}

#[test]
fn unwatch_ends_the_stream_and_the_limits_hold() {
    let s = ServerProc::start(4, &[]);
    let mut raw = Raw::hello(&s.addr());
    let watch = |id: u64, prefix: &[u8]| {
        Message::new(
            id,
            Body::Watch {
                from_seq: WATCH_FROM_NOW,
                prefix: prefix.to_vec(),
            },
        )
    };
    for id in 1..=8 {
        raw.send(&watch(id, b"k"));
        let first = raw.recv().expect("first frame");
        assert!(matches!(first.body, Body::WatchEvent(_)), "{first:?}");
    }
    raw.send(&watch(9, b"k"));
    let ninth = raw.recv().expect("reply");
    assert_eq!(ninth.request_id, 9);
    assert!(
        matches!(&ninth.body, Body::Error(e) if e.error_code() == Some(ErrorCode::BadRequest)),
        "{ninth:?}"
    );
    raw.send(&Message::new(10, Body::Unwatch { watch_id: 3 }));
    let done = raw.recv().expect("UNWATCH_OK");
    assert_eq!(
        (done.request_id, done.body),
        (10, Body::Unwatched { found: true })
    );
    raw.send(&watch(1, b"k"));
    let dup = raw.recv().expect("reply");
    assert!(
        matches!(&dup.body, Body::Error(e) if e.error_code() == Some(ErrorCode::BadRequest)),
        "watch id 1 is still open: {dup:?}"
    );
    // One write: the seven open watches each get it, the closed one not.
    s.client().put(b"key", b"v").unwrap();
    let mut ids: Vec<u64> = (0..7)
        .map(|_| raw.recv().expect("event").request_id)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 4, 5, 6, 7, 8]);
    raw.send(&Message::new(11, Body::Unwatch { watch_id: 3 }));
    let again = raw.recv().expect("UNWATCH_OK");
    assert_eq!(again.body, Body::Unwatched { found: false });
}

#[test]
fn a_watcher_outlives_the_idle_timeout() {
    let s = ServerProc::start(4, &["--idle-timeout-ms", "300"]);
    let mut w = s.client().watch(b"", WATCH_FROM_NOW).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let op = s.client().put(b"late", b"v").unwrap().op_id;
    assert_eq!(next(&mut w).seq, op, "still open after 4 idle timeouts");
}

/// A watcher that never reads while 40 MB of changes are written: the
/// server produces nothing for it past its output bound, ends it with
/// WATCH_TOO_SLOW once it is half the history (8 MiB) behind, and its
/// memory grows by about the history's bound, not by what was written.
#[test]
fn a_watcher_that_does_not_read_is_cut_off_and_memory_stays_bounded() {
    let s = ServerProc::start(
        4,
        &[
            "--watch-history-bytes",
            "16777216",
            "--output-bytes-max",
            "1048576",
        ],
    );
    let mut c = s.client();
    c.put(b"warm", b"up").unwrap();
    let before_kib = s.peak_kib();
    let mut stalled = Raw::hello(&s.addr());
    stalled.send(&Message::new(
        7,
        Body::Watch {
            from_seq: WATCH_FROM_NOW,
            prefix: Vec::new(),
        },
    ));
    let value = vec![b'v'; 60_000];
    let bodies: Vec<Body> = (0..700)
        .map(|i| Body::Put {
            key: Key::new(format!("big{}", i % 4)).unwrap(),
            value: value.clone(),
            mode: chaintable::wire::WriteMode::Sync,
        })
        .collect();
    for chunk in bodies.chunks(50) {
        for r in c.pipeline(chunk.to_vec()).unwrap() {
            assert!(r.is_ok(), "a write failed: {r:?}");
        }
    }
    let peak = s.peak_kib();
    let stats = c.stats().unwrap();
    assert_eq!(stats.get_count("watches_cut_slow"), Some(1), "{stats:?}");
    // Whatever was queued for it, then the ERROR that ended it.
    let mut last = None;
    while let Some(m) = stalled.recv() {
        last = Some(m);
        if matches!(last.as_ref().map(|m| &m.body), Some(Body::Error(_))) {
            break;
        }
    }
    let last = last.expect("frames for the watcher");
    assert_eq!(last.request_id, 7);
    assert!(
        matches!(&last.body, Body::Error(e) if e.error_code() == Some(ErrorCode::WatchTooSlow)),
        "{last:?}"
    );
    let grew_kib = peak.saturating_sub(before_kib);
    assert!(
        grew_kib < 48 * 1024,
        "42 MB written past a stalled watcher grew the server by {grew_kib} KiB"
    );
}

/// A chain of three, a writer, and a watcher opened at the tail. The tail
/// is killed (-9) mid-stream; the watcher resumes at another member from
/// its last seq. It receives exactly the writes the chain acknowledged
/// (and maybe some whose outcome was unknown), in order, none twice, none
/// that failed.
#[test]
fn a_chain_watcher_resumes_at_another_member_after_its_member_is_killed() {
    let mut chain = Chain::start(3, &[]);
    chain.wait_chain_len(3);
    let mut watcher = ChainWatcher::open(chain.client(), b"key", 0).unwrap();
    let tail = chain.member(2).addr();
    assert_eq!(watcher.addr(), Some(tail.as_str()), "opened at the tail");
    let writer = Writer::start(&chain, 10);
    writer.wait_acked(200);
    let mut got: Vec<WatchUpdate> = Vec::new();
    while got.len() < 100 {
        got.extend(watcher.next_update().expect("watch"));
    }
    chain.kill9(2);
    writer.wait_acked(300);
    let log = writer.stop();
    let acked: HashMap<u64, u64> = log
        .iter()
        .filter_map(|(i, f, _, _)| match f {
            Fate::Acked { op_id } => Some((*op_id, *i)),
            _ => None,
        })
        .collect();
    let last_acked = acked.keys().copied().max().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while watcher.last_seq() < last_acked {
        assert!(
            Instant::now() < deadline,
            "the watcher stalled at {}",
            watcher.last_seq()
        );
        got.extend(watcher.next_update().expect("watch resumes"));
    }
    assert_ne!(
        watcher.addr(),
        Some(tail.as_str()),
        "moved off the killed tail"
    );
    let fates: HashMap<u64, &Fate> = log.iter().map(|(i, f, _, _)| (*i, f)).collect();
    let mut seen = Vec::new();
    for u in got.iter().filter(|u| !u.changes.is_empty()) {
        let [WatchChange::Put { key, value }] = u.changes.as_slice() else {
            panic!("one put per write: {u:?}");
        };
        let i: u64 = std::str::from_utf8(value).unwrap().parse().unwrap();
        assert_eq!(key.as_bytes(), format!("key{}", i % 10).as_bytes());
        match fates.get(&i) {
            Some(Fate::Acked { op_id }) => assert_eq!(*op_id, u.seq, "write {i}"),
            Some(Fate::Unknown) => {}
            other => panic!(
                "write {i} ({other:?}) was not acknowledged, yet watched at {}",
                u.seq
            ),
        }
        seen.push(u.seq);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
    let missing: Vec<u64> = acked
        .keys()
        .filter(|s| !seen.contains(s))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes never watched: {missing:?}"
    );
    // A watch at the head, a non-tail member, sees the same history.
    let mut at_head = Client::connect_with(&chain.member(0).addr(), quick_opts())
        .unwrap()
        .watch(b"key", 0)
        .unwrap();
    let mut from_head = Vec::new();
    while at_head.last_seq() < last_acked {
        if let Some(u) = at_head.next_update().expect("watch at the head") {
            if !u.changes.is_empty() {
                from_head.push(u.seq);
            }
        }
    }
    assert_eq!(from_head, seen, "every member serves the same stream");
}
