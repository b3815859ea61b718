"""Watches (spec/PROTOCOL.md section 4.1.2): every committed change under a
key prefix after a sequence number, in order, with no gap."""
from __future__ import annotations

import select
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional

from . import wire
from .client import Client, ConnectionLost
from .wire import Change, ProtocolError, Retry, ServerError, WatchEvent


@dataclass(frozen=True)
class Update:
    """Every change under the prefix at op `seq` (the frames of a split
    batch put back together), or none: a progress mark, nothing under the
    prefix changed up to `seq`."""

    seq: int
    changes: List[Change]


class Watch:
    """One watch on a connection given over to it. `last_seq` is where to
    resume: every change up to it has been received."""

    def __init__(self, client: Client, prefix: bytes, from_seq: int) -> None:
        self.client = client
        self.prefix = prefix
        req = wire.watch(prefix, from_seq)
        self.id = client._send(req)
        opcode, rid, first = client._read_frame()
        if isinstance(first, ServerError):
            client.close()
            raise first
        if rid != self.id or not isinstance(first, WatchEvent):
            raise ProtocolError(f"reply 0x{opcode:02x} to {rid}: not the watch's first frame")
        self.last_seq = first.seq

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next(self, timeout: Optional[float] = None) -> Optional[Update]:
        """The next update, or None when none began within `timeout`
        seconds (None: wait as long as the connection's timeout). Raises the
        :class:`ServerError` that ended the watch (WATCH_TOO_SLOW,
        HISTORY_GONE, UNAVAILABLE), or :class:`ConnectionLost`."""
        c = self.client
        if timeout is not None and not c._buf:
            ready, _, _ = select.select([c._sock], [], [], timeout)
            if not ready:
                return None
        changes: List[Change] = []
        seq: Optional[int] = None
        while True:
            opcode, rid, frame = c._read_frame()
            if isinstance(frame, ServerError):
                if rid in (0, self.id):
                    c.close()
                    raise frame
                raise ProtocolError(f"error for request {rid} on a watch's connection")
            if rid != self.id or not isinstance(frame, WatchEvent):
                raise ProtocolError(f"frame 0x{opcode:02x} for {rid} on watch {self.id}")
            if seq is None:
                if frame.seq <= self.last_seq:
                    raise ProtocolError(f"event {frame.seq} after {self.last_seq}: out of order")
                seq = frame.seq
            elif frame.seq != seq:
                raise ProtocolError(f"event {frame.seq} inside the frames of {seq}")
            changes.extend(frame.changes)
            if not frame.more:
                self.last_seq = seq
                return Update(seq, changes)

    def __iter__(self) -> Iterator[Update]:
        while True:
            u = self.next()
            if u is not None:
                yield u

    def cancel(self) -> None:
        """UNWATCH: ends the watch; frames already on their way are read
        and dropped up to its reply."""
        c = self.client
        req = wire.unwatch(self.id)
        rid = c._send(req)
        while True:
            opcode, got, reply = c._read_frame()
            if got == rid and opcode == req.reply_opcode:
                return
            if isinstance(reply, ServerError) and got == rid:
                raise reply


class ChainWatch:
    """A watch of a chain: opened at a member (the tail first) and resumed
    from `last_seq` at another member when its member fails, so that no
    change is missed or repeated. Raises HISTORY_GONE (not retriable) when
    no member keeps the changes after `last_seq` any more."""

    def __init__(self, zookeeper: str, prefix: bytes = b"", from_seq: int = wire.WATCH_FROM_NOW,
                 root: str = "/chain", *, timeout: float = 5.0, retry_for_s: float = 10.0) -> None:
        self.zookeeper, self.root, self.prefix = zookeeper, root, prefix
        self.timeout, self.retry_for_s = timeout, retry_for_s
        self.last_seq = from_seq
        self._turn = 0
        self._watch: Optional[Watch] = None
        self._open()

    @property
    def addr(self) -> Optional[str]:
        return self._watch.client.addr if self._watch else None

    def close(self) -> None:
        if self._watch:
            self._watch.close()

    def _open(self) -> None:
        from .chain import find_members
        deadline = time.monotonic() + self.retry_for_s
        last: Optional[Exception] = None
        while time.monotonic() < deadline:
            members = list(reversed(find_members(self.zookeeper, self.root, timeout=self.timeout)))
            for _ in members:
                addr = members[self._turn % len(members)]
                try:
                    w = Watch(Client(addr, timeout=self.timeout), self.prefix, self.last_seq)
                except ServerError as e:
                    if e.retry != Retry.RETRIABLE:
                        raise
                    last = e
                except (OSError, ConnectionLost) as e:
                    last = e
                else:
                    self._watch = w
                    self.last_seq = w.last_seq
                    return
                self._turn += 1
            time.sleep(0.05)
        raise ConnectionLost(f"no member would resume the watch: {last}")

    def next(self, timeout: Optional[float] = None) -> Optional[Update]:
        while True:
            if self._watch is None:
                self._open()
            assert self._watch is not None
            try:
                u = self._watch.next(timeout)
            except ServerError as e:
                if e.retry != Retry.RETRIABLE:
                    raise
                self._watch = None
                continue
            except (OSError, ConnectionLost):
                self._watch = None
                self._turn += 1
                continue
            if u is not None:
                self.last_seq = u.seq
            return u
