//! The protocol test vectors in `spec/vectors/frames.json` (written by an
//! independent Python encoder) must decode to the messages they describe and
//! re-encode to the same bytes; malformed ones must fail the documented way.
//! Every hex dump in spec/PROTOCOL.md must be one of these vectors.

#![cfg(feature = "testing")]

use chaintable::serialize::{Entry, Key, Stats};
use chaintable::wire::message::*;
use chaintable::wire::{
    decode_frame, ErrorCode, FrameError, FLAG_NO_FORWARD, PAYLOAD_BYTES_MAX_DEFAULT,
};
use serde_json::Value;
use std::collections::HashMap;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/spec/vectors/frames.json");
    let text = std::fs::read_to_string(path).expect("frames.json is readable");
    serde_json::from_str(&text).expect("frames.json is JSON")
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn s<'a>(m: &'a Value, field: &str) -> &'a str {
    m[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string"))
}

fn n32(m: &Value, field: &str) -> u32 {
    u32::try_from(n(m, field)).unwrap_or_else(|_| panic!("{field} fits a u32"))
}

fn n(m: &Value, field: &str) -> u64 {
    m[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is a number"))
}

/// A vector's `gaps` field.
fn gaps(m: &Value) -> Vec<SeqGap> {
    m["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| SeqGap {
            first: n(g, "first"),
            last: n(g, "last"),
        })
        .collect()
}

fn bytes32(hex: &str) -> [u8; 32] {
    unhex(hex).try_into().expect("32 bytes")
}

fn key(m: &Value) -> Key {
    Key::new(s(m, "key").as_bytes()).unwrap()
}

fn mode(m: &Value) -> WriteMode {
    if m["async"].as_bool() == Some(true) {
        WriteMode::Async
    } else {
        WriteMode::Sync
    }
}

fn entries(list: &Value) -> Vec<Entry> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| Entry {
            key: key(e),
            version: n(e, "version"),
            value: s(e, "value").as_bytes().to_vec(),
        })
        .collect()
}

fn node_role(name: &str) -> NodeRole {
    let all = [
        NodeRole::Standalone,
        NodeRole::Head,
        NodeRole::Middle,
        NodeRole::Tail,
        NodeRole::Solo,
        NodeRole::Joining,
        NodeRole::Fenced,
    ];
    *all.iter().find(|r| r.name() == name).unwrap()
}

fn write_ok(m: &Value) -> WriteOk {
    let outcome = match s(m, "outcome") {
        "pending" => WriteOutcome::Pending,
        "absent" => WriteOutcome::Absent,
        "existed" => WriteOutcome::Existed,
        "mismatch" => WriteOutcome::Mismatch,
        other => panic!("outcome {other}"),
    };
    WriteOk {
        op_id: n(m, "op_id"),
        outcome,
    }
}

fn batch_writes(ops: &Value) -> Vec<BatchOp> {
    ops.as_array()
        .unwrap()
        .iter()
        .map(|o| match s(o, "op") {
            "put" => BatchOp::Put {
                key: key(o),
                value: s(o, "value").as_bytes().to_vec(),
            },
            _ => BatchOp::Del { key: key(o) },
        })
        .collect()
}

fn changes(list: &Value) -> Vec<WatchChange> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| match s(c, "op") {
            "put" => WatchChange::Put {
                key: key(c),
                value: s(c, "value").as_bytes().to_vec(),
            },
            "changed" => WatchChange::Changed { key: key(c) },
            _ => WatchChange::Del { key: key(c) },
        })
        .collect()
}

fn cas_ok(m: &Value) -> CasOk {
    let w = write_ok(m);
    CasOk {
        op_id: w.op_id,
        outcome: w.outcome,
        version: n(m, "version"),
    }
}

