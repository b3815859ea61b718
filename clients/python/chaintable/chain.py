"""A client for a chain: finds its members in ZooKeeper by the recipe of
spec/PROTOCOL.md section 5.1, sends writes to the head and reads to the
tail, and retries what the spec's retry classes allow."""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple, Union

from . import wire
from .client import Client, ConnectionLost
from .wire import CasResult, Entry, Request, Retry, ServerError, Versioned, WriteResult
from .zookeeper import ZooKeeper, ZooKeeperError

#: Children of the root read per listing (spec CHILDREN_MAX).
CHILDREN_MAX = 1024


class OutcomeUnknown(Exception):
    """A write may or may not have been executed (the connection broke
    while it was outstanding, or the server said OUTCOME_UNKNOWN). Read the
    key or VERIFY its id; never resend it blindly."""


def find_members(zookeeper: str, root: str = "/chain", *, timeout: float = 5.0) -> List[str]:
    """The chain's members' `host:port`, head first, tail last."""
    found = []
    with ZooKeeper(zookeeper, timeout=timeout) as zk:
        for name in zk.children(root):
            digits = name[len("node"):]
            if not name.startswith("node") or len(digits) != 10 or not digits.isdigit():
                continue
            found.append((int(digits), name))
        found.sort()
        members = []
        for _, name in found[:CHILDREN_MAX]:
            try:
                data, stat = zk.data(f"{root}/{name}")
            except ZooKeeperError:
                continue  # gone meanwhile
            if stat.ephemeral_owner == 0:
                continue  # not ephemeral: not a member
            try:
                members.append(data.decode("utf-8").split("\n", 1)[0])
            except UnicodeDecodeError:
                continue
        return members


class ChainClient:
    """Writes go to the head, reads to each member in turn (spec section
    5.5: a member answers clean keys itself and sends dirty ones to the
    tail; VERIFY goes to the tail); NOT_HEAD and NOT_TAIL redirects are
    followed, retriable errors retried (after re-reading the
    membership when there is no redirect) for up to `retry_for_s` seconds.
    A write whose outcome is unknown raises :class:`OutcomeUnknown`."""

    def __init__(self, zookeeper: str, root: str = "/chain", *, timeout: float = 5.0,
                 retry_for_s: float = 10.0, pause_s: float = 0.05) -> None:
        self.zookeeper, self.root = zookeeper, root
        self.timeout, self.retry_for_s, self.pause_s = timeout, retry_for_s, pause_s
        self._conns: Dict[str, Client] = {}
        self._next_read = 0
        self.members: List[str] = []
        self.refresh()

    def refresh(self) -> None:
        self.members = find_members(self.zookeeper, self.root, timeout=self.timeout)

    def close(self) -> None:
        for c in self._conns.values():
            c.close()
        self._conns.clear()

    def __enter__(self) -> "ChainClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _conn(self, addr: str) -> Client:
        c = self._conns.get(addr)
        if c is None:
            c = Client(addr, timeout=self.timeout)
            self._conns[addr] = c
        return c

    def _drop(self, addr: str) -> None:
        c = self._conns.pop(addr, None)
        if c is not None:
            c.close()

    def _read_target(self, tail_only: bool) -> str:
        if tail_only:
            return self.members[-1]
        self._next_read += 1
        return self.members[self._next_read % len(self.members)]

    def _run(self, req: Request, write: bool, tail_only: bool = False) -> object:
        deadline = time.monotonic() + self.retry_for_s
        target: Optional[str] = None
        last: Union[Exception, None] = None
        while time.monotonic() < deadline:
            if target is None:
                if not self.members:
                    self.refresh()
                if self.members:
                    target = self.members[0] if write else self._read_target(tail_only)
            if target is None:
                time.sleep(self.pause_s)
                continue
            try:
                return self._conn(target).call(req)
            except ServerError as e:
                last = e
                if e.retry is Retry.OUTCOME_UNKNOWN:
                    raise OutcomeUnknown(str(e)) from e
                if e.retry is not Retry.RETRIABLE or e.name == "WRONG_SHARD":
                    # (WRONG_SHARD: another chain owns the key; its
                    # redirect is a map version, for ClusterClient.)
                    raise
                if e.redirect:
                    target = e.redirect
                    continue
            except (ConnectionLost, OSError) as e:
                self._drop(target)
                if write and isinstance(e, ConnectionLost):
                    # Sent and then lost: it may have been executed.
                    raise OutcomeUnknown(str(e)) from e
                last = e
            target = None
            time.sleep(self.pause_s)
            try:
                self.refresh()
            except (ZooKeeperError, OSError) as e:
                last = e
        raise TimeoutError(f"gave up after {self.retry_for_s} s: {last}")

    def put(self, key: bytes, value: bytes) -> WriteResult:
        out = self._run(wire.put(key, value), write=True)
        assert isinstance(out, WriteResult)
        return out

    def put_if(self, key: bytes, value: bytes, expected: int) -> CasResult:
        out = self._run(wire.put_if(key, value, expected), write=True)
        assert isinstance(out, CasResult)
        return out

    def delete_if(self, key: bytes, expected: int) -> CasResult:
        out = self._run(wire.delete_if(key, expected), write=True)
        assert isinstance(out, CasResult)
        return out

    def mwrite(self, ops: List[Tuple[bytes, Optional[bytes]]]) -> int:
        """(key, value) pairs, None deleting, as one write at the head."""
        out = self._run(wire.mwrite(ops), write=True)
        assert isinstance(out, int)
        return out

    def mget(self, keys: List[bytes]) -> List[Optional[Versioned]]:
        """Several values from the tail, read at one instant."""
        out = self._run(wire.mget(keys), write=False)
        assert isinstance(out, list)
        return out

    def delete(self, key: bytes) -> WriteResult:
        out = self._run(wire.delete(key), write=True)
        assert isinstance(out, WriteResult)
        return out

    def get(self, key: bytes) -> Optional[Versioned]:
        out = self._run(wire.get(key), write=False)
        assert out is None or isinstance(out, Versioned)
        return out

    def range(self, start: bytes = b"", end: bytes = b"",
              limit: int = 100) -> Tuple[List[Entry], bytes]:
        """A page of entries in key order (see Client.range)."""
        out = self._run(wire.range_(start, end, limit), write=False)
        assert isinstance(out, tuple)
        return out

    def size(self) -> int:
        out = self._run(wire.size(), write=False)
        assert isinstance(out, int)
        return out

    def keys(self) -> List[bytes]:
        out = self._run(wire.getkeys(), write=False)
        assert isinstance(out, list)
        return out

    def table(self) -> List[Entry]:
        out = self._run(wire.gettable(), write=False)
        assert isinstance(out, list)
        return out

    def verify(self, op_id: int) -> str:
        out = self._run(wire.verify(op_id), write=False, tail_only=True)
        assert isinstance(out, str)
        return out
