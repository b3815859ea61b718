//! Payload decoders: every read goes through the bounds-checked
//! [`Reader`], lengths are capped as they are read, and the caller refuses
//! leftover bytes (spec §3).

use super::message::*;
use super::opcode::op;
use crate::serialize::types::decode_text;
use crate::serialize::{
    decode_data, decode_list, Codec, DecodeError, Entry, Key, Reader, Stats, KEY_BYTES_MAX,
};

/// Decodes the payload of a frame with `opcode` (and ASYNC `mode`).
pub(super) fn decode_body(
    opcode: u8,
    mode: WriteMode,
    r: &mut Reader<'_>,
) -> Result<Body, MessageError> {
    let bad = |source| MessageError::BadPayload { opcode, source };
    match opcode {
        op::HELLO
        | op::PUT
        | op::GET
        | op::DEL
        | op::SIZE
        | op::GETKEYS
        | op::GETTABLE
        | op::STATS
        | op::VERIFY
        | op::AUTH
        | op::BACKUP
        | op::CPUT
        | op::CDEL
        | op::MGET
        | op::MWRITE
        | op::WATCH
        | op::UNWATCH
        | op::RANGE => decode_request(opcode, mode, r).map_err(bad),
        op::UPDATE..=op::PEER_PROOF => decode_peer(opcode, r).map_err(bad),
        op::ERROR => decode_error(r).map_err(bad),
        _ if opcode & op::REPLY != 0 => match decode_reply(opcode & !op::REPLY, r) {
            Some(result) => result.map_err(bad),
            None => Err(MessageError::UnknownOpcode(opcode)),
        },
        _ => Err(MessageError::UnknownOpcode(opcode)),
    }
}

fn decode_request(opcode: u8, mode: WriteMode, r: &mut Reader<'_>) -> Result<Body, DecodeError> {
    Ok(match opcode {
        op::HELLO => Body::Hello(Hello {
            role: decode_enum(r, "peer role", &[PeerRole::Client, PeerRole::Peer], |v| {
                *v as u8
            })?,
            features: r.u32("features")?,
            node: decode_text(r, "node name")?,
        }),
        op::PUT => Body::Put {
            key: Key::decode(r)?,
            value: decode_data(r)?,
            mode,
        },
        op::GET => Body::Get {
            key: Key::decode(r)?,
        },
        op::DEL => Body::Del {
            key: Key::decode(r)?,
            mode,
        },
        op::SIZE => Body::Size,
        op::GETKEYS => Body::GetKeys,
        op::GETTABLE => Body::GetTable,
        op::STATS => Body::Stats,
        op::BACKUP => Body::Backup,
        op::CPUT => Body::PutIf {
            key: Key::decode(r)?,
            expected: r.u64("expected version")?,
            value: decode_data(r)?,
        },
        op::CDEL => Body::DelIf {
            key: Key::decode(r)?,
            expected: r.u64("expected version")?,
        },
        op::MGET => Body::MGet {
            keys: decode_batch(r, "keys", Key::MIN_ENCODED_LEN)?,
        },
        op::MWRITE => Body::MWrite {
            ops: decode_batch(r, "batch writes", BatchOp::MIN_ENCODED_LEN)?,
        },
        op::WATCH => Body::Watch {
            from_seq: r.u64("from seq")?,
            prefix: decode_bound(r, "prefix")?,
        },
        op::UNWATCH => Body::Unwatch {
            watch_id: r.u64("watch id")?,
        },
        op::RANGE => decode_range(r)?,
        op::AUTH => Body::Auth {
            user: decode_text(r, "user")?,
            password: decode_text(r, "password")?,
        },
        _ => Body::Verify {
            op_id: r.u64("op id")?,
        },
    })
}

fn decode_peer(opcode: u8, r: &mut Reader<'_>) -> Result<Body, DecodeError> {
    Ok(match opcode {
        op::UPDATE => Body::Update(Update::decode(r)?),
        op::ACK => Body::Ack { seq: r.u64("seq")? },
        op::HANDOFF => Body::Handoff { seq: r.u64("seq")? },
        op::PEER_HELLO => Body::PeerHello(PeerHello {
            from: decode_text(r, "from node")?,
            to: decode_text(r, "to node")?,
            root: decode_text(r, "chain root")?,
            nonce: bytes32(r, "nonce")?,
        }),
        op::PEER_CHALLENGE => Body::PeerChallenge(PeerChallenge {
            nonce: bytes32(r, "nonce")?,
            proof: bytes32(r, "proof")?,
        }),
        op::PEER_PROOF => Body::PeerProof {
            proof: bytes32(r, "proof")?,
        },
        _ => {
            let snapshot_seq = r.u64("snapshot seq")?;
            // Bits other than FIRST (0), LAST (1) and KEEP (2) are
            // reserved: ignored.
            let flags = r.u8("snapshot flags")?;
            let chunk = SnapshotChunk {
                snapshot_seq,
                first: flags & 1 != 0,
                last: flags & 2 != 0,
                keep: flags & 4 != 0,
                gaps: decode_gaps(r)?,
                entries: decode_list(r, "entries", Entry::MIN_ENCODED_LEN)?,
            };
            // KEEP stands for a whole transfer: FIRST and LAST, nothing in it.
            let whole_and_empty = chunk.first && chunk.last && chunk.entries.is_empty();
            if chunk.keep && !whole_and_empty {
                return Err(DecodeError::Invalid {
                    what: "KEEP snapshot (must be FIRST, LAST and empty)",
                    value: flags.into(),
                });
            }
            Body::Snapshot(chunk)
        }
    })
}

