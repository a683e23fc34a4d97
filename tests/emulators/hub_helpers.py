"""Parts of the loopback Hub (``hub.py``): tree and paths-info listings; and helpers for tests: a shared
fake clock, publishable items, the index rows of a snapshot (tests import these from ``emulators.hub``).
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import TYPE_CHECKING, Any

from .hub_http import HubError
from .hub_lfs import pointer

if TYPE_CHECKING:
    from .hub import Commit, HubEmulator


def tree_entries(hub: HubEmulator, commit: Commit, path: str, recursive: bool) -> list[dict]:
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    if prefix and not any(p.startswith(prefix) for p in commit.files) and path.strip("/") not in commit.files:
        raise HubError(404, f"{path} does not exist", "EntryNotFound")
    dirs: dict[str, list[str]] = {}
    out = []
    for p in sorted(commit.files):
        if not p.startswith(prefix):
            continue
        rest = p[len(prefix):].split("/")
        for depth in range(1, len(rest)):
            if depth > 1 and not recursive:
                break
            dirs.setdefault(prefix + "/".join(rest[:depth]), []).append(commit.files[p])
        if recursive or len(rest) == 1:
            out.append(file_entry(hub, p, commit.files[p]))
    for d, oids in dirs.items():
        oid = hashlib.sha1("".join(oids).encode()).hexdigest()
        out.append({"type": "directory", "path": d, "oid": oid})
    return sorted(out, key=lambda e: e["path"])


def file_entry(hub: HubEmulator, path: str, oid: str) -> dict:
    """A tree / paths-info file entry; LFS files carry ``lfs`` (sha256, size, pointer size) like the Hub's."""
    size = len(hub.blobs[oid])
    entry: dict[str, Any] = {"type": "file", "path": path, "oid": oid, "size": size}
    sha = hub.lfs_keys.get(oid)
    if sha is not None:
        entry["lfs"] = {"oid": sha, "size": size, "pointerSize": len(pointer(sha, size))}
    return entry


def paths_info(hub: HubEmulator, commit: Commit, paths: list[str]) -> list[dict]:
    out = []
    for path in paths:
        path = path.strip("/")
        if path in commit.files:
            out.append(file_entry(hub, path, commit.files[path]))
        elif any(p.startswith(path + "/") for p in commit.files):
            oids = [o for p, o in sorted(commit.files.items()) if p.startswith(path + "/")]
            out.append({"type": "directory", "path": path, "oid": hashlib.sha1("".join(oids).encode()).hexdigest()})
    return out


class ManualClock:
    """A shared fake clock: ``sleep`` advances it, so waits cost no real time and stay checkable."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def make_items(folder: Any, ids: list[str], unit: str = "test/000-099", subdir: str = "photos") -> list[Any]:
    """Publishable items (a small 'jpg' and 'ply' each, unique bytes) for hub store tests."""
    from pathlib import Path

    from sharp_dataset_pipeline.records import IndexRow, ProcessedItem, PublishedFile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for item_id in ids:
        files = []
        row = IndexRow(id=item_id, source="test", unit=unit, client_id="")
        for kind, ext in (("image", "jpg"), ("ply", "ply")):
            data = f"{kind}:{item_id}:".encode() + hashlib.sha256(item_id.encode() + ext.encode()).digest()
            local = folder / f"{item_id}.{ext}"
            local.write_bytes(data)
            repo_path = f"{subdir}/{item_id}/{item_id}.{ext}"
            sha = hashlib.sha256(data).hexdigest()
            files.append(PublishedFile(kind, repo_path, local, len(data), sha))
            setattr(row, f"{kind}_path", repo_path)
            setattr(row, f"{kind}_size", len(data))
            setattr(row, f"{kind}_sha256", sha)
        items.append(ProcessedItem(row=row, files=files))
    return items


def index_rows(files: dict[str, bytes], index_path: str = "data/train.jsonl") -> list[dict]:
    """Every index row in a repo snapshot (compacted file + shards), in path order."""
    folder = index_path.rsplit("/", 1)[0] + "/" if "/" in index_path else ""
    stem = index_path.rsplit("/", 1)[-1][: -len(".jsonl")]
    rows = []
    for path in sorted(files):
        name = path[len(folder):]
        if path.startswith(folder) and "/" not in name and name.startswith(stem) and name.endswith(".jsonl"):
            rows += [json.loads(line) for line in files[path].decode().splitlines() if line.strip()]
    return rows
