//! The Python client package (`clients/python`), written from the spec:
//! installed with pip into a fresh virtual environment, then its own tests
//! run against a real standalone server and a real 3-member chain with
//! ZooKeeper. It is the proof that `spec/PROTOCOL.md` suffices.

#![cfg(feature = "testing")]

mod common;

use common::chain::Chain;
use common::ServerProc;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Copies the package's sources (not build outputs or caches).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("readable") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if name_text == "build" || name_text == "__pycache__" || name_text.ends_with(".egg-info") {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy");
        }
    }
}

/// A virtual environment with the package installed by pip, as a user
/// would (`pip install ./clients/python`); `None` where pip cannot reach
/// PyPI for its build backend and skipping was allowed.
fn venv_with_package(root: &Path) -> Option<PathBuf> {
    let venv = std::env::temp_dir().join(format!("chaintable-py-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&venv);
    let made = run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    assert!(made.status.success(), "python3 -m venv: {}", text(&made));
    // From a copy: a build writes `build/` and `*.egg-info` beside the
    // sources, and the tree is not the test's to change.
    let source = venv.join("source");
    copy_tree(&root.join("clients/python"), &source);
    let pip = run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(&source));
    if !pip.status.success() {
        common::skip_allowed(
            "pypi",
            "pip able to fetch setuptools from PyPI",
            "the Python client package's tests",
            &text(&pip),
        );
        return None;
    }
    Some(venv)
}

#[test]
fn the_python_client_installs_and_passes_its_tests_against_real_servers() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let Some(venv) = venv_with_package(&root) else {
        return;
    };
    let standalone = ServerProc::start(
        4,
        &[
            "--frame-bytes-max",
            "65536",
            "--watch-history-bytes",
            "16777216",
        ],
    );
    let chain = Chain::start_with(3, false, &[]);
    // A cluster of two one-member chains on the same ZooKeeper: `a` owns
    // the keys below `m`, `b` the rest.
    let zk = chain.zk.addr();
    let secret = common::cluster_secret_file();
    let cluster: Vec<ServerProc> = ["a", "b"]
        .iter()
        .map(|c| {
            let root = format!("/pycluster/{c}");
            let args = [
                &zk,
                "--cluster-secret-file",
                &secret,
                "--cluster-root",
                "/pycluster",
                "--chain-root",
                &root,
            ];
            ServerProc::start(4, &args)
        })
        .collect();
    let created = common::table_client(
        &[
            &zk,
            "-z",
            "--cluster-root",
            "/pycluster",
            "--cluster-secret-file",
            &secret,
            "cluster",
            "create",
            "a,b",
            "m",
        ],
        &[],
    );
    assert!(created.status.success(), "{}", text(&created));
    for m in &cluster {
        let read = common::wait_for(std::time::Duration::from_secs(10), || {
            (common::chain::stat_text(&m.addr(), "shard_map_version")? == "1").then_some(())
        });
        assert!(read.is_some(), "{} never read the map", m.addr());
    }
    let cluster_members: Vec<String> = cluster.iter().map(ServerProc::addr).collect();
    let out = run(Command::new(venv.join("bin/python"))
        // Not the source tree: the tests must import the installed package.
        .current_dir(&venv)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(root.join("clients/python/tests"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("CHAINTABLE_EXPECT_INSTALLED", "1")
        .env("CHAINTABLE_ADDR", standalone.addr())
        .env("CHAINTABLE_ZK", chain.zk.addr())
        .env("CHAINTABLE_CHAIN", chain.addrs().join(","))
        .env("CHAINTABLE_CLUSTER", "/pycluster")
        .env("CHAINTABLE_CLUSTER_MEMBERS", cluster_members.join(","))
        .env("CHAINTABLE_VECTORS", root.join("spec/vectors/frames.json")));
    let report = text(&out);
    let _ = std::fs::remove_dir_all(&venv);
    assert!(
        out.status.success(),
        "the Python client's tests failed:\n{report}"
    );
    let ran: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("Ran ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no test count in:\n{report}"));
    assert!(ran >= 24, "only {ran} Python tests ran:\n{report}");
    assert!(
        !report.contains("skipped"),
        "every Python test must run here (none skipped):\n{report}"
    );
}
