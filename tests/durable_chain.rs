//! Durable chains (`--data-dir` on every member, `--fsync always`): after
//! every member is killed at once (-9) and restarted from its disk, the
//! chain comes back with every acknowledged write, and the members agree.
//! A member whose disk is stale (it left the chain before the others
//! died) may not found the chain: it steps aside and joins behind a member
//! whose log reaches the chain's durable floor. A member restarted on its
//! disk while the chain goes on receives only what it missed.

#![cfg(feature = "testing")]

mod common;

use chaintable::serialize::Key;
use chaintable::wire::{Body, WriteMode};
use common::chain::{stat_text, Chain, Writer};

const KEYS: u64 = 20;

/// The last lines of a member's log, for failure messages.
fn log_tail(chain: &Chain, i: usize) -> String {
    let text = chain.member(i).log_text();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn a_chain_killed_all_at_once_comes_back_from_its_disks_with_every_acknowledged_write() {
    let mut chain = Chain::start_durable(3, true, &[], "all");
    let writer = Writer::start(&chain, KEYS);
    writer.wait_acked(400);
    for i in 0..3 {
        chain.kill9(i);
    }
    let log = writer.stop();
    // The old tail first: any member may found the chain, as each log
    // reaches the floor the tail published before acknowledging.
    for i in [2, 1, 0] {
        chain.restart(i);
    }
    chain.wait_chain_len(3);
    Writer::check(&log, KEYS, &chain.converged_table());
    // And the chain takes writes again.
    let mut c = chain.client();
    let put = Body::Put {
        key: Key::new("after").unwrap(),
        value: b"x".to_vec(),
        mode: WriteMode::Sync,
    };
    let (reply, _) = c.call(put).unwrap();
    assert!(matches!(reply, Body::PutOk(_)), "{reply:?}");
    let floor: u64 = stat_text(&chain.member(0).addr(), "durable_floor")
        .and_then(|f| f.parse().ok())
        .unwrap();
    assert!(
        floor > 400,
        "the floor covers what was acknowledged: {floor}"
    );
    c.close();
}

#[test]
fn a_member_with_a_stale_disk_may_not_found_the_chain() {
    let mut chain = Chain::start_durable(3, true, &[], "stale");
    let writer = Writer::start(&chain, KEYS);
    writer.wait_acked(200);
    // The tail leaves; the chain goes on without it, past its log.
    chain.kill9(2);
    writer.wait_acked(300);
    chain.kill9(0);
    chain.kill9(1);
    let log = writer.stop();
    // The stale member comes back first: it must not found the chain.
    chain.restart(2);
    std::thread::sleep(std::time::Duration::from_millis(3000));
    assert_eq!(
        stat_text(&chain.member(2).addr(), "role").as_deref(),
        Some("joining"),
        "a member whose log stops before the floor serves nothing:\n{}",
        log_tail(&chain, 2)
    );
    chain.restart(0);
    chain.restart(1);
    chain.wait_chain_len(3);
    Writer::check(&log, KEYS, &chain.converged_table());
    assert!(
        chain.member(2).log_text().contains("stepping aside"),
        "{}",
        log_tail(&chain, 2)
    );
}

/// A member killed (-9) while the chain goes on, restarted on its disk:
/// its new predecessor sends only the updates after what its log holds
/// (a delta), not the table, and it ends with the same table as the rest.
#[test]
fn a_member_restarted_on_its_disk_catches_up_by_delta() {
    let mut chain = Chain::start_durable(3, true, &[], "delta");
    // A table much larger than what the member will miss.
    let mut c = chain.client();
    for i in 0..2000 {
        let body = Body::Put {
            key: Key::new(format!("bulk{i}")).unwrap(),
            value: vec![b'v'; 1000],
            mode: WriteMode::Sync,
        };
        c.call(body).unwrap();
    }
    c.close();
    let writer = Writer::start(&chain, KEYS);
    writer.wait_acked(100);
    chain.kill9(1);
    writer.wait_acked(200);
    chain.restart(1); // registers last: its predecessor is member 2
    chain.wait_chain_len(3);
    writer.wait_acked(100);
    let log = writer.stop();
    let table = chain.converged_table();
    Writer::check(&log, KEYS, &table);
    assert!(table.len() >= 2000);
    let count = |name: &str| -> u64 {
        stat_text(&chain.member(2).addr(), name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in member 2's STATS"))
    };
    let full_and_delta = (count("transfers_full"), count("transfers_delta"));
    assert_eq!(
        full_and_delta,
        (0, 1),
        "one delta, no snapshot, to the restarted member"
    );
    let updates = count("transfer_delta_updates");
    assert!(
        (200..2000).contains(&updates),
        "the delta held the {updates} updates the member missed, not the table's 2,000 entries"
    );
}
