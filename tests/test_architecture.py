"""Dependencies point inward (STYLE.md convention 2, DESIGN's layers), checked on the import graph walked
transitively, lazy imports inside functions included:

- pure modules reach no I/O module, not even through one of ours;
- no lower stage (records, errors, fsio, redact, splat, sources, fetch, predict, net, observe, ledger) reaches an
  upper one (stores, pipeline, ops, app, cli, ops_cli, factories, cli_support);
- no import cycles between the package's parts beyond the ones listed (which may only shrink);
- nothing but the CLI layer imports the CLI.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PKG_NAME = "sharp_dataset_pipeline"
PKG = Path(__file__).resolve().parents[1] / "src" / PKG_NAME

PURE = [
    "records.py", "errors.py", "redact.py", "sources/base.py", "sources/paging.py", "sources/unsplash_quota.py",
    "predict/base.py", "splat/gaussians.py", "splat/ply.py", "splat/filter.py", "splat/preview.py",
    "splat/unproject.py", "ledger/leases.py", "ledger/status.py", "publish/layout.py", "publish/index.py",
    "publish/card.py", "publish/index_fields.py", "observe/events.py", "pipeline/tracker.py", "stores/hub_ops.py",
    "stores/commit_budget.py",
]
# Top-level modules that talk to the network, databases, other processes, terminals or devices. (Plain file
# reads and writes of the module's own format, as in splat/ply.py, are allowed.) Our own modules need no list:
# one is I/O exactly when it reaches one of these.
IO_MODULES = frozenset({
    "httpx", "httpcore", "requests", "urllib3", "aiohttp", "huggingface_hub", "datasets", "fsspec", "gradio_client",
    "sqlite3", "dbm", "shelve", "subprocess", "multiprocessing", "concurrent", "socket", "socketserver", "ssl",
    "select", "selectors", "asyncio", "http", "ftplib", "smtplib", "webbrowser", "signal", "ctypes", "rich",
    "click", "tqdm", "pynvml", "ray", "playwright", "filelock",
})
IO_SUBMODULES = frozenset({"urllib.request", "xml.etree.ElementTree.parse"})
LOWER = frozenset({"records", "errors", "fsio", "redact", "splat", "sources", "fetch", "predict", "net", "observe",
                   "ledger"})
UPPER = frozenset({"stores", "pipeline", "ops", "app", "cli", "ops_cli", "convert_cli", "push_cli", "migrate_cli",
                   "factories", "cli_support"})
# Cycles that exist today (none since issue 12). The set may only shrink: a new cycle fails, and a removed
# one fails too until it is taken off this list, so it cannot come back unnoticed.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()
# Pure modules that reach I/O today, with the outside module reached: hub_ops imports records from hub_state,
# which also holds StateReader (reads the Hub). Same ratchet as KNOWN_CYCLES.
KNOWN_IMPURE = frozenset({("stores/hub_ops.py", "huggingface_hub")})


def _module_name(path: Path, pkg: Path = PKG) -> str:
    rel = path.relative_to(pkg.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(pkg: Path = PKG) -> dict[str, Path]:
    return {_module_name(p, pkg): p for p in pkg.rglob("*.py")}


def _imports(path: Path, name: str) -> frozenset[str]:
    """Every module named by an import anywhere in ``path`` (module ``name``; relative imports resolved;
    ``from a import b`` yields ``a`` and ``a.b``, since ``b`` may be a module)."""
    return _parse_imports(path, name)


@cache
def _parse_imports(path: Path, name: str) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = name.split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package[: len(package) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(found)


def _ours(names: frozenset[str], modules: dict[str, Path]) -> set[str]:
    return {n for n in names if n in modules}


def _closure(start: str, modules: dict[str, Path]) -> dict[str, str]:
    """Every module ``start`` reaches, ours and outside ones, mapped to the module that imports it."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        current = todo.pop()
        for name in _imports(modules[current], current):
            if name in seen:
                continue
            seen[name] = current
            if name in modules:
                todo.append(name)
            parent = name.rsplit(".", 1)[0]
            if parent in modules and parent not in seen:  # importing a.b runs a/__init__ first
                seen[parent] = current
                todo.append(parent)
    return seen


def _chain(start: str, target: str, via: dict[str, str]) -> str:
    steps = [target]
    while steps[-1] != start and steps[-1] in via and len(steps) < 50:
        steps.append(via[steps[-1]])
    return " -> ".join(reversed(steps))


def _is_io(name: str) -> bool:
    return name.split(".")[0] in IO_MODULES or any(name == m or name.startswith(m + ".") for m in IO_SUBMODULES)


def _part(module: str) -> str:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else ""


