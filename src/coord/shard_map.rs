//! Reading and writing the cluster's shard map (spec §5.8): the data of
//! the cluster root, watched so that members and clients hear of a new
//! version at once.

use super::*;
use crate::cluster::ShardMap;

/// Reads the map at `cluster` and arms a watch on it (on its creation,
/// if the root does not exist yet). A map that does not decode (or, with a
/// secret, is not signed by a member) is reported as an error and not
/// used: whoever wrote it cannot move keys.
pub(super) async fn read_map(
    client: &zk::Client,
    cfg: &CoordConfig,
    cluster: &str,
) -> Result<(Option<ShardMap>, zk::OneshotWatcher), zk::Error> {
    match client.get_and_watch_data(cluster).await {
        Ok((data, _, watcher)) if data.is_empty() => Ok((None, watcher)),
        Ok((data, _, watcher)) => match ShardMap::decode(cfg.real_secret(), cluster, &data) {
            Ok(map) => Ok((Some(map), watcher)),
            Err(e) => {
                tracing::error!(cluster, error = %e, "ignoring the cluster root's shard map");
                Ok((None, watcher))
            }
        },
        Err(zk::Error::NoNode) => {
            let (stat, watcher) = client.check_and_watch_stat(cluster).await?;
            if stat.is_some() {
                // Created between the two requests: the watch fires at the
                // next change only, so read it now.
                return Box::pin(read_map(client, cfg, cluster)).await;
            }
            Ok((None, watcher))
        }
        Err(e) => Err(e),
    }
}

/// Writes `map` as the cluster's map: creates the cluster root (with the
/// members-only ACL when there is a secret) if needed, and replaces a map
/// only by a higher version (a versioned `setData`, so two writers cannot
/// both win). Blocking: runs on its own small executor.
///
/// # Errors
///
/// Why the map was not written: ZooKeeper unreachable or refusing, or a
/// map of the same or a higher version already there.
pub fn write_map(
    zookeeper: &str,
    cluster: &str,
    secret: Option<&Secret>,
    map: &ShardMap,
) -> Result<(), String> {
    let secret = secret.filter(|s| !s.is_insecure());
    smol::block_on(async {
        let mut connector = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(4))
            .with_connection_timeout(Duration::from_secs(4));
        if let Some(s) = secret {
            connector = connector.with_auth("digest", &zk_auth::digest_credentials(s));
        }
        let client = connector
            .connect(zookeeper)
            .await
            .map_err(|e| format!("ZooKeeper {zookeeper}: {e}"))?;
        // Creates the path, and with a secret takes the root back from
        // whoever may have made it world-writable first.
        ensure_root(&client, cluster, secret.is_some())
            .await
            .map_err(|e| format!("cannot create or lock down {cluster}: {e}"))?;
        let (old, stat) = client.get_data(cluster).await.map_err(|e| e.to_string())?;
        match ShardMap::decode(secret, cluster, &old) {
            Ok(held) if held.version >= map.version => {
                return Err(format!(
                    "{cluster} already holds map version {}",
                    held.version
                ));
            }
            Ok(_) => {}
            // Not a map members would use (absent, garbage, or unsigned):
            // nothing is routed by it, so it is replaced.
            Err(e) if !old.is_empty() => {
                tracing::warn!(cluster, error = %e, "replacing an invalid shard map");
            }
            Err(_) => {}
        }
        let data = map.encode(secret, cluster);
        client
            .set_data(cluster, &data, Some(stat.version))
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot write the map to {cluster}: {e}"))
    })
}
