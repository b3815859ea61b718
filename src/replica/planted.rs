//! Bugs planted on purpose, compiled only with the `testing` feature: the
//! simulator (`tests/chain_sim`) and the model checker (`tests/model.rs`)
//! must find each of them, which is how we know they would find the real
//! thing. A planted bug that the simulator does not find is a bug in the
//! simulator.

use super::Replica;

/// One deliberate mistake in the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// The head answers a synchronous write as soon as it has applied it,
    /// without waiting for the tail: a head that dies before forwarding it
    /// loses an acknowledged write.
    AckBeforeSuccessor,
    /// A member takes a predecessor link from any other member, not only
    /// from the one membership lists just before it.
    AcceptStalePredecessor,
    /// A member keeps serving after its coordination lease has lapsed, so
    /// a member cut off from the coordinator serves stale reads after the
    /// others have moved on without it.
    ServeAfterLeaseLapsed,
    /// A member that is not the tail answers every read (CRAQ without the
    /// dirty check): it serves writes the tail may never apply, and then
    /// a read at the tail goes back in time.
    ReadDirtyKeys,
}

impl PlantedBug {
    /// Every planted bug, for tests that try each.
    pub const ALL: [PlantedBug; 4] = [
        PlantedBug::AckBeforeSuccessor,
        PlantedBug::AcceptStalePredecessor,
        PlantedBug::ServeAfterLeaseLapsed,
        PlantedBug::ReadDirtyKeys,
    ];
}

impl Replica {
    /// TEST ONLY (`table-server --unsafe-reads-anywhere`): answer reads in
    /// any role, so tests can inspect every member's table and the torture
    /// suite can show its checker catches reads off the tail. The lease
    /// still applies.
    pub fn set_reads_anywhere(&mut self, on: bool) {
        self.reads_anywhere = on;
    }

    /// Plants `bug` in this replica.
    pub fn plant(&mut self, bug: PlantedBug) {
        self.planted = Some(bug);
    }
}
