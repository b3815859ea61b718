//! Peer links that behave like TCP: dialled, accepted or refused, in
//! order, delayed, stalled by partitions, broken under both ends.

use super::*;

impl World {
    pub(super) fn dial(&mut self, pid: Pid, m: &Member) {
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
    pub(super) fn connect(&mut self, id: u64) {
        // SYNs are retried across a partition.
        let Some((from, to)) = self.ends_unless_stalled(id, Ev::Connect(id)) else {
            return;
        };
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
        self.with(to, Replica::handle_predecessor_linked);
    }

    pub(super) fn send_up(&mut self, pid: Pid, up: Up) {
        let id = self
            .links
            .iter()
            .find(|(_, l)| l.to == pid && l.state != LinkState::Connecting)
            .map(|(id, _)| *id);
        if let Some(id) = id {
            self.send_on(id, up);
        }
    }

    pub(super) fn send_on(&mut self, id: u64, up: Up) {
        let d = self.delay();
        if let Some(l) = self.links.get_mut(&id) {
            let when = arrival(&l.up, self.now + d);
            l.up.push_back((when, up));
            self.at(when, Ev::Deliver(id));
        }
    }

    pub(super) fn send_down_on(&mut self, id: u64, body: Body) {
        let d = self.delay();
        if let Some(l) = self.links.get_mut(&id) {
            let when = arrival(&l.down, self.now + d);
            l.down.push_back((when, body));
            self.at(when, Ev::Deliver(id));
        }
    }

    /// The ends of link `id`, unless it is gone or partitioned: then `ev`
    /// is tried again in 10 ms (a partitioned TCP link stalls and retries).
    fn ends_unless_stalled(&mut self, id: u64, ev: Ev) -> Option<(Pid, Pid)> {
        let l = self.links.get(&id)?;
        let (from, to) = (l.from, l.to);
        if self.cut(End::Proc(from), End::Proc(to)) {
            self.after(10 * MS, ev);
            return None;
        }
        Some((from, to))
    }

    /// Delivers what has arrived on a link, both ways, unless partitioned
    /// (then it stalls, as TCP does, and tries again later).
    pub(super) fn deliver(&mut self, id: u64) {
        let Some((from, to)) = self.ends_unless_stalled(id, Ev::Deliver(id)) else {
            return;
        };
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

    pub(super) fn down(&mut self, id: u64, from: Pid, to: Pid, body: Body) {
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

    pub(super) fn up(&mut self, id: u64, from: Pid, up: Up) {
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
    pub(super) fn drop_links(&mut self, pid: Pid, successor: bool) {
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
    pub(super) fn break_link(&mut self, id: u64) {
        if let Some(l) = self.links.remove(&id) {
            self.summary.link_breaks += 1;
            self.notify(l.from, id, true);
            if l.state != LinkState::Connecting {
                self.notify(l.to, id, false);
            }
        }
    }

    pub(super) fn notify(&mut self, pid: Pid, id: u64, dialler: bool) {
        let d = self.delay();
        self.after(d, Ev::Broken(pid, id, dialler));
    }

    pub(super) fn learn_broken(&mut self, pid: Pid, id: u64, dialler: bool) {
        // A link that a newer one replaced at this end is no longer watched
        // by the server there (it dropped it without telling its replica:
        // `Server::drop_links`), so its end is not news. Only a live
        // replacement counts: a dial still connecting does not replace an
        // accepted predecessor link yet. (Seed 44499: a joiner told of its
        // old predecessor link's end after the new link had delivered the
        // whole snapshot, forgot it, and waited for a transfer that the
        // predecessor had finished.)
        let replaced = self.links.iter().any(|(other, l)| {
            *other > id
                && if dialler {
                    l.from == pid
                } else {
                    l.to == pid && l.state != LinkState::Connecting
                }
        });
        if replaced {
            return;
        }
        if dialler {
            self.with(pid, |r| r.handle_successor_lost());
        } else {
            self.with(pid, |r| r.handle_predecessor_lost());
        }
    }
}

/// When a message sent now with network delay `earliest` arrives: not
/// before the message ahead of it on the same link (TCP keeps order).
fn arrival<T>(queue: &VecDeque<(Us, T)>, earliest: Us) -> Us {
    queue.back().map_or(0, |m| m.0).max(earliest)
}
