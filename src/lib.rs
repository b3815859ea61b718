//! chaintable: a chain-replicated key-value store.
//!
//! | module        | concern                                              |
//! |---------------|------------------------------------------------------|
//! | [`serialize`] | byte-level encoding of keys, entries, lists, stats    |
//! | [`wire`]      | frames, messages and the status registry             |
//! | [`table`]     | the partitioned, versioned key-value table           |
//! | [`auth`]      | peer handshake and per-frame MACs (cluster secret)   |
//! | [`member`]    | a chain member's name and address                    |
//! | [`replica`]   | the sans-IO chain-replication state machine          |
//! | [`tls`]       | TLS configuration for client connections (rustls)    |

#![forbid(unsafe_code)]

pub mod auth;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod coord;
pub mod member;
pub mod replica;
pub mod serialize;
pub mod server;
pub mod storage;
pub mod table;
pub mod tls;
pub mod units;
pub mod watch;
pub mod wire;
