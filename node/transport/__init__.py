"""mu's peer transport on trio: encrypted, authenticated sessions over TCP.

    async with open_transport(identity, ChunkServer(store), payment_key=pk) as t:
        session = await t.connect(node_id, host, port)
        with trio.fail_after(10):
            data = await session.get_chunk(address)

See specs/wire.md for the protocol and §8 Limits and defaults for the limits.
"""

from node.transport._chunks import ChunkServer, ChunkStoreLike
from node.transport._errors import (
    BadChunk,
    RequestError,
    RequestRefused,
    SessionBroken,
    SessionClosed,
    TransportError,
)
from node.transport._limits import Limits
from node.transport._session import RequestHandler, Session
from node.transport._transport import Transport, open_transport, tune_allocator

__all__ = [
    "BadChunk",
    "ChunkServer",
    "ChunkStoreLike",
    "Limits",
    "RequestError",
    "RequestHandler",
    "RequestRefused",
    "Session",
    "SessionBroken",
    "SessionClosed",
    "Transport",
    "TransportError",
    "open_transport",
    "tune_allocator",
]
