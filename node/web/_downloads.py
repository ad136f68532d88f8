"""Opening a link in the page: a download into the data dir, served while it arrives (specs/network.md §Web app).

The page hands the link (key included) to its own node only: ``POST
/v1/web/open``.  The node fetches the file with ``mu get``'s machinery
into ``web-downloads/`` and the page reads it back from
``GET /web/downloads/<id>``, with HTTP Range requests (RFC 9110 §14) so a
video element can seek.  The fetch writes the plaintext in file order, so
the first ``available()`` bytes on disk are final: a range inside them is
answered at once with 206, a range beyond them waits until the fetch has
written it (or failed).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio
from starlette.responses import JSONResponse, Response, StreamingResponse

from protocol.chunks import Link

log = logging.getLogger(__name__)

Json = dict[str, Any]
Emit = Callable[[Json], Awaitable[None]]
#: ``fetch(link, dest, emit) -> result``: ``mu get`` into ``dest`` (written as ``dest.mu-part`` first).
Fetch = Callable[[Link, Path, Emit], Awaitable[Json]]

DOWNLOADS_DIR = "web-downloads"
PART_SUFFIX = ".mu-part"  # node/files/fetcher.py writes here, then renames (its PART_SUFFIX)
#: Downloads kept at once; opening one more deletes the oldest finished one.
MAX_DOWNLOADS = 16
#: Bytes read from disk per piece of a response.
READ_PIECE = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What a file's root manifest says: size, name, media type."""

    size: int
    name: str
    media_type: str


class TooManyDownloads(Exception):
    """Every download slot holds one still running."""


class Download:
    """One link being opened: the file on disk, how much of it is there, how it ended."""

    def __init__(self, download_id: str, link: Link, dest: Path) -> None:
        self.id = download_id
        self.link = link
        self.dest = dest
        self.info: FileInfo | None = None
        self.done = False
        self.error: str | None = None
        self.sats_spent = 0
        self._changed = trio.Event()

    def changed(self) -> None:
        """Wake every reader waiting for more bytes (or for the end)."""
        self._changed.set()
        self._changed = trio.Event()

    def available(self) -> int:
        """Plaintext bytes on disk, all final (the fetch writes in file order)."""
        for path in (self.dest, self.dest.with_name(self.dest.name + PART_SUFFIX)):
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                continue
        return 0

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        """Return once ``ready()`` holds or the download has ended."""
        while not ready() and not self.done and self.error is None:
            await self._changed.wait()

    def status(self) -> Json:
        info = self.info
        return {"id": self.id, "bytes": self.available(), "size": info.size if info else None,
                "name": info.name if info else None, "media_type": info.media_type if info else None,
                "done": self.done, "error": self.error, "sats_spent": self.sats_spent}

    def read(self, offset: int, count: int) -> bytes:
        """Read up to ``count`` bytes at ``offset`` of whichever file holds them (renamed when done)."""
        for path in (self.dest, self.dest.with_name(self.dest.name + PART_SUFFIX)):
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    return f.read(count)
            except FileNotFoundError:
                continue
        raise FileNotFoundError(f"download {self.id} has no file on disk")

    async def stream(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive), each piece once it is on disk."""
        offset = start
        while offset < end:
            await self.wait_until(lambda: self.available() > offset)
            if self.available() <= offset:
                raise OSError(f"download {self.id} ended at {self.available()} bytes: {self.error}")
            count = min(READ_PIECE, end - offset, self.available() - offset)
            piece = await trio.to_thread.run_sync(self.read, offset, count)
            if not piece:
                raise OSError(f"download {self.id}: no bytes at {offset}")
            offset += len(piece)
            yield piece


class Downloads:
    """The page's open downloads of one node, at most ``MAX_DOWNLOADS``.

    Args:
        data_dir: ``web-downloads/`` goes there (emptied at start: the page's
            downloads last as long as the node runs).
        fetch: runs one fetch (``NetworkService.get`` in the node).
        describe: the root manifest's FileInfo when its chunk is in the store, else None.
    """

    def __init__(self, data_dir: Path, fetch: Fetch, describe: Callable[[Link], FileInfo | None]) -> None:
        self.dir = Path(data_dir) / DOWNLOADS_DIR
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self._fetch = fetch
        self._describe = describe
        self._downloads: OrderedDict[str, Download] = OrderedDict()

    def get(self, download_id: str) -> Download | None:
        return self._downloads.get(download_id)

    def open(self, link: Link, nursery: trio.Nursery) -> Download:
        """Start fetching ``link`` in ``nursery``; TooManyDownloads when every slot is busy."""
        if len(self._downloads) >= MAX_DOWNLOADS:
            finished = next((d for d in self._downloads.values() if d.done or d.error is not None), None)
            if finished is None:
                raise TooManyDownloads(f"{MAX_DOWNLOADS} downloads are still running")
            del self._downloads[finished.id]
            for path in (finished.dest, finished.dest.with_name(finished.dest.name + PART_SUFFIX)):
                path.unlink(missing_ok=True)
        download_id = secrets.token_hex(8)
        download = Download(download_id, link, self.dir / download_id)
        self._downloads[download_id] = download
        nursery.start_soon(self._run, download)
        return download

    async def _run(self, download: Download) -> None:
        async def on_event(event: Json) -> None:
            if download.info is None:  # the root is the first chunk fetched (specs/chunks.md §6)
                download.info = self._describe(download.link)
            download.sats_spent = int(event.get("sats_spent", download.sats_spent))
            download.changed()

        try:
            result = await self._fetch(download.link, download.dest, on_event)
            if download.info is None:
                download.info = self._describe(download.link)
            download.sats_spent = int(result.get("sats_spent", download.sats_spent))
            download.done = True
        except Exception as exc:  # a failed fetch is the page's news, not the node's end
            log.info("web: opening %s failed: %s", download.id, exc)
            download.error = str(exc) or type(exc).__name__
        download.changed()


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A satisfiable range: ``start`` to ``end`` exclusive, of a file of ``size`` bytes."""

    start: int
    end: int
    size: int

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


