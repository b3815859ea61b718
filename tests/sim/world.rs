//! The simulated world: processes, ZooKeeper, links, clients, faults.

use super::lincheck::{self, KvOp, Recorded, Verdict};
use chaintable::member::Member;
#[cfg(feature = "testing")]
use chaintable::replica::PlantedBug;
use chaintable::replica::{Action, Replica, WriteToken};
use chaintable::serialize::{Entry, Key};
use chaintable::wire::{Body, NodeRole, SnapshotChunk, Update, WriteOp, WriteOutcome};
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
    pub joins: u32,
    pub partitions: u32,
    pub link_breaks: u32,
    pub expiries: u32,
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
    Del(u32),
    Get(u32),
}

enum Reply {
    Written(Option<bool>),
    Value(Option<u64>),
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

    // ----- start and run ----------------------------------------------------

    fn start(&mut self) {
        for _ in 0..self.p.members {
            self.spawn();
        }
        for c in 0..self.p.clients {
            self.clients.push(Client {
                view: Vec::new(),
                pending: None,
                next_value: (c as u64 + 1) << 32,
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
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.tick_at = None;
                }
                self.with(pid, |_| {});
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
        }
    }

    // ----- processes --------------------------------------------------------

    fn spawn(&mut self) {
        let pid = self.next_pid;
        self.next_pid += 1;
        let mut replica = Replica::chain_member(String::new(), SENT_MAX);
        replica.set_snapshot_chunk_entries(2);
        replica.set_peer_timeout(Duration::from_micros(PEER_TIMEOUT));
        #[cfg(feature = "testing")]
        if let Some(bug) = self.p.planted {
            replica.plant(bug);
        }
        self.procs.insert(
            pid,
            Proc {
                replica,
                table: BTreeMap::new(),
                hist: Vec::new(),
                tasks: VecDeque::new(),
                working: false,
                tick_at: None,
                alive: true,
                session: 0,
                waiting: HashMap::new(),
            },
        );
        self.note(format!("spawn p{pid}"));
        self.register(pid);
    }

    /// A new session and an ephemeral sequential node for `pid`, which
    /// starts over as a joiner (`Replica::rejoin`).
    fn register(&mut self, pid: Pid) {
        let s = self.next_session;
        self.next_session += 1;
        let name = format!("n{:06}", self.next_znode);
        self.next_znode += 1;
        self.sessions.insert(
            s,
            Session {
                pid,
                name: name.clone(),
                last_heard: self.now,
                expired: false,
            },
        );
        self.znodes.push((name.clone(), s));
        if let Some(p) = self.procs.get_mut(&pid) {
            p.session = s;
        }
        self.note(format!("p{pid} registers as {name}"));
        self.with(pid, |r| r.rejoin(name));
        self.after(0, Ev::Renew(pid, s));
        self.membership_changed();
    }

    fn members(&self) -> Vec<Member> {
        self.znodes
            .iter()
            .map(|(name, s)| Member {
                name: name.clone(),
                addr: self.sessions[s].pid.to_string(),
            })
            .collect()
    }

    fn membership_changed(&mut self) {
        let pids: Vec<Pid> = self.procs.keys().copied().collect();
        for pid in pids {
            // Watches fire late now and then (a busy ZooKeeper, a slow
            // reconnect): stale views are where chains go wrong.
            let lag = if self.rng.gen_bool(0.1) {
                60 * MS
            } else {
                5 * MS
            };
            let d = self.delay() + self.rng.gen_range(0..lag);
            self.after(d, Ev::View(pid));
        }
        for c in 0..self.clients.len() {
            let d = self.delay() + self.rng.gen_range(0..20 * MS);
            self.after(d, Ev::ClientView(c));
        }
    }

    /// Gives the replica of `pid` the time, then `f`, then carries out
    /// what it asks (the server's loop and dispatch).
    fn with(&mut self, pid: Pid, f: impl FnOnce(&mut Replica)) {
        let now = self.instant();
        let Some(p) = self.procs.get_mut(&pid).filter(|p| p.alive) else {
            return;
        };
        p.replica.handle_timeout(now);
        f(&mut p.replica);
        self.run_actions(pid);
        self.feed(pid);
        self.arm_tick(pid);
    }

    /// Schedules a Tick at the replica's next timer, unless one is
    /// already due no later.
    fn arm_tick(&mut self, pid: Pid) {
        let now = self.now;
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let Some(at) = p.replica.poll_timeout() else {
            return;
        };
        let us = chaintable::units::micros(at.saturating_duration_since(self.t0)).max(now);
        if p.tick_at.is_some_and(|t| t >= now && t <= us) {
            return;
        }
        p.tick_at = Some(us);
        self.at(us, Ev::Tick(pid));
    }

    /// Hands a joining successor snapshot chunks while its link holds
    /// little (the server's `feed_successor`).
    fn feed(&mut self, pid: Pid) {
        loop {
            let pending = self
                .procs
                .get(&pid)
                .is_some_and(|p| p.replica.snapshot_pending());
            let queued = self
                .links
                .values()
                .find(|l| l.from == pid && l.state == LinkState::Ready)
                .map(|l| l.down.len());
            match queued {
                Some(n) if pending && n < 3 => {
                    if let Some(p) = self.procs.get_mut(&pid) {
                        p.replica.handle_successor_writable();
                    }
                    self.run_actions(pid);
                }
                _ => return,
            }
        }
    }

    fn run_actions(&mut self, pid: Pid) {
        while let Some(a) = self
            .procs
            .get_mut(&pid)
            .and_then(|p| p.replica.poll_action())
        {
            self.action(pid, a);
        }
    }

    fn action(&mut self, pid: Pid, a: Action) {
        match a {
            Action::Apply(u) => self.task(pid, Task::Apply(u)),
            Action::Snapshot => self.task(pid, Task::Snapshot),
            Action::Install(c) => self.task(pid, Task::Install(c)),
            Action::WriteDone { token, result } => {
                self.acked.insert(result.op_id);
                let existed = match result.outcome {
                    WriteOutcome::Existed => Some(true),
                    WriteOutcome::Absent => Some(false),
                    WriteOutcome::Pending => None,
                };
                self.reply_write(pid, token, Reply::Written(existed));
            }
            Action::WriteFailed { token, .. } => self.reply_write(pid, token, Reply::Unknown),
            Action::ConnectSuccessor(m) => self.dial(pid, &m),
            Action::DropSuccessor => self.drop_links(pid, true),
            Action::DropPredecessor => self.drop_links(pid, false),
            Action::SendDown(body) => {
                let d = self.delay();
                let now = self.now;
                if let Some((id, l)) = self
                    .links
                    .iter_mut()
                    .find(|(_, l)| l.from == pid && l.state == LinkState::Ready)
                {
                    let when = l.down.back().map_or(0, |m| m.0).max(now + d);
                    l.down.push_back((when, body));
                    let id = *id;
                    self.at(when, Ev::Deliver(id));
                }
            }
            Action::SendUp(seq) => self.send_up(pid, Up::Ack(seq)),
        }
    }

    fn task(&mut self, pid: Pid, t: Task) {
        let p = self.procs.get_mut(&pid).expect("live process");
        p.tasks.push_back(t);
        if !p.working {
            p.working = true;
            let d = self.rng.gen_range(0..300);
            self.after(d, Ev::Work(pid));
        }
    }

    fn reply_write(&mut self, pid: Pid, token: WriteToken, reply: Reply) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if let Some((c, op)) = p.waiting.remove(&token) {
            let d = self.delay();
            self.replies.insert((c, op), reply);
            self.after(d, Ev::ClientReply(c, op));
        }
    }