/// HELLO_OK's 1.1 extension from its JSON form (limits by name).
fn hello_extension(e: &Value) -> HelloExtension {
    let id = |name: &str| match name {
        "inflight_max" => ServerLimit::INFLIGHT_MAX,
        "output_bytes_max" => ServerLimit::OUTPUT_BYTES_MAX,
        "value_bytes_max" => ServerLimit::VALUE_BYTES_MAX,
        "key_bytes_max" => ServerLimit::KEY_BYTES_MAX,
        "idle_timeout_ms" => ServerLimit::IDLE_TIMEOUT_MS,
        "send_timeout_ms" => ServerLimit::SEND_TIMEOUT_MS,
        "watches_per_conn_max" => ServerLimit::WATCHES_PER_CONN_MAX,
        "watch_history_bytes" => ServerLimit::WATCH_HISTORY_BYTES,
        other => panic!("limit {other}"),
    };
    HelloExtension {
        minor: u16::try_from(n(e, "minor")).expect("a u16"),
        limits: e["limits"]
            .as_array()
            .expect("limits")
            .iter()
            .map(|l| ServerLimit {
                id: id(s(l, "name")),
                value: n(l, "value"),
            })
            .collect(),
    }
}

/// Builds the Rust message that a vector's JSON form describes.
fn message(m: &Value) -> Message {
    let body = match s(m, "type") {
        "HELLO" => Body::Hello(Hello {
            role: if s(m, "role") == "peer" {
                PeerRole::Peer
            } else {
                PeerRole::Client
            },
            features: n32(m, "features"),
            node: s(m, "node").to_string(),
        }),
        "HELLO_OK" => Body::HelloOk(HelloOk {
            version: u8::try_from(n(m, "version")).expect("a u8"),
            // The wire's bit 1 is the extension's presence, not a field.
            features: n32(m, "features") & !FEATURE_EXTENSION,
            payload_bytes_max: n32(m, "payload_bytes_max"),
            role: node_role(s(m, "role")),
            last_seq: n(m, "last_seq"),
            extension: m.get("extension").map(hello_extension),
        }),
        "PUT" => Body::Put {
            key: key(m),
            value: s(m, "value").as_bytes().to_vec(),
            mode: mode(m),
        },
        "GET" if m.get("min_seq").is_some() => Body::GetAtLeast {
            key: key(m),
            min_seq: n(m, "min_seq"),
        },
        "GET" => Body::Get { key: key(m) },
        "DEL" => Body::Del {
            key: key(m),
            mode: mode(m),
        },
        "SIZE" => Body::Size,
        "GETKEYS" => Body::GetKeys,
        "GETTABLE" => Body::GetTable,
        "STATS" => Body::Stats,
        "BACKUP" => Body::Backup,
        "BACKUP_CHUNK" => Body::BackupChunk {
            last: m["last"].as_bool().unwrap(),
            data: unhex(s(m, "data_hex")),
        },
        "VERIFY" => Body::Verify {
            op_id: n(m, "op_id"),
        },
        "PUT_OK" => Body::PutOk(write_ok(m)),
        "CPUT" => Body::PutIf {
            key: key(m),
            expected: n(m, "expected"),
            value: s(m, "value").as_bytes().to_vec(),
        },
        "CDEL" => Body::DelIf {
            key: key(m),
            expected: n(m, "expected"),
        },
        "CPUT_OK" => Body::PutIfOk(cas_ok(m)),
        "MGET" => Body::MGet {
            keys: m["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| Key::new(k.as_str().unwrap().as_bytes()).unwrap())
                .collect(),
        },
        "MWRITE" => Body::MWrite {
            ops: batch_writes(&m["ops"]),
        },
        "MGET_OK" => Body::MGetOk(
            m["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    (!v.is_null()).then(|| Versioned {
                        version: n(v, "version"),
                        value: s(v, "value").as_bytes().to_vec(),
                    })
                })
                .collect(),
        ),
        "WATCH" => Body::Watch {
            from_seq: n(m, "from_seq"),
            prefix: s(m, "prefix").as_bytes().to_vec(),
        },
        "UNWATCH" => Body::Unwatch {
            watch_id: n(m, "watch_id"),
        },
        "WATCH_EVENT" => Body::WatchEvent(WatchEvent {
            seq: n(m, "seq"),
            more: m["more"].as_bool().unwrap(),
            changes: changes(&m["changes"]),
        }),
        "UNWATCH_OK" => Body::Unwatched {
            found: m["found"].as_bool().unwrap(),
        },
        "RANGE" => Body::Range {
            from: s(m, "from").as_bytes().to_vec(),
            to: s(m, "to").as_bytes().to_vec(),
            limit: u32::try_from(n(m, "limit")).unwrap(),
        },
        "RANGE_OK" => Body::RangeOk {
            entries: entries(&m["entries"]),
            next: s(m, "next").as_bytes().to_vec(),
        },
        "MWRITE_OK" => Body::MWriteOk {
            op_id: n(m, "op_id"),
        },
        "CDEL_OK" => Body::DelIfOk(cas_ok(m)),
        "DEL_OK" => Body::DelOk(write_ok(m)),
        "VALUE" if m["found"] == Value::Bool(false) => Body::Value(None),
        "VALUE" => Body::Value(Some(Versioned {
            version: n(m, "version"),
            value: s(m, "value").as_bytes().to_vec(),
        })),
        "SIZE_OK" => Body::SizeOk {
            entries: n(m, "entries"),
        },
        "KEYS" => Body::Keys(
            m["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| Key::new(k.as_str().unwrap().as_bytes()).unwrap())
                .collect(),
        ),
        "ENTRIES" => Body::Entries(entries(&m["entries"])),
        "STATS_OK" => {
            let mut stats = Stats::default();
            for f in m["fields"].as_array().unwrap() {
                match &f["value"] {
                    Value::String(t) => stats.text(s(f, "name"), t),
                    v => stats.count(s(f, "name"), v.as_u64().unwrap()),
                }
            }
            Body::StatsOk(stats)
        }
        "VERIFY_OK" => Body::VerifyOk(match s(m, "state") {
            "unknown" => OpState::Unknown,
            "pending" => OpState::Pending,
            _ => OpState::Executed,
        }),
        "ERROR" => Body::Error(ErrorReply {
            code: ErrorCode::ALL
                .iter()
                .find(|c| c.name() == s(m, "code"))
                .map(|c| *c as u16)
                .unwrap(),
            message: s(m, "message").to_string(),
            redirect: s(m, "redirect").to_string(),
        }),
        "UPDATE" => Body::Update(Update {
            seq: n(m, "seq"),
            prev_seq: n(m, "prev_seq"),
            op: match s(m, "op") {
                "put" => WriteOp::Put {
                    key: key(m),
                    value: s(m, "value").as_bytes().to_vec(),
                },
                "del" => WriteOp::Del { key: key(m) },
                "unchanged" => WriteOp::Unchanged {
                    version: n(m, "version"),
                },
                "batch" => WriteOp::Batch(batch_writes(&m["ops"])),
                _ => WriteOp::Noop,
            },
        }),
        "ACK" => Body::Ack { seq: n(m, "seq") },
        "AUTH" => Body::Auth {
            user: s(m, "user").to_string(),
            password: s(m, "password").to_string(),
        },
        "AUTH_OK" => Body::AuthOk(match s(m, "access") {
            "readonly" => Access::ReadOnly,
            _ => Access::ReadWrite,
        }),
        "HANDOFF" => Body::Handoff { seq: n(m, "seq") },
        "SNAPSHOT" => Body::Snapshot(SnapshotChunk {
            snapshot_seq: n(m, "snapshot_seq"),
            first: m["first"].as_bool().unwrap(),
            last: m["last"].as_bool().unwrap(),
            keep: m.get("keep").and_then(Value::as_bool).unwrap_or(false),
            gaps: gaps(m),
            entries: entries(&m["entries"]),
        }),
        "PEER_HELLO" => Body::PeerHello(PeerHello {
            from: s(m, "from").to_string(),
            to: s(m, "to").to_string(),
            root: s(m, "root").to_string(),
            nonce: bytes32(s(m, "nonce")),
        }),
        "PEER_CHALLENGE" => Body::PeerChallenge(PeerChallenge {
            nonce: bytes32(s(m, "nonce")),
            proof: bytes32(s(m, "proof")),
        }),
        "PEER_PROOF" => Body::PeerProof {
            proof: bytes32(s(m, "proof")),
        },
        other => panic!("unknown vector type {other}"),
    };
    Message::new(n(m, "request_id"), body)
}

