//! A chain of real `table-server` processes over a real ZooKeeper, and a
//! background writer that records which writes were acknowledged.

use super::netns::{Net, ZK_IP};
use super::zk::ZooKeeper;
use super::{wait_for, ServerProc};
use chaintable::client::chain::ChainClient;
use chaintable::client::{Client, ClientError, Options};
use chaintable::serialize::Key;
use chaintable::wire::{Body, Retry, WriteMode};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Chain scenarios run one at a time: each starts a JVM and several
/// servers, and on two cores parallel runs would turn timing into noise.
pub static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A member's table: key -> (version, value).
pub type Table = BTreeMap<Vec<u8>, (u64, Vec<u8>)>;

pub struct Chain {
    pub zk: ZooKeeper,
    _turn: std::sync::MutexGuard<'static, ()>,
    pub members: Vec<Option<ServerProc>>,
    pub extra: Vec<String>,
    pub inspect: bool,
    /// With a test network, each member runs on a host of its own (the
    /// host id of member `i` is `hosts[i]`), so partitions can be cut.
    /// Declared last: dropped after the processes that use it.
    pub net: Option<Net>,
    pub hosts: Vec<Option<usize>>,
    /// A durable chain: member `i` logs to `<data_root>/m<i>` (`--fsync
    /// always`) and can be restarted on it ([`Chain::restart`]).
    pub data_root: Option<std::path::PathBuf>,
}

impl Chain {
    /// ZooKeeper plus `n` members started one after the other (so the
    /// first started is the head). `--unsafe-reads-anywhere` is on only so
    /// that tests can inspect every member's table; clients still route
    /// reads to the tail.
    pub fn start(n: usize, extra: &[&str]) -> Chain {
        Chain::start_with(n, true, extra)
    }

    /// As `start`; `inspect` adds `--unsafe-reads-anywhere`.
    pub fn start_with(n: usize, inspect: bool, extra: &[&str]) -> Chain {
        Chain::start_full(n, inspect, extra, None)
    }

    /// As `start_with`, on a test network: the calling thread must already
    /// be in the network's hub (`Net::enter_hub`), where ZooKeeper runs.
    pub fn start_full(n: usize, inspect: bool, extra: &[&str], net: Option<Net>) -> Chain {
        Chain::start_inner(n, inspect, extra, net, None)
    }