    /// One worker step: executes the next task like `server/worker.rs`.
    fn work(&mut self, pid: Pid) {
        let Some(p) = self.procs.get_mut(&pid).filter(|p| p.alive) else {
            return;
        };
        let Some(task) = p.tasks.pop_front() else {
            p.working = false;
            return;
        };
        match task {
            Task::Apply(u) => {
                let existed = match &u.op {
                    WriteOp::Put { key, value } => p
                        .table
                        .insert(key.clone(), (u.seq, value.clone()))
                        .is_some(),
                    WriteOp::Del { key } => p.table.remove(key).is_some(),
                };
                p.hist.push(u.seq);
                let outcome = if existed {
                    WriteOutcome::Existed
                } else {
                    WriteOutcome::Absent
                };
                self.with(pid, |r| r.handle_applied(u, outcome));
            }
            Task::Snapshot => {
                let seq = p.hist.last().copied().unwrap_or(0);
                let entries: Vec<Entry> = p
                    .table
                    .iter()
                    .map(|(k, (v, val))| Entry {
                        key: k.clone(),
                        version: *v,
                        value: val.clone(),
                    })
                    .collect();
                let hist = p.hist.clone();
                if let Some(prev) = self.snapshots.insert(seq, hist.clone()) {
                    if prev != hist {
                        self.fail(format!("two snapshots at {seq} with different histories"));
                    }
                }
                self.with(pid, |r| r.handle_snapshot_taken(seq, entries));
            }
            Task::Install(chunk) => {
                if chunk.first {
                    p.table.clear();
                    p.hist.clear();
                }
                for e in chunk.entries {
                    p.table.insert(e.key, (e.version, e.value));
                }
                if chunk.last {
                    let seq = chunk.snapshot_seq;
                    p.hist = self.snapshots.get(&seq).cloned().unwrap_or_default();
                    self.with(pid, |r| r.handle_snapshot_installed(seq));
                }
            }
        }
        let p = self.procs.get_mut(&pid).expect("live process");
        if p.tasks.is_empty() {
            p.working = false;
        } else {
            let d = self.rng.gen_range(0..300);
            self.after(d, Ev::Work(pid));
        }
    }

