//! The torture harness: a real ZooKeeper and a 3–5 member chain, concurrent
//! clients doing random put/get/del over a small key set, and faults on a
//! seeded schedule (kill -9 and replace, SIGSTOP shorter and longer than the
//! session timeout, ZooKeeper kill and restart, joins, and, where the test
//! may create network namespaces, partitions: a member cut from ZooKeeper,
//! from one other member, or from everyone). Every operation is
//! recorded; the history is checked for linearizability per key, and after
//! the run every member must hold the same table.

use super::chain::Chain;
use super::lincheck::{check, KvOp, Recorded, Verdict, MAX_OPS_PER_KEY};
use super::netns::{Net, Peer};
use chaintable::client::chain::ChainClient;
use chaintable::client::{Client, ClientError, Options};
use chaintable::serialize::Key;
use chaintable::wire::{BatchOp, Body, Retry, WriteMode, WriteOutcome};
use nix::sys::signal::Signal;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the harness waits for every member to be in the chain again
/// after a fault before going on; a longer wait is reported.
const SETTLE_LIMIT: Duration = Duration::from_secs(20);

/// Upper bound on the checker's search for one history.
const CHECK_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub duration: Duration,
    pub members: usize,
    pub clients: u32,
    pub keys: u32,
    /// TEST ONLY: members answer reads anywhere and clients read from a
    /// random member; the checker must catch it.
    pub broken_reads: bool,
    /// Run the chain on a test network (see `netns.rs`) and add partition
    /// faults. Callers check `netns::Net::create` works first.
    pub partitions: bool,
    /// Every member logs to a data directory (`--fsync always`): a killed
    /// member restarts on its disk, and a fault kills every member at once
    /// and restarts them all on their disks.
    pub durable: bool,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub ops: usize,
    pub acked_writes: usize,
    pub unknown_writes: usize,
    /// Compare-and-sets answered: written, and not (mismatch). Those of
    /// unknown outcome count in `unknown_writes`.
    pub cas_written: usize,
    pub cas_mismatched: usize,
    pub faults: BTreeMap<&'static str, usize>,
    pub schedule: Vec<String>,
    pub verdict: Option<String>,
    /// Reads answered per member address, over all clients (CRAQ spreads
    /// them).
    pub reads_by_member: Vec<(String, u64)>,
    pub anomaly: bool,
    /// The run could not finish (e.g. a member never registered): nothing
    /// was checked, so it is neither a pass nor an anomaly of the server.
    pub harness_failure: bool,
}

/// Share of the checker's per-key limit that the clients may use: keys are
/// picked at random, so some get more than their share, and the final
/// reads come on top.
const OPS_BUDGET_PERCENT: usize = 85;

struct Shared {
    start: Instant,
    history: Mutex<Vec<Recorded>>,
    /// Operations the clients have started; they stop at `budget`.
    issued: AtomicUsize,
    budget: usize,
    members: Mutex<Vec<String>>,
    stop: AtomicBool,
    /// Reads that went back before what their client had seen (see
    /// [`Session`]).
    session_violations: Mutex<Vec<String>>,
    /// Reads answered, per member, over all clients.
    reads_by_member: Mutex<BTreeMap<String, u64>>,
}

/// One client's session guarantee (spec §5.5): no read returns a version
/// of a key older than one this client has already read or written. Op
/// ids grow along the chain's history, so a value's version is where it
/// stands in it; a read that finds the key absent carries no version and
/// is left to the linearizability check.
#[derive(Default)]
struct Session {
    seen: HashMap<u32, u64>,
}

impl Session {
    /// Notes what `reply` says about `key`; a read that went back is
    /// reported to `shared`.
    fn observe(&mut self, client: u32, key: u32, reply: &Body, shared: &Shared) {
        if let Some(v) = self.went_back(key, reply) {
            let mut violations = shared.session_violations.lock().unwrap();
            violations.push(format!("client {client}: {v}"));
        }
    }

