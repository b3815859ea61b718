//! Frames: a fixed 24-byte header and a payload, protected by CRC-32.
//!
//! ```text
//! offset size field
//!      0    2 magic        0x43 0x54 ("CT")
//!      2    1 version      1
//!      3    1 opcode
//!      4    2 flags        bit 0 = ASYNC (PUT/DEL only); others reserved
//!      6    2 reserved     0 on send, ignored on receive
//!      8    8 request_id   echoed by the reply
//!     16    4 payload_len  bytes after the header
//!     20    4 crc32        CRC-32 (IEEE) of bytes 0..20 then the payload
//! ```
//!
//! Decoding is check-then-parse: [`decode_frame`] reports `Ok(None)` while a
//! frame is incomplete, and rejects an oversized `payload_len` from the
//! header alone, before the payload is buffered.

use byteorder::{BigEndian, ByteOrder, WriteBytesExt};
use thiserror::Error;

pub const MAGIC: u16 = 0x4354;
pub const PROTOCOL_VERSION: u8 = 1;
pub const HEADER_BYTES: usize = 24;
/// Default and largest payload a frame may carry unless both sides agree
/// otherwise (servers announce theirs in HELLO_OK).
pub const PAYLOAD_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;
/// Header flag: a PUT or DEL answered as soon as it is queued.
pub const FLAG_ASYNC: u16 = 0x0001;
/// Header flag: a write that a member that is not the head must redirect
/// (NOT_HEAD), not forward to the head (spec §5.6).
pub const FLAG_NO_FORWARD: u16 = 0x0002;
/// Header flag: a GET whose payload starts with `u64 min_seq`, the floor
/// the answering member's history must reach (spec §5.7).
pub const FLAG_AT_LEAST: u16 = 0x0004;

/// A whole frame, CRC checked, payload not yet interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub flags: u16,
    pub request_id: u64,
    pub payload: Vec<u8>,
}

/// Errors that break the byte stream: after one, the receiver cannot find
/// the next frame boundary, so it answers once and closes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("bad magic 0x{0:04x} (expected 0x4354)")]
    BadMagic(u16),
    #[error("unsupported protocol version {0} (this side speaks 1)")]
    UnsupportedVersion(u8),
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("CRC mismatch: header says 0x{expected:08x}, bytes give 0x{actual:08x}")]
    BadCrc { expected: u32, actual: u32 },
}

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_frame(out, self.opcode, self.flags, self.request_id, |o| {
            o.extend_from_slice(&self.payload)
        });
    }

    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.payload.len());
        self.encode(&mut out);
        out
    }
}

/// Appends one frame to `out`, with the payload written in place by
/// `payload` (no intermediate buffer): the header is reserved first, then
/// its length and CRC are filled in.
pub fn encode_frame(
    out: &mut Vec<u8>,
    opcode: u8,
    flags: u16,
    request_id: u64,
    payload: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    let _ = out.write_u16::<BigEndian>(MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(opcode);
    let _ = out.write_u16::<BigEndian>(flags);
    let _ = out.write_u16::<BigEndian>(0);
    let _ = out.write_u64::<BigEndian>(request_id);
    out.extend_from_slice(&[0; 8]); // payload_len and crc32, filled below
    payload(out);
    let len = out.len() - start - HEADER_BYTES;
    // Every payload we build is under the frame limit (a u32 on the wire).
    #[allow(clippy::cast_possible_truncation)]
    BigEndian::write_u32(&mut out[start + 16..start + 20], len as u32);
    let (header, rest) = out[start..].split_at(20);
    let crc = crc_of(header, &rest[4..]);
    BigEndian::write_u32(&mut out[start + 20..start + 24], crc);
}

fn crc_of(header_20: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header_20);
    h.update(payload);
    h.finalize()
}

/// Decodes the first frame of `buf`. Returns the frame and the bytes it
/// used, `Ok(None)` if `buf` holds only part of a frame, or the error that
/// makes the stream unusable. Never reads past `buf`.
///
/// # Errors
///
/// [`FrameError`] for a bad magic or version, a payload over the limit, or
/// a CRC mismatch; incomplete input is `Ok(None)`, not an error.
pub fn decode_frame(
    buf: &[u8],
    payload_bytes_max: usize,
) -> Result<Option<(Frame, usize)>, FrameError> {
    // Magic and version are checked as soon as they arrive so that a peer
    // speaking another protocol is told at once, not after 24 bytes.
    if buf.len() >= 2 {
        let magic = BigEndian::read_u16(&buf[0..2]);
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
    }
    if buf.len() >= 3 && buf[2] != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(buf[2]));
    }
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    let len = BigEndian::read_u32(&buf[16..20]) as usize;
    if len > payload_bytes_max {
        return Err(FrameError::TooLarge {
            len,
            max: payload_bytes_max,
        });
    }
    let total = HEADER_BYTES + len;
    if buf.len() < total {
        return Ok(None);
    }
    let payload = &buf[HEADER_BYTES..total];
    let expected = BigEndian::read_u32(&buf[20..24]);
    let actual = crc_of(&buf[0..20], payload);
    if expected != actual {
        return Err(FrameError::BadCrc { expected, actual });
    }
    let frame = Frame {
        opcode: buf[3],
        flags: BigEndian::read_u16(&buf[4..6]),
        request_id: BigEndian::read_u64(&buf[8..16]),
        payload: payload.to_vec(),
    };
    Ok(Some((frame, total)))
}

