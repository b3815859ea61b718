//! Clients: one request at a time to the head (writes) or, for reads, to
//! any member of their possibly stale view (CRAQ: a member that is not the
//! tail answers clean keys, and refuses dirty ones), recorded for the
//! checker.

use super::*;

impl World {
    pub(super) fn client_next(&mut self, c: usize) {
        if self.clients[c].pending.is_some() || self.stopping {
            return;
        }
        let view = self.clients[c].view.clone();
        let key = self.rng.gen_range(0..KEYS);
        let r = self.rng.gen_range(0..10);
        let req = match r {
            0..=1 => {
                self.clients[c].next_value += 1;
                Req::Put(key, self.clients[c].next_value)
            }
            2 => {
                self.clients[c].next_value += 1;
                Req::PutAsync(key, self.clients[c].next_value)
            }
            3 => {
                // Compare with what this client last read of the key.
                self.clients[c].next_value += 1;
                let (expected, version) =
                    self.clients[c].seen.get(&key).copied().unwrap_or((None, 0));
                Req::Cas {
                    key,
                    expected,
                    version,
                    value: self.clients[c].next_value,
                }
            }
            4 => Req::Del(key),
            _ => Req::Get(key),
        };
        let target = match req {
            Req::Get(_) if view.is_empty() => None,
            Req::Get(_) => view.get(self.rng.gen_range(0..view.len())),
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

    pub(super) fn client_arrive(&mut self, c: usize, op: u64, pid: Pid) {
        let Some((_, req, _)) = self.clients[c].pending.clone().filter(|p| p.0 == op) else {
            return;
        };
        if !self.procs.get(&pid).is_some_and(|p| p.alive) {
            return; // connection refused or reset: the client times out
        }
        let reply = match req {
            Req::Get(key) => {
                let keys = [key_of(key)];
                let floor = self.clients[c].floor;
                let replica = &self.procs[&pid].replica;
                let refused = replica.check_can_read(ReadScope::Keys(&keys)).is_err()
                    || replica.check_floor(floor).is_err();
                let found = self.procs[&pid].table.get(&key_of(key));
                let value =
                    found.map(|(_, v)| u64::from_le_bytes(v[..8].try_into().expect("8 bytes")));
                let version = found.map_or(0, |(version, _)| *version);
                if refused {
                    Reply::Refused
                } else {
                    Reply::Value(value, version)
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
            Req::PutAsync(key, value) => {
                let wop = WriteOp::Put {
                    key: key_of(key),
                    value: value.to_le_bytes().to_vec(),
                };
                let mut result = None;
                self.with(pid, |r| result = Some(r.handle_client_write(wop, None)));
                match result {
                    Some(Ok(seq)) => Reply::Accepted(seq),
                    _ => Reply::Refused,
                }
            }
            Req::Cas {
                key,
                version,
                value,
                ..
            } => self.write(
                pid,
                c,
                op,
                WriteOp::PutIf {
                    key: key_of(key),
                    value: value.to_le_bytes().to_vec(),
                    expected: version,
                },
            ),
        };
        if !matches!(reply, Reply::Unknown) {
            let d = self.delay();
            self.replies.insert((c, op), reply);
            self.after(d, Ev::ClientReply(c, op));
        }
    }

    /// A write at `pid`: refused now, or waiting for the tail (`Unknown`
    /// here means "no reply yet").
    pub(super) fn write(&mut self, pid: Pid, c: usize, op: u64, wop: WriteOp) -> Reply {
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

    pub(super) fn client_reply(&mut self, c: usize, op: u64) {
        let Some(reply) = self.replies.remove(&(c, op)) else {
            return;
        };
        let Some((_, req, call)) = self.clients[c].pending.clone().filter(|p| p.0 == op) else {
            return;
        };
        self.clients[c].pending = None;
        let ret = Some(self.now);
        let floor = self.clients[c].floor;
        let seen = match reply {
            Reply::Written(_, id)
            | Reply::Mismatch(id)
            | Reply::Value(_, id)
            | Reply::Accepted(id) => id,
            Reply::Refused | Reply::Unknown => 0,
        };
        self.clients[c].floor = floor.max(seen);
        if let (Req::Put(key, _) | Req::Del(key), Reply::Written(_, id)) = (&req, &reply) {
            let f = self.clients[c].key_floor.entry(*key).or_insert(0);
            *f = (*f).max(*id);
        }
        let rec = match (req, reply) {
            (_, Reply::Refused) => None,
            (Req::Put(key, value), Reply::Written(existed, _)) => {
                Some((key, KvOp::Put { value, existed }, ret))
            }
            (Req::Del(key), Reply::Written(existed, _)) => Some((key, KvOp::Del { existed }, ret)),
            (Req::Get(key), Reply::Value(value, version)) => {
                let key_floor = self.clients[c].key_floor.get(&key).copied().unwrap_or(0);
                if value.is_some() && version < key_floor {
                    self.fail(format!(
                        "client {c} read version {version} of key {key} after having seen {key_floor} (floor {floor})"
                    ));
                }
                let f = self.clients[c].key_floor.entry(key).or_insert(0);
                *f = (*f).max(version);
                self.clients[c].seen.insert(key, (value, version));
                Some((key, KvOp::Get { value }, ret))
            }
            (
                Req::Cas {
                    key,
                    expected,
                    value,
                    ..
                },
                reply @ (Reply::Written(..) | Reply::Mismatch(_) | Reply::Unknown),
            ) => {
                let applied = match reply {
                    Reply::Written(..) => Some(true),
                    Reply::Mismatch(_) => Some(false),
                    _ => None,
                };
                let op = KvOp::Cas {
                    expected,
                    value: Some(value),
                    applied,
                };
                Some((key, op, applied.and(ret)))
            }
            (Req::Put(key, value), Reply::Unknown) => Some((
                key,
                KvOp::Put {
                    value,
                    existed: None,
                },
                None,
            )),
            (Req::Del(key), Reply::Unknown) => Some((key, KvOp::Del { existed: None }, None)),
            // Queued, not known to be executed: an unknown outcome.
            (Req::PutAsync(key, value), Reply::Accepted(_) | Reply::Unknown) => Some((
                key,
                KvOp::Put {
                    value,
                    existed: None,
                },
                None,
            )),
            _ => None,
        };
        if let Some((key, op, ret)) = rec {
            self.record(c, key, op, call, ret);
        }
        let think = self.rng.gen_range(0..2 * MS);
        self.after(think, Ev::ClientNext(c));
    }

    pub(super) fn client_give_up(&mut self, c: usize, op: u64) {
        let Some((_, req, call)) = self.clients[c].pending.clone().filter(|p| p.0 == op) else {
            return;
        };
        self.clients[c].pending = None;
        self.replies.remove(&(c, op));
        match req {
            Req::Put(key, value) | Req::PutAsync(key, value) => self.record(
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
            Req::Cas {
                key,
                expected,
                value,
                ..
            } => {
                let op = KvOp::Cas {
                    expected,
                    value: Some(value),
                    applied: None,
                };
                self.record(c, key, op, call, None);
            }
            Req::Get(_) => {} // a read that never returned says nothing
        }
        self.after(0, Ev::ClientNext(c));
    }

    pub(super) fn record(&mut self, c: usize, key: u32, op: KvOp, call: Us, ret: Option<Us>) {
        self.history.push(Recorded {
            client: u32::try_from(c).expect("few clients"),
            key,
            op,
            call_ns: i64::try_from(call * 1000).expect("a short run"),
            return_ns: ret.map(|r| i64::try_from(r * 1000).expect("a short run")),
        });
    }
}
