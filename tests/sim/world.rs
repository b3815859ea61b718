//! The simulated world: processes, ZooKeeper, links, clients, faults.
//! This file holds the types and the event loop; each concern has a file
//! of its own under `world/`.

mod checks;
mod clients;
mod faults;
mod net;
mod procs;
mod zk;

use super::lincheck::{self, KvOp, Recorded, Verdict};
use chaintable::member::{DurableFloor, Member};
#[cfg(feature = "testing")]
use chaintable::replica::PlantedBug;
use chaintable::replica::{Action, ReadScope, Replica, WriteToken};
use chaintable::serialize::{Entry, Key};
use chaintable::wire::{
    BatchOp, Body, NodeRole, SeqGap, SnapshotChunk, Update, WriteOp, WriteOutcome,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Virtual time in microseconds since the start of a run.
type Us = u64;
type Pid = u32;

const MS: Us = 1_000;
/// ZooKeeper's session timeout, and the lease each renewal grants.
const SESSION_TIMEOUT: Us = 600 * MS;
/// How often a member confirms its session (the coordinator's cadence).
const RENEW_EVERY: Us = 150 * MS;
/// How often the ZooKeeper model looks for expired sessions.
const SWEEP_EVERY: Us = 10 * MS;
const PEER_TIMEOUT: Us = 100 * MS;
/// A client gives up on a request after this long (outcome unknown).
const CLIENT_TIMEOUT: Us = 300 * MS;
const SENT_MAX: usize = 64;
const KEYS: u32 = 3;

/// What one run does.
#[derive(Debug, Clone)]
pub struct Params {
    pub seed: u64,
    /// Members at the start.
    pub members: usize,
    pub clients: usize,
    /// Virtual time with faults and client traffic, before quiescing.
    pub run_ms: u64,
    pub faults: bool,
    /// Every member has a disk (`--data-dir`, `--fsync always`): a crashed
    /// member restarts on it, the whole chain may die at once, and the
    /// durable floor lives in the ZooKeeper model.
    pub durable: bool,
    #[cfg(feature = "testing")]
    pub planted: Option<PlantedBug>,
}

impl Params {
    pub fn new(seed: u64) -> Params {
        Params {
            seed,
            members: 3 + (seed % 3) as usize,
            clients: 3,
            run_ms: 1500,
            faults: true,
            durable: false,
            #[cfg(feature = "testing")]
            planted: None,
        }
    }
}

/// What a run did, for the figures in the closing note.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub events: u64,
    pub acked: usize,
    pub client_ops: usize,
    pub crashes: u32,
    pub restarts: u32,
    pub joins: u32,
    pub partitions: u32,
    pub link_breaks: u32,
    pub expiries: u32,
    /// Every member killed at once (durable schedules).
    pub outages: u32,
    /// Members that stepped aside rather than found the chain.
    pub step_asides: u32,
}

impl Summary {
    /// Adds another run's figures to these.
    pub fn add(&mut self, s: &Summary) {
        self.events += s.events;
        self.acked += s.acked;
        self.client_ops += s.client_ops;
        self.crashes += s.crashes;
        self.restarts += s.restarts;
        self.joins += s.joins;
        self.partitions += s.partitions;
        self.link_breaks += s.link_breaks;
        self.expiries += s.expiries;
        self.outages += s.outages;
        self.step_asides += s.step_asides;
    }
}

/// Runs one schedule. `Err` says what broke, with the seed to replay it.
pub fn run(p: &Params) -> Result<Summary, String> {
    let mut w = World::new(p.clone());
    w.start();
    w.run_until(p.run_ms * MS, true)?;
    w.quiesce()?;
    w.final_checks()?;
    w.check_history()?;
    w.summary.acked = w.acked.len();
    w.summary.client_ops = w.history.len();
    Ok(w.summary)
}

#[derive(Debug)]
enum Task {
    Apply(Update),
    Snapshot,
    Install(SnapshotChunk),
}

