"""A paid GET is priced by the chunk's size when the fetcher knows it (specs/payments.md §Paid window).

With a guess (1 MiB) the payment sent with the next request is computed from
the wrong price whenever a chunk is not 1 MiB, and the host refuses it as
short (INSUFFICIENT_PAYMENT): a refused round trip, a resynchronisation and a
retry for most chunks of a content-defined file (issue 22).  The fetcher
reads each data chunk's size from its manifest; these tests pin that it
reaches ``Payer.request``.
"""

from __future__ import annotations

from types import SimpleNamespace

from node.exchange._window import Paid
from node.exchange.paying import PaidPeers
from node.files.fetcher import PaidSource
from protocol.payments import Kind

HOST = b"\x07" * 20


class RecordingPayer:
    """Stands for ``Payer``: hands out one link and records what each GET was priced by."""

    def __init__(self) -> None:
        self.link_ = SimpleNamespace(host=HOST, paid=0, channel=object(), channel_id=None, session=None)
        self.sizes: list[int | None] = []

    async def link(self, session: object, *, unannounced: object = None) -> object:
        self.link_.session = session
        return self.link_

    async def request(self, link: object, kind: Kind, address: bytes, data: object = None, *,
                      size: int | None = None, tally: object = None) -> Paid:
        self.sizes.append(size)
        return Paid(answer=b"chunk", signed=0)


async def test_a_sized_get_reaches_the_payer_with_its_size() -> None:
    payer = RecordingPayer()
    peers = PaidPeers(payer, wallet=None, rpc=None)  # type: ignore[arg-type]
    session = SimpleNamespace(peer_node_id=HOST)
    assert await peers.request(session, Kind.GET, bytes(32), size=1_234_567) == (b"chunk", 0)  # type: ignore[arg-type]
    await peers.request(session, Kind.GET, bytes(32))  # type: ignore[arg-type]
    assert payer.sizes == [1_234_567, None]  # None: Payer.request's own default (a manifest chunk, size unknown)


async def test_the_paid_source_passes_the_fetchers_size_on() -> None:
    asked: list[int | None] = []

    class Peers:
        async def request(self, session: object, kind: Kind, address: bytes, data: object = None, *,
                          size: int | None = None, tally: object = None, more: int = 0) -> tuple[object, int]:
            asked.append(size)
            return b"chunk", 3

    source = PaidSource(Peers(), SimpleNamespace(peer_node_id=HOST), 100)  # type: ignore[arg-type]
    fetched = await source.get_chunk(bytes(32), 70_000)
    assert (fetched.data, fetched.paid, asked) == (b"chunk", 3, [70_000])
