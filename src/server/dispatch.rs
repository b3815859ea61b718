//! Carrying out what the replica asks for, and feeding it what the worker
//! and the coordination thread report.

use super::conn::Kind;
use super::worker::{Completion, Task};
use super::Server;
use crate::coord::CoordEvent;
use crate::replica::Action;
use crate::wire::{op, Body, CasOk, ErrorReply, Message};

impl Server {
    /// Drains the replica's actions. Acks are coalesced: only the highest
    /// of a batch is sent, as acks are cumulative.
    pub(super) fn dispatch(&mut self) {
        let mut ack_up = None;
        // Floor raises are folded into one command per dispatch.
        let mut raise: Option<crate::member::DurableFloor> = None;
        // Whether anything was queued on a peer link (only then can one
        // have passed its output bound).
        let mut peers_written = false;
        // Worker tasks go in one batch: one lock and one wake-up per
        // dispatch instead of one per write.
        let mut tasks = Vec::new();
        while let Some(action) = self.replica.poll_action() {
            match action {
                Action::Apply(u) => tasks.push(Task::Apply(u)),
                Action::Snapshot => tasks.push(Task::Snapshot),
                Action::Install(chunk) => tasks.push(Task::Install(chunk)),
                Action::WriteDone {
                    token,
                    result,
                    version,
                } => {
                    self.touch(token.conn);
                    if let Some(conn) = self.conns.get_mut(&token.conn) {
                        conn.complete_write(token.request_id, |opcode| {
                            let cas = CasOk {
                                op_id: result.op_id,
                                outcome: result.outcome,
                                version,
                            };
                            let body = match opcode {
                                op::PUT => Body::PutOk(result),
                                op::CPUT => Body::PutIfOk(cas),
                                op::CDEL => Body::DelIfOk(cas),
                                op::MWRITE => Body::MWriteOk {
                                    op_id: result.op_id,
                                },
                                _ => Body::DelOk(result),
                            };
                            Message::new(token.request_id, body)
                        });
                    }
                }
                Action::WriteFailed { token, code } => {
                    self.counters.errors_sent += 1;
                    self.touch(token.conn);
                    if let Some(conn) = self.conns.get_mut(&token.conn) {
                        conn.complete_write(token.request_id, |_| {
                            let e = ErrorReply::new(code, code.to_string());
                            Message::new(token.request_id, Body::Error(e))
                        });
                    }
                }
                Action::ConnectSuccessor(member) => self.dial(member),
                Action::DropSuccessor => self.drop_links(true),
                Action::DropPredecessor => self.drop_links(false),
                Action::SendDown(body) => {
                    peers_written = true;
                    self.touch_peers();
                    let msg = Message::new(0, body);
                    for c in self.conns.values_mut() {
                        if c.kind.is_ready_successor() {
                            c.send(&msg);
                        }
                    }
                }
                Action::SendUp(seq) => ack_up = Some(seq),
                Action::RaiseFloor(d) => raise = Some(raise.unwrap_or_default().max(d)),
                Action::StepAside => {
                    if let Some(c) = &self.coord {
                        c.command(crate::coord::CoordCommand::StepAside);
                    }
                }
            }
        }
        self.queue.push_all(tasks);
        if let (Some(d), Some(c)) = (raise, &self.coord) {
            c.command(crate::coord::CoordCommand::RaiseFloor(d));
        }
        if let Some(seq) = ack_up {
            peers_written = true;
            self.touch_peers();
            let msg = Message::new(0, Body::Ack { seq });
            for c in self.conns.values_mut() {
                if matches!(c.kind, Kind::Predecessor { .. }) {
                    c.send(&msg);
                }
            }
        }
        if peers_written {
            self.close_stuck_peer_links();
        }
    }

    /// Closes a peer link whose queued output is over
    /// [`super::ServerConfig::peer_output_bytes_max`]: its peer stopped
    /// reading. Closing tells the replica, which redials (or waits for its
    /// predecessor to) and resends from what the peer holds.
    fn close_stuck_peer_links(&mut self) {
        let max = self.cfg.peer_output_bytes_max();
        let stuck: Vec<u64> = self
            .conns
            .values()
            .filter(|c| c.is_peer() && c.out_len() > max)
            .map(|c| c.id)
            .collect();
        for id in stuck {
            if let Some(conn) = self.conns.remove(&id) {
                self.counters.disconnected_slow += 1;
                tracing::warn!(conn = id, peer = %conn.peer, max, "peer link not reading: closed");
                self.close(conn, "peer output over its bound");
            }
        }
    }

    pub(super) fn on_completion(&mut self, c: Completion) {
        match c {
            Completion::Applied(update, outcome) => {
                if let Some(b) = self.backup.as_mut() {
                    b.on_applied(&update);
                    let id = b.conn;
                    self.touch(id);
                }
                // Only what the replica takes (not a stale apply of a state
                // it dropped) is in this member's history.
                if self.replica.takes_applied(update.seq) {
                    self.record_applied(&update);
                }
                self.replica.handle_applied(update, outcome);
            }
            Completion::Snapshot { seq, entries } => {
                tracing::info!(seq, entries = entries.len(), "snapshot taken for successor");
                self.replica.handle_snapshot_taken(seq, entries);
            }
            Completion::Installed { seq } => {
                tracing::info!(seq, "snapshot installed");
                self.replica.handle_snapshot_installed(seq);
            }
        }
    }

    /// A shard map read from ZooKeeper (cluster members only).
    fn shard_map(&mut self, map: crate::cluster::ShardMap) {
        let Some(shard) = self.shard.as_mut() else {
            return;
        };
        let owned: Vec<String> = map
            .ranges()
            .iter()
            .enumerate()
            .filter(|(_, r)| r.chain == shard.chain())
            .map(|(i, _)| map.range_text(i))
            .collect();
        tracing::info!(version = map.version, chain = shard.chain(), ranges = ?owned, "shard map");
        shard.update(map);
    }

    pub(super) fn on_coord_event(&mut self, e: CoordEvent) {
        match e {
            // The replica forgets any table it held: a fresh registration
            // joins through a snapshot (see `Replica::rejoin`).
            CoordEvent::Registered(name) => self.replica.rejoin(name),
            CoordEvent::Members(members) => {
                tracing::info!(
                    members = ?members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
                    "membership"
                );
                self.replica.handle_membership(members);
                tracing::info!(role = self.replica.role().name(), "role");
            }
            CoordEvent::Alive { sent, lease } => self.replica.handle_lease(sent, lease),
            CoordEvent::DurableFloor(d) => self.replica.handle_durable_floor(d),
            CoordEvent::ShardMap(map) => self.shard_map(map),
            CoordEvent::Fenced(reason) => {
                tracing::warn!(reason = %reason, "fenced: serving nothing until re-registered");
                self.replica.fence();
            }
        }
    }
}
