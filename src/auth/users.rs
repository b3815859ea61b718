//! Client users: who may talk to a server, and whether they may write
//! (`--users-file`, like Redis ACL users with a password hash).
//!
//! One user per line: `<name> <readonly|readwrite> sha256:<hex>`, where the
//! hex is SHA-256 of the password (`printf %s "$PASSWORD" | sha256sum`).
//! Blank lines and lines starting with `#` are ignored. The file holds no
//! password, only hashes; passwords cross the network in AUTH, so use
//! client TLS where the network is not trusted (spec §10).

use crate::wire::Access;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// Most users a file may define (a bound on what a bad file can cost).
pub const USERS_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read users file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("users file {path}, line {line}: {why} (expected `<name> <readonly|readwrite> sha256:<64 hex digits>`)")]
    Syntax {
        path: String,
        line: usize,
        why: &'static str,
    },
}

/// The users a server accepts.
#[derive(Clone, Default)]
pub struct Users {
    by_name: HashMap<String, (Access, [u8; 32])>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Users({} defined)", self.by_name.len())
    }
}

impl Users {
    /// Reads and parses a users file (`--users-file`).
    ///
    /// # Errors
    ///
    /// [`UsersError`] when the file cannot be read or a line is malformed (the
    /// error names the line).
    pub fn from_file(path: &Path) -> Result<Users, UsersError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: shown.clone(),
            source,
        })?;
        Users::parse(&text).map_err(|(line, why)| UsersError::Syntax {
            path: shown,
            line,
            why,
        })
    }

    /// Parses the file's text; on error, the line number and what is wrong.
    ///
    /// # Errors
    ///
    /// The 1-based number of the first malformed line and what is wrong with it.
    pub fn parse(text: &str) -> Result<Users, (usize, &'static str)> {
        let mut users = Users::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, access, hash] = fields[..] else {
                return Err((i + 1, "three fields needed"));
            };
            let access = match access {
                "readonly" => Access::ReadOnly,
                "readwrite" => Access::ReadWrite,
                _ => return Err((i + 1, "access must be readonly or readwrite")),
            };
            let hash = hash
                .strip_prefix("sha256:")
                .and_then(super::unhex)
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or((i + 1, "bad password hash"))?;
            if name.len() > crate::serialize::TEXT_BYTES_MAX {
                return Err((i + 1, "name too long"));
            }
            if users
                .by_name
                .insert(name.to_string(), (access, hash))
                .is_some()
            {
                return Err((i + 1, "user defined twice"));
            }
            if users.by_name.len() > USERS_MAX {
                return Err((i + 1, "too many users"));
            }
        }
        Ok(users)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The user's access if the password is right. The comparison takes the
    /// same time however many bytes match; an unknown user costs the same
    /// hash as a known one.
    #[must_use]
    pub fn check(&self, user: &str, password: &str) -> Option<Access> {
        let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let (access, expected) = self
            .by_name
            .get(user)
            .copied()
            .unwrap_or((Access::ReadOnly, [0; 32]));
        let diff = given
            .iter()
            .zip(expected.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        (diff == 0 && self.by_name.contains_key(user)).then_some(access)
    }
}

/// The users-file hash of a password: `sha256:<hex>`.
#[must_use]
pub fn password_hash(password: &str) -> String {
    format!(
        "sha256:{}",
        super::hex(&Sha256::digest(password.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_checked_by_name_password_and_access() {
        let text = format!(
            "# users\n\nalice readwrite {}\nbob readonly {}\n",
            password_hash("wonderland"),
            password_hash("builder")
        );
        let u = Users::parse(&text).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u.check("alice", "wonderland"), Some(Access::ReadWrite));
        assert_eq!(u.check("bob", "builder"), Some(Access::ReadOnly));
        assert_eq!(u.check("alice", "builder"), None);
        assert_eq!(u.check("mallory", "wonderland"), None);
        assert_eq!(u.check("mallory", ""), None);
    }

    #[test]
    fn malformed_files_name_the_line() {
        assert_eq!(Users::parse("a readwrite").unwrap_err().0, 1);
        assert_eq!(
            Users::parse("\na admin sha256:00").unwrap_err(),
            (2, "access must be readonly or readwrite")
        );
        assert_eq!(
            Users::parse("a readonly sha256:zz").unwrap_err().1,
            "bad password hash"
        );
        let h = password_hash("x");
        assert_eq!(
            Users::parse(&format!("a readonly {h}\na readonly {h}"))
                .unwrap_err()
                .1,
            "user defined twice"
        );
    }
}
