"""The README's main job: a short demo of mu on this machine."""

from __future__ import annotations

import subprocess
import sys
import tempfile


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mu-demo-") as data_dir:
        return subprocess.call([sys.executable, "-m", "node", "--data-dir", data_dir, "init"])


if __name__ == "__main__":
    sys.exit(main())
