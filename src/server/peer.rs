//! Peer links: the authenticated handshake (spec §5.1) on both ends, and
//! the replication frames that follow it.
//!
//! A connection becomes our predecessor only once its proof checks out;
//! until then it displaces nothing (the current predecessor link stays).
//! A successor we dial gets no replication traffic until it has proved it
//! holds the cluster secret and its HELLO_OK arrived under the link's MAC.

use super::conn::{Conn, Kind, Stage};
use super::handler::error;
use super::Server;
use crate::auth::{random_nonce, Initiator, Responder};
use crate::member::Member;
use crate::wire::{op, Body, ErrorCode, Frame, Message, PeerHello};

impl Server {
    /// Refuses a peer handshake: one ERROR, then the connection closes.
    pub(super) fn refuse_peer(&mut self, conn: &mut Conn, why: &str) {
        self.counters.peer_auth_failures += 1;
        self.counters.errors_sent += 1;
        if self.noise.allow(self.now) {
            tracing::warn!(conn = conn.id, peer = %conn.peer, why, "peer refused");
        }
        conn.send(&error(0, ErrorCode::Unavailable, why));
        conn.start_closing(self.now);
    }

    /// PEER_HELLO on a fresh connection: answer with a challenge if it is
    /// addressed to this member, for this chain, from its predecessor.
    pub(super) fn peer_hello(&mut self, conn: &mut Conn, h: PeerHello) {
        let Some(secret) = self.cfg.secret.clone().filter(|_| self.coord.is_some()) else {
            return self.refuse_peer(conn, "not a chain member");
        };
        if h.to != self.replica.name() || h.root != self.cfg.chain_root {
            let why = format!("this is {} of {}", self.replica.name(), self.cfg.chain_root);
            return self.refuse_peer(conn, &why);
        }
        if !self.replica.accepts_predecessor(&h.from) {
            let why = format!("{} is not this member's predecessor", h.from);
            return self.refuse_peer(conn, &why);
        }
        let (responder, challenge) = Responder::new(secret, &h, random_nonce());
        if conn.counted {
            conn.counted = false;
            self.clients_connected -= 1;
        }
        conn.kind = Kind::PeerHandshake {
            from: h.from,
            responder: Box::new(responder),
        };
        conn.send(&Message::new(0, Body::PeerChallenge(challenge)));
    }

    /// The frame after our challenge: it must be a valid PEER_PROOF.
    pub(super) fn peer_proof(&mut self, conn: &mut Conn, frame: Frame) {
        let Kind::PeerHandshake { from, responder } = &conn.kind else {
            return;
        };
        let proof = match (frame.opcode, Message::from_frame(&frame)) {
            (
                op::PEER_PROOF,
                Ok(Message {
                    body: Body::PeerProof { proof },
                    ..
                }),
            ) => proof,
            _ => return self.refuse_peer(conn, "expected PEER_PROOF"),
        };
        let from = from.clone();
        let mac = match (**responder).clone().on_proof(&proof) {
            Ok(mac) => mac,
            Err(e) => return self.refuse_peer(conn, &e.to_string()),
        };
        if !self.replica.accepts_predecessor(&from) {
            return self.refuse_peer(conn, "membership changed during the handshake");
        }
        // Authenticated: now, and only now, it replaces the current link.
        self.drop_links(false);
        tracing::info!(conn = conn.id, node = %from, "predecessor authenticated");
        conn.mac = Some(mac);
        conn.kind = Kind::Predecessor { node: from };
        conn.decoder
            .set_payload_bytes_max(self.cfg.payload_bytes_max);
        conn.send(&self.hello_ok(0, false));
        // Its ACK goes out with the next dispatch, once this connection
        // is back among the others.
        self.replica.handle_predecessor_linked();
    }

    /// Replication traffic from our predecessor (MAC already checked).
    pub(super) fn predecessor_frame(&mut self, conn: &mut Conn, frame: Frame) {
        let body = match Message::from_frame(&frame) {
            Ok(m) => m.body,
            Err(e) => return self.drop_peer(conn, &format!("malformed peer frame: {e}")),
        };
        match body {
            Body::Update(u) => {
                if let Err(v) = self.replica.handle_update(u) {
                    self.counters.peer_stream_violations += 1;
                    self.drop_peer(conn, &v.to_string());
                }
            }
            Body::Snapshot(chunk) => self.replica.handle_snapshot_chunk(chunk),
            Body::Handoff { seq } => self.replica.handle_handoff(seq),
            other => {
                let why = format!(
                    "unexpected opcode 0x{:02x} from the predecessor",
                    other.opcode()
                );
                self.drop_peer(conn, &why);
            }
        }
    }

    /// Frames from the successor we dialled: its challenge, then (under the
    /// MAC) HELLO_OK and ACKs.
    pub(super) fn successor_frame(&mut self, conn: &mut Conn, frame: Frame) {
        self.replica.handle_successor_heard();
        let body = match Message::from_frame(&frame) {
            Ok(m) => m.body,
            Err(e) => return self.drop_peer(conn, &format!("malformed peer frame: {e}")),
        };
        let Kind::Successor { node, stage } = &mut conn.kind else {
            return;
        };
        match (stage, body) {
            (_, Body::Error(e)) => {
                let why = format!("successor refused the link: {}", e.message);
                self.drop_peer(conn, &why);
            }
            (Stage::Challenged(init), Body::PeerChallenge(c)) => {
                match (**init).clone().on_challenge(&c) {
                    Ok((proof, mac)) => {
                        conn.send(&Message::new(0, Body::PeerProof { proof }));
                        conn.mac = Some(mac);
                        if let Kind::Successor { stage, .. } = &mut conn.kind {
                            *stage = Stage::Proved;
                        }
                    }
                    Err(e) => {
                        self.counters.peer_auth_failures += 1;
                        let why = format!("successor {node} failed authentication: {e}");
                        self.drop_peer(conn, &why);
                    }
                }
            }
            (Stage::Proved, Body::HelloOk(h)) => {
                tracing::info!(
                    conn = conn.id,
                    role = h.role.name(),
                    last_seq = h.last_seq,
                    "successor ready"
                );
                if let Kind::Successor { stage, .. } = &mut conn.kind {
                    *stage = Stage::Ready;
                }
                self.replica.handle_successor_hello(h.role, h.last_seq);
            }
            (Stage::Ready, Body::Ack { seq }) => self.replica.handle_ack(seq),
            (_, other) => {
                let why = format!(
                    "unexpected opcode 0x{:02x} from the successor",
                    other.opcode()
                );
                self.drop_peer(conn, &why);
            }
        }
    }

    /// Closes a peer link that broke the protocol (the close tells the
    /// replica, which redials or waits for a new predecessor).
    fn drop_peer(&mut self, conn: &mut Conn, why: &str) {
        tracing::warn!(conn = conn.id, peer = %conn.peer, why, "peer link closed");
        conn.start_closing(self.now);
    }

    /// The first frame on a link we dial: PEER_HELLO, and the handshake
    /// state that checks the answer.
    pub(super) fn open_handshake(&self, member: &Member) -> (Stage, Message) {
        let secret = self
            .cfg
            .secret
            .clone()
            .unwrap_or_else(crate::auth::Secret::insecure);
        let (init, hello) = Initiator::new(
            secret,
            self.replica.name(),
            &member.name,
            &self.cfg.chain_root,
            random_nonce(),
        );
        let msg = Message::new(0, Body::PeerHello(hello));
        (Stage::Challenged(Box::new(init)), msg)
    }
}
