//! Durable chains (`--data-dir` on every member, `--fsync always`): after
//! every member is killed at once (-9) and restarted from its disk, the
//! chain comes back with every acknowledged write, and the members agree.
//! A member whose disk is stale (it left the chain before the others
//! died) may not found the chain: it steps aside and joins behind a member
//! whose log reaches the chain's durable floor.

#![cfg(feature = "testing")]

mod common;

use chaintable::client::chain::ChainClient;
use chaintable::client::{ClientError, Options};
use chaintable::serialize::Key;
use chaintable::wire::{Body, Retry, WriteMode};
use common::chain::{stat_text, table_of, Fate, Record, Writer};
use common::zk::ZooKeeper;
use common::{free_port, wait_for, ServerProc};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const KEYS: u64 = 20;

/// Three members with a data directory each, on fixed ports, over one
/// ZooKeeper, so that each can be killed and started again on its disk.
struct DurableChain {
    zk: ZooKeeper,
    ports: Vec<u16>,
    dirs: Vec<PathBuf>,
    members: Vec<Option<ServerProc>>,
}

impl DurableChain {
    fn new(n: usize, tag: &str) -> DurableChain {
        let root =
            std::env::temp_dir().join(format!("chaintable-durable-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dirs: Vec<PathBuf> = (0..n).map(|i| root.join(format!("m{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        DurableChain {
            zk: ZooKeeper::start(),
            ports: (0..n).map(|_| free_port()).collect(),
            dirs,
            members: (0..n).map(|_| None).collect(),
        }
    }

    /// Starts member `i` on its port and disk, and waits until it has
    /// registered.
    fn start(&mut self, i: usize) {
        let zk = self.zk.addr();
        let secret = common::cluster_secret_file();
        let dir = self.dirs[i].to_string_lossy().to_string();
        let args = [
            zk.as_str(),
            "--session-timeout-ms",
            "1000",
            "--cluster-secret-file",
            &secret,
            "--data-dir",
            &dir,
            "--fsync",
            "always",
            // Only so that the test can read every member's table.
            "--unsafe-reads-anywhere",
        ];
        let p = ServerProc::start_on(self.ports[i], 4, &args);
        let registered = wait_for(Duration::from_secs(10), || {
            stat_text(&p.addr(), "node").filter(|n| !n.is_empty())
        });
        assert!(
            registered.is_some(),
            "member {i} did not register:\n{}",
            p.log_text()
        );
        self.members[i] = Some(p);
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].take() {
            p.kill9();
        }
    }

    fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].is_some())
            .collect()
    }

    /// Waits until the running members form one settled chain.
    fn wait_settled(&self) {
        let n = self.running().len();
        let ok = wait_for(Duration::from_secs(40), || {
            let roles: Vec<String> = self
                .running()
                .iter()
                .filter_map(|i| stat_text(&self.addr(*i), "role"))
                .collect();
            let heads = roles
                .iter()
                .filter(|r| *r == "head" || *r == "solo")
                .count();
            let tails = roles
                .iter()
                .filter(|r| *r == "tail" || *r == "solo")
                .count();
            let joining = roles.iter().filter(|r| *r == "joining").count();
            (roles.len() == n && heads == 1 && tails == 1 && joining == 0).then_some(())
        });
        let roles: Vec<Option<String>> = self
            .running()
            .iter()
            .map(|i| stat_text(&self.addr(*i), "role"))
            .collect();
        assert!(
            ok.is_some(),
            "the chain did not settle: roles {roles:?}\n{}",
            self.logs()
        );
    }

    /// The table every running member holds, once they all agree.
    fn converged_table(&self) -> common::chain::Table {
        let mut last = Vec::new();
        let agreed = wait_for(Duration::from_secs(30), || {
            last = self
                .running()
                .iter()
                .map(|i| table_of(&self.addr(*i)))
                .collect();
            let first = last.first()?.clone()?;
            last.iter()
                .all(|t| t.as_ref() == Some(&first))
                .then_some(first)
        });
        agreed.unwrap_or_else(|| {
            let sizes: Vec<Option<usize>> =
                last.iter().map(|t| t.as_ref().map(|t| t.len())).collect();
            panic!("members disagree: entries {sizes:?}\n{}", self.logs())
        })
    }

    fn logs(&self) -> String {
        self.members
            .iter()
            .flatten()
            .map(|p| format!("--- {}\n{}", p.addr(), tail(&p.log_text(), 30)))
            .collect()
    }

    fn client(&self) -> ChainClient {
        let opts = Options {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            ..Options::default()
        };
        let mut c = ChainClient::connect(&self.zk.addr(), "/chain", opts).expect("chain client");
        c.retry_for = Duration::from_secs(20);
        c
    }
}