#[test]
fn every_valid_vector_decodes_to_its_message_and_encodes_back() {
    let v = vectors();
    let valid = v["valid"].as_array().unwrap();
    assert!(valid.len() >= 20, "the vector file lost entries");
    for vector in valid {
        let name = s(vector, "name");
        let bytes = unhex(s(vector, "hex"));
        let expected = message(&vector["message"]);
        let (frame, used) = decode_frame(&bytes, PAYLOAD_BYTES_MAX_DEFAULT)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: incomplete"));
        assert_eq!(used, bytes.len(), "{name}: used bytes");
        let decoded = Message::from_frame(&frame).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, expected, "{name}: decode");
        // NO_FORWARD is a header flag the client chooses, not a field.
        let no_forward = vector["message"]["no_forward"].as_bool() == Some(true);
        assert_eq!(
            frame.flags & FLAG_NO_FORWARD != 0,
            no_forward,
            "{name}: flag"
        );
        let extra = if no_forward { FLAG_NO_FORWARD } else { 0 };
        let mut encoded = Vec::new();
        expected.encode_flagged(extra, &mut encoded);
        assert_eq!(encoded, bytes, "{name}: encode");
    }
}

/// The decoder's verdict on a malformed vector, named as in frames.json.
fn verdict(bytes: &[u8]) -> &'static str {
    match decode_frame(bytes, PAYLOAD_BYTES_MAX_DEFAULT) {
        Err(FrameError::BadMagic(_)) => "BAD_MAGIC",
        Err(FrameError::UnsupportedVersion(_)) => "UNSUPPORTED_VERSION",
        Err(FrameError::TooLarge { .. }) => "FRAME_TOO_LARGE",
        Err(FrameError::BadCrc { .. }) => "BAD_CRC",
        Ok(None) => "TRUNCATED",
        Ok(Some((frame, _))) => match Message::from_frame(&frame) {
            Err(MessageError::UnknownOpcode(_)) => "UNKNOWN_OPCODE",
            Err(MessageError::BadPayload { .. }) => "BAD_PAYLOAD",
            Ok(_) => "DECODED",
        },
    }
}

