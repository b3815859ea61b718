//! The paper's Sent list: updates this member has applied and forwarded
//! (or will forward) but that the tail has not acknowledged yet. It is what
//! a member resends when its successor changes.

use crate::wire::Update;
#[cfg(doc)]
use crate::wire::WriteOp;
use std::collections::VecDeque;

/// Sent updates in sequence order, bounded by `capacity`. The head refuses
/// new writes (BUSY) when it is full; members further down never hold more
/// than their predecessor, so the bound holds along the chain.
#[derive(Debug, Clone)]
pub struct SentList {
    updates: VecDeque<Update>,
    capacity: usize,
    /// Key and value bytes held (see [`WriteOp::held_bytes`]).
    bytes: usize,
}

impl SentList {
    #[must_use]
    /// An empty list that holds at most `capacity` updates.
    pub fn new(capacity: usize) -> Self {
        SentList {
            updates: VecDeque::new(),
            capacity: capacity.max(1),
            bytes: 0,
        }
    }

    #[must_use]
    /// The most updates it holds before the head answers BUSY.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    #[must_use]
    /// Updates held.
    pub fn len(&self) -> usize {
        self.updates.len()
    }

    #[must_use]
    /// Whether every update sent has been acknowledged.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }

    /// Key and value bytes held.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends an update; sequence numbers must increase.
    pub fn push(&mut self, update: Update) {
        assert!(
            self.updates.back().is_none_or(|u| u.seq < update.seq),
            "Sent must stay in sequence order"
        );
        self.bytes += update.op.held_bytes();
        self.updates.push_back(update);
    }

    /// Drops every update with `seq <= through` (acknowledged by the tail).
    pub fn trim_through(&mut self, through: u64) {
        while self.updates.front().is_some_and(|u| u.seq <= through) {
            if let Some(u) = self.updates.pop_front() {
                self.bytes -= u.op.held_bytes();
            }
        }
    }

    /// Updates after `seq`, in order: what a successor at `seq` lacks.
    pub fn after(&self, seq: u64) -> impl Iterator<Item = &Update> {
        self.updates.iter().filter(move |u| u.seq > seq)
    }

    /// The updates held, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Update> {
        self.updates.iter()
    }
}
