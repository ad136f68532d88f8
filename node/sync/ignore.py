"""Which paths of a synced folder are not synced: ``.muignore`` and mu's own files (specs/sync.md §Ignored paths).

``.muignore`` at the folder's root holds gitignore patterns (read by the
``pathspec`` package, so negation, anchoring and ``dir/`` patterns mean
what they mean to git).  Like Syncthing's ``.stignore`` it is itself not
synced: each device says what it leaves out.
"""

from __future__ import annotations

from pathlib import Path

import pathspec

IGNORE_FILE = ".muignore"
# Prefix of every temporary file sync writes beside its final name
# (specs/sync.md §Applying a plan); never synced, whatever .muignore says.
TEMP_PREFIX = ".mu-tmp-"
# A .muignore larger than this is refused rather than read.
MAX_IGNORE_FILE_BYTES = 1024 * 1024


class IgnoreFileError(ValueError):
    """``.muignore`` could not be used; the message says why and which file."""


class IgnoreRules:
    """Decides, for a '/'-separated path relative to the folder root, whether sync leaves it alone."""

    def __init__(self, patterns: list[str] | None = None) -> None:
        self._patterns = list(patterns or [])
        self._spec = pathspec.GitIgnoreSpec.from_lines(self._patterns)

    @classmethod
    def load(cls, root: Path) -> IgnoreRules:
        """The rules of ``root/.muignore`` (none if there is no such file).

        Raises IgnoreFileError if the file is too large or not UTF-8, so a
        broken ignore file is reported, never silently read as "sync all".
        """
        path = root / IGNORE_FILE
        try:
            if path.stat().st_size > MAX_IGNORE_FILE_BYTES:
                raise IgnoreFileError(f"{path} is larger than {MAX_IGNORE_FILE_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except UnicodeDecodeError as exc:
            raise IgnoreFileError(f"{path} is not UTF-8: {exc}") from None
        return cls(text.splitlines())

    @property
    def patterns(self) -> list[str]:
        return list(self._patterns)

    def ignores(self, path: str, *, is_dir: bool = False) -> bool:
        """True if ``path`` (a directory if ``is_dir``) is not synced."""
        name = path.rpartition("/")[2]
        if name.startswith(TEMP_PREFIX) or path == IGNORE_FILE:
            return True
        return self._spec.match_file(path + "/" if is_dir else path)
