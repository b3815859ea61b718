//! The network thread's loop: wait in `poll`, move bytes, hand the
//! replica its inputs and the time, carry out what it asks.

use super::*;

impl Server {
    /// Serves until a shutdown signal, then drains and returns.
    ///
    /// # Errors
    ///
    /// An I/O error from `poll` itself (an error on one connection only closes
    /// that connection).
    pub fn run(mut self) -> io::Result<()> {
        tracing::info!(addr = %self.local_addr, n_lists = self.table.n_lists(), "serving");
        let mut scratch = vec![0u8; READ_CHUNK_BYTES];
        while !self.shutting_down {
            self.poll_once(&mut scratch)?;
        }
        self.shutdown();
        Ok(())
    }

    pub(super) fn poll_once(&mut self, scratch: &mut [u8]) -> io::Result<()> {
        self.tick();
        self.sweep();
        self.client_buffer_bytes = self.count_client_buffers();
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        // A restarted standalone server takes clients once its id skip is
        // logged (one fsync): an async write admitted before it could be
        // handed an id that a second crash would hand out again. While the
        // log cannot be written it takes them anyway: reads go on, and
        // writes get STORAGE_UNAVAILABLE.
        let settling = self.replica.restart_mark_pending()
            && !self.health.as_ref().is_some_and(|h| h.failing());
        let accepting = self.listener.is_some() && !self.accept_paused() && !settling;
        let ready = {
            let mut fds = Vec::with_capacity(ids.len() + 3);
            fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
            if let (true, Some(l)) = (accepting, &self.listener) {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            for id in &ids {
                let c = &self.conns[id];
                let mut flags = PollFlags::empty();
                if self.wants_read(c) {
                    flags |= PollFlags::POLLIN;
                }
                if c.wants_write() || c.connecting {
                    flags |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.stream.as_fd(), flags));
            }
            match poll(&mut fds, self.poll_timeout()) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            fds.iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect::<Vec<_>>()
        };
        if !ready[0].is_empty() {
            let _ = self.wake.read();
        }
        if !ready[1].is_empty() {
            let mut buf = [0u8; 64];
            let _ = self.signals.read(&mut buf);
            tracing::info!("shutdown signal received");
            self.shutting_down = true;
        }
        self.tick();
        let offset = if accepting {
            if !ready[2].is_empty() {
                self.accept_all();
            }
            3
        } else {
            2
        };
        for (i, id) in ids.iter().enumerate() {
            let ev = ready[offset + i];
            if !ev.is_empty() {
                self.on_socket_event(*id, ev, scratch);
            }
        }
        self.drain_background();
        self.sync_history_epoch();
        self.touch_watchers();
        self.pump_all();
        self.feed_successor();
        Ok(())
    }

    /// Hands the joining successor snapshot chunks while its link has less
    /// than [`SNAPSHOT_QUEUE_BYTES`] queued; the link, now dirty, is
    /// written on the next iteration, and POLLOUT brings us back here.
    pub(super) fn feed_successor(&mut self) {
        while self.replica.snapshot_pending() {
            let queued = self
                .conns
                .values()
                .find(|c| c.kind.is_ready_successor())
                .map(|c| c.out_len());
            match queued {
                Some(bytes) if bytes < SNAPSHOT_QUEUE_BYTES => {
                    self.replica.handle_successor_writable();
                    self.dispatch();
                }
                _ => return,
            }
        }
    }

    /// Reads the clock once for this stretch of the loop and gives the
    /// replica the time: it fires its own timers (lease, successor watch,
    /// redials) and the actions they produce are carried out.
    pub(super) fn tick(&mut self) {
        self.now = Instant::now();
        let timeouts = self.replica.successor_timeouts();
        self.replica.handle_timeout(self.now);
        if self.replica.successor_timeouts() > timeouts {
            tracing::warn!(
                timeout_ms = crate::units::millis(self.cfg.peer_timeout),
                "successor link silent: redialling"
            );
        }
        self.dispatch();
    }

