"""protocol/ is pure: nothing in it may import I/O modules or the node."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FORBIDDEN = {"trio", "socket", "sqlite3", "asyncio", "pathlib", "subprocess", "shutil", "node", "os", "time", "random", "secrets", "threading"}
PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"


def imported_roots(source: str) -> set[str]:
    roots: set[str] = set()
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in n.names)
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            roots.add(n.module.split(".")[0])
        elif isinstance(n, ast.Call) and getattr(n.func, "id", None) == "__import__":
            roots.add("__import__")
    return roots


def protocol_files() -> list[Path]:
    return sorted(PROTOCOL.rglob("*.py"))


def test_protocol_has_modules() -> None:
    assert protocol_files(), "protocol/ holds no modules"


@pytest.mark.parametrize("path", protocol_files(), ids=lambda p: str(p.relative_to(PROTOCOL)))
def test_protocol_module_is_pure(path: Path) -> None:
    bad = imported_roots(path.read_text()) & (FORBIDDEN | {"__import__"})
    assert not bad, f"{path} imports {sorted(bad)}"


def test_checker_catches_forbidden_imports() -> None:
    assert imported_roots("import trio\nfrom node.x import y\nimport os.path") >= {"trio", "node", "os"}
