"""Frames and messages of the chaintable protocol 1.1 (spec/PROTOCOL.md).

Written from the spec: frames (section 2), the client requests and their
replies (section 4), ERROR and its retry classes (section 4.2), and HELLO's
1.1 extension (section 4.1.1). Every read goes through a bounds-checked
reader; leftover bytes are an error, as the spec requires of a receiver.
"""
from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

MAGIC = 0x4354
VERSION = 1
HEADER = struct.Struct(">HBBHHQII")
HEADER_BYTES = HEADER.size  # 24
FLAG_ASYNC = 0x0001
FLAG_AT_LEAST = 0x0004  # a GET with a floor: u64 min_seq, then the key (section 5.7)
FLAG_NO_FORWARD = 0x0002  # a write to redirect (NOT_HEAD), not forward (section 5.6)

KEY_BYTES_MAX = 1024
VALUE_BYTES_MAX = 8 * 1024 * 1024
TEXT_BYTES_MAX = 1024
STATS_FIELDS_MAX = 256
HELLO_LIMITS_MAX = 64
#: What a client must accept before HELLO_OK tells it the server's limit:
#: an ERROR with a u16 code and two full texts (spec section 2.1).
ERROR_PAYLOAD_BYTES_MAX = 2 + 2 * (2 + TEXT_BYTES_MAX)
#: The 1.0 default of payload_bytes_max, used until HELLO_OK says otherwise.
PAYLOAD_BYTES_MAX_DEFAULT = 16 * 1024 * 1024

HELLO_WANTS_EXTENSION = 1
FEATURE_AUTH_REQUIRED = 1
FEATURE_EXTENSION = 1 << 1
FEATURE_DATA_DIR = 1 << 2
FEATURE_CAS = 1 << 3
FEATURE_BATCH = 1 << 4
FEATURE_WATCH = 1 << 5
FEATURE_CRAQ_READS = 1 << 6
FEATURE_READ_FLOORS = 1 << 7
#: HELLO_OK feature bit: the server takes RANGE.
FEATURE_RANGE = 1 << 8
#: WATCH's from_seq for "changes from now on" (spec section 4.1.2).
WATCH_FROM_NOW = (1 << 64) - 1
#: Longest key, and longest WATCH prefix.
KEY_BYTES_MAX = 1024
#: Most keys in one MGET, most writes in one MWRITE.
BATCH_OPS_MAX = 1024
#: Most entries one RANGE asks for.
RANGE_LIMIT_MAX = 1024


class Op(enum.IntEnum):
    HELLO = 0x01
    PUT = 0x02
    GET = 0x03
    DEL = 0x04
    SIZE = 0x05
    GETKEYS = 0x06
    GETTABLE = 0x07
    STATS = 0x08
    VERIFY = 0x09
    AUTH = 0x0A
    BACKUP = 0x0B
    CPUT = 0x0C
    CDEL = 0x0D
    MGET = 0x0E
    MWRITE = 0x0F
    WATCH = 0x10
    UNWATCH = 0x11
    RANGE = 0x12


REPLY = 0x80
ERROR = 0xFF

ROLES = ["standalone", "head", "middle", "tail", "solo", "joining", "fenced"]
OUTCOMES = ["pending", "absent", "existed"]
CAS_OUTCOMES = {1: "absent", 2: "existed", 3: "mismatch"}
OP_STATES = ["unknown", "pending", "executed"]
LIMIT_NAMES = {
    1: "inflight_max",
    2: "output_bytes_max",
    3: "value_bytes_max",
    4: "key_bytes_max",
    5: "idle_timeout_ms",
    6: "send_timeout_ms",
    7: "watches_per_conn_max",
    8: "watch_history_bytes",
}


class Retry(enum.Enum):
    """What a client may do after an error (spec section 4.2)."""

    RETRIABLE = "retriable"  # not executed: send again (to the redirect, or later)
    NOT_RETRIABLE = "not retriable"
    OUTCOME_UNKNOWN = "outcome unknown"  # a write may have taken effect


