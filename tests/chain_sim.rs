//! Deterministic simulation of the chain: 3–5 `Replica` state machines in
//! memory, with in-order links, lagging workers, lagging membership views,
//! crashes, joins and reconfigurations, all chosen by a seeded RNG. After
//! every step the paper's invariants are checked; at the end the chain is
//! quiesced and every surviving member must hold the same table, with every
//! acknowledged write in it.

use chaintable::replica::{Action, Member, Replica, WriteToken};
use chaintable::serialize::{Entry, Key};
use chaintable::wire::{Body, NodeRole, SnapshotChunk, Update, WriteOp, WriteOutcome};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

const SCHEDULES: u64 = 1500;
const STEPS: usize = 400;
const SENT_MAX: usize = 64;

enum Task {
    Apply(Update),
    Snapshot,
    Install(SnapshotChunk),
}

struct Node {
    replica: Replica,
    table: BTreeMap<Key, (u64, Vec<u8>)>,
    /// Sequence numbers applied, in order (a snapshot copies its source's).
    hist: Vec<u64>,
    tasks: VecDeque<Task>,
    /// Membership changes not yet delivered to this node.
    view_stale: bool,
}

/// A peer link from `from` to its successor `to`.
struct Link {
    from: String,
    to: String,
    established: bool,
    down: VecDeque<Body>,
    up: VecDeque<u64>,
}

struct Sim {
    rng: StdRng,
    nodes: BTreeMap<String, Node>,
    members: Vec<Member>,
    links: Vec<Link>,
    next_node: u64,
    /// History of every snapshot point taken, by sequence number.
    snapshots: HashMap<u64, Vec<u64>>,
    acked: BTreeSet<u64>,
    next_token: u64,
    trace: Vec<String>,
}

fn key(i: u64) -> Key {
    Key::new(format!("k{i}")).unwrap()
}

impl Sim {
    fn new(seed: u64, n: usize) -> Sim {
        let mut sim = Sim {
            rng: StdRng::seed_from_u64(seed),
            nodes: BTreeMap::new(),
            members: Vec::new(),
            links: Vec::new(),
            next_node: 0,
            snapshots: HashMap::new(),
            acked: BTreeSet::new(),
            next_token: 1,
            trace: Vec::new(),
        };
        for _ in 0..n {
            sim.join();
            sim.settle_views();
        }
        sim
    }

    fn join(&mut self) {
        let name = format!("node{:010}", self.next_node);
        self.next_node += 1;
        self.trace.push(format!("join {name}"));
        let mut replica = Replica::chain_member(name.clone(), SENT_MAX);
        // Small chunks, so that snapshots stream in several steps.
        replica.set_snapshot_chunk_entries(3);
        let node = Node {
            replica,
            table: BTreeMap::new(),
            hist: Vec::new(),
            tasks: VecDeque::new(),
            view_stale: true,
        };
        self.nodes.insert(name.clone(), node);
        self.members.push(Member {
            addr: name.clone(),
            name,
        });
        self.mark_views_stale();
    }

    fn mark_views_stale(&mut self) {
        for n in self.nodes.values_mut() {
            n.view_stale = true;
        }
    }

    fn crash(&mut self, name: &str) {
        self.trace.push(format!("crash {name}"));
        self.nodes.remove(name);
        self.members.retain(|m| m.name != name);
        // Links to and from it break at once (TCP resets); neighbours
        // learn the new membership later.
        let broken: Vec<Link> = self.take_links(|l| l.from == name || l.to == name);
        for l in broken {
            if l.to == name {
                self.with_node(&l.from, |r| r.handle_successor_lost());
            } else {
                self.with_node(&l.to, |r| r.handle_predecessor_lost());
            }
        }
        self.mark_views_stale();
    }