#[test]
fn every_malformed_vector_fails_the_documented_way() {
    let v = vectors();
    let malformed = v["malformed"].as_array().unwrap();
    let mut kinds = HashMap::new();
    for vector in malformed {
        let name = s(vector, "name");
        let expected = s(vector, "error");
        assert_eq!(verdict(&unhex(s(vector, "hex"))), expected, "{name}");
        *kinds.entry(expected).or_insert(0) += 1;
        if let Some(code) = vector["server_reply"].as_str() {
            let code = ErrorCode::ALL.iter().find(|c| c.name() == code).unwrap();
            let closes = vector["closes"].as_bool().unwrap();
            assert_eq!(
                code.after() == chaintable::wire::AfterError::Close,
                closes,
                "{name}: close rule"
            );
        }
    }
    for kind in [
        "BAD_MAGIC",
        "BAD_CRC",
        "FRAME_TOO_LARGE",
        "TRUNCATED",
        "UNKNOWN_OPCODE",
        "BAD_PAYLOAD",
    ] {
        assert!(
            kinds.contains_key(kind),
            "no malformed vector of kind {kind}"
        );
    }
}

/// Hex dumps in the spec are introduced by `<!-- vector: NAME -->` and are
/// a fenced block whose lines hold hex bytes, then optionally `|` and a note.
#[test]
fn every_hex_dump_in_the_spec_is_a_checked_vector() {
    let v = vectors();
    let mut by_name = HashMap::new();
    for group in ["valid", "malformed"] {
        for vector in v[group].as_array().unwrap() {
            by_name.insert(s(vector, "name").to_string(), s(vector, "hex").to_string());
        }
    }
    for vector in v["handshake"]["frames"].as_array().unwrap() {
        by_name.insert(s(vector, "name").to_string(), s(vector, "hex").to_string());
    }
    let checked = check_dumps("PROTOCOL.md", "<!-- vector: ", &by_name);
    assert!(
        checked >= 5,
        "the spec should quote vectors; found {checked}"
    );
}

