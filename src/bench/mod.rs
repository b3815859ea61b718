//! The load generator behind `table-bench`: closed-loop clients, each on
//! its own connection and thread, sending pipelined batches and recording
//! every request's latency in an HDR histogram. The same loop drives a
//! chaintable server (or chain) and a Redis server, so the generator is not
//! what differs in a comparison.

pub mod etcd;
pub mod resp;

use crate::client::{Client, ClientError, Options};
use crate::serialize::Key;
use crate::wire::{BatchOp, Body, WriteMode};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to load.
#[derive(Debug, Clone)]
pub enum Target {
    /// chaintable: writes to `write`; client `i` reads at `reads[i %
    /// len]` (the one server; a chain's tail, or every member with CRAQ)
    /// and sends a read refused there with NOT_TAIL to `tail`.
    Table {
        write: String,
        reads: Vec<String>,
        tail: String,
        /// Speak TLS with this configuration (`--tls --ca`).
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    },
    Redis(String),
    /// A cluster of chains (spec §5.8): each key goes to the chain the map
    /// gives it; each chain is a [`Target::Table`].
    Cluster {
        map: crate::cluster::ShardMap,
        chains: Vec<(String, Target)>,
    },
    /// etcd v3 through its JSON gateway (one request per round trip).
    Etcd(String),
}

/// Which requests a test sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mix {
    Put,
    Get,
    /// Reads with this probability, puts otherwise.
    Mixed(f64),
    /// Puts, each pipeline's worth sent as one batch: one MWRITE (Redis:
    /// one MSET) of `pipeline` keys.
    MPut,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub clients: usize,
    pub duration: Duration,
    /// Stop after this many requests in all (if set) instead of the duration.
    pub requests: Option<u64>,
    pub value_bytes: usize,
    pub keyspace: u64,
    pub pipeline: usize,
    pub mix: Mix,
}

/// Figures of one test.
pub struct Outcome {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Request latencies in microseconds.
    pub latency_us: Histogram<u64>,
    /// chaintable: reads answered per server address (a read redirected to
    /// the tail counts at the tail).
    pub reads_by_server: std::collections::BTreeMap<String, u64>,
}

