"""``mu files``: erasure-coded files through a running node (specs/erasure.md).

* ``mu files add FILE --erasure 4-of-8``: add a file and place it as k-of-n
  shares on n distinct hosts; prints the link and the stripe map address;
* ``mu files get LINK --stripes MAP -o OUT``: fetch any k shares per stripe,
  decode and write the file; exit code 2 with the stripes named when some
  stripe has fewer than k shares left;
* ``mu files health [ROOT]``, ``mu files audit MAP``, ``mu files repair MAP``:
  the owner's view and upkeep (specs/erasure.md §7, §8).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from node.api.errors import ControlError
from node.cli.backend import answering_node, resolve_data_dir
from node.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, fail
from node.cli.remote_backend import EXIT_FOR_ERROR_CODE

Json = dict[str, Any]


def erasure_policy(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)-of-(\d+)", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected K-of-N (like 4-of-8), got {text!r}")
    k, n = int(match[1]), int(match[2])
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"need 1 <= K <= N, got {text!r}")
    return k, n


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    files = sub.add_parser("files", help="erasure-coded files through the running node")
    fsub = files.add_subparsers(dest="files_command", metavar="ACTION", required=True)
    p = fsub.add_parser("add", help="add a file as k-of-n erasure-coded shares on n hosts")
    p.add_argument("file", type=Path, help="file to add")
    p.add_argument("--erasure", type=erasure_policy, default=(4, 8), help="K-of-N: any K of the N shares of a stripe give it back (default 4-of-8)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_files_add)
    g = fsub.add_parser("get", help="fetch an erasure-coded file from any k shares per stripe")
    g.add_argument("link", help="mu:ROOT#KEY link")
    g.add_argument("--stripes", required=True,
                   help="the stripe map address printed by `mu files add` (no default: required)")
    g.add_argument("-o", "--output", type=Path, required=True,
                   help="where to write the file, atomically (no default: required)")
    g.add_argument("--json", action="store_true", help="machine-readable output")
    g.set_defaults(func=run_files_get)
    h = fsub.add_parser("health", help="per k-of-n file: shares alive per stripe, last audit, retention, cost")
    h.add_argument("root", nargs="?", default="", help="a root (or its first hex digits) (default: every file)")
    h.add_argument("--json", action="store_true", help="machine-readable output")
    h.set_defaults(func=run_files_health)
    r = fsub.add_parser("renew", help="renew the k-of-n files whose paid retention is about to lapse, within a budget")
    r.add_argument("--max-spend-per-month", type=int, required=True, help="sats this node may spend on renewals a month (no default: required)")
    r.add_argument("--within", type=int, default=None, help="renew what lapses within this many seconds (default a week)")
    r.set_defaults(func=run_files_renew)
    for action, text in (("audit", "audit every share of a k-of-n file now"),
                         ("repair", "audit, then rebuild and re-place every failed share (paid)")):
        a = fsub.add_parser(action, help=text)
        a.add_argument("stripes", help="the stripe map address printed by `mu files add`")
        a.set_defaults(func=run_files_upkeep, action=action)


def _call(args: argparse.Namespace, path: str, body: Json) -> Json | int:
    client = answering_node(resolve_data_dir(args.data_dir))
    if client is None:
        return fail("`mu files` needs a running node (mu node)")
    try:
        reply: Json = client.run_stream_blocking(path, body, lambda event: None)
    except ControlError as exc:
        return fail(exc.message, EXIT_FOR_ERROR_CODE.get(exc.code, EXIT_FAILURE))
    return reply


def run_files_add(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        return fail(f"no such file: {args.file}", EXIT_USAGE)
    k, n = args.erasure
    reply = _call(args, "add", {"path": str(args.file.resolve()), "k": k, "n": n})
    if isinstance(reply, int):
        return reply
    if args.json:
        print(json.dumps(reply))
    else:
        print(f"{reply['link']} --stripes {reply['stripes']}")
    if reply["short_stripes"]:
        return fail(f"stripes {reply['short_stripes']} have shares that found no host")
    return EXIT_OK


def run_files_get(args: argparse.Namespace) -> int:
    reply = _call(args, "get", {"link": args.link, "stripes": args.stripes, "output": str(args.output.resolve())})
    if isinstance(reply, int):
        return reply
    print(json.dumps(reply) if args.json else
          f"{reply['size']} bytes to {reply['path']} from {reply['shares_fetched']} shares, "
          f"{reply['sats_spent']} sats spent", file=sys.stdout)
    return EXIT_OK


def _when(unix: float | None) -> str:
    return "never" if not unix else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


def run_files_health(args: argparse.Namespace) -> int:
    reply = _call(args, "health", {"root": args.root})
    if isinstance(reply, int):
        return reply
    if args.json:
        print(json.dumps(reply))
        return EXIT_OK
    for f in reply["files"]:
        print(f"{f['root']}  stripes {f['stripes'][:16]}")
        print(f"  shares alive per stripe: {' '.join(str(a) for a in f['alive'])}")
        print(f"  last audit: {_when(f['last_audit'])}; next renewal: {_when(f['retained_until'])}; "
              f"cost so far: {f['sats_spent']:,} sats")
    return EXIT_OK


def run_files_upkeep(args: argparse.Namespace) -> int:
    reply = _call(args, args.action, {"stripes": args.stripes})
    if isinstance(reply, int):
        return reply
    print(json.dumps(reply))
    return EXIT_OK


def run_files_renew(args: argparse.Namespace) -> int:
    if args.max_spend_per_month < 0:
        return fail("--max-spend-per-month must be a number of sats, 0 or more", EXIT_USAGE)
    body: Json = {"max_spend_per_month": args.max_spend_per_month}
    if args.within is not None:
        body["within"] = args.within
    reply = _call(args, "renew", body)
    if isinstance(reply, int):
        return reply
    print(f"{len(reply['renewed'])} files renewed for {reply['sats_spent']:,} sats "
          f"({reply['spent_this_month']:,} sats this month)")
    for root in reply["at_risk"]:
        print(f"mu: at risk (its renewal is over the budget, or a host is gone): {root}", file=sys.stderr)
    return EXIT_FAILURE if reply["at_risk"] else EXIT_OK
