//! One ZooKeeper session: register, report membership on every change,
//! and renew the lease until the session ends.

use super::*;

/// Runs one client's session: register (unless `registered` names the
/// node of a resumed session, confirmed alive at the instant given), then
/// report membership on every change and renew the lease until the
/// session ends.
pub(super) async fn session<F: Fn()>(
    cfg: &CoordConfig,
    client: &zk::Client,
    out: &Outbox<F>,
    stop: &AtomicBool,
    registered: Option<(String, Instant)>,
    inbox: &Commands<'_>,
) -> SessionEnd {
    let lease = lease_for(cfg.session_timeout, client.session_timeout());
    let node = match (&cfg.advertise, registered) {
        (None, _) => None,
        (Some(_), Some((node, sent))) => {
            out.send(CoordEvent::Alive { sent, lease });
            Some(node)
        }
        (Some(addr), None) => match register(cfg, client, addr, lease, out).await {
            Ok(node) => Some(node),
            Err(reason) => return SessionEnd::Lost(reason),
        },
    };
    let mut state = client.state_watcher();
    loop {
        if stop.load(Ordering::SeqCst) {
            return SessionEnd::Stopped;
        }
        let listed = match read_map_of(client, cfg, out).await {
            Ok(map_watcher) => list_members(client, cfg)
                .await
                .map(|(members, watcher)| (members, watcher, map_watcher)),
            Err(e) => Err(e),
        };
        let watchers = match listed {
            Ok((members, watcher, map_watcher)) => {
                if let Some(own) = node.as_deref() {
                    if !members.iter().any(|m| m.name == own) {
                        // Deleted (or altered) while our session lives: the
                        // chain no longer counts us; start over as a new
                        // member rather than stay fenced for good.
                        let why = format!("own node {own} is gone or no longer valid");
                        return SessionEnd::Lost(why);
                    }
                }
                if node.is_some() {
                    // Before the members: a member deciding whether it may
                    // found the chain needs the floor first.
                    match durable::read_floor(client, cfg).await {
                        Ok(Ok((d, _))) => out.send(CoordEvent::DurableFloor(d)),
                        Ok(Err(why)) => {
                            tracing::error!(root = %cfg.root, why, "the chain root holds no valid durable floor")
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot read the durable floor"),
                    }
                }
                out.send(CoordEvent::Members(members));
                (watcher, map_watcher)
            }
            Err(e) => {
                tracing::debug!(error = %e, "listing members failed; retrying");
                if let Err(end) = wait_usable(&mut state, stop, node.as_deref()).await {
                    return end;
                }
                continue;
            }
        };
        let lessee = Lessee {
            cfg,
            lease,
            node: node.as_deref(),
        };
        if let Err(end) =
            await_change(client, out, stop, &mut state, watchers, &lessee, inbox).await
        {
            return end;
        }
    }
}

/// Reads the shard map when the session serves a cluster, reports it, and
/// returns the watch on it.
async fn read_map_of<F: Fn()>(
    client: &zk::Client,
    cfg: &CoordConfig,
    out: &Outbox<F>,
) -> Result<Option<zk::OneshotWatcher>, zk::Error> {
    let Some(cluster) = &cfg.cluster else {
        return Ok(None);
    };
    let (map, watcher) = super::shard_map::read_map(client, cfg, cluster).await?;
    if let Some(map) = map {
        out.send(CoordEvent::ShardMap(map));
    }
    Ok(Some(watcher))
}

/// What renewing the lease needs: the node to renew it for (none before
/// registering), the path to read, and the lease each renewal grants.
struct Lessee<'a> {
    cfg: &'a CoordConfig,
    lease: Duration,
    node: Option<&'a str>,
}

