//! A client for a cluster of chains (spec §5.8): reads the shard map from
//! ZooKeeper, sends each key to the chain that owns it (through a
//! [`ChainClient`] per chain, so CRAQ reads, floors and failover work as
//! on one chain), splits what names keys of several chains and merges the
//! answers, and re-routes when a member answers WRONG_SHARD.

use super::chain::ChainClient;
use super::{ClientError, Options};
use crate::cluster::{all_keys, parse_wrong_shard_redirect, ShardMap};
use crate::coord::{CoordConfig, CoordEvent, Coordinator};
use crate::serialize::Key;
use crate::wire::{Body, ErrorCode};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Pause before routing again when a member's map is older than ours (it
/// will read the new one from its watch).
const REROUTE_PAUSE: Duration = Duration::from_millis(50);

pub struct ClusterClient {
    coord: Coordinator,
    zookeeper: String,
    cluster: String,
    map: Option<ShardMap>,
    chains: BTreeMap<String, ChainClient>,
    opts: Options,
    /// How long one call keeps re-routing.
    pub retry_for: Duration,
}

impl ClusterClient {
    /// Connects to ZooKeeper at `zookeeper` and waits for the shard map at
    /// `cluster`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when ZooKeeper cannot be reached or holds no valid
    /// map within the connect timeout.
    pub fn connect(
        zookeeper: &str,
        cluster: &str,
        opts: Options,
    ) -> Result<ClusterClient, ClientError> {
        let cfg = CoordConfig {
            secret: None,
            zookeeper: zookeeper.to_string(),
            // The cluster root has no member nodes: only its map is read.
            root: cluster.to_string(),
            advertise: None,
            session_timeout: Duration::from_secs(4),
            cluster: Some(cluster.to_string()),
        };
        let coord = Coordinator::start(cfg, || {}).map_err(|source| ClientError::Connect {
            addr: zookeeper.to_string(),
            source,
        })?;
        let mut c = ClusterClient {
            coord,
            zookeeper: zookeeper.to_string(),
            cluster: cluster.to_string(),
            map: None,
            chains: BTreeMap::new(),
            retry_for: opts.read_timeout,
            opts,
        };
        let deadline = Instant::now() + c.opts.connect_timeout;
        if !c.wait_for_map(0, deadline) {
            return Err(ClientError::NoShardMap {
                cluster: cluster.to_string(),
            });
        }
        Ok(c)
    }

    /// The map as last read.
    pub fn map(&mut self) -> Option<&ShardMap> {
        self.refresh();
        self.map.as_ref()
    }

    fn on_event(&mut self, e: CoordEvent) {
        if let CoordEvent::ShardMap(m) = e {
            if self.map.as_ref().is_none_or(|old| old.version < m.version) {
                self.map = Some(m);
            }
        }
    }

    fn refresh(&mut self) {
        while let Ok(e) = self.coord.events.try_recv() {
            self.on_event(e);
        }
    }