impl Task {
    /// This task, if it applies a client's write (not a head's NOOP mark).
    fn as_ref_write(&self) -> Option<&Task> {
        match self {
            Task::Apply(u) if u.op != WriteOp::Noop => Some(self),
            _ => None,
        }
    }
}

/// A `table-server` process: its replica, worker and table.
struct Proc {
    replica: Replica,
    table: BTreeMap<Key, (u64, Vec<u8>)>,
    /// Sequence numbers applied, in order (a snapshot carries its source's).
    hist: Vec<u64>,
    tasks: VecDeque<Task>,
    working: bool,
    /// The earliest Tick already scheduled for this process.
    tick_at: Option<Us>,
    alive: bool,
    /// The ZooKeeper session this process holds (its current registration).
    session: u64,
    /// Synchronous writes waiting at this process: token → client op.
    waiting: HashMap<WriteToken, (usize, u64)>,
    /// The gaps in `hist` (what the log records with each write).
    gaps: VecDeque<SeqGap>,
    /// A durable member installing a snapshot: its disk still holds this
    /// until the LAST chunk (`Store::replace`).
    pre_install: Option<Disk>,
}

/// What a durable member's disk holds: its log's table, the sequence
/// numbers it applied, and the gaps among them.
#[derive(Debug, Clone, Default)]
struct Disk {
    table: BTreeMap<Key, (u64, Vec<u8>)>,
    hist: Vec<u64>,
    gaps: VecDeque<SeqGap>,
}

struct Session {
    pid: Pid,
    name: String,
    last_heard: Us,
    expired: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// Dialled; the handshake has not reached the successor yet.
    Connecting,
    /// Accepted by the successor; HELLO_OK on its way back.
    Accepted,
    /// HELLO_OK arrived: updates flow.
    Ready,
}

enum Up {
    Hello(NodeRole, u64),
    Ack(u64),
}

