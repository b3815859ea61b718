"""A client for chaintable, written from spec/PROTOCOL.md (protocol 1.1).

Standard library only. :class:`Client` talks to one server;
:class:`ChainClient` finds a chain's members in ZooKeeper and routes writes
to the head and reads to the tail.
"""
from .chain import ChainClient, OutcomeUnknown, find_members
from .client import Client, ConnectionLost
from .wire import (CasResult, Entry, Hello, ProtocolError, Retry, ServerError, Versioned,
                   WriteResult)

__all__ = [
    "CasResult", "ChainClient", "Client", "ConnectionLost", "Entry", "Hello", "OutcomeUnknown",
    "ProtocolError", "Retry", "ServerError", "Versioned", "WriteResult", "find_members",
]
__version__ = "0.1.0"
