//! The chain under a deterministic cluster simulator (`tests/sim/`):
//! thousands of seeded schedules of crashes, joins, partitions, broken
//! links, session expiries and lagging views, each checked against the
//! paper's invariants, a final convergence check, and the linearizability
//! checker of the torture suite. A failure prints its seed; replay it with
//! `SIM_SEED=<seed> cargo test --release --features testing --test chain_sim`.
//!
//! Longer runs: `SIM_SCHEDULES=100000 cargo test --release --features
//! testing --test chain_sim -- seeded` (README: "Simulation").

#![cfg(feature = "testing")]

#[path = "sim/mod.rs"]
mod sim;

use chaintable::replica::{Action, Replica, WriteToken};
use chaintable::serialize::Key;
use chaintable::wire::{WriteOp, WriteOutcome};
use sim::{Params, Summary};
use std::time::Instant;

/// Schedules in the default test run (`SIM_SCHEDULES` overrides).
const SCHEDULES: u64 = 3000;

fn key(i: u64) -> Key {
    Key::new(format!("k{i}")).unwrap()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs the schedules the environment asks for (`SIM_SEED` for one,
/// else `SIM_FIRST_SEED` and the count in `count_var`, `default` by
/// default), durable or not; returns how many ran and their figures.
fn run_schedules(count_var: &str, default: u64, durable: bool) -> (u64, Summary) {
    let (first, count) = match env_u64("SIM_SEED") {
        Some(seed) => (seed, 1),
        None => (
            env_u64("SIM_FIRST_SEED").unwrap_or(0),
            env_u64(count_var).unwrap_or(default),
        ),
    };
    let kind = if durable { "durable " } else { "" };
    let started = Instant::now();
    let mut total = Summary::default();
    for seed in first..first + count {
        let mut p = Params::new(seed);
        p.durable = durable;
        let s = sim::run(&p).unwrap_or_else(|e| panic!("{kind}{e}"));
        total.add(&s);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{count} {kind}schedules in {secs:.1} s ({:.0}/s): {total:?}",
        f64::from(u32::try_from(count).unwrap_or(u32::MAX)) / secs
    );
    (count, total)
}

#[test]
fn seeded_schedules_keep_the_invariants_and_stay_linearizable() {
    let (count, total) = run_schedules("SIM_SCHEDULES", SCHEDULES, false);
    // The schedules did what they are for: writes were acknowledged and
    // every kind of fault happened (a simulator that stopped injecting
    // faults would pass for the wrong reason).
    assert!(
        total.acked as u64 >= count * 20,
        "too few writes: {total:?}"
    );
    if count >= 100 {
        assert!(
            total.crashes > 0 && total.joins > 0 && total.restarts > 0,
            "{total:?}"
        );
        assert!(total.partitions > 0 && total.link_breaks > 0, "{total:?}");
        assert!(total.expiries > 0, "no session ever expired: {total:?}");
    }
}

/// Durable schedules in the default run (`SIM_DURABLE_SCHEDULES`
/// overrides): every member has a disk, crashed members restart on it, and
/// the whole chain dies at once now and then.
const DURABLE_SCHEDULES: u64 = 1000;

#[test]
fn durable_schedules_keep_every_acknowledged_write_through_total_outages() {
    let (count, total) = run_schedules("SIM_DURABLE_SCHEDULES", DURABLE_SCHEDULES, true);
    assert!(
        total.acked as u64 >= count * 20,
        "too few writes: {total:?}"
    );
    if count >= 100 {
        assert!(total.outages > 0 && total.restarts > 0, "{total:?}");
    }
}

/// Each planted bug must be found within this many schedules.
#[cfg(feature = "testing")]
const PLANTED_SCHEDULES_MAX: u64 = 2000;

#[cfg(feature = "testing")]
fn find_planted(bug: chaintable::replica::PlantedBug) {
    let started = Instant::now();
    for seed in 0..PLANTED_SCHEDULES_MAX {
        let mut p = Params::new(seed);
        p.planted = Some(bug);
        let outcome = std::panic::catch_unwind(|| sim::run(&p));
        let found = match outcome {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => e,
            Err(_) => "a panic".to_string(),
        };
        let first_line = found.lines().next().unwrap_or_default().to_string();
        eprintln!(
            "{bug:?}: found at seed {seed} after {} schedules, {:.2} s: {first_line}",
            seed + 1,
            started.elapsed().as_secs_f64()
        );
        return;
    }
    panic!("{bug:?} not found in {PLANTED_SCHEDULES_MAX} schedules: the simulator is too kind");
}

#[cfg(feature = "testing")]
#[test]
fn finds_a_planted_ack_before_the_successor_has_the_write() {
    find_planted(chaintable::replica::PlantedBug::AckBeforeSuccessor);
}

#[cfg(feature = "testing")]
#[test]
fn finds_a_planted_acceptance_of_a_stale_predecessor() {
    find_planted(chaintable::replica::PlantedBug::AcceptStalePredecessor);
}

#[cfg(feature = "testing")]
#[test]
fn finds_planted_reads_after_the_lease_lapsed() {
    find_planted(chaintable::replica::PlantedBug::ServeAfterLeaseLapsed);
}

#[cfg(feature = "testing")]
#[test]
fn finds_planted_craq_reads_of_dirty_keys() {
    find_planted(chaintable::replica::PlantedBug::ReadDirtyKeys);
}

#[test]
fn a_standalone_replica_acknowledges_after_apply() {
    let mut r = Replica::standalone(4);
    let token = WriteToken {
        conn: 1,
        request_id: 1,
    };
    let seq = r
        .handle_client_write(WriteOp::Del { key: key(1) }, Some(token))
        .unwrap();
    let Some(Action::Apply(u)) = r.poll_action() else {
        panic!("apply first")
    };
    assert_eq!(
        r.poll_action(),
        None,
        "nothing is acknowledged before the apply"
    );
    r.handle_applied(u, WriteOutcome::Absent);
    let Some(Action::WriteDone {
        token: t, result, ..
    }) = r.poll_action()
    else {
        panic!()
    };
    assert_eq!(
        (t, result.op_id, result.outcome),
        (token, seq, WriteOutcome::Absent)
    );
    // The bound: with 4 writes in flight the fifth is refused.
    for _ in 0..4 {
        r.handle_client_write(WriteOp::Del { key: key(1) }, None)
            .unwrap();
    }
    let refused = r
        .handle_client_write(WriteOp::Del { key: key(1) }, None)
        .unwrap_err();
    assert_eq!(refused.code, chaintable::wire::ErrorCode::Busy);
}
