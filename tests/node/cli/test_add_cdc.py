"""``mu add`` cuts content-defined chunks by default and fixed ones with --chunk-size (specs/chunks.md §5)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import base58

REPO = Path(__file__).resolve().parents[3]
MiB = 1024 * 1024


def mu(data_dir: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "--data-dir", str(data_dir), *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def _root_version(data_dir: Path, root_hex: str) -> int:
    return (data_dir / "chunks" / root_hex[:2] / root_hex).read_bytes()[0]


def test_default_add_is_format_3_and_chunk_size_is_format_2(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    src = tmp_path / "in.bin"
    src.write_bytes(random.Random(5).randbytes(6 * MiB + 1))
    default = mu(data_dir, "add", src, "--json")
    assert default.returncode == 0, default.stderr
    fixed = mu(data_dir, "add", src, "--json", "--chunk-size", "1048576")
    assert fixed.returncode == 0, fixed.stderr
    cdc_info, fixed_info = json.loads(default.stdout), json.loads(fixed.stdout)
    assert fixed_info["chunks"] == 7 + 1  # six whole MiB, one byte, the root
    for info, version in ((cdc_info, 3), (fixed_info, 2)):
        root_hex = base58.b58decode(info["root"]).hex()
        assert _root_version(data_dir, root_hex) == version
        out = tmp_path / f"out-{version}"
        got = mu(data_dir, "get", info["link"], "-o", out)
        assert got.returncode == 0, got.stderr
        assert out.read_bytes() == src.read_bytes()


def test_convergent_add_dedupes_an_edited_copy(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data = random.Random(6).randbytes(12 * MiB)
    first, second = tmp_path / "v1", tmp_path / "v2"
    first.write_bytes(data)
    second.write_bytes(data[:6 * MiB] + b"an edit" + data[6 * MiB:])
    one = mu(data_dir, "add", first, "--convergent", "--json")
    two = mu(data_dir, "add", second, "--convergent", "--json")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    new = json.loads(two.stdout)["new_chunks"]
    assert 1 <= new <= 4  # the chunks around the edit and the root
