//! Faults: crashes, joins, partitions (from ZooKeeper, from a peer, from
//! everything but clients), broken links; never past what a chain survives.

use super::*;

impl World {
    /// Members that hold the whole state and are reachable: at least one
    /// must stay so, or the chain loses everything (f+1 members tolerate f
    /// failures; durability is what covers more). A member ZooKeeper has
    /// not heard from for half a session timeout does not count: its
    /// session may expire before it renews (it fences and drops its table
    /// by design), so it may not be the one left holding the state (seed
    /// 16044 crashed the last other holder 50 ms before such an expiry).
    pub(super) fn sound(&self, except: Option<Pid>) -> usize {
        let listed: BTreeSet<Pid> = self.listed().into_iter().flatten().collect();
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
                    && self.sessions.get(&p.session).is_some_and(|s| {
                        !s.expired && s.last_heard + SESSION_TIMEOUT / 2 > self.now
                    })
            })
            .count()
    }

    pub(super) fn fault(&mut self) {
        let pids: Vec<Pid> = self.procs.keys().copied().collect();
        if pids.is_empty() {
            // Every member is down (a durable outage): they are restarting.
            self.after(50 * MS, Ev::Fault);
            return;
        }
        let pick = self.rng.gen_range(0..pids.len());
        let victim = pids[pick];
        let other = pids[(pick + 1 + self.rng.gen_range(0..pids.len().max(2) - 1)) % pids.len()];
        let healthy = self.cuts.is_empty() && self.sound(Some(victim)) >= 1;
        let durable = self.p.durable;
        match self.rng.gen_range(0..100) {
            // With disks, every member may die at once: they come back.
            0..=3 if durable => {
                self.summary.outages += 1;
                self.note("every member crashes".into());
                for pid in pids {
                    self.crash(pid);
                    let after = self.rng.gen_range(20 * MS..300 * MS);
                    self.after(after, Ev::Restart(pid));
                }
            }
            0..=19 if (healthy || durable) && pids.len() > 1 => {
                self.crash(victim);
                // A member that may hold the only complete state comes back
                // on its disk.
                if !healthy || self.rng.gen_bool(0.5) {
                    let after = self.rng.gen_range(20 * MS..300 * MS);
                    self.after(after, Ev::Restart(victim));
                }
            }
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

    pub(super) fn partition(&mut self, cut: Vec<(End, End)>) {
        self.summary.partitions += 1;
        self.note(format!("partition {cut:?}"));
        for (a, b) in cut {
            self.cuts.insert(if a < b { (a, b) } else { (b, a) });
        }
        // Shorter or longer than a session: both must be survived.
        let len = self.rng.gen_range(50 * MS..1200 * MS);
        self.after(len, Ev::Heal);
    }

    pub(super) fn heal(&mut self) {
        if !self.cuts.is_empty() {
            self.note("heal".into());
        }
        self.cuts.clear();
    }
}