    fn went_back(&mut self, key: u32, reply: &Body) -> Option<String> {
        let version = match reply {
            Body::Value(Some(v)) => {
                let seen = self.seen.get(&key).copied().unwrap_or(0);
                if v.version < seen {
                    return Some(format!(
                        "read version {} of t{key} after having seen {seen}",
                        v.version
                    ));
                }
                v.version
            }
            Body::PutOk(w) | Body::DelOk(w) => w.op_id,
            _ => return None,
        };
        let seen = self.seen.entry(key).or_insert(0);
        *seen = (*seen).max(version);
        None
    }
}

impl Shared {
    fn now_ns(&self) -> i64 {
        i64::try_from(self.start.elapsed().as_nanos()).unwrap_or(i64::MAX)
    }
}

/// Runs one torture run and checks it. Returns the report; `anomaly` is
/// set if the history is not linearizable or the members diverge.
pub fn run(cfg: &Config) -> Report {
    if !cfg.partitions {
        return run_on(cfg, None);
    }
    // The network namespace is per thread: run in a thread that enters the
    // hub, so that it, the client threads it spawns and ZooKeeper are there.
    let cfg = cfg.clone();
    let runner = std::thread::spawn(move || {
        let net = Net::create(&format!("s{}", cfg.seed % 1000))
            .unwrap_or_else(|e| panic!("test network: {e}"));
        net.enter_hub()
            .unwrap_or_else(|e| panic!("test network: {e}"));
        run_on(&cfg, Some(net))
    });
    runner
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn run_on(cfg: &Config, net: Option<Net>) -> Report {
    let segment_started = std::time::SystemTime::now();
    let extra: Vec<&str> = if cfg.broken_reads {
        vec!["--unsafe-reads-anywhere"]
    } else {
        vec![]
    };
    let mut chain = if cfg.durable {
        Chain::start_durable(cfg.members, false, &extra, &format!("t{}", cfg.seed))
    } else {
        Chain::start_full(cfg.members, false, &extra, net)
    };
    let shared = Arc::new(Shared {
        start: Instant::now(),
        history: Mutex::new(Vec::new()),
        issued: AtomicUsize::new(0),
        budget: cfg.keys as usize * MAX_OPS_PER_KEY * OPS_BUDGET_PERCENT / 100,
        members: Mutex::new(chain.addrs()),
        stop: AtomicBool::new(false),
        session_violations: Mutex::new(Vec::new()),
        reads_by_member: Mutex::new(BTreeMap::new()),
    });
    let clients: Vec<_> = (0..cfg.clients)
        .map(|id| {
            let zk = chain.zk.addr();
            let (shared, cfg) = (shared.clone(), cfg.clone());
            std::thread::spawn(move || client_loop(id, &zk, &cfg, &shared))
        })
        .collect();
    let mut report = Report::default();
    let injected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        inject_faults(cfg, &mut chain, &shared, &mut report)
    }));
    if let Err(panic) = injected {
        // The report dies with this run: print the schedule so far.
        eprintln!(
            "  fault schedule up to the harness failure (seed {}):",
            cfg.seed
        );
        for line in &report.schedule {
            eprintln!("    {line}");
        }
        shared.stop.store(true, Ordering::SeqCst);
        std::panic::resume_unwind(panic);
    }
    // Quiet period: no faults; the chain must settle with every member.
    let running = chain.members.iter().flatten().count();
    chain.wait_chain_len(running);
    std::thread::sleep(Duration::from_millis(500));
    shared.stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.join();
    }
    final_reads(cfg, &chain, &shared);
    let history = shared.history.lock().unwrap().clone();
    summarize(&history, &mut report);
    report.reads_by_member = shared
        .reads_by_member
        .lock()
        .unwrap()
        .iter()
        .map(|(addr, n)| (addr.clone(), *n))
        .collect();
    match chain.converged_digest() {
        Ok((digest, entries)) => report.schedule.push(format!(
            "final: {running} members, digest {digest}, {entries} entries"
        )),
        Err(diverged) => {
            report.anomaly = true;
            let path = save_history(cfg, &history);
            let logs = save_server_logs(cfg, segment_started);
            report.verdict = Some(format!(
                "{diverged}; history saved to {}, server logs in {}",
                path.display(),
                logs.display()
            ));
            return report;
        }
    }
    judge(cfg, &history, &mut report);
    let violations = shared.session_violations.lock().unwrap().clone();
    if !violations.is_empty() {
        report.anomaly = true;
        let verdict = report.verdict.take().unwrap_or_default();
        report.verdict = Some(format!(
            "{verdict}; session guarantee broken {} times (seed {}):\n  {}",
            violations.len(),
            cfg.seed,
            violations.join("\n  ")
        ));
    }
    if report.anomaly {
        let dir = save_server_logs(cfg, segment_started);
        if let Some(v) = report.verdict.as_mut() {
            v.push_str(&format!(
                "\n  server logs of this run saved in {}",
                dir.display()
            ));
        }
    }
    report
}