/// Waits for a membership change, or for a reconnection after which the
/// members must be listed again (`Ok`), renewing the lease every
/// RECONNECT_DELAY meanwhile; `Err` when the session ends or a stop was
/// asked for.
async fn await_change<F: Fn()>(
    client: &zk::Client,
    out: &Outbox<F>,
    stop: &AtomicBool,
    state: &mut zk::StateWatcher,
    (watcher, map_watcher): (zk::OneshotWatcher, Option<zk::OneshotWatcher>),
    lessee: &Lessee<'_>,
    inbox: &Commands<'_>,
) -> Result<(), SessionEnd> {
    enum Woke {
        Children,
        State(zk::SessionState),
        Tick,
        Command,
    }
    let mut children = std::pin::pin!(watcher.changed());
    let mut map_changed = map_watcher.map(|w| Box::pin(w.changed()));
    loop {
        let woke = async {
            (&mut children).await;
            Woke::Children
        }
        .or(async {
            match map_changed.as_mut() {
                // The map changed: read it (and the members) again.
                Some(changed) => {
                    changed.await;
                    Woke::Children
                }
                None => std::future::pending().await,
            }
        })
        .or(async { Woke::State(state.changed().await) })
        .or(async {
            smol::Timer::after(RECONNECT_DELAY).await;
            Woke::Tick
        })
        .or(async {
            match inbox.woken.recv().await {
                Ok(()) => Woke::Command,
                // No server holds the sender any more: nothing will come.
                Err(_) => std::future::pending().await,
            }
        })
        .await;
        match woke {
            Woke::Children => return Ok(()),
            Woke::State(zk::SessionState::SyncConnected) => {}
            // Reconnected after a disconnection: list again, as the
            // membership may have changed meanwhile.
            Woke::State(_) => return wait_usable(state, stop, lessee.node).await,
            Woke::Tick if stop.load(Ordering::SeqCst) => return Err(SessionEnd::Stopped),
            Woke::Tick => {
                if lessee.node.is_some() {
                    renew_lease(client, &lessee.cfg.root, lessee.lease, out).await;
                }
            }
            Woke::Command => command(client, out, lessee, inbox.inbox.take()).await?,
        }
    }
}

/// The lease a session grants: the shorter of what was asked for and what
/// ZooKeeper negotiated. A longer negotiated timeout is safe but slows
/// failover; a shorter one must shorten the lease.
pub(super) fn lease_for(requested: Duration, negotiated: Duration) -> Duration {
    if negotiated != requested {
        tracing::warn!(
            requested_ms = crate::units::millis(requested),
            negotiated_ms = crate::units::millis(negotiated),
            "ZooKeeper negotiated another session timeout (its minSessionTimeout/\
             maxSessionTimeout); failures are detected after the negotiated one"
        );
    }
    if negotiated.is_zero() {
        requested
    } else {
        requested.min(negotiated)
    }
}

/// Confirms the session with a cheap read; reports the lease on success.
pub(super) async fn renew_lease<F: Fn()>(
    client: &zk::Client,
    root: &str,
    lease: Duration,
    out: &Outbox<F>,
) {
    let sent = Instant::now();
    let ok = async { client.check_stat(root).await.is_ok() }
        .or(async {
            smol::Timer::after(lease).await;
            false
        })
        .await;
    if ok {
        out.send(CoordEvent::Alive { sent, lease });
    }
}

/// Waits until the client is connected again (`Ok`), or its session has
/// ended. No deadline: the member does not serve meanwhile (its lease runs
/// out), and only ZooKeeper can say whether the session is over.
pub(super) async fn wait_usable(
    state: &mut zk::StateWatcher,
    stop: &AtomicBool,
    node: Option<&str>,
) -> Result<(), SessionEnd> {
    loop {
        match state.peek_state() {
            zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => return Ok(()),
            zk::SessionState::Disconnected => {}
            zk::SessionState::Expired => {
                return Err(SessionEnd::Unconfirmed(node.map(str::to_string)))
            }
            other => return Err(SessionEnd::Lost(format!("session {other:?}"))),
        }
        if stop.load(Ordering::SeqCst) {
            return Err(SessionEnd::Stopped);
        }
        async {
            state.changed().await;
        }
        .or(async {
            smol::Timer::after(RECONNECT_DELAY).await;
        })
        .await;
    }
}

/// Carries out what the server asked (merged by the inbox: one floor
/// raise, the highest, and a step aside).
async fn command<F: Fn()>(
    client: &zk::Client,
    out: &Outbox<F>,
    lessee: &Lessee<'_>,
    pending: Pending,
) -> Result<(), SessionEnd> {
    if let Some(want) = pending.raise {
        match durable::publish_floor(client, lessee.cfg, want).await {
            Ok(d) => out.send(CoordEvent::DurableFloor(d)),
            Err(e) => {
                tracing::warn!(?want, error = %e, "cannot raise the durable floor; asked again with the next lease")
            }
        }
    }
    let (true, Some(node)) = (pending.step_aside, lessee.node) else {
        return Ok(());
    };
    smol::Timer::after(STEP_ASIDE_DELAY).await;
    let path = format!("{}/{node}", lessee.cfg.root.trim_end_matches('/'));
    if let Err(e) = client.delete(&path, None).await {
        tracing::warn!(node, error = %e, "cannot delete own node to step aside");
    }
    Err(SessionEnd::Lost(format!(
        "stepped aside: {node} may not found the chain (its log stops before the durable floor)"
    )))
}
