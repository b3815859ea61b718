//! The smallest RESP (Redis) client the benchmark needs: SET and GET,
//! pipelined, over one blocking connection. Kept next to our own client so
//! both sides of a comparison go through the same generator code.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

pub struct Resp {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    out: Vec<u8>,
}

impl Resp {
    /// Opens a RESP connection to `addr`.
    ///
    /// # Errors
    ///
    /// Any I/O error connecting.
    pub fn connect(addr: &str) -> io::Result<Resp> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Resp {
            reader: BufReader::with_capacity(64 * 1024, s.try_clone()?),
            writer: s,
            out: Vec::new(),
        })
    }

    fn bulk(&mut self, b: &[u8]) {
        self.out
            .extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
        self.out.extend_from_slice(b);
        self.out.extend_from_slice(b"\r\n");
    }

    pub fn queue_set(&mut self, key: &[u8], value: &[u8]) {
        self.out.extend_from_slice(b"*3\r\n");
        self.bulk(b"SET");
        self.bulk(key);
        self.bulk(value);
    }

    /// One MSET of every pair.
    pub fn queue_mset<'a>(&mut self, pairs: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>) {
        self.out
            .extend_from_slice(format!("*{}\r\n", 1 + 2 * pairs.len()).as_bytes());
        self.bulk(b"MSET");
        for (key, value) in pairs {
            self.bulk(key);
            self.bulk(value);
        }
    }

    pub fn queue_get(&mut self, key: &[u8]) {
        self.out.extend_from_slice(b"*2\r\n");
        self.bulk(b"GET");
        self.bulk(key);
    }

    /// Sends everything queued and reads `n` replies; errors on `-ERR`.
    ///
    /// # Errors
    ///
    /// Any I/O error, or a reply that cannot be parsed.
    pub fn flush_and_read(&mut self, n: usize) -> io::Result<()> {
        self.writer.write_all(&self.out)?;
        self.out.clear();
        let mut line = Vec::new();
        for _ in 0..n {
            line.clear();
            self.reader.read_until(b'\n', &mut line)?;
            match line.first() {
                Some(b'+') | Some(b':') => {}
                Some(b'$') => {
                    let len: i64 = std::str::from_utf8(&line[1..])
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .ok_or_else(|| {
                            io::Error::new(io::ErrorKind::InvalidData, "bad bulk length")
                        })?;
                    // Skipped, not buffered: the length is the server's
                    // word, and no allocation should follow it.
                    if let Ok(len) = u64::try_from(len) {
                        let want = len.saturating_add(2);
                        let mut body = (&mut self.reader).take(want);
                        if io::copy(&mut body, &mut io::sink())? < want {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                }
                _ => {
                    let text = String::from_utf8_lossy(&line).to_string();
                    return Err(io::Error::other(format!("redis said: {}", text.trim())));
                }
            }
        }
        Ok(())
    }
}
