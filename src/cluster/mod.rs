//! A cluster of chains (spec §5.8): a shard map in ZooKeeper gives each
//! chain ordered ranges of keys; a member admits only requests whose keys
//! its chain owns, and clients route each key to its chain.

pub mod map;

pub use map::{MapError, Range, ShardMap};

use crate::replica::Refusal;
use crate::serialize::Key;
use crate::wire::{Body, ErrorCode};

/// What a WRONG_SHARD's redirect field holds: `map:<version>`, the map
/// version the member routed by (spec §5.8).
#[must_use]
pub fn wrong_shard_redirect(version: u64) -> String {
    format!("map:{version}")
}

/// The map version in a WRONG_SHARD's redirect (`None` if malformed).
#[must_use]
pub fn parse_wrong_shard_redirect(redirect: &str) -> Option<u64> {
    redirect.strip_prefix("map:")?.parse().ok()
}

/// Calls `f` on every key a request names (none for whole-table requests,
/// STATS, VERIFY, BACKUP, WATCH) until it returns `false`; says whether
/// it was never stopped.
pub fn all_keys(body: &Body, mut f: impl FnMut(&Key) -> bool) -> bool {
    match body {
        Body::Put { key, .. }
        | Body::Del { key, .. }
        | Body::PutIf { key, .. }
        | Body::DelIf { key, .. }
        | Body::Get { key }
        | Body::GetAtLeast { key, .. } => f(key),
        Body::MGet { keys } => keys.iter().all(f),
        Body::MWrite { ops } => ops.iter().all(|op| f(op.key())),
        _ => true,
    }
}

/// A member's place in a cluster: its chain's name and the map as last
/// read from ZooKeeper.
#[derive(Debug, Clone)]
pub struct Shard {
    chain: String,
    map: Option<ShardMap>,
}

impl Shard {
    /// A member of chain `chain` that has not read the map yet.
    #[must_use]
    pub fn new(chain: String) -> Shard {
        Shard { chain, map: None }
    }

    /// This member's chain name.
    #[must_use]
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The map as last read, if any.
    #[must_use]
    pub fn map(&self) -> Option<&ShardMap> {
        self.map.as_ref()
    }

    /// A map read from ZooKeeper. An older version than the one held is
    /// ignored: versions only grow, and a stale read must not undo a move.
    pub fn update(&mut self, map: ShardMap) {
        if self.map.as_ref().is_none_or(|m| m.version <= map.version) {
            self.map = Some(map);
        }
    }

    /// Whether this member may take `body`: every key it names is in a
    /// range of this chain. UNAVAILABLE before the map is read (a member
    /// that does not know its ranges admits nothing keyed); WRONG_SHARD,
    /// with the map version, for a key another chain owns.
    ///
    /// # Errors
    ///
    /// The [`Refusal`] to answer with.
    pub fn check(&self, body: &Body) -> Result<(), Refusal> {
        let Some(map) = &self.map else {
            // (`all_keys` stops, false, at the first key there is.)
            let names_keys = matches!(body, Body::Range { .. }) || !all_keys(body, |_| false);
            if !names_keys {
                return Ok(());
            }
            return Err(Refusal {
                code: ErrorCode::Unavailable,
                why: "this member has not read the cluster's shard map yet",
                redirect: None,
            });
        };
        let owned = match body {
            // A scan must lie within one range of this chain (a client
            // splits it at every range boundary).
            Body::Range { from, to, .. } => {
                let (i, range) = map.range_of(from);
                let ends_within = map
                    .end_of(i)
                    .is_none_or(|end| !to.is_empty() && to.as_slice() <= end);
                range.chain == self.chain && ends_within
            }
            _ => all_keys(body, |k| map.chain_of(k.as_bytes()) == self.chain),
        };
        if owned {
            return Ok(());
        }
        Err(Refusal {
            code: ErrorCode::WrongShard,
            why: "a key is outside this chain's ranges: refresh the shard map",
            redirect: Some(wrong_shard_redirect(map.version)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{BatchOp, WriteMode};

    fn key(s: &str) -> Key {
        Key::new(s.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn a_member_admits_only_its_chains_keys_and_names_the_map_version() {
        let chains = ["a", "b"].map(String::from);
        let map = ShardMap::split(7, &chains, &[b"m".to_vec()]).unwrap();
        let mut shard = Shard::new("b".into());
        let get = |k: &str| Body::Get { key: key(k) };
        assert_eq!(
            shard.check(&get("x")).unwrap_err().code,
            ErrorCode::Unavailable
        );
        assert!(
            shard.check(&Body::Size).is_ok(),
            "whole-table requests need no map"
        );
        shard.update(map);
        assert!(shard.check(&get("x")).is_ok());
        let wrong = shard.check(&get("a")).unwrap_err();
        assert_eq!(wrong.code, ErrorCode::WrongShard);
        assert_eq!(
            wrong
                .redirect
                .as_deref()
                .and_then(parse_wrong_shard_redirect),
            Some(7)
        );
        let put = |k: &str| Body::Put {
            key: key(k),
            value: vec![],
            mode: WriteMode::Sync,
        };
        assert!(shard.check(&put("zz")).is_ok());
        assert!(shard.check(&put("b")).is_err());
        let batch = |ks: &[&str]| Body::MWrite {
            ops: ks.iter().map(|k| BatchOp::Del { key: key(k) }).collect(),
        };
        assert!(shard.check(&batch(&["n", "q"])).is_ok());
        assert!(
            shard.check(&batch(&["n", "a"])).is_err(),
            "one foreign key refuses the batch"
        );
        assert!(shard
            .check(&Body::MGet {
                keys: vec![key("p"), key("c")]
            })
            .is_err());
        // An older map read late does not replace a newer one.
        shard.update(ShardMap::split(3, &["b".to_string()], &[]).unwrap());
        assert!(shard.check(&get("a")).is_err());
    }
}