/// A peer connection from `from` to its successor `to`.
struct Link {
    from: Pid,
    to: Pid,
    state: LinkState,
    down: VecDeque<(Us, Body)>,
    up: VecDeque<(Us, Up)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum End {
    Proc(Pid),
    Zk,
}

#[derive(Debug, Clone)]
enum Req {
    Put(u32, u64),
    /// An asynchronous PUT: answered with its op id at once, executed
    /// later or, if its head fails first, never.
    PutAsync(u32, u64),
    Del(u32),
    Get(u32),
    /// CPUT of a fresh value, expecting what this client last read of the
    /// key: (value, version), `None`/0 for absent.
    Cas {
        key: u32,
        expected: Option<u64>,
        version: u64,
        value: u64,
    },
}

enum Reply {
    /// Written, with its op id.
    Written(Option<bool>, u64),
    /// A compare-and-set that did not match: nothing changed (its op id).
    Mismatch(u64),
    /// A read: the value and its version (0 when absent).
    Value(Option<u64>, u64),
    /// An asynchronous write was queued with this op id.
    Accepted(u64),
    /// Refused before taking effect (not the head, no lease, busy…).
    Refused,
    /// The write may or may not have happened.
    Unknown,
}

struct Client {
    view: Vec<Member>,
    /// The request in flight: id, what, when it was sent.
    pending: Option<(u64, Req, Us)>,
    next_value: u64,
    /// What this client last read of each key: (value, version).
    seen: std::collections::HashMap<u32, (Option<u64>, u64)>,
    /// The highest sequence number this client has seen (op ids of its
    /// writes, versions it read): the floor of its reads (spec §5.7).
    floor: u64,
    /// Per key, the newest version this client has read or written: no
    /// read of it may return an older one (the session guarantee).
    key_floor: std::collections::HashMap<u32, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Tick(Pid),
    Work(Pid),
    Deliver(u64),
    Connect(u64),
    /// One end of a broken link learns of it (`true`: the dialling end).
    Broken(Pid, u64, bool),
    Renew(Pid, u64),
    ZkArrive(Pid, u64, Us),
    ZkReply(Pid, u64, Us),
    View(Pid),
    ClientView(usize),
    Sweep,
    ClientNext(usize),
    ClientArrive(usize, u64, Pid),
    ClientReply(usize, u64),
    ClientGiveUp(usize, u64),
    Fault,
    Heal,
    /// A crashed process starts again at the same address.
    Restart(Pid),
    /// A member's raise of the durable floor and reserved ids (both) reaches
    /// ZooKeeper.
    FloorWrite(Pid, u64, (u64, u64)),
    /// ZooKeeper's answer: the floor and reserved ids now.
    FloorReply(Pid, u64, (u64, u64)),
    /// A member that may not found the chain deletes its node and
    /// registers again.
    StepAside(Pid, u64),
}

struct World {
    p: Params,
    rng: StdRng,
    now: Us,
    t0: Instant,
    queue: BinaryHeap<Reverse<(Us, u64, Ev)>>,
    next_ev: u64,
    procs: BTreeMap<Pid, Proc>,
    next_pid: Pid,
    sessions: BTreeMap<u64, Session>,
    next_session: u64,
    /// ZooKeeper's ordered children of the chain root: (name, session).
    znodes: Vec<(String, u64)>,
    next_znode: u64,
    links: BTreeMap<u64, Link>,
    next_link: u64,
    cuts: BTreeSet<(End, End)>,
    clients: Vec<Client>,
    replies: HashMap<(usize, u64), Reply>,
    next_op: u64,
    history: Vec<Recorded>,
    acked: BTreeSet<u64>,
    /// Histories of every snapshot cut, by its sequence number.
    snapshots: HashMap<u64, Vec<u64>>,
    summary: Summary,
    /// Every operation id any member applied, and the write it named: an id
    /// must never name two different writes (VERIFY answers by id).
    ids: HashMap<u64, WriteOp>,
    /// Quiescing: clients send nothing new.
    stopping: bool,
    /// Durable schedules: the disks of crashed members, and the chain's
    /// durable floor in ZooKeeper.
    disks: HashMap<Pid, Disk>,
    floor: DurableFloor,
    trace: VecDeque<String>,
    failure: Option<String>,
}

impl World {
    fn new(p: Params) -> World {
        World {
            rng: StdRng::seed_from_u64(p.seed),
            p,
            now: 0,
            t0: Instant::now(),
            queue: BinaryHeap::new(),
            next_ev: 0,
            procs: BTreeMap::new(),
            next_pid: 1,
            sessions: BTreeMap::new(),
            next_session: 1,
            znodes: Vec::new(),
            next_znode: 0,
            links: BTreeMap::new(),
            next_link: 1,
            cuts: BTreeSet::new(),
            clients: Vec::new(),
            replies: HashMap::new(),
            next_op: 1,
            history: Vec::new(),
            acked: BTreeSet::new(),
            snapshots: HashMap::new(),
            summary: Summary::default(),
            ids: HashMap::new(),
            stopping: false,
            disks: HashMap::new(),
            floor: DurableFloor::default(),
            trace: VecDeque::new(),
            failure: None,
        }
    }

    fn at(&mut self, when: Us, ev: Ev) {
        self.next_ev += 1;
        self.queue.push(Reverse((when, self.next_ev, ev)));
    }

    fn after(&mut self, delay: Us, ev: Ev) {
        self.at(self.now + delay, ev);
    }

    /// A network delay: usually tens to hundreds of microseconds, now and
    /// then tens of milliseconds.
    fn delay(&mut self) -> Us {
        if self.rng.gen_bool(0.02) {
            self.rng.gen_range(5 * MS..40 * MS)
        } else {
            self.rng.gen_range(20..800)
        }
    }

    fn instant(&self) -> Instant {
        self.t0 + Duration::from_micros(self.now)
    }