    /// As `start_with`, every member with a data directory of its own.
    pub fn start_durable(n: usize, inspect: bool, extra: &[&str], tag: &str) -> Chain {
        let root =
            std::env::temp_dir().join(format!("chaintable-chain-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        Chain::start_inner(n, inspect, extra, None, Some(root))
    }

    fn start_inner(
        n: usize,
        inspect: bool,
        extra: &[&str],
        net: Option<Net>,
        data_root: Option<std::path::PathBuf>,
    ) -> Chain {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let zk = match net {
            Some(_) => ZooKeeper::start_on(ZK_IP),
            None => ZooKeeper::start(),
        };
        let mut chain = Chain {
            zk,
            _turn: turn,
            members: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            inspect,
            net,
            hosts: Vec::new(),
            data_root,
        };
        for _ in 0..n {
            chain.add_member();
        }
        chain.wait_chain_len(n);
        chain
    }

    /// Adds a member started with `args` beyond the chain's own.
    pub fn add_member_with(&mut self, args: &[&str]) -> usize {
        let before = self.extra.len();
        self.extra.extend(args.iter().map(|s| s.to_string()));
        let i = self.add_member();
        self.extra.truncate(before);
        i
    }

    pub fn add_member(&mut self) -> usize {
        self.add_member_at(None)
    }

    /// Adds a member listening on `port` (a test may ask it from before it
    /// is up).
    pub fn add_member_on(&mut self, port: u16) -> usize {
        self.add_member_at(Some(port))
    }

    fn add_member_at(&mut self, port: Option<u16>) -> usize {
        let (p, host) = self.spawn_member(self.members.len(), port);
        self.members.push(Some(p));
        self.hosts.push(host);
        self.members.len() - 1
    }

    /// Starts member `i` again on its data directory (a durable chain's
    /// member that was killed), and waits until it has registered.
    pub fn restart(&mut self, i: usize) {
        assert!(
            self.data_root.is_some(),
            "only a durable chain's members restart on their disk"
        );
        assert!(self.members[i].is_none(), "member {i} is running");
        let (p, host) = self.spawn_member(i, None);
        self.members[i] = Some(p);
        self.hosts[i] = host;
    }

    fn spawn_member(&mut self, i: usize, port: Option<u16>) -> (ServerProc, Option<usize>) {
        let zk = self.zk.addr();
        let dir = self
            .data_root
            .as_ref()
            .map(|r| r.join(format!("m{i}")).to_string_lossy().to_string());
        let secret = super::cluster_secret_file();
        let mut args: Vec<&str> = vec![&zk, "--session-timeout-ms", "1000"];
        // A chain the test starts with --insecure-peers has no secret.
        if !self.extra.iter().any(|a| a == "--insecure-peers") {
            args.extend(["--cluster-secret-file", &secret]);
        }
        if self.inspect {
            args.push("--unsafe-reads-anywhere");
        }
        args.extend(self.extra.iter().map(|s| s.as_str()));
        if let Some(dir) = &dir {
            args.extend(["--data-dir", dir, "--fsync", "always"]);
        }
        let (p, host) = match self.net.as_mut() {
            Some(net) => {
                let (id, ns, ip) = net.host();
                // Ports are never reused within a chain: see `Net::host`.
                let port = 20_000 + u16::try_from(self.members.len()).expect("few members");
                (ServerProc::start_in(&ns, &ip, port, 4, &args), Some(id))
            }
            None => match port {
                Some(port) => (ServerProc::start_on(port, 4, &args), None),
                None => (ServerProc::start(4, &args), None),
            },
        };
        // Registered before the next one starts, so start order = chain order.
        wait_registered(&p);
        (p, host)
    }

    pub fn member(&self, i: usize) -> &ServerProc {
        self.members[i].as_ref().expect("member is running")
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].take() {
            p.kill9();
        }
        if let (Some(net), Some(id)) = (self.net.as_mut(), self.hosts[i].take()) {
            net.release(id);
        }
    }

    pub fn client(&self) -> ChainClient {
        let opts = Options {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            ..Options::default()
        };
        let mut c = ChainClient::connect(&self.zk.addr(), "/chain", opts).expect("chain client");
        c.retry_for = Duration::from_secs(15);
        c
    }

    /// Waits until the running members report `n` members with one head
    /// and one tail among them, everyone settled (no joiners).
    pub fn wait_chain_len(&self, n: usize) {
        let ok = wait_for(Duration::from_secs(30), || {
            let roles = self.roles();
            let heads = roles
                .iter()
                .filter(|r| *r == "head" || *r == "solo")
                .count();
            let tails = roles
                .iter()
                .filter(|r| *r == "tail" || *r == "solo")
                .count();
            let middles = roles.iter().filter(|r| *r == "middle").count();
            (roles.len() == n && heads == 1 && tails == 1 && heads + tails + middles >= n)
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "chain of {n} did not settle: roles {:?}",
            self.roles()
        );
    }

    /// Roles of the running members, in start order.
    pub fn roles(&self) -> Vec<String> {
        self.members
            .iter()
            .flatten()
            .filter_map(|p| stat_text(&p.addr(), "role"))
            .collect()
    }

    /// Addresses of the running members.
    pub fn addrs(&self) -> Vec<String> {
        self.members.iter().flatten().map(|p| p.addr()).collect()
    }

    /// Waits until every running member reports the same table digest and
    /// entry count; returns (digest, entries), or what each member reported
    /// (and their roles) if they still differ after 30 s.
    pub fn converged_digest(&self) -> Result<(String, String), String> {
        let mut last = Vec::new();
        let same = wait_for(Duration::from_secs(30), || {
            last = self
                .addrs()
                .iter()
                .map(|a| (stat_text(a, "table_digest"), stat_text(a, "entries")))
                .collect::<Vec<_>>();
            let first = last.first()?.clone();
            let all_same = first.0.is_some() && last.iter().all(|d| *d == first);
            all_same.then(|| (first.0.unwrap_or_default(), first.1.unwrap_or_default()))
        });
        same.ok_or_else(|| {
            format!(
                "members did not converge: {last:?}; roles {:?}",
                self.roles()
            )
        })
    }

    /// Every running member's table, sorted.
    pub fn tables(&self) -> Vec<(String, Option<Table>)> {
        self.members
            .iter()
            .flatten()
            .map(|p| (p.addr(), table_of(&p.addr())))
            .collect()
    }

    /// Waits until every running member holds the same table; returns it.
    pub fn converged_table(&self) -> Table {
        let mut last = Vec::new();
        let same = wait_for(Duration::from_secs(20), || {
            last = self.tables();
            let first = last.first()?.1.as_ref()?;
            last.iter()
                .all(|(_, t)| t.as_ref() == Some(first))
                .then(|| first.clone())
        });
        match same {
            Some(t) => t,
            None => {
                for (addr, t) in &last {
                    eprintln!("{addr}: {:?} entries", t.as_ref().map(|t| t.len()));
                }
                panic!(
                    "members did not converge to one table; roles {:?}",
                    self.roles()
                );
            }
        }
    }
}

/// A numeric STATS field of the server at `addr` (panics if it has none).
/// Waits until member `p` has registered in ZooKeeper (panics with its log
/// if it has not within 10 s).
pub fn wait_registered(p: &ServerProc) {
    let registered = wait_for(Duration::from_secs(10), || {
        stat_text(&p.addr(), "node").filter(|n| !n.is_empty())
    });
    assert!(
        registered.is_some(),
        "member did not register:\n{}",
        p.log_text()
    );
}

pub fn stat_u64(addr: &str, name: &str) -> u64 {
    stat_text(addr, name)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{addr} has no STATS {name}"))
}

/// The error code and redirect of a reply that must be an ERROR.
pub fn refusal<T: std::fmt::Debug>(
    r: Result<T, chaintable::client::ClientError>,
) -> (Option<chaintable::wire::ErrorCode>, String) {
    match r {
        Err(chaintable::client::ClientError::Server(e)) => (e.error_code(), e.redirect),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

pub fn stat_text(addr: &str, name: &str) -> Option<String> {
    let mut c = Client::connect_with(addr, super::quick_opts()).ok()?;
    let s = c.stats().ok()?;
    s.get_text(name)
        .map(str::to_string)
        .or_else(|| s.get_count(name).map(|n| n.to_string()))
}

/// A member's table, or `None` while it cannot answer (e.g. its lease on
/// the coordination session is being renewed after a ZooKeeper restart).
pub fn table_of(addr: &str) -> Option<Table> {
    let mut c = Client::connect_with(addr, super::quick_opts()).ok()?;
    let entries = c.table().ok()?;
    Some(
        entries
            .into_iter()
            .map(|e| (e.key.into_bytes(), (e.version, e.value)))
            .collect(),
    )
}

/// What one write attempt came to.
#[derive(Debug, Clone)]
pub enum Fate {
    Acked { op_id: u64 },
    Unknown,
    Failed,
}

/// One write: its number, its fate, when it was sent and when it ended.
pub type Record = (u64, Fate, Instant, Instant);

/// A thread writing `key{i % keys}` = `i` synchronously through the chain
/// client, recording every write's fate, until stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    pub log: Arc<Mutex<Vec<Record>>>,
    thread: Option<JoinHandle<ChainClient>>,
    keys: u64,
}

impl Writer {
    pub fn start(chain: &Chain, keys: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut client = chain.client();
        let (s, l) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                let key = Key::new(format!("key{}", i % keys)).unwrap();
                let invoked = Instant::now();
                let body = Body::Put {
                    key,
                    value: i.to_string().into_bytes(),
                    mode: WriteMode::Sync,
                };
                let fate = match client.call(body) {
                    Ok((Body::PutOk(w), _)) => Fate::Acked { op_id: w.op_id },
                    Ok(_) => Fate::Failed,
                    Err(e) if e.retry() == Retry::OutcomeUnknown => Fate::Unknown,
                    Err(ClientError::Server(_)) | Err(_) => Fate::Failed,
                };
                l.lock().unwrap().push((i, fate, invoked, Instant::now()));
                i += 1;
            }
            client
        });
        Writer {
            stop,
            log,
            thread: Some(thread),
            keys,
        }
    }

