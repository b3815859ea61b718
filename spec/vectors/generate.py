#!/usr/bin/env python3
"""Writes spec/vectors/frames.json: the protocol's test vectors.

This is an independent reference encoder for spec/PROTOCOL.md, written from
the spec and not from the Rust code, using only the Python standard library
(zlib's CRC-32 is the same CRC-32/IEEE the spec names). The Rust tests decode
every vector and re-encode it, so the two implementations check each other.

Run: python3 spec/vectors/generate.py   (rewrites frames.json in place)
"""
import hashlib
import hmac
import json
import os
import struct
import zlib

MAGIC, VERSION = 0x4354, 1
OP = dict(HELLO=0x01, PUT=0x02, GET=0x03, DEL=0x04, SIZE=0x05, GETKEYS=0x06,
          GETTABLE=0x07, STATS=0x08, VERIFY=0x09, AUTH=0x0A, BACKUP=0x0B, CPUT=0x0C, CDEL=0x0D,
          MGET=0x0E, MWRITE=0x0F, WATCH=0x10, UNWATCH=0x11, RANGE=0x12,
          UPDATE=0x40, ACK=0x41,
          SNAPSHOT=0x42, HANDOFF=0x43, PEER_HELLO=0x44, PEER_CHALLENGE=0x45,
          PEER_PROOF=0x46, ERROR=0xFF)
REPLY = 0x80
FLAG_ASYNC = 1
FLAG_NO_FORWARD = 2
FLAG_AT_LEAST = 4
ROLES = dict(standalone=0, head=1, middle=2, tail=3, solo=4, joining=5, fenced=6)
OUTCOMES = dict(pending=0, absent=1, existed=2, mismatch=3)
OP_STATES = dict(unknown=0, pending=1, executed=2)
ERRORS = dict(BAD_FRAME=1, UNSUPPORTED_VERSION=2, FRAME_TOO_LARGE=3, UNKNOWN_OPCODE=4,
              BAD_REQUEST=5, HANDSHAKE_REQUIRED=6, TOO_MANY_CONNECTIONS=7, BUSY=8,
              NOT_HEAD=9, NOT_TAIL=10, UNAVAILABLE=11, SHUTTING_DOWN=12,
              RESULT_TOO_LARGE=13, OUTCOME_UNKNOWN=14, INTERNAL=15, AUTH_REQUIRED=16,
              AUTH_FAILED=17, NOT_PERMITTED=18, STORAGE_UNAVAILABLE=19,
              HISTORY_GONE=20, WATCH_TOO_SLOW=21, BEHIND=22,
              WRONG_SHARD=23)
ACCESS = dict(readonly=1, readwrite=2)
# Protocol 1.1 (spec 4.1.1): HELLO feature bit 0 asks for HELLO_OK's
# extension; HELLO_OK feature bit 1 says it follows.
HELLO_WANTS_EXTENSION, FEATURE_AUTH_REQUIRED, FEATURE_EXTENSION, FEATURE_DATA_DIR, FEATURE_CAS = 1, 1, 2, 4, 8
LIMITS = dict(inflight_max=1, output_bytes_max=2, value_bytes_max=3, key_bytes_max=4,
              idle_timeout_ms=5, send_timeout_ms=6, watches_per_conn_max=7,
              watch_history_bytes=8)
FEATURE_WATCH = 32
WATCH_FROM_NOW = (1 << 64) - 1


def frame(opcode, request_id, payload, flags=0, version=VERSION, magic=MAGIC, crc=None):
    head = struct.pack(">HBBHHQI", magic, version, opcode, flags, 0, request_id, len(payload))
    if crc is None:
        crc = zlib.crc32(head + payload) & 0xFFFFFFFF
    return head + struct.pack(">I", crc) + payload


def key(k):
    return struct.pack(">H", len(k)) + k


def data(d):
    return struct.pack(">I", len(d)) + d


def text(t):
    b = t.encode()
    return struct.pack(">H", len(b)) + b


def batch_write(o):
    """One write of an MWRITE (and of an UPDATE BATCH)."""
    if o["op"] == "put":
        return bytes([OP["PUT"]]) + key(o["key"].encode()) + data(o["value"].encode())
    return bytes([OP["DEL"]]) + key(o["key"].encode())