impl Drop for DurableChain {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
        if let Some(root) = self.dirs.first().and_then(|d| d.parent()) {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Writes `key{i % KEYS}` = `i` through the chain until stopped,
/// recording each write's fate (as `common::chain::Writer` does).
struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Record>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(mut client: ChainClient) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                let invoked = Instant::now();
                let body = Body::Put {
                    key: Key::new(format!("key{}", i % KEYS)).unwrap(),
                    value: i.to_string().into_bytes(),
                    mode: WriteMode::Sync,
                };
                let fate = match client.call(body) {
                    Ok((Body::PutOk(w), _)) => Fate::Acked { op_id: w.op_id },
                    Err(e) if e.retry() == Retry::OutcomeUnknown => Fate::Unknown,
                    Ok(_) | Err(ClientError::Server(_)) | Err(_) => Fate::Failed,
                };
                l.lock().unwrap().push((i, fate, invoked, Instant::now()));
                i += 1;
            }
            client.close();
        });
        Load {
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> usize {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|r| matches!(r.1, Fate::Acked { .. }))
            .count()
    }

    fn wait_acked(&self, more: usize) {
        let target = self.acked() + more;
        let ok = wait_for(Duration::from_secs(30), || {
            (self.acked() >= target).then_some(())
        });
        assert!(
            ok.is_some(),
            "writes stalled at {} acknowledged",
            self.acked()
        );
    }

    fn stop(mut self) -> Vec<Record> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let log = self.log.lock().unwrap().clone();
        log
    }
}

#[test]
fn a_chain_killed_all_at_once_comes_back_from_its_disks_with_every_acknowledged_write() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut chain = DurableChain::new(3, "all");
    for i in 0..3 {
        chain.start(i);
    }
    chain.wait_settled();
    let load = Load::start(chain.client());
    load.wait_acked(400);
    for i in 0..3 {
        chain.kill9(i);
    }
    let log = load.stop();
    let acked = log
        .iter()
        .filter(|r| matches!(r.1, Fate::Acked { .. }))
        .count();
    // The old tail first: any member may found the chain, as each log
    // reaches the floor the tail published before acknowledging.
    for i in [2, 1, 0] {
        chain.start(i);
    }
    chain.wait_settled();
    let table = chain.converged_table();
    Writer::check(&log, KEYS, &table);
    let floor: u64 = stat_text(&chain.addr(0), "durable_floor")
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("{acked} writes acknowledged before the outage; durable floor now {floor}");
    // And the chain takes writes again.
    let mut c = chain.client();
    let (reply, _) = c
        .call(Body::Put {
            key: Key::new("after").unwrap(),
            value: b"x".to_vec(),
            mode: WriteMode::Sync,
        })
        .unwrap();
    assert!(matches!(reply, Body::PutOk(_)), "{reply:?}");
    c.close();
}

#[test]
fn a_member_with_a_stale_disk_may_not_found_the_chain() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut chain = DurableChain::new(3, "stale");
    for i in 0..3 {
        chain.start(i);
    }
    chain.wait_settled();
    let load = Load::start(chain.client());
    load.wait_acked(200);
    // The tail leaves; the chain goes on without it, past its log.
    chain.kill9(2);
    load.wait_acked(300);
    for i in [0, 1] {
        chain.kill9(i);
    }
    let log = load.stop();
    // The stale member comes back first: it must not found the chain.
    chain.start(2);
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        stat_text(&chain.addr(2), "role").as_deref(),
        Some("joining"),
        "a member whose log stops before the floor serves nothing:\n{}",
        chain.logs()
    );
    chain.start(0);
    chain.start(1);
    chain.wait_settled();
    let table = chain.converged_table();
    Writer::check(&log, KEYS, &table);
    let stale_log = chain.members[2].as_ref().unwrap().log_text();
    assert!(
        stale_log.contains("stepping aside"),
        "{}",
        tail(&stale_log, 30)
    );
}

/// A member killed (-9) while the chain goes on, restarted on its disk:
/// its new predecessor sends only the updates after what its log holds
/// (a delta), not the table, and it ends with the same table as the rest.
#[test]
fn a_member_restarted_on_its_disk_catches_up_by_delta() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut chain = DurableChain::new(3, "delta");
    for i in 0..3 {
        chain.start(i);
    }
    chain.wait_settled();
    // A table much larger than what the member will miss.
    let mut c = chain.client();
    let value = vec![b'v'; 1000];
    for i in 0..2000 {
        let body = Body::Put {
            key: Key::new(format!("bulk{i}")).unwrap(),
            value: value.clone(),
            mode: WriteMode::Sync,
        };
        c.call(body).unwrap();
    }
    c.close();
    let load = Load::start(chain.client());
    load.wait_acked(100);
    chain.kill9(1);
    load.wait_acked(200);
    chain.start(1); // registers last: its predecessor is member 2
    chain.wait_settled();
    load.wait_acked(100);
    let log = load.stop();
    let table = chain.converged_table();
    Writer::check(&log, KEYS, &table);
    assert!(table.len() >= 2000);
    let count = |name: &str| -> u64 {
        stat_text(&chain.addr(2), name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in member 2's STATS"))
    };
    let (full, delta, updates) = (
        count("transfers_full"),
        count("transfers_delta"),
        count("transfer_delta_updates"),
    );
    assert_eq!(
        (full, delta),
        (0, 1),
        "one delta, no snapshot, to the restarted member"
    );
    assert!(
        (200..2000).contains(&updates),
        "the delta held the {updates} updates the member missed, not the table's 2,000 entries"
    );
}
