//! A cluster of chains (spec §8) of real `table-server` processes over one
//! real ZooKeeper: chains under `/cluster/<name>`, the shard map in the
//! data of `/cluster`.

use super::chain::{stat_text, ONE_AT_A_TIME};
use super::zk::ZooKeeper;
use super::{wait_for, ServerProc};
use chaintable::client::cluster::ClusterClient;
use chaintable::client::Options;
use std::time::Duration;

pub const CLUSTER_ROOT: &str = "/cluster";

pub struct Cluster {
    pub zk: ZooKeeper,
    _turn: std::sync::MutexGuard<'static, ()>,
    /// Each chain's name and members, head first (`None` once killed).
    pub chains: Vec<(String, Vec<Option<ServerProc>>)>,
}

impl Cluster {
    /// ZooKeeper and `per_chain` members for each chain named, the chains'
    /// members started in order (so the first started is the head). No map
    /// is written: see [`Cluster::create_map`].
    pub fn start(names: &[&str], per_chain: usize) -> Cluster {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let mut cluster = Cluster {
            zk: ZooKeeper::start(),
            _turn: turn,
            chains: names.iter().map(|n| (n.to_string(), Vec::new())).collect(),
        };
        for c in 0..names.len() {
            for _ in 0..per_chain {
                cluster.add_member(c);
            }
        }
        cluster
    }

    /// Starts one more member of chain `c`; returns its index there.
    pub fn add_member(&mut self, c: usize) -> usize {
        let zk = self.zk.addr();
        let secret = super::cluster_secret_file();
        let chain_root = format!("{CLUSTER_ROOT}/{}", self.chains[c].0);
        let args = [
            zk.as_str(),
            "--session-timeout-ms",
            "1000",
            "--cluster-secret-file",
            &secret,
            "--cluster-root",
            CLUSTER_ROOT,
            "--chain-root",
            &chain_root,
            "--unsafe-reads-anywhere",
        ];
        let p = ServerProc::start(4, &args);
        super::chain::wait_registered(&p);
        self.chains[c].1.push(Some(p));
        self.chains[c].1.len() - 1
    }

    /// Member `i` of chain `c`.
    pub fn member(&self, c: usize, i: usize) -> &ServerProc {
        self.chains[c].1[i].as_ref().expect("member is running")
    }

    /// The running members of chain `c`, head first.
    pub fn running(&self, c: usize) -> Vec<&ServerProc> {
        self.chains[c].1.iter().flatten().collect()
    }

    pub fn kill9(&mut self, c: usize, i: usize) {
        if let Some(mut p) = self.chains[c].1[i].take() {
            p.kill9();
        }
    }

    /// Writes the map with `table-client cluster create` (signed with the
    /// cluster secret) and waits until every member has read it.
    pub fn create_map(&self, chains: &str, boundaries: &[&str]) -> String {
        let zk = self.zk.addr();
        let secret = super::cluster_secret_file();
        let mut args = vec![
            zk.as_str(),
            "-z",
            "--cluster-root",
            CLUSTER_ROOT,
            "--cluster-secret-file",
            &secret,
            "cluster",
            "create",
            chains,
        ];
        args.extend(boundaries);
        let out = super::table_client(&args, &[]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "cluster create failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for c in 0..self.chains.len() {
            for m in self.running(c) {
                let read = wait_for(Duration::from_secs(10), || {
                    (stat_text(&m.addr(), "shard_map_version")? != "0").then_some(())
                });
                assert!(
                    read.is_some(),
                    "{} never read the map:\n{}",
                    m.addr(),
                    m.log_text()
                );
            }
        }
        text
    }

    pub fn client(&self) -> ClusterClient {
        let opts = Options {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            ..Options::default()
        };
        let mut c =
            ClusterClient::connect(&self.zk.addr(), CLUSTER_ROOT, opts).expect("cluster client");
        c.retry_for = Duration::from_secs(15);
        c
    }
}