def change(c):
    """One change of a WATCH_EVENT: kind, key, and for a put the value."""
    kind = {"put": 0x02, "changed": 0x03, "del": 0x04}[c["op"]]
    out = bytes([kind]) + key(c["key"].encode())
    return out + data(c["value"].encode()) if c["op"] == "put" else out


def entry(e):
    return key(e["key"].encode()) + struct.pack(">Q", e["version"]) + data(e["value"].encode())


def stats(fields):
    out = struct.pack(">H", len(fields))
    for name, value in fields:
        out += text(name)
        out += b"\x00" + struct.pack(">Q", value) if isinstance(value, int) else b"\x01" + text(value)
    return out


def encode(m):
    """Encodes the JSON form of a message (see frames.json) into a frame."""
    t, rid = m["type"], m["request_id"]
    flags = (FLAG_ASYNC if m.get("async") else 0) | (FLAG_NO_FORWARD if m.get("no_forward") else 0)
    flags |= FLAG_AT_LEAST if "min_seq" in m else 0
    k = m.get("key", "").encode()
    if t == "HELLO":
        p = bytes([{"client": 1, "peer": 2}[m["role"]]]) + struct.pack(">I", m["features"]) + text(m["node"])
    elif t == "PUT":
        p = key(k) + data(m["value"].encode())
    elif t == "GET" and "min_seq" in m:
        p = struct.pack(">Q", m["min_seq"]) + key(k)
    elif t in ("GET", "DEL"):
        p = key(k)
    elif t in ("SIZE", "GETKEYS", "GETTABLE", "STATS", "BACKUP"):
        p = b""
    elif t == "VERIFY":
        p = struct.pack(">Q", m["op_id"])
    elif t == "CPUT":
        p = key(k) + struct.pack(">Q", m["expected"]) + data(m["value"].encode())
    elif t == "CDEL":
        p = key(k) + struct.pack(">Q", m["expected"])
    elif t == "MGET":
        p = struct.pack(">I", len(m["keys"])) + b"".join(key(x.encode()) for x in m["keys"])
    elif t == "MWRITE":
        p = struct.pack(">I", len(m["ops"])) + b"".join(batch_write(o) for o in m["ops"])
    elif t == "WATCH":
        prefix = m["prefix"].encode()
        p = struct.pack(">QH", m["from_seq"], len(prefix)) + prefix
    elif t == "UNWATCH":
        p = struct.pack(">Q", m["watch_id"])
    elif t == "RANGE":
        lo, hi = m["from"].encode(), m["to"].encode()
        p = struct.pack(">H", len(lo)) + lo + struct.pack(">H", len(hi)) + hi + struct.pack(">I", m["limit"])
    elif t == "RANGE_OK":
        nxt = m["next"].encode()
        p = struct.pack(">I", len(m["entries"])) + b"".join(entry(e) for e in m["entries"]) + struct.pack(">H", len(nxt)) + nxt
    elif t == "WATCH_EVENT":
        p = struct.pack(">QBI", m["seq"], int(m["more"]), len(m["changes"])) + b"".join(change(c) for c in m["changes"])
    elif t == "UNWATCH_OK":
        p = bytes([int(m["found"])])
    elif t == "MGET_OK":
        p = struct.pack(">I", len(m["values"])) + b"".join(
            b"\x00" if v is None else b"\x01" + struct.pack(">Q", v["version"]) + data(v["value"].encode())
            for v in m["values"])
    elif t == "MWRITE_OK":
        p = struct.pack(">Q", m["op_id"])
    elif t in ("CPUT_OK", "CDEL_OK"):
        p = struct.pack(">QBQ", m["op_id"], OUTCOMES[m["outcome"]], m["version"])
    elif t == "AUTH":
        p = text(m["user"]) + text(m["password"])
    elif t == "AUTH_OK":
        p = bytes([ACCESS[m["access"]]])
    elif t == "UPDATE":
        p = update(m)
    elif t in ("ACK", "HANDOFF"):
        p = struct.pack(">Q", m["seq"])
    elif t == "SNAPSHOT":
        gaps = struct.pack(">I", len(m["gaps"])) + b"".join(struct.pack(">QQ", g["first"], g["last"]) for g in m["gaps"])
        snap_flags = int(m["first"]) | int(m["last"]) << 1 | int(m.get("keep", False)) << 2
        p = struct.pack(">QB", m["snapshot_seq"], snap_flags) + gaps + struct.pack(">I", len(m["entries"])) + b"".join(entry(e) for e in m["entries"])
    elif t == "PEER_HELLO":
        p = text(m["from"]) + text(m["to"]) + text(m["root"]) + bytes.fromhex(m["nonce"])
    elif t == "PEER_CHALLENGE":
        p = bytes.fromhex(m["nonce"]) + bytes.fromhex(m["proof"])
    elif t == "PEER_PROOF":
        p = bytes.fromhex(m["proof"])
    elif t == "HELLO_OK":
        p = struct.pack(">BIIBQ", m["version"], m["features"], m["payload_bytes_max"], ROLES[m["role"]], m["last_seq"])
        ext = m.get("extension")
        assert (ext is not None) == bool(m["features"] & FEATURE_EXTENSION), "bit 1 says whether the extension follows"
        if ext is not None:
            p += struct.pack(">HI", ext["minor"], len(ext["limits"]))
            p += b"".join(struct.pack(">HQ", LIMITS[l["name"]], l["value"]) for l in ext["limits"])
    elif t in ("PUT_OK", "DEL_OK"):
        p = struct.pack(">QB", m["op_id"], OUTCOMES[m["outcome"]])
    elif t == "VALUE":
        p = b"\x00" if m["found"] is False else b"\x01" + struct.pack(">Q", m["version"]) + data(m["value"].encode())
    elif t == "SIZE_OK":
        p = struct.pack(">Q", m["entries"])
    elif t == "KEYS":
        p = struct.pack(">I", len(m["keys"])) + b"".join(key(x.encode()) for x in m["keys"])
    elif t == "ENTRIES":
        p = struct.pack(">I", len(m["entries"])) + b"".join(entry(e) for e in m["entries"])
    elif t == "STATS_OK":
        p = stats([(f["name"], f["value"]) for f in m["fields"]])
    elif t == "BACKUP_CHUNK":
        p = bytes([int(m["last"])]) + data(bytes.fromhex(m["data_hex"]))
    elif t == "VERIFY_OK":
        p = bytes([OP_STATES[m["state"]]])
    elif t == "ERROR":
        p = struct.pack(">H", ERRORS[m["code"]]) + text(m["message"]) + text(m["redirect"])
    else:
        raise ValueError(t)
    opcode = OP[t] if t in OP else OP[{"HELLO_OK": "HELLO", "PUT_OK": "PUT", "VALUE": "GET", "DEL_OK": "DEL", "SIZE_OK": "SIZE", "KEYS": "GETKEYS", "ENTRIES": "GETTABLE", "STATS_OK": "STATS", "VERIFY_OK": "VERIFY", "AUTH_OK": "AUTH", "BACKUP_CHUNK": "BACKUP", "CPUT_OK": "CPUT", "CDEL_OK": "CDEL", "MGET_OK": "MGET", "MWRITE_OK": "MWRITE", "WATCH_EVENT": "WATCH", "UNWATCH_OK": "UNWATCH", "RANGE_OK": "RANGE"}[t]] | REPLY
    return frame(opcode, rid, p, flags)


