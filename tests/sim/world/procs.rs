//! `table-server` processes: a replica, its worker, its table; what the
//! IO layer does with the replica's actions (the server's dispatch).

use super::*;

impl World {
    pub(super) fn spawn(&mut self) {
        let pid = self.next_pid;
        self.next_pid += 1;
        self.spawn_at(pid);
    }

    /// A fresh process at address `pid`: a new one, or a restart at the
    /// address of one that crashed (members with stale views may still
    /// dial it under its old name).
    pub(super) fn spawn_at(&mut self, pid: Pid) {
        let mut replica = Replica::chain_member(String::new(), SENT_MAX);
        replica.set_snapshot_chunk_entries(2);
        replica.set_peer_timeout(Duration::from_micros(PEER_TIMEOUT));
        #[cfg(feature = "testing")]
        if let Some(bug) = self.p.planted {
            replica.plant(bug);
        }
        // A durable member starts on its disk (empty the first time).
        let disk = if self.p.durable {
            let disk = self.disks.remove(&pid).unwrap_or_default();
            let gaps: Vec<SeqGap> = disk.gaps.iter().copied().collect();
            replica.resume_durable(disk.hist.last().copied().unwrap_or(0), &gaps);
            disk
        } else {
            Disk::default()
        };
        self.procs.insert(
            pid,
            Proc {
                replica,
                table: disk.table,
                hist: disk.hist,
                gaps: disk.gaps,
                pre_install: None,
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
    pub(super) fn register(&mut self, pid: Pid) {
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

    pub(super) fn members(&self) -> Vec<Member> {
        self.znodes
            .iter()
            .map(|(name, s)| Member {
                name: name.clone(),
                addr: self.sessions[s].pid.to_string(),
            })
            .collect()
    }

    pub(super) fn membership_changed(&mut self) {
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
    pub(super) fn with(&mut self, pid: Pid, f: impl FnOnce(&mut Replica)) {
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
    pub(super) fn arm_tick(&mut self, pid: Pid) {
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
    pub(super) fn feed(&mut self, pid: Pid) {
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

    pub(super) fn run_actions(&mut self, pid: Pid) {
        while let Some(a) = self
            .procs
            .get_mut(&pid)
            .and_then(|p| p.replica.poll_action())
        {
            self.action(pid, a);
        }
    }

    pub(super) fn action(&mut self, pid: Pid, a: Action) {
        match a {
            Action::Apply(u) => self.task(pid, Task::Apply(u)),
            Action::Snapshot => self.task(pid, Task::Snapshot),
            Action::Install(c) => self.task(pid, Task::Install(c)),
            Action::WriteDone { token, result, .. } => {
                self.acked.insert(result.op_id);
                let reply = match result.outcome {
                    WriteOutcome::Existed => Reply::Written(Some(true), result.op_id),
                    WriteOutcome::Absent => Reply::Written(Some(false), result.op_id),
                    WriteOutcome::Pending => Reply::Written(None, result.op_id),
                    WriteOutcome::Mismatch => Reply::Mismatch(result.op_id),
                };
                self.reply_write(pid, token, reply);
            }
            Action::WriteFailed { token, .. } => self.reply_write(pid, token, Reply::Unknown),
            Action::ConnectSuccessor(m) => self.dial(pid, &m),
            Action::DropSuccessor => self.drop_links(pid, true),
            Action::DropPredecessor => self.drop_links(pid, false),
            Action::SendDown(body) => {
                let ready = self
                    .links
                    .iter()
                    .find(|(_, l)| l.from == pid && l.state == LinkState::Ready)
                    .map(|(id, _)| *id);
                if let Some(id) = ready {
                    self.send_down_on(id, body);
                }
            }
            Action::SendUp(seq) => self.send_up(pid, Up::Ack(seq)),
            Action::RaiseFloor(d) => self.floor_write_start(pid, d),
            Action::StepAside => {
                let s = self.procs.get(&pid).map_or(0, |p| p.session);
                // The coordinator waits STEP_ASIDE_DELAY first.
                self.after(100 * MS, Ev::StepAside(pid, s));
            }
        }
    }

    pub(super) fn task(&mut self, pid: Pid, t: Task) {
        let p = self.procs.get_mut(&pid).expect("live process");
        p.tasks.push_back(t);
        if !p.working {
            p.working = true;
            let d = self.rng.gen_range(0..300);
            self.after(d, Ev::Work(pid));
        }
    }

    pub(super) fn reply_write(&mut self, pid: Pid, token: WriteToken, reply: Reply) {
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
    pub(super) fn work(&mut self, pid: Pid) {
        let Some(p) = self.procs.get_mut(&pid).filter(|p| p.alive) else {
            return;
        };
        let Some(mut task) = p.tasks.pop_front() else {
            p.working = false;
            return;
        };
        // As the server's worker: a compare-and-set becomes the write it
        // resolves to (or UNCHANGED) before anything else sees it, the
        // id check below included (every member must hold the same op).
        if let Task::Apply(u) = &mut task {
            let op = std::mem::replace(&mut u.op, WriteOp::Noop);
            u.op = op.resolve(|k| p.table.get(k).map_or(0, |e| e.0));
        }
        // A new head's NOOP mark is no client's id, so only writes count.
        if let Some(Task::Apply(u)) = task.as_ref_write() {
            match self.ids.get(&u.seq) {
                Some(op) if *op != u.op => {
                    let msg = format!(
                        "op id {} names two different writes: {op:?} and, at p{pid}, {:?}",
                        u.seq, u.op
                    );
                    self.fail(msg);
                }
                Some(_) => {}
                None => {
                    self.ids.insert(u.seq, u.op.clone());
                }
            }
        }
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        match task {
            Task::Apply(u) => {
                let existed = match &u.op {
                    WriteOp::Put { key, value } => Some(
                        p.table
                            .insert(key.clone(), (u.seq, value.clone()))
                            .is_some(),
                    ),
                    WriteOp::Del { key } => Some(p.table.remove(key).is_some()),
                    WriteOp::Batch(ops) => {
                        for op in ops {
                            match op {
                                BatchOp::Put { key, value } => {
                                    p.table.insert(key.clone(), (u.seq, value.clone()));
                                }
                                BatchOp::Del { key } => {
                                    p.table.remove(key);
                                }
                            }
                        }
                        Some(false)
                    }
                    _ => None,
                };
                p.hist.push(u.seq);
                SeqGap::record(&mut p.gaps, u.prev_seq, u.skipped_until());
                let outcome = match existed {
                    Some(true) => WriteOutcome::Existed,
                    Some(false) => WriteOutcome::Absent,
                    None => WriteOutcome::Mismatch,
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
                    if self.p.durable && p.pre_install.is_none() {
                        p.pre_install = Some(Disk {
                            table: p.table.clone(),
                            hist: p.hist.clone(),
                            gaps: p.gaps.clone(),
                        });
                    }
                    p.table.clear();
                    p.hist.clear();
                    p.gaps = chunk.gaps.iter().copied().collect();
                }
                for e in chunk.entries {
                    p.table.insert(e.key, (e.version, e.value));
                }
                if chunk.last {
                    p.pre_install = None; // the disk now holds the snapshot
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

    pub(super) fn crash(&mut self, pid: Pid) {
        self.note(format!("crash p{pid}"));
        self.summary.crashes += 1;
        if let Some(p) = self.procs.get_mut(&pid) {
            p.alive = false;
            if self.p.durable {
                // `--fsync always`: the disk holds what the worker applied
                // (or, mid-install, what it held before the snapshot).
                let disk = p.pre_install.take().unwrap_or_else(|| Disk {
                    table: p.table.clone(),
                    hist: p.hist.clone(),
                    gaps: p.gaps.clone(),
                });
                self.disks.insert(pid, disk);
            }
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
}