    /// Waits until the map's version is above `above`; false at `deadline`.
    fn wait_for_map(&mut self, above: u64, deadline: Instant) -> bool {
        self.refresh();
        while self.map.as_ref().is_none_or(|m| m.version <= above) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Ok(e) = self.coord.events.recv_timeout(left) {
                self.on_event(e);
            }
        }
        true
    }

    fn version(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.version)
    }

    /// The map routing is done by (connect waited for one, so this fails
    /// only if that was skipped).
    fn current_map(&self) -> Result<&ShardMap, ClientError> {
        self.map.as_ref().ok_or_else(|| ClientError::NoShardMap {
            cluster: self.cluster.clone(),
        })
    }

    /// The client for chain `name`, connected on first use.
    ///
    /// # Errors
    ///
    /// As [`ChainClient::connect`].
    pub fn chain(&mut self, name: &str) -> Result<&mut ChainClient, ClientError> {
        if !self.chains.contains_key(name) {
            let root = format!("{}/{name}", self.cluster.trim_end_matches('/'));
            let c = ChainClient::connect(&self.zookeeper, &root, self.opts.clone())?;
            self.chains.insert(name.to_string(), c);
        }
        self.chains
            .get_mut(name)
            .ok_or_else(|| ClientError::Protocol("no chain client".into()))
    }

    /// Every chain the map names, in the order of its first range.
    #[must_use]
    pub fn chain_names(&self) -> Vec<String> {
        self.map
            .as_ref()
            .map(|m| m.chains().into_iter().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Sends `body` where its keys live; returns the reply and the server
    /// that answered ("cluster" for a merged answer). Keyed requests go to
    /// their chain; MGET is split by chain and merged; SIZE, GETKEYS and
    /// GETTABLE ask every chain and merge. An MWRITE must name keys of
    /// one chain: a batch is atomic only within a chain.
    ///
    /// # Errors
    ///
    /// [`ClientError`]: as [`ChainClient::call`]; `CrossShard` for an
    /// MWRITE across chains; `Protocol` for a request that names no chain
    /// (VERIFY, STATS, BACKUP: use [`ClusterClient::chain`]).
    pub fn call(&mut self, body: Body) -> Result<(Body, String), ClientError> {
        match body {
            Body::MGet { keys } => self.mget(keys),
            Body::Size | Body::GetKeys | Body::GetTable => self.whole(&body),
            Body::Range { from, to, limit } => self.range(from, &to, limit),
            Body::Verify { .. } | Body::Stats | Body::Backup | Body::Watch { .. } => {
                Err(ClientError::Protocol(format!(
                    "opcode 0x{:02x} (VERIFY, STATS, BACKUP, WATCH) is per chain in a cluster: ask one chain",
                    body.opcode()
                )))
            }
            other => self.keyed(other),
        }
    }

    /// A request whose keys all live on one chain, re-routed on
    /// WRONG_SHARD until `retry_for` runs out.
    fn keyed(&mut self, body: Body) -> Result<(Body, String), ClientError> {
        let deadline = Instant::now() + self.retry_for;
        loop {
            self.refresh();
            let chain = self.chain_for(&body)?;
            let result = self.chain(&chain)?.call(body.clone());
            let Err(err) = &result else {
                return result;
            };
            if err.code() != Some(ErrorCode::WrongShard) || Instant::now() >= deadline {
                return result;
            }
            let theirs = match err {
                ClientError::Server(e) => parse_wrong_shard_redirect(&e.redirect),
                _ => None,
            };
            let ours = self.version();
            // Wait for the member's map if it is newer than ours, else
            // for any newer one (ours and the member's disagree).
            let above = match theirs {
                Some(v) if v > ours => v - 1,
                _ => ours,
            };
            if theirs.is_some_and(|v| v < ours) {
                // The member has not read our map yet.
                std::thread::sleep(REROUTE_PAUSE);
            } else if !self.wait_for_map(above, deadline) {
                return result;
            }
        }
    }

    /// The one chain every key of `body` lives on.
    fn chain_for(&self, body: &Body) -> Result<String, ClientError> {
        let map = self.current_map()?;
        if let Body::Range { from, .. } = body {
            return Ok(map.chain_of(from).to_string());
        }
        let mut chain: Option<&str> = None;
        let one = all_keys(body, |k| {
            let c = map.chain_of(k.as_bytes());
            chain.get_or_insert(c) == &c
        });
        match (one, chain) {
            (true, Some(c)) => Ok(c.to_string()),
            (true, None) => Err(ClientError::Protocol("the request names no key".into())),
            (false, _) => Err(ClientError::CrossShard(
                "the batch names keys of more than one chain, and a batch is atomic only within a chain: split it by chain (ClusterClient::map)".into(),
            )),
        }
    }

    /// MGET split by chain, answers put back in the order asked.
    fn mget(&mut self, keys: Vec<Key>) -> Result<(Body, String), ClientError> {
        self.refresh();
        let map = self.current_map()?;
        let mut by_chain: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            let chain = map.chain_of(k.as_bytes()).to_string();
            by_chain.entry(chain).or_default().push(i);
        }
        let mut values = vec![None; keys.len()];
        for at in by_chain.into_values() {
            let part: Vec<Key> = at.iter().map(|&i| keys[i].clone()).collect();
            match self.keyed(Body::MGet { keys: part })? {
                (Body::MGetOk(found), _) if found.len() == at.len() => {
                    for (i, v) in at.into_iter().zip(found) {
                        values[i] = v;
                    }
                }
                (other, addr) => return Ok((other, addr)),
            }
        }
        Ok((Body::MGetOk(values), "cluster".into()))
    }

    /// RANGE across the map: one RANGE per range of the map the interval
    /// crosses, each within that range (as members require), in key
    /// order, until `limit` entries. The next page starts where a chain's
    /// page stopped, or at the next range when the limit ended a piece.
    fn range(
        &mut self,
        from: Vec<u8>,
        to: &[u8],
        limit: u32,
    ) -> Result<(Body, String), ClientError> {
        self.refresh();
        let mut entries = Vec::new();
        let mut start = from;
        loop {
            // The end of the range holding `start`, in the map as it is now
            // (a piece re-routed on WRONG_SHARD is cut by the newer map).
            let end = {
                let map = self.current_map()?;
                map.end_of(map.range_of(&start).0).map(<[u8]>::to_vec)
            };
            let piece_to = match &end {
                Some(e) if to.is_empty() || e.as_slice() < to => e.clone(),
                _ => to.to_vec(),
            };
            let left = limit.saturating_sub(u32::try_from(entries.len()).unwrap_or(u32::MAX));
            let piece = Body::Range {
                from: start,
                to: piece_to,
                limit: left.max(1),
            };
            let (reply, addr) = self.keyed(piece)?;
            let Body::RangeOk { entries: got, next } = reply else {
                return Ok((reply, addr));
            };
            entries.extend(got);
            let next = match end {
                _ if !next.is_empty() => next,
                // The last range, or the interval ends within this one.
                None => break,
                Some(e) if !to.is_empty() && to <= e.as_slice() => break,
                Some(e) if entries.len() >= limit as usize => e,
                Some(e) => {
                    start = e;
                    continue;
                }
            };
            return Ok((Body::RangeOk { entries, next }, "cluster".into()));
        }
        Ok((
            Body::RangeOk {
                entries,
                next: Vec::new(),
            },
            "cluster".into(),
        ))
    }

    /// SIZE, GETKEYS or GETTABLE of every chain, merged (each chain's part
    /// is linearizable on its own; the whole is not one instant).
    fn whole(&mut self, body: &Body) -> Result<(Body, String), ClientError> {
        self.refresh();
        let mut merged = match body {
            Body::Size => Body::SizeOk { entries: 0 },
            Body::GetKeys => Body::Keys(Vec::new()),
            _ => Body::Entries(Vec::new()),
        };
        for name in self.chain_names() {
            let (reply, addr) = self.chain(&name)?.call(body.clone())?;
            match (&mut merged, reply) {
                (Body::SizeOk { entries }, Body::SizeOk { entries: n }) => *entries += n,
                (Body::Keys(all), Body::Keys(part)) => all.extend(part),
                (Body::Entries(all), Body::Entries(part)) => all.extend(part),
                (_, other) => return Ok((other, addr)),
            }
        }
        Ok((merged, "cluster".into()))
    }

    /// Stops the ZooKeeper watchers.
    pub fn close(self) {
        for (_, c) in self.chains {
            c.close();
        }
        self.coord.stop();
    }
}
