//! table-client: an interactive shell, a one-shot command, or a script
//! read from standard input, against one server or a chain.

use chaintable::client::chain::ChainClient;
use chaintable::client::cli::{self, Command};
use chaintable::client::cluster::ClusterClient;
use chaintable::client::{ChainWatcher, Client, ClientError, Credentials, Options};
use chaintable::wire::Body;
use clap::Parser;
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::time::Duration;

/// Talk to a chaintable server (or, with --zookeeper, to a chain).
///
/// Interactive: `table-client 127.0.0.1:9000`. One-shot: `table-client
/// 127.0.0.1:9000 get foo`. Scripted: `echo size | table-client ADDR`.
/// Exit codes: 0 success, 1 an operation failed, 2 usage.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Server `host:port`, or ZooKeeper `host:port` with --zookeeper.
    addr: String,
    /// A single command to run instead of the shell (e.g. `get foo`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
    /// ADDR is ZooKeeper: find the chain's head and tail there.
    #[arg(long, short = 'z')]
    zookeeper: bool,
    /// ZooKeeper path of the chain.
    #[arg(long, default_value = "/chain")]
    chain_root: String,
    /// A cluster of chains (spec §5.8): the ZooKeeper path holding the shard
    /// map. Keys go to the chain that owns them; `cluster create` and
    /// `cluster show` manage the map.
    #[arg(long, requires = "zookeeper")]
    cluster_root: Option<String>,
    /// The cluster secret, for `cluster create` in a cluster whose members
    /// have one: the map is signed with it (members ignore an unsigned map)
    /// and the cluster root gets the members-only ACL.
    #[arg(long)]
    cluster_secret_file: Option<std::path::PathBuf>,
    /// Show which server answered each command.
    #[arg(long, short)]
    verbose: bool,
    /// Reply timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Log in as this user (servers started with --users-file); the
    /// password is read from --password-file, else from the environment
    /// variable CHAINTABLE_PASSWORD.
    #[arg(long)]
    user: Option<String>,
    /// Speak TLS to the server(s), trusting the CA certificates in --ca.
    #[arg(long, requires = "ca")]
    tls: bool,
    /// PEM file of the CA certificates that sign the servers' certificates.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// File whose first line is the password for --user.
    #[arg(long, requires = "user")]
    password_file: Option<std::path::PathBuf>,
}

/// The credentials for --user, or why they cannot be had.
fn credentials(args: &Args) -> Result<Option<Credentials>, String> {
    let Some(user) = args.user.clone() else {
        return Ok(None);
    };
    let password = match &args.password_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        None => std::env::var("CHAINTABLE_PASSWORD")
            .map_err(|_| "--user needs --password-file or CHAINTABLE_PASSWORD".to_string())?,
    };
    Ok(Some(Credentials { user, password }))
}

enum Backend {
    Single(Box<Client>),
    Chain(Box<ChainClient>),
    Cluster(Box<ClusterClient>),
}

/// How to open another connection (a watch takes one of its own).
struct Target {
    addr: String,
    zookeeper: bool,
    chain_root: String,
    opts: Options,
}

impl Target {
    /// `watch`: prints each update until `count` of them (or forever).
    fn watch(
        &self,
        prefix: &[u8],
        from_seq: u64,
        count: Option<u64>,
    ) -> Result<String, ClientError> {
        let mut printed = 0u64;
        let mut print = |u: Option<chaintable::client::WatchUpdate>| {
            if let Some(u) = u {
                println!("{}", cli::render_watch(&u));
                printed += 1;
            }
            count.is_some_and(|n| printed >= n)
        };
        if self.zookeeper {
            let chain = ChainClient::connect(&self.addr, &self.chain_root, self.opts.clone())?;
            let mut w = ChainWatcher::open(chain, prefix, from_seq)?;
            eprintln!(
                "watching from op {} at {}",
                w.last_seq(),
                w.addr().unwrap_or("?")
            );
            while !print(w.next_update()?) {}
            Ok(format!("stopped after op {}", w.last_seq()))
        } else {
            let mut w =
                Client::connect_with(&self.addr, self.opts.clone())?.watch(prefix, from_seq)?;
            eprintln!("watching from op {} at {}", w.last_seq(), w.addr());
            while !print(w.next_update()?) {}
            Ok(format!("stopped after op {}", w.last_seq()))
        }
    }
}

impl Backend {
    fn call(&mut self, body: Body) -> Result<(Body, String), ClientError> {
        match self {
            Backend::Single(c) => {
                let addr = c.addr().to_string();
                c.call(body).map(|b| (b, addr))
            }
            Backend::Chain(c) => c.call(body),
            Backend::Cluster(c) => c.call(body),
        }
    }