/// Copies the logs of every server this run started (the harness names
/// them by host, port and its own pid, so later runs overwrite them) next
/// to the saved history.
fn save_server_logs(cfg: &Config, since: std::time::SystemTime) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("torture-logs-seed{}", cfg.seed));
    let _ = std::fs::create_dir_all(&dir);
    let suffix = format!("-{}.log", std::process::id());
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return dir;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let recent = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if name.starts_with("chaintable-server-") && name.ends_with(&suffix) && recent {
            let _ = std::fs::copy(e.path(), dir.join(&name));
        }
    }
    dir
}

fn client_loop(id: u32, zk: &str, cfg: &Config, shared: &Shared) {
    let opts = Options {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let Ok(mut chain) = ChainClient::connect(zk, "/chain", opts.clone()) else {
        return;
    };
    chain.retry_for = Duration::from_secs(3);
    let mut rng = StdRng::seed_from_u64(cfg.seed * 1000 + u64::from(id));
    let mut counter = 0u64;
    let mut pace = Pace::new(cfg, shared.budget);
    let mut session = Session::default();
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.issued.fetch_add(1, Ordering::SeqCst) >= shared.budget {
            // Out of budget: the faults go on, the history stops growing.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let key = rng.gen_range(0..cfg.keys);
        let k = Key::new(format!("t{key}")).expect("key");
        // One operation in five is a compare-and-set or a batch.
        match rng.gen_range(0..10) {
            0 => {
                counter += 1;
                let value = (u64::from(id) << 32) | counter;
                // Two operations (the read, the compare): count the second.
                shared.issued.fetch_add(1, Ordering::SeqCst);
                cas_step(id, key, &mut chain, shared, &mut rng, value, &mut session);
                pace.wait();
                continue;
            }
            1 => {
                batch_step(id, cfg, &mut chain, shared, &mut rng, &mut counter);
                pace.wait();
                continue;
            }
            _ => {}
        }
        let roll = rng.gen_range(0..10);
        let (op_kind, body) = match roll {
            0..=4 => ("get", Body::Get { key: k }),
            5..=8 => {
                counter += 1;
                let value = (u64::from(id) << 32) | counter;
                (
                    "put",
                    Body::Put {
                        key: k,
                        value: value.to_be_bytes().to_vec(),
                        mode: WriteMode::Sync,
                    },
                )
            }
            _ => (
                "del",
                Body::Del {
                    key: k,
                    mode: WriteMode::Sync,
                },
            ),
        };
        let call_ns = shared.now_ns();
        let result = if cfg.broken_reads && op_kind == "get" {
            read_anywhere(shared, &mut rng, body.clone(), &opts)
        } else {
            chain.call(body.clone()).map(|(b, _)| b)
        };
        let return_ns = shared.now_ns();
        if let Ok(reply) = &result {
            session.observe(id, key, reply, shared);
        }
        if let Some(rec) = record(id, key, &body, result, call_ns, return_ns) {
            shared.history.lock().unwrap().push(rec);
        }
        pace.wait();
    }
    let mut spread = shared.reads_by_member.lock().unwrap();
    for (addr, n) in &chain.reads_by_member {
        *spread.entry(addr.clone()).or_insert(0) += n;
    }
    drop(spread);
    chain.close();
}

fn key_of(key: u32) -> Key {
    Key::new(format!("t{key}")).expect("key")
}

/// Read, then compare-and-set against what was read: a CPUT of a fresh
/// value, or now and then a CDEL. Both are recorded (the read as a read).
fn cas_step(
    id: u32,
    key: u32,
    chain: &mut ChainClient,
    shared: &Shared,
    rng: &mut StdRng,
    value: u64,
    session: &mut Session,
) {
    let call_ns = shared.now_ns();
    let read = chain.call(Body::Get { key: key_of(key) });
    let return_ns = shared.now_ns();
    if let Ok((reply, _)) = &read {
        session.observe(id, key, reply, shared);
    }
    let Ok((Body::Value(found), _)) = read else {
        return; // nothing known to compare with
    };
    let (expected, version) = match &found {
        Some(v) => (Some(value_of(&v.value)), v.version),
        None => (None, 0),
    };
    shared.history.lock().unwrap().push(Recorded {
        client: id,
        key,
        op: KvOp::Get { value: expected },
        call_ns,
        return_ns: Some(return_ns),
    });
    let delete = expected.is_some() && rng.gen_range(0..5) == 0;
    let body = if delete {
        Body::DelIf {
            key: key_of(key),
            expected: version,
        }
    } else {
        Body::PutIf {
            key: key_of(key),
            expected: version,
            value: value.to_be_bytes().to_vec(),
        }
    };
    let call_ns = shared.now_ns();
    let result = chain.call(body);
    let return_ns = shared.now_ns();
    let (applied, ret) = match result {
        Ok((Body::PutIfOk(c) | Body::DelIfOk(c), _)) => {
            (Some(c.outcome != WriteOutcome::Mismatch), Some(return_ns))
        }
        Ok(_) => return,
        Err(e) if e.retry() != Retry::Retriable => (None, None),
        Err(_) => return, // retriable: not executed
    };
    shared.history.lock().unwrap().push(Recorded {
        client: id,
        key,
        op: KvOp::Cas {
            expected,
            value: (!delete).then_some(value),
            applied,
        },
        call_ns,
        return_ns: ret,
    });
}

/// An MWRITE of fresh values (and now and then a delete) to two or three
/// keys, or an MGET of them. The checker takes each key's part as an
/// operation on that key, all with the batch's call and return times.
fn batch_step(
    id: u32,
    cfg: &Config,
    chain: &mut ChainClient,
    shared: &Shared,
    rng: &mut StdRng,
    counter: &mut u64,
) {
    let mut keys: Vec<u32> = (0..rng.gen_range(2..=3))
        .map(|_| rng.gen_range(0..cfg.keys))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    // One operation per key: count those past the first.
    shared.issued.fetch_add(keys.len() - 1, Ordering::SeqCst);
    let write = rng.gen_range(0..2) == 0;
    let mut ops = Vec::new();
    let mut written = Vec::new();
    for &key in &keys {
        if rng.gen_range(0..6) == 0 {
            ops.push(BatchOp::Del { key: key_of(key) });
            written.push(KvOp::Del { existed: None });
        } else {
            *counter += 1;
            let value = (u64::from(id) << 32) | *counter;
            ops.push(BatchOp::Put {
                key: key_of(key),
                value: value.to_be_bytes().to_vec(),
            });
            written.push(KvOp::Put {
                value,
                existed: None,
            });
        }
    }
    let body = if write {
        Body::MWrite { ops }
    } else {
        Body::MGet {
            keys: keys.iter().map(|k| key_of(*k)).collect(),
        }
    };
    let call_ns = shared.now_ns();
    let result = chain.call(body);
    let return_ns = shared.now_ns();
    let per_key: Vec<(KvOp, Option<i64>)> = match result {
        Ok((Body::MWriteOk { .. }, _)) => {
            written.into_iter().map(|o| (o, Some(return_ns))).collect()
        }
        Ok((Body::MGetOk(values), _)) if values.len() == keys.len() => values
            .into_iter()
            .map(|v| {
                let value = v.map(|v| value_of(&v.value));
                (KvOp::Get { value }, Some(return_ns))
            })
            .collect(),
        Err(e) if write && e.retry() != Retry::Retriable => {
            written.into_iter().map(|o| (o, None)).collect()
        }
        _ => return, // a failed read, or a write that certainly did not run
    };
    let mut history = shared.history.lock().unwrap();
    for (&key, (op, ret)) in keys.iter().zip(per_key) {
        history.push(Recorded {
            client: id,
            key,
            op,
            call_ns,
            return_ns: ret,
        });
    }
}

/// Spreads a client's share of the operations budget over the run, so a
/// long run keeps operations coming while faults happen instead of
/// spending the budget in its first seconds.
struct Pace {
    interval: Duration,
    next: Instant,
}

impl Pace {
    fn new(cfg: &Config, budget: usize) -> Pace {
        let clients = usize::try_from(cfg.clients.max(1)).unwrap_or(1);
        let per_client = budget / clients;
        let per_client = u32::try_from(per_client.max(1)).unwrap_or(u32::MAX);
        Pace {
            interval: cfg.duration / per_client,
            next: Instant::now(),
        }
    }

    /// Sleeps until the next slot. Slots missed during a stall are not
    /// made up in a burst.
    fn wait(&mut self) {
        self.next += self.interval;
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        } else {
            self.next = now;
        }
    }
}

