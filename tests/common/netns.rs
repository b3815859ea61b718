//! Test hosts in network namespaces that the test creates itself, so that
//! partitions can be injected without touching the machine's own network.
//!
//! Layout: a hub namespace holds a bridge with two addresses, one for the
//! test's own threads (clients, the harness) and one for ZooKeeper. Every
//! member runs in a namespace of its own, linked to the bridge by a veth
//! pair. A partition is a pair of `ip rule ... blackhole` rules inside a
//! member's namespace: packets to and from the other side are dropped while
//! both processes keep running, which is what a real partition looks like
//! to them (unlike SIGSTOP, the cut-off member goes on talking to the
//! members it can still reach).
//!
//! Needs root and iproute2 (`ip`); [`Net::create`] says why when either is
//! missing, and callers skip partition faults with that message.

use std::process::Command;

/// Address of the harness and its clients (the bridge's first address).
pub const HARNESS_IP: &str = "10.77.0.1";
/// Address ZooKeeper listens on (the bridge's second address).
pub const ZK_IP: &str = "10.77.0.2";
/// The whole test network; blackholing it isolates a member completely.
pub const EVERYONE: &str = "10.77.0.0/16";
/// Hosts are numbered into 10.77.1.0/24.
const HOSTS_MAX: usize = 250;

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
        let prefix = format!("ct{}{tag}", std::process::id());
        let hub = format!("{prefix}-hub");
        let net = Net {
            prefix,
            hub: hub.clone(),
            hosts: Vec::new(),
            free: Vec::new(),
        };
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
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
        self.heal(id, EVERYONE);
        self.free.push(id);
    }

    /// Drops every packet between host `id` and `peer` (an address or a
    /// prefix), in both directions, until [`Net::heal`].
    pub fn cut(&self, id: usize, peer: &str) {
        let ns = &self.hosts[id];
        for dir in ["to", "from"] {
            if let Err(e) = ip(&["-n", ns, "rule", "add", dir, peer, "blackhole"]) {
                panic!("test network: {e}");
            }
        }
    }

    /// Undoes [`Net::cut`] (and is harmless when nothing was cut).
    pub fn heal(&self, id: usize, peer: &str) {
        let ns = &self.hosts[id];
        for dir in ["to", "from"] {
            while ip(&["-n", ns, "rule", "del", dir, peer, "blackhole"]).is_ok() {}
        }
    }
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
