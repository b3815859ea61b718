//! Coordination through ZooKeeper, on a thread of its own.
//!
//! Layout: a persistent root (default `/chain`) and one EPHEMERAL|SEQUENTIAL
//! child `node<seq>` per server holding its `host:port`. Members are ordered
//! by sequence number: the smallest is the head, the largest the tail.
//!
//! Locked down (see [`zk_auth`]): with a cluster secret, members log in to
//! ZooKeeper with a digest identity derived from it, the root and member
//! nodes carry an ACL that lets only that identity write and anyone read,
//! and each member node's content is signed (root, owning session and
//! address under a key derived from the secret). Members and clients take as members only
//! ephemeral children, and members only signed ones.
//!
//! The `zookeeper-client` crate runs on smol's small executor inside this
//! thread; everything it learns leaves as [`CoordEvent`]s over a channel,
//! followed by a `notify` call that wakes the consumer (the server's poll
//! loop). No async code runs on the server's hot path.

mod zk_auth;

pub use zk_auth::{digest_credentials, sign_member, verify_member, MemberRecord, DIGEST_USER};

use crate::auth::Secret;
use crate::member::Member;
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
    /// ZooKeeper says the session is over (or registration failed): stop
    /// serving now and drop the table. A new registration follows.
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
    /// The cluster secret: ZooKeeper login, node ACLs and signatures.
    /// `None` (or the insecure secret) leaves ZooKeeper open and accepts
    /// unsigned member nodes.
    pub secret: Option<Secret>,
}

