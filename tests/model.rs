//! Exhaustive model checking of the replica with `stateright`: every
//! interleaving of a small chain (3 members, a couple of client writes and
//! reads, and a budget of faults: a crash, a join, a broken link, a member
//! cut off from ZooKeeper whose lease lapses). The nodes are the real
//! `Replica` state machines; what the checker chooses is the order in
//! which messages, worker steps, membership views, timers and faults
//! happen. Random schedules (`tests/chain_sim`) are thin exactly where this
//! is thick: short histories with every ordering tried.
//!
//! Properties, checked in every reachable state: the clients' history is
//! linearizable (stateright's `LinearizabilityTester` over a register),
//! no honest member ever sends an update that breaks its successor's
//! history, every acknowledged write is held by every listed complete
//! member, and along the chain each history is a prefix of its
//! predecessor's. The planted bugs (`testing` feature) must each be found.
//!
//! The default run checks a small instance; the larger one is
//! `MODEL=large cargo test --release --features testing --test model --
//! --nocapture` (README: "Model checking").

#![cfg(feature = "testing")]

use chaintable::member::Member;
use chaintable::replica::{Action, PlantedBug, ReadScope, Replica, WriteToken, REDIAL_DELAY};
use chaintable::serialize::Key;
use chaintable::wire::{Body, NodeRole, SnapshotChunk, Update, WriteOp, WriteOutcome};
use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};
use stateright::{Checker, HasDiscoveries, Model, Property};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const LEASE: Duration = Duration::from_secs(3600);

/// The instant every node's clock counts from, fixed for the whole run so
/// that equal states print (and hash) equally.
fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn key() -> Key {
    Key::new("k").expect("short key")
}

/// What one check explores.
#[derive(Clone, Debug)]
struct Cfg {
    members: usize,
    /// Clients that each write once (client `c` writes value `c + 1`).
    writers: u8,
    /// Clients that each read once.
    readers: u8,
    crashes: u8,
    joins: u8,
    breaks: u8,
    isolations: u8,
    /// Timer firings (a held-back redial, a silent successor dropped):
    /// each moves a node's clock forward, so they are budgeted like
    /// faults, or the clock alone would make the state space infinite.
    ticks: u8,
    planted: Option<PlantedBug>,
}

#[derive(Clone, Debug)]
enum Task {
    Apply(Update),
    Snapshot,
    Install(SnapshotChunk),
}

#[derive(Clone, Debug)]
struct Node {
    replica: Replica,
    /// The register's value in this member's table (0: absent).
    value: u8,
    hist: Vec<u64>,
    tasks: VecDeque<Task>,
    alive: bool,
    /// Cut off from ZooKeeper: no views, no renewals; clients and peers
    /// still reach it.
    isolated: bool,
    /// Its clock has passed its lease (only once isolated).
    lapsed: bool,
    view_stale: bool,
    /// Ticks of this node's clock (each up to its next timer).
    clock: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum LinkState {
    Connecting,
    Accepted,
    Ready,
}

#[derive(Clone, Debug)]
enum Up {
    Hello(NodeRole, u64),
    Ack(u64),
}

#[derive(Clone, Debug)]
struct Link {
    from: usize,
    to: usize,
    state: LinkState,
    down: VecDeque<Body>,
    up: VecDeque<Up>,
}

#[derive(Clone, Debug)]
struct State {
    nodes: Vec<Node>,
    /// ZooKeeper's list of members, head first (node indexes).
    zk: Vec<usize>,
    next_name: u32,
    links: Vec<Link>,
    tester: LinearizabilityTester<u8, Register<u8>>,
    /// Clients that have not sent their request yet.
    idle: BTreeSet<u8>,
    /// Writes admitted and not answered: client → (node, token).
    pending: BTreeMap<u8, usize>,
    acked: BTreeSet<u64>,
    snapshots: BTreeMap<u64, Vec<u64>>,
    budget: [u8; 5],
    violation: Option<String>,
}

/// Equal states hash equally: the replica's own `Debug` output is its
/// whole state (its instants all count from [`t0`]), so it stands in for
/// a `Hash` implementation the production type does not need.
impl Hash for State {
    fn hash<H: Hasher>(&self, h: &mut H) {
        format!("{:?}", self.nodes).hash(h);
        self.zk.hash(h);
        format!("{:?}", self.links).hash(h);
        self.tester.hash(h);
        self.idle.hash(h);
        self.pending.hash(h);
        self.acked.hash(h);
        self.budget.hash(h);
        self.violation.hash(h);
    }
}

/// Equality by the same printed form as [`Hash`] (the checker compares
/// states only when it rebuilds a path).
impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

const CRASH: usize = 0;
const JOIN: usize = 1;
const BREAK: usize = 2;
const ISOLATE: usize = 3;
const TICK: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Act {
    Write(u8, usize),
    Read(u8, usize),
    Work(usize),
    Connect(usize),
    Down(usize),
    Up(usize),
    View(usize),
    Tick(usize),
    Crash(usize),
    Expire(usize),
    Join,
    Break(usize),
    Isolate(usize),
    Lapse(usize),
    /// An isolated member whose session expired hears so (the partition
    /// heals): it fences and registers again under a new name, at the
    /// same address, as a joiner at the end of the chain.
    Rejoin(usize),
}

struct Chain {
    cfg: Cfg,
}

fn complete(r: &Replica) -> bool {
    matches!(
        r.role(),
        NodeRole::Head | NodeRole::Middle | NodeRole::Tail | NodeRole::Solo
    )
}

impl State {
    fn members(&self) -> Vec<Member> {
        self.zk
            .iter()
            .map(|i| Member {
                name: self.nodes[*i].replica.name().to_string(),
                addr: i.to_string(),
            })
            .collect()
    }

