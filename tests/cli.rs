//! Scenario: a user drives a standalone server with `table-client` in its
//! three modes — one-shot, piped script, and the interactive shell (under a
//! real pseudo-terminal via `script`) — using every command and alias.

#![cfg(feature = "testing")]

mod common;

use common::{client_bin, ServerProc};
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn one_shot(addr: &str, args: &[&str]) -> Output {
    Command::new(client_bin())
        .arg(addr)
        .args(args)
        .output()
        .expect("run table-client")
}

fn piped(addr: &str, script: &str) -> Output {
    let mut child = Command::new(client_bin())
        .arg(addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run table-client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn one_shot_commands_and_aliases() {
    let s = ServerProc::start(4, &[]);
    let a = s.addr();
    let put = one_shot(&a, &["put", "greeting", "hello", "big", "world"]);
    assert_eq!(put.status.code(), Some(0));
    assert_eq!(text(&put), "ok: op 1 (created)\n");
    assert_eq!(
        text(&one_shot(&a, &["p", "greeting", "again"])),
        "ok: op 2 (replaced)\n"
    );
    assert_eq!(
        text(&one_shot(&a, &["g", "greeting"])),
        "again (version 2)\n"
    );
    assert_eq!(text(&one_shot(&a, &["get", "nope"])), "(not found)\n");
    assert_eq!(text(&one_shot(&a, &["s"])), "1\n");
    assert_eq!(text(&one_shot(&a, &["size"])), "1\n");
    assert_eq!(text(&one_shot(&a, &["k"])), "greeting\n");
    assert_eq!(text(&one_shot(&a, &["getkeys"])), "greeting\n");
    assert_eq!(
        text(&one_shot(&a, &["t"])),
        "greeting = again (version 2)\n"
    );
    assert_eq!(
        text(&one_shot(&a, &["gettable"])),
        "greeting = again (version 2)\n"
    );
    let stats = text(&one_shot(&a, &["st"]));
    assert!(stats.contains("ops_served:"), "{stats}");
    let connected: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("clients_connected: "))
        .and_then(|n| n.parse().ok())
        .expect("clients_connected is shown");
    assert!(connected >= 1, "the asking client is connected: {stats}");
    assert!(stats.contains("serve_time_us:"), "{stats}");
    assert!(text(&one_shot(&a, &["stats"])).contains("role: standalone"));
    assert_eq!(text(&one_shot(&a, &["verify", "2"])), "executed\n");
    assert_eq!(
        text(&one_shot(&a, &["verify", "99"])),
        "unknown operation id\n"
    );
    assert_eq!(
        text(&one_shot(&a, &["d", "greeting"])),
        "ok: op 3 (deleted)\n"
    );
    assert_eq!(
        text(&one_shot(&a, &["del", "greeting"])),
        "ok: op 4 (key was not there)\n"
    );
    assert!(text(&one_shot(&a, &["h"])).contains("verify <op_id>"));
    assert!(text(&one_shot(&a, &["help"])).contains("gettable (t)"));
    assert_eq!(one_shot(&a, &["q"]).status.code(), Some(0));
    assert_eq!(one_shot(&a, &["quit"]).status.code(), Some(0));
    let queued = text(&one_shot(&a, &["put", "-a", "k", "v"]));
    assert_eq!(queued, "queued: op 5 (check with: verify 5)\n");
    assert_eq!(
        text(&one_shot(&a, &["del", "-a", "k"])),
        "queued: op 6 (check with: verify 6)\n"
    );
}

#[test]
fn exit_codes_say_usage_failure_or_success() {
    let s = ServerProc::start(2, &[]);
    let bad = one_shot(&s.addr(), &["frobnicate"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown command"));
    assert_eq!(one_shot(&s.addr(), &["get"]).status.code(), Some(2));
    let port = common::free_port();
    let refused = one_shot(&format!("127.0.0.1:{port}"), &["size"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("is table-server running on"), "{err}");
    let no_args = Command::new(client_bin()).output().unwrap();
    assert_eq!(no_args.status.code(), Some(2));
}

#[test]
fn piped_script_runs_every_line() {
    let s = ServerProc::start(3, &[]);
    let out = piped(
        &s.addr(),
        "put a first value\np b 2\n\nget a\ng b\nsize\ndel a\nd b\ns\nk\nt\nverify 1\nst\nhelp\nquit\nget a\n",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = text(&out);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "ok: op 1 (created)");
    assert_eq!(lines[1], "ok: op 2 (created)");
    assert_eq!(lines[2], "first value (version 1)");
    assert_eq!(lines[3], "2 (version 2)");
    assert_eq!(lines[4], "2");
    assert_eq!(lines[5], "ok: op 3 (deleted)");
    assert_eq!(lines[6], "ok: op 4 (deleted)");
    assert_eq!(lines[7], "0");
    assert_eq!(lines[8], "(no keys)");
    assert_eq!(lines[9], "(empty table)");
    assert_eq!(lines[10], "executed");
    assert!(t.contains("ops_served:"));
    assert!(t.contains("commands (alias):"));
    // Nothing after quit ran: the last get would have printed "(not found)".
    assert!(!t.contains("(not found)"));
    // A failing line makes the exit code 2 (usage) but the rest still runs.
    let out = piped(&s.addr(), "bogus\nput z 1\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("ok: op 5 (created)"));
}

#[test]
fn interactive_shell_under_a_terminal() {
    let s = ServerProc::start(2, &[]);
    // `script` gives the client a real pseudo-terminal, so rustyline runs.
    let cmd = format!("{} {}", client_bin().display(), s.addr());
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script(1)");
    let mut stdin = child.stdin.take().unwrap();
    for line in ["p colour deep blue", "g colour", "s", "k", "verify 1", "q"] {
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\r").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(t.contains("connected. type 'help'"), "{t}");
    assert!(t.contains("table> "), "{t}");
    assert!(t.contains("ok: op 1 (created)"), "{t}");
    assert!(t.contains("deep blue (version 1)"), "{t}");
    assert!(t.contains("executed"), "{t}");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn verify_reports_pending_then_executed_for_an_async_write() {
    // A worker slowed to 300 ms per write (a test-only knob standing in for
    // a slow disk) makes "pending" observable without racing.
    let s = ServerProc::start(4, &["--test-worker-delay-ms", "300"]);
    let a = s.addr();
    assert_eq!(
        text(&one_shot(&a, &["put", "-a", "slow", "x"])),
        "queued: op 1 (check with: verify 1)\n"
    );
    assert_eq!(text(&one_shot(&a, &["verify", "1"])), "pending\n");
    let executed = common::wait_for(std::time::Duration::from_secs(5), || {
        (text(&one_shot(&a, &["verify", "1"])) == "executed\n").then_some(())
    });
    assert!(executed.is_some(), "op 1 never executed");
    assert_eq!(text(&one_shot(&a, &["get", "slow"])), "x (version 1)\n");
}

#[test]
fn table_server_rejects_bad_arguments_with_exit_code_2() {
    let run = |args: &[&str]| {
        Command::new(common::server_bin())
            .args(args)
            .output()
            .expect("run table-server")
    };
    for bad in [
        &["notaport", "4"][..],
        &["9000", "0"],
        &["9000"],
        &["9000", "4", "zk", "extra"],
    ] {
        let out = run(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!out.stderr.is_empty(), "{bad:?}: says why");
    }
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--frame-bytes-max",
        "--max-connections",
        "--output-bytes-max",
        "--queue-depth",
        "--sent-max",
        "--session-timeout-ms",
    ] {
        assert!(text.contains(flag), "--help documents {flag}");
    }
    // A port that is already taken: a clear message and exit 1.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run(&[&port, "4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

/// `watch` prints each change under the prefix as it is committed, one
/// line per change, and stops after `count` updates.
#[test]
fn watch_prints_the_changes_under_a_prefix_then_stops() {
    let s = ServerProc::start(4, &[]);
    let a = s.addr();
    let first = text(&one_shot(&a, &["put", "user/ann", "1"]));
    let op: u64 = first
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no op id in {first:?}"));
    // From before the first write: it is replayed from the history.
    let watcher = Command::new(client_bin())
        .arg(&a)
        .args([
            "watch",
            "user/",
            "from",
            &(op - 1).to_string(),
            "count",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run table-client watch");
    one_shot(&a, &["put", "other", "x"]);
    one_shot(&a, &["del", "user/ann"]);
    one_shot(&a, &["mput", "user/bob", "2", "zed", "3"]);
    let out = watcher.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = text(&out)
        .lines()
        .map(|l| l.split_once(": ").map_or(l, |(_, rest)| rest).to_string())
        .collect();
    assert_eq!(
        lines,
        ["put user/ann = 1", "del user/ann", "put user/bob = 2"]
    );
}
