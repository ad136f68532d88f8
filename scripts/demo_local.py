"""A one-node walk-through: add a file to the local store, read it back by its content hash.

Creates a throw-away data dir, adds a sample file (encrypted into the local
chunk store), prints its link, reads the file back by its content hash (the
root) and the key, and checks the copy is byte-for-byte identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_BYTES = 3 * 1024 * 1024 + 12345  # at least this much: a few chunks, not a round number


def mu(data_dir: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "node", "--data-dir", data_dir, *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"demo: `mu {' '.join(args)}` failed with exit code {proc.returncode}")
    return proc


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mu-demo-") as tmp:
        data_dir = os.path.join(tmp, "data")
        print(f"$ mu init\n{mu(data_dir, 'init').stdout}")
        sample = Path(tmp) / "sample.txt"
        lines = (f"line {i}: mu stores this encrypted, chunked and content-addressed\n" for i in range(10**9))
        with open(sample, "w") as f:
            while f.tell() < SAMPLE_BYTES:
                f.write(next(lines))
        print(f"$ mu add sample.txt   ({sample.stat().st_size} bytes)")
        added = json.loads(mu(data_dir, "add", str(sample), "--json").stdout)
        print(f"link:  {added['link']}")
        print(f"root:  {added['root']}   (the content hash: SHA-256 of the root chunk)")
        print(f"       {added['chunks']} chunks stored, {added['media_type']}\n")
        key = str(added["link"]).split("#", 1)[1]
        out = Path(tmp) / "copy.txt"
        print(f"$ mu get {added['root']} --key <key> -o copy.txt")
        print(mu(data_dir, "get", str(added["root"]), "--key", key, "-o", str(out)).stdout)
        listing = json.loads(mu(data_dir, "store", "ls", "--json").stdout)
        stored = b"".join((Path(data_dir) / "chunks" / c["address"][:2] / c["address"]).read_bytes() for c in listing["chunks"])
        same = hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(sample.read_bytes()).digest()
        print(f"copy identical to the original: {same}")
        print(f"plaintext visible in the store:  {b'mu stores this' in stored}")
        print(mu(data_dir, "store", "verify").stdout.strip())
        return 0 if same and b"mu stores this" not in stored else 3


if __name__ == "__main__":
    sys.exit(main())