/// The broken mode's reads: straight to a random member.
fn read_anywhere(
    shared: &Shared,
    rng: &mut StdRng,
    body: Body,
    opts: &Options,
) -> Result<Body, ClientError> {
    let members = shared.members.lock().unwrap().clone();
    let addr = &members[rng.gen_range(0..members.len())];
    let mut c = Client::connect_with(addr, opts.clone())?;
    c.call(body)
}

fn value_of(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(b)
}

/// Turns one call into a history record. Failed reads and writes that
/// certainly did not execute are left out; unknown writes are kept open.
fn record(
    client: u32,
    key: u32,
    body: &Body,
    result: Result<Body, ClientError>,
    call_ns: i64,
    return_ns: i64,
) -> Option<Recorded> {
    let existed = |o: WriteOutcome| match o {
        WriteOutcome::Pending => None,
        o => Some(o == WriteOutcome::Existed),
    };
    let (op, ret) = match (body, result) {
        (Body::Get { .. }, Ok(Body::Value(v))) => (
            KvOp::Get {
                value: v.map(|v| value_of(&v.value)),
            },
            Some(return_ns),
        ),
        (Body::Get { .. }, _) => return None,
        (Body::Put { value, .. }, Ok(Body::PutOk(w))) => (
            KvOp::Put {
                value: value_of(value),
                existed: existed(w.outcome),
            },
            Some(return_ns),
        ),
        (Body::Del { .. }, Ok(Body::DelOk(w))) => (
            KvOp::Del {
                existed: existed(w.outcome),
            },
            Some(return_ns),
        ),
        (Body::Put { value, .. }, Err(e)) if e.retry() != Retry::Retriable => (
            KvOp::Put {
                value: value_of(value),
                existed: None,
            },
            None,
        ),
        (Body::Del { .. }, Err(e)) if e.retry() != Retry::Retriable => {
            (KvOp::Del { existed: None }, None)
        }
        _ => return None, // retriable: not executed
    };
    Some(Recorded {
        client,
        key,
        op,
        call_ns,
        return_ns: ret,
    })
}