    fn spawn(&mut self, cfg: &Cfg) {
        let mut r = Replica::chain_member(String::new(), 8);
        r.set_snapshot_chunk_entries(1);
        if let Some(bug) = cfg.planted {
            r.plant(bug);
        }
        r.handle_timeout(t0());
        r.handle_lease(t0(), LEASE);
        r.rejoin(format!("n{}", self.next_name));
        self.next_name += 1;
        self.zk.push(self.nodes.len());
        self.nodes.push(Node {
            replica: r,
            value: 0,
            hist: Vec::new(),
            tasks: VecDeque::new(),
            alive: true,
            isolated: false,
            lapsed: false,
            view_stale: true,
            clock: Duration::ZERO,
        });
        self.membership_changed();
        let i = self.nodes.len() - 1;
        self.drain(i);
    }

    fn membership_changed(&mut self) {
        for n in &mut self.nodes {
            n.view_stale = true;
        }
    }

    /// Carries out node `i`'s actions (the server's dispatch), and feeds a
    /// pending snapshot while its link is short.
    fn drain(&mut self, i: usize) {
        loop {
            while let Some(a) = self.nodes[i].replica.poll_action() {
                self.action(i, a);
            }
            let feeding = self.nodes[i].replica.snapshot_pending()
                && self
                    .links
                    .iter()
                    .any(|l| l.from == i && l.state == LinkState::Ready && l.down.len() < 2);
            if !feeding {
                return;
            }
            self.nodes[i].replica.handle_successor_writable();
        }
    }

    fn action(&mut self, i: usize, a: Action) {
        match a {
            Action::Apply(u) => self.nodes[i].tasks.push_back(Task::Apply(u)),
            Action::Snapshot => self.nodes[i].tasks.push_back(Task::Snapshot),
            Action::Install(c) => self.nodes[i].tasks.push_back(Task::Install(c)),
            Action::WriteDone { token, result, .. } => {
                self.acked.insert(result.op_id);
                let c = u8::try_from(token.conn).expect("a client index");
                if self.pending.remove(&c).is_some() {
                    let _ = self.tester.on_return(c, RegisterRet::WriteOk);
                }
            }
            Action::WriteFailed { token, .. } => {
                // Outcome unknown: the write stays in flight for ever.
                self.pending
                    .remove(&u8::try_from(token.conn).expect("a client index"));
            }
            Action::ConnectSuccessor(m) => {
                self.drop_links(i, true);
                if let Ok(to) = m.addr.parse() {
                    self.links.push(Link {
                        from: i,
                        to,
                        state: LinkState::Connecting,
                        down: VecDeque::new(),
                        up: VecDeque::new(),
                    });
                }
            }
            Action::DropSuccessor => self.drop_links(i, true),
            Action::DropPredecessor => self.drop_links(i, false),
            Action::SendDown(body) => {
                if let Some(l) = self
                    .links
                    .iter_mut()
                    .find(|l| l.from == i && l.state == LinkState::Ready)
                {
                    l.down.push_back(body);
                }
            }
            Action::SendUp(seq) => {
                if let Some(l) = self
                    .links
                    .iter_mut()
                    .find(|l| l.to == i && l.state != LinkState::Connecting)
                {
                    l.up.push_back(Up::Ack(seq));
                }
            }
            // Modelled members keep no disk, so they are never durable.
            Action::RaiseFloor(_) | Action::StepAside => {
                panic!("a modelled member asked for durable-chain work")
            }
        }
    }