VALID = [
    ("hello-client", dict(type="HELLO", request_id=1, role="client", features=0, node="")),
    ("hello-peer", dict(type="HELLO", request_id=1, role="peer", features=0, node="node0000000007")),
    ("hello-ok", dict(type="HELLO_OK", request_id=1, version=1, features=0, payload_bytes_max=16777216, role="tail", last_seq=41)),
    # Protocol 1.1: a client that asks for the extension, and a server's answer.
    ("hello-client-1.1", dict(type="HELLO", request_id=1, role="client", features=HELLO_WANTS_EXTENSION, node="")),
    ("hello-ok-1.1", dict(type="HELLO_OK", request_id=1, version=1, features=FEATURE_EXTENSION | FEATURE_DATA_DIR,
                          payload_bytes_max=16777216, role="standalone", last_seq=7,
                          extension=dict(minor=1, limits=[
                              dict(name="inflight_max", value=4096),
                              dict(name="output_bytes_max", value=33554432),
                              dict(name="value_bytes_max", value=8388608),
                              dict(name="key_bytes_max", value=1024),
                              dict(name="idle_timeout_ms", value=300000),
                              dict(name="send_timeout_ms", value=30000)]))),
    ("put-sync", dict(type="PUT", request_id=2, key="foo", value="bar", **{"async": False})),
    ("put-async", dict(type="PUT", request_id=3, key="k", value="", **{"async": True})),
    ("put-no-forward", dict(type="PUT", request_id=4, key="foo", value="bar", no_forward=True, **{"async": False})),
    ("put-ok", dict(type="PUT_OK", request_id=2, op_id=42, outcome="absent")),
    ("put-ok-pending", dict(type="PUT_OK", request_id=3, op_id=43, outcome="pending")),
    ("get", dict(type="GET", request_id=4, key="foo")),
    ("get-at-least", dict(type="GET", request_id=5, key="foo", min_seq=42)),
    ("value-found", dict(type="VALUE", request_id=4, found=True, version=42, value="bar")),
    ("value-not-found", dict(type="VALUE", request_id=4, found=False)),
    ("del-sync", dict(type="DEL", request_id=5, key="foo", **{"async": False})),
    ("del-ok", dict(type="DEL_OK", request_id=5, op_id=44, outcome="existed")),
    ("size", dict(type="SIZE", request_id=6)),
    ("size-ok", dict(type="SIZE_OK", request_id=6, entries=2)),
    ("getkeys", dict(type="GETKEYS", request_id=7)),
    ("keys", dict(type="KEYS", request_id=7, keys=["a", "bc"])),
    ("gettable", dict(type="GETTABLE", request_id=8)),
    ("entries", dict(type="ENTRIES", request_id=8, entries=[dict(key="a", version=1, value="x")])),
    ("stats", dict(type="STATS", request_id=9)),
    ("stats-ok", dict(type="STATS_OK", request_id=9, fields=[dict(name="ops", value=7), dict(name="role", value="head")])),
    ("verify", dict(type="VERIFY", request_id=10, op_id=43)),
    ("verify-ok", dict(type="VERIFY_OK", request_id=10, state="executed")),
    ("backup", dict(type="BACKUP", request_id=13)),
    # A whole backup in one chunk: the snapshot file of vectors/storage.json.
    ("backup-chunk-last", dict(type="BACKUP_CHUNK", request_id=13, last=True, data_hex=None)),
    ("hello-ok-auth-required", dict(type="HELLO_OK", request_id=1, version=1, features=1, payload_bytes_max=16777216, role="standalone", last_seq=0)),
    ("auth", dict(type="AUTH", request_id=2, user="alice", password="wonderland")),
    ("auth-ok", dict(type="AUTH_OK", request_id=2, access="readwrite")),
    ("error-auth-required", dict(type="ERROR", request_id=3, code="AUTH_REQUIRED", message="send AUTH first", redirect="")),
    ("error-not-tail", dict(type="ERROR", request_id=4, code="NOT_TAIL", message="not the tail", redirect="127.0.0.1:9002")),
    ("error-behind", dict(type="ERROR", request_id=5, code="BEHIND", message="this member's history does not reach the read's floor", redirect="127.0.0.1:9002")),
    ("error-wrong-shard", dict(type="ERROR", request_id=6, code="WRONG_SHARD", message="key outside this chain's ranges in shard map 3", redirect="map:3")),
    ("error-storage-unavailable", dict(type="ERROR", request_id=12, code="STORAGE_UNAVAILABLE", message="cannot write the log: No space left on device (os error 28)", redirect="")),
    ("error-not-found-opcode", dict(type="ERROR", request_id=11, code="UNKNOWN_OPCODE", message="unknown opcode 0x3f", redirect="")),
    ("update-put", dict(type="UPDATE", request_id=0, seq=42, prev_seq=41, op="put", key="foo", value="bar")),
    ("update-del", dict(type="UPDATE", request_id=0, seq=44, prev_seq=43, op="del", key="foo")),
    # A new head's mark (its last was 44): a NOOP claiming the skipped ids,
    # then its first write.
    ("update-takeover-mark", dict(type="UPDATE", request_id=0, seq=1048620, prev_seq=44, op="noop")),
    ("update-after-takeover", dict(type="UPDATE", request_id=0, seq=1048621, prev_seq=1048620, op="del", key="foo")),
    # Compare-and-set: create "foo" only if absent; replace it only at version 42.
    ("cput-if-absent", dict(type="CPUT", request_id=14, key="foo", expected=0, value="bar")),
    ("cput-ok-mismatch", dict(type="CPUT_OK", request_id=14, op_id=50, outcome="mismatch", version=42)),
    ("cput", dict(type="CPUT", request_id=15, key="foo", expected=42, value="baz")),
    ("cput-ok", dict(type="CPUT_OK", request_id=15, op_id=51, outcome="existed", version=51)),
    ("cdel", dict(type="CDEL", request_id=16, key="foo", expected=51)),
    ("cdel-ok", dict(type="CDEL_OK", request_id=16, op_id=52, outcome="existed", version=0)),
    # What the chain carries for them: the mismatch as UNCHANGED, then a put.
    ("update-unchanged", dict(type="UPDATE", request_id=0, seq=50, prev_seq=49, op="unchanged", version=42)),
    # Batches: two writes as one (op 60), then both read at once.
    ("mwrite", dict(type="MWRITE", request_id=17, ops=[dict(op="put", key="a", value="1"), dict(op="del", key="b")])),
    ("mwrite-ok", dict(type="MWRITE_OK", request_id=17, op_id=60)),
    ("mget", dict(type="MGET", request_id=18, keys=["a", "b"])),
    ("mget-ok", dict(type="MGET_OK", request_id=18, values=[dict(version=60, value="1"), None])),
    ("update-batch", dict(type="UPDATE", request_id=0, seq=60, prev_seq=59, op="batch",
                          ops=[dict(op="put", key="a", value="1"), dict(op="del", key="b")])),
    # Watches (spec 4.1.2): every change under "user/" after op 60; the
    # stream's first frame names its start, then one frame per write.
    ("watch", dict(type="WATCH", request_id=19, from_seq=60, prefix="user/")),
    ("watch-from-now", dict(type="WATCH", request_id=20, from_seq=WATCH_FROM_NOW, prefix="")),
    ("watch-event-start", dict(type="WATCH_EVENT", request_id=19, seq=60, more=False, changes=[])),
    ("watch-event", dict(type="WATCH_EVENT", request_id=19, seq=61, more=False,
                         changes=[dict(op="put", key="user/1", value="ann")])),
    # An MWRITE (op 62) too large for one frame: its changes in two frames.
    ("watch-event-more", dict(type="WATCH_EVENT", request_id=19, seq=62, more=True,
                              changes=[dict(op="del", key="user/1")])),
    ("watch-event-last", dict(type="WATCH_EVENT", request_id=19, seq=62, more=False,
                              changes=[dict(op="changed", key="user/2")])),
    ("watch-event-progress", dict(type="WATCH_EVENT", request_id=19, seq=90, more=False, changes=[])),
    ("range", dict(type="RANGE", request_id=22, **{"from": "user/a", "to": "user/m", "limit": 2})),
    ("range-to-the-end", dict(type="RANGE", request_id=23, **{"from": "", "to": "", "limit": 1024})),
    ("range-ok", dict(type="RANGE_OK", request_id=22, entries=[dict(key="user/ann", version=7, value="x"), dict(key="user/bob", version=9, value="yz")], next="user/cat")),
    ("range-ok-done", dict(type="RANGE_OK", request_id=23, entries=[], next="")),
    ("unwatch", dict(type="UNWATCH", request_id=21, watch_id=19)),
    ("unwatch-ok", dict(type="UNWATCH_OK", request_id=21, found=True)),
    ("error-history-gone", dict(type="ERROR", request_id=19, code="HISTORY_GONE", message="this member keeps the changes after seq 70 only: read the keys, then watch from now", redirect="")),
    ("error-watch-too-slow", dict(type="ERROR", request_id=19, code="WATCH_TOO_SLOW", message="33554500 bytes of changes behind: resume from the last seq received", redirect="")),
    ("hello-ok-cas", dict(type="HELLO_OK", request_id=1, version=1, features=FEATURE_CAS, payload_bytes_max=16777216, role="head", last_seq=49)),
    ("ack", dict(type="ACK", request_id=0, seq=44)),
    ("handoff", dict(type="HANDOFF", request_id=0, seq=45)),
    # A delta to a joiner whose log ends at op 44: it keeps its table.
    ("snapshot-keep", dict(type="SNAPSHOT", request_id=0, snapshot_seq=44, first=True, last=True, keep=True, gaps=[], entries=[])),
    ("snapshot-only-chunk", dict(type="SNAPSHOT", request_id=0, snapshot_seq=41, first=True, last=True, gaps=[dict(first=3, last=9)], entries=[dict(key="a", version=40, value="x")])),
]


