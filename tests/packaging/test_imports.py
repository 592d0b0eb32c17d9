"""The package's layering, checked over every module (function-level and TYPE_CHECKING imports included),
against the rules the README's Architecture section states:

- no module imports one that imports it back, directly or through others, and no subpackage ("room")
  imports one that imports it back;
- Hydra (and omegaconf) only in the commands (`bisenet_pl/<command>.py`) and `bisenet_pl/cli/`;
- Lightning only in `training/`, the data modules, and the commands;
- no library module imports a command or `cli/`;
- `deploy/` never imports `inference/` (inference builds on it), and `deploy/contract.py` imports
  nothing of ours but the error types;
- every subpackage is in pyproject.toml's package list (so the wheel has it).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "bisenet_pl"


def _is_lightning_datamodule(module: str) -> bool:
    """The DataModules (`data/*datamodule.py`), allowed to import Lightning besides `training/` and the
    commands."""
    return module.startswith("bisenet_pl.data.") and module.endswith("datamodule")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module name `path` imports anywhere in its body, resolved to modules of `known` (for
    `from a.b import c`, `a.b.c` when that is a module, else `a.b`), plus third-party top-level names."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return found


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(imports among our modules, all imported names) per module."""
    modules = _modules()
    known = set(modules)
    ours: dict[str, set[str]] = {}
    everything: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported = _imports(path, name, known)
        everything[name] = imported
        ours[name] = {m for m in imported if m in known and m != name}
    return ours, everything


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


#: Top-level modules that are library code, not commands.
TOP_LEVEL_LIBRARY = {"bisenet_pl.errors", "bisenet_pl.hardware", "bisenet_pl._lazy"}


def _is_command(module: str) -> bool:
    """`bisenet_pl/<name>.py` with a `python -m` entry point (every top-level module but the library
    ones and the package itself)."""
    top = module.startswith("bisenet_pl.") and module.count(".") == 1
    top = top and (PACKAGE / f"{module.split('.')[1]}.py").is_file()
    return top and module not in TOP_LEVEL_LIBRARY


def test_the_checker_finds_a_cycle_when_there_is_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    ours, _ = _graph()
    assert len(ours) > 80  # the whole package was read
    assert _cycles(ours) == []


def _entry_points(ours: dict[str, set[str]]) -> set[str]:
    """Modules run with `python -m` that nothing imports (`bisenet_pl.data.check`, ...): leaves of the
    graph, so they cannot close a cycle; they are left out of the subpackage graph, where the room they
    sit in would otherwise seem to import everything the command uses."""
    imported = set().union(*ours.values())
    modules = _modules()
    return {
        m for m, path in modules.items() if m not in imported and "__main__" in path.read_text() and "." in m
    }


def test_no_subpackage_imports_one_that_imports_it_back() -> None:
    ours, _ = _graph()
    rooms: dict[str, set[str]] = defaultdict(set)
    entry_points = _entry_points(ours)
    for module, imported in ours.items():
        if module in entry_points:
            continue
        rooms[_room(module)] |= {_room(m) for m in imported} - {_room(module)}
    assert _cycles(rooms) == []


def test_hydra_and_lightning_stay_where_the_readme_says() -> None:
    _, everything = _graph()
    offenders = []
    for module, imported in sorted(everything.items()):
        tops = {m.split(".")[0] for m in imported}
        glue = _is_command(module) or module.startswith("bisenet_pl.cli")
        if tops & {"hydra", "omegaconf"} and not glue:
            offenders.append(f"{module} imports Hydra")
        training = module.startswith("bisenet_pl.training")
        lightning = training or _is_lightning_datamodule(module) or _is_command(module)
        if tops & {"lightning", "pytorch_lightning"} and not lightning:
            offenders.append(f"{module} imports Lightning")
        if not glue:
            bad = {m for m in imported if m.startswith("bisenet_pl.cli") or _is_command(m)}
            offenders += [f"{module} imports the command glue {m}" for m in sorted(bad)]
    assert offenders == []


def test_deploy_builds_on_nothing_above_it() -> None:
    ours, _ = _graph()
    offenders = [
        f"{module} -> {m}"
        for module, imported in ours.items()
        if module.startswith("bisenet_pl.deploy")
        for m in imported
        if m.startswith("bisenet_pl.inference")
    ]
    assert offenders == []
    assert ours["bisenet_pl.deploy.contract"] <= {"bisenet_pl.errors"}
    assert not any(
        m.startswith("bisenet_pl.deploy.export") for m in ours["bisenet_pl.deploy.runtime.onnxruntime"]
    )


def test_every_subpackage_is_in_the_wheel() -> None:
    listed = set(re.findall(r'"(bisenet_pl(?:\.\w+)*)"', (REPO / "pyproject.toml").read_text()))
    packages = {_module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    packages -= {"bisenet_pl.conf"}  # conf/ lives at the repository root, mapped by package-dir
    assert packages - listed == set()