#: code -> (name, retry class, whether the server closes after it)
ERRORS: Dict[int, Tuple[str, Retry, bool]] = {
    1: ("BAD_FRAME", Retry.NOT_RETRIABLE, True),
    2: ("UNSUPPORTED_VERSION", Retry.NOT_RETRIABLE, True),
    3: ("FRAME_TOO_LARGE", Retry.NOT_RETRIABLE, True),
    4: ("UNKNOWN_OPCODE", Retry.NOT_RETRIABLE, False),
    5: ("BAD_REQUEST", Retry.NOT_RETRIABLE, False),
    6: ("HANDSHAKE_REQUIRED", Retry.NOT_RETRIABLE, False),
    7: ("TOO_MANY_CONNECTIONS", Retry.RETRIABLE, True),
    8: ("BUSY", Retry.RETRIABLE, False),
    9: ("NOT_HEAD", Retry.RETRIABLE, False),
    10: ("NOT_TAIL", Retry.RETRIABLE, False),
    11: ("UNAVAILABLE", Retry.RETRIABLE, False),
    12: ("SHUTTING_DOWN", Retry.RETRIABLE, True),
    13: ("RESULT_TOO_LARGE", Retry.NOT_RETRIABLE, False),
    14: ("OUTCOME_UNKNOWN", Retry.OUTCOME_UNKNOWN, False),
    15: ("INTERNAL", Retry.OUTCOME_UNKNOWN, False),
    16: ("AUTH_REQUIRED", Retry.NOT_RETRIABLE, False),
    17: ("AUTH_FAILED", Retry.NOT_RETRIABLE, True),
    18: ("NOT_PERMITTED", Retry.NOT_RETRIABLE, False),
    19: ("STORAGE_UNAVAILABLE", Retry.RETRIABLE, False),
    20: ("HISTORY_GONE", Retry.NOT_RETRIABLE, False),
    21: ("WATCH_TOO_SLOW", Retry.RETRIABLE, False),
    22: ("BEHIND", Retry.RETRIABLE, False),
    23: ("WRONG_SHARD", Retry.RETRIABLE, False),
}


class ProtocolError(Exception):
    """The peer sent bytes that do not follow the spec (or ended early)."""


class ServerError(Exception):
    """An ERROR frame: the request failed; `retry` says what may follow."""

    def __init__(self, code: int, message: str, redirect: str) -> None:
        name, retry, _ = ERRORS.get(code, (f"code {code}", Retry.NOT_RETRIABLE, False))
        super().__init__(f"{name}: {message}" + (f" (try {redirect})" if redirect else ""))
        self.code = code
        self.name = name
        self.message = message
        self.redirect = redirect
        # Unknown codes are not retriable (spec section 4.2).
        self.retry = retry


@dataclass(frozen=True)
class Frame:
    opcode: int
    flags: int
    request_id: int
    payload: bytes

    def encode(self) -> bytes:
        head = struct.pack(">HBBHHQI", MAGIC, VERSION, self.opcode, self.flags, 0,
                           self.request_id, len(self.payload))
        crc = zlib.crc32(head + self.payload) & 0xFFFFFFFF
        return head + struct.pack(">I", crc) + self.payload


def parse_header(head: bytes, payload_bytes_max: int) -> Tuple[int, int, int, int, int]:
    """Checks a 24-byte header in the spec's order (magic, version, length)
    and returns (opcode, flags, request_id, payload_len, crc)."""
    magic, version, opcode, flags, _reserved, request_id, length, crc = HEADER.unpack(head)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic 0x{magic:04x}")
    if version != VERSION:
        raise ProtocolError(f"unsupported frame version {version}")
    if length > payload_bytes_max:
        raise ProtocolError(f"payload of {length} bytes over the limit {payload_bytes_max}")
    return opcode, flags, request_id, length, crc


def check_crc(head: bytes, payload: bytes, crc: int) -> None:
    if zlib.crc32(head[:20] + payload) & 0xFFFFFFFF != crc:
        raise ProtocolError("CRC mismatch")


# ----- encoding -------------------------------------------------------------

def enc_key(key: bytes) -> bytes:
    if not 1 <= len(key) <= KEY_BYTES_MAX:
        raise ValueError(f"a key is 1..={KEY_BYTES_MAX} bytes, not {len(key)}")
    return struct.pack(">H", len(key)) + key


def enc_data(value: bytes) -> bytes:
    if len(value) > VALUE_BYTES_MAX:
        raise ValueError(f"a value is at most {VALUE_BYTES_MAX} bytes, not {len(value)}")
    return struct.pack(">I", len(value)) + value


