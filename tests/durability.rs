//! Durability scenarios with real processes: a standalone `table-server`
//! with `--data-dir`, killed with SIGKILL, restarted on the same directory,
//! its log torn or corrupted by hand, its disk filled up.

#![cfg(feature = "testing")]

mod common;

use chaintable::client::{Client, Options};
use chaintable::wire::{ErrorCode, OpState};
use common::{server_bin, wait_for, ServerProc};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A scratch data directory, removed when dropped.
struct DataDir(PathBuf);

impl DataDir {
    fn new(tag: &str) -> DataDir {
        let path = std::env::temp_dir().join(format!(
            "chaintable-durability-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path).unwrap();
        DataDir(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// The log segments, oldest first.
    fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        v.sort();
        v
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn durable(dir: &DataDir, extra: &[&str]) -> ServerProc {
    let mut args = vec!["--data-dir", dir.arg()];
    args.extend_from_slice(extra);
    ServerProc::start(4, &args)
}

fn stat(c: &mut Client, name: &str) -> u64 {
    c.stats()
        .unwrap()
        .get_count(name)
        .unwrap_or_else(|| panic!("no stat {name}"))
}

fn value_of(c: &mut Client, key: &str) -> Option<Vec<u8>> {
    c.get(key.as_bytes()).unwrap().map(|v| v.value)
}

/// What one writer knows of a key: the value it last had acknowledged
/// (`None`: absent), and a write in flight when the server died.
#[derive(Default, Clone)]
struct KeyLog {
    acked: Option<Vec<u8>>,
    in_flight: Option<Option<Vec<u8>>>,
}

/// Writers doing synchronous PUTs and DELs over their own keys until the
/// server dies; returns every key's log and the number acknowledged.
fn write_until_killed(
    server: &mut ServerProc,
    run_for: Duration,
) -> (HashMap<String, KeyLog>, u64) {
    let logs = Arc::new(Mutex::new(HashMap::<String, KeyLog>::new()));
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (addr, logs, acked, stop) = (server.addr(), logs.clone(), acked.clone(), stop.clone());
        writers.push(std::thread::spawn(move || {
            let Ok(mut c) = Client::connect_with(&addr, common::quick_opts()) else {
                return;
            };
            for i in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let key = format!("w{w}-k{}", i % 25);
                let value =
                    (i % 7 != 6).then(|| format!("{w}:{i}:{}", "x".repeat(100)).into_bytes());
                logs.lock()
                    .unwrap()
                    .entry(key.clone())
                    .or_default()
                    .in_flight = Some(value.clone());
                let result = match &value {
                    Some(v) => c.put(key.as_bytes(), v),
                    None => c.del(key.as_bytes()),
                };
                if result.is_err() {
                    return; // the server died: this write stays in flight
                }
                let mut logs = logs.lock().unwrap();
                let log = logs.get_mut(&key).unwrap();
                log.acked = value;
                log.in_flight = None;
                acked.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    std::thread::sleep(run_for);
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let logs = logs.lock().unwrap().clone();
    (logs, acked.load(Ordering::Relaxed))
}

fn every_acknowledged_write_survives_kill9(policy: &str) {
    let dir = DataDir::new(policy);
    // Small segments and frequent snapshots, so the kill lands among rolls,
    // snapshots and deleted segments, not in one quiet file.
    let opts = [
        "--fsync",
        policy,
        "--snapshot-every-writes",
        "600",
        "--segment-bytes-max",
        "32768",
    ];
    let mut server = durable(&dir, &opts);
    let (logs, acked) = write_until_killed(&mut server, Duration::from_millis(2500));
    assert!(
        acked > 500,
        "only {acked} writes acknowledged: the scenario did not run"
    );

    let restarted = durable(&dir, &opts);
    let mut c = restarted.client();
    assert!(
        stat(&mut c, "snapshot_seq") > 0,
        "recovery did not start from a snapshot; log:\n{}",
        restarted.log_text()
    );
    for (key, log) in &logs {
        let got = value_of(&mut c, key);
        let in_flight_matches = log.in_flight.as_ref().is_some_and(|v| *v == got);
        assert!(
            got == log.acked || in_flight_matches,
            "{policy}: {key} holds {:?} after the restart; acknowledged {:?}, in flight {:?}",
            got.map(|v| String::from_utf8_lossy(&v).into_owned()),
            log.acked
                .as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            log.in_flight
        );
    }
    // The restarted server keeps taking writes, and they are durable too.
    c.put(b"after-restart", b"1").unwrap();
    eprintln!(
        "{policy}: {acked} writes acknowledged before SIGKILL; all present after the restart"
    );
}

#[test]
fn fsync_always_keeps_every_acknowledged_write_across_kill9() {
    every_acknowledged_write_survives_kill9("always");
}

#[test]
fn fsync_everysec_keeps_every_acknowledged_write_across_kill9() {
    // SIGKILL does not lose the page cache: `everysec` loses writes only
    // to a power cut, which a test cannot stage.
    every_acknowledged_write_survives_kill9("everysec");
}

#[test]
fn fsync_no_keeps_every_acknowledged_write_across_kill9() {
    every_acknowledged_write_survives_kill9("no");
}

/// Writes `n` synchronous PUTs `k<i>` = `v<i>` (i from 1) and kills the
/// server; returns the directory.
fn log_of_puts(tag: &str, n: usize) -> DataDir {
    let dir = DataDir::new(tag);
    let mut server = durable(&dir, &[]);
    let mut c = server.client();
    for i in 1..=n {
        c.put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    server.kill9();
    dir
}

/// Where each record of a segment ends, read per spec/STORAGE.md (an
/// 8-byte magic, then records of u32 length, u32 CRC, payload).
fn record_ends(segment: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = 8;
    while at + 8 <= segment.len() {
        let len = u32::from_be_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
        ends.push(at);
    }
    assert_eq!(at, segment.len(), "the test's own reading of the segment");
    ends
}

#[test]
fn a_torn_final_record_is_cut_off_at_the_last_good_record() {
    let n = 40;
    let original = log_of_puts("torn", n);
    let segment = original.segments().pop().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    let ends = record_ends(&bytes);
    assert_eq!(ends.len(), n);
    let seed: u64 = rand::random();
    eprintln!("torn-tail offsets from seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // One cut inside the last record, the rest anywhere after the magic.
    let mut cuts = vec![bytes.len() - 1];
    cuts.extend((0..5).map(|_| rng.gen_range(8..bytes.len())));
    for cut in cuts {
        let dir = DataDir::new("torn-trial");
        let copy = dir.0.join(segment.file_name().unwrap());
        std::fs::write(&copy, &bytes[..cut]).unwrap();
        let kept = ends.iter().filter(|e| **e <= cut).count();

        let mut server = durable(&dir, &[]);
        let mut c = server.client();
        assert_eq!(c.size().unwrap(), kept as u64, "cut at {cut}");
        if kept > 0 {
            assert_eq!(
                value_of(&mut c, &format!("k{kept}")),
                Some(format!("v{kept}").into_bytes())
            );
        }
        let boundary = if kept == 0 { 8 } else { ends[kept - 1] };
        if boundary < cut {
            assert!(
                server.log_text().contains("torn record"),
                "cut at {cut}: no warning logged"
            );
        }
        // What follows the good records is the restart's id-skip mark.
        let now = std::fs::read(&copy).unwrap();
        assert_eq!(
            &now[..boundary],
            &bytes[..boundary],
            "cut at {cut}: the good records must be kept as they were"
        );
        assert_eq!(
            record_ends(&now).len(),
            kept + 1,
            "cut at {cut}: the torn bytes must be gone from the file"
        );
        // Writing after the cut appends where the good records end: the
        // next restart reads the new write, not garbage.
        c.put(b"after", b"cut").unwrap();
        server.kill9();
        let server = durable(&dir, &[]);
        let mut c = server.client();
        assert_eq!(
            c.size().unwrap(),
            kept as u64 + 1,
            "cut at {cut}, then one write"
        );
        assert_eq!(value_of(&mut c, "after"), Some(b"cut".to_vec()));
    }
}

/// Runs `table-server` on `dir` (with `extra` flags) expecting it to
/// refuse to start; returns its stderr.
fn refused_start(dir: &DataDir, extra: &[&str]) -> String {
    let out = Command::new(server_bin())
        .args([
            &common::free_port().to_string(),
            "4",
            "--data-dir",
            dir.arg(),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = out.id();
    let waiter = std::thread::spawn(move || out.wait_with_output().unwrap());
    let done = wait_for(Duration::from_secs(10), || {
        waiter.is_finished().then_some(())
    });
    if done.is_none() {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("table-server started on a damaged data directory");
    }
    let output = waiter.join().unwrap();
    assert!(
        !output.status.success(),
        "table-server exited 0 on a damaged data directory"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_corrupted_record_in_the_middle_stops_the_start_naming_file_and_offset() {
    let dir = log_of_puts("corrupt", 40);
    let segment = dir.segments().pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let ends = record_ends(&bytes);
    // Flip a bit in the value of record 20 (its last payload byte).
    let (start, end) = (ends[18], ends[19]);
    bytes[end - 1] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let stderr = refused_start(&dir, &[]);
    assert!(
        stderr.contains(segment.to_str().unwrap()) && stderr.contains(&format!("offset {start}")),
        "the error must name the file and the record's offset {start}:\n{stderr}"
    );
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        bytes.len() as u64,
        "a refused start must not truncate the log"
    );
}

#[test]
fn a_missing_segment_is_a_hole_in_the_history_not_a_shorter_table() {
    let dir = DataDir::new("hole");
    let mut server = durable(&dir, &["--segment-bytes-max", "4096"]);
    let mut c = server.client();
    for i in 0..200 {
        c.put(format!("k{i}").as_bytes(), &[7u8; 64]).unwrap();
    }
    server.kill9();
    let segments = dir.segments();
    assert!(
        segments.len() >= 3,
        "expected several segments, got {}",
        segments.len()
    );
    std::fs::remove_file(&segments[1]).unwrap();
    let stderr = refused_start(&dir, &[]);
    assert!(
        stderr.contains(segments[2].to_str().unwrap()) && stderr.contains("segment starts after"),
        "the error must name the segment after the hole:\n{stderr}"
    );
}

#[test]
fn a_data_directory_serves_one_process_at_a_time() {
    let dir = DataDir::new("lock");
    let _first = durable(&dir, &[]);
    let stderr = refused_start(&dir, &[]);
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

/// Hands 60 asynchronous writes to a server whose worker is slow, so that
/// most are queued, unlogged, when it is killed `after` the last reply.
fn async_writes_then_kill9(
    server: &mut ServerProc,
    tag: &str,
    after: Duration,
) -> Vec<(String, u64)> {
    let mut c = server.client();
    let mut ids = Vec::new();
    for i in 0..60 {
        let key = format!("{tag}-{i}");
        let id = c.put_async(key.as_bytes(), b"v").unwrap().op_id;
        ids.push((key, id));
    }
    std::thread::sleep(after);
    server.kill9();
    ids
}

/// After a restart, VERIFY agrees with the table for every id handed out
/// before the crash, some writes were lost (else the round proved
/// nothing), and a new write gets an id above all of them.
fn check_ids_after_restart(c: &mut Client, ids: &[(String, u64)], round: &str) {
    let mut executed = 0;
    for (key, id) in ids {
        let state = c.verify(*id).unwrap();
        let present = value_of(c, key).is_some();
        assert_ne!(
            state,
            OpState::Pending,
            "{round}: op {id} pending after a restart"
        );
        assert_eq!(
            state == OpState::Executed,
            present,
            "{round}: VERIFY({id}) says {state:?}; {key} present: {present}"
        );
        executed += usize::from(present);
    }
    assert!(
        executed < ids.len(),
        "{round}: every write was logged before the kill; the test proved nothing"
    );
    let max_old = ids.iter().map(|(_, id)| *id).max().unwrap();
    let new = c
        .put(format!("new-{round}").as_bytes(), b"1")
        .unwrap()
        .op_id;
    assert!(
        new > max_old,
        "{round}: new write got id {new}, not above the ids handed out before ({max_old})"
    );
    let unlogged = ids.iter().find(|(k, _)| value_of(c, k).is_none()).unwrap();
    assert_eq!(
        c.verify(unlogged.1).unwrap(),
        OpState::Unknown,
        "{round}: a lost write's id after new writes"
    );
}

#[test]
fn ids_handed_to_writes_lost_in_a_crash_are_never_reused() {
    let dir = DataDir::new("ids");
    // A slow worker keeps asynchronous writes queued, unlogged, when the
    // SIGKILL lands; some get logged first. Whichever: VERIFY after the
    // restart must agree with the table, and no old id may name a new write.
    let slow = ["--test-worker-delay-ms", "20"];
    let mut server = durable(&dir, &slow);
    let ids = async_writes_then_kill9(&mut server, "first", Duration::from_millis(300));
    let server = durable(&dir, &[]);
    check_ids_after_restart(&mut server.client(), &ids, "one crash");
    drop(server);

    // Two crashes in a row, the second before the restarted server logged
    // any write: the second restart must not skip from the same point as
    // the first and hand the same ids out again (the restart logs its
    // skip before it takes clients).
    let mut server = durable(&dir, &["--test-worker-delay-ms", "500"]);
    let ids = async_writes_then_kill9(&mut server, "second", Duration::ZERO);
    let server = durable(&dir, &[]);
    check_ids_after_restart(&mut server.client(), &ids, "two crashes");
}

/// A tmpfs of `size` mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("chaintable-tmpfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::piped())
            .output();
        match status {
            Ok(o) if o.status.success() => Some(Tmpfs(dir)),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr).into_owned();
                common::skip_allowed(
                    "tmpfs",
                    "a tmpfs mount (root)",
                    "the full-disk scenario",
                    &why,
                );
                None
            }
            Err(e) => {
                common::skip_allowed(
                    "tmpfs",
                    "a tmpfs mount (root)",
                    "the full-disk scenario",
                    &e.to_string(),
                );
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system holding `path` with a file there.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xAAu8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // Whatever a partial chunk left: fill it byte by byte.
    while f.write_all(&[0xAA]).is_ok() {}
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_resumes_when_space_returns() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let data = DataDir(fs.0.join("data"));
    std::fs::create_dir_all(&data.0).unwrap();
    let mut server = durable(&data, &[]);
    let mut c = server.client();
    c.put(b"before", b"1").unwrap();

    let ballast = fs.0.join("ballast");
    fill(&ballast);
    // This write cannot be logged: it must wait, unacknowledged.
    let addr = server.addr();
    let blocked = std::thread::spawn(move || {
        let opts = Options {
            read_timeout: Duration::from_secs(60),
            ..common::quick_opts()
        };
        let mut c = Client::connect_with(&addr, opts).unwrap();
        c.put(b"blocked", &[1u8; 8192]).map(|ok| ok.op_id)
    });
    let failing = wait_for(Duration::from_secs(10), || {
        (stat(&mut c, "storage_failing") == 1).then_some(())
    });
    assert!(failing.is_some(), "the server never noticed the full disk");
    let err = c.put(b"refused", b"x").unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::StorageUnavailable), "{err}");
    assert!(err.to_string().contains("No space left"), "{err}");
    assert_eq!(
        value_of(&mut c, "before"),
        Some(b"1".to_vec()),
        "reads must go on"
    );
    assert_eq!(
        value_of(&mut c, "blocked"),
        None,
        "an unlogged write is not applied"
    );
    assert!(
        !blocked.is_finished(),
        "a write that could not be logged was answered"
    );

    std::fs::remove_file(&ballast).unwrap();
    let op = blocked
        .join()
        .unwrap()
        .expect("the blocked write completes once space returns");
    assert!(op > 0);
    let resumed = wait_for(Duration::from_secs(10), || {
        (stat(&mut c, "storage_failing") == 0).then_some(())
    });
    assert!(resumed.is_some());
    c.put(b"after", b"2").unwrap();
    server.kill9();

    let server = durable(&data, &[]);
    let mut c = server.client();
    for (k, v) in [
        ("before", &b"1"[..]),
        ("blocked", &[1u8; 8192][..]),
        ("after", &b"2"[..]),
    ] {
        assert_eq!(
            value_of(&mut c, k).as_deref(),
            Some(v),
            "{k} after the restart"
        );
    }
    assert_eq!(value_of(&mut c, "refused"), None);
    drop(server);
    drop(data);
}

// ----- backups: table-client snapshot save, table-server --restore ---------

/// PUTs `<prefix><i>` = `value` for i in 0..n, pipelined 1,000 at a time.
fn preload(
    c: &mut Client,
    prefix: &str,
    n: usize,
    value: &[u8],
    mode: chaintable::wire::WriteMode,
) {
    let bodies: Vec<chaintable::wire::Body> = (0..n)
        .map(|i| chaintable::wire::Body::Put {
            key: chaintable::serialize::Key::new(format!("{prefix}{i}").as_bytes()).unwrap(),
            value: value.to_vec(),
            mode,
        })
        .collect();
    for chunk in bodies.chunks(1000) {
        for r in c.pipeline(chunk.to_vec()).unwrap() {
            r.unwrap();
        }
    }
}

/// Runs `table-client <addr> snapshot save <file>`; returns the op id the
/// backup is as of and the digest the client computed.
fn snapshot_save(addr: &str, file: &Path) -> (u64, u64) {
    let out = common::table_client(&[addr, "snapshot", "save", file.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "snapshot save failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |after: &str| -> u64 {
        let rest = text
            .split(after)
            .nth(1)
            .unwrap_or_else(|| panic!("no '{after}' in {text}"));
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("as of op"), field("table_digest"))
}

#[test]
fn a_backup_under_writes_restores_to_exactly_the_table_as_of_its_last_write() {
    let source = ServerProc::start(64, &[]);
    let mut c = source.client();
    // A table big enough that the copy takes many steps.
    preload(
        &mut c,
        "pre",
        20_000,
        &[b'p'; 200],
        chaintable::wire::WriteMode::Sync,
    );
    // One writer overwriting keys while the backup runs; it records every
    // write's op id, so the table as of any op id can be rebuilt.
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, stop2) = (source.addr(), stop.clone());
    let writer = std::thread::spawn(move || {
        let mut c = Client::connect(&addr).unwrap();
        let mut log = Vec::new();
        for i in 0u64.. {
            if stop2.load(Ordering::Relaxed) && i > 200 {
                break;
            }
            let key = format!("pre{}", (i * 7919) % 20_000);
            let value = format!("w{i}").into_bytes();
            let op = c.put(key.as_bytes(), &value).unwrap().op_id;
            log.push((op, key, value));
        }
        log
    });
    std::thread::sleep(Duration::from_millis(100));
    let dir = DataDir::new("backup");
    let file = dir.0.join("table.backup");
    let (as_of, digest) = snapshot_save(&source.addr(), &file);
    stop.store(true, Ordering::Relaxed);
    let log = writer.join().unwrap();
    assert!(
        log.iter().any(|(op, ..)| *op > as_of),
        "no write after the backup; the test proved little"
    );

    let mut expected: HashMap<String, Vec<u8>> = (0..20_000)
        .map(|i| (format!("pre{i}"), vec![b'p'; 200]))
        .collect();
    for (op, key, value) in &log {
        if *op <= as_of {
            expected.insert(key.clone(), value.clone());
        }
    }
    let restored_dir = DataDir::new("restored");
    let file_arg = file.to_str().unwrap().to_string();
    let restored = durable(&restored_dir, &["--restore", &file_arg]);
    let mut r = restored.client();
    // Its last executed id is its own restart's id-skip mark, 2^20 on.
    assert_eq!(stat(&mut r, "last_executed"), as_of + (1 << 20));
    assert_eq!(
        stat(&mut r, "table_digest"),
        digest,
        "the digest the client printed"
    );
    let table = r.table().unwrap();
    assert_eq!(table.len(), expected.len());
    for e in table {
        let key = String::from_utf8(e.key.as_bytes().to_vec()).unwrap();
        assert_eq!(
            Some(&e.value),
            expected.get(&key),
            "{key} in the restored table"
        );
    }
    // The restored server is durable from there on.
    r.put(b"after-restore", b"1").unwrap();
}

#[test]
fn a_quiet_server_restores_to_the_same_digest_and_a_used_directory_is_refused() {
    let source = ServerProc::start(4, &[]);
    let mut c = source.client();
    for i in 0..500 {
        c.put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    c.del(b"k7").unwrap();
    let dir = DataDir::new("quiet");
    let file = dir.0.join("b.snap");
    let (as_of, _) = snapshot_save(&source.addr(), &file);
    assert_eq!(as_of, stat(&mut c, "last_executed"));
    let want = stat(&mut c, "table_digest");

    // Without a data directory, the backup is loaded into memory.
    let file_arg = file.to_str().unwrap().to_string();
    let mem = ServerProc::start(8, &["--restore", &file_arg]);
    assert_eq!(stat(&mut mem.client(), "table_digest"), want);

    let used = log_of_puts("used", 3);
    let stderr = refused_start(&used, &["--restore", &file_arg]);
    assert!(stderr.contains("without history"), "{stderr}");
}

#[test]
fn a_client_that_starts_a_backup_and_stops_reading_loses_the_slot_after_the_send_timeout() {
    // The attack: take the server's one backup slot and never read, so
    // nobody else can back up. The defence is the send timeout every
    // client is held to.
    let server = ServerProc::start(4, &["--send-timeout-ms", "1000"]);
    let mut c = server.client();
    preload(
        &mut c,
        "big",
        40_000,
        &[b'b'; 1000],
        chaintable::wire::WriteMode::Async,
    );
    wait_for(Duration::from_secs(10), || {
        (stat(&mut c, "entries") == 40_000).then_some(())
    })
    .expect("the table loaded");

    let mut hog = common::Raw::hello(&server.addr());
    hog.send(&chaintable::wire::Message::new(
        9,
        chaintable::wire::Body::Backup,
    ));
    std::thread::sleep(Duration::from_millis(200));
    let mut sink = Vec::new();
    let err = c.backup_to(&mut sink).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Busy), "{err}");

    let freed = wait_for(Duration::from_secs(10), || {
        let mut out = Vec::new();
        let mut c = server.client();
        c.backup_to(&mut out).ok().map(|n| (n, out))
    });
    let (bytes, _) = freed.expect("the slot came back once the hog was cut off");
    assert!(bytes > 40_000_000, "a whole backup: {bytes} bytes");
    assert!(stat(&mut c, "disconnected_slow_readers") >= 1);
    drop(hog);
}

#[test]
fn sigusr1_takes_a_snapshot_now_and_the_log_before_it_goes() {
    let dir = DataDir::new("sigusr1");
    let server = durable(&dir, &["--segment-bytes-max", "4096"]);
    let mut c = server.client();
    for i in 0..300 {
        c.put(format!("k{i}").as_bytes(), &[1u8; 50]).unwrap();
    }
    assert_eq!(stat(&mut c, "snapshots"), 0);
    let segments_before = dir.segments().len();
    assert!(segments_before > 3, "{segments_before} segments");
    server.signal(nix::sys::signal::Signal::SIGUSR1);
    let taken = wait_for(Duration::from_secs(10), || {
        (stat(&mut c, "snapshots") == 1).then_some(())
    });
    assert!(taken.is_some(), "no snapshot after SIGUSR1");
    assert_eq!(stat(&mut c, "snapshot_seq"), 300);
    assert!(
        dir.segments().len() < segments_before,
        "the log before the snapshot was kept"
    );
}
