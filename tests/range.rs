//! RANGE (ordered scans) against real servers: pages in key order that
//! visit every key of the interval once, a page cut at the frame limit,
//! the bounds on the request, and the CLI.

#![cfg(feature = "testing")]

mod common;

use chaintable::client::Client;
use chaintable::serialize::Key;
use chaintable::wire::{Body, ErrorCode, WriteMode};
use common::chain::refusal;
use common::ServerProc;

fn put(c: &mut Client, k: &str, value: Vec<u8>) {
    let body = Body::Put {
        key: Key::new(k).unwrap(),
        value,
        mode: WriteMode::Sync,
    };
    assert!(matches!(c.call(body).unwrap(), Body::PutOk(_)));
}

fn range(c: &mut Client, from: &str, to: &str, limit: u32) -> (Vec<String>, String) {
    let body = Body::Range {
        from: from.as_bytes().to_vec(),
        to: to.as_bytes().to_vec(),
        limit,
    };
    match c.call(body).unwrap() {
        Body::RangeOk { entries, next } => (
            entries
                .iter()
                .map(|e| String::from_utf8_lossy(e.key.as_bytes()).to_string())
                .collect(),
            String::from_utf8_lossy(&next).to_string(),
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn pages_of_a_range_visit_every_key_of_the_interval_once_in_order() {
    let server = ServerProc::start(4, &[]);
    let mut c = server.client();
    // Written out of order, over every partition.
    for i in (0..300).rev() {
        put(&mut c, &format!("user/{i:03}"), vec![b'x'; 10]);
    }
    put(&mut c, "user0", b"after the prefix".to_vec());
    put(&mut c, "use", b"before it".to_vec());
    let (first, next) = range(&mut c, "user/", "user0", 4);
    assert_eq!(first, ["user/000", "user/001", "user/002", "user/003"]);
    assert_eq!(next, "user/004");
    let mut seen = Vec::new();
    let mut from = "user/".to_string();
    loop {
        let (page, next) = range(&mut c, &from, "user0", 64);
        assert!(page.len() <= 64);
        seen.extend(page);
        if next.is_empty() {
            break;
        }
        from = next;
    }
    let want: Vec<String> = (0..300).map(|i| format!("user/{i:03}")).collect();
    assert_eq!(seen, want);
    // An end below the start is an empty interval, not an error.
    assert_eq!(range(&mut c, "user1", "user0", 10), (vec![], String::new()));
    // Open ends: from the start of the key space, to its end.
    assert_eq!(range(&mut c, "", "user/", 10).0, ["use"]);
    assert_eq!(
        range(&mut c, "user0", "", 10),
        (vec!["user0".to_string()], String::new())
    );
}

#[test]
fn a_page_stops_at_the_frame_limit_and_says_where_the_next_begins() {
    let server = ServerProc::start(4, &["--frame-bytes-max", "65536"]);
    let mut c = server.client();
    for i in 0..10 {
        put(&mut c, &format!("big{i}"), vec![b'v'; 20_000]);
    }
    // Ten 20 kB values do not fit 64 KiB: the page holds what fits.
    let (page, next) = range(&mut c, "big", "", 10);
    assert!((1..=3).contains(&page.len()), "{page:?}");
    assert_eq!(next, format!("big{}", page.len()));
    let mut seen = page;
    let mut from = next;
    while !from.is_empty() {
        let (page, next) = range(&mut c, &from, "", 10);
        assert!(!page.is_empty(), "a page that fits nothing would never end");
        seen.extend(page);
        from = next;
    }
    assert_eq!(seen.len(), 10);
    // A limit outside 1..=1024 is malformed; the connection stays usable.
    for limit in [0, 1025] {
        let (code, _) = refusal(c.call(Body::Range {
            from: vec![],
            to: vec![],
            limit,
        }));
        assert_eq!(code, Some(ErrorCode::BadRequest), "limit {limit}");
    }
    assert_eq!(c.call(Body::Size).unwrap(), Body::SizeOk { entries: 10 });
    let stats = c.stats().unwrap();
    assert!(stats.get_count("ops_range").unwrap() >= 4);
}

#[test]
fn the_cli_shows_a_page_and_where_the_next_begins() {
    let server = ServerProc::start(4, &[]);
    let mut c = server.client();
    for k in ["a1", "a2", "a3", "b1"] {
        put(&mut c, k, k.as_bytes().to_vec());
    }
    let out = common::table_client(&[&server.addr(), "range", "a", "b", "2"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(
        text.trim(),
        "a1 = a1 (version 1)\na2 = a2 (version 2)\n(more from a3)"
    );
    let out = common::table_client(&[&server.addr(), "range", "a3", "-"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), "a3 = a3 (version 3)\nb1 = b1 (version 4)");
}

/// An attacker pipelines scans that each ask for one entry from a table of
/// 200,000 keys. Were a scan to read the whole table (keys are spread over
/// the partitions by hash), each would cost milliseconds of the one network
/// thread and a GET queued behind them would wait seconds; reading each
/// partition in order from `from` keeps a scan's cost near its page.
#[test]
fn a_flood_of_scans_costs_what_the_pages_cost_not_the_table() {
    use chaintable::wire::{BatchOp, Message};
    let server = ServerProc::start(4, &[]);
    let mut c = server.client();
    for chunk in 0..200 {
        let ops = (0..1000)
            .map(|i| BatchOp::Put {
                key: Key::new(format!("k{:07}", chunk * 1000 + i)).unwrap(),
                value: vec![b'v'; 16],
            })
            .collect();
        assert!(matches!(
            c.call(Body::MWrite { ops }).unwrap(),
            Body::MWriteOk { .. }
        ));
    }
    let scans = 2000u64;
    let mut attacker = common::Raw::hello(&server.addr());
    let mut flood = Vec::new();
    for id in 0..scans {
        let from = format!("k{:07}", (id * 97) % 200_000).into_bytes();
        let m = Message::new(
            100 + id,
            Body::Range {
                from,
                to: vec![],
                limit: 1,
            },
        );
        flood.extend(m.to_bytes());
    }
    let started = std::time::Instant::now();
    attacker.send_bytes(&flood);
    let (value, _) = (
        c.call(Body::Get {
            key: Key::new("k0123456").unwrap(),
        })
        .unwrap(),
        (),
    );
    let waited = started.elapsed();
    assert!(matches!(value, Body::Value(Some(_))));
    for _ in 0..scans {
        let reply = attacker.recv().expect("every scan is answered");
        assert!(matches!(reply.body, Body::RangeOk { ref entries, .. } if entries.len() == 1));
    }
    let all = started.elapsed();
    eprintln!("a GET behind {scans} pipelined scans: {waited:?}; all scans answered in {all:?}");
    assert!(
        all < std::time::Duration::from_secs(3),
        "{scans} one-entry scans of a 200,000-key table took {all:?}"
    );
}