    fn backup_to(&mut self, out: &mut dyn std::io::Write) -> Result<(u64, String), ClientError> {
        match self {
            Backend::Single(c) => {
                let addr = c.addr().to_string();
                c.backup_to(out).map(|n| (n, addr))
            }
            Backend::Chain(c) => c.backup_to(out),
            Backend::Cluster(_) => Err(ClientError::Protocol(
                "a cluster's backup is one file per chain (snapshot save DIR)".into(),
            )),
        }
    }
}

/// `snapshot save FILE`: the backup goes to FILE.tmp, is read back whole
/// (which checks every record and computes the table's digest), and only
/// then renamed to FILE. In a cluster FILE is a directory that receives
/// one backup per chain, `<chain>.backup`, each consistent as of its own
/// chain's last write (chains have no common instant).
fn snapshot_save(backend: &mut Backend, path: &std::path::Path) -> Result<String, String> {
    let Backend::Cluster(cluster) = backend else {
        return save_one(path, &mut |out| backend.backup_to(out));
    };
    std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut done = Vec::new();
    for name in cluster.chain_names() {
        let chain = cluster
            .chain(&name)
            .map_err(|e| format!("chain {name}: {e}"))?;
        let file = path.join(format!("{name}.backup"));
        done.push(save_one(&file, &mut |out| chain.backup_to(out))?);
    }
    Ok(done.join("\n"))
}

type BackupFn<'a> = dyn FnMut(&mut dyn std::io::Write) -> Result<(u64, String), ClientError> + 'a;

/// One backup into `path` (see [`snapshot_save`]).
fn save_one(path: &std::path::Path, backup_to: &mut BackupFn<'_>) -> Result<String, String> {
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let saved = backup_to(&mut out).and_then(|(n, addr)| {
        std::io::Write::flush(&mut out)
            .and_then(|()| out.get_ref().sync_all())
            .map(|()| (n, addr))
            .map_err(|e| ClientError::Protocol(format!("cannot write the backup: {e}")))
    });
    let (bytes, addr) = saved.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{e}")
    })?;
    let table = chaintable::table::Table::new(16);
    let snap = chaintable::storage::read_snapshot(&tmp, &table).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("the backup does not read back: {e}")
    })?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!(
        "saved {}: {} entries as of op {}, table_digest {}, {bytes} bytes from {addr}",
        path.display(),
        table.len(),
        snap.applied_through,
        table.digest()
    ))
}

/// What running one line did, for the exit code.
#[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Outcome {
    Ok = 0,
    Failed = 1,
    Usage = 2,
}

struct Shell {
    backend: Backend,
    target: Target,
    verbose: bool,
}

impl Shell {
    /// Runs one line; returns the outcome and whether to quit.
    fn run_line(&mut self, line: &str) -> (Outcome, bool) {
        let cmd = match cli::parse(line) {
            Ok(None) => return (Outcome::Ok, false),
            Ok(Some(c)) => c,
            Err(usage) => {
                eprintln!("{usage}");
                return (Outcome::Usage, false);
            }
        };
        match cmd {
            Command::Help => {
                println!("{}", cli::HELP);
                (Outcome::Ok, false)
            }
            Command::Quit => (Outcome::Ok, true),
            Command::SnapshotSave(path) => match snapshot_save(&mut self.backend, &path) {
                Ok(done) => {
                    println!("{done}");
                    (Outcome::Ok, false)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    (Outcome::Failed, false)
                }
            },
            Command::Watch {
                prefix,
                from_seq,
                count,
            } => match self.target.watch(&prefix, from_seq, count) {
                Ok(done) => {
                    eprintln!("{done}");
                    (Outcome::Ok, false)
                }
                Err(e) => {
                    eprintln!("error: {e}{}", advice(&e));
                    (Outcome::Failed, false)
                }
            },
            Command::Request(body) => match self.backend.call(body) {
                Ok((reply, addr)) => {
                    println!("{}", cli::render(&reply));
                    if self.verbose {
                        eprintln!("(answered by {addr})");
                    }
                    (Outcome::Ok, false)
                }
                Err(e) => {
                    eprintln!("error: {e}{}", advice(&e));
                    (Outcome::Failed, false)
                }
            },
        }
    }
}

