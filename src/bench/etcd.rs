//! A minimal etcd v3 client for the benchmark: put and range through
//! etcd's JSON gateway (HTTP/1.1, keep-alive), one request at a time.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

pub struct Etcd {
    host: String,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

/// Standard base64 (RFC 4648) with padding, as etcd's gateway expects.
#[must_use]
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = u32::from(c[0]) << 16
            | u32::from(*c.get(1).unwrap_or(&0)) << 8
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Etcd {
    /// Opens a connection to etcd's JSON gateway at `addr`.
    ///
    /// # Errors
    ///
    /// Any I/O error connecting.
    pub fn connect(addr: &str) -> io::Result<Etcd> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Etcd {
            host: addr.to_string(),
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    fn post(&mut self, path: &str, body: &str) -> io::Result<()> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.writer.write_all(req.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let ok = line.split_whitespace().nth(1) == Some("200");
        let mut len = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body)?;
        if !ok {
            return Err(io::Error::other(String::from_utf8_lossy(&body).to_string()));
        }
        Ok(())
    }

    /// One PUT through the gateway.
    ///
    /// # Errors
    ///
    /// Any I/O error, or a reply that is not a success.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            base64(key),
            base64(value)
        );
        self.post("/v3/kv/put", &body)
    }

    /// A linearizable read (etcd's default for range).
    ///
    /// # Errors
    ///
    /// Any I/O error, or a reply that is not a success.
    pub fn get(&mut self, key: &[u8]) -> io::Result<()> {
        let body = format!("{{\"key\":\"{}\"}}", base64(key));
        self.post("/v3/kv/range", &body)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc_4648_examples() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(raw.as_bytes()), enc);
        }
    }
}
