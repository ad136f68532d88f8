"""The plain chunk-serving request handler, backed by a ChunkStore.

Serves GET_CHUNK, PUT_CHUNK and HAVE for free; the paid-exchange layer
wraps it to check payments first.  Store calls block on disk and SQLite,
so they run in trio's worker threads.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

import trio

from protocol.wire import Chunk, ErrorCode, GetChunk, Have, HaveReply, Message, PutChunk, PutOk
from node.transport._errors import RequestRefused
from node.transport._session import Session

log = logging.getLogger("mu.transport")


class ChunkStoreLike(Protocol):
    """What the handler needs of node.store.ChunkStore."""

    def get(self, address: bytes) -> bytes: ...

    def put(self, address: bytes, data: bytes) -> bool: ...

    def has(self, address: bytes) -> bool: ...


class ChunkServer:
    """Answers chunk requests from a store.

    Errors: NOT_FOUND (absent or corrupt on disk), CORRUPT_DATA (PUT bytes
    do not hash to the address), OVER_QUOTA (store full), and
    UNEXPECTED_MESSAGE for message types this handler does not serve
    (channel messages need the paid-exchange handler).
    """

    def __init__(self, store: ChunkStoreLike) -> None:
        self.store = store

    async def handle_request(self, session: Session, message: Message) -> Message | None:
        # Imported here so the transport does not need the store package at import time.
        from node.store import ChunkCorrupt, ChunkMismatch, ChunkNotFound, StoreFull

        if isinstance(message, GetChunk):
            try:
                data = await trio.to_thread.run_sync(self.store.get, message.address)
            except ChunkNotFound:
                raise RequestRefused(ErrorCode.NOT_FOUND, "chunk not found") from None
            except ChunkCorrupt:
                log.error("chunk %s is corrupt on disk", message.address.hex())
                raise RequestRefused(ErrorCode.NOT_FOUND, "chunk not available") from None
            return Chunk(request_id=message.request_id, address=message.address, data=data)
        if isinstance(message, PutChunk):
            if hashlib.sha256(message.data).digest() != message.address:
                raise RequestRefused(ErrorCode.CORRUPT_DATA, "data does not hash to the address")
            try:
                stored = await trio.to_thread.run_sync(self.store.put, message.address, message.data)
            except StoreFull:
                raise RequestRefused(ErrorCode.OVER_QUOTA, "store full") from None
            except ChunkMismatch as exc:
                raise RequestRefused(ErrorCode.CORRUPT_DATA, str(exc)[:200]) from None
            return PutOk(request_id=message.request_id, address=message.address, stored=bool(stored))
        if isinstance(message, Have):
            addresses = message.addresses
            present = await trio.to_thread.run_sync(lambda: tuple(self.store.has(a) for a in addresses))
            return HaveReply(request_id=message.request_id, present=present)
        raise RequestRefused(ErrorCode.UNEXPECTED_MESSAGE, f"{type(message).__name__} not served here")
