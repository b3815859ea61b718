//! Checks: the paper's invariants after every event, convergence after
//! quiescing, linearizability of the clients' histories.

use super::*;

impl World {
    /// ZooKeeper's members in chain order, as the processes that hold
    /// their sessions now: a node whose process crashed, or restarted at
    /// the same address under a new session, is `None`.
    pub(super) fn listed(&self) -> Vec<Option<Pid>> {
        self.znodes
            .iter()
            .map(|(_, s)| {
                let pid = self.sessions[s].pid;
                self.procs
                    .get(&pid)
                    .filter(|p| p.session == *s)
                    .map(|_| pid)
            })
            .collect()
    }

    pub(super) fn listed_active(&self) -> Vec<Pid> {
        self.listed()
            .into_iter()
            .flatten()
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
    pub(super) fn check_invariants(&mut self) {
        let active = self.listed_active();
        let order = self.listed();
        for pair in active.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (ia, ib) = (
                order.iter().position(|p| *p == Some(a)),
                order.iter().position(|p| *p == Some(b)),
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
    pub(super) fn check_acked(&mut self, active: &[Pid]) {
        for pid in active {
            let hist = &self.procs[pid].hist;
            if let Some(a) = self.acked.iter().find(|a| hist.binary_search(a).is_err()) {
                let msg = format!("p{pid} lacks acknowledged write {a}");
                return self.fail(msg);
            }
        }
    }

    pub(super) fn quiet(&self) -> bool {
        let listed = self.listed();
        let all_listed = listed.iter().all(Option::is_some)
            && self.procs.keys().all(|p| listed.contains(&Some(*p)));
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
            && self.views_current()
    }

    /// Every member sees its neighbours as ZooKeeper lists them (no watch
    /// still on its way).
    fn views_current(&self) -> bool {
        let listed = self.listed();
        let names: Vec<&str> = self.znodes.iter().map(|(n, _)| n.as_str()).collect();
        names.iter().enumerate().all(|(i, name)| {
            let Some(r) = listed[i]
                .and_then(|pid| self.procs.get(&pid))
                .map(|p| &p.replica)
            else {
                return false;
            };
            let pred = r.predecessor().map(|m| m.name.as_str());
            let succ = r.successor_member().map(|m| m.name.as_str());
            r.name() == *name
                && pred == i.checked_sub(1).map(|j| names[j])
                && succ == names.get(i + 1).copied()
        })
    }

    /// No more faults or client requests: heal and let the chain settle.
    pub(super) fn quiesce(&mut self) -> Result<(), String> {
        self.heal();
        self.stopping = true;
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
                if std::env::var("SIM_DUMP").is_ok() {
                    for (pid, p) in &self.procs {
                        eprintln!(
                            "p{pid}: tasks {} working {} {:#?}",
                            p.tasks.len(),
                            p.working,
                            p.replica
                        );
                    }
                }
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

    pub(super) fn final_checks(&mut self) -> Result<(), String> {
        let seed = self.p.seed;
        let order: Vec<Pid> = self.listed().into_iter().flatten().collect();
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

    pub(super) fn check_history(&self) -> Result<(), String> {
        match lincheck::check(&self.history, Duration::from_secs(20)) {
            Verdict::Linearizable => Ok(()),
            other => Err(format!(
                "seed {}: clients' history not linearizable: {other:?}",
                self.p.seed
            )),
        }
    }
}