def enc_text(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > TEXT_BYTES_MAX:
        raise ValueError(f"a text is at most {TEXT_BYTES_MAX} bytes")
    return struct.pack(">H", len(raw)) + raw


# ----- decoding -------------------------------------------------------------

class Reader:
    """A bounds-checked cursor over one payload."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int, what: str) -> bytes:
        if self.at + n > len(self.data):
            raise ProtocolError(f"{what}: input ended {self.at + n - len(self.data)} bytes early")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int(struct.unpack(">H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack(">I", self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(struct.unpack(">Q", self.take(8, what))[0])

    def key(self) -> bytes:
        n = self.u16("key length")
        if not 1 <= n <= KEY_BYTES_MAX:
            raise ProtocolError(f"key length {n}")
        return self.take(n, "key")

    def data_(self) -> bytes:
        n = self.u32("data length")
        if n > VALUE_BYTES_MAX:
            raise ProtocolError(f"data length {n}")
        return self.take(n, "data")

    def text(self, what: str) -> str:
        n = self.u16(what)
        if n > TEXT_BYTES_MAX:
            raise ProtocolError(f"{what}: {n} bytes")
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"{what} is not UTF-8") from e

    def count(self, what: str, min_item_bytes: int, cap: Optional[int] = None) -> int:
        """A u32 count, refused if the bytes left could not hold it."""
        n = self.u32(what)
        if n > (len(self.data) - self.at) // max(min_item_bytes, 1) or (cap is not None and n > cap):
            raise ProtocolError(f"{what}: count {n} too large")
        return n

    def finish(self) -> None:
        if self.at != len(self.data):
            raise ProtocolError(f"{len(self.data) - self.at} bytes left over")


@dataclass(frozen=True)
class Hello:
    """HELLO_OK: who the server is and what it accepts."""

    version: int
    features: int
    payload_bytes_max: int
    role: str
    last_seq: int
    minor: int = 0  # 0: a 1.0 server (no extension)
    limits: Dict[str, int] = field(default_factory=dict)

    @property
    def auth_required(self) -> bool:
        return bool(self.features & FEATURE_AUTH_REQUIRED)

    @property
    def data_dir(self) -> bool:
        return bool(self.features & FEATURE_DATA_DIR)

    @property
    def craq_reads(self) -> bool:
        """This chain member answers reads of clean keys in any role."""
        return bool(self.features & FEATURE_CRAQ_READS)


@dataclass(frozen=True)
class WriteResult:
    op_id: int
    outcome: str  # "pending" (async), "absent" or "existed"


@dataclass(frozen=True)
class CasResult:
    """A compare-and-set's answer: written ("absent"/"existed": what the
    key was before) or "mismatch" (nothing changed); `version` is the
    key's version now (0: absent)."""

    op_id: int
    outcome: str
    version: int

    @property
    def written(self) -> bool:
        return self.outcome != "mismatch"


@dataclass(frozen=True)
class Versioned:
    version: int
    value: bytes


@dataclass(frozen=True)
class Entry:
    key: bytes
    version: int
    value: bytes


def _enum(r: Reader, names: List[str], what: str) -> str:
    v = r.u8(what)
    if v >= len(names):
        raise ProtocolError(f"{what} {v}")
    return names[v]


def dec_hello_ok(r: Reader) -> Hello:
    version = r.u8("version")
    features = r.u32("features")
    payload_bytes_max = r.u32("payload_bytes_max")
    role = _enum(r, ROLES, "role")
    last_seq = r.u64("last_seq")
    minor, limits = 0, {}
    if features & FEATURE_EXTENSION:
        minor = r.u16("minor")
        for _ in range(r.count("limits", 10, HELLO_LIMITS_MAX)):
            lid, value = r.u16("limit id"), r.u64("limit value")
            # Unknown ids are ignored (spec section 4.1.1).
            if lid in LIMIT_NAMES:
                limits[LIMIT_NAMES[lid]] = value
    return Hello(version, features & ~FEATURE_EXTENSION, payload_bytes_max, role, last_seq,
                 minor, limits)


def dec_write(r: Reader) -> WriteResult:
    return WriteResult(r.u64("op_id"), _enum(r, OUTCOMES, "outcome"))


def dec_cas(r: Reader) -> CasResult:
    op_id = r.u64("op_id")
    outcome = r.u8("outcome")
    if outcome not in CAS_OUTCOMES:
        raise ProtocolError(f"compare-and-set outcome {outcome}")
    return CasResult(op_id, CAS_OUTCOMES[outcome], r.u64("version"))


def dec_mget(r: Reader) -> List[Optional[Versioned]]:
    return [dec_value(r) for _ in range(r.count("values", 1))]


def dec_value(r: Reader) -> Optional[Versioned]:
    found = r.u8("found")
    if found == 0:
        return None
    if found != 1:
        raise ProtocolError(f"found {found}")
    return Versioned(r.u64("version"), r.data_())


def dec_keys(r: Reader) -> List[bytes]:
    return [r.key() for _ in range(r.count("keys", 3))]


def dec_entries(r: Reader) -> List[Entry]:
    out = []
    for _ in range(r.count("entries", 15)):
        k = r.key()
        out.append(Entry(k, r.u64("version"), r.data_()))
    return out


