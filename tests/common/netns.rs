//! Test hosts in network namespaces that the test creates itself, so that
//! partitions can be injected without touching the machine's own network.
//!
//! Layout: a hub namespace holds a bridge with two addresses, one for the
//! test's own threads (clients, the harness) and one for ZooKeeper. Every
//! member runs in a namespace of its own, linked to the bridge by a veth
//! pair. A partition drops packets silently on arrival, in both
//! directions: an `ip rule ... blackhole` on the source address in each
//! receiving namespace (consulted before the `local` table, which every
//! namespace here moves behind it), or, to cut a member from everyone, its
//! bridge port taken down. Senders see nothing but silence, as in a real
//! partition: no reset, no unreachable error, TCP retransmitting with
//! backoff. Both processes keep running; unlike SIGSTOP, a member cut from
//! ZooKeeper goes on talking to the members it can still reach.
//!
//! Needs root and iproute2 (`ip`); [`Net::create`] says why when either is
//! missing, and callers skip partition faults with that message.

use std::process::Command;

/// Address of the harness and its clients (the bridge's first address).
pub const HARNESS_IP: &str = "10.77.0.1";
/// Address ZooKeeper listens on (the bridge's second address).
pub const ZK_IP: &str = "10.77.0.2";
/// The bridge's fixed, locally administered MAC address.
const BRIDGE_MAC: &str = "02:77:00:00:00:01";
/// Hosts are numbered into 10.77.1.0/24.
const HOSTS_MAX: usize = 250;
/// Rule preference of the partition rules; the `local` table moves to
/// `LOCAL_PREF` so that they apply to packets addressed to this host.
const CUT_PREF: &str = "10";
const LOCAL_PREF: &str = "100";

/// The other side of a partition.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    /// The member on this host.
    Host(usize),
    ZooKeeper,
    /// Every other host, ZooKeeper and the clients.
    Everyone,
}

pub struct Net {
    prefix: String,
    hub: String,
    /// Namespace names, indexed by host id.
    hosts: Vec<String>,
    /// Hosts whose member died, ready for the next member.
    free: Vec<usize>,
}

