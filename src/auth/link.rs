//! The MAC on every frame of an authenticated peer link.
//!
//! After the handshake each side holds a key per direction. A frame's
//! payload is then its body followed by a [`TAG_BYTES`]-byte tag: the first
//! bytes of HMAC-SHA256(direction key, u64 counter || opcode || u16 flags ||
//! u64 request_id || body). The counter is the frame's position on the link
//! in that direction (0, 1, 2, …), never sent, so a replayed, reordered,
//! dropped or injected frame fails the check of the frame it displaces.

use super::HmacSha256;
use crate::wire::Frame;
use hmac::Mac;

/// Bytes of MAC appended to each frame's body: 128 bits, as in TLS's
/// truncated-HMAC and QUIC's AEAD tags.
pub const TAG_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("frame of {len} payload bytes is too short to carry a MAC")]
    Short { len: usize },
    #[error("MAC mismatch on peer frame {counter} (forged, altered, replayed or out of order)")]
    Mismatch { counter: u64 },
}

/// Both directions' keys of one link and their frame counters.
#[derive(Clone)]
pub struct LinkMac {
    send: HmacSha256,
    recv: HmacSha256,
    sent: u64,
    received: u64,
}

impl std::fmt::Debug for LinkMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkMac(sent {}, received {})", self.sent, self.received)
    }
}

impl LinkMac {
    pub(crate) fn new(send_key: &[u8; 32], recv_key: &[u8; 32]) -> LinkMac {
        LinkMac {
            send: super::new_mac(send_key),
            recv: super::new_mac(recv_key),
            sent: 0,
            received: 0,
        }
    }

    /// The tag for the next frame sent; advances the send counter.
    pub fn seal(
        &mut self,
        opcode: u8,
        flags: u16,
        request_id: u64,
        body: &[u8],
    ) -> [u8; TAG_BYTES] {
        let full = digest(
            self.send.clone(),
            self.sent,
            opcode,
            flags,
            request_id,
            body,
        );
        self.sent += 1;
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// Checks and strips the tag of the next frame received; advances the
    /// receive counter only if it matches.
    ///
    /// # Errors
    ///
    /// [`MacError`] when the frame is too short to carry a tag, or its tag is
    /// not the one the next frame on this link must carry (forged, altered,
    /// replayed or reordered).
    pub fn open(&mut self, frame: &mut Frame) -> Result<(), MacError> {
        let len = frame.payload.len();
        let Some(body_len) = len.checked_sub(TAG_BYTES) else {
            return Err(MacError::Short { len });
        };
        let mut m = self.recv.clone();
        feed(
            &mut m,
            self.received,
            frame.opcode,
            frame.flags,
            frame.request_id,
            &frame.payload[..body_len],
        );
        if m.verify_truncated_left(&frame.payload[body_len..]).is_err() {
            return Err(MacError::Mismatch {
                counter: self.received,
            });
        }
        self.received += 1;
        frame.payload.truncate(body_len);
        Ok(())
    }
}

fn feed(m: &mut HmacSha256, counter: u64, opcode: u8, flags: u16, request_id: u64, body: &[u8]) {
    m.update(&counter.to_be_bytes());
    m.update(&[opcode]);
    m.update(&flags.to_be_bytes());
    m.update(&request_id.to_be_bytes());
    m.update(body);
}

fn digest(
    mut m: HmacSha256,
    counter: u64,
    opcode: u8,
    flags: u16,
    request_id: u64,
    body: &[u8],
) -> [u8; 32] {
    feed(&mut m, counter, opcode, flags, request_id, body);
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (LinkMac, LinkMac) {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        (LinkMac::new(&a, &b), LinkMac::new(&b, &a))
    }

    fn sealed(m: &mut LinkMac, body: &[u8]) -> Frame {
        let mut payload = body.to_vec();
        payload.extend_from_slice(&m.seal(0x40, 0, 0, body));
        Frame {
            opcode: 0x40,
            flags: 0,
            request_id: 0,
            payload,
        }
    }

    #[test]
    fn frames_open_in_order_and_lose_their_tag() {
        let (mut down, mut up) = pair();
        for body in [&b"one"[..], b"", b"three"] {
            let mut f = sealed(&mut down, body);
            up.open(&mut f).unwrap();
            assert_eq!(f.payload, body);
        }
    }

    #[test]
    fn replayed_altered_reordered_and_reflected_frames_fail() {
        let (mut down, mut up) = pair();
        let first = sealed(&mut down, b"a");
        let second = sealed(&mut down, b"b");
        // Out of order: the second frame where the first is expected.
        assert!(up.open(&mut second.clone()).is_err());
        up.open(&mut first.clone()).unwrap();
        // Replay of the first.
        assert!(up.open(&mut first.clone()).is_err());
        // Altered body, opcode or request id.
        let mut f = second.clone();
        f.payload[0] ^= 1;
        assert!(up.open(&mut f).is_err());
        let mut f = second.clone();
        f.opcode = 0x41;
        assert!(up.open(&mut f).is_err());
        let mut f = second.clone();
        f.request_id = 9;
        assert!(up.open(&mut f).is_err());
        // Reflected back to its sender (other direction's key).
        let mut f = second.clone();
        assert!(down.open(&mut f).is_err());
        // A failed check does not advance the counter.
        up.open(&mut second.clone()).unwrap();
        // Too short to hold a tag.
        let mut f = Frame {
            opcode: 0x41,
            flags: 0,
            request_id: 0,
            payload: vec![0; 3],
        };
        assert_eq!(up.open(&mut f), Err(MacError::Short { len: 3 }));
    }
}
