"""Data directory and node-wide files (DESIGN.md, Node runtime).

The data dir is, in order: the ``--data-dir`` option, the ``MU_DATA_DIR``
environment variable, or platformdirs' per-user data dir for "mu".
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

if TYPE_CHECKING:
    from protocol.identity import Identity

DATA_DIR_ENV = "MU_DATA_DIR"
IDENTITY_FILE = "identity.key"


class ConfigError(ValueError):
    """The data dir or one of its files is unusable."""


def resolve_data_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """Return the data dir chosen by option, environment or platform default."""
    if option:
        return Path(option).expanduser().resolve()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_data_dir("mu", appauthor=False))


def write_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 holding ``data``, atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_secret(path: Path, size: int, what: str, *, create: bool = True) -> bytes:
    """Read the ``size``-byte random secret at ``path``, creating it (0600) if asked.

    Raises:
        ConfigError: the file is missing (and ``create`` is false) or has
            another size.
    """
    if not path.exists():
        if not create:
            raise ConfigError(f"no {what} at {path}: run `mu init` first")
        write_secret_file(path, secrets.token_bytes(size))
    secret = path.read_bytes()
    if len(secret) != size:
        raise ConfigError(f"{path} is not a {size}-byte {what}")
    return secret


def load_identity(data_dir: Path, *, create: bool = True) -> Identity:
    """Load the node's Ed25519 identity from the data dir, creating it if asked.

    Raises:
        ConfigError: the file is missing (and ``create`` is false) or malformed.
    """
    # Imported here: the CLI resolves its data dir on every command, most of which need no key (issue 22).
    from protocol.identity import SEED_SIZE, Identity

    return Identity(load_secret(data_dir / IDENTITY_FILE, SEED_SIZE, "identity seed", create=create))
