"""A host's NOT_FOUND is a miss, any other ERROR a failure (specs/network.md §4 Outcomes)."""

from __future__ import annotations

import pytest

from node.files.fetcher import SessionSource, SourceError, SourceMissing
from node.transport import RequestError
from protocol.wire import ErrorCode, ErrorMessage

class Refusing:
    """Stands for a session whose peer answers every GET_CHUNK with ERROR ``code``."""

    def __init__(self, code: ErrorCode) -> None:
        self.code = code
        self.peer_node_id = b"\x05" * 20

    async def get_chunk(self, address: bytes) -> bytes:
        raise RequestError(ErrorMessage(request_id=1, code=self.code))

async def test_not_found_is_a_miss() -> None:
    with pytest.raises(SourceMissing):
        await SessionSource(Refusing(ErrorCode.NOT_FOUND)).get_chunk(bytes(32))  # type: ignore[arg-type]

async def test_another_error_is_a_failure() -> None:
    with pytest.raises(SourceError) as caught:
        await SessionSource(Refusing(ErrorCode.MALFORMED)).get_chunk(bytes(32))  # type: ignore[arg-type]
    assert not isinstance(caught.value, SourceMissing)
