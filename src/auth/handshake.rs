//! The peer handshake (spec §5.1), as two small state machines.
//!
//! ```text
//! predecessor (Initiator)                      successor (Responder)
//!   PEER_HELLO  from, to, root, nonce_p  --->
//!                                        <---  PEER_CHALLENGE nonce_s, proof_s
//!   checks proof_s
//!   PEER_PROOF  proof_p                  --->
//!                                              checks proof_p
//!                                        <---  HELLO_OK (first MACed frame)
//! ```
//!
//! Both proofs and both link keys are HMAC-SHA256 under the cluster secret
//! over one transcript, `"chaintable-peer-v1" || text from || text to ||
//! text root || nonce_p || nonce_s`, each with its own label. The successor
//! proves itself first, so a predecessor never sends state (a snapshot) to
//! a process that does not hold the secret; the predecessor proves itself
//! before the successor lets the link replace its current one.

use super::{LinkMac, Secret, NONCE_BYTES, PROOF_BYTES};
use crate::serialize::types::encode_text;

pub use crate::wire::{PeerChallenge, PeerHello};

const LABEL_SUCCESSOR: &[u8] = b"proof successor";
const LABEL_PREDECESSOR: &[u8] = b"proof predecessor";
const LABEL_KEY_DOWN: &[u8] = b"key down";
const LABEL_KEY_UP: &[u8] = b"key up";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the successor's proof is wrong: it does not hold this cluster's secret")]
    BadSuccessorProof,
    #[error("the predecessor's proof is wrong: it does not hold this cluster's secret")]
    BadPredecessorProof,
}

fn transcript(hello: &PeerHello, nonce_s: &[u8; NONCE_BYTES]) -> Vec<u8> {
    let mut t = b"chaintable-peer-v1".to_vec();
    encode_text(&mut t, &hello.from);
    encode_text(&mut t, &hello.to);
    encode_text(&mut t, &hello.root);
    t.extend_from_slice(&hello.nonce);
    t.extend_from_slice(nonce_s);
    t
}

fn keys(secret: &Secret, t: &[u8]) -> ([u8; 32], [u8; 32]) {
    (
        secret.mac(&[LABEL_KEY_DOWN, t]),
        secret.mac(&[LABEL_KEY_UP, t]),
    )
}

/// The predecessor's side: it dialled and speaks first.
#[derive(Debug, Clone)]
pub struct Initiator {
    secret: Secret,
    hello: PeerHello,
}

impl Initiator {
    /// Starts a handshake from member `from` to member `to` of chain `root`.
    #[must_use]
    pub fn new(
        secret: Secret,
        from: &str,
        to: &str,
        root: &str,
        nonce: [u8; NONCE_BYTES],
    ) -> (Initiator, PeerHello) {
        let hello = PeerHello {
            from: from.to_string(),
            to: to.to_string(),
            root: root.to_string(),
            nonce,
        };
        (
            Initiator {
                secret,
                hello: hello.clone(),
            },
            hello,
        )
    }

    /// Checks the successor's proof; on success returns our proof (for
    /// PEER_PROOF) and the link's MAC state (we send down, receive up).
    ///
    /// # Errors
    ///
    /// [`AuthError`] when the successor's proof does not check out: it does not
    /// hold the cluster secret, or it answers for other node names or another
    /// chain root.
    pub fn on_challenge(
        self,
        c: &PeerChallenge,
    ) -> Result<([u8; PROOF_BYTES], LinkMac), AuthError> {
        let t = transcript(&self.hello, &c.nonce);
        if !self.secret.verify(&[LABEL_SUCCESSOR, &t], &c.proof) {
            return Err(AuthError::BadSuccessorProof);
        }
        let proof = self.secret.mac(&[LABEL_PREDECESSOR, &t]);
        let (down, up) = keys(&self.secret, &t);
        Ok((proof, LinkMac::new(&down, &up)))
    }
}

/// The successor's side: it answers a PEER_HELLO it has already judged
/// plausible (addressed to it, from its predecessor, for its chain).
#[derive(Debug, Clone)]
pub struct Responder {
    secret: Secret,
    transcript: Vec<u8>,
}

