//! Payload encoders, one per opcode class (spec §4 requests, §5 peer
//! messages, §4 replies). Encoding cannot fail: every value a `Body` can
//! hold has an encoding, and size limits are the sender's to check.

use super::message::{Body, FEATURE_EXTENSION};
use super::opcode::OpClass;
use crate::serialize::types::{encode_text, put_u32};
use crate::serialize::{encode_data, encode_list, Codec};
use byteorder::{BigEndian, WriteBytesExt};

/// A key bound (a WATCH prefix, RANGE's `from` and `to`, RANGE_OK's
/// `next`): `u16` length, then the bytes. At most KEY_BYTES_MAX bytes: the sender's limit to check.
fn encode_bound(out: &mut Vec<u8>, bound: &[u8]) {
    let _ = out.write_u16::<BigEndian>(u16::try_from(bound.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(bound);
}

/// Appends the payload of `body` to `out`.
pub(super) fn encode_body(body: &Body, out: &mut Vec<u8>) {
    match OpClass::of(body.opcode()) {
        OpClass::ClientRequest => encode_request(body, out),
        OpClass::Peer => encode_peer(body, out),
        OpClass::Reply | OpClass::Unknown => encode_reply(body, out),
    }
}

/// Client requests (0x01..=0x3F).
fn encode_request(body: &Body, out: &mut Vec<u8>) {
    use Body::*;
    match body {
        Hello(h) => {
            put_u8(out, h.role as u8);
            let _ = out.write_u32::<BigEndian>(h.features);
            encode_text(out, &h.node);
        }
        Put { key, value, .. } => {
            key.encode(out);
            encode_data(out, value);
        }
        Get { key } | Del { key, .. } => key.encode(out),
        GetAtLeast { key, min_seq } => {
            put_u64(out, *min_seq);
            key.encode(out);
        }
        PutIf {
            key,
            expected,
            value,
        } => {
            key.encode(out);
            put_u64(out, *expected);
            encode_data(out, value);
        }
        DelIf { key, expected } => {
            key.encode(out);
            put_u64(out, *expected);
        }
        MGet { keys } => encode_list(out, keys),
        MWrite { ops } => encode_list(out, ops),
        Watch { from_seq, prefix } => {
            put_u64(out, *from_seq);
            encode_bound(out, prefix);
        }
        Unwatch { watch_id } => put_u64(out, *watch_id),
        Range { from, to, limit } => {
            encode_bound(out, from);
            encode_bound(out, to);
            let _ = out.write_u32::<BigEndian>(*limit);
        }
        Size | GetKeys | GetTable | Stats | Backup => {}
        Verify { op_id } => put_u64(out, *op_id),
        Auth { user, password } => {
            encode_text(out, user);
            encode_text(out, password);
        }
        // Bodies of the other classes have their own encoder.
        _ => {}
    }
}

/// Replication and peer-handshake messages (0x40..=0x7F).
fn encode_peer(body: &Body, out: &mut Vec<u8>) {
    use Body::*;
    match body {
        Update(u) => u.encode(out),
        Ack { seq } | Handoff { seq } => put_u64(out, *seq),
        Snapshot(s) => {
            put_u64(out, s.snapshot_seq);
            put_u8(
                out,
                u8::from(s.first) | (u8::from(s.last) << 1) | (u8::from(s.keep) << 2),
            );
            encode_list(out, &s.gaps);
            encode_list(out, &s.entries);
        }
        PeerHello(h) => {
            encode_text(out, &h.from);
            encode_text(out, &h.to);
            encode_text(out, &h.root);
            out.extend_from_slice(&h.nonce);
        }
        PeerChallenge(c) => {
            out.extend_from_slice(&c.nonce);
            out.extend_from_slice(&c.proof);
        }
        PeerProof { proof } => out.extend_from_slice(proof),
        // Bodies of the other classes have their own encoder.
        _ => {}
    }
}

/// Replies (0x80 | request) and ERROR.
fn encode_reply(body: &Body, out: &mut Vec<u8>) {
    use Body::*;
    match body {
        AuthOk(access) => put_u8(out, *access as u8),
        HelloOk(h) => {
            put_u8(out, h.version);
            let features = match h.extension {
                Some(_) => h.features | FEATURE_EXTENSION,
                None => h.features & !FEATURE_EXTENSION,
            };
            let _ = out.write_u32::<BigEndian>(features);
            let _ = out.write_u32::<BigEndian>(h.payload_bytes_max);
            put_u8(out, h.role as u8);
            put_u64(out, h.last_seq);
            if let Some(ext) = &h.extension {
                let _ = out.write_u16::<BigEndian>(ext.minor);
                put_u32(out, ext.limits.len());
                for l in &ext.limits {
                    let _ = out.write_u16::<BigEndian>(l.id);
                    put_u64(out, l.value);
                }
            }
        }
        PutOk(w) | DelOk(w) => {
            put_u64(out, w.op_id);
            put_u8(out, w.outcome as u8);
        }
        Value(v) => encode_maybe_value(out, v.as_ref()),
        SizeOk { entries } => put_u64(out, *entries),
        Keys(keys) => encode_list(out, keys),
        Entries(entries) => encode_list(out, entries),
        StatsOk(s) => s.encode(out),
        VerifyOk(state) => put_u8(out, *state as u8),
        BackupChunk { last, data } => {
            put_u8(out, u8::from(*last));
            encode_data(out, data);
        }
        MGetOk(values) => {
            put_u32(out, values.len());
            for v in values {
                encode_maybe_value(out, v.as_ref());
            }
        }
        MWriteOk { op_id } => put_u64(out, *op_id),
        WatchEvent(e) => e.encode(out),
        Unwatched { found } => put_u8(out, u8::from(*found)),
        RangeOk { entries, next } => {
            encode_list(out, entries);
            encode_bound(out, next);
        }
        PutIfOk(c) | DelIfOk(c) => {
            put_u64(out, c.op_id);
            put_u8(out, c.outcome as u8);
            put_u64(out, c.version);
        }
        Error(e) => {
            let _ = out.write_u16::<BigEndian>(e.code);
            encode_text(out, &e.message);
            encode_text(out, &e.redirect);
        }
        // Bodies of the other classes have their own encoder.
        _ => {}
    }
}

/// VALUE's payload: `u8 found`, and if found `u64 version`, `data value`.
fn encode_maybe_value(out: &mut Vec<u8>, v: Option<&crate::wire::Versioned>) {
    match v {
        None => put_u8(out, 0),
        Some(v) => {
            put_u8(out, 1);
            put_u64(out, v.version);
            encode_data(out, &v.value);
        }
    }
}

fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    let _ = out.write_u64::<BigEndian>(v);
}