    /// Closes node `i`'s links downwards (or upwards); the other end
    /// learns it at once.
    fn drop_links(&mut self, i: usize, successor: bool) {
        let (gone, kept): (Vec<Link>, Vec<Link>) =
            std::mem::take(&mut self.links).into_iter().partition(|l| {
                if successor {
                    l.from == i
                } else {
                    l.to == i && l.state != LinkState::Connecting
                }
            });
        self.links = kept;
        for l in gone {
            if successor && l.state != LinkState::Connecting {
                self.with(l.to, Replica::handle_predecessor_lost);
            } else if !successor {
                self.with(l.from, Replica::handle_successor_lost);
            }
        }
    }

    fn break_link(&mut self, k: usize) {
        let l = self.links.remove(k);
        self.with(l.from, Replica::handle_successor_lost);
        if l.state != LinkState::Connecting {
            self.with(l.to, Replica::handle_predecessor_lost);
        }
    }

    fn with(&mut self, i: usize, f: impl FnOnce(&mut Replica)) {
        if self.nodes[i].alive {
            f(&mut self.nodes[i].replica);
            self.drain(i);
        }
    }

    fn work(&mut self, i: usize) {
        let Some(task) = self.nodes[i].tasks.pop_front() else {
            return;
        };
        let n = &mut self.nodes[i];
        match task {
            Task::Apply(u) => {
                let existed = n.value != 0;
                n.value = match &u.op {
                    WriteOp::Put { value, .. } => value[0],
                    WriteOp::Del { .. } => 0,
                    // The model's clients send no compare-and-set.
                    _ => n.value,
                };
                n.hist.push(u.seq);
                let outcome = if existed {
                    WriteOutcome::Existed
                } else {
                    WriteOutcome::Absent
                };
                self.with(i, |r| r.handle_applied(u, outcome));
            }
            Task::Snapshot => {
                let seq = n.hist.last().copied().unwrap_or(0);
                let entries = (n.value != 0)
                    .then(|| chaintable::serialize::Entry {
                        key: key(),
                        version: seq,
                        value: vec![n.value],
                    })
                    .into_iter()
                    .collect();
                self.snapshots.insert(seq, n.hist.clone());
                self.with(i, |r| r.handle_snapshot_taken(seq, entries));
            }
            Task::Install(c) => {
                if c.first {
                    n.value = 0;
                    n.hist.clear();
                }
                if let Some(e) = c.entries.first() {
                    n.value = e.value[0];
                }
                if c.last {
                    let seq = c.snapshot_seq;
                    n.hist = self.snapshots.get(&seq).cloned().unwrap_or_default();
                    self.with(i, |r| r.handle_snapshot_installed(seq));
                }
            }
        }
    }

    fn connect(&mut self, k: usize) {
        let (from, to) = (self.links[k].from, self.links[k].to);
        let name = self.nodes[from].replica.name().to_string();
        let to_node = &self.nodes[to];
        if !to_node.alive || !to_node.replica.accepts_predecessor(&name) {
            self.break_link(k);
            return;
        }
        // It replaces the successor's predecessor link (server/peer.rs).
        let old: Vec<usize> = (0..self.links.len())
            .filter(|j| *j != k && self.links[*j].to == to)
            .filter(|j| self.links[*j].state != LinkState::Connecting)
            .collect();
        let hello = Up::Hello(to_node.replica.role(), to_node.replica.hello_last_seq());
        self.links[k].state = LinkState::Accepted;
        self.links[k].up.push_back(hello);
        for j in old.into_iter().rev() {
            let l = self.links.remove(j);
            self.with(l.from, Replica::handle_successor_lost);
        }
        self.with(to, Replica::handle_predecessor_linked);
    }