fn inject_faults(cfg: &Config, chain: &mut Chain, shared: &Shared, report: &mut Report) {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let end = Instant::now() + cfg.duration;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(rng.gen_range(400..1200)));
        let settled = settled_members(chain);
        let running = chain.members.iter().flatten().count();
        let roll = rng.gen_range(0..if chain.net.is_some() { 140 } else { 100 });
        let t = shared.start.elapsed().as_millis();
        let kind: &'static str = match roll {
            0..=29 if settled >= 3 => {
                let victim = pick_running(chain, &mut rng);
                chain.kill9(victim);
                report
                    .schedule
                    .push(format!("{t} ms: kill -9 member {victim}"));
                std::thread::sleep(Duration::from_millis(rng.gen_range(200..1000)));
                if cfg.durable {
                    chain.restart(victim);
                    "kill -9 + restart from its disk"
                } else {
                    chain.add_member();
                    "kill -9 + restart"
                }
            }
            80..=89 if cfg.durable => {
                let down = rng.gen_range(200..1500);
                let victims: Vec<usize> = (0..chain.members.len())
                    .filter(|i| chain.members[*i].is_some())
                    .collect();
                report.schedule.push(format!(
                    "{t} ms: kill -9 of every member {victims:?}, restarted from their disks after {down} ms"
                ));
                for &v in &victims {
                    chain.kill9(v);
                }
                std::thread::sleep(Duration::from_millis(down));
                let mut order = victims.clone();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.gen_range(0..=i));
                }
                for v in order {
                    chain.restart(v);
                }
                "kill -9 of every member + restart from their disks"
            }
            30..=49 => {
                let victim = pick_running(chain, &mut rng);
                let pause = rng.gen_range(100..600);
                report
                    .schedule
                    .push(format!("{t} ms: SIGSTOP member {victim} for {pause} ms"));
                pause_member(chain, victim, pause);
                "SIGSTOP shorter than the session"
            }
            50..=64 if settled >= 3 => {
                let victim = pick_running(chain, &mut rng);
                let pause = rng.gen_range(1500..2500);
                report
                    .schedule
                    .push(format!("{t} ms: SIGSTOP member {victim} for {pause} ms"));
                pause_member(chain, victim, pause);
                "SIGSTOP longer than the session"
            }
            65..=79 => {
                let down = rng.gen_range(200..2000);
                report
                    .schedule
                    .push(format!("{t} ms: ZooKeeper killed for {down} ms"));
                chain.zk.kill();
                std::thread::sleep(Duration::from_millis(down));
                chain.zk.restart();
                "ZooKeeper kill + restart"
            }
            80..=99 if running < 5 => {
                report.schedule.push(format!("{t} ms: a member joins"));
                chain.add_member();
                "join"
            }
            100..=119 if roll < 110 || settled >= 3 => {
                let longer = roll >= 110;
                let victim = pick_running(chain, &mut rng);
                let ms = if longer {
                    rng.gen_range(1500..3000)
                } else {
                    rng.gen_range(200..700)
                };
                report.schedule.push(format!(
                    "{t} ms: member {victim} cut from ZooKeeper for {ms} ms"
                ));
                partition(chain, victim, Peer::ZooKeeper, ms);
                if longer {
                    "partition from ZooKeeper longer than the session"
                } else {
                    "partition from ZooKeeper shorter than the session"
                }
            }
            120..=129 if running >= 2 => {
                let (a, b) = pick_pair(chain, &mut rng);
                let ms = rng.gen_range(300..3000);
                report.schedule.push(format!(
                    "{t} ms: members {a} and {b} cut from each other for {ms} ms"
                ));
                let Some(b_host) = chain.hosts[b] else {
                    continue;
                };
                partition(chain, a, Peer::Host(b_host), ms);
                "partition between two members"
            }
            130..=139 if settled >= 3 => {
                let victim = pick_running(chain, &mut rng);
                let ms = rng.gen_range(300..3000);
                report.schedule.push(format!(
                    "{t} ms: member {victim} cut from everyone for {ms} ms"
                ));
                partition(chain, victim, Peer::Everyone, ms);
                "member isolated from everyone"
            }
            _ => continue,
        };
        *report.faults.entry(kind).or_default() += 1;
        *shared.members.lock().unwrap() = chain.addrs();
        // Let the chain recover before the next fault.
        let running = chain.members.iter().flatten().count();
        let settled = super::wait_for(SETTLE_LIMIT, || {
            (settled_members(chain) == running).then_some(())
        });
        if settled.is_none() {
            let t = shared.start.elapsed().as_millis();
            report.schedule.push(format!(
                "{t} ms: not settled {} s after the fault; roles {:?}",
                SETTLE_LIMIT.as_secs(),
                chain.roles()
            ));
            *report
                .faults
                .entry("(chain not settled in time)")
                .or_default() += 1;
        }
    }
}

