"""A cluster of chains (spec section 5.8): the shard map in the data of the
cluster root gives each chain ordered ranges of keys; each key goes to its
chain through a :class:`ChainClient`, MGET and RANGE are split by chain and
merged, SIZE is summed, and a WRONG_SHARD answer makes the client read the
map again."""
import bisect
import time
from typing import Dict, List, Optional, Tuple

from . import wire
from .chain import ChainClient
from .wire import Entry, ServerError, Versioned, WriteResult
from .zookeeper import ZooKeeper

#: Longest map data read (spec section 7, MAP_BYTES_MAX).
MAP_BYTES_MAX = 640 * 1024
#: Most ranges in a map (RANGES_MAX).
RANGES_MAX = 256


class ShardMap:
    """A parsed map: `starts[i]` is the first key of range i, owned by
    `chains[i]`; range i ends where range i + 1 starts."""

    def __init__(self, version: int, starts: List[bytes], chains: List[str]) -> None:
        self.version, self.starts, self.chains = version, starts, chains

    @staticmethod
    def parse(data: bytes) -> "ShardMap":
        """The map in `data`; ValueError for anything the spec does not
        allow. (Clients cannot check the `sig:` line; they rely on the
        root's ACL, as for member nodes.)"""
        if len(data) > MAP_BYTES_MAX:
            raise ValueError("shard map too long")
        lines = data.decode("utf-8").split("\n")
        head = lines[0].split(" ")
        if len(head) != 2 or head[0] != "shard-map":
            raise ValueError("expected `shard-map <version>`")
        version, starts, chains = int(head[1]), [], []
        for line in lines[1:]:
            if not line or line.startswith("sig:"):
                continue
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != "range":
                raise ValueError(f"bad range line {line!r}")
            starts.append(b"" if parts[1] == "-" else bytes.fromhex(parts[1]))
            chains.append(parts[2])
        if not starts or starts[0] != b"" or len(starts) > RANGES_MAX \
                or any(a >= b for a, b in zip(starts, starts[1:])):
            raise ValueError("ranges must start at - and rise strictly")
        return ShardMap(version, starts, chains)

    def index_of(self, key: bytes) -> int:
        """The range holding `key`: the last whose start is <= key."""
        return bisect.bisect_right(self.starts, key) - 1

    def chain_of(self, key: bytes) -> str:
        return self.chains[self.index_of(key)]

    def end_of(self, i: int) -> Optional[bytes]:
        return self.starts[i + 1] if i + 1 < len(self.starts) else None


class ClusterClient:
    """Routes each request to the chain owning its keys."""

    def __init__(self, zookeeper: str, cluster: str = "/cluster", *, timeout: float = 5.0,
                 retry_for_s: float = 10.0) -> None:
        self.zookeeper, self.cluster = zookeeper, cluster.rstrip("/")
        self.timeout, self.retry_for_s = timeout, retry_for_s
        self._chains: Dict[str, ChainClient] = {}
        self.map = self._read_map()

    def _read_map(self) -> ShardMap:
        with ZooKeeper(self.zookeeper, timeout=self.timeout) as zk:
            data, _ = zk.data(self.cluster)
        return ShardMap.parse(data)

    def close(self) -> None:
        for c in self._chains.values():
            c.close()
        self._chains.clear()

    def __enter__(self) -> "ClusterClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chain(self, name: str) -> ChainClient:
        c = self._chains.get(name)
        if c is None:
            c = ChainClient(self.zookeeper, f"{self.cluster}/{name}", timeout=self.timeout,
                            retry_for_s=self.retry_for_s)
            self._chains[name] = c
        return c

    def _routed(self, key: bytes, call):  # type: ignore[no-untyped-def]
        """`call(chain_client)` at the chain owning `key`, again after
        reading the map when a member answers WRONG_SHARD."""
        deadline = time.monotonic() + self.retry_for_s
        while True:
            try:
                return call(self.chain(self.map.chain_of(key)))
            except ServerError as e:
                if e.name != "WRONG_SHARD" or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                self.map = self._read_map()

    def put(self, key: bytes, value: bytes) -> WriteResult:
        return self._routed(key, lambda c: c.put(key, value))  # type: ignore[no-any-return]

    def get(self, key: bytes) -> Optional[Versioned]:
        return self._routed(key, lambda c: c.get(key))  # type: ignore[no-any-return]

    def delete(self, key: bytes) -> WriteResult:
        return self._routed(key, lambda c: c.delete(key))  # type: ignore[no-any-return]

    def mget(self, keys: List[bytes]) -> List[Optional[Versioned]]:
        """One MGET per chain, answers in the order asked."""
        by_chain: Dict[str, List[int]] = {}
        for i, k in enumerate(keys):
            by_chain.setdefault(self.map.chain_of(k), []).append(i)
        out: List[Optional[Versioned]] = [None] * len(keys)
        for at in by_chain.values():
            part = [keys[i] for i in at]
            for i, v in zip(at, self._routed(part[0], lambda c, p=part: c.mget(p))):
                out[i] = v
        return out

    def size(self) -> int:
        return sum(self.chain(name).size() for name in dict.fromkeys(self.map.chains))

    def range(self, start: bytes = b"", end: bytes = b"",
              limit: int = 100) -> Tuple[List[Entry], bytes]:
        """A page across chains: the interval cut at every range boundary,
        each piece asked of its chain in key order (spec section 5.8)."""
        entries: List[Entry] = []
        i = self.map.index_of(start)
        while True:
            stop = self.map.end_of(i)
            piece_end = stop if stop is not None and (not end or stop < end) else end
            left = max(1, limit - len(entries))
            page, nxt = self._routed(start, lambda c, s=start, e=piece_end, n=left: c.range(s, e, n))
            entries += page
            if nxt:
                return entries, nxt
            if stop is None or (end and end <= stop):
                return entries, b""
            if len(entries) >= limit:
                return entries, stop
            start, i = stop, i + 1