    fn crash(&mut self, pid: Pid) {
        self.note(format!("crash p{pid}"));
        self.summary.crashes += 1;
        if let Some(p) = self.procs.get_mut(&pid) {
            p.alive = false;
        }
        // The kernel resets its connections; its session lives on until
        // ZooKeeper expires it (kill -9 closes nothing politely).
        let ids: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, l)| l.from == pid || l.to == pid)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.break_link(id);
        }
        self.procs.remove(&pid);
    }

    // ----- ZooKeeper --------------------------------------------------------

    fn renew(&mut self, pid: Pid, s: u64) {
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        if p.session != s {
            return; // a renewal loop of an older session
        }
        if !self.cut(End::Proc(pid), End::Zk) {
            let d = self.delay();
            let sent = self.now;
            self.after(d, Ev::ZkArrive(pid, s, sent));
        }
        self.after(RENEW_EVERY, Ev::Renew(pid, s));
    }

    fn zk_arrive(&mut self, pid: Pid, s: u64, sent: Us) {
        if self.cut(End::Proc(pid), End::Zk) {
            return; // lost on the way
        }
        let Some(sess) = self.sessions.get_mut(&s) else {
            return;
        };
        if sess.expired {
            // The member hears that its session is gone: it fences and
            // registers again (coord/mod.rs).
            self.note(format!("p{pid} learns its session {s} expired"));
            let d = self.delay();
            self.at(self.now + d, Ev::ZkReply(pid, s, sent));
            return;
        }
        sess.last_heard = self.now;
        let d = self.delay();
        self.after(d, Ev::ZkReply(pid, s, sent));
    }

    fn zk_reply(&mut self, pid: Pid, s: u64, sent: Us) {
        if self.cut(End::Proc(pid), End::Zk) {
            return;
        }
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        if p.session != s {
            return;
        }
        if self.sessions[&s].expired {
            self.with(pid, |r| r.fence());
            self.register(pid);
            return;
        }
        let sent_at = self.t0 + Duration::from_micros(sent);
        let lease = Duration::from_micros(SESSION_TIMEOUT);
        self.with(pid, |r| r.handle_lease(sent_at, lease));
    }

    fn sweep(&mut self) {
        let now = self.now;
        let mut gone = Vec::new();
        for (id, s) in &mut self.sessions {
            if !s.expired && now > s.last_heard + SESSION_TIMEOUT {
                s.expired = true;
                gone.push((*id, s.pid, s.name.clone()));
            }
        }
        for (id, pid, name) in &gone {
            self.note(format!("session {id} of p{pid} ({name}) expires"));
            self.summary.expiries += 1;
            self.znodes.retain(|(_, s)| s != id);
        }
        if !gone.is_empty() {
            self.membership_changed();
        }
        self.after(SWEEP_EVERY, Ev::Sweep);
    }

    /// A watch fires: the member reads the children as they are now.
    fn view(&mut self, pid: Pid) {
        if self.cut(End::Proc(pid), End::Zk) {
            // Retried once the partition heals (the watch is re-armed on
            // reconnect).
            self.after(20 * MS, Ev::View(pid));
            return;
        }
        let members = self.members();
        let fenced_before = self.role(pid) == Some(NodeRole::Fenced);
        self.with(pid, |r| r.handle_membership(members));
        if !fenced_before && self.role(pid) == Some(NodeRole::Fenced) {
            // Its own node is gone: the coordinator registers it again.
            self.register(pid);
        }
    }

    fn role(&self, pid: Pid) -> Option<NodeRole> {
        self.procs.get(&pid).map(|p| p.replica.role())
    }

    // ----- links ------------------------------------------------------------

    fn dial(&mut self, pid: Pid, m: &Member) {
        // A new dial replaces any link this member still has downwards.
        self.drop_links(pid, true);
        let Ok(to) = m.addr.parse::<Pid>() else {
            return;
        };
        let id = self.next_link;
        self.next_link += 1;
        self.links.insert(
            id,
            Link {
                from: pid,
                to,
                state: LinkState::Connecting,
                down: VecDeque::new(),
                up: VecDeque::new(),
            },
        );
        let d = self.delay();
        self.after(d, Ev::Connect(id));
    }

    /// The handshake reaches the successor (or the connect fails).
    fn connect(&mut self, id: u64) {
        let Some(l) = self.links.get(&id) else {
            return;
        };
        let (from, to) = (l.from, l.to);
        if self.cut(End::Proc(from), End::Proc(to)) {
            self.after(10 * MS, Ev::Connect(id)); // SYNs retried
            return;
        }
        let from_name = match self.procs.get(&from) {
            Some(p) => p.replica.name().to_string(),
            None => return,
        };
        let accepted = self
            .procs
            .get(&to)
            .is_some_and(|p| p.replica.accepts_predecessor(&from_name));
        if !accepted {
            // Refused (or nobody listening): the dialler learns it.
            self.note(format!("p{to} refuses a link from p{from}"));
            self.break_link(id);
            return;
        }
        // Authenticated: it replaces the successor's current predecessor
        // link without telling its replica (server/peer.rs).
        let old: Vec<u64> = self
            .links
            .iter()
            .filter(|(i, l)| **i != id && l.to == to && l.state != LinkState::Connecting)
            .map(|(i, _)| *i)
            .collect();
        for o in old {
            if let Some(l) = self.links.remove(&o) {
                self.notify(l.from, o, true);
            }
        }
        let (role, last) = {
            let r = &self.procs[&to].replica;
            (r.role(), r.hello_last_seq())
        };
        if let Some(l) = self.links.get_mut(&id) {
            l.state = LinkState::Accepted;
        }
        self.note(format!(
            "p{to} accepts p{from} ({}, last {last})",
            role.name()
        ));
        self.send_on(id, Up::Hello(role, last));
    }

    fn send_up(&mut self, pid: Pid, up: Up) {
        let id = self
            .links
            .iter()
            .find(|(_, l)| l.to == pid && l.state != LinkState::Connecting)
            .map(|(id, _)| *id);
        if let Some(id) = id {
            self.send_on(id, up);
        }
    }

    fn send_on(&mut self, id: u64, up: Up) {
        let d = self.delay();
        let now = self.now;
        if let Some(l) = self.links.get_mut(&id) {
            let when = l.up.back().map_or(0, |m| m.0).max(now + d);
            l.up.push_back((when, up));
            self.at(when, Ev::Deliver(id));
        }
    }

    /// Delivers what has arrived on a link, both ways, unless partitioned
    /// (then it stalls, as TCP does, and tries again later).
    fn deliver(&mut self, id: u64) {
        let Some(l) = self.links.get(&id) else {
            return;
        };
        let (from, to) = (l.from, l.to);
        if self.cut(End::Proc(from), End::Proc(to)) {
            self.after(10 * MS, Ev::Deliver(id));
            return;
        }
        loop {
            let Some(l) = self.links.get_mut(&id) else {
                return;
            };
            if let Some((t, _)) = l.down.front() {
                if *t <= self.now {
                    let Some((_, body)) = l.down.pop_front() else {
                        return;
                    };
                    self.down(id, from, to, body);
                    self.with(from, |_| {}); // room on the link: feed it
                    continue;
                }
            }
            if let Some((t, _)) = l.up.front() {
                if *t <= self.now {
                    let Some((_, up)) = l.up.pop_front() else {
                        return;
                    };
                    self.up(id, from, up);
                    continue;
                }
            }
            return;
        }
    }

    fn down(&mut self, id: u64, from: Pid, to: Pid, body: Body) {
        let mut violation = None;
        self.with(to, |r| match body {
            Body::Update(u) => violation = r.handle_update(u).err(),
            Body::Snapshot(c) => r.handle_snapshot_chunk(c),
            Body::Handoff { seq } => r.handle_handoff(seq),
            _ => {}
        });
        if let Some(v) = violation {
            // An honest chain never sends an update that does not continue
            // its successor's history.
            self.fail(format!("stream violation p{from} -> p{to}: {v}"));
            self.break_link(id);
        }
    }

    fn up(&mut self, id: u64, from: Pid, up: Up) {
        match up {
            Up::Hello(role, last) => {
                if let Some(l) = self.links.get_mut(&id) {
                    l.state = LinkState::Ready;
                }
                self.with(from, |r| r.handle_successor_hello(role, last));
            }
            Up::Ack(seq) => self.with(from, |r| r.handle_ack(seq)),
        }
    }

    /// The replica closed its links of one kind: the other ends see it.
    fn drop_links(&mut self, pid: Pid, successor: bool) {
        let ids: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, l)| {
                if successor {
                    l.from == pid
                } else {
                    l.to == pid && l.state != LinkState::Connecting
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(l) = self.links.remove(&id) {
                if successor {
                    if l.state != LinkState::Connecting {
                        self.notify(l.to, id, false);
                    }
                } else {
                    self.notify(l.from, id, true);
                }
            }
        }
    }

    /// The link breaks under both ends; each learns it after a delay.
    fn break_link(&mut self, id: u64) {
        if let Some(l) = self.links.remove(&id) {
            self.summary.link_breaks += 1;
            self.notify(l.from, id, true);
            if l.state != LinkState::Connecting {
                self.notify(l.to, id, false);
            }
        }
    }

    fn notify(&mut self, pid: Pid, id: u64, dialler: bool) {
        let d = self.delay();
        self.after(d, Ev::Broken(pid, id, dialler));
    }

    fn learn_broken(&mut self, pid: Pid, _id: u64, dialler: bool) {
        if dialler {
            self.with(pid, |r| r.handle_successor_lost());
        } else {
            self.with(pid, |r| r.handle_predecessor_lost());
        }
    }

    // ----- clients ----------------------------------------------------------

    fn client_next(&mut self, c: usize) {
        if self.clients[c].pending.is_some() {
            return;
        }
        let view = self.clients[c].view.clone();
        let key = self.rng.gen_range(0..KEYS);
        let r = self.rng.gen_range(0..10);
        let req = match r {
            0..=3 => {
                self.clients[c].next_value += 1;
                Req::Put(key, self.clients[c].next_value)
            }
            4 => Req::Del(key),
            _ => Req::Get(key),
        };
        let target = match req {
            Req::Get(_) => view.last(),
            _ => view.first(),
        };
        let Some(pid) = target.and_then(|m| m.addr.parse::<Pid>().ok()) else {
            self.after(5 * MS, Ev::ClientNext(c));
            return;
        };
        let op = self.next_op;
        self.next_op += 1;
        self.clients[c].pending = Some((op, req, self.now));
        let d = self.delay();
        self.after(d, Ev::ClientArrive(c, op, pid));
        self.after(CLIENT_TIMEOUT, Ev::ClientGiveUp(c, op));
    }

    fn client_arrive(&mut self, c: usize, op: u64, pid: Pid) {
        let Some((_, req, _)) = self.clients[c].pending.clone().filter(|p| p.0 == op) else {
            return;
        };
        if !self.procs.get(&pid).is_some_and(|p| p.alive) {
            return; // connection refused or reset: the client times out
        }
        let reply = match req {
            Req::Get(key) => {
                let refused = self.procs[&pid].replica.check_can_read().is_err();
                let value = self.procs[&pid]
                    .table
                    .get(&key_of(key))
                    .map(|(_, v)| u64::from_le_bytes(v[..8].try_into().expect("8 bytes")));
                if refused {
                    Reply::Refused
                } else {
                    Reply::Value(value)
                }
            }
            Req::Put(key, value) => self.write(
                pid,
                c,
                op,
                WriteOp::Put {
                    key: key_of(key),
                    value: value.to_le_bytes().to_vec(),
                },
            ),
            Req::Del(key) => self.write(pid, c, op, WriteOp::Del { key: key_of(key) }),
        };
        if !matches!(reply, Reply::Unknown) {
            let d = self.delay();
            self.replies.insert((c, op), reply);
            self.after(d, Ev::ClientReply(c, op));
        }
    }

    /// A write at `pid`: refused now, or waiting for the tail (`Unknown`
    /// here means "no reply yet").
    fn write(&mut self, pid: Pid, c: usize, op: u64, wop: WriteOp) -> Reply {
        let token = WriteToken {
            conn: c as u64,
            request_id: op,
        };
        let mut result = None;
        if let Some(p) = self.procs.get_mut(&pid) {
            p.waiting.insert(token, (c, op));
        }
        self.with(pid, |r| {
            result = Some(r.handle_client_write(wop, Some(token)))
        });
        match result {
            Some(Err(_)) => {
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.waiting.remove(&token);
                }
                Reply::Refused
            }
            _ => Reply::Unknown,
        }
    }

    fn client_reply(&mut self, c: usize, op: u64) {
        let Some(reply) = self.replies.remove(&(c, op)) else {
            return;
        };
        let Some((_, req, call)) = self.clients[c].pending.clone().filter(|p| p.0 == op) else {
            return;
        };
        self.clients[c].pending = None;
        let ret = Some(self.now);
        let rec = match (req, reply) {
            (_, Reply::Refused) => None,
            (Req::Put(key, value), Reply::Written(existed)) => {
                Some((key, KvOp::Put { value, existed }, ret))
            }
            (Req::Del(key), Reply::Written(existed)) => Some((key, KvOp::Del { existed }, ret)),
            (Req::Get(key), Reply::Value(value)) => Some((key, KvOp::Get { value }, ret)),
            (Req::Put(key, value), Reply::Unknown) => Some((
                key,
                KvOp::Put {
                    value,
                    existed: None,
                },
                None,
            )),
            (Req::Del(key), Reply::Unknown) => Some((key, KvOp::Del { existed: None }, None)),
            _ => None,
        };
        if let Some((key, op, ret)) = rec {
            self.record(c, key, op, call, ret);
        }
        let think = self.rng.gen_range(0..2 * MS);
        self.after(think, Ev::ClientNext(c));
    }

    fn client_give_up(&mut self, c: usize, op: u64) {
        let Some((_, req, call)) = self.clients[c].pending.clone().filter(|p| p.0 == op) else {
            return;
        };
        self.clients[c].pending = None;
        self.replies.remove(&(c, op));
        match req {
            Req::Put(key, value) => self.record(
                c,
                key,
                KvOp::Put {
                    value,
                    existed: None,
                },
                call,
                None,
            ),
            Req::Del(key) => self.record(c, key, KvOp::Del { existed: None }, call, None),
            Req::Get(_) => {} // a read that never returned says nothing
        }
        self.after(0, Ev::ClientNext(c));
    }

    fn record(&mut self, c: usize, key: u32, op: KvOp, call: Us, ret: Option<Us>) {
        self.history.push(Recorded {
            client: u32::try_from(c).expect("few clients"),
            key,
            op,
            call_ns: i64::try_from(call * 1000).expect("a short run"),
            return_ns: ret.map(|r| i64::try_from(r * 1000).expect("a short run")),
        });
    }

    // ----- faults -----------------------------------------------------------

    /// Members that hold the whole state and are reachable: at least one
    /// must stay so, or the chain loses everything (f+1 members tolerate f
    /// failures; durability is what covers more).
    fn sound(&self, except: Option<Pid>) -> usize {
        let listed: BTreeSet<Pid> = self
            .znodes
            .iter()
            .map(|(_, s)| self.sessions[s].pid)
            .collect();
        self.procs
            .iter()
            .filter(|(pid, p)| {
                Some(**pid) != except
                    && listed.contains(pid)
                    && matches!(
                        p.replica.role(),
                        NodeRole::Head | NodeRole::Middle | NodeRole::Tail | NodeRole::Solo
                    )
                    && !self
                        .cuts
                        .iter()
                        .any(|(a, b)| *a == End::Proc(**pid) || *b == End::Proc(**pid))
            })
            .count()
    }

    fn fault(&mut self) {
        let pids: Vec<Pid> = self.procs.keys().copied().collect();
        let pick = self.rng.gen_range(0..pids.len());
        let victim = pids[pick];
        let other = pids[(pick + 1 + self.rng.gen_range(0..pids.len().max(2) - 1)) % pids.len()];
        let healthy = self.cuts.is_empty() && self.sound(Some(victim)) >= 1;
        match self.rng.gen_range(0..100) {
            0..=19 if healthy && pids.len() > 1 => self.crash(victim),
            20..=34 if self.procs.len() < 5 => {
                self.summary.joins += 1;
                self.spawn();
            }
            35..=49 if healthy => self.partition(vec![(End::Proc(victim), End::Zk)]),
            50..=64 if healthy && victim != other => {
                self.partition(vec![(End::Proc(victim), End::Proc(other))])
            }
            65..=74 if healthy => {
                // Cut off from ZooKeeper and every peer; clients still
                // reach it (the case a lease must cover).
                let mut cut = vec![(End::Proc(victim), End::Zk)];
                cut.extend(
                    pids.iter()
                        .filter(|p| **p != victim)
                        .map(|p| (End::Proc(victim), End::Proc(*p))),
                );
                self.partition(cut);
            }
            75..=89 if !self.links.is_empty() => {
                let ids: Vec<u64> = self.links.keys().copied().collect();
                let id = ids[self.rng.gen_range(0..ids.len())];
                self.note(format!("link {id} breaks"));
                self.break_link(id);
            }
            _ => {}
        }
        let next = self.rng.gen_range(20 * MS..120 * MS);
        self.after(next, Ev::Fault);
    }

    fn partition(&mut self, cut: Vec<(End, End)>) {
        self.summary.partitions += 1;
        self.note(format!("partition {cut:?}"));
        for (a, b) in cut {
            self.cuts.insert(if a < b { (a, b) } else { (b, a) });
        }
        // Shorter or longer than a session: both must be survived.
        let len = self.rng.gen_range(50 * MS..1200 * MS);
        self.after(len, Ev::Heal);
    }

    fn heal(&mut self) {
        if !self.cuts.is_empty() {
            self.note("heal".into());
        }
        self.cuts.clear();
    }

    // ----- checks -----------------------------------------------------------

    fn listed_active(&self) -> Vec<Pid> {
        self.znodes
            .iter()
            .map(|(_, s)| self.sessions[s].pid)
            .filter(|pid| {
                self.procs.get(pid).is_some_and(|p| {
                    matches!(
                        p.replica.role(),
                        NodeRole::Head | NodeRole::Middle | NodeRole::Tail | NodeRole::Solo
                    )
                })
            })
            .collect()
    }

    /// The paper's invariants: histories only grow in order; along the
    /// chain (as ZooKeeper lists it) a member's history is a prefix of its
    /// predecessor's, and what it lacks is in the predecessor's Sent list.
    fn check_invariants(&mut self) {
        let active = self.listed_active();
        let order: Vec<Pid> = self
            .znodes
            .iter()
            .map(|(_, s)| self.sessions[s].pid)
            .collect();
        for pair in active.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (ia, ib) = (
                order.iter().position(|p| *p == a),
                order.iter().position(|p| *p == b),
            );
            if ia.map(|i| i + 1) != ib {
                continue; // not adjacent
            }
            let (p, s) = (&self.procs[&a], &self.procs[&b]);
            if !p.hist.starts_with(&s.hist) {
                let msg = format!(
                    "p{b}'s history is not a prefix of its predecessor p{a}'s: {:?} vs {:?}",
                    tail(&s.hist),
                    tail(&p.hist)
                );
                return self.fail(msg);
            }
            if !p.tasks.is_empty() {
                continue;
            }
            let sent: BTreeSet<u64> = p.replica.sent().iter().map(|u| u.seq).collect();
            if let Some(seq) = p.hist[s.hist.len()..]
                .iter()
                .find(|q| !sent.contains(q) && !self.acked.contains(q))
            {
                let msg = format!("p{a} lost {seq} on the way to p{b}");
                return self.fail(msg);
            }
        }
        if self.summary.events % 32 == 0 {
            self.check_acked(&active);
        }
    }

    /// Every acknowledged write is in every listed complete member.
    fn check_acked(&mut self, active: &[Pid]) {
        for pid in active {
            let hist = &self.procs[pid].hist;
            if let Some(a) = self.acked.iter().find(|a| hist.binary_search(a).is_err()) {
                let msg = format!("p{pid} lacks acknowledged write {a}");
                return self.fail(msg);
            }
        }
    }

    fn quiet(&self) -> bool {
        let listed: Vec<Pid> = self
            .znodes
            .iter()
            .map(|(_, s)| self.sessions[s].pid)
            .collect();
        let all_listed = self.procs.keys().all(|p| listed.contains(p))
            && listed.iter().all(|p| self.procs.contains_key(p));
        all_listed
            && self.procs.values().all(|p| {
                p.tasks.is_empty()
                    && !p.replica.snapshot_pending()
                    && matches!(
                        p.replica.role(),
                        NodeRole::Head | NodeRole::Middle | NodeRole::Tail | NodeRole::Solo
                    )
                    && p.replica.last_acked() == p.replica.last_applied()
            })
            && self.links.len() + 1 == self.procs.len()
            && self
                .links
                .values()
                .all(|l| l.state == LinkState::Ready && l.down.is_empty() && l.up.is_empty())
            && self.clients.iter().all(|c| c.pending.is_none())
    }

    /// No more faults or client requests: heal and let the chain settle.
    fn quiesce(&mut self) -> Result<(), String> {
        self.heal();
        let drained: Vec<Reverse<(Us, u64, Ev)>> = std::mem::take(&mut self.queue)
            .into_iter()
            .filter(|Reverse((_, _, e))| !matches!(e, Ev::Fault | Ev::ClientNext(_)))
            .collect();
        self.queue = drained.into_iter().collect();
        let deadline = self.now + 20 * SESSION_TIMEOUT;
        while !self.quiet() {
            if self.now >= deadline {
                let roles: Vec<String> = self
                    .procs
                    .iter()
                    .map(|(pid, p)| {
                        format!("p{pid} {} {}", p.replica.name(), p.replica.role().name())
                    })
                    .collect();
                return Err(format!(
                    "seed {}: the chain never quiesced: {roles:?}, {} links\n{:#?}",
                    self.p.seed,
                    self.links.len(),
                    self.trace
                ));
            }
            let until = self.now + 10 * MS;
            self.run_until(until, true)?;
        }
        Ok(())
    }

    fn final_checks(&mut self) -> Result<(), String> {
        let seed = self.p.seed;
        let order: Vec<Pid> = self
            .znodes
            .iter()
            .map(|(_, s)| self.sessions[s].pid)
            .collect();
        let first = &self.procs[&order[0]];
        for pid in &order {
            let p = &self.procs[pid];
            if p.table != first.table || p.hist != first.hist {
                return Err(format!("seed {seed}: p{pid} and p{} differ", order[0]));
            }
        }
        if let Some(a) = self
            .acked
            .iter()
            .find(|a| first.hist.binary_search(a).is_err())
        {
            return Err(format!("seed {seed}: acknowledged write {a} lost"));
        }
        let roles: Vec<NodeRole> = order.iter().map(|p| self.procs[p].replica.role()).collect();
        let shape_ok = if roles.len() == 1 {
            roles == [NodeRole::Solo]
        } else {
            roles.first() == Some(&NodeRole::Head) && roles.last() == Some(&NodeRole::Tail)
        };
        if !shape_ok {
            return Err(format!("seed {seed}: roles {roles:?}"));
        }
        Ok(())
    }

    fn check_history(&self) -> Result<(), String> {
        match lincheck::check(&self.history, Duration::from_secs(20)) {
            Verdict::Linearizable => Ok(()),
            other => Err(format!(
                "seed {}: clients' history not linearizable: {other:?}",
                self.p.seed
            )),
        }
    }
}

fn key_of(k: u32) -> Key {
    Key::new(format!("k{k}")).expect("short key")
}

fn tail(h: &[u64]) -> &[u64] {
    &h[h.len().saturating_sub(8)..]
}
