"""The multi-host fetcher over real chunk stores (specs/network.md §4).

Each host here is a real ChunkStore holding a copy of the file's chunks, read
through a ChunkSource that charges the host's price per chunk the way the
paid exchange does (price per MiB, rounded up per chunk) and records what it
earned.  Hosts that die, stall or lie are the same stores behaving badly.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio

from node.files.fetcher import FetchFailed, Fetched, SourceError, SourceGone, fetch_file
from node.files.local import add_file
from node.store import ChunkStore
from protocol.chunks import DataSlot, FileDecoder, IntegrityError, Link

CHUNK = 64 * 1024
MIB = 1 << 20


def price_of(size: int, price_per_mib: int) -> int:
    return -(-size * price_per_mib // MIB)


class StoreHost:
    """A host backed by a real chunk store; ``mode`` says how it misbehaves."""

    def __init__(self, n: int, store: ChunkStore, price: int, mode: str = "honest", after: int = 0) -> None:
        self.host_id = bytes([n]) * 20
        self.price_per_mib = price
        self.store = store
        self.mode = mode
        self.after = after  # requests served well before misbehaving
        self.served = 0
        self.earned = 0
        self.asked = 0
        self.sizes: list[tuple[int | None, int]] = []  # (size the fetcher gave, the chunk's size)
        self.more: list[int] = []  # what the fetcher said it still means to fetch, per request

    @property
    def spent(self) -> int:
        """What the fetcher paid this host, counted when paid (a paying source's ``spent``)."""
        return self.earned

    async def get_chunk(self, address: bytes, size: int | None = None, *, more: int = 0) -> Fetched:
        self.asked += 1
        self.more.append(more)
        await trio.lowlevel.checkpoint()
        if self.mode == "dies" and self.served >= self.after:
            raise SourceGone("connection reset")
        if self.mode == "silent" and self.served >= self.after:
            await trio.sleep_forever()
        if not self.store.has(address):
            raise SourceError("unknown chunk")
        data = self.store.get(address)
        self.sizes.append((size, len(data)))
        paid = price_of(len(data), self.price_per_mib)
        self.earned += paid
        if self.mode == "paid-silent" and self.served >= self.after:
            await trio.sleep_forever()  # took the payment, never answers
        if self.mode == "liar" and self.served >= self.after:
            data = bytes([data[0] ^ 1]) + data[1:]
        self.served += 1
        return Fetched(data, paid)


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, Link, ChunkStore]:
    src = tmp_path / "sample.bin"
    src.write_bytes(os.urandom(3 * MIB + 12345))
    origin = ChunkStore(tmp_path / "origin")
    # a fanout of 8 gives a manifest tree with index chunks, not just a root
    result = add_file(origin, src, chunk_size=CHUNK, fanout=8)
    return src, result.link, origin


def replicate(origin: ChunkStore, dest: Path) -> ChunkStore:
    store = ChunkStore(dest)
    store.put_many((a, origin.get(a)) for a in origin.list())
    return store


def hosts(tmp_path: Path, origin: ChunkStore, specs: list[tuple[int, str, int]], *,
          verified: bool = False) -> list[StoreHost]:
    """``verified``: hosts that say their bytes were checked, as the transport's sources do (data
    chunks are then decrypted as they arrive, and only their plaintext kept)."""
    kind = VerifiedHost if verified else StoreHost
    return [kind(i + 1, replicate(origin, tmp_path / f"host{i}"), price, mode, after)
            for i, (price, mode, after) in enumerate(specs)]


