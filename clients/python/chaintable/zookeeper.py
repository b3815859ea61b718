"""Just enough of ZooKeeper's client protocol to find a chain: open a
session, list a node's children, read a node's data and stat, close.

Pure standard library (ZooKeeper's "jute" encoding: big-endian ints,
length-prefixed strings and buffers). It reads and never writes; it sets no
watches, so a client re-reads the membership when a member fails it
(spec/PROTOCOL.md section 5.1). Everything the server sends is bounded
before it is buffered.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import List, Tuple

#: Largest ZooKeeper response read (ZooKeeper's own jute.maxbuffer is 1 MiB).
RESPONSE_BYTES_MAX = 4 * 1024 * 1024

OP_GET_DATA = 4
OP_GET_CHILDREN = 8
OP_CLOSE = -11
ERR_NO_NODE = -101


class ZooKeeperError(Exception):
    """ZooKeeper refused a request, or its bytes made no sense."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Stat:
    czxid: int
    mzxid: int
    ctime: int
    mtime: int
    version: int
    cversion: int
    aversion: int
    ephemeral_owner: int
    data_length: int
    num_children: int
    pzxid: int


STAT = struct.Struct(">qqqqiiiqiiq")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise ZooKeeperError("response ended early")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def int(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def long(self) -> int:
        return int(struct.unpack(">q", self.take(8))[0])

    def buffer(self) -> bytes:
        n = self.int()
        return b"" if n == -1 else self.take(n)

    def string(self) -> str:
        try:
            return self.buffer().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ZooKeeperError("a name that is not UTF-8") from e


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack(">i", len(raw)) + raw


class ZooKeeper:
    """One short ZooKeeper session."""

    def __init__(self, addr: str, *, timeout: float = 5.0, session_timeout_ms: int = 10000) -> None:
        host, _, port = addr.rpartition(":")
        self._sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._sock.settimeout(timeout)
        self._xid = 0
        connect = struct.pack(">iqiq", 0, 0, session_timeout_ms, 0)
        connect += struct.pack(">i", 16) + bytes(16) + b"\x00"
        self._send(connect)
        r = _Reader(self._recv())
        r.int()  # protocol version
        if r.int() <= 0:
            raise ZooKeeperError("ZooKeeper refused the session")
        self.session_id = r.long()

    def _send(self, body: bytes) -> None:
        self._sock.sendall(struct.pack(">i", len(body)) + body)

    def _read_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self._sock.recv(n - len(out))
            if not chunk:
                raise ZooKeeperError("ZooKeeper closed the connection")
            out += chunk
        return bytes(out)

    def _recv(self) -> bytes:
        (n,) = struct.unpack(">i", self._read_exact(4))
        if not 0 <= n <= RESPONSE_BYTES_MAX:
            raise ZooKeeperError(f"a response of {n} bytes")
        return self._read_exact(n)

    def _request(self, op: int, body: bytes) -> _Reader:
        self._xid += 1
        self._send(struct.pack(">ii", self._xid, op) + body)
        while True:
            r = _Reader(self._recv())
            xid, _zxid, err = r.int(), r.long(), r.int()
            if xid < 0:
                continue  # a ping answer or a notification: not ours
            if xid != self._xid:
                raise ZooKeeperError(f"reply to request {xid}, expected {self._xid}")
            if err != 0:
                raise ZooKeeperError(f"ZooKeeper error {err}", err)
            return r

    def children(self, path: str) -> List[str]:
        r = self._request(OP_GET_CHILDREN, _string(path) + b"\x00")
        n = r.int()
        if n < 0 or n > (len(r.data) - r.at) // 4:
            raise ZooKeeperError(f"{n} children")
        return [r.string() for _ in range(n)]

    def data(self, path: str) -> Tuple[bytes, Stat]:
        r = self._request(OP_GET_DATA, _string(path) + b"\x00")
        data = r.buffer()
        stat = Stat(*STAT.unpack(r.take(STAT.size)))
        return data, stat

    def close(self) -> None:
        try:
            self._xid += 1
            self._send(struct.pack(">ii", self._xid, OP_CLOSE))
        except OSError:
            pass
        self._sock.close()

    def __enter__(self) -> "ZooKeeper":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
