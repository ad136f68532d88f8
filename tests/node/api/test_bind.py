"""Where the control API and web app listen: 127.0.0.1 unless ``ui_bind`` says otherwise (specs/network.md §6).

Bound to an address other machines reach, the server warns, still needs
the token or a login, and its Host check accepts that address (and no
other name); the CLI finds it through ``control.port``.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from node.api.control import PORT_FILE, TOKEN_FILE, ControlClient, ControlServer
from node.cli.node import config_from_settings
from node.runtime.settings import DEFAULTS, effective_settings
from tests.node.api.test_security import NODE_ID

REPO_ROOT = Path(__file__).resolve().parents[3]


def outside_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # TEST-NET-1: only picks the outgoing interface
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else str(address)


def test_the_default_is_loopback_and_the_flag_reaches_the_node(tmp_path: Path) -> None:
    assert DEFAULTS.ui_bind == "127.0.0.1"
    config = config_from_settings(tmp_path, effective_settings(tmp_path, {"ui_bind": "10.1.2.3"}))
    assert config.ui_bind == "10.1.2.3"
    (tmp_path / "config.toml").write_text('ui_bind = "::1"\n')
    assert config_from_settings(tmp_path, effective_settings(tmp_path, {})).ui_bind == "::1"


@pytest.mark.parametrize("value", ["0.0.0.0", "::", "example.org", "127.0.0.1:80"])
def test_mu_node_refuses_a_bind_address_the_host_check_cannot_name(tmp_path: Path, value: str) -> None:
    done = subprocess.run([sys.executable, "-m", "node", "--data-dir", str(tmp_path), "node", "--ui-bind", value],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "--ui-bind" in done.stderr, done.stderr
    assert not (tmp_path / PORT_FILE).exists()


async def test_a_loopback_server_writes_only_its_port(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = ControlServer(tmp_path, NODE_ID)
        await nursery.start(server.serve)
        assert (tmp_path / PORT_FILE).read_text() == f"{server.port}\n"
        assert ControlClient.from_data_dir(tmp_path).host == "127.0.0.1"
        nursery.cancel_scope.cancel()


async def test_an_outside_address_warns_and_still_guards(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    address = outside_address()
    if address is None:
        pytest.skip("this machine has no IPv4 address but loopback")
    caplog.set_level(logging.WARNING, logger="node.api.server")
    async with trio.open_nursery() as nursery:
        server = ControlServer(tmp_path, NODE_ID, host=address)
        await nursery.start(server.serve)
        assert any("reachable from other machines" in r.getMessage() for r in caplog.records)
        assert (tmp_path / PORT_FILE).read_text() == f"{server.port}\n{address}\n"
        # The CLI reaches it through the port file, with the token.
        cli = ControlClient.from_data_dir(tmp_path)
        assert (await cli.call("GET", "status"))["node_id"] == NODE_ID.hex()
        base = f"http://{address}:{server.port}"
        token = (tmp_path / TOKEN_FILE).read_text()
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
            assert (await client.get("/v1/status")).status_code == 401  # no token, no session
            assert (await client.get("/files")).status_code == 401
            bearer = {"Authorization": f"Bearer {token}"}
            assert (await client.get("/v1/status", headers=bearer)).status_code == 200
            foreign = await client.get("/v1/status", headers={**bearer, "Host": f"evil.example:{server.port}"})
            assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "forbidden-host"
            other_site = await client.get("/v1/status", headers={**bearer, "Origin": "http://evil.example"})
            assert other_site.status_code == 403
            # A browser logs in at the bound address, as `mu ui` prints it.
            url = urlsplit(server.login_url())
            assert url.hostname == address
            login = await client.get(f"{url.path}?{url.query}", headers={"Origin": base})
            assert login.status_code == 303
            assert (await client.get("/v1/status", headers={"Origin": base})).status_code == 200
        nursery.cancel_scope.cancel()
    assert not (tmp_path / PORT_FILE).exists()
