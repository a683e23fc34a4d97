"""Dependencies point inward: pure modules never import I/O modules, and nothing but the CLI layer
imports the CLI. (STYLE.md convention 2.)"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "sharp_dataset_pipeline"

PURE = [
    "records.py", "errors.py", "sources/base.py", "sources/paging.py", "sources/unsplash_quota.py",
    "predict/base.py", "splat/gaussians.py", "splat/ply.py", "splat/filter.py", "splat/preview.py",
    "splat/unproject.py", "ledger/leases.py", "ledger/status.py", "publish/layout.py", "publish/index.py",
    "publish/card.py", "observe/events.py", "pipeline/tracker.py", "stores/hub_ops.py", "stores/commit_budget.py",
]
IO_MODULES = {"httpx", "sqlite3", "subprocess", "socket", "huggingface_hub", "requests", "rich", "click"}
IO_OURS = {"net", "fetch", "stores.local", "stores.hub", "stores.hub_sync", "cli", "app", "factories", "ops_cli",
           "cli_support",
           "pipeline.runner", "settings"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's package
                pkg = path.relative_to(PKG).parent.parts
                parts = list(pkg[: len(pkg) - (node.level - 1)]) if node.level > 1 else list(pkg)
                base = ".".join([*parts, base] if base else parts)
                found.add("sharp_dataset_pipeline." + base if base else "sharp_dataset_pipeline")
                found.update(f"sharp_dataset_pipeline.{base}.{a.name}".replace("..", ".") for a in node.names)
            else:
                found.add(base)
    return found


def test_pure_modules_import_no_io() -> None:
    bad = []
    for rel in PURE:
        path = PKG / rel
        assert path.is_file(), rel
        for name in _imports(path):
            top = name.split(".")[0]
            if top in IO_MODULES:
                bad.append(f"{rel} imports {name}")
            if name.startswith("sharp_dataset_pipeline."):
                ours = name.removeprefix("sharp_dataset_pipeline.")
                if any(ours == m or ours.startswith(m + ".") for m in IO_OURS):
                    bad.append(f"{rel} imports {name}")
    assert not bad, bad


def test_only_the_cli_layer_imports_the_cli() -> None:
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        if rel in ("cli.py", "ops_cli.py", "cli_support.py", "__main__.py"):
            continue
        for name in _imports(path):
            if name in ("sharp_dataset_pipeline.cli", "sharp_dataset_pipeline.ops_cli",
                        "sharp_dataset_pipeline.cli_support"):
                bad.append(f"{rel} imports {name}")
    assert not bad, bad