#[test]
fn every_hex_dump_in_the_storage_spec_is_a_checked_vector() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/spec/vectors/storage.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let by_name: HashMap<String, String> = ["segment", "snapshot", "after_snapshot"]
        .iter()
        .map(|name| (name.to_string(), s(&v, name).to_string()))
        .collect();
    let checked = check_dumps("STORAGE.md", "<!-- storage vector: ", &by_name);
    assert_eq!(checked, 2, "STORAGE.md quotes the segment and the snapshot");
}

/// Checks every hex dump in `spec/<file>` that follows a `marker NAME -->`
/// line against the vector NAME; returns how many it checked.
fn check_dumps(file: &str, marker: &str, by_name: &HashMap<String, String>) -> usize {
    let path = format!("{}/spec/{file}", env!("CARGO_MANIFEST_DIR"));
    let spec = std::fs::read_to_string(&path).expect("the spec is readable");
    let mut checked = 0;
    let mut lines = spec.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix(marker)
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "{name}: no code block after marker"
        );
        let mut hex = String::new();
        for dump_line in lines.by_ref().take_while(|l| !l.starts_with("```")) {
            let bytes = dump_line.split('|').next().unwrap_or_default();
            hex.extend(bytes.split_whitespace().map(|b| b.to_lowercase()));
        }
        let expected = by_name
            .get(name)
            .unwrap_or_else(|| panic!("{file} quotes unknown vector {name}"));
        assert_eq!(
            &hex, expected,
            "{file}: dump of {name} differs from the vector"
        );
        checked += 1;
    }
    checked
}

