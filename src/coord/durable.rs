//! The chain's durable floor (README design notes, "Durable chains"): the
//! highest sequence number a durable chain has acknowledged may not exceed
//! it, and it lives in ZooKeeper, in the data of the chain root, so it
//! outlives every member.
//!
//! The acting tail of a chain whose members log to disk publishes what it
//! has applied before acknowledging it; after every member has died, a
//! restarted member may found the chain again only if its log reaches the
//! floor, so whoever founds it holds every acknowledged write.
//!
//! The root's data is untrusted input: `durable <seq>`, and with a cluster
//! secret a signature over the root and the number on a second line
//! (`sig:<hex>`), so that only members can move it.

use super::*;
use crate::auth::{hex, unhex};

const PREFIX: &str = "durable ";
const SIGNATURE_PREFIX: &str = "sig:";
/// Longest root data read as a floor (the signed form is ~100 bytes).
const FLOOR_BYTES_MAX: usize = 256;

fn signature(secret: &Secret, root: &str, seq: u64) -> [u8; 32] {
    let key = secret.derive("durable floor");
    crate::auth::hmac_parts(&key, &[root.as_bytes(), b"\0", &seq.to_be_bytes()])
}

/// The root's data for floor `seq`.
#[must_use]
pub fn encode_floor(secret: Option<&Secret>, root: &str, seq: u64) -> Vec<u8> {
    match secret {
        Some(s) => format!(
            "{PREFIX}{seq}\n{SIGNATURE_PREFIX}{}",
            hex(&signature(s, root, seq))
        )
        .into_bytes(),
        None => format!("{PREFIX}{seq}").into_bytes(),
    }
}

/// The floor the root's data holds: 0 for a root without one (a new chain,
/// or one whose members never logged).
///
/// # Errors
///
/// Why the data is not a floor: malformed, too long, or (with a secret)
/// not signed by a member.
pub fn decode_floor(secret: Option<&Secret>, root: &str, data: &[u8]) -> Result<u64, &'static str> {
    if data.is_empty() {
        return Ok(0);
    }
    if data.len() > FLOOR_BYTES_MAX {
        return Err("root data too long for a durable floor");
    }
    let text = std::str::from_utf8(data).map_err(|_| "root data is not UTF-8")?;
    let (first, sig) = match text.split_once('\n') {
        Some((f, s)) => (f, Some(s.trim())),
        None => (text.trim(), None),
    };
    let seq: u64 = first
        .strip_prefix(PREFIX)
        .and_then(|n| n.trim().parse().ok())
        .ok_or("root data is not a durable floor")?;
    let Some(secret) = secret else {
        return Ok(seq);
    };
    let sig = sig
        .and_then(|s| s.strip_prefix(SIGNATURE_PREFIX))
        .and_then(unhex)
        .ok_or("unsigned durable floor")?;
    let key = secret.derive("durable floor");
    let parts: [&[u8]; 3] = [root.as_bytes(), b"\0", &seq.to_be_bytes()];
    if Secret::new(key.to_vec()).verify(&parts, &sig) {
        Ok(seq)
    } else {
        Err("durable floor with a bad signature")
    }
}

/// Reads the floor and the root's data version.
pub(super) async fn read_floor(
    client: &zk::Client,
    cfg: &CoordConfig,
) -> Result<Result<(u64, i32), &'static str>, zk::Error> {
    let (data, stat) = client.get_data(&cfg.root).await?;
    Ok(decode_floor(cfg.real_secret(), &cfg.root, &data).map(|seq| (seq, stat.version)))
}

/// Raises the floor to `seq` (never lowers it); returns the floor now.
pub(super) async fn publish_floor(
    client: &zk::Client,
    cfg: &CoordConfig,
    seq: u64,
) -> Result<u64, String> {
    loop {
        let (floor, version) = match read_floor(client, cfg).await {
            Ok(Ok(v)) => v,
            Ok(Err(why)) => return Err(why.to_string()),
            Err(e) => return Err(e.to_string()),
        };
        if floor >= seq {
            return Ok(floor);
        }
        let data = encode_floor(cfg.real_secret(), &cfg.root, seq);
        match client.set_data(&cfg.root, &data, Some(version)).await {
            Ok(_) => return Ok(seq),
            // Another member moved it meanwhile: read it again.
            Err(zk::Error::BadVersion) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_round_trip_and_a_forged_one_is_refused() {
        let secret = Secret::new(b"s3cret".to_vec());
        let data = encode_floor(Some(&secret), "/chain", 42);
        assert_eq!(decode_floor(Some(&secret), "/chain", &data), Ok(42));
        assert!(decode_floor(Some(&secret), "/other", &data).is_err());
        assert!(decode_floor(Some(&secret), "/chain", b"durable 99").is_err());
        let forged = String::from_utf8(data).unwrap().replace("42", "99");
        assert!(decode_floor(Some(&secret), "/chain", forged.as_bytes()).is_err());
        assert_eq!(decode_floor(None, "/chain", b"durable 7"), Ok(7));
        assert_eq!(decode_floor(None, "/chain", b""), Ok(0));
        assert!(decode_floor(None, "/chain", b"durable x").is_err());
        assert!(decode_floor(None, "/chain", &[b'7'; 300]).is_err());
    }
}
