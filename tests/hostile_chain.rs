//! Scenario: an outsider attacks a 3-member chain started as the README
//! says (with a cluster secret): it forges peer handshakes and replication
//! frames, and tries to rewrite the chain's ZooKeeper nodes. Every attack
//! must fail without costing the chain its writes, its order or its
//! speed. Also: a member whose node is deleted comes back, and VERIFY
//! never calls a write executed that the surviving history lacks.

#![cfg(feature = "testing")]

mod common;

use chaintable::auth::random_nonce;
use chaintable::serialize::Key;
use chaintable::wire::{Body, ErrorCode, Hello, Message, OpState, PeerHello, PeerRole};
use chaintable::wire::{Update, WriteMode, WriteOp};
use common::chain::{stat_text, Chain};
use common::Raw;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zookeeper_client as zk;

fn error_code(m: &Message) -> Option<ErrorCode> {
    match &m.body {
        Body::Error(e) => e.error_code(),
        _ => None,
    }
}

fn key(s: &str) -> Key {
    Key::new(s.as_bytes()).unwrap()
}

/// A synchronous PUT through the chain; returns its operation id.
fn sync_put(c: &mut chaintable::client::chain::ChainClient, k: &str) -> u64 {
    let body = Body::Put {
        key: key(k),
        value: b"v".to_vec(),
        mode: WriteMode::Sync,
    };
    match c.call(body).expect("write through the chain").0 {
        Body::PutOk(w) => w.op_id,
        other => panic!("{other:?}"),
    }
}

/// Name of the member listed as `field` ("predecessor"/"successor") by `addr`.
fn neighbour_name(addr: &str, field: &str) -> String {
    let text = stat_text(addr, field).expect("STATS answers");
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Sync writes per second through the chain over `secs`.
fn write_rate(chain: &Chain, prefix: &str, secs: u64) -> f64 {
    let mut c = chain.client();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let k = format!("{prefix}-{}", n % 50);
        c.call(Body::Put {
            key: key(&k),
            value: n.to_be_bytes().to_vec(),
            mode: WriteMode::Sync,
        })
        .expect("write during the attack");
        n += 1;
    }
    c.close();
    f64::from(u32::try_from(n).unwrap_or(u32::MAX)) / start.elapsed().as_secs_f64()
}

/// One forged attempt at becoming `target`'s predecessor `pred`: the old
/// HELLO(peer), then PEER_HELLO with a made-up proof, then an UPDATE as if
/// the handshake had worked. Returns what the target answered.
fn forge_predecessor(
    target: &str,
    target_name: &str,
    pred: &str,
) -> (Option<ErrorCode>, bool, bool) {
    let mut r = Raw::connect(target);
    r.send(&Message::new(
        1,
        Body::Hello(Hello {
            role: PeerRole::Peer,
            features: 0,
            node: pred.to_string(),
        }),
    ));
    let old_hello = r.recv().as_ref().and_then(error_code);
    let mut r = Raw::connect(target);
    r.send(&Message::new(
        0,
        Body::PeerHello(PeerHello {
            from: pred.to_string(),
            to: target_name.to_string(),
            root: "/chain".into(),
            nonce: random_nonce(),
        }),
    ));
    let challenged = matches!(r.recv().map(|m| m.body), Some(Body::PeerChallenge(_)));
    r.send(&Message::new(0, Body::PeerProof { proof: [0x5a; 32] }));
    r.send(&Message::new(
        0,
        Body::Update(Update {
            seq: 1 << 40,
            prev_seq: 0,
            op: WriteOp::Put {
                key: key("injected"),
                value: b"evil".to_vec(),
            },
        }),
    ));
    let closed = r.closed_within(Duration::from_secs(3));
    (old_hello, challenged, closed)
}

