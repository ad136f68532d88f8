"""``mu ui``: a one-time login URL for the running node's web pages (specs/network.md §6 Control API, Security).

As Jupyter's token login: the URL carries a token that works once and sets
the browser's session cookie; the control token itself never reaches the
browser.
"""

from __future__ import annotations

import argparse
import webbrowser

from node.cli.backend import answering_node
from node.cli.exit_codes import EXIT_FAILURE, EXIT_OK, fail
from node.cli.remote_backend import RemoteBackend
from node.cli.results import BackendError
from node.runtime.config import resolve_data_dir


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ui", help="print a one-time login URL for the running node's web pages")
    p.add_argument("--open", action="store_true", help="also open it in the default browser")
    p.set_defaults(func=run_ui)


def run_ui(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    client = answering_node(data_dir)
    if client is None:
        return fail(f"no node is running with data dir {data_dir} (start one with `mu node`)", EXIT_FAILURE)
    try:
        url = RemoteBackend(client).login_url()
    except BackendError as exc:
        return fail(exc.message, exc.exit_code)
    print(url)
    if args.open:
        webbrowser.open(url)
    return EXIT_OK