impl Responder {
    #[must_use]
    pub fn new(
        secret: Secret,
        hello: &PeerHello,
        nonce: [u8; NONCE_BYTES],
    ) -> (Responder, PeerChallenge) {
        let t = transcript(hello, &nonce);
        let proof = secret.mac(&[LABEL_SUCCESSOR, &t]);
        (
            Responder {
                secret,
                transcript: t,
            },
            PeerChallenge { nonce, proof },
        )
    }

    /// Checks the predecessor's proof; on success returns the link's MAC
    /// state (we receive down, send up).
    ///
    /// # Errors
    ///
    /// [`AuthError`] when the dialler's proof does not check out (see
    /// [`Initiator::on_challenge`]).
    pub fn on_proof(self, proof: &[u8; PROOF_BYTES]) -> Result<LinkMac, AuthError> {
        if !self
            .secret
            .verify(&[LABEL_PREDECESSOR, &self.transcript], proof)
        {
            return Err(AuthError::BadPredecessorProof);
        }
        let (down, up) = keys(&self.secret, &self.transcript);
        Ok(LinkMac::new(&up, &down))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Frame;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec())
    }

    #[test]
    fn members_with_the_secret_agree_on_keys() {
        let s = secret("a cluster secret!");
        let (init, hello) = Initiator::new(s.clone(), "node1", "node2", "/chain", [1; 32]);
        let (resp, challenge) = Responder::new(s, &hello, [2; 32]);
        let (proof, mut down) = init.on_challenge(&challenge).unwrap();
        let mut up = resp.on_proof(&proof).unwrap();
        let tag = down.seal(0x40, 0, 0, b"x");
        let mut f = Frame {
            opcode: 0x40,
            flags: 0,
            request_id: 0,
            payload: [&b"x"[..], &tag].concat(),
        };
        up.open(&mut f).unwrap();
        let tag = up.seal(0x41, 0, 0, b"y");
        let mut f = Frame {
            opcode: 0x41,
            flags: 0,
            request_id: 0,
            payload: [&b"y"[..], &tag].concat(),
        };
        down.open(&mut f).unwrap();
    }

    #[test]
    fn a_fake_successor_is_caught_before_the_predecessor_proves_anything() {
        let (init, hello) = Initiator::new(secret("the real secret!!"), "n1", "n2", "/c", [1; 32]);
        let (_, challenge) = Responder::new(secret("a guessed secret!"), &hello, [2; 32]);
        assert_eq!(
            init.on_challenge(&challenge).unwrap_err(),
            AuthError::BadSuccessorProof
        );
    }

    #[test]
    fn a_fake_predecessor_or_a_replayed_proof_is_refused() {
        let real = secret("the real secret!!");
        let (_, hello) = Initiator::new(real.clone(), "n1", "n2", "/c", [1; 32]);
        let (resp, _) = Responder::new(real.clone(), &hello, [2; 32]);
        assert_eq!(
            resp.on_proof(&[0; 32]).unwrap_err(),
            AuthError::BadPredecessorProof
        );
        // A proof recorded from an earlier handshake (other nonce_s) fails.
        let (init, hello) = Initiator::new(real.clone(), "n1", "n2", "/c", [1; 32]);
        let (_, old_challenge) = Responder::new(real.clone(), &hello, [3; 32]);
        let (old_proof, _) = init.on_challenge(&old_challenge).unwrap();
        let (resp, _) = Responder::new(real, &hello, [4; 32]);
        assert!(resp.on_proof(&old_proof).is_err());
    }

    #[test]
    fn names_and_root_are_bound_into_the_proof() {
        let s = secret("the real secret!!");
        let (init, hello) = Initiator::new(s.clone(), "n1", "n2", "/c", [1; 32]);
        let mut other = hello.clone();
        other.to = "n3".into();
        let (_, challenge) = Responder::new(s, &other, [2; 32]);
        assert!(init.on_challenge(&challenge).is_err());
    }
}
