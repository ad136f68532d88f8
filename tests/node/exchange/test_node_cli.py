"""`mu node` argument and start-up errors are clean messages, not tracebacks."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run_node(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", "--data-dir", str(tmp_path), "node", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_unreachable_chain_backend_is_reported(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on: bind, then close
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_node(tmp_path, "--chain-rpc", f"http://127.0.0.1:{port}/")
    assert result.returncode == 1
    assert "mu: chain backend" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "node.json").exists()


def test_bad_listen_address_is_a_usage_error(tmp_path: Path) -> None:
    result = run_node(tmp_path, "--listen", "nowhere")
    assert result.returncode == 1 and "--listen must be HOST:PORT" in result.stderr