    /// How long `poll` may sleep: until the replica's next timer, the end
    /// of an accept pause or the next sweep, and at most a second.
    pub(super) fn poll_timeout(&self) -> PollTimeout {
        if !self.dirty.is_empty() {
            return PollTimeout::ZERO;
        }
        let now = Instant::now();
        let mut wake_at = now + Duration::from_millis(1000);
        if let Some(at) = self.replica.poll_timeout() {
            wake_at = wake_at.min(at);
        }
        if let Some(at) = self.accept_paused_until {
            wake_at = wake_at.min(at);
        }
        wake_at = wake_at.min(self.last_sweep + limits::SWEEP_INTERVAL);
        let ms = wake_at.saturating_duration_since(now).as_millis();
        PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX).saturating_add(1))
    }

    /// Room in the worker's queue, counting writes the replica has produced
    /// but `dispatch` has not handed over yet.
    pub(super) fn queue_has_room(&self) -> bool {
        self.queue.has_room(self.replica.pending_actions())
    }

    pub(super) fn wants_read(&self, c: &Conn) -> bool {
        if c.closing || c.connecting || c.slots.len() >= self.cfg.inflight_max {
            return false;
        }
        match c.kind {
            // Stop taking updates from the predecessor while the worker is full.
            Kind::Predecessor { .. } => self.queue_has_room(),
            Kind::Successor { .. } | Kind::PeerHandshake { .. } => true,
            Kind::AwaitHello | Kind::AwaitAuth | Kind::Client(_) => self.client_may_send(c),
        }
    }

    /// Open connections that are not peer links (kept as a counter because
    /// the connection being served is out of `conns` while it is handled).
    pub(super) fn client_count(&self) -> usize {
        self.clients_connected
    }

    pub(super) fn on_socket_event(&mut self, id: u64, ev: PollFlags, scratch: &mut [u8]) {
        let now = self.now;
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        let mut alive = true;
        if conn.connecting
            && ev.intersects(PollFlags::POLLOUT | PollFlags::POLLERR | PollFlags::POLLHUP)
            && !finish_connect(&mut conn)
        {
            self.close(conn, "connect failed");
            return;
        }
        if alive && ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            if let ReadOutcome::Closed = conn.read_some(scratch, &mut self.counters.bytes_in) {
                alive = false;
            }
            // Frames already buffered are still processed below, so a
            // client that sends and half-closes gets its replies.
            self.process_frames(&mut conn);
            if !alive && conn.out_len() == 0 && conn.slots.is_empty() {
                self.close(conn, "peer closed");
                return;
            }
        }
        if alive && ev.contains(PollFlags::POLLOUT) {
            if let Err(e) = conn.write_some(&mut self.counters.bytes_out, now) {
                self.close(conn, &format!("write failed: {e}"));
                return;
            }
        }
        if !alive {
            // Half-closed with replies pending: try to deliver, then close.
            let _ = conn.write_some(&mut self.counters.bytes_out, now);
            conn.start_closing(now);
        }
        self.conns.insert(id, conn);
        self.dirty.push(id);
    }

    /// Handles worker completions and coordination events.
    pub(super) fn drain_background(&mut self) {
        let completions = self.completions.drain();
        if !completions.is_empty() {
            // The worker made room: a paused predecessor link may resume.
            self.touch_peers();
        }
        for c in completions {
            self.on_completion(c);
        }
        let forwarded = self
            .forwarder
            .as_mut()
            .map(|f| f.drain())
            .unwrap_or_default();
        for f in forwarded {
            if let Some(conn) = self.conns.get_mut(&f.conn) {
                conn.complete_write(f.request_id, |_| f.reply);
                self.dirty.push(f.conn);
            }
        }
        let events: Vec<CoordEvent> = match &self.coord {
            Some(c) => c.events.try_iter().collect(),
            None => Vec::new(),
        };
        for e in events {
            self.on_coord_event(e);
        }
        self.dispatch();
    }

    /// Processes buffered frames, flushes replies and writes output for
    /// every connection; closes the ones that are done or over a limit.
    /// Pumps dirty connections until none are left (or a few rounds have
    /// passed: the rest wait for the next iteration, which then does not
    /// block in `poll`).
    pub(super) fn pump_all(&mut self) {
        for _round in 0..8 {
            if self.dirty.is_empty() {
                return;
            }
            self.pump_dirty();
        }
    }

    pub(super) fn pump_dirty(&mut self) {
        let now = self.now;
        let mut ids = std::mem::take(&mut self.dirty);
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let Some(mut conn) = self.conns.remove(&id) else {
                continue;
            };
            if conn.decoder.buffered() > 0 && self.wants_read(&conn) {
                self.process_frames(&mut conn);
            }
            let budget = self.cfg.output_bytes_max;
            self.flush_with_watches(&mut conn, budget);
            let backup_paused = self.pump_backup(&mut conn);
            self.flush_with_watches(&mut conn, budget);
            let watches_left = self.pump_watches(&mut conn);
            if !conn.connecting {
                if let Err(e) = conn.write_some(&mut self.counters.bytes_out, now) {
                    self.close(conn, &format!("write failed: {e}"));
                    continue;
                }
            }
            if conn.closing && conn.out_len() == 0 && conn.slots.is_empty() {
                self.close(conn, "closed after error");
                continue;
            }
            // Requests already buffered that were held back (output over
            // budget, inflight limit) and may go now: no socket event will
            // come for them, so come back next round.
            let held_frames = conn.decoder.frame_ready() && self.wants_read(&conn);
            let backup_resumes = backup_paused && Self::backup_may_resume(&conn);
            if held_frames || backup_resumes || watches_left || conn.slots_flushable(budget) {
                self.dirty.push(id);
            }
            conn.shrink_idle_buffers();
            self.conns.insert(id, conn);
        }
        // Processing frames may have produced replica actions, which may
        // make more connections dirty.
        self.dispatch();
    }

    pub(super) fn touch(&mut self, id: u64) {
        self.dirty.push(id);
    }

    pub(super) fn touch_peers(&mut self) {
        let peers = self.conns.values().filter(|c| c.is_peer()).map(|c| c.id);
        self.dirty.extend(peers);
    }

    pub(super) fn shutdown(mut self) {
        tracing::info!("shutting down: no new connections, finishing queued writes");
        self.listener = None;
        self.queue.close();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        for c in self.completions.drain() {
            self.on_completion(c);
        }
        self.replica
            .fail_waiting(crate::wire::ErrorCode::ShuttingDown);
        self.dispatch();
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in &ids {
            if let Some(mut conn) = self.conns.remove(id) {
                conn.flush_slots(usize::MAX, |m| self.eval_read(m));
                if !conn.is_peer() {
                    let now = self.now;
                    conn.fail(
                        crate::wire::ErrorCode::ShuttingDown,
                        "server shutting down",
                        now,
                    );
                    conn.flush_slots(usize::MAX, |m| self.eval_read(m));
                }
                let _ = conn.stream.set_nonblocking(false);
                let _ = conn.stream.set_write_timeout(Some(SHUTDOWN_FLUSH));
                let _ = conn.write_some(&mut self.counters.bytes_out, Instant::now());
            }
        }
        if let Some(c) = self.coord.take() {
            c.stop();
        }
        tracing::info!(last_executed = self.replica.last_applied(), "stopped");
    }
}