impl CoordConfig {
    /// The secret, unless absent or the insecure (empty) one.
    fn real_secret(&self) -> Option<&Secret> {
        self.secret.as_ref().filter(|s| !s.is_insecure())
    }
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

/// How one client's session ended.
enum SessionEnd {
    /// Asked to stop.
    Stopped,
    /// The client gave up on ZooKeeper and reports the session expired.
    /// It says so after 1.4 × the timeout without contact, without asking
    /// the server, so the session may well be alive (a restarted ZooKeeper
    /// restores sessions with fresh timeouts): resume it to find out.
    /// Carries the node registered in it, if any.
    Unconfirmed(Option<String>),
    /// The session is over (ZooKeeper said so, or registration failed).
    Lost(String),
}

/// A session to resume, and the node it registered.
struct Resume {
    session: zk::SessionInfo,
    node: String,
}

/// Connects, registers and watches until stopped. The member is fenced
/// (and registers anew) only once its session is known to be over: while
/// ZooKeeper is unreachable it merely stops serving as its lease runs out,
/// and keeps its place, its table and its peer links. Re-registering after
/// every outage would be wrong, not only slow: a member that lost its
/// session may have been left behind by the chain, so only a fresh joiner
/// (which receives a snapshot) is safe, and a chain whose members all
/// re-register has no one left to hold the state.
async fn run<F: Fn()>(cfg: CoordConfig, out: Outbox<F>, stop: Arc<AtomicBool>) {
    let mut resume: Option<Resume> = None;
    while !stop.load(Ordering::SeqCst) {
        let session_info = resume.as_ref().map(|r| r.session.clone());
        let sent = Instant::now();
        let client = match connect(&cfg, session_info).await {
            Ok(c) => c,
            Err(zk::Error::SessionExpired) if resume.is_some() => {
                resume = None;
                fence(&cfg, &out, "ZooKeeper expired the session".into());
                continue;
            }
            Err(e) => {
                tracing::warn!(zookeeper = %cfg.zookeeper, error = %e, "ZooKeeper unreachable; retrying");
                smol::Timer::after(RECONNECT_DELAY).await;
                continue;
            }
        };
        let registered = resume.take().map(|r| {
            tracing::info!(node = %r.node, "session resumed");
            (r.node, sent)
        });
        match session(&cfg, &client, &out, &stop, registered).await {
            SessionEnd::Stopped => break,
            SessionEnd::Unconfirmed(node) => {
                resume = node.map(|node| Resume {
                    session: client.session().clone(),
                    node,
                });
                if resume.is_none() && cfg.advertise.is_some() {
                    fence(&cfg, &out, "session expired before registering".into());
                }
            }
            SessionEnd::Lost(reason) => fence(&cfg, &out, reason),
        }
        smol::Timer::after(RECONNECT_DELAY).await;
    }
}

fn fence<F: Fn()>(cfg: &CoordConfig, out: &Outbox<F>, reason: String) {
    tracing::warn!(reason = %reason, "coordination session lost: fencing");
    if cfg.advertise.is_some() {
        out.send(CoordEvent::Fenced(reason));
    }
}

/// A new session, or `resume`'s if given (ZooKeeper then answers
/// `SessionExpired` if it is over).
async fn connect(
    cfg: &CoordConfig,
    resume: Option<zk::SessionInfo>,
) -> Result<zk::Client, zk::Error> {
    let mut connector = zk::Client::connector()
        .with_session_timeout(cfg.session_timeout)
        .with_connection_timeout(cfg.session_timeout);
    if let Some(secret) = cfg.real_secret() {
        connector = connector.with_auth("digest", &zk_auth::digest_credentials(secret));
    }
    let Some(info) = resume else {
        let client = connector.connect(&cfg.zookeeper).await?;
        if cfg.advertise.is_some() {
            ensure_root(&client, &cfg.root, cfg.real_secret().is_some()).await?;
        }
        return Ok(client);
    };
    // The root holds our node, so it exists; and a failed request here
    // would drop the client, which closes the session we came to keep.
    connector.with_session(info).connect(&cfg.zookeeper).await
}

/// Creates the root path if needed. Locked down, every node created gets
/// the members-only ACL, and the root's ACL is (re)set to it, so a root
/// that an outsider created world-writable before the first member came is
/// taken back; one whose ACL this member may not change is an error.
async fn ensure_root(client: &zk::Client, root: &str, locked: bool) -> Result<(), zk::Error> {
    let acls = zk_auth::node_acls(locked);
    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&acls));
    let mut path = String::new();
    for part in root.split('/').filter(|p| !p.is_empty()) {
        path.push('/');
        path.push_str(part);
        match client.create(&path, b"", &opts).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    if locked {
        if let Err(e) = client.set_acl(&path, &acls, None).await {
            tracing::error!(root = %path, error = %e, "cannot lock down the chain root: its ACL lets someone else decide");
            return Err(e);
        }
    }
    Ok(())
}

/// Registers this member: an ephemeral sequential node holding its address.
async fn register<F: Fn()>(
    cfg: &CoordConfig,
    client: &zk::Client,
    addr: &str,
    lease: Duration,
    out: &Outbox<F>,
) -> Result<String, String> {
    let sent = Instant::now();
    let acls = zk_auth::node_acls(cfg.real_secret().is_some());
    let opts = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::new(&acls));
    let path = format!("{}/node", cfg.root.trim_end_matches('/'));
    // The signature binds the address to this session, which ZooKeeper
    // records as the node's ephemeral owner: no one else can make a node
    // that carries it.
    let session = client.session_id().0;
    let record = match cfg.real_secret() {
        Some(secret) => sign_member(secret, &cfg.root, session, addr),
        None => addr.as_bytes().to_vec(),
    };
    match client.create(&path, &record, &opts).await {
        Ok((_, seq)) => {
            let name = format!("node{seq}");
            tracing::info!(node = %name, "registered in ZooKeeper");
            out.send(CoordEvent::Registered(name.clone()));
            out.send(CoordEvent::Alive { sent, lease });
            Ok(name)
        }
        Err(e) => Err(format!("cannot register: {e}")),
    }
}