class RangeNotSatisfiable(Exception):
    """The Range header names no byte of the file (416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range ``header`` asks of a ``size``-byte file; None: send the whole file.

    Several ranges, or a header that is not ``bytes=...``, are ignored
    (RFC 9110 §14.2 lets a server ignore Range) and the whole file is sent.

    Raises:
        RangeNotSatisfiable: the range starts at or past the end.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # a suffix: the last N bytes
        count = min(int(last), size)
        if count == 0:
            raise RangeNotSatisfiable(f"bytes=-0 of {size} bytes")
        return ByteRange(size - count, size, size)
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size or end <= start:
        raise RangeNotSatisfiable(f"{header} of {size} bytes")
    return ByteRange(start, end, size)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error reply in the control API's JSON shape (specs/network.md §6 Control API)."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers={"Cache-Control": "no-store", **(headers or {})})


async def download_response(download: Download, range_header: str | None) -> Response:
    """The reply to ``GET /web/downloads/<id>``: the whole file (200) or one range (206), sent as it arrives."""
    await download.wait_until(lambda: download.info is not None)
    info = download.info
    if info is None:
        return error_response(502, "fetch-failed", download.error or "the file's root never arrived")
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store",
               "Content-Disposition": f"inline; filename*=UTF-8''{quote(info.name, safe='')}"}
    try:
        wanted = parse_range(range_header, info.size)
    except RangeNotSatisfiable as exc:
        return error_response(416, "range-not-satisfiable", str(exc), {"Content-Range": f"bytes */{info.size}"})
    if wanted is None:
        headers["Content-Length"] = str(info.size)
        return StreamingResponse(download.stream(0, info.size), media_type=info.media_type, headers=headers)
    headers.update({"Content-Length": str(wanted.end - wanted.start), "Content-Range": wanted.content_range()})
    return StreamingResponse(download.stream(wanted.start, wanted.end), status_code=206,
                             media_type=info.media_type, headers=headers)