#[test]
fn forged_peer_handshakes_neither_replace_a_link_nor_inject_nor_slow_the_chain() {
    let chain = Chain::start(3, &[]);
    let tail = chain.member(2).addr();
    let tail_name = stat_text(&tail, "node").unwrap();
    let pred = neighbour_name(&tail, "predecessor");
    let baseline = write_rate(&chain, "base", 2);
    // Attack the tail in a loop while writes go on.
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let attacker = {
        let (stop, attempts) = (stop.clone(), attempts.clone());
        let (tail, tail_name, pred) = (tail.clone(), tail_name.clone(), pred.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let (old, challenged, closed) = forge_predecessor(&tail, &tail_name, &pred);
                assert_eq!(old, Some(ErrorCode::Unavailable), "HELLO(peer) is refused");
                assert!(challenged, "a plausible PEER_HELLO gets a challenge");
                assert!(closed, "a wrong proof closes the connection");
                attempts.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let during = write_rate(&chain, "attack", 3);
    stop.store(true, Ordering::SeqCst);
    attacker.join().expect("attacker thread");
    let n = attempts.load(Ordering::SeqCst);
    eprintln!("sync writes/s: {baseline:.0} before, {during:.0} during {n} forged handshakes");
    assert!(n >= 10, "the attack barely ran");
    assert!(
        during >= baseline * 0.5,
        "{during:.0} writes/s vs {baseline:.0}"
    );
    // The real link was never replaced, and nothing was injected.
    assert_eq!(neighbour_name(&tail, "predecessor"), pred);
    let failures: u64 = stat_text(&tail, "peer_auth_failures")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        failures >= n,
        "{failures} failures counted for {n} attempts"
    );
    chain.converged_digest().expect("members agree");
    for addr in chain.addrs() {
        let t = common::chain::table_of(&addr).expect("table");
        assert!(
            !t.contains_key(&b"injected"[..]),
            "{addr} holds the injected key"
        );
    }
}

#[test]
fn replication_frames_from_a_client_connection_are_refused_by_opcode() {
    let chain = Chain::start(3, &[]);
    let mut c = chain.client();
    sync_put(&mut c, "a");
    let tail = chain.member(2).addr();
    let last: u64 = stat_text(&tail, "last_applied").unwrap().parse().unwrap();
    for addr in chain.addrs() {
        let mut r = Raw::hello(&addr);
        let forged = Update {
            seq: last + 1,
            prev_seq: last,
            op: WriteOp::Put {
                key: key("injected"),
                value: b"evil".to_vec(),
            },
        };
        r.send(&Message::new(9, Body::Update(forged)));
        r.send(&Message::new(10, Body::Ack { seq: u64::MAX }));
        assert_eq!(
            r.recv().as_ref().and_then(error_code),
            Some(ErrorCode::UnknownOpcode)
        );
        assert_eq!(
            r.recv().as_ref().and_then(error_code),
            Some(ErrorCode::UnknownOpcode)
        );
    }
    // The next real write gets the next id and is at the tail.
    let (reply, _) = c
        .call(Body::Put {
            key: key("b"),
            value: b"2".to_vec(),
            mode: WriteMode::Sync,
        })
        .unwrap();
    let Body::PutOk(w) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(w.op_id, last + 1);
    chain.converged_digest().expect("members agree");
    let t = common::chain::table_of(&tail).unwrap();
    assert!(!t.contains_key(&b"injected"[..]));
    assert_eq!(t.get(&b"b"[..]).map(|(v, _)| *v), Some(last + 1));
    c.close();
}

async fn zk_client(addr: &str, login: Option<&[u8]>) -> zk::Client {
    let mut c = zk::Client::connector().with_session_timeout(Duration::from_secs(5));
    if let Some(auth) = login {
        c = c.with_auth("digest", auth);
    }
    c.connect(addr).await.expect("ZooKeeper connects")
}

fn members_in_zk(zk_addr: &str) -> Vec<String> {
    smol::block_on(async {
        let c = zk_client(zk_addr, None).await;
        let (mut children, _) = c.get_children("/chain").await.expect("anyone may read");
        children.sort();
        children
    })
}

#[test]
fn an_outsider_can_read_but_not_write_the_chain_in_zookeeper() {
    let chain = Chain::start(3, &[]);
    let zk_addr = chain.zk.addr();
    let before = members_in_zk(&zk_addr);
    assert_eq!(before.len(), 3);
    let tail_node = format!("/chain/{}", before[2]);
    smol::block_on(async {
        let c = zk_client(&zk_addr, None).await;
        let open = zk::Acls::anyone_all();
        let persistent = zk::CreateMode::Persistent.with_acls(open);
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(open);
        let fake = b"127.0.0.1:1".as_slice();
        let denied = |r: Result<(), zk::Error>, what: &str| {
            assert!(matches!(r, Err(zk::Error::NoAuth)), "{what}: {r:?}");
        };
        denied(
            c.create("/chain/node9999999999", fake, &persistent)
                .await
                .map(|_| ()),
            "create persistent",
        );
        denied(
            c.create("/chain/node0000000000", fake, &ephemeral)
                .await
                .map(|_| ()),
            "create ephemeral",
        );
        denied(c.delete(&tail_node, None).await, "delete a member");
        denied(
            c.set_data(&tail_node, fake, None).await.map(|_| ()),
            "setData on a member",
        );
        denied(
            c.set_acl("/chain", &open, None).await.map(|_| ()),
            "setACL on the root",
        );
        // The root's data is a durable chain's floor (spec 5.1): lowering
        // it would let a stale member found the chain.
        denied(
            c.set_data("/chain", b"durable 0 0", None).await.map(|_| ()),
            "setData on the root",
        );
        // Reading is allowed: clients need nothing to find the chain.
        let (data, stat) = c.get_data(&tail_node).await.expect("read a member");
        assert!(stat.ephemeral_owner != 0);
        assert!(
            String::from_utf8_lossy(&data).contains("hmac-sha256:"),
            "member records are signed"
        );
    });
    assert_eq!(members_in_zk(&zk_addr), before);
    assert_eq!(chain.roles(), ["head", "middle", "tail"]);
}

/// Someone holding the cluster's ZooKeeper login (or a ZooKeeper whose
/// ACLs were loosened by hand) adds world-readable nodes: members ignore
/// persistent and unsigned children, clients ignore persistent ones.
/// (Clients cannot check signatures without the secret: against forged
/// ephemeral nodes they rely on the ACL, see spec §10.)
#[test]
fn members_ignore_persistent_and_unsigned_member_nodes() {
    let chain = Chain::start(3, &[]);
    let zk_addr = chain.zk.addr();
    let login = common::cluster_login();
    let fake_tail = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_addr = fake_tail.local_addr().unwrap().to_string();
    let (insider, ephemeral_path) = smol::block_on(async {
        let c = zk_client(&zk_addr, Some(&login)).await;
        let acls = [
            zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("auth", "")),
            zk::Acl::new(zk::Permission::READ, zk::AuthId::new("world", "anyone")),
        ];
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&acls));
        let ephemeral = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::new(&acls));
        c.create("/chain/node9999999998", fake_addr.as_bytes(), &persistent)
            .await
            .expect("the insider may create");
        let (_, seq) = c
            .create("/chain/node", fake_addr.as_bytes(), &ephemeral)
            .await
            .expect("the insider may create");
        (c, format!("/chain/node{seq}"))
    });
    std::thread::sleep(Duration::from_millis(1500));
    // The real tail is still the tail, its predecessor still the middle.
    assert_eq!(chain.roles(), ["head", "middle", "tail"]);
    let mid = chain.member(1).addr();
    assert!(stat_text(&mid, "successor")
        .unwrap()
        .ends_with(&chain.member(2).addr()));
    smol::block_on(async {
        insider
            .delete(&ephemeral_path, None)
            .await
            .expect("remove the ephemeral fake");
    });
    // A client reads at the real members (in turn), never at the fake
    // persistent one.
    let mut c = chain.client();
    sync_put(&mut c, "k");
    assert_eq!(c.members().len(), 3, "the fake is not a member");
    for _ in 0..6 {
        let (_, served_by) = c.call(Body::Get { key: key("k") }).unwrap();
        assert!(chain.addrs().contains(&served_by), "{served_by}");
        assert_ne!(served_by, fake_addr);
    }
    c.close();
    smol::block_on(async {
        let _ = insider.delete("/chain/node9999999998", None).await;
    });
    drop(insider);
}