/// The handshake section: proofs, keys and MACed frames computed by the
/// Python encoder from the spec's formulas must be what `auth` computes.
#[test]
fn the_peer_handshake_vector_matches_the_implementation() {
    use chaintable::auth::{Initiator, Responder, Secret};
    let v = vectors();
    let h = &v["handshake"];
    let secret = Secret::new(s(h, "secret").as_bytes().to_vec());
    let frames: HashMap<&str, &Value> = h["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (s(f, "name"), f))
        .collect();
    let decode = |name: &str| {
        let bytes = unhex(s(frames[name], "hex"));
        let (frame, used) = decode_frame(&bytes, PAYLOAD_BYTES_MAX_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(used, bytes.len(), "{name}");
        frame
    };
    let (init, hello) = Initiator::new(
        secret.clone(),
        s(h, "from_node"),
        s(h, "to_node"),
        s(h, "root"),
        bytes32(s(h, "nonce_p")),
    );
    let hello = Message::new(0, Body::PeerHello(hello));
    assert_eq!(hex(&hello.to_bytes()), s(frames["peer-hello"], "hex"));
    let (resp, challenge) = Responder::new(secret, &peer_hello(&hello), bytes32(s(h, "nonce_s")));
    assert_eq!(hex(&challenge.proof), s(h, "proof_successor"));
    let challenge = Message::new(0, Body::PeerChallenge(challenge));
    assert_eq!(
        hex(&challenge.to_bytes()),
        s(frames["peer-challenge"], "hex")
    );
    let Body::PeerChallenge(c) = Message::from_frame(&decode("peer-challenge")).unwrap().body
    else {
        panic!("peer-challenge decodes to PEER_CHALLENGE");
    };
    let (proof, mut down) = init.on_challenge(&c).expect("the vector's proof verifies");
    assert_eq!(hex(&proof), s(h, "proof_predecessor"));
    let mut up = resp.on_proof(&proof).expect("our proof verifies");
    // Receivers' copies, before any frame moved their counters.
    let (mut down_rx, mut up_rx) = (up.clone(), down.clone());
    // The MACed frames in link order: ours encode to the vector's bytes,
    // and the vector's bytes open under the receiving side's keys.
    for name in ["sealed-hello-ok", "sealed-update", "sealed-ack"] {
        let going_down = s(frames[name], "direction") == "down";
        let (sender, receiver) = if going_down {
            (&mut down, &mut down_rx)
        } else {
            (&mut up, &mut up_rx)
        };
        let expected = message(&frames[name]["message"]);
        let mut out = Vec::new();
        expected.encode_sealed(&mut out, sender);
        assert_eq!(hex(&out), s(frames[name], "hex"), "{name}: sealed encoding");
        let mut frame = decode(name);
        receiver
            .open(&mut frame)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            Message::from_frame(&frame).unwrap(),
            expected,
            "{name}: opened"
        );
    }
}

fn peer_hello(m: &Message) -> PeerHello {
    match &m.body {
        Body::PeerHello(h) => h.clone(),
        _ => unreachable!(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ----- spec/STORAGE.md ------------------------------------------------------

mod storage {
    use super::{n, s, unhex};
    use chaintable::serialize::Key;
    use chaintable::storage::{
        recover, write_snapshot, FsyncPolicy, SnapshotJob, StorageConfig, Wal,
    };
    use chaintable::table::Table;
    use chaintable::wire::{Update, WriteOp};
    use serde_json::Value;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    fn vectors() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/spec/vectors/storage.json");
        let text = std::fs::read_to_string(path).expect("storage.json is readable");
        serde_json::from_str(&text).expect("storage.json is JSON")
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("chaintable-vectors-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn update(u: &Value) -> Update {
        let key = || Key::new(s(u, "key").as_bytes()).unwrap();
        let op = match s(u, "op") {
            "put" => WriteOp::Put {
                key: key(),
                value: s(u, "value").as_bytes().to_vec(),
            },
            "del" => WriteOp::Del { key: key() },
            "noop" => WriteOp::Noop,
            other => panic!("update op {other}"),
        };
        Update {
            seq: n(u, "seq"),
            prev_seq: n(u, "prev_seq"),
            op,
        }
    }

    #[test]
    fn the_log_writes_the_segment_of_the_vectors() {
        let v = vectors();
        let dir = scratch("segment");
        let mut wal = Wal::open(&dir, FsyncPolicy::Always, 1 << 20, None, 0).unwrap();
        for u in v["updates"].as_array().unwrap() {
            wal.append(&update(u));
        }
        wal.commit(Instant::now()).unwrap();
        let written = std::fs::read(dir.join(s(&v, "segment_name"))).unwrap();
        assert_eq!(written, unhex(s(&v, "segment")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_snapshot_writes_the_snapshot_of_the_vectors() {
        let v = vectors();
        let dir = scratch("snapshot");
        let table = Table::new(1);
        for u in &v["updates"].as_array().unwrap()[..2] {
            let u = update(u);
            let _ = table.apply(u.seq, &u.op);
        }
        let written_seq = AtomicU64::new(2);
        let job = SnapshotJob {
            table: &table,
            dir: &dir,
            seq: 2,
            gaps: Vec::new(),
            written_seq: &written_seq,
        };
        write_snapshot(&job).unwrap();
        let written = std::fs::read(dir.join(s(&v, "snapshot_name"))).unwrap();
        assert_eq!(written, unhex(s(&v, "snapshot")));
        assert_eq!(table.digest(), n(&v, "snapshot_digest"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn recovers_to_the_table_of_the_vectors(files: &[(&str, &str)]) {
        let v = vectors();
        let dir = scratch(files[0].0);
        for (name, hex) in files {
            std::fs::write(dir.join(s(&v, name)), unhex(s(&v, hex))).unwrap();
        }
        let table = Table::new(4);
        let r = recover(&StorageConfig::new(&dir), &table).unwrap();
        assert_eq!(r.last_seq, n(&v, "last_seq"));
        assert_eq!(r.gaps, super::gaps(&v));
        let mut entries = table.entries();
        entries.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        let want: Vec<(String, u64, String)> = v["table"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (s(e, "key").into(), n(e, "version"), s(e, "value").into()))
            .collect();
        let got: Vec<(String, u64, String)> = entries
            .iter()
            .map(|e| {
                let k = String::from_utf8(e.key.as_bytes().to_vec()).unwrap();
                (k, e.version, String::from_utf8(e.value.clone()).unwrap())
            })
            .collect();
        assert_eq!(got, want);
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_segment_of_the_vectors_recovers_to_their_table() {
        recovers_to_the_table_of_the_vectors(&[("segment_name", "segment")]);
    }

    #[test]
    fn the_snapshot_and_its_segment_recover_to_the_same_table() {
        recovers_to_the_table_of_the_vectors(&[
            ("snapshot_name", "snapshot"),
            ("after_snapshot_name", "after_snapshot"),
        ]);
    }
}
