//! Coordination through ZooKeeper, on a thread of its own.
//!
//! Layout: a persistent root (default `/chain`) and one EPHEMERAL|SEQUENTIAL
//! child `node<seq>` per server holding its `host:port`. Members are ordered
//! by sequence number: the smallest is the head, the largest the tail.
//!
//! The `zookeeper-client` crate runs on smol's small executor inside this
//! thread; everything it learns leaves as [`CoordEvent`]s over a channel,
//! followed by a `notify` call that wakes the consumer (the server's poll
//! loop). No async code runs on the server's hot path.

use crate::replica::Member;
use smol::future::FutureExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zookeeper_client as zk;

/// What the coordination thread reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordEvent {
    /// This server is registered under `name` (a fresh one after fencing).
    Registered(String),
    /// The chain, head first.
    Members(Vec<Member>),
    /// The session is lost or could not be confirmed within its timeout:
    /// stop serving now. A new registration follows.
    Fenced(String),
    /// ZooKeeper answered a request sent at `sent`, so the session is valid
    /// until at least `sent + lease`: the member may serve until then (a
    /// lease), and must stop after it unless renewed. This is what keeps a
    /// paused or cut-off member from serving after the others have moved
    /// on. `lease` is the smaller of the requested and the negotiated
    /// session timeout: ZooKeeper clamps the request into its own
    /// [min, max], and a lease longer than the real session would let a
    /// member serve after ZooKeeper has removed it.
    Alive { sent: Instant, lease: Duration },
}

/// Pause between attempts to reach ZooKeeper (it costs no CPU meanwhile).
const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// What the coordination thread should do.
#[derive(Debug, Clone)]
pub struct CoordConfig {
    /// ZooKeeper `host:port`.
    pub zookeeper: String,
    /// Chain root path, e.g. `/chain`.
    pub root: String,
    /// `Some(host:port)` to register as a member; `None` only to watch.
    pub advertise: Option<String>,
    pub session_timeout: Duration,
}

/// Handle to the coordination thread.
pub struct Coordinator {
    pub events: Receiver<CoordEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Coordinator {
    /// Starts the thread. `notify` is called after every event is queued.
    pub fn start(
        cfg: CoordConfig,
        notify: impl Fn() + Send + 'static,
    ) -> std::io::Result<Coordinator> {
        let (tx, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("coordination".into())
            .spawn(move || {
                let out = Outbox { tx, notify };
                smol::block_on(run(cfg, out, stop2));
            })?;
        Ok(Coordinator {
            events,
            stop,
            thread: Some(thread),
        })
    }

    /// Asks the thread to end (its session closes, so our node goes away).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // The thread notices within one RECONNECT_DELAY or watch tick.
            let _ = t.join();
        }
    }
}

struct Outbox<F: Fn()> {
    tx: Sender<CoordEvent>,
    notify: F,
}

impl<F: Fn()> Outbox<F> {
    fn send(&self, e: CoordEvent) {
        let _ = self.tx.send(e);
        (self.notify)();
    }
}

async fn run<F: Fn()>(cfg: CoordConfig, out: Outbox<F>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let client = match connect(&cfg).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(zookeeper = %cfg.zookeeper, error = %e, "ZooKeeper unreachable; retrying");
                smol::Timer::after(RECONNECT_DELAY).await;
                continue;
            }
        };
        let reason = session(&cfg, &client, &out, &stop).await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        tracing::warn!(reason = %reason, "coordination session lost: fencing");
        if cfg.advertise.is_some() {
            out.send(CoordEvent::Fenced(reason));
        }
        smol::Timer::after(RECONNECT_DELAY).await;
    }
}

async fn connect(cfg: &CoordConfig) -> Result<zk::Client, zk::Error> {
    let client = zk::Client::connector()
        .with_session_timeout(cfg.session_timeout)
        .with_connection_timeout(cfg.session_timeout)
        .connect(&cfg.zookeeper)
        .await?;
    ensure_root(&client, &cfg.root).await?;
    Ok(client)
}

