//! The `table-client` command language: parsing a line into a request and
//! rendering a reply for people. Kept apart from the binary so it is tested.

use crate::serialize::{Key, StatValue};
use crate::wire::BATCH_OPS_MAX;
use crate::wire::{BatchOp, Body, CasOk, OpState, Versioned, WriteMode, WriteOk, WriteOutcome};

pub const HELP: &str = "\
commands (alias):
  put (p) [-a] <key> <data>   store <data> (the rest of the line) under <key>;
                              -a: answer at once with an op id (async)
  get (g) <key>               show the value of <key>
  del (d) [-a] <key>          delete <key>
  cas <key> <version> <data>  store <data> under <key> only if its version is
                              <version> (0: only if absent)
  cdel <key> <version>        delete <key> only if its version is <version>
  mget <key>...               the values of several keys, read at once
  mput <key> <data>...        store several pairs as one write (all or
                              nothing; each <data> is one word)
  mdel <key>...               delete several keys as one write
  range <from> <to> [<n>]     up to <n> entries (default 100) with keys from
                              <from> up to (not including) <to>, in key
                              order; '-' for the start or the end
  size (s)                    number of entries
  getkeys (k)                 all keys
  gettable (t)                all entries
  stats (st)                  server statistics
  verify <op_id>              has write <op_id> been executed?
  watch [<prefix>] [from <seq>] [count <n>]
                              print every change under <prefix> (all keys
                              when none) after op <seq> (from now when none),
                              until <n> updates or Ctrl-C
  snapshot save <file>        save a consistent backup of the table (from the
                              tail) to <file>; table-server --restore <file>
                              (with --cluster-root: <file> is a directory
                              that gets one <chain>.backup per chain)
  help (h)                    this text
  quit (q)                    leave";

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Request(Body),
    /// `snapshot save FILE`: BACKUP into a file.
    SnapshotSave(std::path::PathBuf),
    /// `watch [PREFIX] [from SEQ] [count N]`.
    Watch {
        prefix: Vec<u8>,
        from_seq: u64,
        count: Option<u64>,
    },
    Help,
    Quit,
}

