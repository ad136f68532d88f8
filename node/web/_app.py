"""The web app's routes (specs/network.md §Web app).

``WebApp`` owns what only the page needs: the files book, the page's
downloads, uploads.  Its JSON routes are control API routes under
``/v1/web/`` (same guard, same 400s as every route); the pages, the static
files, the upload body and the downloaded bytes are starlette routes
mounted with ``ControlServer.mount_ui``, behind the same guard (session
cookie, CSRF header on POST, Host/Origin checks, Content-Security-Policy).
"""

from __future__ import annotations

import logging
import mimetypes
import secrets
import shutil
import time
from importlib import resources
from pathlib import Path

import trio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from node.api.control import ControlError, ControlServer, Emit, EventStream, Json, Param, ParamKind
from node.bitcoin.wallet import Wallet
from node.dht import DhtNode
from node.files.network import NetworkService
from node.ledger import Ledger
from node.web._book import BookEntry, FilesBook, MAX_NAME_CHARS
from node.web._downloads import Downloads, FileInfo, TooManyDownloads, download_response, error_response
from node.web._reports import (
    SETTINGS_SHOWN,
    channels_report,
    close_channel,
    hosts_report,
    network_report,
    read_settings,
    save_settings,
    with_speeds,
)
from node.store import ChunkNotFound
from node.store.retention import file_addresses
from protocol.chunks import FileDecoder, IntegrityError, Link, LinkError

log = logging.getLogger(__name__)

UPLOADS_DIR = "web-uploads"
#: Largest file the page may upload in one request.
MAX_UPLOAD_BYTES = 4 << 30
#: The page's paths: each serves index.html, whose script shows that page.
PAGES = ("/", "/files", "/open", "/sync", "/earnings", "/network", "/settings")
STATIC = resources.files("node.web") / "static"


def _link(text: object) -> Link:
    if not isinstance(text, str):
        raise ControlError(400, "bad-argument", "link must be a string")
    try:
        return Link.parse(text)
    except LinkError as exc:
        raise ControlError(400, "bad-link", str(exc)) from None


