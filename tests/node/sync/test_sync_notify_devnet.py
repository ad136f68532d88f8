"""SYNC_NOTIFY on a devnet of real ``mu node`` processes (issue 17 item 5, specs/sync.md §16 Notify).

The nodes poll the other devices' records only every ``LONG_POLL``
seconds (``MU_SYNC_POLL_SECONDS``), far longer than the test waits: a
change reaches the other device within ``PUSHED`` seconds only because
the publishing node notified the other's.  A stranger's notifies (an
unknown device, a flood, a malformed frame) cost the receiving node
nothing: it stays up and keeps syncing.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import trio

from node.transport import SessionBroken, SessionClosed, open_transport
from protocol.identity import Identity
from protocol.wire import Message, SyncNotify
from tests.helpers.transport import payment_key
from tests.node.folders.test_folder_devnet import mu
from tests.node.network.test_devnet import start_devnet
from tests.node.sync.test_engine import tree_hash
from tests.node.sync.test_sync_devnet import add, converge

LONG_POLL = 600.0
PUSHED = 10.0  # detection (debounce + settle) + upload + notify + fetch, on a loaded machine


def status(node: dict, directory: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(mu(node["data_dir"], "sync", "status", str(directory), "--json").stdout)  # type: ignore[no-any-return]


def node_status(node: dict) -> dict:  # type: ignore[type-arg]
    return json.loads(mu(node["data_dir"], "status", "--json").stdout)["sync"]  # type: ignore[no-any-return]


class ServesNothing:
    async def handle_request(self, session: object, message: Message) -> Message | None:
        return None


async def notify_as_a_stranger(node: dict, messages: list[SyncNotify]) -> None:  # type: ignore[type-arg]
    """Open an authenticated session to ``node`` and send ``messages``; the last may break the session."""
    async with open_transport(Identity(bytes(range(32))), ServesNothing(), payment_key=payment_key(7)) as transport:
        session = await transport.connect(bytes.fromhex(node["node_id"]), "127.0.0.1", node["port"])
        for message in messages:
            try:
                await session.notify(message)
            except (SessionBroken, SessionClosed, trio.BrokenResourceError):
                return
        with trio.move_on_after(5):
            await session.wait_closed()  # a malformed frame: the node ends the session


@pytest.mark.slow
def test_a_change_reaches_the_other_device_through_notify_alone_and_strangers_cannot_harm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MU_SYNC_POLL_SECONDS", str(LONG_POLL))
    proc, summary = start_devnet(tmp_path, 4)
    try:
        node_a, node_b = summary["nodes"][1], summary["nodes"][2]
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        (a / "first.txt").write_bytes(b"before b joined")
        links = add(node_a["data_dir"], a)
        add(node_b["data_dir"], b, links["write_link"])
        converge(a, b, 60.0)  # B's first round (run when it is added) reads A's record

        # A learns B (roster, record, node) in the round its change makes, then notifies B.
        (a / "pushed.txt").write_bytes(b"from a, by notify")
        took = converge(a, b, PUSHED)
        (b / "back.txt").write_bytes(b"from b, by notify")
        took_back = converge(b, a, PUSHED)
        print(f"a -> b {took:.1f} s, b -> a {took_back:.1f} s with a {LONG_POLL:.0f} s poll")
        seen_by_b = status(node_b, b)["devices_seen"]
        assert [d["notifiable"] for d in seen_by_b] == [True]
        assert node_status(node_b)["notifies"]["admitted"] >= 1
        assert node_status(node_a)["notifies"]["sent"] >= 1 and node_status(node_b)["notifies"]["sent"] >= 1

        # A stranger's notifies: an unknown device, then a flood naming A's device, then a malformed frame.
        device_a = bytes.fromhex(status(node_a, a)["device"])
        before = node_status(node_b)
        malformed = SyncNotify(device=device_a, seq=1)
        object.__setattr__(malformed, "seq", 0)  # sequence numbers start at 1: MALFORMED on arrival
        flood = [SyncNotify(device=device_a, seq=10**9 + i) for i in range(200)]
        trio.run(notify_as_a_stranger, node_b, [SyncNotify(device=bytes(32), seq=5), *flood, malformed])
        after = node_status(node_b)
        assert after["notifies"]["received"] - before["notifies"]["received"] == 201  # the malformed one never got in
        # Only A's own node (its record names it) speaks for A's device: the stranger made no round.
        assert after["notifies"]["admitted"] == before["notifies"]["admitted"]

        # `mu sync status` without a directory: every folder, with the last change seen from each device.
        text = mu(node_b["data_dir"], "sync", "status").stdout
        assert f"{b}  up to date" in text or f"{b}  syncing" in text  # its own writes may still be looked at
        assert f"device {device_a.hex()[:16]}  seq " in text and "pending down 0" in text

        # B is still up and still syncing by notify.
        (a / "after-strangers.txt").write_bytes(b"still pushed")
        converge(a, b, PUSHED)
        assert tree_hash(a) == tree_hash(b)
        # The flood named sequence numbers A never published: B did not take them as pending.
        assert status(node_b, b)["pending_down"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
