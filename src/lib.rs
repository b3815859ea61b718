//! chaintable: a chain-replicated key-value store.
//!
//! | module        | concern                                              |
//! |---------------|------------------------------------------------------|
//! | [`serialize`] | byte-level encoding of keys, entries, lists, stats    |
//! | [`wire`]      | frames, messages and the status registry             |

#![forbid(unsafe_code)]

pub mod serialize;
pub mod wire;
