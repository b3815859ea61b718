//! A throwaway ZooKeeper for tests: Debian's `zookeeper` package started
//! directly with a temp data dir, tickTime=200 and a free loopback port.
//! Readiness is checked with a bounded `srvr` four-letter command.

use super::{free_port, wait_for};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

pub struct ZooKeeper {
    child: Option<Child>,
    pub host: String,
    pub port: u16,
    dir: PathBuf,
}

/// Whether ZooKeeper answers `srvr` within a short, bounded time.
pub fn serving(addr: &str) -> bool {
    let Ok(sock) = addr.parse() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&sock, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"srvr").is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("Mode:")
}

impl ZooKeeper {
    /// Starts a fresh ZooKeeper on loopback; panics with a hint if it is
    /// not installed.
    pub fn start() -> ZooKeeper {
        ZooKeeper::start_on("127.0.0.1")
    }

    /// Starts a fresh ZooKeeper listening on `host` (an address of the
    /// calling thread's network namespace).
    pub fn start_on(host: &str) -> ZooKeeper {
        assert!(
            std::path::Path::new("/usr/share/java/zookeeper.jar").exists(),
            "ZooKeeper is not installed: run `apt-get install -y zookeeper` (see README)"
        );
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "chaintable-zk-{}-{host}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("data")).expect("zk dir");
        let cfg = format!(
            "tickTime=200\nminSessionTimeout=400\nmaxSessionTimeout=20000\n\
             dataDir={}\nclientPort={port}\nclientPortAddress={host}\n\
             admin.enableServer=false\n4lw.commands.whitelist=srvr,ruok\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("zoo.cfg"), cfg).expect("zoo.cfg");
        let mut zk = ZooKeeper {
            child: None,
            host: host.to_string(),
            port,
            dir,
        };
        zk.spawn();
        zk
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("zk.log")).expect("zk log");
        let child = Command::new("java")
            .args(["-Xmx256m", "-cp", CLASSPATH])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.dir.join("zoo.cfg"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn java (is a JRE installed?)");
        self.child = Some(child);
        let ready = wait_for(Duration::from_secs(20), || {
            serving(&self.addr()).then_some(())
        });
        assert!(
            ready.is_some(),
            "ZooKeeper did not start on {}",
            self.addr()
        );
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// kill -9, keeping its data directory (sessions survive a restart).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
