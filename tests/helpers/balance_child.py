"""A node process for service balance crash tests: PUT chunks to its peer in balance mode, printing each one.

    python -m tests.helpers.balance_child ROOT NAME PEER_NAME COUNT

Runs ``tests.helpers.balance``'s in-process peer NAME (offering storage) in
ROOT/NAME, writes its port to ROOT/NAME/port, then PUTs COUNT chunks (-1:
without end) to PEER_NAME, printing ``put <n>`` after each, and ``done``
once its view of the peer has every acknowledgement; it then serves until
its stdin closes.  Only the peer named first in sort order dials; the other
uses the session it is given, so the pair has one session at a time.  A
test kills it with SIGKILL at random moments and starts it again.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

from node.transport import Session, TransportError
from protocol.payments import PaymentError
from tests.helpers.balance import BalancePeer, open_balance_peer, peer_identity, random_chunk

OFFER = 10**9
RETRY_SECONDS = 0.05  # a back-off before dialling again, inside the child


async def session_with(me: BalancePeer, root: Path, peer_name: str, name: str) -> Session:
    peer_id = peer_identity(peer_name).node_id
    while True:
        if name < peer_name:
            try:
                port = int((root / peer_name / "port").read_text())
                return await me.transport.connect(peer_id, "127.0.0.1", port)
            except (OSError, ValueError, TransportError):
                pass
        else:
            for session in me.transport.sessions():
                if session.peer_node_id == peer_id:
                    return session
        await trio.sleep(RETRY_SECONDS)  # the peer is (re)starting: poll, inside the child


async def main(root: Path, name: str, peer_name: str, count: int) -> None:
    async with open_balance_peer(root / name, name, offer=OFFER) as me:
        port_file = root / name / "port"
        port_file.with_suffix(".tmp").write_text(str(me.transport.port))
        os.replace(port_file.with_suffix(".tmp"), port_file)
        async with trio.open_nursery() as nursery:
            async def until_stdin_closes() -> None:
                await trio.to_thread.run_sync(sys.stdin.read)
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_stdin_closes)
            done = 0
            while count < 0 or done < count:
                try:
                    session = await session_with(me, root, peer_name, name)
                    link = await me.payer.link(session)
                    address, data = random_chunk()
                    await me.payer.put(link, address, data)
                except (TransportError, PaymentError):
                    await trio.sleep(RETRY_SECONDS)  # the peer was killed or refuses for now: try again
                    continue
                done += 1
                print(f"put {done}", flush=True)
            peer = peer_identity(peer_name).node_id
            while True:
                view = me.balance.view(peer)
                if view is not None and view.unacknowledged == 0:
                    break
                await me.balance.acked.wait()
            print("done", flush=True)


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]))