# The peer handshake of spec 5.1 with a known secret and nonces, and MACed
# frames on the resulting link (5.2). Proofs, keys and tags are computed
# here from the spec's formulas, independently of the Rust code.
HANDSHAKE = dict(secret="correct horse battery staple", from_node="node0000000001",
                 to_node="node0000000002", root="/chain", nonce_p="01" * 32, nonce_s="02" * 32)


def handshake():
    h = HANDSHAKE
    secret = h["secret"].encode()
    transcript = (b"chaintable-peer-v1" + text(h["from_node"]) + text(h["to_node"]) + text(h["root"])
                  + bytes.fromhex(h["nonce_p"]) + bytes.fromhex(h["nonce_s"]))

    def mac(label):
        return hmac.new(secret, label + transcript, hashlib.sha256).digest()

    proof_s, proof_p = mac(b"proof successor"), mac(b"proof predecessor")
    key_down, key_up = mac(b"key down"), mac(b"key up")

    def sealed(key, counter, m):
        """m encoded, with its 16-byte tag appended to the payload."""
        plain = encode(m)
        opcode, flags, request_id = plain[3], struct.unpack(">H", plain[4:6])[0], struct.unpack(">Q", plain[8:16])[0]
        body = plain[24:]
        tag = hmac.new(key, struct.pack(">QBHQ", counter, opcode, flags, request_id) + body, hashlib.sha256).digest()[:16]
        return frame(opcode, request_id, body + tag, flags)

    hello = dict(type="PEER_HELLO", request_id=0, nonce=h["nonce_p"], root=h["root"], to=h["to_node"], **{"from": h["from_node"]})
    challenge = dict(type="PEER_CHALLENGE", request_id=0, nonce=h["nonce_s"], proof=proof_s.hex())
    proof = dict(type="PEER_PROOF", request_id=0, proof=proof_p.hex())
    hello_ok = dict(type="HELLO_OK", request_id=0, version=1, features=0, payload_bytes_max=16777216, role="tail", last_seq=41)
    update = dict(type="UPDATE", request_id=0, seq=42, prev_seq=41, op="put", key="foo", value="bar")
    ack = dict(type="ACK", request_id=0, seq=42)
    return dict(h, transcript=transcript.hex(), proof_successor=proof_s.hex(), proof_predecessor=proof_p.hex(),
                key_down=key_down.hex(), key_up=key_up.hex(),
                frames=[dict(name="peer-hello", direction="down", hex=encode(hello).hex(), message=hello),
                        dict(name="peer-challenge", direction="up", hex=encode(challenge).hex(), message=challenge),
                        dict(name="peer-proof", direction="down", hex=encode(proof).hex(), message=proof),
                        dict(name="sealed-hello-ok", direction="up", counter=0, hex=sealed(key_up, 0, hello_ok).hex(), message=hello_ok),
                        dict(name="sealed-update", direction="down", counter=0, hex=sealed(key_down, 0, update).hex(), message=update),
                        dict(name="sealed-ack", direction="up", counter=1, hex=sealed(key_up, 1, ack).hex(), message=ack)])


