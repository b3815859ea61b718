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

/// A durable chain's state in ZooKeeper (the chain root's data, spec
/// §5.1), shared by the replica and the coordinator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurableFloor {
    /// No write above it has been acknowledged.
    pub floor: u64,
    /// No sequence number above it has been assigned: a head reserves ids
    /// here before it hands them out, and a member that founds the chain
    /// after an outage starts above it, so that a sequence number names one
    /// update in the chain's whole life even across total outages.
    pub reserved: u64,
}

impl DurableFloor {
    /// Each field the larger of the two.
    #[must_use]
    pub fn max(self, other: DurableFloor) -> DurableFloor {
        DurableFloor {
            floor: self.floor.max(other.floor),
            reserved: self.reserved.max(other.reserved),
        }
    }
}