    fn note(&mut self, s: String) {
        if self.trace.len() == 64 {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{:>8}us {s}", self.now));
    }

    fn fail(&mut self, what: String) {
        if self.failure.is_none() {
            let trace: Vec<&String> = self.trace.iter().collect();
            self.failure = Some(format!(
                "seed {} at {}us: {what}\nlast events: {trace:#?}",
                self.p.seed, self.now
            ));
        }
    }

    fn cut(&self, a: End, b: End) -> bool {
        let k = if a < b { (a, b) } else { (b, a) };
        self.cuts.contains(&k)
    }

    fn start(&mut self) {
        for _ in 0..self.p.members {
            self.spawn();
        }
        for c in 0..self.p.clients {
            self.clients.push(Client {
                view: Vec::new(),
                pending: None,
                next_value: (c as u64 + 1) << 32,
                seen: std::collections::HashMap::new(),
                floor: 0,
                key_floor: std::collections::HashMap::new(),
            });
            self.after(0, Ev::ClientView(c));
            self.after(MS, Ev::ClientNext(c));
        }
        self.after(SWEEP_EVERY, Ev::Sweep);
        if self.p.faults {
            self.after(50 * MS, Ev::Fault);
        }
    }

    /// Processes events until `until` (or the queue empties).
    fn run_until(&mut self, until: Us, check: bool) -> Result<(), String> {
        while let Some(Reverse((when, _, _))) = self.queue.peek() {
            if *when > until {
                break;
            }
            let Some(Reverse((when, _, ev))) = self.queue.pop() else {
                break;
            };
            self.now = when;
            self.summary.events += 1;
            self.handle(ev);
            if check {
                self.check_invariants();
            }
            if let Some(f) = self.failure.take() {
                return Err(f);
            }
        }
        self.now = self.now.max(until);
        Ok(())
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick(pid) => {
                // Only the tick armed last counts; earlier ones are stale.
                let now = self.now;
                if let Some(p) = self.procs.get_mut(&pid).filter(|p| p.tick_at == Some(now)) {
                    p.tick_at = None;
                    self.with(pid, |_| {});
                }
            }
            Ev::Work(pid) => self.work(pid),
            Ev::Deliver(id) => self.deliver(id),
            Ev::Connect(id) => self.connect(id),
            Ev::Broken(pid, id, dialler) => self.learn_broken(pid, id, dialler),
            Ev::Renew(pid, s) => self.renew(pid, s),
            Ev::ZkArrive(pid, s, sent) => self.zk_arrive(pid, s, sent),
            Ev::ZkReply(pid, s, sent) => self.zk_reply(pid, s, sent),
            Ev::View(pid) => self.view(pid),
            Ev::ClientView(c) => self.clients[c].view = self.members(),
            Ev::Sweep => self.sweep(),
            Ev::ClientNext(c) => self.client_next(c),
            Ev::ClientArrive(c, op, pid) => self.client_arrive(c, op, pid),
            Ev::ClientReply(c, op) => self.client_reply(c, op),
            Ev::ClientGiveUp(c, op) => self.client_give_up(c, op),
            Ev::Fault => self.fault(),
            Ev::Heal => self.heal(),
            Ev::Restart(pid) => {
                // A durable member always comes back: its disk may hold the
                // only state that reaches the floor.
                let room = self.procs.len() < 5 || self.p.durable;
                if !self.procs.contains_key(&pid) && room {
                    self.summary.restarts += 1;
                    self.note(format!("restart p{pid}"));
                    self.spawn_at(pid);
                }
            }
            Ev::FloorWrite(pid, s, seq) => self.floor_write(pid, s, seq),
            Ev::FloorReply(pid, s, floor) => self.floor_reply(pid, s, floor),
            Ev::StepAside(pid, s) => self.step_aside(pid, s),
        }
    }
}

fn key_of(k: u32) -> Key {
    Key::new(format!("k{k}")).expect("short key")
}

fn tail(h: &[u64]) -> &[u64] {
    &h[h.len().saturating_sub(8)..]
}
