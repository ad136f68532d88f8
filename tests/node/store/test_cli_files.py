"""``mu add`` / ``mu get`` / ``mu store`` as real subprocesses on real files (README exit codes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import base58

from protocol.chunks import Link

REPO = Path(__file__).resolve().parents[3]
CS = 64 * 1024


def mu(data_dir: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "--data-dir", str(data_dir), *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def add(data_dir: Path, path: Path, *extra: str) -> dict[str, object]:
    result = mu(data_dir, "add", path, "--json", "--chunk-size", str(CS), *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_add_get_round_trip_at_edge_sizes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for size in (0, 1, CS - 1, CS, CS + 1, 3 * CS + 5):
        src = tmp_path / f"in-{size}.bin"
        src.write_bytes(os.urandom(size))
        info = add(data_dir, src)
        assert info["size"] == size and info["chunks"] == -(-size // CS) + 1
        out = tmp_path / f"out-{size}.bin"
        got = mu(data_dir, "get", info["link"], "-o", out)
        assert got.returncode == 0, got.stderr
        assert out.read_bytes() == src.read_bytes()


def test_plain_add_prints_the_link_and_random_keys_differ(tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"hello mu\n")
    first = mu(tmp_path / "d", "add", src)
    second = mu(tmp_path / "d", "add", src)
    assert first.returncode == second.returncode == 0
    a, b = Link.parse(first.stdout.strip()), Link.parse(second.stdout.strip())
    assert a.key is not None and a.root != b.root


def test_convergent_add_dedupes_per_secret(tmp_path: Path) -> None:
    src = tmp_path / "same.bin"
    src.write_bytes(os.urandom(2 * CS + 3))
    one = add(tmp_path / "alice", src, "--convergent")
    two = add(tmp_path / "alice", src, "--convergent")
    other = add(tmp_path / "bob", src, "--convergent")
    assert one["root"] == two["root"] and two["new_chunks"] == 0
    assert other["root"] != one["root"]
    assert (tmp_path / "alice" / "convergence.key").stat().st_mode & 0o777 == 0o600


def test_wrong_key_missing_chunk_and_bad_link_exit_codes(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(2 * CS))
    info = add(data_dir, src)
    link = Link.parse(str(info["link"]))
    out = tmp_path / "out.bin"
    wrong = base58.b58encode(os.urandom(32)).decode()
    res = mu(data_dir, "get", link.root_text, "--key", wrong, "-o", out)
    assert res.returncode == 3 and "integrity" in res.stderr and link.root.hex() in res.stderr
    res = mu(data_dir, "get", link.root_text, "-o", out)
    assert res.returncode == 1 and "--key" in res.stderr
    res = mu(data_dir, "get", "mu:not-base58!", "-o", out)
    assert res.returncode == 1 and "bad link" in res.stderr
    res = mu(data_dir, "add", tmp_path / "nope.bin")
    assert res.returncode == 2
    # Remove one data chunk: not found, exit 2, and nothing at the output path.
    store = data_dir / "chunks"
    victim = next(p for p in store.glob("??/*") if p.stat().st_size == CS + 16)
    victim.unlink()
    res = mu(data_dir, "get", str(link), "-o", out)
    assert res.returncode == 2 and victim.name in res.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.bin*"))


def test_flipped_bit_anywhere_gives_exit_3_and_leaves_output_untouched(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(3 * CS + 11))
    info = add(data_dir, src)
    out = tmp_path / "out.bin"
    out.write_bytes(b"previous content")
    for path in sorted((data_dir / "chunks").glob("??/*")):
        original = path.read_bytes()
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x10
        path.write_bytes(bytes(flipped))
        res = mu(data_dir, "get", str(info["link"]), "-o", out)
        path.write_bytes(original)
        assert res.returncode == 3, res.stderr
        assert path.name in res.stderr
        assert out.read_bytes() == b"previous content"
    assert not list(tmp_path.glob(".out.bin*"))


def test_store_ls_verify_gc(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(CS + 1))
    add(data_dir, src)
    listing = json.loads(mu(data_dir, "store", "ls", "--json").stdout)
    sizes = sorted(c["size"] for c in listing["chunks"])
    assert listing["count"] == 3 and listing["bytes"] == sum(sizes)
    assert CS + 16 in sizes and 1 + 16 in sizes  # two data chunks (+ GCM tag) and the root
    ok = mu(data_dir, "store", "verify")
    assert ok.returncode == 0 and "0 corrupt" in ok.stdout
    path = data_dir / "chunks" / listing["chunks"][0]["address"][:2] / listing["chunks"][0]["address"]
    path.write_bytes(b"garbage")
    bad = mu(data_dir, "store", "verify", "--json")
    assert bad.returncode == 3 and json.loads(bad.stdout)["corrupt"] == [path.name]
    gc = json.loads(mu(data_dir, "store", "gc", "--json").stdout)
    assert gc["corrupt_removed"] == [path.name] and gc["chunks"] == 2
    assert mu(data_dir, "store", "verify").returncode == 0


def test_init_then_add_uses_mu_data_dir_env(tmp_path: Path) -> None:
    env = {**os.environ, "MU_DATA_DIR": str(tmp_path / "envdir")}
    src = tmp_path / "f"
    src.write_bytes(b"x")
    res = subprocess.run([sys.executable, "-m", "node", "add", str(src)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert any((tmp_path / "envdir" / "chunks").glob("??/*"))


def test_a_node_that_holds_the_data_dir_but_does_not_answer_is_not_worked_around(tmp_path: Path) -> None:
    """Without an answering node the command works on the data dir's files, unless a node holds them."""
    data_dir = tmp_path / "data"
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(3 * CS))
    link = add(data_dir, src)["link"]  # no node: local
    holding = subprocess.Popen(  # a node starting (or stuck): the data dir's lock taken, no control API yet
        [sys.executable, "-c", "import sys; from pathlib import Path; from node.runtime.lock import hold_lock\n"
         "with hold_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    sys.stdin.read()",
         str(data_dir / "node.lock")], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holding.stdout is not None and holding.stdout.readline() == "held\n"
        for args in (("get", link, "-o", tmp_path / "out.bin"), ("add", src), ("peers",)):
            refused = mu(data_dir, *args)
            assert refused.returncode == 1, (args, refused.stdout, refused.stderr)
            assert f"in use by process {holding.pid}" in refused.stderr
            assert "does not answer its control API" in refused.stderr
        assert not (tmp_path / "out.bin").exists()
    finally:
        holding.communicate("", timeout=30)
    got = mu(data_dir, "get", link, "-o", tmp_path / "out.bin")  # the holder gone: local again
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