/// Runs `ip` with `args`; an error carries what `ip` printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Creates the hub namespace and its bridge. `Err` explains why this
    /// environment cannot (not root, no iproute2, namespaces forbidden).
    pub fn create(tag: &str) -> Result<Net, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("network namespaces need root".into());
        }
        remove_orphans();
        // Unique per process and per network, as tests run in parallel.
        static NETS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NETS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let prefix = format!("ct{}{tag}{n}", std::process::id());
        let hub = format!("{prefix}-hub");
        let net = Net {
            prefix,
            hub: hub.clone(),
            hosts: Vec::new(),
            free: Vec::new(),
        };
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        local_table_last(&hub)?;
        // A bridge takes the lowest MAC address of its ports unless given
        // one: adding a host would then change the MAC behind ZooKeeper's
        // and the harness's addresses, and members that cached the old one
        // lose them until their ARP entries expire (~30 s; seen in a long
        // run as a member that could not reach ZooKeeper to register).
        ip(&[
            "-n", &hub, "link", "add", "br0", "address", BRIDGE_MAC, "type", "bridge",
        ])?;
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{HARNESS_IP}/16"),
            "dev",
            "br0",
        ])?;
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{ZK_IP}/16"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        // Hosts need veth pairs: find out now, not halfway through a test.
        ip(&[
            "-n", &hub, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1",
        ])?;
        ip(&["-n", &hub, "link", "del", "probe0"])?;
        Ok(net)
    }

    /// Moves the calling thread into the hub. Threads it spawns later, and
    /// processes they start, are in the hub too.
    pub fn enter_hub(&self) -> Result<(), String> {
        let path = format!("/var/run/netns/{}", self.hub);
        let fd = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns into {}: {e}", self.hub))
    }

    /// A host for a new member: (id, namespace, address). Reuses the host
    /// of a member that died; member ports are never reused, so an old
    /// registration never names the new process.
    pub fn host(&mut self) -> (usize, String, String) {
        let id = match self.free.pop() {
            Some(id) => id,
            None => self
                .new_host()
                .unwrap_or_else(|e| panic!("test network: {e}")),
        };
        (id, self.hosts[id].clone(), host_ip(id))
    }

    fn new_host(&mut self) -> Result<usize, String> {
        let id = self.hosts.len();
        assert!(id < HOSTS_MAX, "more than {HOSTS_MAX} test hosts");
        let ns = format!("{}-h{id}", self.prefix);
        let hub_end = format!("vh{id}");
        ip(&["netns", "add", &ns])?;
        self.hosts.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        local_table_last(&ns)?;
        ip(&[
            "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &hub_end, "netns",
            &self.hub,
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/16", host_ip(id)),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &self.hub, "link", "set", &hub_end, "master", "br0"])?;
        ip(&["-n", &self.hub, "link", "set", &hub_end, "up"])?;
        Ok(id)
    }

    /// The member on host `id` is gone; its host can be given out again.
    pub fn release(&mut self, id: usize) {
        self.free.push(id);
    }

    /// Drops every packet between host `id` and `peer`, both ways, until
    /// [`Net::heal`] with the same arguments.
    pub fn cut(&self, id: usize, peer: Peer) {
        for (verb, ns, rule) in self.rules(id, peer) {
            let mut args = vec!["-n", ns.as_str(), "rule", verb, "pref", CUT_PREF];
            args.extend(rule.iter().map(String::as_str));
            args.push("blackhole");
            ip(&args).unwrap_or_else(|e| panic!("test network: {e}"));
        }
        if let Peer::Everyone = peer {
            self.set_port(id, "down");
        }
    }

    /// Undoes [`Net::cut`].
    pub fn heal(&self, id: usize, peer: Peer) {
        for (_, ns, rule) in self.rules(id, peer) {
            let mut args = vec!["-n", ns.as_str(), "rule", "del", "pref", CUT_PREF];
            args.extend(rule.iter().map(String::as_str));
            args.push("blackhole");
            ip(&args).unwrap_or_else(|e| panic!("test network: {e}"));
        }
        if let Peer::Everyone = peer {
            self.set_port(id, "up");
        }
    }

    /// The drop rules for a cut: (verb, namespace, selector), one in each
    /// receiving namespace.
    fn rules(&self, id: usize, peer: Peer) -> Vec<(&'static str, String, Vec<String>)> {
        let me = host_ip(id);
        let from = |ip: &str| vec!["from".to_string(), ip.to_string()];
        match peer {
            Peer::Host(other) => vec![
                ("add", self.hosts[id].clone(), from(&host_ip(other))),
                ("add", self.hosts[other].clone(), from(&me)),
            ],
            Peer::ZooKeeper => {
                let mut to_zk = from(&me);
                to_zk.extend(["to".to_string(), ZK_IP.to_string()]);
                vec![
                    ("add", self.hosts[id].clone(), from(ZK_IP)),
                    ("add", self.hub.clone(), to_zk),
                ]
            }
            Peer::Everyone => Vec::new(),
        }
    }

    /// Takes host `id`'s bridge port down or up: a cable pulled out.
    fn set_port(&self, id: usize, state: &str) {
        let port = format!("vh{id}");
        ip(&["-n", &self.hub, "link", "set", &port, state])
            .unwrap_or_else(|e| panic!("test network: {e}"));
    }
}

/// Deletes namespaces left by test processes that no longer run (one
/// killed before its cleanup): names are `ct<pid>...`.
fn remove_orphans() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix("ct") else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Moves the `local` routing table behind the partition rules in `ns`.
fn local_table_last(ns: &str) -> Result<(), String> {
    ip(&[
        "-n", ns, "rule", "add", "pref", LOCAL_PREF, "lookup", "local",
    ])?;
    ip(&["-n", ns, "rule", "del", "pref", "0"])
}

pub fn host_ip(id: usize) -> String {
    format!("10.77.1.{}", id + 1)
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.hub)) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Whether a test that cannot build its test network may skip (saying so
/// loudly) rather than fail; panics with the reason otherwise.
pub fn skip_allowed(what: &str, why: &str) -> bool {
    super::skip_allowed("netns", "network namespaces (root and iproute2)", what, why)
}

/// Runs `f` on a thread inside a fresh test network's hub (namespaces are
/// per thread, so the caller's own thread is left where it was). Where
/// this environment cannot create namespaces it fails, unless
/// [`skip_allowed`] lets it return `None`; a panic in `f` is passed on.
pub fn in_hub<T: Send + 'static>(
    tag: &str,
    f: impl FnOnce(Net) -> T + Send + 'static,
) -> Option<T> {
    let net = match Net::create(tag) {
        Ok(net) => net,
        Err(why) => {
            skip_allowed("partition test", &why);
            return None;
        }
    };
    let runner = std::thread::spawn(move || {
        net.enter_hub()
            .unwrap_or_else(|e| panic!("test network: {e}"));
        f(net)
    });
    Some(
        runner
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
    )
}