    fn down(&mut self, k: usize) {
        let (from, to) = (self.links[k].from, self.links[k].to);
        let Some(body) = self.links[k].down.pop_front() else {
            return;
        };
        let mut violation = None;
        self.with(to, |r| match body {
            Body::Update(u) => violation = r.handle_update(u).err(),
            Body::Snapshot(c) => r.handle_snapshot_chunk(c),
            Body::Handoff { seq } => r.handle_handoff(seq),
            _ => {}
        });
        if let Some(v) = violation {
            self.violation = Some(format!("n{from} -> n{to}: {v}"));
        }
        self.drain(from); // room on the link
    }

    fn up(&mut self, k: usize) {
        let from = self.links[k].from;
        let Some(up) = self.links[k].up.pop_front() else {
            return;
        };
        match up {
            Up::Hello(role, last) => {
                self.links[k].state = LinkState::Ready;
                self.with(from, |r| r.handle_successor_hello(role, last));
            }
            Up::Ack(seq) => self.with(from, |r| r.handle_ack(seq)),
        }
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i].alive = false;
        self.nodes[i].tasks.clear();
        let (gone, kept): (Vec<Link>, Vec<Link>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|l| l.from == i || l.to == i);
        self.links = kept;
        for l in gone {
            if l.to == i {
                self.with(l.from, Replica::handle_successor_lost);
            } else if l.state != LinkState::Connecting {
                self.with(l.to, Replica::handle_predecessor_lost);
            }
        }
    }

    fn tick(&mut self, i: usize) {
        let Some(at) = self.nodes[i].replica.poll_timeout() else {
            return;
        };
        let n = &mut self.nodes[i];
        n.clock = at.saturating_duration_since(t0());
        self.with(i, |r| r.handle_timeout(at));
    }

    /// Listed members that hold the whole state, in chain order.
    fn listed_complete(&self) -> Vec<usize> {
        self.zk
            .iter()
            .copied()
            .filter(|i| self.nodes[*i].alive && complete(&self.nodes[*i].replica))
            .collect()
    }
}

impl Model for Chain {
    type State = State;
    type Action = Act;

    fn init_states(&self) -> Vec<State> {
        let c = &self.cfg;
        let mut s = State {
            nodes: Vec::new(),
            zk: Vec::new(),
            next_name: 0,
            links: Vec::new(),
            tester: LinearizabilityTester::new(Register(0)),
            idle: (0..c.writers + c.readers).collect(),
            pending: BTreeMap::new(),
            acked: BTreeSet::new(),
            snapshots: BTreeMap::new(),
            budget: [c.crashes, c.joins, c.breaks, c.isolations, c.ticks],
            violation: None,
        };
        for _ in 0..c.members {
            s.spawn(c);
        }
        // Start from a formed chain: views, links, snapshots all settled.
        settle(&mut s);
        vec![s]
    }

    fn actions(&self, s: &State, acts: &mut Vec<Act>) {
        let alive: Vec<usize> = (0..s.nodes.len()).filter(|i| s.nodes[*i].alive).collect();
        for c in &s.idle {
            for i in &alive {
                acts.push(if *c < self.cfg.writers {
                    Act::Write(*c, *i)
                } else {
                    Act::Read(*c, *i)
                });
            }
        }
        for i in &alive {
            let n = &s.nodes[*i];
            if !n.tasks.is_empty() {
                acts.push(Act::Work(*i));
            }
            if n.view_stale && !n.isolated {
                acts.push(Act::View(*i));
            }
            let timer = n.replica.poll_timeout();
            if s.budget[TICK] > 0 && timer.is_some_and(|t| t < t0() + LEASE) {
                acts.push(Act::Tick(*i));
            }
            if s.budget[CRASH] > 0 && s.listed_complete().iter().any(|j| j != i) {
                acts.push(Act::Crash(*i));
            }
            if s.budget[ISOLATE] > 0 && !n.isolated && s.listed_complete().iter().any(|j| j != i) {
                acts.push(Act::Isolate(*i));
            }
            if n.isolated && !n.lapsed {
                acts.push(Act::Lapse(*i));
            }
            if n.isolated && n.lapsed && !s.zk.contains(i) {
                acts.push(Act::Rejoin(*i));
            }
        }
        for i in &s.zk {
            let n = &s.nodes[*i];
            if !n.alive || n.lapsed {
                acts.push(Act::Expire(*i));
            }
        }
        for (k, l) in s.links.iter().enumerate() {
            if l.state == LinkState::Connecting {
                acts.push(Act::Connect(k));
            }
            if !l.down.is_empty() {
                acts.push(Act::Down(k));
            }
            if !l.up.is_empty() {
                acts.push(Act::Up(k));
            }
            if s.budget[BREAK] > 0 {
                acts.push(Act::Break(k));
            }
        }
        if s.budget[JOIN] > 0 {
            acts.push(Act::Join);
        }
    }

