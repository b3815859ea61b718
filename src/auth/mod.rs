//! Peer authentication: who may join a chain, and proof that every
//! replication frame came from that member unaltered.
//!
//! Members share a **cluster secret**. A predecessor opening a link and the
//! successor it dials each prove knowledge of it in a challenge-response
//! handshake bound to both node names, the chain root and a fresh nonce from
//! each side ([`handshake`]); both then derive one key per direction and
//! every later frame on the link carries a truncated HMAC-SHA256 tag over
//! its header fields, its body and a per-direction frame counter
//! ([`LinkMac`]). So a process without the secret can neither become a
//! predecessor or successor, nor inject, alter, replay, reorder or drop
//! frames on a link without the receiver noticing.
//!
//! Why HMAC and not TLS: peer traffic is on the replication hot path and the
//! whole server is one `poll` loop; a MAC costs one SHA-256 pass per frame
//! and no extra buffering, while TLS would add record framing, a second
//! state machine per connection and certificates to provision. What HMAC
//! does not give is confidentiality: replicated values cross the network in
//! clear, as they do on client links (see spec §10).
//!
//! Everything here is pure computation (no sockets, no clock); nonces are
//! passed in so tests and the simulation stay deterministic.

pub mod handshake;
mod link;
pub mod users;

pub use handshake::{Initiator, PeerChallenge, PeerHello, Responder};
pub use link::{LinkMac, MacError, TAG_BYTES};
pub use users::{password_hash, Users};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;

pub type HmacSha256 = Hmac<Sha256>;

/// Bytes in a handshake nonce and in a handshake proof (HMAC-SHA256).
pub const NONCE_BYTES: usize = 32;
pub const PROOF_BYTES: usize = 32;
/// Shortest cluster secret accepted from a file: 128 bits.
pub const SECRET_BYTES_MIN: usize = 16;
/// Longest cluster secret file read (keeps a wrong path from reading a disk).
pub const SECRET_BYTES_MAX: usize = 4096;

/// The cluster secret. `insecure()` is the empty secret of
/// `--insecure-peers`: the handshake still runs, but anyone can complete it.
#[derive(Clone)]
pub struct Secret {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.bytes.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read cluster secret {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cluster secret {path} has {len} bytes; it needs {SECRET_BYTES_MIN}..={SECRET_BYTES_MAX} (e.g. `head -c 32 /dev/urandom | base64 > {path}`)")]
    Length { path: String, len: usize },
}

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret {
            bytes: bytes.into(),
        }
    }

    /// The empty secret: authentication that proves nothing.
    #[must_use]
    pub fn insecure() -> Secret {
        Secret { bytes: Vec::new() }
    }

    #[must_use]
    pub fn is_insecure(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Reads a secret file; surrounding whitespace (a trailing newline from
    /// an editor or `base64`) is not part of the secret.
    ///
    /// # Errors
    ///
    /// [`SecretError`] when the file cannot be read or holds too short a secret.
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let shown = path.display().to_string();
        let raw = std::fs::read(path).map_err(|source| SecretError::Read {
            path: shown.clone(),
            source,
        })?;
        let trimmed = raw.trim_ascii();
        if !(SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&trimmed.len()) {
            return Err(SecretError::Length {
                path: shown,
                len: trimmed.len(),
            });
        }
        Ok(Secret::new(trimmed.to_vec()))
    }

    /// HMAC-SHA256 keyed by the secret over `parts` concatenated.
    #[must_use]
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        hmac_parts(&self.bytes, parts)
    }

    /// A value derived from the secret for one purpose (`label`), so the
    /// secret itself never leaves this module (ZooKeeper's digest password,
    /// znode signatures).
    #[must_use]
    pub fn derive(&self, label: &str) -> [u8; 32] {
        self.mac(&[b"chaintable-derive-v1\0", label.as_bytes()])
    }

    /// Constant-time check of `tag` against HMAC(secret, parts).
    #[must_use]
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut m = new_mac(&self.bytes);
        for p in parts {
            m.update(p);
        }
        m.verify_slice(tag).is_ok()
    }
}

pub(crate) fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first), so this
    // cannot fail; the fallback is never taken.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| HmacSha256::new(&Default::default()))
}

pub(crate) fn hmac_parts(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = new_mac(key);
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// A fresh random nonce from the operating system.
#[must_use]
pub fn random_nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    if getrandom::getrandom(&mut n).is_err() {
        // No OS randomness is not something to limp on: a predictable
        // nonce would let recorded handshakes be replayed.
        panic!("the operating system has no random numbers (getrandom failed)");
    }
    n
}

/// Lowercase hex, for signatures stored as text.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lowercase or uppercase hex; `None` on anything else.
#[must_use]
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_trimmed_and_length_checked() {
        let dir = std::env::temp_dir().join(format!("ct-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, b"0123456789abcdef0123\n").unwrap();
        let s = Secret::from_file(&good).unwrap();
        assert_eq!(
            s.mac(&[b"x"]),
            Secret::new(b"0123456789abcdef0123".to_vec()).mac(&[b"x"])
        );
        let short = dir.join("short");
        std::fs::write(&short, b"tooshort\n").unwrap();
        let err = Secret::from_file(&short).unwrap_err().to_string();
        assert!(err.contains("8 bytes"), "{err}");
        assert!(Secret::from_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é1"), None);
    }

    #[test]
    fn verify_accepts_only_the_exact_tag() {
        let s = Secret::new(b"sixteen byte key".to_vec());
        let tag = s.mac(&[b"a", b"b"]);
        assert!(s.verify(&[b"ab"], &tag), "parts are concatenated");
        let mut bad = tag;
        bad[31] ^= 1;
        assert!(!s.verify(&[b"ab"], &bad));
        assert!(!Secret::insecure().verify(&[b"ab"], &tag));
    }
}
