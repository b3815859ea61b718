//! Scenario: a server started with `--tls-cert`/`--tls-key` serves clients
//! over TLS only (certificates from a test CA made here with rcgen), keeps
//! every limit, refuses plaintext clients and clients that do not trust it,
//! and still links with its chain peers (plaintext handshake + MAC) on the
//! same port.

#![cfg(feature = "testing")]

mod common;

use chaintable::client::{Client, ClientError, Options};
use chaintable::wire::{Body, ErrorCode};
use common::{Raw, ServerProc};
use std::path::PathBuf;
use std::time::Duration;

struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_ca: PathBuf,
}

/// A CA, a server certificate for 127.0.0.1 and localhost signed by it, and
/// an unrelated CA, in a directory of its own: the tests of this file run
/// in parallel in one process, and a shared directory let one test's CA
/// overwrite the other's (a CI run failed with BadSignature).
fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "pki-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let make_ca = || {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca, ca_key) = make_ca();
    let (other, _) = make_ca();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        other_ca: dir.join("other-ca.pem"),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    std::fs::write(&pki.other_ca, other.pem()).unwrap();
    pki
}

fn tls_opts(ca: &std::path::Path) -> Options {
    Options {
        tls: Some(chaintable::tls::client_config(ca).expect("CA loads")),
        ..Options::default()
    }
}

fn tls_args(pki: &Pki) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        pki.cert.display().to_string(),
        "--tls-key".into(),
        pki.key.display().to_string(),
    ]
}

#[test]
fn clients_are_served_over_tls_and_refused_in_plaintext() {
    let pki = pki();
    let mut args = tls_args(&pki);
    args.extend(["--handshake-timeout-ms".into(), "500".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = ServerProc::start(4, &args);
    let addr = s.addr();
    let mut c = Client::connect_with(&addr, tls_opts(&pki.ca)).expect("TLS client connects");
    c.put(b"k", b"over tls").unwrap();
    assert_eq!(
        c.get(b"k").unwrap().map(|v| v.value),
        Some(b"over tls".to_vec())
    );
    // Large values and a pipeline: rustls' buffers and ours under budget.
    let big = vec![9u8; 8 << 20];
    c.put(b"big", &big).unwrap();
    let replies = c
        .pipeline(
            (0..8)
                .map(|_| Body::Get {
                    key: chaintable::serialize::Key::new("big").unwrap(),
                })
                .collect(),
        )
        .unwrap();
    for r in replies {
        match r.unwrap() {
            Body::Value(Some(v)) => assert_eq!(v.value.len(), big.len()),
            other => panic!("{other:?}"),
        }
    }
    // A plaintext client is told, and served nothing.
    let mut r = Raw::connect(&addr);
    r.send(&common::client_hello());
    let reply = r.recv().expect("an answer in plaintext");
    match reply.body {
        Body::Error(e) => assert_eq!(e.error_code(), Some(ErrorCode::BadRequest), "{}", e.message),
        other => panic!("{other:?}"),
    }
    // A client that does not trust the server's CA cannot connect.
    match Client::connect_with(&addr, tls_opts(&pki.other_ca)) {
        Err(ClientError::Disconnected { reason, .. }) => {
            assert!(
                reason.contains("certificate") || reason.contains("Certificate"),
                "{reason}"
            )
        }
        Err(e) => panic!("untrusted CA refused, but not as a certificate failure: {e}"),
        Ok(_) => panic!("a client trusting another CA got through"),
    }
    // table-client speaks TLS with --tls --ca.
    let ca = pki.ca.display().to_string();
    let out = common::table_client(&["--tls", "--ca", &ca, &addr, "get", "k"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("over tls"));
    assert!(c.stats().unwrap().get_count("ops_put").unwrap() >= 2);
    // Strangers are still strangers: a connection that starts a TLS record
    // and says nothing more is closed after the handshake timeout.
    let mut r = Raw::connect(&addr);
    r.send_bytes(&[chaintable::tls::TLS_HANDSHAKE_RECORD]);
    assert!(
        r.closed_within(Duration::from_secs(3)),
        "kept past the handshake timeout"
    );
}

/// Every lock at once: a chain with a cluster secret, client TLS and a
/// users file; the chain client logs in at every member it talks to.
#[test]
fn a_chain_serves_tls_clients_while_its_peers_link_on_the_same_ports() {
    let pki = pki();
    let zk = common::zk::ZooKeeper::start();
    let zk_addr = zk.addr();
    let secret = common::cluster_secret_file();
    let users = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("chain-users-{}", std::process::id()));
    let line = format!(
        "carol readwrite {}\n",
        chaintable::auth::password_hash("s3cret")
    );
    std::fs::write(&users, line).unwrap();
    let mut args = vec![
        zk_addr.clone(),
        "--cluster-secret-file".into(),
        secret,
        "--users-file".into(),
        users.display().to_string(),
    ];
    args.extend(tls_args(&pki));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let members: Vec<ServerProc> = (0..2)
        .map(|_| {
            let p = ServerProc::start(4, &args);
            std::thread::sleep(Duration::from_millis(300));
            p
        })
        .collect();
    let opts = Options {
        read_timeout: Duration::from_secs(5),
        credentials: Some(chaintable::client::Credentials {
            user: "carol".into(),
            password: "s3cret".into(),
        }),
        ..tls_opts(&pki.ca)
    };
    let mut chain =
        chaintable::client::chain::ChainClient::connect(&zk_addr, "/chain", opts.clone()).unwrap();
    chain.retry_for = Duration::from_secs(15);
    let (reply, head) = chain
        .call(Body::Put {
            key: chaintable::serialize::Key::new("k").unwrap(),
            value: b"v".to_vec(),
            mode: chaintable::wire::WriteMode::Sync,
        })
        .expect("a write through the chain");
    assert!(matches!(reply, Body::PutOk(_)), "{reply:?}");
    let (reply, _) = chain
        .call(Body::Get {
            key: chaintable::serialize::Key::new("k").unwrap(),
        })
        .unwrap();
    assert_eq!(head, members[0].addr(), "the write went to the head");
    assert!(matches!(reply, Body::Value(Some(_))), "{reply:?}");
    // Both hold it: the peer link (plaintext + MAC) carried the write.
    let mut t = Client::connect_with(&members[1].addr(), opts).unwrap();
    let role = t.stats().unwrap().get_text("role").map(str::to_string);
    assert_eq!(role.as_deref(), Some("tail"));
    chain.close();
    drop(members);
    drop(zk);
}
