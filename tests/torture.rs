//! Fault-injection torture suite with a linearizability checker.
//!
//! Default (part of `cargo test`): a fixed set of seeds, about two minutes,
//! plus a run against a deliberately broken server mode that the checker
//! must catch. Where the test may create network namespaces (root and
//! iproute2), the second seed, and every long run, also cuts partitions;
//! elsewhere it fails unless CHAINTABLE_ALLOW_SKIP=netns lets it skip them
//! (and says so). `--no-partitions` turns them off;
//! `--broken-only` runs only the broken-mode check (about 20 s). The
//! third seed runs a durable chain (every member with `--data-dir`), whose
//! faults restart killed members on their disks and kill every member at
//! once; `--durable` makes every segment of a long run durable.
//! Long runs:
//!
//! ```sh
//! cargo test --release --test torture -- --duration 600 --runs 3 --seed random
//! ```
//!
//! Add `--segment 300` for hour-long totals with fewer cluster restarts.
//! A failed segment prints its own seed (`seed × 1000 + segment`);
//! `--replay <that seed> --duration <segment seconds>` runs that segment
//! alone, with the same seeded choices of faults and operations (timing,
//! and so the exact schedule, can still differ).
//!
//! A run's duration is split into segments of at most `--segment` seconds
//! (default 60), each on a fresh cluster with its own history check. The
//! clients pace themselves so that a segment's history stays under the
//! checker's per-key limit (`lincheck::MAX_OPS_PER_KEY`) whatever its
//! length: the checker's memory grows with the square of the operations
//! on a key.

mod common;

use common::netns::Net;
use common::torture::{run, Config, Report};
use std::time::Duration;

struct Args {
    duration: Option<Duration>,
    segment: Duration,
    seed: Option<u64>,
    replay: Option<u64>,
    random: bool,
    runs: usize,
    skip: bool,
    no_partitions: bool,
    /// Only the run against the broken server mode (the checker's check).
    broken_only: bool,
    /// Every segment on a durable chain (see `Config::durable`).
    durable: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        duration: None,
        segment: Duration::from_secs(60),
        seed: None,
        replay: None,
        random: false,
        runs: 1,
        skip: false,
        no_partitions: false,
        broken_only: false,
        durable: false,
    };
    let mut it = std::env::args().skip(1);
    let secs = |s: Option<String>| s.and_then(|s| s.parse().ok()).map(Duration::from_secs);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--duration" => a.duration = secs(it.next()),
            "--segment" => a.segment = secs(it.next()).unwrap_or(a.segment),
            "--seed" => match it.next().as_deref() {
                Some("random") => a.random = true,
                Some(n) => a.seed = n.parse().ok(),
                None => {}
            },
            "--replay" => a.replay = it.next().and_then(|s| s.parse().ok()),
            "--runs" => a.runs = it.next().and_then(|s| s.parse().ok()).unwrap_or(1),
            "--no-partitions" => a.no_partitions = true,
            "--broken-only" => a.broken_only = true,
            "--durable" => a.durable = true,
            // libtest flags cargo may pass: accept and ignore.
            s if s.starts_with("--") => {}
            // A name filter that does not select this suite skips it.
            filter => a.skip |= !"torture".contains(filter),
        }
    }
    a
}

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

fn print(cfg: &Config, r: &Report) {
    println!(
        "seed {} ({} s, {} clients, {} keys{}{}): {} ops, {} acknowledged writes, {} compare-and-sets written and {} not, {} unknown-outcome writes",
        cfg.seed,
        cfg.duration.as_secs(),
        cfg.clients,
        cfg.keys,
        match (cfg.partitions, cfg.durable) {
            (true, _) => ", partitions",
            (false, true) => ", durable",
            (false, false) => "",
        },
        if cfg.broken_reads { ", BROKEN reads" } else { "" },
        r.ops,
        r.acked_writes,
        r.cas_written,
        r.cas_mismatched,
        r.unknown_writes
    );
    for (kind, n) in &r.faults {
        println!("  fault {kind}: {n}");
    }
    let spread: Vec<String> = r
        .reads_by_member
        .iter()
        .map(|(addr, n)| format!("{addr} {n}"))
        .collect();
    println!("  reads answered per member: {}", spread.join(", "));
    println!("  verdict: {}", r.verdict.as_deref().unwrap_or("-"));
    println!(
        "  peak memory of the harness so far: {} MiB",
        peak_rss_mib()
    );
}

/// The segments of `seeds`' runs: a run of `duration` is split into
/// segments of at most `segment`, each with the seed `seed × 1000 + part`.
fn segments(seeds: &[u64], duration: Duration, segment: Duration) -> (Vec<u64>, Duration) {
    let parts = duration.as_secs().div_ceil(segment.as_secs().max(1)).max(1);
    let part_duration = duration / u32::try_from(parts).unwrap_or(u32::MAX);
    let seeds = seeds
        .iter()
        .flat_map(|seed| (0..parts).map(move |part| seed * 1000 + part))
        .collect();
    (seeds, part_duration)
}

