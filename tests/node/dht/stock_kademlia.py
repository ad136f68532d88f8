"""Stock ``kademlia`` 2.2.3 servers in a subprocess, driven by JSON lines.

The interoperability reference runs on asyncio; the mu nodes under test run
on trio in the test process.  This script hosts any number of stock
``kademlia.network.Server`` instances on one asyncio loop and obeys one JSON
command per stdin line, answering one JSON line on stdout:

    {"cmd": "start"}                               -> {"index", "port", "id"}
    {"cmd": "bootstrap", "index", "addrs": [[h, p]]} -> {"found": [[id, h, p]]}
    {"cmd": "set", "index", "key", "value"}        -> {"ok": bool}
    {"cmd": "get", "index", "key"}                 -> {"value": v or null}
    {"cmd": "neighbors", "index"}                  -> {"nodes": [[id, h, p]]}
    {"cmd": "stop", "index"}                       -> {"ok": true}
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from kademlia.network import Server


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    loop = asyncio.get_running_loop()
    servers: list[Server] = []
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = json.loads(line)
        op = cmd["cmd"]
        if op == "start":
            server = Server()
            await server.listen(0, interface="127.0.0.1")
            port = server.transport.get_extra_info("sockname")[1]
            servers.append(server)
            out = {"index": len(servers) - 1, "port": port, "id": server.node.id.hex()}
        elif op == "bootstrap":
            found = await servers[cmd["index"]].bootstrap([tuple(a) for a in cmd["addrs"]])
            out = {"found": [[n.id.hex(), n.ip, n.port] for n in found]}
        elif op == "set":
            out = {"ok": bool(await servers[cmd["index"]].set(cmd["key"], cmd["value"]))}
        elif op == "get":
            out = {"value": await servers[cmd["index"]].get(cmd["key"])}
        elif op == "neighbors":
            server = servers[cmd["index"]]
            nodes = server.protocol.router.find_neighbors(server.node, k=1000)
            out = {"nodes": [[n.id.hex(), n.ip, n.port] for n in nodes]}
        elif op == "stop":
            servers[cmd["index"]].stop()
            out = {"ok": True}
        else:
            out = {"error": f"unknown command {op}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
