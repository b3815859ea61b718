//! The ZooKeeper model: sessions kept alive by renewals, expired by a
//! sweep, leases granted on the round trip, watches that fire late.

use super::*;

impl World {
    pub(super) fn renew(&mut self, pid: Pid, s: u64) {
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

    pub(super) fn zk_arrive(&mut self, pid: Pid, s: u64, sent: Us) {
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

    pub(super) fn zk_reply(&mut self, pid: Pid, s: u64, sent: Us) {
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

    pub(super) fn sweep(&mut self) {
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
    pub(super) fn view(&mut self, pid: Pid) {
        if self.cut(End::Proc(pid), End::Zk) {
            // Retried once the partition heals (the watch is re-armed on
            // reconnect).
            self.after(20 * MS, Ev::View(pid));
            return;
        }
        let members = self.members();
        let fenced_before = self.role(pid) == Some(NodeRole::Fenced);
        if self.p.durable {
            // The coordinator reads the floor with every listing, first.
            let floor = self.floor;
            self.with(pid, |r| r.handle_durable_floor(floor));
        }
        self.with(pid, |r| r.handle_membership(members));
        if !fenced_before && self.role(pid) == Some(NodeRole::Fenced) {
            // Its own node is gone: the coordinator registers it again.
            self.register(pid);
        }
    }

    pub(super) fn role(&self, pid: Pid) -> Option<NodeRole> {
        self.procs.get(&pid).map(|p| p.replica.role())
    }

    /// A member asks ZooKeeper to raise the durable floor: lost when it is
    /// cut off or its session is over (it asks again with its next lease).
    pub(super) fn floor_write_start(&mut self, pid: Pid, want: DurableFloor) {
        let Some(s) = self.procs.get(&pid).map(|p| p.session) else {
            return;
        };
        if !self.cut(End::Proc(pid), End::Zk) {
            let d = self.delay();
            self.after(d, Ev::FloorWrite(pid, s, (want.floor, want.reserved)));
        }
    }

    pub(super) fn floor_write(&mut self, pid: Pid, s: u64, (floor, reserved): (u64, u64)) {
        let live = self.sessions.get(&s).is_some_and(|x| !x.expired);
        if self.cut(End::Proc(pid), End::Zk) || !live {
            return;
        }
        self.floor = self.floor.max(DurableFloor { floor, reserved });
        let (d, now) = (self.delay(), self.floor);
        self.after(d, Ev::FloorReply(pid, s, (now.floor, now.reserved)));
    }

    pub(super) fn floor_reply(&mut self, pid: Pid, s: u64, (floor, reserved): (u64, u64)) {
        let same = self.procs.get(&pid).map(|p| p.session) == Some(s);
        if self.cut(End::Proc(pid), End::Zk) || !same {
            return;
        }
        self.with(pid, |r| {
            r.handle_durable_floor(DurableFloor { floor, reserved })
        });
    }

    /// The member deletes its node, ends its session and registers again.
    pub(super) fn step_aside(&mut self, pid: Pid, s: u64) {
        let same = self.procs.get(&pid).map(|p| p.session) == Some(s);
        if !same || self.cut(End::Proc(pid), End::Zk) {
            return;
        }
        self.summary.step_asides += 1;
        self.note(format!("p{pid} steps aside"));
        self.znodes.retain(|(_, x)| *x != s);
        if let Some(x) = self.sessions.get_mut(&s) {
            x.expired = true;
        }
        self.with(pid, |r| r.fence());
        self.register(pid);
    }
}
