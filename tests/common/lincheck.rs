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

#[derive(Clone)]
struct KeyModel;

impl Model for KeyModel {
    type State = Option<u64>;
    type Op = (u32, KvOp);
    type Metadata = ();

    fn init() -> Self::State {
        None
    }

    fn step(state: &Self::State, op: &Self::Op) -> (bool, Self::State) {
        match &op.1 {
            KvOp::Put { value, existed } => {
                let ok = existed.is_none_or(|e| e == state.is_some());
                (ok, Some(*value))
            }
            KvOp::Del { existed } => (existed.is_none_or(|e| e == state.is_some()), None),
            KvOp::Get { value } => (value == state, *state),
        }
    }
}

/// The most operations on one key that one check accepts. Porcupine's
/// search caches a bitset of the operations linearized so far at every
/// step, so its memory grows with the square of the operations on a key
/// (about 220 MiB for 40,000 on one key, measured here); histories are kept under
/// this by the harness, and a larger one is refused rather than risking
/// the machine.
pub const MAX_OPS_PER_KEY: usize = 40_000;

/// The verdict on a history.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// Not linearizable on `key`; `slice` holds the operations around the
    /// point where the longest linearization stops.
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

/// Checks `history`, spending at most `limit` in the search. Keys are
/// checked one after another rather than in parallel so that the peak
/// memory is that of the largest key, not the sum of all keys.
pub fn check(history: &[Recorded], limit: Duration) -> Verdict {
    let mut by_key: BTreeMap<u32, Vec<Operation<KeyModel>>> = BTreeMap::new();
    for r in history {
        by_key.entry(r.key).or_default().push(Operation {
            client_id: Some(r.client),
            call_time: r.call_ns,
            return_time: r.return_ns.unwrap_or(i64::MAX),
            op: (r.key, r.op.clone()),
            metadata: None,
        });
    }
    if let Some((key, ops)) = by_key.iter().find(|(_, ops)| ops.len() > MAX_OPS_PER_KEY) {
        return Verdict::TooLarge {
            key: *key,
            ops: ops.len(),
        };
    }
    let deadline = Instant::now() + limit;
    for ops in by_key.values() {
        let left = deadline.saturating_duration_since(Instant::now());
        let (result, info) = porcupine_rs::check_operations_info_timeout::<KeyModel>(ops, left);
        match result {
            CheckResult::Ok => {}
            CheckResult::Unknown => return Verdict::Unknown,
            CheckResult::Illegal => return explain(&info),
        }
    }
    Verdict::Linearizable
}

/// Finds the failing partition and the operations around where its
/// longest linearization stops.
fn explain(info: &porcupine_rs::LinearizationInfo<KeyModel>) -> Verdict {
    for (p, ops) in info.partition_ops.iter().enumerate() {
        let longest = info
            .partial_linearizations
            .get(p)
            .and_then(|ls| ls.iter().map(Vec::len).max())
            .unwrap_or(0);
        if longest == ops.len() {
            continue;
        }
        let mut by_call: Vec<&Operation<KeyModel>> = ops.iter().collect();
        by_call.sort_by_key(|o| o.call_time);
        let from = longest.saturating_sub(4);
        let slice = by_call
            .iter()
            .skip(from)
            .take(12)
            .map(|o| {
                let ret = if o.return_time == i64::MAX {
                    "unknown".to_string()
                } else {
                    format!("{}", o.return_time)
                };
                format!(
                    "client {:?} {:?} call {} return {}",
                    o.client_id.unwrap_or(0),
                    o.op.1,
                    o.call_time,
                    ret
                )
            })
            .collect();
        let key = ops.first().map_or(0, |o| o.op.0);
        return Verdict::Anomaly { key, slice };
    }
    Verdict::Anomaly {
        key: 0,
        slice: vec!["(no partition explains it)".into()],
    }
}