/// Runs one segment per seed, each on a fresh cluster; returns (passed,
/// failed). `partitions(seed)` says whether that segment cuts partitions.
fn run_seeds(
    seeds: &[u64],
    part_duration: Duration,
    partitions: impl Fn(u64) -> bool,
    durable: impl Fn(u64) -> bool,
) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    let mut totals = Report::default();
    let (mut checked, mut anomalies, mut harness_failures) = (0usize, 0usize, 0usize);
    for &seed in seeds {
        let cfg = Config {
            seed,
            duration: part_duration,
            members: 3,
            clients: 6,
            keys: 8,
            broken_reads: false,
            // Durable members restart on their own ports and disks, which
            // the test network does not model: no partitions there.
            partitions: partitions(seed) && !durable(seed),
            durable: durable(seed),
        };
        // A harness failure (e.g. a chain that never settles) is counted
        // and reported, and the remaining segments still run.
        let report = match std::panic::catch_unwind(|| run(&cfg)) {
            Ok(r) => r,
            Err(_) => Report {
                harness_failure: true,
                verdict: Some("harness failure (see the panic above)".into()),
                ..Report::default()
            },
        };
        print(&cfg, &report);
        if report.harness_failure {
            harness_failures += 1;
        } else {
            checked += 1;
            anomalies += usize::from(report.anomaly);
        }
        totals.ops += report.ops;
        totals.acked_writes += report.acked_writes;
        totals.cas_written += report.cas_written;
        totals.cas_mismatched += report.cas_mismatched;
        totals.unknown_writes += report.unknown_writes;
        for (k, n) in &report.faults {
            *totals.faults.entry(k).or_default() += n;
        }
        if std::env::var_os("TORTURE_SCHEDULE").is_some() && !report.anomaly {
            for line in &report.schedule {
                println!("    {line}");
            }
        }
        if report.anomaly || report.harness_failure {
            println!(
                "  FAILED: seed {} (rerun alone: cargo test --release --test torture -- --replay {} --duration {}{}); fault schedule:",
                cfg.seed,
                cfg.seed,
                part_duration.as_secs(),
                match (cfg.partitions, cfg.durable) {
                    (_, true) => " --durable",
                    (true, false) => "",
                    (false, false) => " --no-partitions",
                }
            );
            for line in &report.schedule {
                println!("    {line}");
            }
            failed += 1;
        } else {
            passed += 1;
        }
    }
    println!(
        "totals: {checked} checked runs, {} s of faults in them, {} ops, {} acknowledged writes, {} compare-and-sets written and {} not, {} unknown-outcome writes, faults {:?}, {anomalies} anomalies, {harness_failures} harness failures (not checked)",
        (part_duration * u32::try_from(checked).unwrap_or(u32::MAX)).as_secs(),
        totals.ops,
        totals.acked_writes,
        totals.cas_written,
        totals.cas_mismatched,
        totals.unknown_writes,
        totals.faults,
    );
    (passed, failed)
}

/// Whether this environment lets the test create network namespaces. If
/// not, the run fails unless skipping partitions was allowed
/// (`CHAINTABLE_ALLOW_SKIP=netns`, or `--no-partitions`).
fn netns_available() -> bool {
    match Net::create("probe") {
        Ok(_) => true,
        Err(why) => !common::netns::skip_allowed("torture partition faults", &why),
    }
}

fn main() {
    let args = parse_args();
    if args.skip {
        println!("torture: skipped by filter\n0 passed, 0 failed");
        return;
    }
    let long =
        args.duration.is_some() || args.random || args.seed.is_some() || args.replay.is_some();
    let seeds: Vec<u64> = if let Some(seed) = args.replay {
        vec![seed]
    } else if long {
        let base = match (args.seed, args.random) {
            (Some(s), _) => s,
            _ => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| u64::from(d.subsec_nanos()) % 1_000_000),
        };
        (0..args.runs as u64).map(|i| base + i).collect()
    } else if args.broken_only {
        vec![]
    } else {
        vec![11, 12, 13]
    };
    let duration = args.duration.unwrap_or(Duration::from_secs(40));
    let (seeds, part_duration) = match args.replay {
        Some(_) => (seeds, duration),
        None => segments(&seeds, duration, args.segment),
    };
    let netns_ok = !args.no_partitions && netns_available();
    // In the default run, only seed 12's segment cuts partitions.
    let partitions = |seed: u64| netns_ok && (long || seed / 1000 == 12);
    // In the default run, seed 13's segment runs a durable chain.
    let durable = |seed: u64| args.durable || (!long && seed / 1000 == 13);
    let (mut passed, mut failed) = if seeds.is_empty() {
        (0, 0)
    } else {
        run_seeds(&seeds, part_duration, partitions, durable)
    };
    if !long {
        // The checker must catch a server that answers reads anywhere.
        let cfg = Config {
            seed: 5,
            duration: Duration::from_secs(15),
            members: 3,
            clients: 6,
            keys: 3,
            broken_reads: true,
            partitions: false,
            durable: false,
        };
        let report = run(&cfg);
        print(&cfg, &report);
        let caught = report
            .verdict
            .as_deref()
            .is_some_and(|v| v.contains("NOT linearizable"));
        if report.anomaly && caught {
            println!("  ok: the checker caught the broken mode");
            passed += 1;
        } else {
            println!("  FAILED: the checker did not notice reads served by non-tail members");
            failed += 1;
        }
    }
    println!("torture: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