fn bytes32(r: &mut Reader<'_>, what: &'static str) -> Result<[u8; 32], DecodeError> {
    let mut out = [0u8; 32];
    out.copy_from_slice(r.take(32, what)?);
    Ok(out)
}

/// The gap list, its count capped at [`SNAPSHOT_GAPS_MAX`] as it is read
/// (before anything is allocated for it).
fn decode_gaps(r: &mut Reader<'_>) -> Result<Vec<SeqGap>, DecodeError> {
    let count = r.count_u32("gaps", SeqGap::ENCODED_LEN)?;
    if count > SNAPSHOT_GAPS_MAX {
        return Err(DecodeError::TooLong {
            what: "gaps",
            len: count,
            max: SNAPSHOT_GAPS_MAX,
        });
    }
    (0..count).map(|_| SeqGap::decode(r)).collect()
}

/// Reply bodies by their request opcode; `None` for an unassigned one.
fn decode_reply(request: u8, r: &mut Reader<'_>) -> Option<Result<Body, DecodeError>> {
    let body = match request {
        op::HELLO => decode_hello_ok(r),
        op::PUT => decode_write_ok(r).map(Body::PutOk),
        op::GET => decode_value(r),
        op::DEL => decode_write_ok(r).map(Body::DelOk),
        op::SIZE => r.u64("size").map(|entries| Body::SizeOk { entries }),
        op::GETKEYS => decode_list(r, "keys", Key::MIN_ENCODED_LEN).map(Body::Keys),
        op::GETTABLE => decode_list(r, "entries", Entry::MIN_ENCODED_LEN).map(Body::Entries),
        op::STATS => Stats::decode(r).map(Body::StatsOk),
        op::VERIFY => decode_enum(
            r,
            "op state",
            &[OpState::Unknown, OpState::Pending, OpState::Executed],
            |v| *v as u8,
        )
        .map(Body::VerifyOk),
        op::AUTH => decode_enum(r, "access", &[Access::ReadOnly, Access::ReadWrite], |v| {
            *v as u8
        })
        .map(Body::AuthOk),
        op::BACKUP => decode_backup_chunk(r),
        op::CPUT => decode_cas_ok(r).map(Body::PutIfOk),
        op::CDEL => decode_cas_ok(r).map(Body::DelIfOk),
        op::MGET => decode_mget_ok(r),
        op::MWRITE => r.u64("op id").map(|op_id| Body::MWriteOk { op_id }),
        op::WATCH => WatchEvent::decode(r).map(Body::WatchEvent),
        op::UNWATCH => decode_bool(r, "found").map(|found| Body::Unwatched { found }),
        op::RANGE => decode_range_ok(r),
        _ => return None,
    };
    Some(body)
}

/// RANGE: `from` and `to` (each a `u16` length, 0 ..= [`KEY_BYTES_MAX`],
/// then the bytes) and a `u32` limit (1 ..= [`RANGE_LIMIT_MAX`]).
fn decode_range(r: &mut Reader<'_>) -> Result<Body, DecodeError> {
    let from = decode_bound(r, "range start")?;
    let to = decode_bound(r, "range end")?;
    let limit = r.u32("range limit")?;
    if !(1..=RANGE_LIMIT_MAX).contains(&limit) {
        return Err(DecodeError::Invalid {
            what: "range limit (1..=1024)",
            value: u64::from(limit),
        });
    }
    Ok(Body::Range { from, to, limit })
}

/// RANGE_OK: `list<entry>`, then the next page's start as a bound.
fn decode_range_ok(r: &mut Reader<'_>) -> Result<Body, DecodeError> {
    let entries = decode_list(r, "entries", Entry::MIN_ENCODED_LEN)?;
    let next = decode_bound(r, "next range start")?;
    Ok(Body::RangeOk { entries, next })
}

