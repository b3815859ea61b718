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
//! It also holds the ids reserved: no head assigns a sequence number above
//! them, and a founder starts above them (see [`DurableFloor`]).
//!
//! The root's data is untrusted input: `durable <floor> <reserved>`, and
//! with a cluster secret a signature over the root and both numbers on a
//! second line (`sig:<hex>`), so that only members can move them.

use super::*;
use crate::auth::{hex, unhex};
use crate::member::DurableFloor;

const PREFIX: &str = "durable ";
const SIGNATURE_PREFIX: &str = "sig:";
/// Longest root data read as a floor (the signed form is ~100 bytes).
const FLOOR_BYTES_MAX: usize = 256;

fn parts(root: &str, d: DurableFloor) -> [Vec<u8>; 3] {
    [
        root.as_bytes().to_vec(),
        d.floor.to_be_bytes().to_vec(),
        d.reserved.to_be_bytes().to_vec(),
    ]
}

fn signature(secret: &Secret, root: &str, d: DurableFloor) -> [u8; 32] {
    let key = secret.derive("durable floor");
    let p = parts(root, d);
    crate::auth::hmac_parts(&key, &[&p[0], b"\0", &p[1], &p[2]])
}

/// The root's data for `d`.
#[must_use]
pub fn encode_floor(secret: Option<&Secret>, root: &str, d: DurableFloor) -> Vec<u8> {
    let line = format!("{PREFIX}{} {}", d.floor, d.reserved);
    match secret {
        Some(s) => {
            format!("{line}\n{SIGNATURE_PREFIX}{}", hex(&signature(s, root, d))).into_bytes()
        }
        None => line.into_bytes(),
    }
}

/// The state the root's data holds: zeros for a root without one (a new
/// chain, or one whose members never logged).
///
/// # Errors
///
/// Why the data is not a durable state: malformed, too long, or (with a
/// secret) not signed by a member.
pub fn decode_floor(
    secret: Option<&Secret>,
    root: &str,
    data: &[u8],
) -> Result<DurableFloor, &'static str> {
    if data.is_empty() {
        return Ok(DurableFloor::default());
    }
    if data.len() > FLOOR_BYTES_MAX {
        return Err("root data too long for a durable floor");
    }
    let text = std::str::from_utf8(data).map_err(|_| "root data is not UTF-8")?;
    let (first, sig) = match text.split_once('\n') {
        Some((f, s)) => (f, Some(s.trim())),
        None => (text.trim(), None),
    };
    let mut numbers = first
        .strip_prefix(PREFIX)
        .ok_or("root data is not a durable floor")?
        .split_whitespace()
        .map(str::parse::<u64>);
    let (Some(Ok(floor)), Some(Ok(reserved)), None) =
        (numbers.next(), numbers.next(), numbers.next())
    else {
        return Err("root data is not a durable floor");
    };
    let d = DurableFloor { floor, reserved };
    let Some(secret) = secret else {
        return Ok(d);
    };
    let sig = sig
        .and_then(|s| s.strip_prefix(SIGNATURE_PREFIX))
        .and_then(unhex)
        .ok_or("unsigned durable floor")?;
    let key = secret.derive("durable floor");
    let p = parts(root, d);
    let parts: [&[u8]; 4] = [&p[0], b"\0", &p[1], &p[2]];
    if Secret::new(key.to_vec()).verify(&parts, &sig) {
        Ok(d)
    } else {
        Err("durable floor with a bad signature")
    }
}

/// Reads the floor and the root's data version.
pub(super) async fn read_floor(
    client: &zk::Client,
    cfg: &CoordConfig,
) -> Result<Result<(DurableFloor, i32), &'static str>, zk::Error> {
    let (data, stat) = client.get_data(&cfg.root).await?;
    Ok(decode_floor(cfg.real_secret(), &cfg.root, &data).map(|d| (d, stat.version)))
}

/// Raises the floor and the reserved ids to at least `want` (never lowers
/// either); returns the state now.
pub(super) async fn publish_floor(
    client: &zk::Client,
    cfg: &CoordConfig,
    want: DurableFloor,
) -> Result<DurableFloor, String> {
    loop {
        let (now, version) = match read_floor(client, cfg).await {
            Ok(Ok(v)) => v,
            Ok(Err(why)) => return Err(why.to_string()),
            Err(e) => return Err(e.to_string()),
        };
        let new = now.max(want);
        if new == now {
            return Ok(now);
        }
        let data = encode_floor(cfg.real_secret(), &cfg.root, new);
        match client.set_data(&cfg.root, &data, Some(version)).await {
            Ok(_) => return Ok(new),
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
        let d = DurableFloor {
            floor: 42,
            reserved: 4200,
        };
        let data = encode_floor(Some(&secret), "/chain", d);
        assert_eq!(decode_floor(Some(&secret), "/chain", &data), Ok(d));
        assert!(decode_floor(Some(&secret), "/other", &data).is_err());
        assert!(decode_floor(Some(&secret), "/chain", b"durable 99 99").is_err());
        let forged = String::from_utf8(data).unwrap().replace("4200", "9900");
        assert!(decode_floor(Some(&secret), "/chain", forged.as_bytes()).is_err());
        let seven = DurableFloor {
            floor: 7,
            reserved: 8,
        };
        assert_eq!(decode_floor(None, "/chain", b"durable 7 8"), Ok(seven));
        assert_eq!(
            decode_floor(None, "/chain", b""),
            Ok(DurableFloor::default())
        );
        assert!(decode_floor(None, "/chain", b"durable 7").is_err());
        assert!(decode_floor(None, "/chain", b"durable 7 8 9").is_err());
        assert!(decode_floor(None, "/chain", b"durable x 1").is_err());
        assert!(decode_floor(None, "/chain", &[b'7'; 300]).is_err());
    }
}
