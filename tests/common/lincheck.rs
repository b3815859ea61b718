//! Our linearizability checker: a key-value model for `porcupine-rs`
//! (a port of Porcupine), checked one key at a time, with the limits we
//! need.
//! Swap the engine here without touching the harness.
//!
//! Modelling: a write whose outcome is unknown (timed out, connection
//! lost) gets an infinite return time, so it may take effect at any point
//! after its call, or effectively never. Reads whose outcome is unknown
//! carry no information and are dropped by the caller.

use porcupine_rs::{CheckResult, Model, Operation};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One operation on one key, as a client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// `existed`: what the reply said about the previous value, if known.
    Put {
        value: u64,
        existed: Option<bool>,
    },
    Del {
        existed: Option<bool>,
    },
    /// What the read returned (`None` = not found).
    Get {
        value: Option<u64>,
    },
    /// A compare-and-set that expected the key to hold `expected` (`None`:
    /// absent) and then to become `value` (`None`: a CDEL). Every write
    /// writes a value of its own, so the version a client read names the
    /// value it read, and comparing versions is comparing values.
    /// `applied`: what the reply said (`None`: unknown).
    // The simulator's clients send no compare-and-set; the torture suite's do.
    #[allow(dead_code)]
    Cas {
        expected: Option<u64>,
        value: Option<u64>,
        applied: Option<bool>,
    },
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub client: u32,
    pub key: u32,
    pub op: KvOp,
    /// Nanoseconds since the start of the run.
    pub call_ns: i64,
    /// `None` when the outcome is unknown (writes only).
    pub return_ns: Option<i64>,
}

/// What the model knows about the key's value: exactly (`Is`), or nothing
/// yet (`Any`), which is how a slice cut from the middle of a history
/// starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyState {
    Any,
    Is(Option<u64>),
}

fn step(state: &KeyState, op: &KvOp) -> (bool, KeyState) {
    if let KvOp::Cas {
        expected,
        value,
        applied,
    } = op
    {
        return match state {
            KeyState::Is(now) => {
                let matches = now == expected;
                let ok = applied.is_none_or(|a| a == matches);
                (ok, KeyState::Is(if matches { *value } else { *now }))
            }
            // From an unknown value only a write that was made says what
            // follows.
            KeyState::Any if *applied == Some(true) => (true, KeyState::Is(*value)),
            KeyState::Any => (true, KeyState::Any),
        };
    }
    let next = match op {
        KvOp::Put { value, .. } => Some(*value),
        KvOp::Get { value } => *value,
        KvOp::Del { .. } | KvOp::Cas { .. } => None,
    };
    let KeyState::Is(now) = state else {
        return (true, KeyState::Is(next));
    };
    let ok = match op {
        KvOp::Put { existed, .. } | KvOp::Del { existed } => {
            existed.is_none_or(|e| e == now.is_some())
        }
        KvOp::Get { value } => value == now,
        KvOp::Cas { .. } => true,
    };
    (ok, KeyState::Is(if ok { next } else { *now }))
}

/// The per-key model. `FROM_EMPTY`: the key starts absent (a whole
/// history); otherwise its first value is unknown (a slice of a history).
#[derive(Clone)]
struct KeyModel<const FROM_EMPTY: bool>;

/// A whole history.
type FromEmpty = KeyModel<true>;
/// A slice cut from the middle of a history.
type FromAny = KeyModel<false>;

impl<const FROM_EMPTY: bool> Model for KeyModel<FROM_EMPTY> {
    type State = KeyState;
    type Op = (u32, KvOp);
    type Metadata = ();

    fn init() -> KeyState {
        if FROM_EMPTY {
            KeyState::Is(None)
        } else {
            KeyState::Any
        }
    }

    fn step(state: &KeyState, op: &Self::Op) -> (bool, KeyState) {
        step(state, &op.1)
    }
}