def dec_range_ok(r: Reader) -> Tuple[List[Entry], bytes]:
    """RANGE_OK: the entries in key order, and where the next page starts
    (empty when nothing is left)."""
    entries = dec_entries(r)
    n = r.u16("next length")
    if n > KEY_BYTES_MAX:
        raise ProtocolError(f"next range start of {n} bytes")
    return entries, r.take(n, "next range start")


def dec_stats(r: Reader) -> Dict[str, Union[int, str]]:
    n = r.u16("stats count")
    if n > STATS_FIELDS_MAX:
        raise ProtocolError(f"{n} stats fields")
    out: Dict[str, Union[int, str]] = {}
    for _ in range(n):
        name = r.text("stat name")
        kind = r.u8("stat kind")
        if kind == 0:
            out[name] = r.u64("stat value")
        elif kind == 1:
            out[name] = r.text("stat text")
        else:
            raise ProtocolError(f"stat kind {kind}")
    return out


def dec_backup_chunk(r: Reader) -> Tuple[bool, bytes]:
    last = r.u8("last")
    if last > 1:
        raise ProtocolError(f"last {last}")
    return bool(last), r.data_()


@dataclass(frozen=True)
class Change:
    """One key's change in a watch event: kind "put" (with the value),
    "del", or "changed" (written, but the value did not fit a frame: GET it)."""

    kind: str
    key: bytes
    value: Optional[bytes] = None


@dataclass(frozen=True)
class WatchEvent:
    """A WATCH_EVENT frame: the changes at `seq` (none: a progress mark);
    `more` says this seq's changes continue in the next frame."""

    seq: int
    more: bool
    changes: List[Change]


def dec_change(r: Reader) -> Change:
    kind = r.u8("change kind")
    if kind == Op.PUT:
        return Change("put", r.key(), r.data_())
    if kind == Op.DEL:
        return Change("del", r.key())
    if kind == Op.GET:
        return Change("changed", r.key())
    raise ProtocolError(f"change kind {kind}")


def dec_watch_event(r: Reader) -> WatchEvent:
    seq = r.u64("seq")
    more = r.u8("more")
    if more > 1:
        raise ProtocolError(f"more {more}")
    # Smallest change: a kind byte and a one-byte key (3 bytes).
    n = r.count("changes", 4, BATCH_OPS_MAX)
    return WatchEvent(seq, bool(more), [dec_change(r) for _ in range(n)])


def dec_found(r: Reader) -> bool:
    found = r.u8("found")
    if found > 1:
        raise ProtocolError(f"found {found}")
    return bool(found)


def dec_error(r: Reader) -> ServerError:
    code = r.u16("code")
    return ServerError(code, r.text("message"), r.text("redirect"))


#: reply opcode -> decoder of its payload
DECODERS: Dict[int, Callable[[Reader], object]] = {
    REPLY | Op.HELLO: dec_hello_ok,
    REPLY | Op.PUT: dec_write,
    REPLY | Op.GET: dec_value,
    REPLY | Op.DEL: dec_write,
    REPLY | Op.SIZE: lambda r: r.u64("entries"),
    REPLY | Op.GETKEYS: dec_keys,
    REPLY | Op.GETTABLE: dec_entries,
    REPLY | Op.STATS: dec_stats,
    REPLY | Op.VERIFY: lambda r: _enum(r, OP_STATES, "state"),
    REPLY | Op.AUTH: lambda r: {1: "read-only", 2: "read-write"}.get(r.u8("access"), "?"),
    REPLY | Op.BACKUP: dec_backup_chunk,
    REPLY | Op.CPUT: dec_cas,
    REPLY | Op.CDEL: dec_cas,
    REPLY | Op.MGET: dec_mget,
    REPLY | Op.MWRITE: lambda r: r.u64("op_id"),
    REPLY | Op.WATCH: dec_watch_event,
    REPLY | Op.UNWATCH: dec_found,
    REPLY | Op.RANGE: dec_range_ok,
    ERROR: dec_error,
}


def decode_reply(opcode: int, payload: bytes) -> object:
    """The payload of a reply frame, decoded; every byte must be used."""
    dec = DECODERS.get(opcode)
    if dec is None:
        raise ProtocolError(f"opcode 0x{opcode:02x} is not a reply")
    r = Reader(payload)
    out = dec(r)
    r.finish()
    return out