    pub fn acked_count(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, f, _, _)| matches!(f, Fate::Acked { .. }))
            .count()
    }

    /// Waits until `n` more writes have been acknowledged.
    pub fn wait_acked(&self, more: usize) {
        let target = self.acked_count() + more;
        let ok = wait_for(Duration::from_secs(30), || {
            (self.acked_count() >= target).then_some(())
        });
        assert!(
            ok.is_some(),
            "writes stalled at {} acked",
            self.acked_count()
        );
    }

    pub fn stop(mut self) -> Vec<Record> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread").close();
        }
        let log = self.log.lock().unwrap().clone();
        log
    }

    /// Checks a final table against the writer's log: for every key, the
    /// value is its last acknowledged write or a later write whose outcome
    /// is unknown; acknowledged op ids increase with the write order.
    pub fn check(log: &[Record], keys: u64, table: &Table) {
        let mut last_op = 0;
        for (i, fate, _, _) in log {
            if let Fate::Acked { op_id } = fate {
                assert!(
                    *op_id > last_op,
                    "write {i}: op id {op_id} not after {last_op}"
                );
                last_op = *op_id;
            }
        }
        for k in 0..keys {
            let key = format!("key{k}").into_bytes();
            let writes: Vec<&Record> = log.iter().filter(|(i, _, _, _)| i % keys == k).collect();
            let last_acked = writes
                .iter()
                .rev()
                .find(|(_, f, _, _)| matches!(f, Fate::Acked { .. }));
            let got: Option<u64> = table
                .get(&key)
                .map(|(_, v)| String::from_utf8_lossy(v).parse().unwrap());
            let Some((acked_i, _, _, _)) = last_acked else {
                continue;
            };
            let got = got.unwrap_or_else(|| {
                panic!("key{k}: acknowledged write {acked_i} lost (key absent)")
            });
            if got == *acked_i {
                continue;
            }
            let later_unknown = writes
                .iter()
                .any(|(i, f, _, _)| *i == got && *i > *acked_i && matches!(f, Fate::Unknown));
            assert!(
                later_unknown,
                "key{k}: holds write {got}, but the last acknowledged write is {acked_i}"
            );
        }
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        if let Some(root) = self.data_root.take() {
            for m in &mut self.members {
                if let Some(mut p) = m.take() {
                    p.kill9();
                }
            }
            let _ = std::fs::remove_dir_all(root);
        }
    }
}
