"""``mu ui``: a one-time URL that logs a browser into the running node's web app (specs/network.md §10 Web app).

As Jupyter's token login: the CLI, which can read ``control.token``, asks
the node for a login URL (``POST /v1/login-link``); opening it sets the
session cookie and shows the Files page.  The URL works once, for a few
minutes; run ``mu ui`` again for another.
"""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path

import trio

from node.api.control import ControlClient, ControlError
from node.cli.exit_codes import EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK, fail
from node.runtime.config import resolve_data_dir


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ui", help="print (or --open) a one-time login URL for the node's web app")
    p.add_argument("--open", action="store_true", help="also open it in the default browser")
    p.set_defaults(func=run_ui)


async def _login_url(data_dir: Path) -> str:
    reply = await ControlClient.from_data_dir(data_dir).call("POST", "login-link", {})
    return str(reply["url"])


def run_ui(args: argparse.Namespace) -> int:
    try:
        url = trio.run(_login_url, resolve_data_dir(args.data_dir))
    except ControlError as exc:
        return fail(exc.message, EXIT_NOT_FOUND if exc.status == 503 else EXIT_FAILURE)
    print(url, flush=True)
    if args.open and not webbrowser.open(url):
        return fail("no browser could be opened; open the URL above yourself")
    return EXIT_OK
