//! What makes ZooKeeper trustworthy for a chain: a digest login derived from
//! the cluster secret, ACLs that let only that login write, and member
//! records signed with a key derived from the same secret.
//!
//! A member record is the member's `host:port`, a newline, and
//! `hmac-sha256:` with the hex HMAC over the chain root, the owning session
//! id (ZooKeeper's `ephemeralOwner`, as 8 big-endian bytes) and the
//! address. Binding the session means a record copied into another node
//! (even by someone who may write to ZooKeeper) fails: only the member's
//! own session owns the node it created.

use crate::auth::{hex, unhex, Secret};
use zookeeper_client as zk;

/// The ZooKeeper digest user every member logs in as.
pub const DIGEST_USER: &str = "chaintable";

const SIGNATURE_PREFIX: &str = "hmac-sha256:";

/// A member record as parsed (what a node's data says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub addr: String,
    pub signature: Option<Vec<u8>>,
}

/// `user:password` for ZooKeeper's digest scheme; the password is derived
/// from the secret, so the secret itself never reaches ZooKeeper.
#[must_use]
pub fn digest_credentials(secret: &Secret) -> Vec<u8> {
    let password = hex(&secret.derive("zookeeper digest password"));
    format!("{DIGEST_USER}:{password}").into_bytes()
}

/// ACLs for the chain root and member nodes: everything for the members'
/// digest login (`auth` means "whoever created it", i.e. our login), read
/// for anyone (clients need no credentials). Open (world) when not locked.
pub fn node_acls(locked: bool) -> Vec<zk::Acl> {
    if !locked {
        return zk::Acls::anyone_all().to_vec();
    }
    vec![
        zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("auth", "")),
        zk::Acl::new(zk::Permission::READ, zk::AuthId::new("world", "anyone")),
    ]
}

fn signature(secret: &Secret, root: &str, session: i64, addr: &str) -> [u8; 32] {
    let key = secret.derive("member record");
    crate::auth::hmac_parts(
        &key,
        &[
            root.as_bytes(),
            b"\0",
            &session.to_be_bytes(),
            b"\0",
            addr.as_bytes(),
        ],
    )
}

/// The signed record a member registers.
#[must_use]
pub fn sign_member(secret: &Secret, root: &str, session: i64, addr: &str) -> Vec<u8> {
    let sig = hex(&signature(secret, root, session, addr));
    format!("{addr}\n{SIGNATURE_PREFIX}{sig}").into_bytes()
}

/// Parses a record leniently (trailing NULs and whitespace are dropped, as
/// some tools write them).
pub fn parse_member(data: &[u8]) -> Option<MemberRecord> {
    let text = std::str::from_utf8(data).ok()?;
    let text = text.trim_end_matches(['\0', ' ', '\n', '\r']);
    let (addr, signature) = match text.split_once('\n') {
        Some((addr, sig)) => (
            addr,
            Some(unhex(sig.trim().strip_prefix(SIGNATURE_PREFIX)?)?),
        ),
        None => (text, None),
    };
    let addr = addr.trim_end_matches('\r');
    if addr.is_empty() || addr.len() > crate::serialize::TEXT_BYTES_MAX {
        return None;
    }
    Some(MemberRecord {
        addr: addr.to_string(),
        signature,
    })
}

/// The member's address if the record is acceptable: well formed and, with
/// a secret, signed for this root and the session that owns the node.
///
/// # Errors
///
/// Why the record is refused: malformed, or (with a secret) not signed for
/// this root, owning session and address.
pub fn verify_member(
    secret: Option<&Secret>,
    root: &str,
    owner: i64,
    data: &[u8],
) -> Result<String, &'static str> {
    let record = parse_member(data).ok_or("malformed record")?;
    let Some(secret) = secret else {
        return Ok(record.addr);
    };
    let sig = record.signature.ok_or("unsigned record")?;
    let key = secret.derive("member record");
    let parts: [&[u8]; 5] = [
        root.as_bytes(),
        b"\0",
        &owner.to_be_bytes(),
        b"\0",
        record.addr.as_bytes(),
    ];
    let ok = Secret::new(key.to_vec()).verify(&parts, &sig);
    if ok {
        Ok(record.addr)
    } else {
        Err("bad signature")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_records_verify_only_for_their_root_session_and_address() {
        let s = Secret::new(b"sixteen+ byte secret".to_vec());
        let rec = sign_member(&s, "/chain", 0x1234, "10.0.0.1:9000");
        assert_eq!(
            verify_member(Some(&s), "/chain", 0x1234, &rec).as_deref(),
            Ok("10.0.0.1:9000")
        );
        assert!(
            verify_member(Some(&s), "/other", 0x1234, &rec).is_err(),
            "root"
        );
        assert!(
            verify_member(Some(&s), "/chain", 0x1235, &rec).is_err(),
            "session"
        );
        let other = Secret::new(b"another secret!!!".to_vec());
        assert!(
            verify_member(Some(&other), "/chain", 0x1234, &rec).is_err(),
            "secret"
        );
        let mut forged = String::from_utf8(rec.clone()).unwrap();
        forged = forged.replace("10.0.0.1", "10.6.6.6");
        assert!(
            verify_member(Some(&s), "/chain", 0x1234, forged.as_bytes()).is_err(),
            "address"
        );
        assert_eq!(
            verify_member(Some(&s), "/chain", 0x1234, b"10.0.0.1:9000"),
            Err("unsigned record")
        );
    }

    #[test]
    fn without_a_secret_any_well_formed_record_is_taken() {
        assert_eq!(
            verify_member(None, "/c", 1, b"127.0.0.1:9001\0\0").as_deref(),
            Ok("127.0.0.1:9001")
        );
        let s = Secret::new(b"sixteen+ byte secret".to_vec());
        let rec = sign_member(&s, "/c", 1, "127.0.0.1:9001");
        assert_eq!(
            verify_member(None, "/c", 1, &rec).as_deref(),
            Ok("127.0.0.1:9001")
        );
        assert!(verify_member(None, "/c", 1, b"").is_err());
        assert!(verify_member(None, "/c", 1, &[0xff, 0xfe]).is_err());
    }
}