/// The most operations on one key that one check accepts. Porcupine's
/// search caches a bitset of the operations linearized so far at every
/// step, so its memory grows with the square of the operations on a key
/// (about 220 MiB for 40,000 on one key, measured here); histories are kept under
/// this by the harness, and a larger one is refused rather than risking
/// the machine.
pub const MAX_OPS_PER_KEY: usize = 40_000;

/// The most operations a slice may span when it is cut back from the end:
/// a violation needs a handful of operations, and each candidate start
/// costs one search.
pub const MAX_SLICE_OPS: usize = 256;

/// The verdict on a history.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// Not linearizable on `key`. `slice` is a short run of that key's
    /// operations that is not linearizable by itself (see [`smallest_slice`]):
    /// a line saying where it starts from, then one line per operation.
    Anomaly {
        key: u32,
        slice: Vec<String>,
    },
    /// The search hit its time limit: not a pass; investigate.
    Unknown,
    /// `key` has more than [`MAX_OPS_PER_KEY`] operations: not checked.
    TooLarge {
        key: u32,
        ops: usize,
    },
}

/// Checks `history`, spending at most `limit` in the search (and as much
/// again cutting the slice of an anomaly). Keys are checked one after
/// another rather than in parallel so that the peak memory is that of the
/// largest key, not the sum of all keys.
pub fn check(history: &[Recorded], limit: Duration) -> Verdict {
    let mut by_key: BTreeMap<u32, Vec<&Recorded>> = BTreeMap::new();
    for r in history {
        by_key.entry(r.key).or_default().push(r);
    }
    if let Some((key, ops)) = by_key.iter().find(|(_, ops)| ops.len() > MAX_OPS_PER_KEY) {
        return Verdict::TooLarge {
            key: *key,
            ops: ops.len(),
        };
    }
    let deadline = Instant::now() + limit;
    for (key, ops) in &by_key {
        match search::<FromEmpty>(ops.iter().copied(), deadline) {
            CheckResult::Ok => {}
            CheckResult::Unknown => return Verdict::Unknown,
            CheckResult::Illegal => {
                let slice = smallest_slice(ops, Instant::now() + limit);
                return Verdict::Anomaly {
                    key: *key,
                    slice: describe(&slice),
                };
            }
        }
    }
    Verdict::Linearizable
}

fn search<'a, M: Model<Op = (u32, KvOp), Metadata = ()>>(
    ops: impl IntoIterator<Item = &'a Recorded>,
    deadline: Instant,
) -> CheckResult {
    let ops: Vec<Operation<M>> = ops
        .into_iter()
        .map(|r| Operation {
            client_id: Some(r.client),
            call_time: r.call_ns,
            return_time: r.return_ns.unwrap_or(i64::MAX),
            op: (r.key, r.op.clone()),
            metadata: None,
        })
        .collect();
    let left = deadline.saturating_duration_since(Instant::now());
    porcupine_rs::check_operations_timeout::<M>(&ops, left)
}

/// A slice of one key's history that is not linearizable on its own.
#[derive(Debug)]
pub struct Slice {
    /// True when the slice only fails from the key's empty initial state
    /// (it then starts at the beginning of the history).
    pub from_empty: bool,
    /// The operations, by call time.
    pub ops: Vec<Recorded>,
}