/// Incremental decoder for non-blocking sockets: feed it whatever arrived,
/// take whole frames out. It never holds more than one maximum frame, so a
/// peer cannot make it grow: [`FrameDecoder::feed`] takes only what fits.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    payload_bytes_max: usize,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    #[must_use]
    pub fn new(payload_bytes_max: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            payload_bytes_max,
            failed: None,
        }
    }

    /// Most bytes this decoder ever holds: one header plus one maximum payload.
    #[must_use]
    pub fn bytes_max(&self) -> usize {
        HEADER_BYTES + self.payload_bytes_max
    }

    /// Bytes held that do not yet form a whole frame.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Memory held by the buffer.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Changes the largest payload accepted (a server accepts small frames
    /// before the handshake and full-size ones after). Bytes already
    /// buffered beyond the new bound are left to be judged by the header.
    pub fn set_payload_bytes_max(&mut self, payload_bytes_max: usize) {
        self.payload_bytes_max = payload_bytes_max;
    }

    /// Frees a buffer larger than `keep_bytes` when it holds nothing.
    pub fn shrink_if_empty(&mut self, keep_bytes: usize) {
        if self.buffered() == 0 && self.buf.capacity() > keep_bytes {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// Whether a whole frame (or a stream error) is buffered: taking it out
    /// needs no more bytes from the socket.
    #[must_use]
    pub fn frame_ready(&self) -> bool {
        let buf = &self.buf[self.start..];
        if self.failed.is_some() || buf.len() >= 2 && buf[..2] != MAGIC.to_be_bytes() {
            return true;
        }
        if buf.len() < HEADER_BYTES {
            return buf.len() >= 3 && buf[2] != PROTOCOL_VERSION;
        }
        let len = BigEndian::read_u32(&buf[16..20]) as usize;
        len > self.payload_bytes_max || buf.len() >= HEADER_BYTES + len
    }

    /// Copies in as much of `bytes` as fits and returns how many it took.
    /// Taking fewer than offered is normal: take frames out, then feed the rest.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        let room = self.bytes_max().saturating_sub(self.buffered());
        let n = room.min(bytes.len());
        if self.start > 0 && self.buf.len() + n > self.bytes_max() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(&bytes[..n]);
        n
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or the
    /// stream error (which then repeats on every later call).
    ///
    /// # Errors
    ///
    /// As [`decode_frame`]; the connection is then unusable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match decode_frame(&self.buf[self.start..], self.payload_bytes_max) {
            Ok(Some((frame, used))) => {
                self.start += used;
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(err) => {
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Frame {
        Frame {
            opcode: 3,
            flags: 0,
            request_id: 42,
            payload: vec![7; len],
        }
    }

    #[test]
    fn round_trips_and_reports_used_bytes() {
        let f = sample(5);
        let mut bytes = f.to_bytes();
        bytes.extend_from_slice(&[0x43]);
        let (back, used) = decode_frame(&bytes, 100).unwrap().unwrap();
        assert_eq!(back, f);
        assert_eq!(used, HEADER_BYTES + 5);
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let bytes = sample(9).to_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(decode_frame(&bytes[..cut], 100), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_length_is_rejected_from_the_header_alone() {
        let bytes = sample(101).to_bytes();
        assert_eq!(
            decode_frame(&bytes[..HEADER_BYTES], 100),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let bytes = sample(4).to_bytes();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let r = decode_frame(&b, 100);
                assert!(
                    !matches!(&r, Ok(Some((f, _))) if *f == sample(4)),
                    "flip {i}:{bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn decoder_yields_frames_from_byte_at_a_time_input() {
        let frames: Vec<Frame> = (0..3).map(|n| sample(n * 10)).collect();
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.to_bytes()).collect();
        let mut d = FrameDecoder::new(100);
        let mut out = vec![];
        for b in &stream {
            assert_eq!(d.feed(std::slice::from_ref(b)), 1);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn decoder_never_holds_more_than_one_maximum_frame() {
        let big = sample(100).to_bytes();
        let stream = [big.clone(), big.clone(), big].concat();
        let mut d = FrameDecoder::new(100);
        let mut rest: &[u8] = &stream;
        let mut frames = 0;
        while !rest.is_empty() {
            let n = d.feed(rest);
            rest = &rest[n..];
            assert!(d.buffered() <= d.bytes_max());
            while d.next_frame().unwrap().is_some() {
                frames += 1;
            }
        }
        assert_eq!(frames, 3);
    }

    #[test]
    fn decoder_errors_are_sticky() {
        let mut d = FrameDecoder::new(100);
        d.feed(b"GET / HTTP/1.1\r\n");
        assert_eq!(d.next_frame(), Err(FrameError::BadMagic(0x4745)));
        assert_eq!(d.next_frame(), Err(FrameError::BadMagic(0x4745)));
    }
}