fn advice(e: &ClientError) -> &'static str {
    use chaintable::wire::Retry;
    match e.retry() {
        Retry::OutcomeUnknown => {
            " (the write may or may not have been applied: check with get or verify)"
        }
        Retry::Retriable => " (nothing was changed; try again)",
        Retry::NotRetriable => "",
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let credentials = match credentials(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("table-client: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match (&args.ca, args.tls) {
        (Some(ca), true) => match chaintable::tls::client_config(ca) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("table-client: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let opts = Options {
        read_timeout: Duration::from_millis(args.timeout_ms),
        credentials,
        tls,
        ..Options::default()
    };
    let target = Target {
        addr: args.addr.clone(),
        zookeeper: args.zookeeper,
        chain_root: args.chain_root.clone(),
        opts: opts.clone(),
    };
    if let (Some(cluster), Some("cluster")) =
        (&args.cluster_root, args.command.first().map(String::as_str))
    {
        return cluster_admin(&args, cluster, opts);
    }
    let backend = if let Some(cluster) = &args.cluster_root {
        ClusterClient::connect(&args.addr, cluster, opts).map(|c| Backend::Cluster(Box::new(c)))
    } else if args.zookeeper {
        ChainClient::connect(&args.addr, &args.chain_root, opts)
            .map(|c| Backend::Chain(Box::new(c)))
    } else {
        Client::connect_with(&args.addr, opts).map(|c| Backend::Single(Box::new(c)))
    };
    let backend = match backend {
        Ok(b) => b,
        Err(e) => {
            eprintln!("table-client: {e}");
            return ExitCode::from(1);
        }
    };
    let mut shell = Shell {
        backend,
        target,
        verbose: args.verbose,
    };
    let outcome = if !args.command.is_empty() {
        shell.run_line(&args.command.join(" ")).0
    } else if std::io::stdin().is_terminal() {
        interactive(&mut shell)
    } else {
        scripted(&mut shell)
    };
    ExitCode::from(outcome as u8)
}

/// `cluster create CHAINS [BOUNDARY...]` and `cluster show`.
fn cluster_admin(args: &Args, cluster: &str, opts: Options) -> ExitCode {
    let words: Vec<&str> = args.command.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["cluster", "create", chains, boundaries @ ..] => {
            cluster_create(args, cluster, chains, boundaries)
        }
        ["cluster", "show"] => cluster_show(&args.addr, cluster, opts),
        _ => {
            eprintln!("usage: cluster create CHAIN[,CHAIN...] [BOUNDARY...] | cluster show");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("table-client: {e}");
            ExitCode::from(1)
        }
    }
}

/// Writes map version 1: the key space cut at the boundaries (text keys,
/// ascending), the pieces given to the chains in turn.
fn cluster_create(
    args: &Args,
    cluster: &str,
    chains: &str,
    boundaries: &[&str],
) -> Result<String, String> {
    let secret = match &args.cluster_secret_file {
        Some(path) => Some(chaintable::auth::Secret::from_file(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let chains: Vec<String> = chains.split(',').map(str::to_string).collect();
    let cuts: Vec<Vec<u8>> = boundaries.iter().map(|b| b.as_bytes().to_vec()).collect();
    let map = chaintable::cluster::ShardMap::split(1, &chains, &cuts).map_err(|e| e.to_string())?;
    chaintable::coord::write_map(&args.addr, cluster, secret.as_ref(), &map)?;
    Ok(format!(
        "{cluster}: map version 1 written\n{}",
        render_map(&map)
    ))
}

fn render_map(map: &chaintable::cluster::ShardMap) -> String {
    let rows: Vec<String> = (map.ranges().iter().enumerate())
        .map(|(i, r)| format!("  {} -> {}", map.range_text(i), r.chain))
        .collect();
    rows.join("\n")
}

/// The map, then each chain's members with their role and entries.
fn cluster_show(zookeeper: &str, cluster: &str, opts: Options) -> Result<String, String> {
    let mut c =
        ClusterClient::connect(zookeeper, cluster, opts.clone()).map_err(|e| e.to_string())?;
    let map = c.map().cloned().ok_or("no shard map")?;
    let mut out = vec![
        format!("{cluster}: map version {}", map.version),
        render_map(&map),
    ];
    for name in c.chain_names() {
        out.push(format!("chain {name}:"));
        let members = match c.chain(&name) {
            Ok(chain) => chain.members().to_vec(),
            Err(e) => {
                out.push(format!("  {e}"));
                continue;
            }
        };
        for m in members {
            let stats =
                Client::connect_with(&m.addr, opts.clone()).and_then(|mut s| s.call(Body::Stats));
            let line = match stats {
                Ok(Body::StatsOk(s)) => format!(
                    "  {} {} {} entries",
                    m.addr,
                    s.get_text("role").unwrap_or("?"),
                    s.get_count("entries").unwrap_or(0)
                ),
                Ok(other) => format!("  {} {other:?}", m.addr),
                Err(e) => format!("  {} unreachable: {e}", m.addr),
            };
            out.push(line);
        }
    }
    c.close();
    Ok(out.join("\n"))
}

fn scripted(shell: &mut Shell) -> Outcome {
    let mut worst = Outcome::Ok;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            return Outcome::Failed;
        };
        let (o, quit) = shell.run_line(&line);
        worst = worst.max(o);
        if quit {
            break;
        }
    }
    worst
}

fn interactive(shell: &mut Shell) -> Outcome {
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("table-client: cannot start the line editor: {e}");
            return Outcome::Failed;
        }
    };
    println!("connected. type 'help' for commands, 'quit' to leave.");
    loop {
        match editor.readline("table> ") {
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                if shell.run_line(&line).1 {
                    return Outcome::Ok;
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(_) => return Outcome::Ok, // EOF (Ctrl-D)
        }
    }
}
