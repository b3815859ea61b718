//! table-bench: throughput and latency of a chaintable server or chain, or
//! of a Redis server through the same load generator.

use chaintable::bench::{self, Mix, Target, Workload};
use chaintable::client::chain::ChainClient;
use chaintable::client::cluster::ClusterClient;
use chaintable::client::{Client, Options};
use chaintable::wire::FEATURE_CRAQ_READS;
use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

/// Load generator in the style of redis-benchmark.
///
/// `table-bench --addr 127.0.0.1:9000 -c 50 -P 16 -t put,get`
/// `table-bench --zookeeper 127.0.0.1:2181 -t put,get` (writes to the head,
/// reads spread over every member that answers them: CRAQ)
/// `table-bench --redis 127.0.0.1:6379 -t put,get` (SET/GET over RESP)
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// A standalone table-server (`host:port`).
    #[arg(long, conflicts_with_all = ["zookeeper", "redis"])]
    addr: Option<String>,
    /// A chain through its ZooKeeper (`host:port`).
    #[arg(long, conflicts_with = "redis")]
    zookeeper: Option<String>,
    #[arg(long, default_value = "/chain")]
    chain_root: String,
    /// With --zookeeper: a cluster of chains (spec §5.8) under this root;
    /// each key goes to its chain's head (writes) and members (reads).
    #[arg(long, requires = "zookeeper")]
    cluster_root: Option<String>,
    /// With --zookeeper: `spread` reads over every member whose HELLO_OK
    /// says it answers them (CRAQ; a dirty key goes on to the tail), or
    /// send them all to the `tail`.
    #[arg(long, default_value = "spread", value_parser = ["spread", "tail"])]
    reads: String,
    /// A Redis server (`host:port`): SET for put, GET for get.
    #[arg(long)]
    redis: Option<String>,
    /// An etcd member's client URL address (`host:port`): put and range
    /// through the v3 JSON gateway; pipelining does not apply.
    #[arg(long, conflicts_with_all = ["redis", "addr", "zookeeper"])]
    etcd: Option<String>,
    /// Concurrent clients (one connection and thread each).
    #[arg(short = 'c', default_value_t = 50)]
    clients: usize,
    /// Requests per test (overrides --duration).
    #[arg(short = 'n')]
    requests: Option<u64>,
    /// Seconds per test.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Value size in bytes.
    #[arg(short = 'd', default_value_t = 100)]
    value_bytes: usize,
    /// Key space: keys are `key:<12 digits>` below this number.
    #[arg(short = 'r', default_value_t = 100_000)]
    keyspace: u64,
    /// Pipeline depth: requests sent per round trip.
    #[arg(short = 'P', default_value_t = 1)]
    pipeline: usize,
    /// Tests to run, comma separated: put, get, mix, mput (each -P puts
    /// sent as one MWRITE; Redis: one MSET).
    #[arg(short = 't', default_value = "put,get")]
    tests: String,
    /// Read share of the `mix` test.
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Server process ids whose CPU time to report per operation.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// A label for the output (e.g. "chaintable" or "redis").
    #[arg(long, default_value = "")]
    label: String,
    /// Print one JSON object per test instead of a table row.
    #[arg(long)]
    json: bool,
    /// chaintable over TLS, trusting the CA certificates in --ca (PEM).
    #[arg(long, requires = "ca")]
    tls: bool,
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// No per-second progress on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn target(args: &Args) -> Result<Target, String> {
    let tls = match (&args.ca, args.tls) {
        (Some(ca), true) => Some(chaintable::tls::client_config(ca).map_err(|e| e.to_string())?),
        _ => None,
    };
    if let Some(e) = &args.etcd {
        return Ok(Target::Etcd(e.clone()));
    }
    if let Some(r) = &args.redis {
        return Ok(Target::Redis(r.clone()));
    }
    if let Some(a) = &args.addr {
        return Ok(Target::Table {
            write: a.clone(),
            reads: vec![a.clone()],
            tail: a.clone(),
            tls,
        });
    }
    if let (Some(zk), Some(cluster)) = (&args.zookeeper, &args.cluster_root) {
        let opts = Options {
            tls: tls.clone(),
            ..Options::default()
        };
        let mut c = ClusterClient::connect(zk, cluster, opts).map_err(|e| e.to_string())?;
        let map = c.map().cloned().ok_or("no shard map")?;
        let names = c.chain_names();
        c.close();
        let mut chains = Vec::new();
        for name in names {
            let root = format!("{}/{name}", cluster.trim_end_matches('/'));
            chains.push((name, chain_target(zk, &root, args, tls.clone())?));
        }
        return Ok(Target::Cluster { map, chains });
    }
    if let Some(zk) = &args.zookeeper {
        return chain_target(zk, &args.chain_root, args, tls);
    }
    Err("give --addr, --zookeeper or --redis".into())
}

