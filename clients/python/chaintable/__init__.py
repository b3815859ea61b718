"""A client for chaintable, written from spec/PROTOCOL.md (protocol 1.1).

Standard library only. :class:`Client` talks to one server;
:class:`ChainClient` finds a chain's members in ZooKeeper and routes writes
to the head and reads to the tail; :meth:`Client.watch` and
:class:`ChainWatch` stream the changes under a key prefix.
"""
from .chain import ChainClient, OutcomeUnknown, find_members
from .cluster import ClusterClient, ShardMap
from .client import Client, ConnectionLost
from .watch import ChainWatch, Update, Watch
from .wire import (WATCH_FROM_NOW, CasResult, Change, Entry, Hello, ProtocolError, Retry,
                   ServerError, Versioned, WriteResult)

__all__ = [
    "CasResult", "ChainClient", "ChainWatch", "ClusterClient", "ShardMap", "Change", "Client", "ConnectionLost", "Entry",
    "Hello", "OutcomeUnknown", "ProtocolError", "Retry", "ServerError", "Update", "Versioned",
    "WATCH_FROM_NOW", "Watch", "WriteResult", "find_members",
]
__version__ = "0.1.0"
