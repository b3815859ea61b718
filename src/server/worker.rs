//! The worker thread and its bounded task queue (lock + condition
//! variable), as the seeds describe: the network thread queues writes, the
//! worker executes them in order on the table and hands completions back
//! through a second queue and the poll loop's wake-up descriptor.

use crate::serialize::Entry;
use crate::table::Table;
use crate::wire::{SnapshotChunk, Update, WriteOutcome};
use nix::sys::eventfd::EventFd;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Work for the worker, executed strictly in queue order.
#[derive(Debug)]
pub enum Task {
    Apply(Update),
    /// Capture the table as of every task before this one.
    Snapshot,
    Install(SnapshotChunk),
}

impl Task {
    fn held_bytes(&self) -> usize {
        match self {
            Task::Apply(u) => u.op.held_bytes(),
            _ => 0,
        }
    }
}

/// What the worker reports back, in task order.
#[derive(Debug)]
pub enum Completion {
    Applied(Update, WriteOutcome),
    Snapshot { seq: u64, entries: Vec<Entry> },
    Installed { seq: u64 },
}

#[derive(Debug)]
struct Queue<T> {
    items: VecDeque<T>,
    /// Key and value bytes of the writes queued.
    bytes: usize,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The queues hold plain data; a panic elsewhere cannot leave them torn.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The task queue shared by the network thread (producer) and the worker.
#[derive(Debug)]
pub struct TaskQueue {
    inner: Mutex<Queue<Task>>,
    cond: Condvar,
    depth_max: usize,
    bytes_max: usize,
}

impl TaskQueue {
    pub fn new(depth_max: usize, bytes_max: usize) -> Self {
        TaskQueue {
            inner: Mutex::new(Queue {
                items: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            cond: Condvar::new(),
            depth_max: depth_max.max(1),
            bytes_max: bytes_max.max(1),
        }
    }

    pub fn depth(&self) -> usize {
        lock(&self.inner).items.len()
    }

    /// Whether `pending` more writes may be queued now (backpressure, not
    /// growth).
    pub fn has_room(&self, pending: usize) -> bool {
        let q = lock(&self.inner);
        q.items.len() + pending < self.depth_max && q.bytes < self.bytes_max
    }

    /// Queues several tasks under one lock and one wake-up. Client writes
    /// are admitted only while there is room (see `Server::queue_has_room`);
    /// internal tasks (snapshot, install) may exceed the depth by the few
    /// that are in flight at once.
    pub fn push_all(&self, tasks: Vec<Task>) {
        if tasks.is_empty() {
            return;
        }
        let bytes: usize = tasks.iter().map(Task::held_bytes).sum();
        let mut q = lock(&self.inner);
        q.bytes += bytes;
        q.items.extend(tasks);
        drop(q);
        self.cond.notify_one();
    }

    /// Stops the worker once the queued tasks are done.
    pub fn close(&self) {
        lock(&self.inner).closed = true;
        self.cond.notify_all();
    }

    fn pop(&self) -> Option<Task> {
        let mut q = lock(&self.inner);
        loop {
            if let Some(task) = q.items.pop_front() {
                q.bytes -= task.held_bytes();
                return Some(task);
            }
            if q.closed {
                return None;
            }
            q = self.cond.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Completions waiting for the network thread, plus the descriptor that
/// wakes its `poll`.
#[derive(Debug)]
pub struct Completions {
    inner: Mutex<Vec<Completion>>,
    wake: Arc<EventFd>,
}

impl Completions {
    pub fn new(wake: Arc<EventFd>) -> Self {
        Completions {
            inner: Mutex::new(Vec::new()),
            wake,
        }
    }

    fn push(&self, c: Completion) {
        let was_empty = {
            let mut q = lock(&self.inner);
            q.push(c);
            q.len() == 1
        };
        // One wake-up per batch: the network thread drains all at once.
        if was_empty {
            let _ = self.wake.write(1);
        }
    }

    /// Takes every completion reported so far, in order.
    pub fn drain(&self) -> Vec<Completion> {
        std::mem::take(&mut *lock(&self.inner))
    }
}

/// Starts the worker thread; it exits when the queue is closed and empty.
pub fn spawn(
    table: Arc<Table>,
    queue: Arc<TaskQueue>,
    completions: Arc<Completions>,
    delay: std::time::Duration,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || {
            // The sequence number the table reflects, for snapshots.
            let mut table_seq = 0u64;
            while let Some(task) = queue.pop() {
                let done = match task {
                    Task::Apply(update) => {
                        if !delay.is_zero() {
                            std::thread::sleep(delay);
                        }
                        let outcome = table.apply(update.seq, &update.op);
                        table_seq = update.seq;
                        Completion::Applied(update, outcome)
                    }
                    Task::Snapshot => Completion::Snapshot {
                        seq: table_seq,
                        entries: table.entries(),
                    },
                    Task::Install(chunk) => {
                        if chunk.first {
                            table.clear();
                        }
                        for entry in chunk.entries {
                            table.install(entry);
                        }
                        if !chunk.last {
                            continue;
                        }
                        table_seq = chunk.snapshot_seq;
                        Completion::Installed {
                            seq: chunk.snapshot_seq,
                        }
                    }
                };
                completions.push(done);
            }
        })
}