/// Runs one client's session: register (unless `registered` names the
/// node of a resumed session, confirmed alive at the instant given), then
/// report membership on every change and renew the lease until the
/// session ends.
async fn session<F: Fn()>(
    cfg: &CoordConfig,
    client: &zk::Client,
    out: &Outbox<F>,
    stop: &AtomicBool,
    registered: Option<(String, Instant)>,
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
        let watcher = match list_members(client, cfg).await {
            Ok((members, watcher)) => {
                if let Some(own) = node.as_deref() {
                    if !members.iter().any(|m| m.name == own) {
                        // Deleted (or altered) while our session lives: the
                        // chain no longer counts us; start over as a new
                        // member rather than stay fenced for good.
                        let why = format!("own node {own} is gone or no longer valid");
                        return SessionEnd::Lost(why);
                    }
                }
                out.send(CoordEvent::Members(members));
                watcher
            }
            Err(e) => {
                tracing::debug!(error = %e, "listing members failed; retrying");
                if let Err(end) = wait_usable(&mut state, stop, node.as_deref()).await {
                    return end;
                }
                continue;
            }
        };
        // Wait for a membership change or a session change; wake every
        // RECONNECT_DELAY to renew the lease and notice a stop request.
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
                Woke::State(zk::SessionState::SyncConnected) => {}
                // Reconnected after a disconnection: list again, as the
                // membership may have changed meanwhile.
                Woke::State(_) => match wait_usable(&mut state, stop, node.as_deref()).await {
                    Ok(()) => break,
                    Err(end) => return end,
                },
                Woke::Tick if stop.load(Ordering::SeqCst) => return SessionEnd::Stopped,
                Woke::Tick => {
                    if node.is_some() {
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

/// Waits until the client is connected again (`Ok`), or its session has
/// ended. No deadline: the member does not serve meanwhile (its lease runs
/// out), and only ZooKeeper can say whether the session is over.
async fn wait_usable(
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

/// Most children of the chain root read per listing: a bound on what a
/// flood of nodes (were ZooKeeper left open) could make us fetch.
pub const CHILDREN_MAX: usize = 1024;

/// Reads the members and arms a watch: ephemeral children only (a member
/// lives as long as its session), and signed ones when there is a secret.
async fn list_members(
    client: &zk::Client,
    cfg: &CoordConfig,
) -> Result<(Vec<Member>, zk::OneshotWatcher), zk::Error> {
    let root = &cfg.root;
    let (mut children, watcher) = client.list_and_watch_children(root).await?;
    if children.len() > CHILDREN_MAX {
        tracing::warn!(
            children = children.len(),
            max = CHILDREN_MAX,
            "chain root has too many children; reading the first member-named ones"
        );
        // Member names (`node` + sequence) first, lowest sequence first, so
        // other children cannot push the real members out of the window.
        children.sort_by_key(|c| (!c.starts_with("node"), c.clone()));
        children.truncate(CHILDREN_MAX);
    }
    let mut raw = Vec::with_capacity(children.len());
    for child in children {
        let path = format!("{}/{}", root.trim_end_matches('/'), child);
        let (data, owner) = match client.get_data(&path).await {
            Ok((data, stat)) if stat.ephemeral_owner != 0 => (data, stat.ephemeral_owner),
            Ok(_) => {
                tracing::warn!(node = %child, "ignoring a persistent child of the chain root");
                continue;
            }
            Err(zk::Error::NoNode) => continue, // left between list and read
            Err(zk::Error::NoAuth) => {
                // A node we may not read is not a member (members make
                // theirs world-readable); it must not hide the others.
                tracing::warn!(node = %child, "ignoring an unreadable child of the chain root");
                continue;
            }
            Err(e) => return Err(e),
        };
        match verify_member(cfg.real_secret(), root, owner, &data) {
            Ok(addr) => raw.push((child, addr.into_bytes())),
            Err(why) => tracing::debug!(node = %child, why, "ignoring a member node"),
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