    fn take_links(&mut self, f: impl Fn(&Link) -> bool) -> Vec<Link> {
        let (gone, kept) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|l| f(l));
        self.links = kept;
        gone
    }

    fn with_node(&mut self, name: &str, f: impl FnOnce(&mut Replica)) {
        if let Some(n) = self.nodes.get_mut(name) {
            let before = n.replica.role();
            f(&mut n.replica);
            let after = n.replica.role();
            if before != after && std::env::var("SIM_DEBUG").is_ok() {
                eprintln!(
                    "{name}: {} -> {} (applied {})",
                    before.name(),
                    after.name(),
                    n.replica.last_applied()
                );
            }
            self.run_actions(name.to_string());
        }
    }

    /// Carries out a node's actions, like the server's dispatch.
    fn run_actions(&mut self, name: String) {
        loop {
            let Some(action) = self
                .nodes
                .get_mut(&name)
                .and_then(|n| n.replica.poll_action())
            else {
                return;
            };
            match action {
                Action::Apply(u) => self.node(&name).tasks.push_back(Task::Apply(u)),
                Action::Snapshot => self.node(&name).tasks.push_back(Task::Snapshot),
                Action::Install(c) => self.node(&name).tasks.push_back(Task::Install(c)),
                Action::WriteDone { result, .. } => {
                    self.acked.insert(result.op_id);
                }
                Action::WriteFailed { .. } => {}
                Action::ConnectSuccessor(m) => {
                    let old: Vec<Link> = self.take_links(|l| l.from == name);
                    for l in old {
                        self.with_node(&l.to, |r| r.handle_predecessor_lost());
                    }
                    self.links.push(Link {
                        from: name.clone(),
                        to: m.name,
                        established: false,
                        down: VecDeque::new(),
                        up: VecDeque::new(),
                    });
                }
                Action::DropSuccessor => {
                    let gone = self.take_links(|l| l.from == name);
                    for l in gone {
                        self.with_node(&l.to, |r| r.handle_predecessor_lost());
                    }
                }
                Action::DropPredecessor => {
                    let gone = self.take_links(|l| l.to == name && l.established);
                    for l in gone {
                        self.with_node(&l.from, |r| r.handle_successor_lost());
                    }
                }
                Action::SendDown(body) => {
                    if let Some(l) = self
                        .links
                        .iter_mut()
                        .find(|l| l.from == name && l.established)
                    {
                        l.down.push_back(body);
                    }
                }
                Action::SendUp(seq) => {
                    if let Some(l) = self
                        .links
                        .iter_mut()
                        .find(|l| l.to == name && l.established)
                    {
                        l.up.push_back(seq);
                    }
                }
            }
        }
    }

    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.get_mut(name).expect("node exists")
    }

    fn settle_views(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for n in names {
            self.deliver_view(&n);
        }
    }

    fn deliver_view(&mut self, name: &str) {
        let members = self.members.clone();
        if let Some(n) = self.nodes.get_mut(name) {
            n.view_stale = false;
        }
        self.with_node(name, |r| r.handle_membership(members));
    }

    /// One worker step on `name`.
    fn work(&mut self, name: &str) {
        let Some(task) = self.node(name).tasks.pop_front() else {
            return;
        };
        let node = self.node(name);
        match task {
            Task::Apply(u) => {
                let existed = match &u.op {
                    WriteOp::Put { key, value } => node
                        .table
                        .insert(key.clone(), (u.seq, value.clone()))
                        .is_some(),
                    WriteOp::Del { key } => node.table.remove(key).is_some(),
                };
                node.hist.push(u.seq);
                let outcome = if existed {
                    WriteOutcome::Existed
                } else {
                    WriteOutcome::Absent
                };
                self.with_node(name, |r| r.handle_applied(u, outcome));
            }
            Task::Snapshot => {
                let seq = node.hist.last().copied().unwrap_or(0);
                let entries: Vec<Entry> = node
                    .table
                    .iter()
                    .map(|(k, (v, val))| Entry {
                        key: k.clone(),
                        version: *v,
                        value: val.clone(),
                    })
                    .collect();
                let hist = node.hist.clone();
                if let Some(prev) = self.snapshots.insert(seq, hist.clone()) {
                    assert_eq!(
                        prev, hist,
                        "two snapshots at {seq} with different histories"
                    );
                }
                self.with_node(name, |r| r.handle_snapshot_taken(seq, entries));
            }
            Task::Install(chunk) => {
                let snap_hist = self
                    .snapshots
                    .get(&chunk.snapshot_seq)
                    .cloned()
                    .unwrap_or_default();
                let node = self.node(name);
                if chunk.first {
                    node.table.clear();
                    node.hist.clear();
                }
                for e in chunk.entries {
                    node.table.insert(e.key, (e.version, e.value));
                }
                if chunk.last {
                    node.hist = snap_hist;
                    let seq = chunk.snapshot_seq;
                    self.with_node(name, |r| r.handle_snapshot_installed(seq));
                }
            }
        }
    }

    /// Completes a pending connect, or delivers one message on a link.
    fn link_step(&mut self, i: usize) {
        if !self.links[i].established {
            let (from, to) = (self.links[i].from.clone(), self.links[i].to.clone());
            let accepted = self
                .nodes
                .get(&to)
                .is_some_and(|n| n.replica.accepts_predecessor(&from));
            if !accepted {
                self.links.remove(i);
                self.with_node(&from, |r| r.handle_successor_lost());
                return;
            }
            // The successor takes this link as its only predecessor link.
            let stale = self.take_links(|l| l.to == to && l.established);
            for l in stale {
                self.with_node(&l.from, |r| r.handle_successor_lost());
            }
            let Some(i) = self.links.iter().position(|l| l.from == from && l.to == to) else {
                return;
            };
            self.links[i].established = true;
            let (role, last) = {
                let r = &self.nodes[&to].replica;
                (r.role(), r.hello_last_seq())
            };
            self.with_node(&from, |r| r.handle_successor_hello(role, last));
            return;
        }
        // A streaming snapshot is fed while the link holds little, in
        // between everything else (applies, acks, reconfigurations).
        let from = self.links[i].from.clone();
        let feeding = self
            .nodes
            .get(&from)
            .is_some_and(|n| n.replica.snapshot_pending());
        if feeding && self.links[i].down.len() < 3 && self.rng.gen_bool(0.5) {
            self.with_node(&from, |r| r.handle_successor_writable());
            return;
        }
        let down = self.rng.gen_bool(0.5);
        let l = &mut self.links[i];
        let (from, to) = (l.from.clone(), l.to.clone());
        if down {
            if let Some(body) = l.down.pop_front() {
                if std::env::var("SIM_DEBUG").is_ok() {
                    let what = match &body {
                        Body::Update(u) => format!("update {} prev {}", u.seq, u.prev_seq),
                        Body::Snapshot(c) => format!(
                            "snapshot {} first {} last {}",
                            c.snapshot_seq, c.first, c.last
                        ),
                        other => format!("{other:?}"),
                    };
                    eprintln!("{from} -> {to}: {what}");
                }
                let mut violation = None;
                self.with_node(&to, |r| match body {
                    Body::Update(u) => violation = r.handle_update(u).err(),
                    Body::Snapshot(c) => r.handle_snapshot_chunk(c),
                    Body::Handoff { seq } => r.handle_handoff(seq),
                    other => panic!("unexpected down message {other:?}"),
                });
                // An honest chain never sends an update that does not
                // continue its successor's history.
                if let Some(v) = violation {
                    let state = |n: &str| self.nodes.get(n).map(|n| format!("{:?}", n.replica));
                    panic!(
                        "stream violation {from} -> {to}: {v}; trace {:?}\nFROM {:?}\nTO {:?}",
                        self.trace,
                        state(&from),
                        state(&to)
                    );
                }
            }
        } else if let Some(seq) = l.up.pop_front() {
            self.with_node(&from, |r| r.handle_ack(seq));
        }
    }

    fn client_write(&mut self) {
        let head = self
            .nodes
            .iter()
            .find(|(_, n)| matches!(n.replica.role(), NodeRole::Head | NodeRole::Solo))
            .map(|(k, _)| k.clone());
        let Some(head) = head else { return };
        let k = key(self.rng.gen_range(0..8));
        let op = if self.rng.gen_bool(0.8) {
            WriteOp::Put {
                key: k,
                value: vec![self.rng.gen()],
            }
        } else {
            WriteOp::Del { key: k }
        };
        let token = WriteToken {
            conn: 1,
            request_id: self.next_token,
        };
        self.next_token += 1;
        let _ = self
            .nodes
            .get_mut(&head)
            .map(|n| n.replica.handle_client_write(op, Some(token)));
        self.run_actions(head);
    }

    fn active(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| {
                self.nodes.get(&m.name).is_some_and(|n| {
                    matches!(
                        n.replica.role(),
                        NodeRole::Head | NodeRole::Middle | NodeRole::Tail | NodeRole::Solo
                    )
                })
            })
            .map(|m| m.name.clone())
            .collect()
    }

    /// The paper's invariants, checked after every step.
    fn check(&self, ctx: &str) {
        let active = self.active();
        for name in &active {
            let hist = &self.nodes[name].hist;
            // No acknowledged write is missing from a complete member.
            for a in &self.acked {
                assert!(
                    hist.contains(a),
                    "{ctx}: {name} lacks acknowledged write {a}"
                );
            }
            assert!(
                hist.windows(2).all(|w| w[0] < w[1]),
                "{ctx}: {name} applied out of order"
            );
        }
        // Adjacent complete members: the successor's history is a prefix of
        // its predecessor's, and what it lacks is in the predecessor's Sent.
        for pair in active.windows(2) {
            let (p, s) = (&self.nodes[&pair[0]], &self.nodes[&pair[1]]);
            if self.members.iter().position(|m| m.name == pair[1])
                != self
                    .members
                    .iter()
                    .position(|m| m.name == pair[0])
                    .map(|i| i + 1)
            {
                continue; // not adjacent in the chain
            }
            assert!(
                p.hist.starts_with(&s.hist) || s.hist.starts_with(&p.hist),
                "{ctx}: {} and {} diverge:\n{:?}\n{:?}\ntrace {:?}",
                pair[0],
                pair[1],
                p.hist,
                s.hist,
                self.trace
            );
            let sent: BTreeSet<u64> = p.replica.sent().iter().map(|u| u.seq).collect();
            if p.hist.starts_with(&s.hist) && !p.tasks.is_empty() {
                continue; // the predecessor is still applying
            }
            for seq in p.hist.iter().skip(s.hist.len()) {
                assert!(
                    sent.contains(seq) || self.acked_through_tail(*seq),
                    "{ctx}: {} lost {seq} on the way to {}",
                    pair[0],
                    pair[1]
                );
            }
        }
    }

    fn acked_through_tail(&self, seq: u64) -> bool {
        self.acked.contains(&seq)
    }

    fn step(&mut self, faults: bool) {
        let r = self.rng.gen_range(0..100);
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        let pick = |rng: &mut StdRng, v: &Vec<String>| v[rng.gen_range(0..v.len())].clone();
        match r {
            0..=24 => self.client_write(),
            25..=49 => {
                let n = pick(&mut self.rng, &names);
                self.work(&n);
            }
            50..=84 if !self.links.is_empty() => {
                let i = self.rng.gen_range(0..self.links.len());
                self.link_step(i);
            }
            85..=93 => {
                let stale: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.view_stale)
                    .map(|(k, _)| k.clone())
                    .collect();
                if !stale.is_empty() {
                    let n = pick(&mut self.rng, &stale);
                    self.deliver_view(&n);
                }
            }
            94..=96 if faults && self.active().len() >= 2 && self.nodes.len() > 2 => {
                // Crash anyone but keep one complete member alive.
                let victim = pick(&mut self.rng, &names);
                let complete_left = self.active().iter().filter(|a| **a != victim).count();
                if complete_left >= 1 {
                    self.crash(&victim);
                }
            }
            97..=99 if faults && self.nodes.len() < 5 => self.join(),
            _ => {}
        }
    }

    fn quiet(&self) -> bool {
        self.nodes
            .values()
            .all(|n| n.tasks.is_empty() && !n.view_stale)
            && self
                .links
                .iter()
                .all(|l| l.established && l.down.is_empty() && l.up.is_empty())
            && self
                .nodes
                .values()
                .all(|n| !matches!(n.replica.role(), NodeRole::Joining))
            && self.nodes.values().all(|n| !n.replica.snapshot_pending())
    }
}

