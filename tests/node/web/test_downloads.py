"""Opening a link: Range parsing and reading a download while it arrives (node/web/_downloads.py).

The HTTP test serves the download route on the node's HTTP stack (hypercorn
on trio, real loopback socket) and asks for the middle of a video while the
fetch is held after 60 % of the file: 206 with exactly those bytes, before
the rest has arrived (issue 18, Must hold).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from node.runtime.http import HttpLimits, bind_tcp, serve_asgi

from node.web._downloads import (
    MAX_DOWNLOADS,
    PART_SUFFIX,
    ByteRange,
    Download,
    Downloads,
    FileInfo,
    RangeNotSatisfiable,
    TooManyDownloads,
    download_response,
    parse_range,
)
from protocol.chunks import Link

LINK = Link(b"\x01" * 32, b"\x02" * 32)


@pytest.mark.parametrize(("header", "expected"), [
    (None, None),
    ("bytes=0-99", ByteRange(0, 100, 1000)),
    ("bytes=500-", ByteRange(500, 1000, 1000)),
    ("bytes=900-5000", ByteRange(900, 1000, 1000)),
    ("bytes=-100", ByteRange(900, 1000, 1000)),
    ("bytes=-5000", ByteRange(0, 1000, 1000)),
    ("bytes=0-1,5-9", None),  # several ranges: ignored, the whole file is sent
    ("items=0-1", None),
    ("bytes=-", None),
])
def test_parse_range(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=2000-3000", "bytes=-0", "bytes=5-4"])
def test_unsatisfiable_ranges_are_refused(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


class SlowFetch:
    """A fetch that writes the first ``share`` of the file, then waits for ``release`` before the rest."""

    def __init__(self, data: bytes, share: float = 0.5) -> None:
        self.data = data
        self.share = share
        self.release = trio.Event()

    async def __call__(self, link: Link, dest: Path, emit) -> dict:  # type: ignore[no-untyped-def]
        part = dest.with_name(dest.name + PART_SUFFIX)
        half = int(len(self.data) * self.share)
        with open(part, "wb") as out:
            out.write(self.data[:half])
            out.flush()
            await emit({"event": "progress", "sats_spent": 3})
            await self.release.wait()
            out.write(self.data[half:])
        os.replace(part, dest)
        return {"sats_spent": 7}


async def test_a_range_inside_what_arrived_is_read_before_the_end(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    fetch = SlowFetch(data)
    downloads = Downloads(tmp_path, fetch, lambda link: FileInfo(len(data), "v.mp4", "video/mp4"))
    async with trio.open_nursery() as nursery:
        download = downloads.open(LINK, nursery)
        with trio.fail_after(10):
            got = b"".join([p async for p in download.stream(1000, 200_000)])
        assert got == data[1000:200_000]
        assert not download.done and download.status()["sats_spent"] == 3

        async def read_tail() -> None:
            tail = b"".join([p async for p in download.stream(len(data) - 5000, len(data))])
            assert tail == data[-5000:]

        nursery.start_soon(read_tail)  # waits for bytes not yet written
        await trio.testing.wait_all_tasks_blocked()
        fetch.release.set()
    assert download.done and download.status()["sats_spent"] == 7
    assert download.status()["bytes"] == len(data) and download.dest.read_bytes() == data


async def test_a_failed_fetch_ends_the_waiting_readers(tmp_path: Path) -> None:
    async def failing(link: Link, dest: Path, emit) -> dict:  # type: ignore[no-untyped-def]
        raise RuntimeError("no host has chunk 01")

    downloads = Downloads(tmp_path, failing, lambda link: None)
    async with trio.open_nursery() as nursery:
        download = downloads.open(LINK, nursery)
    assert download.error == "no host has chunk 01"
    with pytest.raises(OSError, match="ended at 0 bytes"):
        async for _ in download.stream(0, 10):
            pass


async def test_downloads_are_bounded(tmp_path: Path) -> None:
    never = trio.Event()

    async def stuck(link: Link, dest: Path, emit) -> dict:  # type: ignore[no-untyped-def]
        await never.wait()
        return {}

    downloads = Downloads(tmp_path, stuck, lambda link: None)
    async with trio.open_nursery() as nursery:
        for _ in range(MAX_DOWNLOADS):
            downloads.open(LINK, nursery)
        with pytest.raises(TooManyDownloads):
            downloads.open(LINK, nursery)
        nursery.cancel_scope.cancel()


async def test_a_range_in_the_middle_answers_206_before_the_file_has_arrived(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    fetch = SlowFetch(data, share=0.6)
    downloads = Downloads(tmp_path, fetch, lambda link: FileInfo(len(data), "clip.mp4", "video/mp4"))
    opened: list[Download] = []

    async def serve(request: Request) -> Response:
        return await download_response(opened[0], request.headers.get("range"))

    app = Starlette(routes=[Route("/web/downloads/x", serve)])
    sock = bind_tcp("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/web/downloads/x"
    limits = HttpLimits(max_connections=8, max_header_bytes=8192, header_timeout=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_asgi, app, sock, limits)
        opened.append(downloads.open(LINK, nursery))
        middle = (len(data) // 2 - 100_000, len(data) // 2 + 100_000)
        async with httpx.AsyncClient() as client:
            with trio.fail_after(20):
                reply = await client.get(url, headers={"Range": f"bytes={middle[0]}-{middle[1] - 1}"})
            assert reply.status_code == 206
            assert reply.headers["content-range"] == f"bytes {middle[0]}-{middle[1] - 1}/{len(data)}"
            assert reply.headers["content-type"] == "video/mp4"
            assert reply.content == data[middle[0]:middle[1]]
            assert not opened[0].done and opened[0].available() < len(data)  # the rest has not arrived

            reply = await client.get(url, headers={"Range": f"bytes={len(data)}-"})
            assert reply.status_code == 416 and reply.headers["content-range"] == f"bytes */{len(data)}"

            fetch.release.set()
            with trio.fail_after(20):
                whole = await client.get(url)
            assert whole.status_code == 200 and whole.content == data
            assert whole.headers["accept-ranges"] == "bytes"
        nursery.cancel_scope.cancel()