async def test_three_hosts_share_the_work(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    hs = hosts(tmp_path, origin, [(10, "honest", 0)] * 3)
    out = tmp_path / "out.bin"
    seen = []
    result = await fetch_file(link, out, hs, max_price_per_mib=10, window=2, on_progress=seen.append)
    assert out.read_bytes() == src.read_bytes()
    assert result.size == src.stat().st_size
    assert all(h.served > 0 for h in hs)
    assert sum(h.served for h in hs) == len(origin)  # every chunk fetched exactly once
    assert result.progress.chunks.sats_spent == sum(h.earned for h in hs)
    assert result.progress.chunks.sats_lost == 0
    assert seen[-1].chunks.chunks_done == len(origin)
    assert not (tmp_path / "out.bin.mu-part").exists()


async def test_holder_dies_mid_download(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    hs = hosts(tmp_path, origin, [(5, "dies", 10), (5, "honest", 0), (5, "honest", 0)])
    out = tmp_path / "out.bin"
    await fetch_file(link, out, hs, max_price_per_mib=5, window=2)
    assert out.read_bytes() == src.read_bytes()
    assert hs[0].served == 10
    assert sum(h.served for h in hs) == len(origin)


async def test_liar_is_caught_banned_and_file_is_right(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    hs = hosts(tmp_path, origin, [(1, "liar", 3), (5, "honest", 0), (5, "honest", 0)])
    out = tmp_path / "out.bin"
    result = await fetch_file(link, out, hs, max_price_per_mib=5, window=2)
    assert out.read_bytes() == src.read_bytes()
    liar = hs[0]
    assert result.banned == (liar.host_id,)
    # three good answers, then at most one window of requests before the ban
    assert liar.asked <= 3 + 2
    p = result.progress.chunks
    # the lies' prices are lost (paid with each pipelined request), nothing more
    assert 0 < p.sats_lost <= 2 * price_of(CHUNK + 16, 1)
    assert p.sats_spent + p.sats_lost == sum(h.earned for h in hs)
    assert sum(h.served for h in hs[1:]) + 3 == len(origin)


async def test_never_above_max_price(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    hs = hosts(tmp_path, origin, [(50, "honest", 0), (5, "honest", 0)])
    out = tmp_path / "out.bin"
    await fetch_file(link, out, hs, max_price_per_mib=10, window=4)
    assert out.read_bytes() == src.read_bytes()
    assert hs[0].asked == 0
    with pytest.raises(FetchFailed):
        await fetch_file(link, tmp_path / "no.bin", hs[:1], max_price_per_mib=10)
    assert not (tmp_path / "no.bin").exists() and not (tmp_path / "no.bin.mu-part").exists()


async def test_stalled_host_times_out(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    hs = hosts(tmp_path, origin, [(1, "silent", 5), (5, "honest", 0)])
    out = tmp_path / "out.bin"
    await fetch_file(link, out, hs, max_price_per_mib=5, window=2, request_timeout=0.2)
    assert out.read_bytes() == src.read_bytes()


async def test_sats_that_went_with_requests_never_answered_are_counted_lost(tmp_path: Path, sample) -> None:
    # Its requests time out: no result reports their sats, yet the payments left with them.
    src, link, origin = sample
    hs = hosts(tmp_path, origin, [(1, "paid-silent", 5), (5, "honest", 0)])
    out = tmp_path / "out.bin"
    result = await fetch_file(link, out, hs, max_price_per_mib=5, window=2, request_timeout=0.2)
    assert out.read_bytes() == src.read_bytes()
    p = result.progress.chunks
    assert hs[0].earned > price_of(CHUNK + 16, 1) * 5  # paid for more than the 5 chunks it served
    assert p.sats_lost == hs[0].earned - sum(price_of(size, 1) for _, size in hs[0].sizes[:5])
    assert p.sats_spent + p.sats_lost == sum(h.earned for h in hs)


async def test_interrupted_download_resumes_from_local_store(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    local = ChunkStore(tmp_path / "local")
    dying = hosts(tmp_path, origin, [(3, "dies", 20)])
    out = tmp_path / "out.bin"
    with pytest.raises(FetchFailed):
        await fetch_file(link, out, dying, max_price_per_mib=3, store=local)
    assert not out.exists()
    assert len(local) == 20  # what was paid for is kept
    fresh = [StoreHost(9, dying[0].store, 3)]
    result = await fetch_file(link, out, fresh, max_price_per_mib=3, store=local)
    assert out.read_bytes() == src.read_bytes()
    assert result.progress.local_chunks >= 20
    assert fresh[0].served == len(origin) - 20  # nothing fetched (or paid for) twice
    assert len(local) == len(origin)


async def test_wrong_key_is_an_integrity_error(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    hs = hosts(tmp_path, origin, [(1, "honest", 0)])
    bad = Link(root=link.root, key=hashlib.sha256(b"not the key").digest())
    with pytest.raises(IntegrityError):
        await fetch_file(bad, tmp_path / "x", hs, max_price_per_mib=1)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.mu-part").exists()


async def test_candidates_restrict_hosts(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    hs = hosts(tmp_path, origin, [(1, "honest", 0), (1, "honest", 0)])
    out = tmp_path / "out.bin"
    await fetch_file(link, out, hs, max_price_per_mib=1, candidates=lambda a: [hs[1].host_id])
    assert out.read_bytes() == src.read_bytes()
    assert hs[0].asked == 0


def data_chunk_count(src: Path) -> int:
    return -(-src.stat().st_size // CHUNK)  # fixed-size chunks (format 2) of CHUNK bytes


async def test_a_plain_get_keeps_only_the_manifest_chunks(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    hs = hosts(tmp_path, origin, [(3, "honest", 0)])
    local = ChunkStore(tmp_path / "local")
    out = tmp_path / "out.bin"
    result = await fetch_file(link, out, hs, max_price_per_mib=3, store=local, keep_chunks=False)
    assert out.read_bytes() == src.read_bytes()
    assert hs[0].served == len(origin) and result.progress.local_chunks == 0
    assert len(local) == len(origin) - data_chunk_count(src) and link.root in set(local.list())
    assert not (tmp_path / "out.bin.mu-part").exists()


async def failed_plain_get(tmp_path: Path, link: Link, origin: ChunkStore,
                           verified: bool = False) -> tuple[ChunkStore, StoreHost]:
    """A plain get (keep_chunks False) whose only host dies after 20 chunks; the node's store and a host back up."""
    local = ChunkStore(tmp_path / "local")
    dying = hosts(tmp_path, origin, [(3, "dies", 20)], verified=verified)
    with pytest.raises(FetchFailed):
        await fetch_file(link, tmp_path / "out.bin", dying, max_price_per_mib=3, store=local, keep_chunks=False)
    assert not (tmp_path / "out.bin").exists()
    return local, StoreHost(9, dying[0].store, 3)


@pytest.mark.parametrize("verified", [False, True])
async def test_a_failed_plain_get_resumes_from_its_part_file_paying_nothing_twice(tmp_path: Path, sample,
                                                                                  verified: bool) -> None:
    # verified: the chunks that came early were kept as plaintext, and are sealed again into the store.
    src, link, origin = sample
    out, part = tmp_path / "out.bin", tmp_path / "out.bin.mu-part"
    local, host = await failed_plain_get(tmp_path, link, origin, verified)
    assert part.stat().st_size > 0  # the plaintext of what was paid for is kept
    fresh = [host]
    result = await fetch_file(link, out, fresh, max_price_per_mib=3, store=local, keep_chunks=False)
    assert out.read_bytes() == src.read_bytes() and not part.exists()
    assert result.progress.local_chunks == 20
    assert fresh[0].served == len(origin) - 20  # nothing fetched (or paid for) twice


async def test_a_torn_part_file_is_cut_at_its_first_bad_chunk(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    out, part = tmp_path / "out.bin", tmp_path / "out.bin.mu-part"
    local, host = await failed_plain_get(tmp_path, link, origin)
    kept = len(local)  # the manifests, and the data chunks that came early (not yet in the part file)
    # A crash that lost the page cache: zeros from inside the fourth data chunk on.
    with open(part, "r+b") as f:
        f.seek(3 * CHUNK + 100)
        f.write(bytes(part.stat().st_size - f.tell()))
    fresh = [host]
    result = await fetch_file(link, out, fresh, max_price_per_mib=3, store=local, keep_chunks=False)
    assert out.read_bytes() == src.read_bytes()
    assert result.progress.local_chunks == kept + 3  # three data chunks resumed from the part file
    assert fresh[0].served + result.progress.local_chunks == len(origin)


async def test_a_part_file_of_another_file_is_fetched_over(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    hs = hosts(tmp_path, origin, [(3, "honest", 0)])
    out = tmp_path / "out.bin"
    (tmp_path / "out.bin.mu-part").write_bytes(os.urandom(5 * CHUNK))
    result = await fetch_file(link, out, hs, max_price_per_mib=3, store=ChunkStore(tmp_path / "local"),
                              keep_chunks=False)
    assert out.read_bytes() == src.read_bytes()
    assert hs[0].served == len(origin) and result.progress.local_chunks == 0


@pytest.mark.parametrize("verified", [False, True])
async def test_a_chunk_repeated_in_a_row_is_fetched_once(tmp_path: Path, verified: bool) -> None:
    src = tmp_path / "zeros.bin"
    src.write_bytes(os.urandom(MIB) + bytes(12 * MIB) + os.urandom(MIB))  # zeros cut at CDC_MAX: equal chunks
    origin = ChunkStore(tmp_path / "origin")
    link = add_file(origin, src, chunk_secret=bytes(range(32))).link
    hs = hosts(tmp_path, origin, [(1, "honest", 0)], verified=verified)
    out = tmp_path / "out.bin"
    await fetch_file(link, out, hs, max_price_per_mib=1, store=ChunkStore(tmp_path / "local"), keep_chunks=False)
    assert out.read_bytes() == src.read_bytes()
    assert hs[0].asked == hs[0].served == len(origin)  # every distinct chunk once, the repeated one too


async def test_data_chunks_are_asked_for_with_their_size_from_the_manifest(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    hs = hosts(tmp_path, origin, [(3, "honest", 0)])
    await fetch_file(link, tmp_path / "out.bin", hs, max_price_per_mib=3)
    sized = [(size, actual) for size, actual in hs[0].sizes if size is not None]
    assert len(sized) == data_chunk_count(src)  # every data chunk, priced by its size (manifests: unknown)
    assert all(size == actual for size, actual in sized)


async def test_each_request_says_how_much_of_the_file_is_still_to_fetch(tmp_path: Path, sample) -> None:
    """The paying source funds a channel ahead of need from it (specs/payments.md §Channel recovery)."""
    src, link, origin = sample
    hs = hosts(tmp_path, origin, [(3, "honest", 0)])
    await fetch_file(link, tmp_path / "out.bin", hs, max_price_per_mib=3)
    more = hs[0].more
    size = src.stat().st_size
    assert more[0] == 0  # the root: the file's size is not known yet
    assert max(more) == size  # asked before any byte was written
    later = more[1:]
    assert all(a >= b for a, b in zip(later, later[1:])), later  # it only shrinks as the file is written
    assert later[-1] < size


async def test_a_rerun_with_the_wrong_key_leaves_the_part_file_to_the_right_one(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    out, part = tmp_path / "out.bin", tmp_path / "out.bin.mu-part"
    local, host = await failed_plain_get(tmp_path, link, origin)
    size = part.stat().st_size
    bad = Link(root=link.root, key=hashlib.sha256(b"not the key").digest())
    with pytest.raises(IntegrityError):
        await fetch_file(bad, out, [host], max_price_per_mib=3, store=local, keep_chunks=False)
    assert part.stat().st_size == size and host.served == 0
    result = await fetch_file(link, out, [host], max_price_per_mib=3, store=local, keep_chunks=False)
    assert out.read_bytes() == src.read_bytes()
    assert result.progress.local_chunks == 20 and host.served == len(origin) - 20


class VerifiedHost(StoreHost):
    """Says its bytes were checked against their address, as the transport's sources do."""

    async def get_chunk(self, address: bytes, size: int | None = None, *, more: int = 0) -> Fetched:
        got = await super().get_chunk(address, size)
        return Fetched(got.data, got.paid, verified=True)


async def test_data_chunks_are_decrypted_as_they_arrive_and_written_in_order(
        tmp_path: Path, sample, monkeypatch: pytest.MonkeyPatch) -> None:
    src, link, origin = sample
    decoder = FileDecoder.from_link(link)
    while not decoder.data_slots(1):
        decoder.feed(origin.get(decoder.next_address()))
    first = decoder.data_slots(1)[0]
    opened: list[int] = []
    two_opened = trio.Event()
    real_open = FileDecoder.open_data

    def recorded(self: FileDecoder, slot: DataSlot, stored: bytes, *, verified: bool = False) -> bytearray:
        opened.append(slot.index)
        if len(opened) == 2:
            trio.from_thread.run_sync(two_opened.set)
        return real_open(self, slot, stored, verified=verified)

    class HoldsTheFirst(VerifiedHost):
        async def get_chunk(self, address: bytes, size: int | None = None, *, more: int = 0) -> Fetched:
            if address == first.address:
                await two_opened.wait()  # answered only once two later chunks were decrypted
            return await super().get_chunk(address, size)

    monkeypatch.setattr(FileDecoder, "open_data", recorded)
    host = HoldsTheFirst(1, replicate(origin, tmp_path / "host"), 5)
    out = tmp_path / "out.bin"
    with trio.fail_after(30):
        await fetch_file(link, out, [host], max_price_per_mib=5, window=4)
    assert out.read_bytes() == src.read_bytes()
    assert first.index not in opened[:2] and opened.count(first.index) == 1
    assert sorted(opened) == list(range(len(opened))), "each data chunk opened once"


async def test_a_data_chunk_that_does_not_open_on_arrival_fails_the_fetch_in_file_order(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    decoder = FileDecoder.from_link(link)
    while not decoder.data_slots(1):
        decoder.feed(origin.get(decoder.next_address()))
    second = decoder.data_slots(2)[1]

    class SaysItChecked(VerifiedHost):  # its bytes are not the chunk, though it says they were checked
        async def get_chunk(self, address: bytes, size: int | None = None, *, more: int = 0) -> Fetched:
            got = await super().get_chunk(address, size)
            if address == second.address:
                return Fetched(bytes([got.data[0] ^ 1]) + got.data[1:], got.paid, verified=True)
            return got

    host = SaysItChecked(1, replicate(origin, tmp_path / "host"), 5)
    with pytest.raises(IntegrityError) as raised:
        await fetch_file(link, tmp_path / "out.bin", [host], max_price_per_mib=5, window=4, keep_chunks=False)
    assert raised.value.address == second.address
    part = tmp_path / "out.bin.mu-part"  # kept to resume from
    assert part.read_bytes() == src.read_bytes()[:CHUNK * second.index], "what came before it is kept, in order"


class ListResolver:
    """Gives every chunk the same hosts: as computed from a complete view (``looks_up`` False),
    or as if each chunk's holders were looked up in ``ahead`` (True); records how many it was given at once."""

    def __init__(self, sources: list[StoreHost], *, looks_up: bool) -> None:
        self.sources = sources
        self.looks_up = looks_up
        self.batches: list[int] = []

    async def ahead(self, addresses: list[bytes]) -> None:
        self.batches.append(len(addresses))

    async def holders(self, address: bytes, *, lookup: bool = False) -> list[StoreHost]:
        return self.sources


@pytest.mark.parametrize("looks_up", [False, True])
async def test_chunks_are_queued_in_batches_only_when_their_holders_are_looked_up(tmp_path: Path,
                                                                                   looks_up: bool) -> None:
    # specs/network.md §3: batches let lookups run together; with holders computed they only send
    # requests in bursts.  One request at a time to one host: the decoder moves one chunk per answer.
    from node.files.fetcher import LOOKAHEAD, QUEUE_BATCH

    src = tmp_path / "sample.bin"
    src.write_bytes(os.urandom(3 * MIB + 12345))
    origin = ChunkStore(tmp_path / "origin")
    link = add_file(origin, src, chunk_size=CHUNK).link  # one manifest over 49 data chunks
    resolver = ListResolver(hosts(tmp_path, origin, [(1, "honest", 0)]), looks_up=looks_up)
    out = tmp_path / "out.bin"
    await fetch_file(link, out, [], max_price_per_mib=1, window=1, resolver=resolver)  # type: ignore[arg-type]
    assert out.read_bytes() == src.read_bytes()
    assert resolver.batches[:2] == [1, LOOKAHEAD]  # the root; then as many data chunks as may be queued
    assert sum(resolver.batches) == len(origin)
    later = resolver.batches[2:]
    if looks_up:
        assert all(batch >= QUEUE_BATCH for batch in later[:-1]), later
    else:
        assert max(later) < QUEUE_BATCH, later  # each as soon as there is room, not waiting for a batch