fn settled_members(chain: &Chain) -> usize {
    chain
        .roles()
        .iter()
        .filter(|r| matches!(r.as_str(), "head" | "middle" | "tail" | "solo"))
        .count()
}

fn pick_running(chain: &Chain, rng: &mut StdRng) -> usize {
    let running: Vec<usize> = (0..chain.members.len())
        .filter(|i| chain.members[*i].is_some())
        .collect();
    running[rng.gen_range(0..running.len())]
}

/// Two different running members.
fn pick_pair(chain: &Chain, rng: &mut StdRng) -> (usize, usize) {
    let a = pick_running(chain, rng);
    loop {
        let b = pick_running(chain, rng);
        if b != a {
            return (a, b);
        }
    }
}

/// Cuts member `i` from `peer` (an address or prefix) for `ms`, then heals.
fn partition(chain: &Chain, i: usize, peer: Peer, ms: u64) {
    let (Some(net), Some(host)) = (chain.net.as_ref(), chain.hosts[i]) else {
        return;
    };
    net.cut(host, peer);
    std::thread::sleep(Duration::from_millis(ms));
    net.heal(host, peer);
}

fn pause_member(chain: &Chain, i: usize, ms: u64) {
    let m = chain.member(i);
    m.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(ms));
    m.signal(Signal::SIGCONT);
}

