//! The worker thread and its bounded task queue (lock + condition
//! variable), as the seeds describe: the network thread queues writes, the
//! worker executes them in order on the table and hands completions back
//! through a second queue and the poll loop's wake-up descriptor.

use crate::serialize::{Entry, Key};
use crate::storage::Store;
use crate::table::Table;
use crate::wire::{BatchOp, SnapshotChunk, Update, WriteOp, WriteOutcome};
use nix::sys::eventfd::EventFd;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

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

/// Turns each compare-and-set of a batch into the write it becomes (PUT,
/// DEL) or into UNCHANGED, comparing with the table as the writes before
/// it in the batch leave it. This happens before the batch is logged, so
/// the log, the successor and a replay over a fuzzy snapshot all see only
/// writes that set their key absolutely (`STORAGE.md` §4): a compare
/// replayed against a later state could decide otherwise.
fn resolve_conditions(table: &Table, batch: &mut [Update]) {
    // The version each key has after the batch's writes so far (0: absent).
    let mut overlay: HashMap<Key, u64> = HashMap::new();
    for u in batch.iter_mut() {
        let now = |key: &Key| {
            overlay
                .get(key)
                .copied()
                .unwrap_or_else(|| table.version_of(key))
        };
        let resolved = std::mem::replace(&mut u.op, WriteOp::Noop).resolve(now);
        match &resolved {
            WriteOp::Put { key, .. } => {
                overlay.insert(key.clone(), u.seq);
            }
            WriteOp::Del { key } => {
                overlay.insert(key.clone(), 0);
            }
            WriteOp::Batch(ops) => {
                for op in ops {
                    let version = match op {
                        BatchOp::Put { .. } => u.seq,
                        BatchOp::Del { .. } => 0,
                    };
                    overlay.insert(op.key().clone(), version);
                }
            }
            _ => {}
        }
        u.op = resolved;
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

    /// Whether the server has asked the worker to stop.
    fn is_closed(&self) -> bool {
        lock(&self.inner).closed
    }

    /// Takes up to `max` queued tasks, waiting for one until `deadline`
    /// (forever without one). `None` once closed and empty; an empty batch
    /// when the deadline passed first.
    fn pop_batch(&self, max: usize, deadline: Option<Instant>) -> Option<Vec<Task>> {
        let mut q = lock(&self.inner);
        loop {
            if !q.items.is_empty() {
                let n = q.items.len().min(max);
                let batch: Vec<Task> = q.items.drain(..n).collect();
                q.bytes -= batch.iter().map(Task::held_bytes).sum::<usize>();
                return Some(batch);
            }
            if q.closed {
                return None;
            }
            q = match deadline {
                None => self.cond.wait(q).unwrap_or_else(|p| p.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Some(Vec::new());
                    }
                    let (q, _) = self
                        .cond
                        .wait_timeout(q, left)
                        .unwrap_or_else(|p| p.into_inner());
                    q
                }
            };
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

/// Most tasks the worker takes at once: the writes among them share one
/// log write and one sync (group commit).
const BATCH_TASKS_MAX: usize = 4096;

/// Starts the worker thread; it exits when the queue is closed and empty.
/// `table_seq` is the sequence number the table already reflects (what
/// recovery loaded), and `store` the data directory's log, if any.
pub fn spawn(
    applied: Arc<AtomicU64>,
    table: Arc<Table>,
    queue: Arc<TaskQueue>,
    completions: Arc<Completions>,
    delay: std::time::Duration,
    table_seq: u64,
    store: Option<Store>,
) -> std::io::Result<JoinHandle<()>> {
    let mut worker = Worker {
        applied,
        table,
        completions,
        delay,
        table_seq,
        store,
        applies: Vec::new(),
        install_gaps: Vec::new(),
    };
    std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || worker.run(&queue))
}

struct Worker {
    /// The last write applied, published for BACKUP (see `backup.rs`).
    applied: Arc<AtomicU64>,
    table: Arc<Table>,
    completions: Arc<Completions>,
    delay: std::time::Duration,
    /// The sequence number the table reflects, for snapshots.
    table_seq: u64,
    store: Option<Store>,
    /// Writes taken from the queue, not yet logged and applied.
    applies: Vec<Update>,
    /// The gaps of the snapshot being installed (its first chunk's).
    install_gaps: Vec<crate::wire::SeqGap>,
}

impl Worker {
    fn run(&mut self, queue: &TaskQueue) {
        loop {
            let deadline = self.store.as_ref().and_then(Store::next_deadline);
            // The test delay stands in for a slow disk: one write at a
            // time, so the writes behind it wait in the queue, unlogged.
            let max = if self.delay.is_zero() {
                BATCH_TASKS_MAX
            } else {
                1
            };
            let Some(batch) = queue.pop_batch(max, deadline) else {
                break;
            };
            for task in batch {
                match task {
                    Task::Apply(update) => self.applies.push(update),
                    other => {
                        if !self.flush(queue) {
                            return;
                        }
                        self.run_other(other);
                    }
                }
            }
            if !self.flush(queue) {
                return;
            }
            if let Some(store) = self.store.as_mut() {
                store.tick(Instant::now());
            }
        }
        if let Some(store) = self.store.as_mut() {
            store.close();
        }
    }

    /// Logs the writes taken (one log write, at most one sync), then
    /// applies them and reports each: nothing is reported applied, and so
    /// nothing acknowledged, before the log holds it. False when the log
    /// could not be written and the server is stopping.
    fn flush(&mut self, queue: &TaskQueue) -> bool {
        if self.applies.is_empty() {
            return true;
        }
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay * u32::try_from(self.applies.len()).unwrap_or(1));
        }
        if self.applies.iter().any(|u| u.op.is_conditional()) {
            resolve_conditions(&self.table, &mut self.applies);
        }
        if let Some(store) = self.store.as_mut() {
            if !store.log(&self.applies, || queue.is_closed()) {
                self.applies.clear();
                return false;
            }
        }
        for update in self.applies.drain(..) {
            let outcome = self.table.apply(update.seq, &update.op);
            self.table_seq = update.seq;
            self.applied.store(update.seq, Ordering::Release);
            self.completions.push(Completion::Applied(update, outcome));
        }
        true
    }

    /// A durable chain member's installed snapshot replaces its data
    /// directory before anything after it is logged. If that fails the
    /// member stops (fail-stop): logging later writes after a history the
    /// disk does not hold would make a log that recovers to a wrong table,
    /// and the chain tolerates a member that stops.
    fn persist_install(&mut self, seq: u64) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let gaps = std::mem::take(&mut self.install_gaps);
        match store.replace(seq, gaps) {
            Ok(()) => tracing::info!(seq, "installed snapshot written to the data directory"),
            Err(e) => {
                tracing::error!(error = %e, "cannot write the installed snapshot to the data directory: stopping");
                std::process::exit(74);
            }
        }
    }

    /// State-transfer tasks, in order with the writes around them.
    fn run_other(&mut self, task: Task) {
        let done = match task {
            Task::Apply(_) => return, // batched by `run`
            Task::Snapshot => Completion::Snapshot {
                seq: self.table_seq,
                entries: self.table.entries(),
            },
            Task::Install(chunk) => {
                if chunk.first {
                    self.table.clear();
                    self.install_gaps = chunk.gaps;
                }
                for entry in chunk.entries {
                    self.table.install(entry);
                }
                if !chunk.last {
                    return;
                }
                self.table_seq = chunk.snapshot_seq;
                self.persist_install(chunk.snapshot_seq);
                Completion::Installed {
                    seq: chunk.snapshot_seq,
                }
            }
        };
        self.completions.push(done);
    }
}
