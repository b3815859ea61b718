//! Reading the members from ZooKeeper: which children count, in what
//! order, and how many are read.

use super::*;

/// Most children of the chain root read per listing: a bound on what a
/// flood of nodes (were ZooKeeper left open) could make us fetch.
pub const CHILDREN_MAX: usize = 1024;

/// Reads the members and arms a watch: ephemeral children only (a member
/// lives as long as its session), and signed ones when there is a secret.
pub(super) async fn list_members(
    client: &zk::Client,
    cfg: &CoordConfig,
) -> Result<(Vec<Member>, zk::OneshotWatcher), zk::Error> {
    let root = &cfg.root;
    let (mut children, watcher) = client.list_and_watch_children(root).await?;
    if children.len() > CHILDREN_MAX {
        tracing::warn!(
            children = children.len(),
            max = CHILDREN_MAX,
            "chain root has too many children; reading the first member-named ones"
        );
        // Member names (`node` + sequence) first, lowest sequence first, so
        // other children cannot push the real members out of the window.
        children.sort_by_key(|c| (!c.starts_with("node"), c.clone()));
        children.truncate(CHILDREN_MAX);
    }
    let mut raw = Vec::with_capacity(children.len());
    for child in children {
        let path = format!("{}/{}", root.trim_end_matches('/'), child);
        let (data, owner) = match client.get_data(&path).await {
            Ok((data, stat)) if stat.ephemeral_owner != 0 => (data, stat.ephemeral_owner),
            Ok(_) => {
                tracing::warn!(node = %child, "ignoring a persistent child of the chain root");
                continue;
            }
            Err(zk::Error::NoNode) => continue, // left between list and read
            Err(zk::Error::NoAuth) => {
                // A node we may not read is not a member (members make
                // theirs world-readable); it must not hide the others.
                tracing::warn!(node = %child, "ignoring an unreadable child of the chain root");
                continue;
            }
            Err(e) => return Err(e),
        };
        match verify_member(cfg.real_secret(), root, owner, &data) {
            Ok(addr) => raw.push((child, addr.into_bytes())),
            Err(why) => tracing::debug!(node = %child, why, "ignoring a member node"),
        }
    }
    Ok((order_members(raw), watcher))
}

/// Orders raw children by sequence number and parses their addresses
/// leniently (trailing NUL bytes and whitespace are dropped; children whose
/// name has no sequence number are ignored).
#[must_use]
pub fn order_members(raw: Vec<(String, Vec<u8>)>) -> Vec<Member> {
    let mut members: Vec<(u64, Member)> = raw
        .into_iter()
        .filter_map(|(name, data)| {
            let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
            let seq: u64 = digits.parse().ok()?;
            let addr = String::from_utf8_lossy(&data)
                .trim_end_matches(['\0', ' ', '\n', '\r'])
                .to_string();
            Some((seq, Member { name, addr }))
        })
        .collect();
    members.sort_by_key(|(seq, _)| *seq);
    members.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_ordered_by_sequence_and_nul_tolerant() {
        let raw = vec![
            ("node0000000010".to_string(), b"127.0.0.1:9003\0\0".to_vec()),
            ("node0000000002".to_string(), b"127.0.0.1:9001".to_vec()),
            ("junk".to_string(), b"x".to_vec()),
            ("node0000000007".to_string(), b"127.0.0.1:9002\0".to_vec()),
        ];
        let m = order_members(raw);
        let addrs: Vec<&str> = m.iter().map(|m| m.addr.as_str()).collect();
        assert_eq!(
            addrs,
            ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
        );
        assert_eq!(m[0].name, "node0000000002");
    }
}
