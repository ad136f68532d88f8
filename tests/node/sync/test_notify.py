"""Notify between sync services, status details, and detector-driven rounds (specs/sync.md §16 Notify, §15).

Two ``SyncService``s share an in-memory network of records and hosts
(tests/node/sync/test_engine.py); their "nodes" are fake dialers whose
sessions record what was notified.  Rounds are run by hand, so every
notify and every drop is seen deterministically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from node.store import ChunkStore
from node.sync import LocalChange, look
from node.sync.notify import MAX_NOTIFY_PEERS, NOTIFY_INTERVAL, NotifyGate, send_notifies
from node.sync.service import SyncService
from protocol.wire import SyncNotify
from tests.node.sync.test_engine import Hosts, Network, device, tree_hash

NODE_A, NODE_B, STRANGER = b"A" * 20, b"B" * 20, b"S" * 20


class Sessions:
    """A dialer whose sessions record notifies; ``down`` nodes cannot be reached."""

    def __init__(self, network: Network, down: frozenset[bytes] = frozenset()) -> None:
        self.dht = network
        self.down = down
        self.sent: list[tuple[bytes, SyncNotify]] = []

    async def session(self, node_id: bytes) -> Any:
        if node_id in self.down:
            return None
        sent = self.sent

        class Session:
            async def notify(self, message: SyncNotify) -> None:
                sent.append((node_id, message))

        return Session()


def service(tmp_path: Path, name: str, network: Network, node: bytes) -> tuple[SyncService, Sessions]:
    dialer = Sessions(network)
    store = ChunkStore(tmp_path / f"{name}-store")
    sync = SyncService(tmp_path / f"{name}-data", store, dialer, node_id=node, poll_seconds=3600)  # type: ignore[arg-type]
    sync.hosts = Hosts(network, store)  # type: ignore[assignment]
    return sync, dialer


async def pair(tmp_path: Path) -> tuple[SyncService, Sessions, Path, SyncService, Sessions, Path]:
    net = Network()
    a, sent_a = service(tmp_path, "a", net, NODE_A)
    b, sent_b = service(tmp_path, "b", net, NODE_B)
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    dir_a.mkdir()
    dir_b.mkdir()
    (dir_a / "one.txt").write_bytes(b"one")
    link = (await a.add({"path": str(dir_a)}))["write_link"]
    await b.add({"path": str(dir_b), "link": link})
    await a._round(a.folders[str(dir_a)])
    await b._round(b.folders[str(dir_b)])  # B merges A: learns A's node from its record
    await a._round(a.folders[str(dir_a)])  # A merges B
    return a, sent_a, dir_a, b, sent_b, dir_b


def test_a_publishing_round_notifies_the_node_each_other_device_runs_on(tmp_path: Path) -> None:
    async def main() -> None:
        a, sent_a, dir_a, b, sent_b, dir_b = await pair(tmp_path)
        device_a = a.engines[str(dir_a)].device
        assert [(node, m.device) for node, m in sent_b.sent] == [(NODE_A, b.engines[str(dir_b)].device)]
        sent_a.sent.clear()
        (dir_a / "two.txt").write_bytes(b"two")
        await a._round(a.folders[str(dir_a)])
        seq = a.engines[str(dir_a)].published_seq
        assert sent_a.sent == [(NODE_B, SyncNotify(device=device_a, seq=seq))]
        b.notified(NODE_A, sent_a.sent[0][1])
        assert str(dir_b) in b._due and b.notifies["admitted"] == 1
        assert (await b.status({"path": str(dir_b)}))["pending_down"] == 1
        await b._round(b.folders[str(dir_b)])
        assert tree_hash(dir_a) == tree_hash(dir_b)
        status = await b.status({"path": str(dir_b)})
        assert status["pending_down"] == 0 and status["pending_up"] == 0
        [seen] = status["devices_seen"]
        assert seen["device"] == device_a.hex()[:16] and seen["seq"] == seq and seen["notifiable"] is True
        assert status["files"] == 2 and status["bytes"] == 6 and status["conflicts"] == []

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_unknown_old_foreign_and_flooding_notifies_are_dropped(tmp_path: Path) -> None:
    async def main() -> None:
        a, sent_a, dir_a, b, _, dir_b = await pair(tmp_path)
        device_a = a.engines[str(dir_a)].device
        merged = b.engines[str(dir_b)].peers[device_a].seq
        b._due.clear()
        b.notified(NODE_A, SyncNotify(device=bytes(32), seq=9))  # a device no folder here has
        b.notified(NODE_A, SyncNotify(device=device_a, seq=merged))  # already merged
        b.notified(STRANGER, SyncNotify(device=device_a, seq=merged + 1))  # not the node A's record names
        b.notified(NODE_A, SyncNotify(device=b.engines[str(dir_b)].device, seq=99))  # B itself
        assert not b._due and b.notifies == {"received": 4, "admitted": 0, "sent": 1}
        for seq in range(merged + 1, merged + 50):  # a flood from A's own node: one round per interval
            b.notified(NODE_A, SyncNotify(device=device_a, seq=seq))
        assert b.notifies["admitted"] == 1 and b.gate.refused == 48
        await trio.sleep(NOTIFY_INTERVAL)
        b.notified(NODE_A, SyncNotify(device=device_a, seq=merged + 60))
        assert b.notifies["admitted"] == 2 and str(dir_b) in b._due

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_the_gate_forgets_the_oldest_peer_past_its_bound() -> None:
    gate = NotifyGate()
    for i in range(MAX_NOTIFY_PEERS + 1):
        assert gate.admit(i.to_bytes(20, "big"), now=0.0)
    assert len(gate._last) == MAX_NOTIFY_PEERS
    assert gate.admit((0).to_bytes(20, "big"), now=0.0)  # forgotten: admitted again
    assert not gate.admit((5).to_bytes(20, "big"), now=0.5)
    assert gate.admit((5).to_bytes(20, "big"), now=NOTIFY_INTERVAL)


def test_an_unreachable_node_is_not_notified_and_nothing_raises() -> None:
    async def main() -> None:
        dialer = Sessions(Network(), down=frozenset({NODE_B}))
        assert await send_notifies(dialer, bytes(32), 3, [NODE_A, NODE_B, NODE_A]) == 1
        assert dialer.sent == [(NODE_A, SyncNotify(device=bytes(32), seq=3))]

    trio.run(main)


def test_serve_runs_a_round_from_the_detector_without_waiting_for_the_poll(tmp_path: Path) -> None:
    async def main() -> None:
        net = Network()
        a, _ = service(tmp_path, "a", net, NODE_A)
        dir_a = tmp_path / "a"
        dir_a.mkdir()
        async with trio.open_nursery() as nursery:
            await nursery.start(a.serve)
            await a.add({"path": str(dir_a)})
            with trio.fail_after(60):
                while str(dir_a) not in a.detectors:
                    await trio.sleep(0.05)  # polling the service's own task, bounded by fail_after
                await a.detectors[str(dir_a)].wait_rounds(1)
                (dir_a / "seen.txt").write_bytes(b"by watchdog")
                while "seen.txt" not in a.engines[str(dir_a)].state.live():
                    await trio.sleep(0.05)  # the poll period is an hour: only the detector can make this round
            status = await a.status({"path": str(dir_a)})
            assert status["watching"] is True and status["files"] == 1
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_round_given_the_detectors_changes_does_not_scan_the_tree(tmp_path: Path) -> None:
    async def main() -> None:
        net = Network()
        a = device(tmp_path, net, "a")
        await a.run_round()
        (a.root / "unreported.txt").write_bytes(b"the detector has not said")
        assert (await a.run_round(detected=[])).local_changes == 0
        assert "unreported.txt" not in a.state.live()
        record = look(a.root, "unreported.txt")
        assert (await a.run_round(detected=[LocalChange("unreported.txt", record)])).local_changes == 1
        (a.root / "unreported.txt").unlink()
        (a.root / "missed.txt").write_bytes(b"only a rescan finds me")
        assert (await a.run_round()).local_changes == 2  # None: the whole tree, the safety net
        assert sorted(a.state.live()) == ["missed.txt"]

    trio.run(main)


def test_a_detected_file_gone_before_the_round_reads_it_is_looked_at_again_not_an_error(tmp_path: Path) -> None:
    # The read-only device of test_sync_devnet: its detector saw the file the sync itself wrote, the next
    # round's apply deleted it (the remote's delete), and the round after was handed the stale change.
    # Failing that round kept the change for the next one, which failed the same way, for good.
    async def main() -> None:
        net = Network()
        a = device(tmp_path, net, "a")
        await a.run_round()
        (a.root / "brief.txt").write_bytes(b"here a moment")
        stale = LocalChange("brief.txt", look(a.root, "brief.txt"))
        (a.root / "brief.txt").unlink()
        report = await a.run_round(detected=[stale])
        assert report.retry == ("brief.txt",) and report.local_changes == 0
        assert "brief.txt" not in a.state.live()
        assert (await a.run_round(detected=[LocalChange("brief.txt", None)])).local_changes == 0

    trio.run(main)