fn run_schedule(seed: u64) {
    let n = 3 + (seed % 3) as usize;
    let mut sim = Sim::new(seed, n);
    for step in 0..STEPS {
        sim.step(true);
        sim.check(&format!("seed {seed} step {step}"));
    }
    // Quiesce: no more faults or writes; let everything drain.
    let mut rounds = 0;
    while !sim.quiet() {
        rounds += 1;
        assert!(
            rounds < 200_000,
            "seed {seed}: chain never quiesced; trace {:?}",
            sim.trace
        );
        let r = sim.rng.gen_range(0..3);
        match r {
            0 => {
                let names: Vec<String> = sim.nodes.keys().cloned().collect();
                for n in names {
                    sim.work(&n);
                }
            }
            1 if !sim.links.is_empty() => {
                let i = sim.rng.gen_range(0..sim.links.len());
                sim.link_step(i);
            }
            _ => sim.settle_views(),
        }
        sim.check(&format!("seed {seed} quiesce"));
    }
    // Every member holds the same table, built from the same history,
    // containing every acknowledged write.
    let tables: Vec<(&String, &Node)> = sim.nodes.iter().collect();
    let (first_name, first) = tables[0];
    for (name, node) in &tables {
        assert_eq!(
            node.table, first.table,
            "seed {seed}: {name} and {first_name} differ"
        );
        assert_eq!(
            node.hist, first.hist,
            "seed {seed}: {name} and {first_name} histories differ"
        );
    }
    for a in &sim.acked {
        assert!(
            first.hist.contains(a),
            "seed {seed}: acknowledged write {a} lost"
        );
    }
    let roles: Vec<NodeRole> = sim
        .members
        .iter()
        .map(|m| sim.nodes[&m.name].replica.role())
        .collect();
    if roles.len() == 1 {
        assert_eq!(roles, [NodeRole::Solo]);
    } else {
        assert_eq!(
            roles.first(),
            Some(&NodeRole::Head),
            "seed {seed}: {roles:?}"
        );
        assert_eq!(
            roles.last(),
            Some(&NodeRole::Tail),
            "seed {seed}: {roles:?}"
        );
    }
}