impl Outcome {
    #[must_use]
    #[allow(clippy::cast_precision_loss)] // a rate to print: 2^52 ops is plenty
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Keys are 16 bytes: `key:` and 12 digits.
#[must_use]
pub fn key_bytes(n: u64) -> Vec<u8> {
    format!("key:{n:012}").into_bytes()
}

/// xorshift64*: plenty for picking keys, and not worth a dependency.
struct Rng(u64);

impl Rng {
    fn seeded(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    #[allow(clippy::cast_precision_loss)] // 53 random bits: exact in an f64
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Says on stderr what the first failed request of the run got: an error
/// count alone does not say what to fix.
fn report_error(e: &ClientError) {
    static REPORTED: AtomicBool = AtomicBool::new(false);
    if !REPORTED.swap(true, Ordering::Relaxed) {
        eprintln!("table-bench: first failed request: {e}");
    }
}

/// One connection's worth of sending.
enum Conn {
    Table {
        write: Box<Client>,
        /// Where this client reads, when not at `write`.
        read: Option<Box<Client>>,
        /// The tail, for reads `read` sends there (connected when needed).
        tail: Option<Box<Client>>,
        tail_addr: String,
        /// Reads answered at `read` (or `write`) and at the tail.
        reads_here: u64,
        reads_at_tail: u64,
    },
    Redis(resp::Resp),
    Etcd(etcd::Etcd),
    /// One [`Conn::Table`] per chain, in the order of the target's chains.
    Cluster {
        map: crate::cluster::ShardMap,
        names: Vec<String>,
        chains: Vec<Conn>,
    },
}

fn connect(target: &Target, i: usize) -> Result<Conn, String> {
    let opts = Options {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(30),
        ..Options::default()
    };
    match target {
        Target::Table {
            write,
            reads,
            tail,
            tls,
        } => {
            let opts = Options {
                tls: tls.clone(),
                ..opts
            };
            let w = Box::new(Client::connect_with(write, opts.clone()).map_err(|e| e.to_string())?);
            let read = &reads[i % reads.len().max(1)];
            // One connection for all only at a standalone server: a chain
            // head that also reads needs a second, whose refusals go on
            // to the tail.
            let r = if read != write || tail != write {
                Some(Box::new(
                    Client::connect_with(read, opts).map_err(|e| e.to_string())?,
                ))
            } else {
                None
            };
            Ok(Conn::Table {
                write: w,
                read: r,
                tail: None,
                tail_addr: tail.clone(),
                reads_here: 0,
                reads_at_tail: 0,
            })
        }
        Target::Cluster { map, chains } => {
            let conns = chains
                .iter()
                .map(|(_, t)| connect(t, i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Conn::Cluster {
                map: map.clone(),
                names: chains.iter().map(|(n, _)| n.clone()).collect(),
                chains: conns,
            })
        }
        Target::Redis(addr) => resp::Resp::connect(addr)
            .map(Conn::Redis)
            .map_err(|e| e.to_string()),
        Target::Etcd(addr) => etcd::Etcd::connect(addr)
            .map(Conn::Etcd)
            .map_err(|e| e.to_string()),
    }
}

impl Conn {
    /// Sends the puts of `ops` as one write (MWRITE; Redis: MSET); returns
    /// how many failed (all of them, if it failed).
    fn one_write(&mut self, ops: &[(bool, u64)], value: &[u8]) -> Result<u64, String> {
        match self {
            Conn::Redis(r) => {
                let keys: Vec<Vec<u8>> = ops.iter().map(|(_, k)| key_bytes(*k)).collect();
                r.queue_mset(keys.iter().map(|k| (k.as_slice(), value)));
                r.flush_and_read(1).map(|_| 0).map_err(|e| e.to_string())
            }
            Conn::Etcd(_) => Err("etcd: no batch workload in this bench".into()),
            Conn::Cluster { .. } => Err("a cluster's batches are split in `batch`".into()),
            Conn::Table { write, .. } => {
                let batch = ops
                    .iter()
                    .map(|(_, k)| BatchOp::Put {
                        key: Key::new(key_bytes(*k)).expect("16-byte key"),
                        value: value.to_vec(),
                    })
                    .collect();
                match write.mwrite(batch) {
                    Ok(_) => Ok(0),
                    Err(ClientError::Server(_)) => Ok(ops.len() as u64),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Sends one batch of (is_read, key) requests; returns how many failed.
    fn batch(&mut self, ops: &[(bool, u64)], value: &[u8], one_write: bool) -> Result<u64, String> {
        if let Conn::Cluster { map, names, chains } = self {
            // Split by chain (a batch stays within one chain), in turn.
            let mut errors = 0;
            for (name, conn) in names.iter().zip(chains.iter_mut()) {
                let mine: Vec<(bool, u64)> = ops
                    .iter()
                    .filter(|(_, k)| map.chain_of(&key_bytes(*k)) == name)
                    .copied()
                    .collect();
                if !mine.is_empty() {
                    errors += conn.batch(&mine, value, one_write)?;
                }
            }
            return Ok(errors);
        }
        if one_write {
            return self.one_write(ops, value);
        }
        match self {
            Conn::Cluster { .. } => Err("a cluster's batches are split above".into()),
            Conn::Redis(r) => {
                for (is_read, k) in ops {
                    if *is_read {
                        r.queue_get(&key_bytes(*k));
                    } else {
                        r.queue_set(&key_bytes(*k), value);
                    }
                }
                r.flush_and_read(ops.len())
                    .map(|_| 0)
                    .map_err(|e| e.to_string())
            }
            Conn::Etcd(e) => {
                for (is_read, k) in ops {
                    let r = if *is_read {
                        e.get(&key_bytes(*k))
                    } else {
                        e.put(&key_bytes(*k), value)
                    };
                    r.map_err(|e| e.to_string())?;
                }
                Ok(0)
            }
            Conn::Table {
                write,
                read,
                tail,
                tail_addr,
                reads_here,
                reads_at_tail,
            } => {
                let body = |is_read: bool, k: u64| {
                    let key = Key::new(key_bytes(k)).expect("16-byte key");
                    if is_read {
                        Body::Get { key }
                    } else {
                        Body::Put {
                            key,
                            value: value.to_vec(),
                            mode: WriteMode::Sync,
                        }
                    }
                };
                let count = |r: Result<Vec<Result<Body, ClientError>>, ClientError>| {
                    r.map(|v| {
                        v.iter()
                            .filter_map(|x| x.as_ref().err())
                            .for_each(report_error);
                        v.iter().filter(|x| x.is_err()).count() as u64
                    })
                    .map_err(|e| e.to_string())
                };
                let Some(read) = read else {
                    *reads_here += ops.iter().filter(|o| o.0).count() as u64;
                    return count(write.pipeline(ops.iter().map(|(r, k)| body(*r, *k)).collect()));
                };
                let reads: Vec<Body> = ops
                    .iter()
                    .filter(|o| o.0)
                    .map(|(r, k)| body(*r, *k))
                    .collect();
                let writes: Vec<Body> = ops
                    .iter()
                    .filter(|o| !o.0)
                    .map(|(r, k)| body(*r, *k))
                    .collect();
                let mut errors = 0;
                if !writes.is_empty() {
                    errors += count(write.pipeline(writes))?;
                }
                if reads.is_empty() {
                    return Ok(errors);
                }
                let replies = read.pipeline(reads.clone()).map_err(|e| e.to_string())?;
                // A dirty key (CRAQ) or a member that is not the tail: ask
                // the tail, as a chain client would.
                let to_tail: Vec<Body> = reads
                    .into_iter()
                    .zip(&replies)
                    .filter(|(_, r)| {
                        matches!(r, Err(e) if e.code() == Some(crate::wire::ErrorCode::NotTail))
                    })
                    .map(|(b, _)| b)
                    .collect();
                errors += replies.iter().filter(|r| r.is_err()).count() as u64;
                replies
                    .iter()
                    .filter_map(|r| r.as_ref().err())
                    .filter(|e| e.code() != Some(crate::wire::ErrorCode::NotTail))
                    .for_each(report_error);
                *reads_here += replies.iter().filter(|r| r.is_ok()).count() as u64;
                if !to_tail.is_empty() {
                    errors -= to_tail.len() as u64;
                    if tail.is_none() {
                        let opts = Options {
                            connect_timeout: Duration::from_secs(5),
                            read_timeout: Duration::from_secs(30),
                            tls: read.options().tls.clone(),
                            ..Options::default()
                        };
                        let c = Client::connect_with(tail_addr, opts).map_err(|e| e.to_string())?;
                        *tail = Some(Box::new(c));
                    }
                    if let Some(t) = tail {
                        let n = to_tail.len() as u64;
                        let failed = count(t.pipeline(to_tail))?;
                        errors += failed;
                        *reads_at_tail += n - failed;
                    }
                }
                Ok(errors)
            }
        }
    }

    /// Reads answered where this client reads, and at the tail.
    fn reads(&self) -> (u64, u64) {
        match self {
            Conn::Table {
                reads_here,
                reads_at_tail,
                ..
            } => (*reads_here, *reads_at_tail),
            Conn::Cluster { chains, .. } => chains
                .iter()
                .map(Conn::reads)
                .fold((0, 0), |(a, b), (c, d)| (a + c, b + d)),
            _ => (0, 0),
        }
    }
}

/// What one client measured: latencies, errors, and reads answered where
/// it reads and at the tail.
type ClientTally = (Histogram<u64>, u64, (u64, u64));

/// One client's requests, batch after batch, until `stop`: its latency
/// histogram and error count.
fn client_loop(
    i: usize,
    mut conn: Conn,
    w: &Workload,
    done: &AtomicU64,
    stop: &AtomicBool,
) -> Result<ClientTally, String> {
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut rng = Rng::seeded(i as u64 + 1);
    let value = vec![b'x'; w.value_bytes];
    let mut errors = 0;
    let mut ops = Vec::with_capacity(w.pipeline);
    while !stop.load(Ordering::Relaxed) {
        ops.clear();
        for _ in 0..w.pipeline {
            let is_read = match w.mix {
                Mix::Put | Mix::MPut => false,
                Mix::Get => true,
                Mix::Mixed(p) => rng.chance(p),
            };
            ops.push((is_read, rng.below(w.keyspace)));
        }
        let t = Instant::now();
        errors += conn.batch(&ops, &value, w.mix == Mix::MPut)?;
        let us = crate::units::micros(t.elapsed());
        // Each request of a batch waited for the whole batch.
        let _ = hist.record_n(us.max(1), w.pipeline as u64);
        let total = done.fetch_add(w.pipeline as u64, Ordering::Relaxed) + w.pipeline as u64;
        if w.requests.is_some_and(|n| total >= n) {
            stop.store(true, Ordering::Relaxed);
        }
    }
    Ok((hist, errors, conn.reads()))
}

/// Runs one test. `progress` is called about once a second with the
/// requests done so far.
///
/// # Errors
///
/// A message when a client cannot connect or a request fails.
pub fn run(
    target: &Target,
    w: &Workload,
    progress: impl Fn(u64, Duration),
) -> Result<Outcome, String> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut conns = Vec::with_capacity(w.clients);
    for i in 0..w.clients {
        conns.push(connect(target, i)?);
    }
    let started = Instant::now();
    let threads: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let (done, stop, w) = (done.clone(), stop.clone(), w.clone());
            std::thread::spawn(move || client_loop(i, conn, &w, &done, &stop))
        })
        .collect();
    let deadline = started + w.duration;
    let mut next_report = started + Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if w.requests.is_none() && now >= deadline {
            stop.store(true, Ordering::Relaxed);
            break;
        }
        if now >= next_report {
            progress(done.load(Ordering::Relaxed), now - started);
            next_report += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut latency_us =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut errors = 0;
    let mut reads_by_server = std::collections::BTreeMap::new();
    for (i, t) in threads.into_iter().enumerate() {
        let (h, e, (here, at_tail)) = t
            .join()
            .map_err(|_| "a client thread panicked".to_string())??;
        latency_us.add(h).map_err(|e| e.to_string())?;
        errors += e;
        if let Target::Table { reads, tail, .. } = target {
            let read = reads[i % reads.len().max(1)].clone();
            *reads_by_server.entry(read).or_insert(0) += here;
            *reads_by_server.entry(tail.clone()).or_insert(0) += at_tail;
        }
    }
    reads_by_server.retain(|_, n| *n > 0);
    Ok(Outcome {
        ops: latency_us.len(),
        errors,
        elapsed: started.elapsed(),
        latency_us,
        reads_by_server,
    })
}

/// CPU time (user + system) a process has used so far, in microseconds.
#[must_use]
pub fn process_cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    let tick = u64::try_from(tick).ok()?.max(1);
    Some((utime + stime) * 1_000_000 / tick)
}