/// After the run: one read of every key through the chain, recorded like
/// any other read, so the final state is checked against the history.
fn final_reads(cfg: &Config, chain: &Chain, shared: &Shared) {
    let opts = Options {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        ..Options::default()
    };
    let mut c = ChainClient::connect(&chain.zk.addr(), "/chain", opts).expect("final client");
    c.retry_for = Duration::from_secs(20);
    for key in 0..cfg.keys {
        let body = Body::Get {
            key: Key::new(format!("t{key}")).expect("key"),
        };
        let call_ns = shared.now_ns();
        let result = c.call(body.clone()).map(|(b, _)| b);
        assert!(result.is_ok(), "final read of t{key} failed: {result:?}");
        if let Some(rec) = record(u32::MAX, key, &body, result, call_ns, shared.now_ns()) {
            shared.history.lock().unwrap().push(rec);
        }
    }
    c.close();
}

fn summarize(history: &[Recorded], report: &mut Report) {
    report.ops = history.len();
    for r in history {
        match (&r.op, r.return_ns) {
            (KvOp::Put { .. } | KvOp::Del { .. }, Some(_)) => report.acked_writes += 1,
            (KvOp::Cas { applied, .. }, Some(_)) => match applied {
                Some(false) => report.cas_mismatched += 1,
                _ => report.cas_written += 1,
            },
            (KvOp::Put { .. } | KvOp::Del { .. } | KvOp::Cas { .. }, None) => {
                report.unknown_writes += 1;
            }
            (KvOp::Get { .. }, _) => {}
        }
    }
}

fn judge(cfg: &Config, history: &[Recorded], report: &mut Report) {
    match check(history, CHECK_LIMIT) {
        Verdict::Linearizable => report.verdict = Some("linearizable".into()),
        Verdict::TooLarge { key, ops } => {
            report.anomaly = true;
            report.verdict = Some(format!(
                "not checked: {ops} operations on key t{key}, over the checker's limit of {MAX_OPS_PER_KEY}"
            ));
        }
        Verdict::Unknown => {
            report.anomaly = true;
            report.verdict = Some("checker timed out: unknown (investigate; not a pass)".into());
        }
        Verdict::Anomaly { key, slice } => {
            report.anomaly = true;
            let path = save_history(cfg, history);
            report.verdict = Some(format!(
                "NOT linearizable on key t{key} (seed {}); history saved to {}\n  {}",
                cfg.seed,
                path.display(),
                slice.join("\n  ")
            ));
        }
    }
}

fn save_history(cfg: &Config, history: &[Recorded]) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("torture-history-seed{}.txt", cfg.seed));
    let mut lines: Vec<String> = history
        .iter()
        .map(|r| {
            format!(
                "{} client={} key=t{} op={:?} call_ns={} return_ns={:?}",
                r.call_ns, r.client, r.key, r.op, r.call_ns, r.return_ns
            )
        })
        .collect();
    lines.sort();
    let _ = std::fs::write(&path, lines.join("\n"));
    path
}
