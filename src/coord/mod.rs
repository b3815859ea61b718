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

mod durable;
mod members;
mod session;
mod shard_map;
mod zk_auth;

pub use durable::{decode_floor, encode_floor};
use members::list_members;
pub use members::{order_members, CHILDREN_MAX};
use session::session;
pub use shard_map::write_map;

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
    Alive {
        /// When the confirming request left (not when its answer came).
        sent: Instant,
        /// How long after `sent` the member may serve.
        lease: Duration,
    },
    /// The chain's durable floor as ZooKeeper holds it (see `durable.rs`):
    /// read with every membership listing, and after every publication.
    DurableFloor(crate::member::DurableFloor),
    /// The cluster's shard map (with `CoordConfig::cluster`), read with
    /// every listing and whenever it changes.
    ShardMap(crate::cluster::ShardMap),
}

/// What the server asks of the coordination thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordCommand {
    /// Raise the chain's durable floor and reserved ids to at least these
    /// (0: as they are), then report them ([`CoordEvent::DurableFloor`]).
    RaiseFloor(crate::member::DurableFloor),
    /// Leave the front of the chain: this member may not found it (its log
    /// stops before the durable floor). After [`STEP_ASIDE_DELAY`] its node
    /// is deleted and it registers anew, at the end.
    StepAside,
}

/// How long a member that may not found the chain waits before it steps
/// aside, so that members restarting together do not cycle through
/// ZooKeeper while the one that may found it is still on its way.
pub const STEP_ASIDE_DELAY: Duration = Duration::from_secs(1);

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
    /// The session timeout asked of ZooKeeper (it may clamp it).
    pub session_timeout: Duration,
    /// The cluster secret: ZooKeeper login, node ACLs and signatures.
    /// `None` (or the insecure secret) leaves ZooKeeper open and accepts
    /// unsigned member nodes.
    pub secret: Option<Secret>,
    /// A cluster of chains: the cluster root, whose data is the shard map
    /// (spec §5.8), read and watched besides the members.
    pub cluster: Option<String>,
}

impl CoordConfig {
    /// The secret, unless absent or the insecure (empty) one.
    fn real_secret(&self) -> Option<&Secret> {
        self.secret.as_ref().filter(|s| !s.is_insecure())
    }
}

/// What the server has asked of the coordination thread and it has not
/// carried out yet, merged as it arrives: at most one floor raise (the
/// highest asked) and one step aside, however many commands come, so it
/// holds a fixed amount while ZooKeeper is away. `wake` (capacity 1) only
/// says that there is something to take.
pub(crate) struct Inbox {
    pending: std::sync::Mutex<Pending>,
    wake: smol::channel::Sender<()>,
}

#[derive(Default)]
pub(crate) struct Pending {
    pub raise: Option<crate::member::DurableFloor>,
    pub step_aside: bool,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Plain data: a panic elsewhere cannot leave it torn.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, c: CoordCommand) {
        {
            let mut p = self.lock();
            match c {
                CoordCommand::RaiseFloor(d) => p.raise = Some(p.raise.unwrap_or_default().max(d)),
                CoordCommand::StepAside => p.step_aside = true,
            }
        }
        // Full means a wake-up is already on its way.
        let _ = self.wake.try_send(());
    }

    /// Everything asked since the last take.
    pub(crate) fn take(&self) -> Pending {
        std::mem::take(&mut *self.lock())
    }
}

/// Handle to the coordination thread.
pub struct Coordinator {
    /// What the thread reports, in order; the consumer is woken by the
    /// `notify` callback after each.
    pub events: Receiver<CoordEvent>,
    inbox: Arc<Inbox>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Coordinator {
    /// Starts the thread. `notify` is called after every event is queued.
    ///
    /// # Errors
    ///
    /// When the coordination thread cannot be spawned.
    pub fn start(
        cfg: CoordConfig,
        notify: impl Fn() + Send + 'static,
    ) -> std::io::Result<Coordinator> {
        let (tx, events) = mpsc::channel();
        let (wake, woken) = smol::channel::bounded(1);
        let inbox = Arc::new(Inbox {
            pending: std::sync::Mutex::new(Pending::default()),
            wake,
        });
        let inbox2 = inbox.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("coordination".into())
            .spawn(move || {
                let out = Outbox { tx, notify };
                smol::block_on(run(cfg, out, stop2, &inbox2, woken));
            })?;
        Ok(Coordinator {
            events,
            inbox,
            stop,
            thread: Some(thread),
        })
    }

    /// Hands the thread a command; it never blocks, and commands not yet
    /// carried out are merged (see [`Inbox`]).
    pub fn command(&self, c: CoordCommand) {
        self.inbox.put(c);
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

/// The server's commands as a session sees them.
struct Commands<'a> {
    inbox: &'a Inbox,
    woken: &'a smol::channel::Receiver<()>,
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
async fn run<F: Fn()>(
    cfg: CoordConfig,
    out: Outbox<F>,
    stop: Arc<AtomicBool>,
    inbox: &Inbox,
    woken: smol::channel::Receiver<()>,
) {
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
        let commands = Commands {
            inbox,
            woken: &woken,
        };
        match session(&cfg, &client, &out, &stop, registered, &commands).await {
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

#[cfg(test)]
mod inbox_tests {
    use super::*;
    use crate::member::DurableFloor;

    #[test]
    fn commands_the_thread_has_not_taken_are_merged_not_queued() {
        let (wake, woken) = smol::channel::bounded(1);
        let inbox = Inbox {
            pending: std::sync::Mutex::new(Pending::default()),
            wake,
        };
        // A server asking at full speed while ZooKeeper is away.
        for seq in 1..=100_000u64 {
            inbox.put(CoordCommand::RaiseFloor(DurableFloor {
                floor: seq,
                reserved: 0,
            }));
        }
        inbox.put(CoordCommand::RaiseFloor(DurableFloor {
            floor: 7,
            reserved: 1 << 24,
        }));
        inbox.put(CoordCommand::StepAside);
        assert_eq!(woken.len(), 1, "one wake-up, however many commands");
        let p = inbox.take();
        assert_eq!(
            p.raise,
            Some(DurableFloor {
                floor: 100_000,
                reserved: 1 << 24
            })
        );
        assert!(p.step_aside);
        let again = inbox.take();
        assert!(again.raise.is_none() && !again.step_aside, "taken once");
    }
}