# ----- requests -------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """One request: its opcode, flags, payload and the reply it expects."""

    opcode: int
    payload: bytes = b""
    flags: int = 0

    @property
    def reply_opcode(self) -> int:
        return REPLY | self.opcode

    @property
    def is_write(self) -> bool:
        return self.opcode in (Op.PUT, Op.DEL, Op.CPUT, Op.CDEL, Op.MWRITE)


def hello(features: int = HELLO_WANTS_EXTENSION) -> Request:
    return Request(Op.HELLO, bytes([1]) + struct.pack(">I", features) + enc_text(""))


def put(key: bytes, value: bytes, asynchronous: bool = False, no_forward: bool = False) -> Request:
    flags = (FLAG_ASYNC if asynchronous else 0) | (FLAG_NO_FORWARD if no_forward else 0)
    return Request(Op.PUT, enc_key(key) + enc_data(value), flags)


def get(key: bytes, min_seq: int = 0) -> Request:
    """GET; with `min_seq` (flag AT_LEAST, section 5.7) only a member whose
    history reaches it answers, others say BEHIND."""
    if min_seq:
        return Request(Op.GET, struct.pack(">Q", min_seq) + enc_key(key), FLAG_AT_LEAST)
    return Request(Op.GET, enc_key(key))


def delete(key: bytes, asynchronous: bool = False) -> Request:
    return Request(Op.DEL, enc_key(key), FLAG_ASYNC if asynchronous else 0)


def put_if(key: bytes, value: bytes, expected: int) -> Request:
    """CPUT: write only if the key's version is `expected` (0: absent)."""
    return Request(Op.CPUT, enc_key(key) + struct.pack(">Q", expected) + enc_data(value))


def delete_if(key: bytes, expected: int) -> Request:
    """CDEL: delete only if the key's version is `expected`."""
    return Request(Op.CDEL, enc_key(key) + struct.pack(">Q", expected))


def mget(keys: List[bytes]) -> Request:
    """MGET: up to BATCH_OPS_MAX keys, read at one instant."""
    if not 1 <= len(keys) <= BATCH_OPS_MAX:
        raise ValueError(f"an MGET reads 1..={BATCH_OPS_MAX} keys")
    return Request(Op.MGET, struct.pack(">I", len(keys)) + b"".join(enc_key(k) for k in keys))


def mwrite(ops: List[Tuple[bytes, Optional[bytes]]]) -> Request:
    """MWRITE: (key, value) pairs, a value of None deleting the key, as one
    write, all or nothing."""
    if not 1 <= len(ops) <= BATCH_OPS_MAX:
        raise ValueError(f"an MWRITE holds 1..={BATCH_OPS_MAX} writes")
    body = b"".join(
        bytes([Op.DEL]) + enc_key(k) if v is None else bytes([Op.PUT]) + enc_key(k) + enc_data(v)
        for k, v in ops)
    return Request(Op.MWRITE, struct.pack(">I", len(ops)) + body)


def size() -> Request:
    return Request(Op.SIZE)


def getkeys() -> Request:
    return Request(Op.GETKEYS)


def gettable() -> Request:
    return Request(Op.GETTABLE)


def stats() -> Request:
    return Request(Op.STATS)


def verify(op_id: int) -> Request:
    return Request(Op.VERIFY, struct.pack(">Q", op_id))


def auth(user: str, password: str) -> Request:
    return Request(Op.AUTH, enc_text(user) + enc_text(password))


def backup() -> Request:
    return Request(Op.BACKUP)


def watch(prefix: bytes, from_seq: int = WATCH_FROM_NOW) -> Request:
    """WATCH: every change under `prefix` after `from_seq`."""
    if len(prefix) > KEY_BYTES_MAX:
        raise ValueError(f"a prefix holds at most {KEY_BYTES_MAX} bytes")
    return Request(Op.WATCH, struct.pack(">QH", from_seq, len(prefix)) + prefix)


def range_(start: bytes, end: bytes = b"", limit: int = 100) -> Request:
    """RANGE: up to `limit` entries with start <= key < end (no end when
    `end` is empty), in key order."""
    if len(start) > KEY_BYTES_MAX or len(end) > KEY_BYTES_MAX:
        raise ValueError(f"a range bound holds at most {KEY_BYTES_MAX} bytes")
    if not 1 <= limit <= RANGE_LIMIT_MAX:
        raise ValueError(f"a range asks for 1..={RANGE_LIMIT_MAX} entries")
    return Request(Op.RANGE, struct.pack(">H", len(start)) + start + struct.pack(">H", len(end)) + end
                   + struct.pack(">I", limit))


def unwatch(watch_id: int) -> Request:
    return Request(Op.UNWATCH, struct.pack(">Q", watch_id))