def malformed():
    good = encode(dict(type="GET", request_id=4, key="foo"))
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0x01                      # payload changed after the CRC was computed
    flipped_crc = bytearray(good)
    flipped_crc[23] ^= 0xFF                  # CRC field itself damaged
    too_long_key = frame(OP["GET"], 4, key(b"x" * 1025))
    return [
        ("bad-magic", b"GET / HTTP/1.1\r\n\r\n", "BAD_MAGIC", "BAD_FRAME", True),
        ("bad-version", frame(OP["GET"], 4, key(b"foo"), version=2), "UNSUPPORTED_VERSION", "UNSUPPORTED_VERSION", True),
        ("bad-crc-payload", bytes(bad_crc), "BAD_CRC", "BAD_FRAME", True),
        ("bad-crc-field", bytes(flipped_crc), "BAD_CRC", "BAD_FRAME", True),
        ("oversized-length", good[:16] + struct.pack(">I", 16 * 1024 * 1024 + 1) + good[20:24], "FRAME_TOO_LARGE", "FRAME_TOO_LARGE", True),
        ("truncated-header", good[:10], "TRUNCATED", None, True),
        ("truncated-payload", good[:-1], "TRUNCATED", None, True),
        ("unknown-opcode", frame(0x3F, 11, b""), "UNKNOWN_OPCODE", "UNKNOWN_OPCODE", False),
        ("unknown-reply-opcode", frame(0xBF, 11, b""), "UNKNOWN_OPCODE", "UNKNOWN_OPCODE", False),
        ("trailing-bytes", frame(OP["SIZE"], 6, b"\x00"), "BAD_PAYLOAD", "BAD_REQUEST", False),
        ("empty-key", frame(OP["GET"], 4, key(b"")), "BAD_PAYLOAD", "BAD_REQUEST", False),
        ("key-too-long", too_long_key, "BAD_PAYLOAD", "BAD_REQUEST", False),
        ("range-limit-zero", frame(OP["RANGE"], 22, struct.pack(">HH", 0, 0) + struct.pack(">I", 0)), "BAD_PAYLOAD", "BAD_REQUEST", False),
        ("range-limit-over-max", frame(OP["RANGE"], 22, struct.pack(">HH", 0, 0) + struct.pack(">I", 1025)), "BAD_PAYLOAD", "BAD_REQUEST", False),
        ("watch-prefix-too-long", frame(OP["WATCH"], 19, struct.pack(">QH", 0, 1025) + b"x" * 1025), "BAD_PAYLOAD", "BAD_REQUEST", False),
        ("data-length-past-end", frame(OP["PUT"], 2, key(b"k") + struct.pack(">I", 100) + b"abc"), "BAD_PAYLOAD", "BAD_REQUEST", False),
        ("bad-update-kind", frame(OP["UPDATE"], 0, struct.pack(">QQ", 1, 0) + b"\x07" + key(b"k")), "BAD_PAYLOAD", "UNKNOWN_OPCODE", False),
        ("snapshot-keep-with-entries", frame(OP["SNAPSHOT"], 0, struct.pack(">QBI", 44, 7, 0) + struct.pack(">I", 1) + entry(dict(key="a", version=40, value="x"))), "BAD_PAYLOAD", "UNKNOWN_OPCODE", False),
        ("snapshot-gap-reversed", frame(OP["SNAPSHOT"], 0, struct.pack(">QBIQQI", 9, 3, 1, 5, 4, 0)), "BAD_PAYLOAD", "UNKNOWN_OPCODE", False),
    ]


