//! Sockets and peer links: listening, dialling the successor, closing.

use super::*;

impl Server {
    /// Drops a connection and tells the replica if it was a peer link.
    pub(super) fn close(&mut self, conn: Conn, why: &str) {
        // Client connections come and go by the thousand (and a flood of
        // them must not become a flood of log lines): debug level. Peer
        // links are few and matter: info.
        if conn.is_peer() {
            tracing::info!(conn = conn.id, peer = %conn.peer, why, "peer connection closed");
        } else {
            tracing::debug!(conn = conn.id, peer = %conn.peer, why, "connection closed");
        }
        if conn.counted {
            self.clients_connected -= 1;
        }
        if self.backup.as_ref().is_some_and(|b| b.conn == conn.id) {
            self.backup = None;
        }
        if conn.peer_only {
            self.peer_only_open -= 1;
        }
        match conn.kind {
            Kind::Successor { .. } => {
                self.replica.handle_successor_lost();
                self.dispatch();
            }
            Kind::Predecessor { .. } => {
                self.replica.handle_predecessor_lost();
                self.dispatch();
            }
            _ => {}
        }
    }

    /// Closes peer links of one kind without telling the replica (it asked).
    pub(super) fn drop_links(&mut self, successor: bool) {
        self.conns.retain(|_, c| {
            let hit = match c.kind {
                Kind::Successor { .. } => successor,
                Kind::Predecessor { .. } => !successor,
                _ => false,
            };
            if hit {
                tracing::info!(conn = c.id, peer = %c.peer, "peer link dropped");
            }
            !hit
        });
    }

    /// Opens the link to a successor (non-blocking connect). The replica
    /// paces redials (see [`crate::replica::REDIAL_DELAY`]).
    pub(super) fn dial(&mut self, member: Member) {
        let now = self.now;
        match start_connect(&member.addr) {
            Ok(stream) => {
                let id = self.next_conn_id;
                self.next_conn_id += 1;
                let (stage, hello) = self.open_handshake(&member);
                let kind = Kind::Successor {
                    node: member.name.clone(),
                    stage,
                };
                let mut conn = Conn::new(id, stream, kind, self.cfg.payload_bytes_max, now);
                conn.peer = member.addr.clone();
                conn.connecting = true;
                conn.send(&hello);
                tracing::info!(conn = id, successor = %member.name, addr = %member.addr, "dialling successor");
                self.conns.insert(id, conn);
                self.dirty.push(id);
            }
            Err(e) => {
                tracing::warn!(addr = %member.addr, error = %e, "cannot dial successor");
                self.replica.handle_successor_lost();
            }
        }
    }
}

/// Resolves `addr` and makes a TCP socket of the matching family.
pub(super) fn tcp_socket(addr: &str) -> io::Result<(Socket, SocketAddr)> {
    let addr: SocketAddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    Ok((socket, addr))
}

/// A listening socket with the options a server wants (socket2).
pub(super) fn listen(addr: &str, backlog: i32) -> io::Result<TcpListener> {
    let (socket, addr) = tcp_socket(addr)?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Starts a non-blocking connect; completion is seen as POLLOUT.
pub(super) fn start_connect(addr: &str) -> io::Result<std::net::TcpStream> {
    let (socket, addr) = tcp_socket(addr)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

pub(super) fn finish_connect(conn: &mut Conn) -> bool {
    conn.connecting = false;
    match conn.stream.take_error() {
        Ok(None) => conn.stream.peer_addr().is_ok(),
        _ => false,
    }
}
