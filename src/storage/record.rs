//! Records: the unit of every file in the data directory (spec/STORAGE.md
//! §2). A record is a `u32` payload length, a `u32` CRC-32 (IEEE) of the
//! payload, then the payload, whose first byte is the record kind.
//!
//! Reading is streaming and bounded: a length is checked against
//! [`RECORD_PAYLOAD_BYTES_MAX`] before anything is allocated, so a damaged
//! length can never make recovery allocate more than one record's worth.

use std::fs::File;
use std::io::{self, BufReader, Read};

/// Bytes before a record's payload: length and CRC.
pub const RECORD_HEADER_BYTES: usize = 8;

/// Largest record payload: a PUT of the largest key and value plus the
/// update's fixed fields, or a chunk of snapshot entries (which is cut at
/// [`super::snapshot::SNAPSHOT_RECORD_BYTES`]), with room to spare.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = crate::serialize::VALUE_BYTES_MAX + 64 * 1024;

/// Appends one record of `kind` whose payload (after the kind byte) is
/// written by `body`.
pub fn put_record(out: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = begin_record(out, kind);
    body(out);
    end_record(out, start);
}

/// Starts a record whose payload the caller appends; returns where it
/// starts, for [`end_record`].
pub fn begin_record(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    out.push(kind);
    start
}

/// Fills in the length and CRC of the record begun at `start`.
pub fn end_record(out: &mut [u8], start: usize) {
    let payload = &out[start + RECORD_HEADER_BYTES..];
    let crc = crc32fast::hash(payload);
    #[allow(clippy::cast_possible_truncation)] // payloads are capped far below 4 GiB
    let len = payload.len() as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

/// Why the record at `offset` could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// File offset of the record's first header byte.
    pub offset: u64,
    /// What was wrong with it.
    pub why: String,
    /// Whether the damage can only be a write cut short by a crash: the
    /// record runs past the end of the file, or everything from it to the
    /// end is zero bytes (a file extended before its data reached disk),
    /// or it is the last record and its CRC fails. Anything else is
    /// corruption in the middle of a file.
    pub torn_tail: bool,
}

/// Reads records one after another from a file.
pub struct RecordReader {
    input: BufReader<File>,
    /// Offset of the next byte to read.
    offset: u64,
    file_len: u64,
    payload: Vec<u8>,
}

impl RecordReader {
    /// Reads `file` (of `file_len` bytes) from `offset`, where the caller
    /// has positioned it.
    #[must_use]
    pub fn new(file: File, offset: u64, file_len: u64) -> RecordReader {
        RecordReader {
            input: BufReader::with_capacity(1 << 20, file),
            offset,
            file_len,
            payload: Vec::new(),
        }
    }

    /// Offset of the next record (the end of the last good one).
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record's payload (kind byte first); `Ok(None)` at a clean
    /// end of file.
    ///
    /// # Errors
    ///
    /// `Err(Ok(bad))` for a record that does not check out, `Err(Err(io))`
    /// when the file cannot be read.
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, Result<BadRecord, io::Error>> {
        let left = self.file_len - self.offset;
        if left == 0 {
            return Ok(None);
        }
        let at = self.offset;
        if left < RECORD_HEADER_BYTES as u64 {
            return Err(Ok(self.bad(at, "a record header cut short", true)));
        }
        let mut header = [0u8; RECORD_HEADER_BYTES];
        self.input.read_exact(&mut header).map_err(Err)?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let end = at + RECORD_HEADER_BYTES as u64 + len as u64;
        if len == 0 || len > RECORD_PAYLOAD_BYTES_MAX {
            let zeros = header == [0; RECORD_HEADER_BYTES] && self.rest_is_zero()?;
            let why = format!("record length {len} (must be 1..={RECORD_PAYLOAD_BYTES_MAX})");
            return Err(Ok(self.bad(at, &why, zeros)));
        }
        if end > self.file_len {
            let why = format!("a record of {len} bytes runs past the end of the file");
            return Err(Ok(self.bad(at, &why, true)));
        }
        self.payload.resize(len, 0);
        self.input.read_exact(&mut self.payload).map_err(Err)?;
        if crc32fast::hash(&self.payload) != crc {
            let last = end == self.file_len;
            return Err(Ok(self.bad(at, "record CRC mismatch", last)));
        }
        self.offset = end;
        Ok(Some(&self.payload))
    }

    fn bad(&self, offset: u64, why: &str, torn_tail: bool) -> BadRecord {
        BadRecord {
            offset,
            why: why.to_string(),
            torn_tail,
        }
    }

    /// Whether every byte after the current header is zero.
    fn rest_is_zero(&mut self) -> Result<bool, Result<BadRecord, io::Error>> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = self.input.read(&mut buf).map_err(Err)?;
            if n == 0 {
                return Ok(true);
            }
            if buf[..n].iter().any(|b| *b != 0) {
                return Ok(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    fn reader_over(bytes: &[u8]) -> RecordReader {
        let mut f = tempfile();
        f.write_all(bytes).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        RecordReader::new(f, 0, bytes.len() as u64)
    }

    fn tempfile() -> File {
        let dir = std::env::temp_dir();
        let path = dir.join(format!(
            "chaintable-record-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn two_records() -> Vec<u8> {
        let mut out = Vec::new();
        put_record(&mut out, 1, |o| o.extend_from_slice(b"first"));
        put_record(&mut out, 2, |o| o.extend_from_slice(b"second"));
        out
    }

    #[test]
    fn records_round_trip() {
        let bytes = two_records();
        let mut r = reader_over(&bytes);
        assert_eq!(r.next_record().unwrap().unwrap(), b"\x01first");
        assert_eq!(r.next_record().unwrap().unwrap(), b"\x02second");
        assert_eq!(r.next_record().unwrap(), None);
        assert_eq!(r.offset(), bytes.len() as u64);
    }

    #[test]
    fn every_cut_of_the_last_record_is_a_torn_tail_at_its_start() {
        let bytes = two_records();
        let second = 8 + 6;
        for cut in second + 1..bytes.len() {
            let mut r = reader_over(&bytes[..cut]);
            assert!(r.next_record().unwrap().is_some());
            let bad = r.next_record().unwrap_err().unwrap();
            assert_eq!(bad.offset, second as u64, "cut at {cut}");
            assert!(bad.torn_tail, "cut at {cut}: {}", bad.why);
        }
    }

    #[test]
    fn a_flipped_byte_before_the_last_record_is_corruption() {
        let mut bytes = two_records();
        bytes[10] ^= 0x40;
        let mut r = reader_over(&bytes);
        let bad = r.next_record().unwrap_err().unwrap();
        assert_eq!(bad.offset, 0);
        assert!(!bad.torn_tail);
    }

    #[test]
    fn zeros_after_the_last_record_are_a_torn_tail_and_garbage_is_not() {
        let mut bytes = two_records();
        bytes.extend_from_slice(&[0; 100]);
        let mut r = reader_over(&bytes);
        r.next_record().unwrap();
        r.next_record().unwrap();
        assert!(r.next_record().unwrap_err().unwrap().torn_tail);

        let mut bytes = two_records();
        bytes.extend_from_slice(&[0xff; 100]);
        let mut r = reader_over(&bytes);
        r.next_record().unwrap();
        r.next_record().unwrap();
        assert!(!r.next_record().unwrap_err().unwrap().torn_tail);
    }
}
