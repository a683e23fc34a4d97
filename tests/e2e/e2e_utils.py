"""Helpers for end-to-end tests: run the real CLI in a subprocess, make photos, check a store."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

SECRET_ENV = ("HF_TOKEN", "HUGGINGFACE_HUB_TOKEN", "UNSPLASH_ACCESS_KEY", "HF_REPO_ID", "SOURCE", "STORE")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env.update({"PROGRESS": "plain", "HEARTBEAT_SECS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sharp_dataset_pipeline.cli", *args]


def run_cli(cwd: Path, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_cmd(*args), cwd=cwd, env=cli_env(**env), capture_output=True, text=True, timeout=timeout
    )


def make_photos(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (96, 64)) -> list[Path]:
    """Small distinct JPEGs (random smooth colours) so every file has its own content hash."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        base = rng.integers(0, 255, size=(4, 6, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize(size, Image.Resampling.BILINEAR)
        path = folder / f"photo_{seed:02d}_{i:04d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def read_rows(store: Path) -> list[dict]:
    rows = []
    for shard in sorted((store / "data").glob("*.jsonl")):
        for line in shard.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def parquet_share_fields(files: dict[str, bytes]) -> dict[str, dict[str, str]]:
    """id -> its share fields as the Parquet index shows them (``files``: repo path -> bytes)."""
    import io

    from sharp_dataset_pipeline.publish.index_fields import read_fields

    out: dict[str, dict[str, str]] = {}
    for path, data in sorted(files.items()):
        if path.startswith("data/index/") and path.endswith(".parquet"):
            out.update(read_fields(io.BytesIO(data)))
    return out


def local_parquet_share_fields(store: Path) -> dict[str, dict[str, str]]:
    """``parquet_share_fields`` of a local store's Parquet index files."""
    return parquet_share_fields({p.relative_to(store).as_posix(): p.read_bytes()
                                 for p in (store / "data" / "index").rglob("*.parquet") if not p.name.startswith(".")})


def share_fields_of(rows: list[dict]) -> dict[str, dict[str, str]]:
    """id -> the share fields of JSONL rows."""
    return {r["id"]: {k: r[k] for k in ("gsplat_url", "gsplat_share_id", "gsplat_model_id")} for r in rows}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_consistent(store: Path, allow_stray: bool = False) -> list[dict]:
    """Every row's files exist with the recorded size and hash; no id twice; no stray files.

    ``allow_stray``: right after a kill -9, files placed before the ledger transaction that would
    have recorded them may exist without a row (they are not published: done iff a row exists).
    """
    rows = read_rows(store)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "an id is published twice"
    referenced = set()
    for r in rows:
        _check_members(store, r)
        files = [(r[f"{kind}_path"], r[f"{kind}_size"], r[f"{kind}_sha256"]) for kind in ("image", "ply")]
        files += [(e["path"], e["size"], e["sha256"]) for e in json.loads(r["extra_files"])]
        for rel, size, digest in files:
            if not rel:
                continue
            path = store / rel
            assert path.is_file(), f"row {r['id']} points at missing {rel}"
            assert path.stat().st_size == size
            assert sha256(path) == digest
            referenced.add(rel)
    on_disk = {
        p.relative_to(store).as_posix()
        for p in store.rglob("*")
        if p.is_file() and not p.relative_to(store).as_posix().startswith(
            (".coord/", "data/", "README.md", ".huggingface.yaml"))
    }
    stray = on_disk - referenced
    assert allow_stray or not stray, f"files published without a row: {sorted(stray)[:5]}"
    return rows


def _check_members(store: Path, row: dict) -> None:
    """A sharded row's members: each in its tar at the recorded offset, with the recorded size and hash."""
    members = json.loads(row.get("members") or "[]")
    assert bool(members) == bool(row.get("shard_path")), f"row {row['id']}: members and shard_path disagree"
    for m in members:
        tar = store / m["shard"]
        assert tar.is_file(), f"row {row['id']} points into missing {m['shard']}"
        with tarfile.open(tar, mode="r:") as archive:
            info = archive.getmember(m["name"])
            assert info.offset_data == m["offset"] and info.size == m["size"], (row["id"], m["name"])
            handle = archive.extractfile(info)
            assert handle is not None
            assert hashlib.sha256(handle.read()).hexdigest() == m["sha256"], (row["id"], m["name"])


def start_together(cwd: Path, runs: dict[str, tuple[list[str], dict[str, str]]], control: Path,
                   timeout: float = 120) -> dict[str, subprocess.Popen[str]]:
    """Start one CLI process per ``name: (command, env)`` behind a shared PAUSE file, wait until every one
    holds its first unit and says it is paused, then remove PAUSE so that they run at the same time.

    stderr goes to ``cwd/<name>.err`` (read it with ``err_text``); stdout is discarded.
    """
    import time

    control.mkdir(parents=True, exist_ok=True)
    pause = control / "PAUSE"
    pause.write_text("", encoding="utf-8")
    procs = {}
    for name, (cmd, env) in runs.items():
        with open(cwd / f"{name}.err", "w", encoding="utf-8") as err:
            procs[name] = subprocess.Popen(cmd, cwd=cwd, env={**env, "CONTROL_DIR": str(control)},
                                           stdout=subprocess.DEVNULL, stderr=err, text=True)
    deadline = time.monotonic() + timeout
    while not all("paused" in err_text(cwd, name) for name in runs):
        for name, p in procs.items():
            assert p.poll() is None, f"{name} exited before the start line: {err_text(cwd, name)[-2000:]}"
        assert time.monotonic() < deadline, "the processes never reached the PAUSE file"
        time.sleep(0.1)
    pause.unlink()
    return procs


def err_text(cwd: Path, name: str) -> str:
    path = cwd / f"{name}.err"
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def publish_times(store: Path) -> dict[str, list[float]]:
    """client id -> the ledger's publish times of its items (local store)."""
    import sqlite3

    out: dict[str, list[float]] = {}
    with sqlite3.connect(store / ".coord" / "ledger.sqlite3") as db:
        for client, at in db.execute("SELECT client, published_at FROM items ORDER BY published_at"):
            out.setdefault(client, []).append(at)
    return out