/// One chain found through ZooKeeper: writes to its head, reads at its
/// tail or (`--reads spread`) every member that announces CRAQ.
fn chain_target(
    zk: &str,
    root: &str,
    args: &Args,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Target, String> {
    let opts = Options {
        tls: tls.clone(),
        ..Options::default()
    };
    let mut c = ChainClient::connect(zk, root, opts).map_err(|e| e.to_string())?;
    let members = c.members().to_vec();
    c.close();
    let (head, tail) = match (members.first(), members.last()) {
        (Some(h), Some(t)) => (h.addr.clone(), t.addr.clone()),
        _ => return Err("no chain members".into()),
    };
    let mut reads = vec![tail.clone()];
    if args.reads == "spread" {
        let opts = Options {
            tls: tls.clone(),
            ..Options::default()
        };
        let craq = |addr: &str| {
            Client::connect_with(addr, opts.clone())
                .is_ok_and(|c| c.server_hello().features & FEATURE_CRAQ_READS != 0)
        };
        reads = members
            .iter()
            .map(|m| m.addr.clone())
            .filter(|a| *a == tail || craq(a))
            .collect();
    }
    Ok(Target::Table {
        write: head,
        reads,
        tail,
        tls,
    })
}

fn cpu_us(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| bench::process_cpu_us(*p)).sum()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let target = match target(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("table-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.json {
        print_header();
    }
    for test in args
        .tests
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let mix = match test {
            "put" | "set" => Mix::Put,
            "get" => Mix::Get,
            "mix" => Mix::Mixed(args.read_ratio),
            "mput" | "mset" => Mix::MPut,
            other => {
                eprintln!("table-bench: unknown test '{other}' (put, get, mix, mput)");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = run_test(&args, &target, test, mix) {
            eprintln!("table-bench: {test}: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

fn print_header() {
    println!(
        "{:<12} {:<5} {:>3} {:>4} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>6}",
        "target",
        "test",
        "P",
        "c",
        "ops/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "cpu µs/op",
        "errors"
    );
}

/// Runs one workload and prints its line (a table row, or JSON).
fn run_test(args: &Args, target: &Target, test: &str, mix: Mix) -> Result<(), String> {
    let w = Workload {
        clients: args.clients,
        duration: Duration::from_secs(args.duration),
        requests: args.requests,
        value_bytes: args.value_bytes,
        keyspace: args.keyspace,
        pipeline: args.pipeline.max(1),
        mix,
    };
    let cpu_before = cpu_us(&args.server_pids);
    let cpu_each_before: Vec<Option<u64>> = args
        .server_pids
        .iter()
        .map(|p| bench::process_cpu_us(*p))
        .collect();
    let quiet = args.quiet;
    let out = bench::run(target, &w, |done, t| {
        if !quiet {
            eprintln!("  [{test}] {:>3} s: {done} requests", t.as_secs());
        }
    })
    .map_err(|e| e.to_string())?;
    let cpu_per_op = match (cpu_before, cpu_us(&args.server_pids)) {
        #[allow(clippy::cast_precision_loss)] // a ratio to print
        (Some(a), Some(b)) if out.ops > 0 => Some((b - a) as f64 / out.ops as f64),
        _ => None,
    };
    // Each server's CPU per operation of the whole test (a chain's members
    // share the work; with --server-pid in chain order, head first).
    let cpu_each: Vec<String> = args
        .server_pids
        .iter()
        .zip(&cpu_each_before)
        .map(
            |(pid, before)| match (before, bench::process_cpu_us(*pid)) {
                #[allow(clippy::cast_precision_loss)] // a ratio to print
                (Some(a), Some(b)) if out.ops > 0 => {
                    format!("{:.2}", (b - a) as f64 / out.ops as f64)
                }
                _ => "null".into(),
            },
        )
        .collect();
    let spread: Vec<String> = out
        .reads_by_server
        .iter()
        .map(|(addr, n)| format!("\"{addr}\":{n}"))
        .collect();
    let h = &out.latency_us;
    let q = |p: f64| h.value_at_quantile(p);
    let extra_json = format!(
        ",\"reads_by_server\":{{{}}},\"cpu_us_per_op_by_pid\":[{}]",
        spread.join(","),
        cpu_each.join(",")
    );
    if !args.json && (spread.len() > 1 || cpu_each.len() > 1) {
        eprintln!(
            "  reads answered per server: {}; server CPU µs/op per pid: {}",
            spread.join(", ").replace('"', ""),
            cpu_each.join(", ")
        );
    }
    if args.json {
        println!(
            "{{\"target\":\"{}\",\"test\":\"{test}\",\"pipeline\":{},\"clients\":{},\"ops\":{},\"seconds\":{:.3},\"ops_per_sec\":{:.0},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"cpu_us_per_op\":{},\"errors\":{}{extra_json}}}",
            args.label, w.pipeline, w.clients, out.ops, out.elapsed.as_secs_f64(), out.ops_per_sec(),
            q(0.5), q(0.9), q(0.99), q(0.999), h.max(),
            cpu_per_op.map_or("null".to_string(), |c| format!("{c:.2}")), out.errors
        );
    } else {
        println!(
            "{:<12} {:<5} {:>3} {:>4} {:>11.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>6}",
            args.label,
            test,
            w.pipeline,
            w.clients,
            out.ops_per_sec(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            h.max(),
            cpu_per_op.map_or("-".to_string(), |c| format!("{c:.2}")),
            out.errors
        );
    }
    Ok(())
}