def pure_violations(modules: dict[str, Path], known: frozenset[tuple[str, str]] = frozenset(),
                    pkg: Path = PKG) -> list[str]:
    bad = []
    for rel in PURE:
        path = pkg / rel
        assert path.is_file(), rel
        start = _module_name(path, pkg)
        via = _closure(start, modules)
        bad += [_chain(start, name, via) for name in sorted(via)
                if _is_io(name) and (rel, name.split(".")[0]) not in known]
    return bad


def upward_violations(modules: dict[str, Path]) -> list[str]:
    bad = []
    for start in sorted(modules):
        if _part(start) not in LOWER:
            continue
        via = _closure(start, modules)
        bad += [_chain(start, n, via) for n in sorted(via) if n in modules and _part(n) in UPPER]
    return bad


def part_cycles(modules: dict[str, Path]) -> set[frozenset[str]]:
    """Strongly connected groups (more than one part) of the graph of parts (top-level modules/folders)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        me = _part(name)
        for other in map(_part, _ours(_imports(path, name), modules)):
            if me and other and other != me:
                edges.setdefault(me, set()).add(other)
    reach = {p: _reachable(p, edges) for p in {*edges, *(q for qs in edges.values() for q in qs)}}
    return {frozenset(q for q in reach if q in reach[p] and p in reach[q]) | {p}
            for p in reach if any(p in reach[q] for q in reach[p])}


def _reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(edges.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, ()))
    return seen


def test_pure_modules_reach_no_io_even_through_ours() -> None:
    modules = _modules()
    bad = pure_violations(modules, KNOWN_IMPURE)
    assert not bad, bad
    still = {(rel, top) for rel, top in KNOWN_IMPURE
             if any(_is_io(n) and n.split(".")[0] == top for n in _closure(_module_name(PKG / rel), modules))}
    assert still == KNOWN_IMPURE, f"fixed, take off KNOWN_IMPURE: {sorted(KNOWN_IMPURE - still)}"


def test_no_lower_stage_reaches_an_upper_one() -> None:
    bad = upward_violations(_modules())
    assert not bad, bad[:10]


def test_no_import_cycles_between_parts_beyond_the_known_ones() -> None:
    found = part_cycles(_modules())
    assert not found - KNOWN_CYCLES, f"new import cycles: {[sorted(c) for c in found - KNOWN_CYCLES]}"
    gone = [sorted(c) for c in KNOWN_CYCLES - found]
    assert not gone, f"cycles gone, take them off KNOWN_CYCLES: {gone}"


def test_only_the_cli_layer_imports_the_cli() -> None:
    modules = _modules()
    cli = {f"{PKG_NAME}.cli", f"{PKG_NAME}.ops_cli", f"{PKG_NAME}.convert_cli", f"{PKG_NAME}.push_cli",
           f"{PKG_NAME}.migrate_cli",
           f"{PKG_NAME}.cli_support",
           f"{PKG_NAME}.__main__"}
    bad = [f"{name} imports {other}" for name, path in modules.items() if name not in cli
           for other in _ours(_imports(path, name), modules) if other in cli]
    assert not bad, bad


# The checks above must be able to fail: each is run on a copy of the package with one bad import added.
@pytest.mark.parametrize(("target", "line", "check"), [
    ("splat/preview.py", "from ..net import make_client\n", pure_violations),  # pure -> ours -> httpx
    ("publish/layout.py", "def _x():\n    import sqlite3\n", pure_violations),  # a lazy I/O import
    ("fsio.py", "from .pipeline import runner\n", upward_violations),  # lower -> upper, directly
    ("sources/base.py", "from ..ops import status\n", upward_violations),  # lower -> ops -> stores
    ("sources/folder.py", "from ..fetch import fetcher\n", None),  # no rule broken: control case
])
def test_the_checks_catch_a_planted_import(tmp_path: Path, target: str, line: str, check) -> None:
    import shutil

    copy = tmp_path / PKG_NAME
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("node_modules", "static", "samples", "viewer"))
    with (copy / target).open("a", encoding="utf-8") as f:
        f.write("\n" + line)
    modules = _modules(copy)
    if check is None:
        assert not pure_violations(modules, KNOWN_IMPURE, copy) and not upward_violations(modules)
    elif check is pure_violations:
        assert pure_violations(modules, pkg=copy) != pure_violations(_modules()), f"{line!r} in {target} unnoticed"
    else:
        assert check(modules) != check(_modules()), f"planting {line.strip()!r} in {target} went unnoticed"


def test_a_new_cycle_is_caught(tmp_path: Path) -> None:
    modules = dict(_modules())
    planted = tmp_path / "planted.py"
    planted.write_text("from sharp_dataset_pipeline.app import main\n", encoding="utf-8")
    modules[f"{PKG_NAME}.fsio.planted"] = planted  # fsio -> app, and app reaches fsio
    assert frozenset({"fsio", "app"}) <= set().union(*part_cycles(modules) - KNOWN_CYCLES)