async fn ensure_root(client: &zk::Client, root: &str) -> Result<(), zk::Error> {
    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let mut path = String::new();
    for part in root.split('/').filter(|p| !p.is_empty()) {
        path.push('/');
        path.push_str(part);
        match client.create(&path, b"", &opts).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs one session: register, then report membership on every change
/// until the session is lost. Returns why it ended.
async fn session<F: Fn()>(
    cfg: &CoordConfig,
    client: &zk::Client,
    out: &Outbox<F>,
    stop: &AtomicBool,
) -> String {
    let lease = lease_for(cfg.session_timeout, client.session_timeout());
    if let Some(addr) = &cfg.advertise {
        let sent = Instant::now();
        let opts = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let path = format!("{}/node", cfg.root.trim_end_matches('/'));
        match client.create(&path, addr.as_bytes(), &opts).await {
            Ok((_, seq)) => {
                let name = format!("node{seq}");
                tracing::info!(node = %name, "registered in ZooKeeper");
                out.send(CoordEvent::Registered(name));
                out.send(CoordEvent::Alive { sent, lease });
            }
            Err(e) => return format!("cannot register: {e}"),
        }
    }
    let mut state = client.state_watcher();
    loop {
        if stop.load(Ordering::SeqCst) {
            return "stopping".into();
        }
        let watcher = match list_members(client, &cfg.root).await {
            Ok((members, watcher)) => {
                out.send(CoordEvent::Members(members));
                watcher
            }
            Err(e) => {
                if let Some(reason) = wait_connected(&mut state, lease).await {
                    return reason;
                }
                tracing::debug!(error = %e, "listing members failed; retrying");
                continue;
            }
        };
        // Wait for a membership change or a session change; wake every
        // RECONNECT_DELAY only to notice a stop request.
        let mut children = std::pin::pin!(watcher.changed());
        loop {
            enum Woke {
                Children,
                State(zk::SessionState),
                Tick,
            }
            let woke = async {
                (&mut children).await;
                Woke::Children
            }
            .or(async { Woke::State(state.changed().await) })
            .or(async {
                smol::Timer::after(RECONNECT_DELAY).await;
                Woke::Tick
            })
            .await;
            match woke {
                Woke::Children => break,
                Woke::State(s) => {
                    if let Some(reason) = on_state(s, &mut state, lease).await {
                        return reason;
                    }
                }
                Woke::Tick if stop.load(Ordering::SeqCst) => return "stopping".into(),
                Woke::Tick => {
                    if cfg.advertise.is_some() {
                        renew_lease(client, &cfg.root, lease, out).await;
                    }
                }
            }
        }
    }
}

/// The lease a session grants: the shorter of what was asked for and what
/// ZooKeeper negotiated. A longer negotiated timeout is safe but slows
/// failover; a shorter one must shorten the lease.
fn lease_for(requested: Duration, negotiated: Duration) -> Duration {
    if negotiated != requested {
        tracing::warn!(
            requested_ms = requested.as_millis() as u64,
            negotiated_ms = negotiated.as_millis() as u64,
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
async fn renew_lease<F: Fn()>(client: &zk::Client, root: &str, lease: Duration, out: &Outbox<F>) {
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

/// Reacts to a session state change. Returns a reason to fence, if any.
async fn on_state(
    s: zk::SessionState,
    state: &mut zk::StateWatcher,
    timeout: Duration,
) -> Option<String> {
    match s {
        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => None,
        zk::SessionState::Disconnected => wait_connected(state, timeout).await,
        other => Some(format!("session {other:?}")),
    }
}

/// While disconnected, keep serving for at most the session timeout (the
/// session may still be alive); past it, the others may have removed us.
async fn wait_connected(state: &mut zk::StateWatcher, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        match state.peek_state() {
            zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => return None,
            zk::SessionState::Disconnected => {}
            other => return Some(format!("session {other:?}")),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(format!(
                "no contact with ZooKeeper for {} ms (session timeout)",
                timeout.as_millis()
            ));
        }
        let changed = async {
            state.changed().await;
        }
        .or(async {
            smol::Timer::after(left).await;
        });
        changed.await;
    }
}

/// Reads the members (children and their addresses) and arms a watch.
async fn list_members(
    client: &zk::Client,
    root: &str,
) -> Result<(Vec<Member>, zk::OneshotWatcher), zk::Error> {
    let (children, watcher) = client.list_and_watch_children(root).await?;
    let mut raw = Vec::with_capacity(children.len());
    for child in children {
        let path = format!("{}/{}", root.trim_end_matches('/'), child);
        match client.get_data(&path).await {
            Ok((data, _)) => raw.push((child, data)),
            Err(zk::Error::NoNode) => {} // left between list and read
            Err(e) => return Err(e),
        }
    }
    Ok((order_members(raw), watcher))
}

/// Orders raw children by sequence number and parses their addresses
/// leniently (trailing NUL bytes and whitespace are dropped; children whose
/// name has no sequence number are ignored).
pub fn order_members(raw: Vec<(String, Vec<u8>)>) -> Vec<Member> {
    let mut members: Vec<(u64, Member)> = raw
        .into_iter()
        .filter_map(|(name, data)| {
            let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
            let seq: u64 = digits.parse().ok()?;
            let addr = String::from_utf8_lossy(&data)
                .trim_end_matches(['\0', ' ', '\n', '\r'])
                .to_string();
            Some((seq, Member { name, addr }))
        })
        .collect();
    members.sort_by_key(|(seq, _)| *seq);
    members.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_ordered_by_sequence_and_nul_tolerant() {
        let raw = vec![
            ("node0000000010".to_string(), b"127.0.0.1:9003\0\0".to_vec()),
            ("node0000000002".to_string(), b"127.0.0.1:9001".to_vec()),
            ("junk".to_string(), b"x".to_vec()),
            ("node0000000007".to_string(), b"127.0.0.1:9002\0".to_vec()),
        ];
        let m = order_members(raw);
        let addrs: Vec<&str> = m.iter().map(|m| m.addr.as_str()).collect();
        assert_eq!(
            addrs,
            ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
        );
        assert_eq!(m[0].name, "node0000000002");
    }
}