# ----- spec/STORAGE.md: the data directory's files --------------------------

WAL_MAGIC = b"CTWAL\x00\x00\x01"
SNAP_MAGIC = b"CTSNP\x00\x00\x01"
KIND_UPDATE, KIND_SNAP_HEADER, KIND_SNAP_ENTRIES, KIND_SNAP_END = 1, 2, 3, 4
M64 = (1 << 64) - 1


def record(kind, body):
    payload = bytes([kind]) + body
    return struct.pack(">II", len(payload), zlib.crc32(payload) & 0xFFFFFFFF) + payload


UPDATE_KIND_NOOP = 0x00
UPDATE_KIND_UNCHANGED = 0x01
UPDATE_KIND_BATCH = 0x03


def update(u):
    """An UPDATE payload (also a log record's body)."""
    if u["op"] == "put":
        body = bytes([OP["PUT"]]) + key(u["key"].encode()) + data(u["value"].encode())
    elif u["op"] == "del":
        body = bytes([OP["DEL"]]) + key(u["key"].encode())
    elif u["op"] == "batch":
        body = bytes([UPDATE_KIND_BATCH]) + struct.pack(">I", len(u["ops"])) + b"".join(batch_write(o) for o in u["ops"])
    elif u["op"] == "unchanged":
        body = bytes([UPDATE_KIND_UNCHANGED]) + struct.pack(">Q", u["version"])
    else:
        body = bytes([UPDATE_KIND_NOOP])
    return struct.pack(">QQ", u["seq"], u["prev_seq"]) + body


