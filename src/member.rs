//! One member of a chain, as membership lists it. Shared by the replica,
//! the coordinator that reads it from ZooKeeper, and the client that
//! finds the chain through it.

/// One member of the chain as membership lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Unique, ordered name (the ZooKeeper sequential node name).
    pub name: String,
    /// `host:port` for clients and peers.
    pub addr: String,
}