/// Cuts an illegal history of one key down to a short slice that is
/// still illegal, for a person to read.
///
/// The end: the earliest time `t` at which the history *as observed at
/// `t`* is already illegal. That history holds the operations called by
/// `t`; one still running at `t` becomes a write of unknown outcome (and
/// a read still running is dropped). It only gains constraints as `t`
/// grows, so a binary search finds `t`, and the operation that returned at
/// `t` is the one that made the history illegal.
/// The start: scanning back from `t`, the first call time `s` such that the
/// operations running at some point in `[s, t]` are illegal from *any*
/// starting value: the shortest such window. Operations called before `s`
/// that were still running at `s` are kept, since they could have taken
/// effect inside the window; leaving them out could make a legal window
/// look illegal. If none within [`MAX_SLICE_OPS`] is, the
/// violation involves the key's empty initial state and the slice is the
/// whole history up to `t`.
/// A search that times out is taken as "not shown illegal", so whatever is
/// returned has been shown illegal.
pub fn smallest_slice(ops: &[&Recorded], deadline: Instant) -> Slice {
    let mut ends: Vec<i64> = ops.iter().filter_map(|r| r.return_ns).collect();
    ends.sort_unstable();
    ends.dedup();
    let illegal_at = |t: i64| {
        let seen = observed_at(ops, t);
        search::<FromEmpty>(&seen, deadline) == CheckResult::Illegal
    };
    // The full history is illegal, and so is its observation at the last
    // return; find the first return time where it already is.
    let first = ends.partition_point(|&t| !illegal_at(t));
    let seen = match ends.get(first) {
        Some(&t) => observed_at(ops, t),
        None => ops.iter().map(|r| (*r).clone()).collect(),
    };
    let mut calls: Vec<i64> = seen.iter().map(|r| r.call_ns).collect();
    calls.sort_unstable();
    calls.dedup();
    for &s in calls.iter().rev().take(MAX_SLICE_OPS) {
        let window: Vec<Recorded> = seen
            .iter()
            .filter(|r| r.call_ns >= s || r.return_ns.is_none_or(|ret| ret >= s))
            .cloned()
            .collect();
        if search::<FromAny>(&window, deadline) == CheckResult::Illegal {
            return Slice {
                from_empty: false,
                ops: by_call(window),
            };
        }
    }
    Slice {
        from_empty: true,
        ops: by_call(seen),
    }
}

/// `ops` as known at time `t` (see [`smallest_slice`]).
fn observed_at(ops: &[&Recorded], t: i64) -> Vec<Recorded> {
    let mut seen = Vec::new();
    for &r in ops.iter().filter(|r| r.call_ns <= t) {
        if r.return_ns.is_some_and(|ret| ret <= t) {
            seen.push(r.clone());
            continue;
        }
        let op = match &r.op {
            KvOp::Get { .. } => continue,
            KvOp::Put { value, .. } => KvOp::Put {
                value: *value,
                existed: None,
            },
            KvOp::Del { .. } => KvOp::Del { existed: None },
            KvOp::Cas {
                expected, value, ..
            } => KvOp::Cas {
                expected: *expected,
                value: *value,
                applied: None,
            },
        };
        seen.push(Recorded {
            op,
            return_ns: None,
            ..r.clone()
        });
    }
    seen
}

fn by_call(mut ops: Vec<Recorded>) -> Vec<Recorded> {
    ops.sort_by_key(|r| (r.call_ns, r.client));
    ops
}

/// The slice as lines: where it starts from, then the operations, with
/// times relative to the first call. A long slice from the empty state is
/// shown as its first and last operations.
fn describe(slice: &Slice) -> Vec<String> {
    const SHOWN_EACH_END: usize = 8;
    let t0 = slice.ops.first().map_or(0, |r| r.call_ns);
    let start = if slice.from_empty {
        "from the key's empty initial state"
    } else {
        "starting from any value"
    };
    let mut lines = vec![format!(
        "{} operations, not linearizable {start} (first call at {t0} ns; times below relative to it):",
        slice.ops.len()
    )];
    let n = slice.ops.len();
    for (i, r) in slice.ops.iter().enumerate() {
        if n > 2 * SHOWN_EACH_END && i == SHOWN_EACH_END {
            lines.push(format!("... {} more ...", n - 2 * SHOWN_EACH_END));
        }
        if n > 2 * SHOWN_EACH_END && (SHOWN_EACH_END..n - SHOWN_EACH_END).contains(&i) {
            continue;
        }
        let ret = r
            .return_ns
            .map_or("unknown".to_string(), |t| format!("{}", t - t0));
        lines.push(format!(
            "client {} {:?} call {} return {ret}",
            r.client,
            r.op,
            r.call_ns - t0
        ));
    }
    lines
}