def entry_digest(e):
    k, v = e["key"].encode(), e["value"].encode()
    c = zlib.crc32(struct.pack(">I", len(k)) + k + struct.pack(">Q", e["version"]) + v) & 0xFFFFFFFF
    z = c ^ (len(v) << 32)
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def storage():
    updates = [
        dict(seq=1, prev_seq=0, op="put", key="apple", value="red"),
        dict(seq=2, prev_seq=1, op="put", key="apple", value="green"),
        # A restart logs its mark: ids 3..=1048578 skipped (see STORAGE.md, Restart).
        dict(seq=1048578, prev_seq=2, op="noop"),
        dict(seq=1048579, prev_seq=1048578, op="del", key="apple"),
        dict(seq=1048580, prev_seq=1048579, op="put", key="pear", value="yellow"),
    ]
    segment = WAL_MAGIC + b"".join(record(KIND_UPDATE, update(u)) for u in updates)
    entries = [dict(key="apple", version=2, value="green")]
    digest = sum(entry_digest(e) for e in entries) & M64
    snapshot = (SNAP_MAGIC
                + record(KIND_SNAP_HEADER, struct.pack(">QI", 2, 0))
                + record(KIND_SNAP_ENTRIES, struct.pack(">I", len(entries)) + b"".join(entry(e) for e in entries))
                + record(KIND_SNAP_END, struct.pack(">QQQ", len(entries), digest, 2)))
    after_snapshot = WAL_MAGIC + b"".join(record(KIND_UPDATE, update(u)) for u in updates[2:])
    return {
        "about": "Test vectors for spec/STORAGE.md. 'segment' is a whole log segment file named 'segment_name'; "
                 "'snapshot' a whole snapshot file named 'snapshot_name', and 'after_snapshot' the segment that "
                 "follows it. Either directory ('segment' alone, or 'snapshot' with 'after_snapshot') recovers to 'table' "
                 "with last_seq 'last_seq' and 'gaps'. Generated by generate.py.",
        "updates": updates,
        "segment_name": "%020d.wal" % 0,
        "segment": segment.hex(),
        "snapshot_name": "%020d.snap" % 2,
        "snapshot": snapshot.hex(),
        "snapshot_entries": entries,
        "snapshot_digest": digest,
        "after_snapshot_name": "%020d.wal" % 2,
        "after_snapshot": after_snapshot.hex(),
        "table": [dict(key="pear", version=1048580, value="yellow")],
        "last_seq": 1048580,
        "gaps": [dict(first=3, last=1048578)],
    }


def main():
    for _, m in VALID:
        if m.get("data_hex", "") is None:
            m["data_hex"] = storage()["snapshot"]
    vectors = {
        "about": "Test vectors for spec/PROTOCOL.md. 'valid' frames decode to 'message' and 'message' encodes to exactly 'hex'. "
                 "'malformed' frames must produce 'error' (decoder result) and the server answers 'server_reply' "
                 "(an ERROR frame with that code; null means the server waits for more bytes) and closes the connection if 'closes'. "
                 "Limits assumed: payload_bytes_max = 16777216. Generated by generate.py.",
        "valid": [dict(name=n, hex=encode(m).hex(), message=m) for n, m in VALID],
        "malformed": [dict(name=n, hex=b.hex(), error=e, server_reply=r, closes=c) for n, b, e, r, c in malformed()],
        "handshake": handshake(),
    }
    here = os.path.dirname(os.path.abspath(__file__))
    for name, content in (("frames.json", vectors), ("storage.json", storage())):
        with open(os.path.join(here, name), "w") as f:
            json.dump(content, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
