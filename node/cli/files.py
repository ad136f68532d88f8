"""``mu add`` and ``mu get``: files into and out of the store (README "Adding and getting files").

Both go through the data dir's backend (node/cli/backend.py): with a node
running, to and from the network; without one, the local store.

Exit codes: 0 ok, 1 operational error, 2 not found (input file or a
chunk), 3 integrity failure (a chunk or the key did not verify), 4 usage
error, 5 ``mu add`` through a node stored some chunk on fewer nodes than
asked (each failed replica is printed with its reason; the link is printed
too, the file is in the node's store).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from node.cli.arguments import power_of_two_in
from node.cli.backend import open_backend
from node.cli.exit_codes import EXIT_NOT_FOUND, EXIT_OK, EXIT_UNDER_REPLICATED, fail
from node.cli.progress import progress_display
from node.cli.results import BackendError, to_json
from protocol.chunks import CDC_AVG, CDC_MAX, CDC_MIN, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, Link, LinkError, parse_key


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("add", help="encrypt a file into the store (through a running node: the network); print its link")
    p.add_argument("file", type=Path, help="file to add")
    p.add_argument("--convergent", action="store_true",
                   help="derive the keys from the content and your convergence secret (equal files and, "
                        "without --chunk-size, equal chunks dedupe)")
    p.add_argument("--chunk-size", type=power_of_two_in(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE), default=None,
                   help="cut fixed-size chunks of this many bytes, a power of two from 65536 to 4194304 "
                        f"(default: content-defined chunks of {CDC_MIN} to {CDC_MAX} bytes, average parameter {CDC_AVG})")
    p.add_argument("--name", default=None, help="name kept in the encrypted manifest (default: the file's name)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run_add)

    g = sub.add_parser("get", help="decrypt a file by its link or root (through a running node: from the network)")
    g.add_argument("link", help="mu:ROOT#KEY link, or a root (then --key or --raw is needed)")
    g.add_argument("-o", "--output", type=Path, default=None,
                   help="where to write the file, atomically (no default: required unless --raw)")
    g.add_argument("--key", default=None,
                   help="base58 file key, for a link or root without one (default: the link's own key)")
    g.add_argument("--raw", action="store_true",
                   help="no key: fetch (through a running node) and verify every ciphertext chunk into the store; "
                        "nothing is decrypted or written outside the store")
    g.add_argument("--json", action="store_true", help="machine-readable output")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    g.set_defaults(func=run_get)


def run_add(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        path.stat()
    except FileNotFoundError:
        return fail(f"no such file: {path}", EXIT_NOT_FOUND)
    except OSError as exc:
        return fail(f"cannot read {path}: {exc.strerror}")
    if not path.is_file():
        return fail(f"not a regular file: {path}")
    backend = open_backend(args.data_dir)
    try:
        with progress_display(quiet=args.quiet) as on_progress:
            result = backend.add(path, convergent=args.convergent, chunk_size=args.chunk_size, name=args.name,
                                 on_progress=on_progress)
    except BackendError as exc:
        return fail(exc.message, exc.exit_code)
    replication = result.replication
    if replication is not None:
        for failure in replication.failed_replicas:
            where = f"node {failure.node_id}" if failure.node_id else "no node left to ask"
            print(f"mu: chunk {failure.chunk[:16]} not stored ({where}): {failure.reason}", file=sys.stderr)
    if args.json:
        print(to_json(result))
    else:
        if replication is not None and not args.quiet:
            print(f"{result.chunks} chunks, {replication.replicas_confirmed} replicas confirmed", file=sys.stderr)
        print(result.link)
    if replication is not None and replication.under_replicated:
        # The file is in this node's store and its link works, but the network holds fewer copies than asked.
        return fail(f"{replication.under_replicated} of {result.chunks} chunks stored on fewer than "
                    f"{replication.replicas_wanted} nodes", EXIT_UNDER_REPLICATED)
    return EXIT_OK


def run_get(args: argparse.Namespace) -> int:
    try:
        link = Link.parse(args.link)
        if args.key is not None:
            link = Link(link.root, parse_key(args.key))
    except LinkError as exc:
        return fail(f"bad link: {exc}")
    output: Path | None = args.output
    if args.raw:
        # specs/chunks.md §6.5 Verify cap: the ciphertext stays in the store, no file is written.
        if output is not None:
            return fail("--raw keeps the ciphertext chunks in the store and writes no file: drop -o")
    else:
        if link.key is None:
            return fail("this link has no key: pass --key KEY to decrypt the file, or --raw to fetch the ciphertext")
        if output is None:
            return fail("give the output file with -o PATH")
        if output.is_dir():
            return fail(f"{output} is a directory: give a file path with -o")
        if not output.parent.exists() and str(output.parent):
            return fail(f"no such directory: {output.parent}", EXIT_NOT_FOUND)
    backend = open_backend(args.data_dir)
    try:
        with progress_display(quiet=args.quiet) as on_progress:
            result = backend.get(link, output, on_progress=on_progress)
    except BackendError as exc:
        return fail(exc.message, exc.exit_code)
    print(to_json(result) if args.json else result.headline())
    return EXIT_OK