/// A key bound (a WATCH prefix, a RANGE's start or end, RANGE_OK's next):
/// `u16` length, 0 ..= [`KEY_BYTES_MAX`] checked before anything is
/// copied, then the bytes.
fn decode_bound(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<u8>, DecodeError> {
    let len = usize::from(r.u16(what)?);
    if len > KEY_BYTES_MAX {
        return Err(DecodeError::TooLong {
            what,
            len,
            max: KEY_BYTES_MAX,
        });
    }
    Ok(r.take(len, what)?.to_vec())
}

fn decode_backup_chunk(r: &mut Reader<'_>) -> Result<Body, DecodeError> {
    let last = match r.u8("last")? {
        0 => false,
        1 => true,
        other => {
            return Err(DecodeError::Invalid {
                what: "last (0 or 1)",
                value: other.into(),
            })
        }
    };
    Ok(Body::BackupChunk {
        last,
        data: decode_data(r)?,
    })
}

fn decode_hello_ok(r: &mut Reader<'_>) -> Result<Body, DecodeError> {
    let version = r.u8("version")?;
    let features = r.u32("features")?;
    let payload_bytes_max = r.u32("payload bytes max")?;
    let role = decode_enum(r, "node role", &NodeRole::ALL, |v| *v as u8)?;
    let last_seq = r.u64("last seq")?;
    let extension = if features & FEATURE_EXTENSION == 0 {
        None
    } else {
        let minor = r.u16("minor version")?;
        let count = r.count_u32("limits", ServerLimit::ENCODED_LEN)?;
        if count > HELLO_LIMITS_MAX {
            return Err(DecodeError::TooLong {
                what: "limits",
                len: count,
                max: HELLO_LIMITS_MAX,
            });
        }
        let mut limits = Vec::with_capacity(count);
        for _ in 0..count {
            limits.push(ServerLimit {
                id: r.u16("limit id")?,
                value: r.u64("limit value")?,
            });
        }
        Some(HelloExtension { minor, limits })
    };
    Ok(Body::HelloOk(HelloOk {
        version,
        features: features & !FEATURE_EXTENSION,
        payload_bytes_max,
        role,
        last_seq,
        extension,
    }))
}

fn decode_write_ok(r: &mut Reader<'_>) -> Result<WriteOk, DecodeError> {
    Ok(WriteOk {
        op_id: r.u64("op id")?,
        outcome: decode_enum(
            r,
            "write outcome",
            &[
                WriteOutcome::Pending,
                WriteOutcome::Absent,
                WriteOutcome::Existed,
            ],
            |v| *v as u8,
        )?,
    })
}

fn decode_cas_ok(r: &mut Reader<'_>) -> Result<CasOk, DecodeError> {
    Ok(CasOk {
        op_id: r.u64("op id")?,
        outcome: decode_enum(
            r,
            "compare-and-set outcome",
            &[
                WriteOutcome::Absent,
                WriteOutcome::Existed,
                WriteOutcome::Mismatch,
            ],
            |v| *v as u8,
        )?,
        version: r.u64("version")?,
    })
}

/// MGET_OK: a `u32` count, then per key what VALUE would hold.
fn decode_mget_ok(r: &mut Reader<'_>) -> Result<Body, DecodeError> {
    // An absent key takes one byte: no count can claim more than that.
    let count = r.count_u32("values", 1)?;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        values.push(decode_maybe_value(r)?);
    }
    Ok(Body::MGetOk(values))
}

fn decode_maybe_value(r: &mut Reader<'_>) -> Result<Option<Versioned>, DecodeError> {
    if !decode_bool(r, "found")? {
        return Ok(None);
    }
    Ok(Some(Versioned {
        version: r.u64("version")?,
        value: decode_data(r)?,
    }))
}

fn decode_value(r: &mut Reader<'_>) -> Result<Body, DecodeError> {
    decode_maybe_value(r).map(Body::Value)
}

fn decode_error(r: &mut Reader<'_>) -> Result<Body, DecodeError> {
    Ok(Body::Error(ErrorReply {
        code: r.u16("error code")?,
        message: decode_text(r, "error message")?,
        redirect: decode_text(r, "redirect")?,
    }))
}

fn decode_bool(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(DecodeError::Invalid {
            what,
            value: other.into(),
        }),
    }
}

/// Reads a `u8` that must be one of `values` (as mapped by `code`).
fn decode_enum<T: Copy>(
    r: &mut Reader<'_>,
    what: &'static str,
    values: &[T],
    code: impl Fn(&T) -> u8,
) -> Result<T, DecodeError> {
    let raw = r.u8(what)?;
    values
        .iter()
        .find(|v| code(v) == raw)
        .copied()
        .ok_or(DecodeError::Invalid {
            what,
            value: raw.into(),
        })
}

#[cfg(test)]
mod tests {
    use crate::serialize::DecodeError;
    use crate::wire::message::*;

    fn snapshot_with_gaps(n: usize) -> Message {
        let gaps = (0..n as u64)
            .map(|i| SeqGap {
                first: 10 * i + 1,
                last: 10 * i + 5,
            })
            .collect();
        let chunk = SnapshotChunk {
            snapshot_seq: 1 << 40,
            first: true,
            last: true,
            keep: false,
            gaps,
            entries: Vec::new(),
        };
        Message::new(0, Body::Snapshot(chunk))
    }

    /// A peer cannot make a member hold more than SNAPSHOT_GAPS_MAX gaps.
    #[test]
    fn a_snapshot_with_too_many_gaps_is_refused() {
        let ok = snapshot_with_gaps(SNAPSHOT_GAPS_MAX).to_frame();
        assert!(Message::from_frame(&ok).is_ok());
        let over = snapshot_with_gaps(SNAPSHOT_GAPS_MAX + 1).to_frame();
        match Message::from_frame(&over) {
            Err(MessageError::BadPayload {
                source: DecodeError::TooLong { what: "gaps", .. },
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
}
