"""The tree's shape: no import circles, no mixins, node/'s layers in the order node/__init__ gives.

Read from the source (the AST), not by importing it, so a test cannot miss
an import that only runs on some path.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("node", "protocol")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imported(module: str, path: Path) -> Iterator[str]:
    """The modules of this tree that ``module`` imports (at any depth of its code)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from package import submodule`` imports the submodule; any
            # other name comes from the package itself.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                yield target


GRAPH = {module: set(_imported(module, path)) for module, path in MODULES.items()}


def _circles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    return found


def test_no_import_circles() -> None:
    # A package's __init__ re-exporting its own private modules is not a
    # circle of behaviour, but it is still one the reader must untangle.
    assert _circles() == []


def test_no_mixins_in_node() -> None:
    """State is shared by composition: no class in node/ inherits from two of node's own classes, none is a mixin."""
    offenders = []
    for module, path in MODULES.items():
        if not module.startswith("node"):
            continue
        for cls in ast.walk(ast.parse(path.read_text())):
            if not isinstance(cls, ast.ClassDef):
                continue
            bases = [ast.unparse(base) for base in cls.bases]
            if "Mixin" in cls.name or any("Mixin" in base for base in bases):
                offenders.append(f"{module}.{cls.name}({', '.join(bases)})")
    assert offenders == []


def _layers() -> list[str]:
    """The layer names node/__init__'s docstring lists, bottom first (``- ``name``: ...`` lines)."""
    doc = ast.get_docstring(ast.parse((ROOT / "node" / "__init__.py").read_text())) or ""
    return re.findall(r"^- ``([a-z_.]+)``", doc, flags=re.MULTILINE)


def _layer_of(module: str, layers: list[str]) -> str | None:
    rest = module.removeprefix("node.")
    for layer in sorted(layers, key=len, reverse=True):
        if rest == layer or rest.startswith(layer + "."):
            return layer
    return None


def test_node_layers_import_only_downwards() -> None:
    layers = _layers()
    packages = {path.parent.name for path in (ROOT / "node").glob("*/__init__.py")}
    covered = {layer.split(".")[0] for layer in layers}
    assert packages == covered, "node/__init__ lists every package of node/ as a layer"
    upward = []
    for module, targets in GRAPH.items():
        source = _layer_of(module, layers)
        if source is None:
            continue
        for target in targets:
            layer = _layer_of(target, layers)
            if layer is not None and layer != source and layers.index(layer) > layers.index(source):
                upward.append(f"{module} ({source}) -> {target} ({layer})")
    assert upward == []


def _tree_in_readme() -> dict[str, set[str]]:
    """The packages the README's Layout tree lists under ``node/`` and ``protocol/``."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    listed: dict[str, set[str]] = {}
    current = ""
    for line in block.splitlines():
        if re.fullmatch(r"[a-z]+/", line):
            current = line[:-1]
            listed[current] = set()
        elif match := re.match(r"  ([a-z_]+)(/|\.py)\s", line):
            listed[current].add(match.group(1) + match.group(2))
    return listed


def test_readme_layout_matches_the_tree() -> None:
    listed = _tree_in_readme()
    for package in PACKAGES:
        present = {path.parent.name + "/" for path in (ROOT / package).glob("*/__init__.py")}
        present |= {path.name for path in (ROOT / package).glob("*.py")
                    if path.name not in ("__init__.py", "__main__.py")}
        assert present <= listed[package], f"README's Layout names every part of {package}/"
        assert listed[package] <= present, f"README's Layout names only what {package}/ holds"