/// Parses one line. `Ok(None)` for a blank line; `Err` explains a usage error.
///
/// # Errors
///
/// A message saying what is wrong with the line (unknown command, missing
/// or extra arguments).
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim_start();
    if line.trim().is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (word, rest) = split_word(line);
    let cmd = match word {
        "put" | "p" => {
            let (mode, rest) = async_flag(rest);
            let (key, data) = split_word(rest);
            let data = data.strip_suffix('\n').unwrap_or(data);
            Command::Request(Body::Put {
                key: key_arg(key, "put <key> <data>")?,
                value: data.as_bytes().to_vec(),
                mode,
            })
        }
        "get" | "g" => Command::Request(Body::Get {
            key: key_arg(one_arg(rest, "get <key>")?, "get <key>")?,
        }),
        "del" | "d" => {
            let (mode, rest) = async_flag(rest);
            Command::Request(Body::Del {
                key: key_arg(one_arg(rest, "del <key>")?, "del <key>")?,
                mode,
            })
        }
        "cas" => {
            let usage = "cas <key> <version> <data>";
            let (key, rest) = split_word(rest);
            let (version, data) = split_word(rest);
            let data = data.strip_suffix('\n').unwrap_or(data);
            Command::Request(Body::PutIf {
                key: key_arg(key, usage)?,
                expected: version_arg(version, usage)?,
                value: data.as_bytes().to_vec(),
            })
        }
        "cdel" => {
            let usage = "cdel <key> <version>";
            let mut words = rest.split_whitespace();
            let (Some(key), Some(version), None) = (words.next(), words.next(), words.next())
            else {
                return Err(format!("usage: {usage}"));
            };
            Command::Request(Body::DelIf {
                key: key_arg(key, usage)?,
                expected: version_arg(version, usage)?,
            })
        }
        "mget" => Command::Request(Body::MGet {
            keys: keys_arg(rest, "mget <key>...")?,
        }),
        "mdel" => Command::Request(Body::MWrite {
            ops: keys_arg(rest, "mdel <key>...")?
                .into_iter()
                .map(|key| BatchOp::Del { key })
                .collect(),
        }),
        "mput" => {
            let usage = "mput <key> <data> [<key> <data>...]";
            let words: Vec<&str> = rest.split_whitespace().collect();
            if words.is_empty() || words.len() % 2 != 0 || words.len() / 2 > BATCH_OPS_MAX {
                return Err(format!("usage: {usage}"));
            }
            let ops = words
                .chunks(2)
                .map(|pair| {
                    Ok(BatchOp::Put {
                        key: key_arg(pair[0], usage)?,
                        value: pair[1].as_bytes().to_vec(),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            Command::Request(Body::MWrite { ops })
        }
        "size" | "s" => no_args(rest, Body::Size)?,
        "getkeys" | "k" => no_args(rest, Body::GetKeys)?,
        "gettable" | "t" => no_args(rest, Body::GetTable)?,
        "stats" | "st" => no_args(rest, Body::Stats)?,
        "verify" | "v" => {
            let n = one_arg(rest, "verify <op_id>")?;
            let op_id = n
                .parse()
                .map_err(|_| format!("verify: '{n}' is not an operation number"))?;
            Command::Request(Body::Verify { op_id })
        }
        "snapshot" => {
            let (sub, file) = split_word(rest);
            let file = file.trim();
            if sub != "save" || file.is_empty() || file.contains(char::is_whitespace) {
                return Err("usage: snapshot save <file>".into());
            }
            Command::SnapshotSave(file.into())
        }
        "watch" | "w" => parse_watch(rest)?,
        "range" | "r" => parse_range(rest)?,
        "help" | "h" | "?" => Command::Help,
        "quit" | "q" | "exit" => Command::Quit,
        other => return Err(format!("unknown command '{other}' (type 'help')")),
    };
    Ok(Some(cmd))
}

/// `range <from> <to> [<n>]`, `-` for an open end.
fn parse_range(rest: &str) -> Result<Command, String> {
    const USAGE: &str = "usage: range <from> <to> [<n>] ('-' for an open end)";
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (from, to, n) = match words.as_slice() {
        [from, to] => (from, to, "100"),
        [from, to, n] => (from, to, *n),
        _ => return Err(USAGE.into()),
    };
    let bound = |w: &str| {
        if w == "-" {
            Vec::new()
        } else {
            w.as_bytes().to_vec()
        }
    };
    let limit = n
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=crate::wire::RANGE_LIMIT_MAX).contains(n))
        .ok_or(format!(
            "range: <n> is 1..={}",
            crate::wire::RANGE_LIMIT_MAX
        ))?;
    Ok(Command::Request(Body::Range {
        from: bound(from),
        to: bound(to),
        limit,
    }))
}

fn parse_watch(rest: &str) -> Result<Command, String> {
    const USAGE: &str = "usage: watch [<prefix>] [from <seq>] [count <n>]";
    let mut words: Vec<&str> = rest.split_whitespace().collect();
    let mut from_seq = crate::wire::WATCH_FROM_NOW;
    let mut count = None;
    let number = |w: Option<&&str>| -> Result<u64, String> {
        w.and_then(|n| n.parse().ok())
            .ok_or_else(|| USAGE.to_string())
    };
    let prefix = match words.first() {
        Some(w) if *w != "from" && *w != "count" => words.remove(0).as_bytes().to_vec(),
        _ => Vec::new(),
    };
    let mut it = words.iter();
    while let Some(w) = it.next() {
        match *w {
            "from" => from_seq = number(it.next())?,
            "count" => count = Some(number(it.next())?),
            _ => return Err(USAGE.into()),
        }
    }
    Ok(Command::Watch {
        prefix,
        from_seq,
        count,
    })
}

/// One watch update for people: `op SEQ: put KEY = VALUE`, one line per
/// change, or `op SEQ: (no change under the prefix)` for a progress mark.
#[must_use]
pub fn render_watch(u: &crate::client::WatchUpdate) -> String {
    use crate::wire::WatchChange;
    if u.changes.is_empty() {
        return format!("op {}: (no change under the prefix up to here)", u.seq);
    }
    u.changes
        .iter()
        .map(|c| match c {
            WatchChange::Put { key, value } => {
                format!(
                    "op {}: put {} = {}",
                    u.seq,
                    show_bytes(key.as_bytes()),
                    show_bytes(value)
                )
            }
            WatchChange::Del { key } => format!("op {}: del {}", u.seq, show_bytes(key.as_bytes())),
            WatchChange::Changed { key } => format!(
                "op {}: put {} (value too large for an event: get it)",
                u.seq,
                show_bytes(key.as_bytes())
            ),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        // Exactly one separator is dropped so that put keeps its data's spaces.
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

fn async_flag(rest: &str) -> (WriteMode, &str) {
    let (w, r) = split_word(rest);
    if w == "-a" || w == "--async" {
        (WriteMode::Async, r)
    } else {
        (WriteMode::Sync, rest)
    }
}

fn one_arg<'a>(rest: &'a str, usage: &str) -> Result<&'a str, String> {
    let mut words = rest.split_whitespace();
    match (words.next(), words.next()) {
        (Some(w), None) => Ok(w),
        _ => Err(format!("usage: {usage}")),
    }
}

fn no_args(rest: &str, body: Body) -> Result<Command, String> {
    if rest.trim().is_empty() {
        Ok(Command::Request(body))
    } else {
        Err(format!("'{}' takes no arguments", rest.trim()))
    }
}

fn keys_arg(rest: &str, usage: &str) -> Result<Vec<Key>, String> {
    let keys: Vec<&str> = rest.split_whitespace().collect();
    if keys.is_empty() || keys.len() > BATCH_OPS_MAX {
        return Err(format!("usage: {usage} (1 to {BATCH_OPS_MAX} keys)"));
    }
    keys.into_iter().map(|k| key_arg(k, usage)).collect()
}

fn version_arg(version: &str, usage: &str) -> Result<u64, String> {
    version
        .parse()
        .map_err(|_| format!("'{version}' is not a version (usage: {usage})"))
}

fn key_arg(key: &str, usage: &str) -> Result<Key, String> {
    if key.is_empty() {
        return Err(format!("usage: {usage}"));
    }
    Key::new(key.as_bytes()).map_err(|e| e.to_string())
}

/// Bytes as text when they are printable UTF-8, else as `0x` hex.
#[must_use]
pub fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.chars().all(|c| !c.is_control() || c == '\t') => s.to_string(),
        _ => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

fn show_write(w: &WriteOk, is_put: bool) -> String {
    match (w.outcome, is_put) {
        (WriteOutcome::Pending, _) => {
            format!("queued: op {} (check with: verify {})", w.op_id, w.op_id)
        }
        (WriteOutcome::Absent, true) => format!("ok: op {} (created)", w.op_id),
        (WriteOutcome::Existed, true) => format!("ok: op {} (replaced)", w.op_id),
        (WriteOutcome::Existed, false) => format!("ok: op {} (deleted)", w.op_id),
        (WriteOutcome::Absent, false) => format!("ok: op {} (key was not there)", w.op_id),
        (WriteOutcome::Mismatch, _) => format!("not written: op {} (version mismatch)", w.op_id),
    }
}

fn show_cas(c: &CasOk, is_put: bool) -> String {
    match (c.outcome, c.version) {
        (WriteOutcome::Mismatch, 0) => format!("not written: op {}, the key is absent", c.op_id),
        (WriteOutcome::Mismatch, v) => {
            format!("not written: op {}, the key is at version {v}", c.op_id)
        }
        _ if is_put => format!("ok: op {} (now version {})", c.op_id, c.version),
        _ => format!("ok: op {} (deleted)", c.op_id),
    }
}

/// `key = value (version n)`, one GETTABLE or RANGE row.
fn show_entry(e: &crate::serialize::Entry) -> String {
    format!(
        "{} = {} (version {})",
        show_bytes(e.key.as_bytes()),
        show_bytes(&e.value),
        e.version
    )
}

fn show_value(v: &Option<Versioned>) -> String {
    match v {
        Some(v) => format!("{} (version {})", show_bytes(&v.value), v.version),
        None => "(not found)".to_string(),
    }
}

/// Renders a reply for people.
#[must_use]
pub fn render(reply: &Body) -> String {
    match reply {
        Body::PutOk(w) => show_write(w, true),
        Body::DelOk(w) => show_write(w, false),
        Body::PutIfOk(c) | Body::DelIfOk(c) => show_cas(c, matches!(reply, Body::PutIfOk(_))),
        Body::Value(v) => show_value(v),
        Body::MGetOk(values) => values.iter().map(show_value).collect::<Vec<_>>().join("\n"),
        Body::MWriteOk { op_id } => format!("ok: op {op_id} (every write of the batch)"),
        Body::SizeOk { entries } => entries.to_string(),
        Body::Keys(keys) if keys.is_empty() => "(no keys)".to_string(),
        Body::Keys(keys) => {
            let mut shown: Vec<String> = keys.iter().map(|k| show_bytes(k.as_bytes())).collect();
            shown.sort();
            shown.join("\n")
        }
        Body::RangeOk { entries, next } => {
            // In key order, as the server sent them.
            let mut rows: Vec<String> = entries.iter().map(show_entry).collect();
            if entries.is_empty() {
                rows.push("(no entries)".into());
            }
            if !next.is_empty() {
                rows.push(format!("(more from {})", show_bytes(next)));
            }
            rows.join("\n")
        }
        Body::Entries(e) if e.is_empty() => "(empty table)".to_string(),
        Body::Entries(entries) => {
            let mut rows: Vec<String> = entries.iter().map(show_entry).collect();
            rows.sort();
            rows.join("\n")
        }
        Body::StatsOk(s) => s
            .fields
            .iter()
            .map(|f| match &f.value {
                StatValue::Count(n) => format!("{}: {}", f.name, n),
                StatValue::Text(t) => format!("{}: {}", f.name, t),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Body::VerifyOk(OpState::Executed) => "executed".to_string(),
        Body::VerifyOk(OpState::Pending) => "pending".to_string(),
        Body::VerifyOk(OpState::Unknown) => "unknown operation id".to_string(),
        other => format!("unexpected reply (opcode 0x{:02x})", other.opcode()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(line: &str) -> Body {
        match parse(line).unwrap().unwrap() {
            Command::Request(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn put_data_is_the_rest_of_the_line() {
        let Body::Put { key, value, mode } = req("p  k1 hello  world ") else {
            panic!()
        };
        assert_eq!(key.as_bytes(), b"k1");
        assert_eq!(value, b"hello  world ");
        assert_eq!(mode, WriteMode::Sync);
        let Body::Put { mode, value, .. } = req("put -a k v") else {
            panic!()
        };
        assert_eq!((mode, value.as_slice()), (WriteMode::Async, &b"v"[..]));
    }

    #[test]
    fn compare_and_set_commands() {
        let Body::PutIf {
            key,
            expected,
            value,
        } = req("cas k1 7 hello  world")
        else {
            panic!()
        };
        assert_eq!((key.as_bytes(), expected), (&b"k1"[..], 7));
        assert_eq!(value, b"hello  world");
        assert_eq!(
            req("cdel k1 0"),
            Body::DelIf {
                key: Key::new("k1").unwrap(),
                expected: 0
            }
        );
        assert!(parse("cas k1 x v").unwrap_err().contains("not a version"));
        assert!(parse("cdel k1").unwrap_err().contains("usage"));
        let mismatch = CasOk {
            op_id: 9,
            outcome: WriteOutcome::Mismatch,
            version: 4,
        };
        assert_eq!(
            render(&Body::PutIfOk(mismatch)),
            "not written: op 9, the key is at version 4"
        );
    }

    #[test]
    fn batch_commands() {
        let Body::MWrite { ops } = req("mput a 1 b 2") else {
            panic!()
        };
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1].key().as_bytes(), b"b");
        assert!(parse("mput a 1 b").unwrap_err().contains("usage"));
        let Body::MGet { keys } = req("mget a b c") else {
            panic!()
        };
        assert_eq!(keys.len(), 3);
        assert!(parse("mget").unwrap_err().contains("usage"));
        assert!(matches!(req("mdel a"), Body::MWrite { ops } if ops.len() == 1));
    }

    #[test]
    fn aliases_and_usage_errors() {
        assert_eq!(req("s"), Body::Size);
        assert_eq!(req("k"), Body::GetKeys);
        assert_eq!(req("t"), Body::GetTable);
        assert_eq!(req("st"), Body::Stats);
        assert_eq!(req("verify 7"), Body::Verify { op_id: 7 });
        assert_eq!(parse("q").unwrap(), Some(Command::Quit));
        assert_eq!(parse("h").unwrap(), Some(Command::Help));
        assert_eq!(parse("   ").unwrap(), None);
        assert!(parse("get").is_err());
        assert!(parse("get a b").is_err());
        assert!(parse("verify x").is_err());
        assert!(parse("frobnicate").is_err());
        assert!(parse("size 3").is_err());
        assert!(parse(&format!("get {}", "x".repeat(2000))).is_err());
    }

    #[test]
    fn values_show_as_text_or_hex() {
        assert_eq!(show_bytes(b"hi there"), "hi there");
        assert_eq!(show_bytes(&[0, 255]), "0x00ff");
        assert_eq!(show_bytes(b"a\nb"), "0x610a62");
    }
}
