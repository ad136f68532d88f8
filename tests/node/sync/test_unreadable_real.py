"""Unreadable paths with real permissions (specs/sync.md §8): the kernel denies, not a stand-in.

Root reads everything, so under root (CI) the scenario runs in a child
process as the unprivileged user ``nobody`` (``setpriv``); as any other
user it runs as that user.  Two devices of one folder, in-process as in
test_engine: device A's file and directory lose their permissions
(``chmod 000``) while A also edits another file; B must get the edit and
keep what A cannot read as it was (nothing deleted), then get A's changes
once A can read them again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]

PRELUDE = r'''
import json, os, stat, sys
from pathlib import Path
import trio
from tests.node.sync.test_engine import Network, device, settle, tree_hash

def pair(base: Path) -> tuple:
    net = Network()
    return device(base, net, "a"), device(base, net, "b")
'''

# Each scenario defines main(base) -> dict; this runs it and prints the dict as one JSON line.
RUN = r'''
print(json.dumps(trio.run(main, Path(sys.argv[1]))))
'''

SCENARIO = PRELUDE + r'''
async def main(base: Path) -> dict:
    a, b = pair(base)
    (a.root / "dir").mkdir()
    (a.root / "dir/inner.txt").write_bytes(b"inside")
    (a.root / "secret.txt").write_bytes(b"v1")
    (a.root / "keep.txt").write_bytes(b"one")
    await settle(a, b)
    (a.root / "secret.txt").write_bytes(b"v2")
    os.chmod(a.root / "secret.txt", 0)
    os.chmod(a.root / "dir", 0)
    (a.root / "keep.txt").write_bytes(b"one, changed")
    await settle(a, b)
    seen = {"unreadable": dict(a.unreadable), "b_keep": (b.root / "keep.txt").read_bytes().decode(),
            "b_secret": (b.root / "secret.txt").read_bytes().decode(), "b_dir": (b.root / "dir").exists()}
    os.chmod(a.root / "secret.txt", 0o644)
    os.chmod(a.root / "dir", 0o755)
    await settle(a, b)
    seen.update(after=dict(a.unreadable), equal=tree_hash(a.root) == tree_hash(b.root),
                b_secret_after=(b.root / "secret.txt").read_bytes().decode(),
                b_inner=(b.root / "dir/inner.txt").read_bytes().decode())
    return seen
''' + RUN


REVERT_SCENARIO = PRELUDE + r'''
async def main(base: Path) -> dict:
    a, b = pair(base)
    (a.root / "dir").mkdir()
    (a.root / "dir/x.txt").write_bytes(b"x")
    await settle(a, b)
    os.chmod(b.root / "dir", 0o644)  # on B: listable, not searchable
    os.chmod(a.root / "dir/x.txt", 0o600)
    await settle(a, b)
    seen = {"unwritable": dict(b.unwritable)}
    os.chmod(b.root / "dir", 0o755)
    await settle(b, a, b, a)
    seen.update(a_mode=oct(stat.S_IMODE(os.lstat(a.root / "dir/x.txt").st_mode)),
                b_mode=oct(stat.S_IMODE(os.lstat(b.root / "dir/x.txt").st_mode)))
    return seen
''' + RUN


def _as_unprivileged() -> list[str]:
    """The argv prefix that runs a command as a user the permission bits apply to."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits deny root nothing")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def _run(scenario: str) -> dict[str, Any]:
    """Run ``scenario`` (it prints one JSON line) as an unprivileged user in a fresh directory of its own."""
    prefix = _as_unprivileged()
    probe = subprocess.run([*prefix, sys.executable, "-c", "import tests.node.sync.test_engine"], cwd=REPO_ROOT,
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"the repository is not readable by the unprivileged user: {probe.stderr.strip()[-200:]}")
    base = Path(tempfile.mkdtemp(prefix="mu-unreadable-"))
    try:
        if prefix:
            shutil.chown(base, "nobody", "nogroup")
        run = subprocess.run([*prefix, sys.executable, "-c", scenario, str(base)], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    finally:
        subprocess.run([*prefix, "chmod", "-R", "u+rwx", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_a_new_mode_under_a_directory_the_device_cannot_search_is_listed_and_arrives_once_it_can() -> None:
    seen = _run(REVERT_SCENARIO)
    assert seen["unwritable"] == {"dir/x.txt": "it cannot be looked at (permission denied)"}, \
        "not applied, so not claimed in B's state"
    assert seen["a_mode"] == seen["b_mode"] == "0o600", "A's chmod reached B once it could"


def test_a_file_and_a_directory_the_device_may_not_read_wait_and_lose_nothing() -> None:
    seen = _run(SCENARIO)
    assert seen["unreadable"] == {"dir": os.strerror(13), "secret.txt": os.strerror(13)}
    assert seen["b_keep"] == "one, changed", "the rest of the folder synced"
    assert seen["b_secret"] == "v1" and seen["b_dir"], "what A could not read was kept as it was, not deleted"
    assert seen["after"] == {} and seen["equal"], "once readable, A's changes went through"
    assert seen["b_secret_after"] == "v2" and seen["b_inner"] == "inside"
