//! Fault-injection torture suite with a linearizability checker.
//!
//! Default (part of `cargo test`): a fixed set of seeds, about two minutes,
//! plus a run against a deliberately broken server mode that the checker
//! must catch. Long runs:
//!
//! ```sh
//! cargo test --release --test torture -- --duration 600 --runs 3 --seed random
//! ```

mod common;

use common::torture::{run, Config, Report};
use std::time::Duration;

struct Args {
    duration: Option<Duration>,
    seed: Option<u64>,
    random: bool,
    runs: usize,
    skip: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        duration: None,
        seed: None,
        random: false,
        runs: 1,
        skip: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--duration" => {
                a.duration = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .map(Duration::from_secs)
            }
            "--seed" => match it.next().as_deref() {
                Some("random") => a.random = true,
                Some(n) => a.seed = n.parse().ok(),
                None => {}
            },
            "--runs" => a.runs = it.next().and_then(|s| s.parse().ok()).unwrap_or(1),
            // libtest flags cargo may pass: accept and ignore.
            s if s.starts_with("--") => {}
            // A name filter that does not select this suite skips it.
            filter => a.skip |= !"torture".contains(filter),
        }
    }
    a
}

fn print(cfg: &Config, r: &Report) {
    println!(
        "seed {} ({} s, {} clients, {} keys{}): {} ops, {} acknowledged writes, {} unknown-outcome writes",
        cfg.seed,
        cfg.duration.as_secs(),
        cfg.clients,
        cfg.keys,
        if cfg.broken_reads { ", BROKEN reads" } else { "" },
        r.ops,
        r.acked_writes,
        r.unknown_writes
    );
    for (kind, n) in &r.faults {
        println!("  fault {kind}: {n}");
    }
    println!("  verdict: {}", r.verdict.as_deref().unwrap_or("-"));
}

fn main() {
    let args = parse_args();
    if args.skip {
        println!("torture: skipped by filter\n0 passed, 0 failed");
        return;
    }
    let mut passed = 0;
    let mut failed = 0;
    let long = args.duration.is_some() || args.random || args.seed.is_some();
    let seeds: Vec<u64> = if long {
        (0..args.runs)
            .map(|i| match (args.seed, args.random) {
                (Some(s), _) => s + i as u64,
                _ => {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(7, |d| d.as_nanos() as u64 % 1_000_000)
                        + i as u64
                }
            })
            .collect()
    } else {
        vec![11, 12]
    };
    let duration = args.duration.unwrap_or(Duration::from_secs(40));
    for seed in seeds {
        let cfg = Config {
            seed,
            duration,
            members: 3,
            clients: 6,
            keys: 8,
            broken_reads: false,
        };
        let report = run(&cfg);
        print(&cfg, &report);
        if report.anomaly {
            println!("  FAILED: seed {seed}; fault schedule:");
            for line in &report.schedule {
                println!("    {line}");
            }
            failed += 1;
        } else {
            passed += 1;
        }
    }
    if !long {
        // The checker must catch a server that answers reads anywhere.
        let cfg = Config {
            seed: 5,
            duration: Duration::from_secs(15),
            members: 3,
            clients: 6,
            keys: 3,
            broken_reads: true,
        };
        let report = run(&cfg);
        print(&cfg, &report);
        if report.anomaly
            && report
                .verdict
                .as_deref()
                .is_some_and(|v| v.contains("NOT linearizable"))
        {
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