def _root(text: object) -> bytes:
    if not isinstance(text, str) or len(text) != 64:
        raise ControlError(400, "bad-argument", "root must be 64 hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ControlError(400, "bad-argument", "root must be 64 hex digits") from None


class WebApp:
    """The page of one node.

    Args:
        data_dir: the node's data dir (files book, downloads, uploads).
        network: add / get / pin, as ``mu`` uses them.
        ledger, wallet, dht: read for the Earnings and Network pages.
    """

    def __init__(self, data_dir: Path, network: NetworkService, ledger: Ledger, wallet: Wallet,
                 dht: DhtNode) -> None:
        self.data_dir = Path(data_dir)
        self.network = network
        self.ledger = ledger
        self.wallet = wallet
        self.dht = dht
        self.book = FilesBook(data_dir)
        self.uploads = self.data_dir / UPLOADS_DIR
        shutil.rmtree(self.uploads, ignore_errors=True)  # a node stopped mid-upload left these
        self.uploads.mkdir(parents=True)
        self.downloads = Downloads(data_dir, self._fetch, self.describe)
        self._nursery: trio.Nursery | None = None

    def register(self, control: ControlServer) -> None:
        """Add the JSON routes to ``control`` and mount the pages."""
        string, integer = Param(ParamKind.STRING, required=True), Param(ParamKind.INTEGER)
        control.route("GET", "web/files", self._files, params={})
        control.route("POST", "web/unpin", self._unpin, params={"root": string})
        control.route("POST", "web/open", self._open, params={"link": string})
        control.route("POST", "web/download", self._download_status, params={"id": string})
        control.route("GET", "web/channels", self._channels, params={})
        control.route("POST", "web/channels/close", self._close_channel, params={"channel_id": string})
        control.route("GET", "web/network", self._network, params={})
        control.route("GET", "web/settings", self._settings, params={})
        control.route("POST", "web/settings", self._save_settings, params={n: integer for n in SETTINGS_SHOWN})
        control.mount_ui(self.routes())

    def routes(self) -> list[BaseRoute]:
        index = str(STATIC / "index.html")

        async def page(request: Request) -> Response:
            return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-store"})

        return [*(Route(p, page, methods=["GET"]) for p in PAGES),
                Route("/web/upload", self._upload, methods=["POST"]),
                Route("/web/downloads/{download_id}", self._serve_download, methods=["GET"]),
                Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static")]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the page's downloads until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def describe(self, link: Link) -> FileInfo | None:
        """Size, name and media type from the root manifest, if the root chunk is in the store."""
        if link.key is None or not self.network.store.has(link.root):
            return None
        decoder = FileDecoder.from_link(link)
        try:
            decoder.feed(self.network.store.get(link.root))
        except (ChunkNotFound, IntegrityError):
            return None
        manifest = decoder.manifest
        assert manifest is not None  # fed the root
        name = manifest.name or link.root.hex()[:16]
        media_type = manifest.media_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return FileInfo(size=manifest.size, name=name, media_type=media_type)

    async def _fetch(self, link: Link, dest: Path, emit: Emit) -> Json:
        return await self.network.get({"link": str(link), "output": str(dest)}, emit)

    # -- Files ------------------------------------------------------------

    async def _files(self, body: Json) -> Json:
        files: list[Json] = []
        for root in self.network.store.pinned_roots():
            entry = self.book.get(root)
            if entry is None:  # pinned by `mu add` / `mu pin`: the key is not ours to know
                files.append({"root": root.hex(), "link": str(Link(root)), "name": None, "size": None,
                              "media_type": None, "added_at": None})
            else:
                files.append({"root": root.hex(), "link": entry.link, "name": entry.name, "size": entry.size,
                              "media_type": entry.media_type, "added_at": entry.added_at})
        return {"files": files}

    async def _unpin(self, body: Json) -> Json:
        root = _root(body["root"])
        if root not in self.network.pinned:
            raise ControlError(404, "not-found", f"{root.hex()} is not pinned here")
        store = self.network.store
        try:
            addresses = await trio.to_thread.run_sync(file_addresses, store, Link(root))
        except (ChunkNotFound, IntegrityError) as exc:
            raise ControlError(409, "conflict", f"the local copy of {root.hex()} is incomplete: {exc}") from None
        # Unpinned chunks stay until their paid retention runs out (specs/network.md §7).
        await trio.to_thread.run_sync(lambda: store.unpin(addresses, root=root))
        self.network.pinned.discard(root)
        self.book.forget(root)
        return {"root": root.hex(), "unpinned": True}

    async def _upload(self, request: Request) -> Response:
        """Receive the file, then add it as ``POST /v1/add`` does, streaming the add's events to the page."""
        name = request.query_params.get("name", "").strip()[:MAX_NAME_CHARS] or "upload"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
            return error_response(413, "body-too-large", f"uploads are at most {MAX_UPLOAD_BYTES} bytes")
        path = self.uploads / secrets.token_hex(8)
        try:
            received = 0
            async with await trio.open_file(path, "wb") as out:
                async for piece in request.stream():
                    received += len(piece)
                    if received > MAX_UPLOAD_BYTES:
                        path.unlink()
                        return error_response(413, "body-too-large", f"uploads are at most {MAX_UPLOAD_BYTES} bytes")
                    await out.write(piece)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

        async def add(body: Json, emit: Emit) -> Json:
            # The page shows replication as it goes: `added` (chunks), then one `replicated` per chunk.
            try:
                result = await self.network.add({"path": str(path), "name": name}, emit)
            finally:
                path.unlink(missing_ok=True)
            media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self.book.record(BookEntry(link=result["link"], name=name, size=int(result["size"]),
                                       media_type=media_type, added_at=int(time.time())))
            return result

        return EventStream(add, {})

    # -- Open a link --------------------------------------------------------

    async def _open(self, body: Json) -> Json:
        link = _link(body["link"])
        if link.key is None:
            raise ControlError(400, "needs-key", "opening a file needs the key: the link has no #KEY part")
        if self._nursery is None:
            raise ControlError(503, "starting", "the node is still starting")
        try:
            download = self.downloads.open(link, self._nursery)
        except TooManyDownloads as exc:
            raise ControlError(429, "too-many-downloads", str(exc)) from None
        return download.status()

    async def _download_status(self, body: Json) -> Json:
        download = self.downloads.get(str(body["id"]))
        if download is None:
            raise ControlError(404, "not-found", "no such download (the node keeps the last few)")
        return download.status()

    async def _serve_download(self, request: Request) -> Response:
        download = self.downloads.get(request.path_params["download_id"])
        if download is None:
            return error_response(404, "not-found", "no such download")
        return await download_response(download, request.headers.get("range"))

    # -- Earnings, Network, Settings -------------------------------------------

    async def _channels(self, body: Json) -> Json:
        report = await trio.to_thread.run_sync(channels_report, self.ledger)
        try:
            balance: int | None = await self.wallet.balance()
        except Exception as exc:  # the chain RPC may be down: the page says so, the rest still shows
            log.info("web: wallet balance unavailable: %s", exc)
            balance = None
        return {**report, "wallet_balance": balance, "wallet_address": self.wallet.address()}

    async def _close_channel(self, body: Json) -> Json:
        try:
            return await trio.to_thread.run_sync(close_channel, self.ledger, str(body["channel_id"]))
        except LookupError as exc:
            raise ControlError(404, "not-found", str(exc)) from None
        except ValueError as exc:
            raise ControlError(409, "conflict", str(exc)) from None

    async def _network(self, body: Json) -> Json:
        hosts = await trio.to_thread.run_sync(hosts_report, self.ledger)
        return {**network_report(self.dht), "hosts": with_speeds(hosts, self.network.speeds)}

    async def _settings(self, body: Json) -> Json:
        return {**read_settings(self.data_dir), "running": {"quota": self.network.store.quota_bytes}}

    async def _save_settings(self, body: Json) -> Json:
        try:
            save_settings(self.data_dir, body)
        except ValueError as exc:
            raise ControlError(400, "bad-setting", str(exc)) from None
        if body.get("quota") is not None:  # SETTINGS_LIVE: the store checks its limit at each write
            self.network.store.quota_bytes = body["quota"]
        return await self._settings({})