    fn next_state(&self, last: &State, act: Act) -> Option<State> {
        let mut s = last.clone();
        match act {
            Act::Write(c, i) => {
                let value = vec![c + 1];
                let op = WriteOp::Put { key: key(), value };
                let token = WriteToken {
                    conn: u64::from(c),
                    request_id: 1,
                };
                let mut admitted = false;
                s.with(i, |r| {
                    admitted = r.handle_client_write(op, Some(token)).is_ok()
                });
                if !admitted {
                    return None; // refused: nothing happened
                }
                s.idle.remove(&c);
                s.pending.insert(c, i);
                // The write was admitted in this step: invoked before any
                // effect it can have (its WriteDone comes later).
                let _ = s.tester.on_invoke(c, RegisterOp::Write(c + 1));
            }
            Act::Read(c, i) => {
                if s.nodes[i]
                    .replica
                    .check_can_read(ReadScope::Keys(&[key()]))
                    .is_err()
                {
                    return None;
                }
                s.idle.remove(&c);
                let v = s.nodes[i].value;
                let _ = s
                    .tester
                    .on_invret(c, RegisterOp::Read, RegisterRet::ReadOk(v));
            }
            Act::Work(i) => s.work(i),
            Act::Connect(k) => s.connect(k),
            Act::Down(k) => s.down(k),
            Act::Up(k) => s.up(k),
            Act::View(i) => {
                s.nodes[i].view_stale = false;
                let members = s.members();
                s.with(i, |r| r.handle_membership(members));
            }
            Act::Tick(i) => {
                s.budget[TICK] -= 1;
                s.tick(i);
            }
            Act::Crash(i) => {
                s.budget[CRASH] -= 1;
                s.crash(i);
            }
            Act::Expire(i) => {
                s.zk.retain(|j| *j != i);
                s.membership_changed();
            }
            Act::Join => {
                s.budget[JOIN] -= 1;
                s.spawn(&self.cfg);
            }
            Act::Break(k) => {
                s.budget[BREAK] -= 1;
                s.break_link(k);
            }
            Act::Isolate(i) => {
                s.budget[ISOLATE] -= 1;
                s.nodes[i].isolated = true;
            }
            Act::Rejoin(i) => {
                let name = format!("n{}", s.next_name);
                s.next_name += 1;
                s.with(i, Replica::fence);
                let n = &mut s.nodes[i];
                n.isolated = false;
                n.lapsed = false;
                // A fresh session: the lease runs from this node's clock.
                let now = t0() + LEASE + Duration::from_secs(2);
                s.with(i, |r| {
                    r.handle_lease(now, LEASE);
                    r.rejoin(name);
                });
                s.zk.push(i);
                s.membership_changed();
            }
            Act::Lapse(i) => {
                s.nodes[i].lapsed = true;
                let after = t0() + LEASE + Duration::from_secs(1);
                s.with(i, |r| r.handle_timeout(after));
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("linearizable", |_, s: &State| {
                s.tester.serialized_history().is_some()
            }),
            Property::always("no stream violation", |_, s: &State| s.violation.is_none()),
            Property::always(
                "acknowledged writes held by listed members",
                |_, s: &State| {
                    s.listed_complete().iter().all(|i| {
                        let h = &s.nodes[*i].hist;
                        s.acked.iter().all(|a| h.contains(a))
                    })
                },
            ),
            Property::always("histories are prefixes along the chain", |_, s: &State| {
                let order = s.listed_complete();
                order.windows(2).all(|w| {
                    let adjacent = s.zk.iter().position(|x| *x == w[0]).map(|p| p + 1)
                        == s.zk.iter().position(|x| *x == w[1]);
                    !adjacent || s.nodes[w[0]].hist.starts_with(&s.nodes[w[1]].hist)
                })
            }),
            Property::sometimes("a write is acknowledged", |_, s: &State| {
                !s.acked.is_empty()
            }),
        ]
    }
}

/// Runs every node's pending work, views, links and timers (short of the
/// lease) until nothing is left: the chain as it stands when formed.
fn settle(s: &mut State) {
    for _ in 0..10_000 {
        let mut did = false;
        for i in 0..s.nodes.len() {
            if s.nodes[i].view_stale {
                s.nodes[i].view_stale = false;
                let members = s.members();
                s.with(i, |r| r.handle_membership(members));
                did = true;
            }
            if !s.nodes[i].tasks.is_empty() {
                s.work(i);
                did = true;
            }
            let due = s.nodes[i].replica.poll_timeout();
            if due.is_some_and(|t| t <= t0() + REDIAL_DELAY * 10) {
                s.tick(i);
                did = true;
            }
        }
        for k in (0..s.links.len()).rev() {
            if k >= s.links.len() {
                continue;
            }
            match s.links[k].state {
                LinkState::Connecting => s.connect(k),
                _ if !s.links[k].down.is_empty() => s.down(k),
                _ if !s.links[k].up.is_empty() => s.up(k),
                _ => continue,
            }
            did = true;
        }
        if !did {
            return;
        }
    }
    panic!("the initial chain never settled");
}

/// A chain of 3 with two writes, one read and one crash.
fn small() -> Cfg {
    Cfg {
        members: 3,
        writers: 2,
        readers: 1,
        crashes: 1,
        joins: 0,
        breaks: 0,
        isolations: 0,
        ticks: 1,
        planted: None,
    }
}

/// A chain of 3 with one write, one read, and one member cut off from
/// ZooKeeper: its lease lapses, its session expires, it may register
/// again under a new name at the same address.
fn partitioned() -> Cfg {
    Cfg {
        writers: 1,
        crashes: 0,
        isolations: 1,
        ..small()
    }
}

/// A chain of 3 with one write and two reads, at any member (CRAQ): a
/// read that sees a write must not be followed by one that does not.
fn two_readers() -> Cfg {
    Cfg {
        writers: 1,
        readers: 2,
        ..small()
    }
}

fn large() -> Cfg {
    Cfg {
        members: 3,
        writers: 2,
        readers: 1,
        crashes: 1,
        joins: 1,
        breaks: 1,
        isolations: 1,
        ticks: 2,
        planted: None,
    }
}

/// `MODEL_CFG=members,writers,readers,crashes,joins,breaks,isolations,ticks`
/// overrides a configuration (to explore another corner by hand).
fn from_env(mut cfg: Cfg) -> Cfg {
    let Ok(spec) = std::env::var("MODEL_CFG") else {
        return cfg;
    };
    let n: Vec<u8> = spec
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    assert_eq!(n.len(), 8, "MODEL_CFG needs 8 numbers");
    cfg.members = usize::from(n[0]);
    (cfg.writers, cfg.readers, cfg.crashes, cfg.joins) = (n[1], n[2], n[3], n[4]);
    (cfg.breaks, cfg.isolations, cfg.ticks) = (n[5], n[6], n[7]);
    cfg
}

/// How long one check may explore (`MODEL_SECS`, default 300): the small
/// instance finishes in seconds; a large one is cut off and says so.
fn time_limit() -> Duration {
    let secs = std::env::var("MODEL_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    Duration::from_secs(secs.unwrap_or(300))
}

/// What one exploration found.
struct Explored {
    states: usize,
    unique: usize,
    /// The `always` properties broken somewhere.
    broken: Vec<&'static str>,
    /// Whether some write was acknowledged (the `sometimes` property).
    acked_somewhere: bool,
}

/// Explores every state of `cfg`; with `first_failure`, stops at the first
/// property broken. Breadth first, so a counterexample is a shortest one,
/// except for `MODEL=large`: its breadth-first frontier of whole states
/// outgrew 24 GiB within minutes, so it goes depth first.
fn check(cfg: Cfg, first_failure: bool) -> Explored {
    let builder = Chain { cfg: from_env(cfg) }
        .checker()
        .threads(2)
        .timeout(time_limit());
    let builder = if first_failure {
        builder.finish_when(HasDiscoveries::AnyFailures)
    } else {
        builder
    };
    if std::env::var("MODEL").as_deref() == Ok("large") {
        explored(&builder.spawn_dfs().join())
    } else {
        explored(&builder.spawn_bfs().join())
    }
}

fn explored(checker: &impl Checker<Chain>) -> Explored {
    Explored {
        states: checker.state_count(),
        unique: checker.unique_state_count(),
        broken: PROPERTIES
            .into_iter()
            .filter(|p| checker.discovery(p).is_some())
            .collect(),
        acked_somewhere: checker.discovery("a write is acknowledged").is_some(),
    }
}

fn check_honest(name: &str, cfg: Cfg) {
    let started = Instant::now();
    let e = check(cfg.clone(), false);
    // `is_done` is also true after a timeout: finishing early is the test.
    let exhaustive = started.elapsed() < time_limit();
    eprintln!(
        "model {name} {:?}: {} states ({} unique) in {:.1} s, {}",
        from_env(cfg),
        e.states,
        e.unique,
        started.elapsed().as_secs_f64(),
        if exhaustive {
            "every state explored"
        } else {
            "CUT OFF by MODEL_SECS"
        }
    );
    assert!(e.broken.is_empty(), "properties broken: {:?}", e.broken);
    assert!(e.acked_somewhere, "no write was ever acknowledged");
    assert!(e.unique > 1000, "the model explored too little");
}

#[test]
fn every_interleaving_of_a_chain_with_a_crash_is_linearizable_and_keeps_the_invariants() {
    if std::env::var("MODEL").as_deref() == Ok("large") {
        return check_honest("large", large());
    }
    check_honest("small", small());
}

#[test]
fn every_interleaving_of_a_chain_with_a_member_cut_off_is_linearizable() {
    check_honest("partitioned", partitioned());
}

#[test]
fn every_interleaving_of_reads_at_every_member_with_a_crash_is_linearizable() {
    check_honest("two readers", two_readers());
}

/// Checks `cfg` with `bug` planted: a property must break, or a replica
/// invariant (an `assert!` kept in release builds) must stop it.
fn find_planted(bug: PlantedBug, cfg: Cfg) {
    let started = Instant::now();
    let cfg = Cfg {
        planted: Some(bug),
        ..cfg
    };
    let outcome = std::panic::catch_unwind(|| {
        let e = check(cfg, true);
        (e.broken, e.unique)
    });
    let found = match outcome {
        Ok((broken, states)) => {
            eprintln!(
                "{bug:?}: {broken:?} broken after {states} unique states, {:.1} s",
                started.elapsed().as_secs_f64()
            );
            !broken.is_empty()
        }
        Err(_) => {
            eprintln!(
                "{bug:?}: a replica invariant stopped it, {:.1} s",
                started.elapsed().as_secs_f64()
            );
            true
        }
    };
    assert!(found, "the model checker missed {bug:?}");
}

/// The properties a planted bug may break.
const PROPERTIES: [&str; 4] = [
    "linearizable",
    "no stream violation",
    "acknowledged writes held by listed members",
    "histories are prefixes along the chain",
];

#[test]
fn the_model_checker_finds_an_ack_before_the_successor_has_the_write() {
    find_planted(PlantedBug::AckBeforeSuccessor, small());
}

#[test]
fn the_model_checker_finds_reads_after_the_lease_lapsed() {
    find_planted(PlantedBug::ServeAfterLeaseLapsed, partitioned());
}

#[test]
fn the_model_checker_finds_craq_reads_of_dirty_keys() {
    find_planted(PlantedBug::ReadDirtyKeys, two_readers());
}

#[test]
fn the_model_checker_finds_a_stale_predecessor_accepted() {
    find_planted(PlantedBug::AcceptStalePredecessor, partitioned());
}