/// A member's node deleted while its session lives (by someone with the
/// cluster's ZooKeeper login): the member registers again and rejoins,
/// instead of staying fenced for good.
#[test]
fn a_member_whose_node_is_deleted_registers_again() {
    let chain = Chain::start(3, &[]);
    let zk_addr = chain.zk.addr();
    let tail = chain.member(2).addr();
    let old_name = stat_text(&tail, "node").unwrap();
    let login = common::cluster_login();
    smol::block_on(async {
        let c = zk_client(&zk_addr, Some(&login)).await;
        c.delete(&format!("/chain/{old_name}"), None)
            .await
            .expect("delete the tail's node");
    });
    let renamed = common::wait_for(Duration::from_secs(15), || {
        stat_text(&tail, "node").filter(|n| !n.is_empty() && *n != old_name)
    });
    assert!(renamed.is_some(), "the member did not register again");
    chain.wait_chain_len(3);
    let mut c = chain.client();
    sync_put(&mut c, "after");
    chain
        .converged_digest()
        .expect("members agree after the rejoin");
    c.close();
}

/// Head and middle die while the tail is paused, taking async writes with
/// them. The tail (now alone) must never say VERIFY executed for a write
/// it does not hold, nor for an id the new head skipped.
#[test]
fn verify_never_calls_a_lost_or_skipped_write_executed() {
    let mut chain = Chain::start(3, &[]);
    let mut c = chain.client();
    sync_put(&mut c, "base");
    let head = chain.member(0).addr();
    let tail = chain.member(2).addr();
    chain.member(2).signal(nix::sys::signal::Signal::SIGSTOP);
    let mut h = chaintable::client::Client::connect(&head).unwrap();
    let ids: Vec<(String, u64)> = (0..20)
        .map(|i| {
            let k = format!("lost-{i}");
            let w = h
                .put_async(k.as_bytes(), b"v")
                .expect("async write admitted");
            (k, w.op_id)
        })
        .collect();
    chain.kill9(0);
    chain.kill9(1);
    chain.member(2).signal(nix::sys::signal::Signal::SIGCONT);
    let solo = common::wait_for(Duration::from_secs(20), || {
        (stat_text(&tail, "role").as_deref() == Some("solo")).then_some(())
    });
    assert!(solo.is_some(), "the tail did not take over");
    let mut t = chaintable::client::Client::connect(&tail).unwrap();
    let new = t.put(b"after", b"v").expect("write at the new head").op_id;
    let last_lost = ids.iter().map(|(_, id)| *id).max().unwrap();
    assert!(new > last_lost, "ids continue above the lost ones");
    for (k, id) in &ids {
        let state = t.verify(*id).unwrap();
        let held = t.get(k.as_bytes()).unwrap();
        match state {
            OpState::Executed => assert_eq!(held.map(|v| v.version), Some(*id), "{k}"),
            OpState::Unknown => assert!(held.is_none(), "{k} held but VERIFY says unknown"),
            OpState::Pending => panic!("{k}: pending at a solo member"),
        }
    }
    // Ids between the lost ones and the new head's first were never
    // assigned in the surviving history.
    for skipped in [last_lost + 1, (last_lost + new) / 2, new - 1] {
        assert_eq!(t.verify(skipped).unwrap(), OpState::Unknown, "id {skipped}");
    }
    assert_eq!(t.verify(new).unwrap(), OpState::Executed);
    c.close();
}

