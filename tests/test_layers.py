"""The shape of the code, checked: no import cycle, no upward import, modules of a readable size.

Every `import` of `shared/`, `services/` and `lab/` is read with `ast` (function-level imports
too; those under `if TYPE_CHECKING:` are for the type checker and do not run). Importing a
submodule (`from shared.repo import chunk`) counts as importing that submodule, not the package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("shared", "services", "lab")
MAX_LINES = 400
# Modules allowed over MAX_LINES (each with its reason); none today.
OVER: set[str] = set()
# What a pure model may import of vbm's own: nothing that does I/O (database, bus, vCenter, storage).
MODEL_MAY_IMPORT = ("shared.model", "shared.errors", "shared.clock", "shared.contracts", "shared.settings",
                    "shared.repo.locations")  # fmt: skip
IO_LIBRARIES = ("sqlalchemy", "nats", "pyVmomi", "pyVim", "aiohttp", "boto3", "botocore", "azure", "asyncssh")


def modules() -> dict[str, Path]:
    found = {}
    for top in SOURCES:
        for path in (ROOT / top).rglob("*.py"):
            if "vcsim" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def imports(path: Path) -> Iterator[str]:
    """Every module `path` imports when it runs (ours and third parties')."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
            yield from subs
            if len(subs) < len(node.names):
                yield node.module


GRAPH = {name: set(imports(path)) - {name} for name, path in MODULES.items()}


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v] & MODULES.keys():
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    assert cycles() == []


def test_shared_never_imports_a_service() -> None:
    upward = {m: sorted(i for i in GRAPH[m] if i.split(".")[0] == "services") for m in MODULES}
    assert {m: i for m, i in upward.items() if i and not m.startswith("services")} == {}


def test_a_service_never_imports_another() -> None:
    crossing = {}
    for name, deps in GRAPH.items():
        if name.startswith("services."):
            own = name.split(".")[1]
            others = sorted(d for d in deps if d.startswith("services.") and d.split(".")[1] != own)
            if others:
                crossing[name] = others
    assert crossing == {}


def test_the_model_does_no_io() -> None:
    bad = {}
    for name, deps in GRAPH.items():
        if name.startswith("shared.model"):
            wrong = sorted(
                d
                for d in deps
                if (d.startswith(("shared.", "services.")) and not d.startswith(MODEL_MAY_IMPORT))
                or d.split(".")[0] in IO_LIBRARIES
            )
            if wrong:
                bad[name] = wrong
    assert bad == {}


def test_only_the_vsphere_adapter_imports_pyvmomi() -> None:
    users = sorted(
        n
        for n, deps in GRAPH.items()
        if any(d.split(".")[0] in ("pyVmomi", "pyVim") for d in deps) and not n.startswith("shared.vsphere")
    )
    assert users == []


def test_modules_stay_readable() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in MODULES.values()}
    over = {path for path, lines in sizes.items() if lines > MAX_LINES}
    assert over <= OVER, f"over {MAX_LINES} lines (split them): {sorted(over - OVER)}"
    assert over >= OVER, f"no longer over {MAX_LINES} lines, strike from OVER: {sorted(OVER - over)}"
