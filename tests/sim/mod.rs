//! A deterministic cluster simulator for the chain: `Replica` state
//! machines, a model of ZooKeeper (sessions, ephemeral sequential nodes,
//! watches, expiry), peer links that behave like TCP connections, workers,
//! and clients, all on one virtual clock and one seeded RNG. Nothing here
//! reads the real clock or touches a socket, so a seed replays exactly.
//!
//! What the network does to the chain (FoundationDB's and TigerBeetle's
//! simulators taught us where the bugs are):
//! - every message is delayed (mostly well under a millisecond, sometimes
//!   tens of milliseconds); a link keeps its order, as TCP does;
//! - links break at random (loss on TCP is a broken connection): each end
//!   learns it after its own delay, messages in flight are lost, and the
//!   resends after the redial are the duplicates a member must ignore;
//! - partitions cut a member off from one peer, from ZooKeeper, or from
//!   everything but its clients (a partitioned link stalls, as TCP does,
//!   and delivers once healed, unless a timeout broke it meanwhile);
//! - members crash (their ZooKeeper session then expires, as after
//!   `kill -9`), new members join, sessions expire under partitions and
//!   the member learns it only when it hears from ZooKeeper again;
//! - membership views and client views lag behind ZooKeeper.
//!
//! After every event the paper's invariants are checked; at the end the
//! faults heal, the chain must quiesce with every member holding the same
//! table and every acknowledged write, and the clients' histories must be
//! linearizable (the same checker as the torture suite).

pub mod world;

pub use world::{run, Params, Summary};

#[path = "../common/lincheck.rs"]
pub mod lincheck;
