"""One connection to one table-server (spec/PROTOCOL.md sections 3 and 6)."""
from __future__ import annotations

import socket
from typing import Dict, Iterable, List, Optional, Tuple, Union

from . import wire
from .wire import (CasResult, Entry, Hello, ProtocolError, Request, ServerError, Versioned,
                   WriteResult)


class ConnectionLost(Exception):
    """The connection broke or timed out with requests outstanding. For a
    write among them the outcome is unknown (spec section 4.2): read the key
    or VERIFY the id; never resend it blindly."""


#: A pipelined request's result: its decoded reply, or the ERROR it got.
Result = Union[object, ServerError]


class Client:
    """A connection that has said HELLO (and AUTH, with a user).

    Requests may be pipelined (:meth:`pipeline`); replies come back in
    request order, so each is matched to its request by position and
    checked by its request id.
    """

    def __init__(self, addr: str, *, timeout: float = 5.0, user: Optional[str] = None,
                 password: Optional[str] = None) -> None:
        host, _, port = addr.rpartition(":")
        self.addr = addr
        self._sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(timeout)
        self._buf = bytearray()
        self._next_id = 1
        # Until HELLO_OK says otherwise, accept what the spec says a server
        # may send before it (an ERROR), or the 1.0 default for HELLO_OK.
        self._recv_max = wire.PAYLOAD_BYTES_MAX_DEFAULT
        hello = self.call(wire.hello())
        assert isinstance(hello, Hello)
        self.hello: Hello = hello
        # The server never sends more than it announced (spec section 2.1).
        self._recv_max = max(hello.payload_bytes_max, wire.ERROR_PAYLOAD_BYTES_MAX)
        self.access: Optional[str] = None
        if user is not None:
            access = self.call(wire.auth(user, password or ""))
            assert isinstance(access, str)
            self.access = access

    # ----- plumbing -----------------------------------------------------

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def inflight_max(self) -> int:
        """How deep to pipeline: what the server announced, or its 1.0
        default (spec sections 6 and 7)."""
        return int(self.hello.limits.get("inflight_max", 4096))

    def _send(self, req: Request) -> int:
        rid = self._next_id
        self._next_id += 1
        frame = wire.Frame(req.opcode, req.flags, rid, req.payload).encode()
        try:
            self._sock.sendall(frame)
        except OSError as e:
            raise ConnectionLost(f"{self.addr}: {e}") from e
        return rid

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            try:
                chunk = self._sock.recv(max(65536, n - len(self._buf)))
            except OSError as e:
                raise ConnectionLost(f"{self.addr}: {e}") from e
            if not chunk:
                raise ConnectionLost(f"{self.addr}: closed by the server")
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _read_frame(self) -> Tuple[int, int, object]:
        """The next frame: its opcode, request id and decoded payload."""
        head = self._read_exact(wire.HEADER_BYTES)
        opcode, _flags, got_id, length, crc = wire.parse_header(head, self._recv_max)
        payload = self._read_exact(length)
        wire.check_crc(head, payload, crc)
        return opcode, got_id, wire.decode_reply(opcode, payload)

    def _recv(self, rid: int, req: Request) -> Result:
        opcode, got_id, reply = self._read_frame()
        if isinstance(reply, ServerError):
            if got_id == 0:
                # A stream error: the server closes the connection.
                self.close()
                raise ConnectionLost(f"{self.addr}: {reply}")
            if got_id != rid:
                raise ProtocolError(f"reply to {got_id}, expected {rid}")
            return reply
        if got_id != rid or opcode != req.reply_opcode:
            raise ProtocolError(f"reply 0x{opcode:02x} to {got_id}, expected "
                                f"0x{req.reply_opcode:02x} to {rid}")
        return reply

    def call(self, req: Request) -> object:
        """Sends one request and returns its decoded reply; an ERROR is
        raised as :class:`ServerError`."""
        rid = self._send(req)
        reply = self._recv(rid, req)
        if isinstance(reply, ServerError):
            raise reply
        return reply

    def pipeline(self, requests: Iterable[Request]) -> List[Result]:
        """Sends the requests without waiting, at most `inflight_max` ahead
        of the replies read, and returns every result in request order (an
        ERROR as a :class:`ServerError` in its place)."""
        reqs = list(requests)
        window = max(1, min(self.inflight_max, 1024))
        sent: List[int] = []
        results: List[Result] = []
        for i, req in enumerate(reqs):
            sent.append(self._send(req))
            if len(sent) - len(results) >= window:
                results.append(self._recv(sent[len(results)], reqs[len(results)]))
        while len(results) < len(reqs):
            results.append(self._recv(sent[len(results)], reqs[len(results)]))
        return results

    # ----- operations ---------------------------------------------------

    def put(self, key: bytes, value: bytes, *, asynchronous: bool = False) -> WriteResult:
        """Writes `key` = `value`. Synchronous by default (the reply comes
        once it is executed, in a chain at the tail); with `asynchronous`,
        once admitted, with outcome "pending" (check it with :meth:`verify`)."""
        out = self.call(wire.put(key, value, asynchronous))
        assert isinstance(out, WriteResult)
        return out

    def put_if(self, key: bytes, value: bytes, expected: int) -> CasResult:
        """Compare-and-set: writes only if the key's version is `expected`
        (0: only if absent). A mismatch is an answer, not an error."""
        out = self.call(wire.put_if(key, value, expected))
        assert isinstance(out, CasResult)
        return out

    def delete_if(self, key: bytes, expected: int) -> CasResult:
        out = self.call(wire.delete_if(key, expected))
        assert isinstance(out, CasResult)
        return out

    def mget(self, keys: List[bytes]) -> List[Optional[Versioned]]:
        """The values of `keys`, in order, read at one instant."""
        out = self.call(wire.mget(keys))
        assert isinstance(out, list)
        return out

    def mwrite(self, ops: List[Tuple[bytes, Optional[bytes]]]) -> int:
        """Writes (key, value) pairs (None deletes) as one write, all or
        nothing; returns its op id, the version of every entry written."""
        out = self.call(wire.mwrite(ops))
        assert isinstance(out, int)
        return out

    def get(self, key: bytes) -> Optional[Versioned]:
        out = self.call(wire.get(key))
        assert out is None or isinstance(out, Versioned)
        return out

    def delete(self, key: bytes, *, asynchronous: bool = False) -> WriteResult:
        out = self.call(wire.delete(key, asynchronous))
        assert isinstance(out, WriteResult)
        return out

    def range(self, start: bytes = b"", end: bytes = b"",
              limit: int = 100) -> Tuple[List[Entry], bytes]:
        """Up to `limit` entries with start <= key < end (no end when `end`
        is empty) in key order, and where the next page starts (b"" when
        nothing is left)."""
        out = self.call(wire.range_(start, end, limit))
        assert isinstance(out, tuple)
        return out

    def size(self) -> int:
        out = self.call(wire.size())
        assert isinstance(out, int)
        return out

    def keys(self) -> List[bytes]:
        out = self.call(wire.getkeys())
        assert isinstance(out, list)
        return out

    def table(self) -> List[Entry]:
        out = self.call(wire.gettable())
        assert isinstance(out, list)
        return out

    def stats(self) -> Dict[str, Union[int, str]]:
        out = self.call(wire.stats())
        assert isinstance(out, dict)
        return out

    def verify(self, op_id: int) -> str:
        """"executed", "pending" or "unknown" (spec section 4.1, VERIFY)."""
        out = self.call(wire.verify(op_id))
        assert isinstance(out, str)
        return out

    def backup(self) -> bytes:
        """A consistent snapshot of the table (spec/STORAGE.md section 4),
        streamed as BACKUP_CHUNK replies; raises if the stream ends with an
        ERROR instead of a last chunk."""
        req = wire.backup()
        rid = self._send(req)
        out = bytearray()
        while True:
            reply = self._recv(rid, req)
            if isinstance(reply, ServerError):
                raise reply
            assert isinstance(reply, tuple)
            last, data = reply
            out += data
            if last:
                return bytes(out)

    def watch(self, prefix: bytes = b"", from_seq: int = wire.WATCH_FROM_NOW) -> "Watch":
        """Every change under `prefix` after op `from_seq` (from now when
        omitted), as a :class:`Watch`; the connection is given over to it
        (spec section 4.1.2)."""
        from .watch import Watch
        return Watch(self, prefix, from_seq)