#[test]
fn thousands_of_seeded_schedules_keep_the_invariants() {
    let mut acked_total = 0;
    for seed in 0..SCHEDULES {
        run_schedule(seed);
        acked_total += 1;
    }
    assert_eq!(acked_total, SCHEDULES);
}

#[test]
fn a_standalone_replica_acknowledges_after_apply() {
    let mut r = Replica::standalone(4);
    let token = WriteToken {
        conn: 1,
        request_id: 1,
    };
    let seq = r
        .handle_client_write(WriteOp::Del { key: key(1) }, Some(token))
        .unwrap();
    let Some(Action::Apply(u)) = r.poll_action() else {
        panic!("apply first")
    };
    assert_eq!(
        r.poll_action(),
        None,
        "nothing is acknowledged before the apply"
    );
    r.handle_applied(u, WriteOutcome::Absent);
    let Some(Action::WriteDone { token: t, result }) = r.poll_action() else {
        panic!()
    };
    assert_eq!(
        (t, result.op_id, result.outcome),
        (token, seq, WriteOutcome::Absent)
    );
    // The bound: with 4 writes in flight the fifth is refused.
    for _ in 0..4 {
        r.handle_client_write(WriteOp::Del { key: key(1) }, None)
            .unwrap();
    }
    let refused = r
        .handle_client_write(WriteOp::Del { key: key(1) }, None)
        .unwrap_err();
    assert_eq!(refused.code, chaintable::wire::ErrorCode::Busy);
}