/// Reads one whole frame (MAC and all) from a raw socket.
fn read_frame(s: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> Option<chaintable::wire::Frame> {
    use std::io::Read;
    let mut chunk = [0u8; 65536];
    loop {
        if let Ok(Some((f, used))) = chaintable::wire::decode_frame(buf, usize::MAX) {
            buf.drain(..used);
            return Some(f);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Without a secret (`--insecure-peers`, which the README warns about)
/// anyone can complete the peer handshake and become a predecessor. Even
/// then an update must continue the history exactly: sequence numbers that
/// jump, wrap or leave a gap close the link instead of being applied, and
/// the chain recovers its real link and goes on numbering from where it was.
#[test]
fn an_authenticated_predecessor_still_cannot_jump_wrap_or_gap_the_sequence() {
    use chaintable::auth::{Initiator, Secret};
    let chain = Chain::start(3, &["--insecure-peers"]);
    let mut c = chain.client();
    let first = sync_put(&mut c, "before");
    let tail = chain.member(2).addr();
    let tail_name = stat_text(&tail, "node").unwrap();
    let pred = neighbour_name(&tail, "predecessor");
    let forged = [
        (1u64 << 62) + 5, // a jump far past anything the head assigned
        u64::MAX,         // a wrap waiting to happen
        first + 2,        // a gap: first + 1 never arrived
    ];
    for seq in forged {
        let mut s = std::net::TcpStream::connect(&tail).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let (init, hello) = Initiator::new(
            Secret::insecure(),
            &pred,
            &tail_name,
            "/chain",
            random_nonce(),
        );
        use std::io::Write;
        s.write_all(&Message::new(0, Body::PeerHello(hello)).to_bytes())
            .unwrap();
        let challenge = read_frame(&mut s, &mut buf).expect("challenge");
        let Ok(Message {
            body: Body::PeerChallenge(ch),
            ..
        }) = Message::from_frame(&challenge)
        else {
            panic!("expected PEER_CHALLENGE");
        };
        let (proof, mut mac) = init
            .on_challenge(&ch)
            .expect("the insecure secret is public");
        s.write_all(&Message::new(0, Body::PeerProof { proof }).to_bytes())
            .unwrap();
        let mut hello_ok = read_frame(&mut s, &mut buf).expect("HELLO_OK");
        mac.open(&mut hello_ok).expect("sealed HELLO_OK");
        let last = match Message::from_frame(&hello_ok).unwrap().body {
            Body::HelloOk(h) => h.last_seq,
            other => panic!("{other:?}"),
        };
        let prev = if seq == first + 2 { first + 1 } else { last };
        let update = Update {
            seq,
            prev_seq: prev,
            op: WriteOp::Put {
                key: key("forged"),
                value: b"evil".to_vec(),
            },
        };
        let mut out = Vec::new();
        Message::new(0, Body::Update(update)).encode_sealed(&mut out, &mut mac);
        s.write_all(&out).unwrap();
        // The tail may first repeat its acknowledgement level (spec 5.4,
        // "On every new link"); then it must close the link.
        let mut closed = false;
        for _ in 0..3 {
            let Some(mut f) = read_frame(&mut s, &mut buf) else {
                closed = true;
                break;
            };
            mac.open(&mut f).expect("a sealed frame");
            let body = Message::from_frame(&f).unwrap().body;
            assert!(matches!(body, Body::Ack { .. }), "seq {seq}: got {body:?}");
        }
        assert!(closed, "seq {seq}: the link stayed open");
    }
    let violations: u64 = stat_text(&tail, "peer_stream_violations")
        .unwrap()
        .parse()
        .unwrap();
    assert!(violations >= 3, "{violations} violations counted");
    // The real middle links again; ids go on from where they were.
    let next = sync_put(&mut c, "after");
    assert!(
        next > first && next < first + 1000,
        "ids went from {first} to {next}"
    );
    chain.converged_digest().expect("members agree");
    for addr in chain.addrs() {
        let t = common::chain::table_of(&addr).expect("table");
        assert!(
            !t.contains_key(&b"forged"[..]),
            "{addr} applied a forged update"
        );
    }
    c.close();
}

/// A flood of children under the chain root (by someone holding the
/// cluster's ZooKeeper login) cannot hide the members: at most
/// CHILDREN_MAX are read, member names first.
#[test]
fn a_flood_of_children_under_the_root_does_not_hide_the_members() {
    let chain = Chain::start(2, &[]);
    let zk_addr = chain.zk.addr();
    let login = common::cluster_login();
    let flood = chaintable::coord::CHILDREN_MAX + 100;
    smol::block_on(async {
        let c = zk_client(&zk_addr, Some(&login)).await;
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::creator_all());
        for i in 0..flood {
            // Names that sort before "node…".
            let path = format!("/chain/a{i:06}");
            c.create(&path, b"127.0.0.1:1", &persistent)
                .await
                .expect("insider creates");
        }
    });
    // A new member joins through all that and the chain keeps working.
    let mut chain = chain;
    chain.add_member();
    chain.wait_chain_len(3);
    let mut c = chain.client();
    sync_put(&mut c, "through-the-flood");
    chain.converged_digest().expect("members agree");
    c.close();
}

/// A member whose client slots are all taken (by clients that are not idle
/// long enough to be evicted) can still be reached by a new predecessor:
/// peer handshakes get slots of their own.
#[test]
fn a_member_full_of_clients_still_takes_its_new_predecessor() {
    let mut chain = Chain::start(3, &["--max-connections", "12"]);
    let mut c = chain.client();
    sync_put(&mut c, "before");
    let tail = chain.member(2).addr();
    let held_since = Instant::now();
    let held: Vec<Raw> = (0..12).map(|_| Raw::hello(&tail)).collect();
    let mut r = Raw::connect(&tail);
    r.send(&common::client_hello());
    let refused = r.recv().as_ref().and_then(error_code);
    assert_eq!(
        refused,
        Some(ErrorCode::TooManyConnections),
        "the tail is full"
    );
    // The middle dies; the head must link to the full tail.
    chain.kill9(1);
    sync_put(&mut c, "after");
    let took = held_since.elapsed();
    eprintln!("write through the new head -> tail link {took:?} after the tail filled up");
    // Idle clients would only make room after 10 s: this came sooner.
    assert!(took < Duration::from_secs(9), "took {took:?}");
    drop(held);
    chain.converged_digest().expect("members agree");
    c.close();
}
