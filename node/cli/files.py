"""``mu add`` and ``mu get``: files in and out of the local store (README "Adding and getting files").

Exit codes: 0 ok, 1 usage or operational error, 2 not found (input file or
a chunk), 3 integrity failure (a chunk or the key did not verify).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from node.cli.exit_codes import EXIT_INTEGRITY, EXIT_NOT_FOUND, EXIT_OK, fail
from node.cli.network import add_via_node, get_via_node, node_for_cli
from node.runtime.config import resolve_data_dir
from node.files.local import add_file, get_file, load_convergence_secret
from node.store import STORE_DIR, ChunkCorrupt, ChunkNotFound, ChunkStore, StoreError
from protocol.chunks import (
    DEFAULT_CHUNK_SIZE,
    FileDecoder,
    IntegrityError,
    Link,
    LinkError,
    LocalChunkError,
    RawWalker,
    parse_key,
)

# Files smaller than this finish too fast for a progress bar to help.
PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("add", help="encrypt a file into the local store and print its link")
    p.add_argument("file", type=Path, help="file to add")
    p.add_argument("--convergent", action="store_true", help="derive the key from the content and your convergence secret (equal files dedupe)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="bytes per chunk: a power of two from 65536 to 4194304 (default 1 MiB)")
    p.add_argument("--name", default=None, help="name kept in the encrypted manifest (default: the file's name)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_add)

    g = sub.add_parser("get", help="decrypt a file from the local store by its link or root")
    g.add_argument("link", help="mu:ROOT#KEY link, or a root (then --key or --raw is needed)")
    g.add_argument("-o", "--output", type=Path, default=None, help="where to write the file (atomically)")
    g.add_argument("--key", default=None, help="base58 file key, for a link or root without one")
    g.add_argument("--raw", action="store_true",
                   help="no key: fetch (through a running node) and verify every ciphertext chunk into the store; "
                        "nothing is decrypted or written outside the store")
    g.add_argument("--json", action="store_true", help="machine-readable output")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=run_get)


@contextmanager
def _progress(total: int, label: str, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr for big files on a terminal, else nothing."""
    if quiet or total < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    # stderr, so stdout stays clean for the link or --json output.
    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        transient=True, console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _open_store(args: argparse.Namespace) -> ChunkStore:
    return ChunkStore(resolve_data_dir(args.data_dir) / STORE_DIR)


def run_add(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return fail(f"no such file: {path}", EXIT_NOT_FOUND)
    except OSError as exc:
        return fail(f"cannot read {path}: {exc.strerror}")
    if not path.is_file():
        return fail(f"not a regular file: {path}")
    node = node_for_cli(args.data_dir)
    if node is not None:  # a node runs on this data dir: add to the network through it
        return add_via_node(node, path, convergent=args.convergent, as_json=args.json, quiet=args.quiet,
                            chunk_size=args.chunk_size, name=args.name)
    data_dir = resolve_data_dir(args.data_dir)
    try:
        secret = load_convergence_secret(data_dir) if args.convergent else None
        with _open_store(args) as store, _progress(size, "adding", args.quiet) as progress:
            result = add_file(store, path, convergence_secret=secret, chunk_size=args.chunk_size, name=args.name, progress=progress)
    except LocalChunkError as exc:
        return fail(str(exc))
    except (StoreError, OSError, ValueError) as exc:
        return fail(f"add failed: {exc}")
    if args.json:
        print(json.dumps({
            "link": str(result.link),
            "root": result.link.root_text,
            "size": result.size,
            "chunks": result.chunks,
            "new_chunks": result.new_chunks,
            "name": result.name,
            "media_type": result.media_type,
            "convergent": bool(args.convergent),
        }))
    else:
        print(result.link)
    return EXIT_OK


def run_get(args: argparse.Namespace) -> int:
    try:
        link = Link.parse(args.link)
        if args.key is not None:
            link = Link(link.root, parse_key(args.key))
    except LinkError as exc:
        return fail(f"bad link: {exc}")
    if args.raw:
        return _get_raw(args, link)
    if link.key is None:
        return fail("this link has no key: pass --key KEY to decrypt the file, or --raw to fetch the ciphertext")
    if args.output is None:
        return fail("give the output file with -o PATH")
    out: Path = args.output
    if out.is_dir():
        return fail(f"{out} is a directory: give a file path with -o")
    if not out.parent.exists() and str(out.parent):
        return fail(f"no such directory: {out.parent}", EXIT_NOT_FOUND)
    node = node_for_cli(args.data_dir)
    if node is not None:  # a node runs on this data dir: fetch from the network through it
        return get_via_node(node, str(link), out, max_price=None, as_json=args.json, quiet=args.quiet)
    try:
        with _open_store(args) as store:
            total = _size_hint(store, link)
            with _progress(total, "getting", args.quiet) as progress:
                result = get_file(store, link, out, progress=progress)
    except ChunkNotFound as exc:
        return fail(f"{exc} (the file is not complete in the local store)", EXIT_NOT_FOUND)
    except (IntegrityError, ChunkCorrupt) as exc:
        return fail(f"integrity failure: {exc}", EXIT_INTEGRITY)
    except (StoreError, OSError) as exc:
        return fail(f"get failed: {exc}")
    if args.json:
        print(json.dumps({"path": str(result.path), "size": result.size, "chunks": result.chunks,
                          "name": result.name, "media_type": result.media_type, "root": link.root_text}))
    else:
        print(f"wrote {result.size} bytes to {result.path}")
    return EXIT_OK


def _get_raw(args: argparse.Namespace, link: Link) -> int:
    """``mu get --raw``: verify the file's ciphertext chunks by its bare root (specs/chunks.md §6.5).

    With a running node they are fetched from the network into its store;
    without one, the chunks already in the local store are walked and checked.
    The plaintext is never produced, so ``-o`` has no meaning here.
    """
    if args.output is not None:
        return fail("--raw keeps the ciphertext chunks in the store and writes no file: drop -o")
    node = node_for_cli(args.data_dir)
    if node is not None:
        return get_via_node(node, link.root_text, None, max_price=None, as_json=args.json, quiet=args.quiet)
    walker = RawWalker(link.root)
    try:
        with _open_store(args) as store:
            while (address := walker.next_address()) is not None:
                walker.feed(store.get(address))
    except ChunkNotFound as exc:
        return fail(f"{exc} (the file is not complete in the local store; run a node to fetch it)", EXIT_NOT_FOUND)
    except (IntegrityError, ChunkCorrupt) as exc:
        return fail(f"integrity failure: {exc}", EXIT_INTEGRITY)
    except (StoreError, OSError) as exc:
        return fail(f"get failed: {exc}")
    if args.json:
        print(json.dumps({"root": link.root_text, "raw": True, "chunks": walker.chunks,
                          "data_chunks": walker.data_chunks, "size": walker.stored_bytes}))
    else:
        print(f"verified {walker.chunks} chunks ({walker.data_chunks} data, {walker.stored_bytes} bytes of ciphertext)")
    return EXIT_OK


def _size_hint(store: ChunkStore, link: Link) -> int:
    """The file size for the progress bar: decrypts the root once, only on a terminal."""
    if not sys.stderr.isatty():
        return 0
    decoder = FileDecoder.from_link(link)
    try:
        decoder.feed(store.get(link.root, verify=False))
    except (StoreError, IntegrityError):
        return 0
    manifest = decoder.manifest
    return manifest.size if manifest is not None else 0


