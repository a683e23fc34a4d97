"""The local store's files-layout Parquet index: each JSONL index file's twin kept in step with it.

``sync_files_index`` runs after every local operation that can change a JSONL index file (a publish
step, compaction, ``remove``, ``share``, ``verify --fix``, a migration step) and in ``open()``, which
makes it the crash repair too: whatever a killed process left, the next sync makes every twin again
from its JSONL file's lines (``publish.files_index``). Its memory is ``.coord/files-index.json`` (per
JSONL file: size, mtime, sha256 and whether it has a twin), so an unchanged file is neither read nor
hashed. One process syncs at a time (``flock`` on a sidecar lock file); each twin is replaced
atomically, so a reader sees the old twin or the new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, StoreError
from ..fsio import atomic_file, atomic_write, fsync_dir
from ..publish import layout
from ..publish.files_index import FILES_INDEX_DIR, FileReader, is_twin_path, plan_sync, twin_entries, twin_path
from ..publish.index import FileRef, decode_rows
from ..publish.layout_choice import FILES, MARKER_PATH, read_marker
from ..publish.parquet_index import write_index

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: syncs are not serialised
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

MANIFEST_PATH = f"{layout.COORD_DIR}/files-index.json"
_LOCK_PATH = f"{layout.COORD_DIR}/files-index.lock"


@dataclass
class FilesIndexSync:
    """What one sync did: twins written, twins deleted (their JSONL file is gone or holds no files-layout row)."""

    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def _files_marker(root: Path) -> bool:
    marker = root / MARKER_PATH
    try:
        return marker.is_file() and read_marker(marker.read_bytes()) == FILES
    except ConfigError:
        return False  # a malformed marker is reported by whoever opens the store


def wanted(root: Path) -> bool:
    """Whether the store keeps (or still has to clean up) files-layout twins: its marker says the files
    layout, or a twin or sync record is left from it (a dataset migrated to shards)."""
    return _files_marker(root) or (root / MANIFEST_PATH).exists() or (root / FILES_INDEX_DIR).is_dir()


def keep_files_index(root: Path, index_path: str) -> FilesIndexSync | None:
    """``sync_files_index`` where the store has twins to keep (``wanted``); None elsewhere. Once a
    migrated dataset's last twin is gone its sync record goes too, so a sharded dataset is never
    synced again (its compacted JSONL file would be read at every compaction)."""
    root = Path(root)
    if not wanted(root):
        return None
    done = sync_files_index(root, index_path)
    if not _files_marker(root) and not twin_files(root):
        (root / MANIFEST_PATH).unlink(missing_ok=True)
        shutil.rmtree(root / FILES_INDEX_DIR, ignore_errors=True)
    return done


def jsonl_index_files(root: Path, index_path: str) -> list[str]:
    """Repo paths of the JSONL index files present: the compacted file and its shards."""
    folder = (root / index_path).parent
    if not folder.is_dir():
        return []
    name = Path(index_path).name
    prefix = Path(index_path).parent.as_posix()
    found = [p.name for p in folder.iterdir()
             if p.is_file() and (p.name == name or layout.is_shard_name(index_path, p.name))]
    return sorted(f"{prefix}/{n}" if prefix not in ("", ".") else n for n in found)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    lock = root / _LOCK_PATH
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _load_manifest(root: Path) -> dict[str, dict]:
    try:
        data = json.loads((root / MANIFEST_PATH).read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return {}  # lost or torn: every twin is made again
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fingerprints(root: Path, paths: list[str], manifest: dict[str, dict]) -> dict[str, str]:
    """JSONL file → sha256, hashed only when its size or mtime differ from the manifest's record, or its
    recorded twin is missing (deleted by hand: made again)."""
    out = {}
    for p in paths:
        rec = manifest.get(p, {})
        twin_ok = not rec.get("twin") or (root / twin_path(p)).is_file()
        try:
            st = (root / p).stat()
            if rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns and twin_ok:
                out[p] = str(rec.get("sha256", ""))
                continue
            out[p] = _sha256(root / p)
        except FileNotFoundError:
            continue  # merged away by a compaction since it was listed: gone, as its twin will be
        if not twin_ok:
            manifest.pop(p, None)
    return out


def _reader(root: Path) -> FileReader:
    def read(ref: FileRef) -> bytes | None:
        try:
            return (root / layout.check_repo_path(ref.path)).read_bytes()
        except (OSError, StoreError):
            return None  # a preview that is not there: the row's preview is null, the row is kept
    return read


def twin_files(root: Path) -> list[str]:
    """Repo paths of the twins present (temp files left out)."""
    base = root / FILES_INDEX_DIR
    if not base.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in base.iterdir()
                  if p.is_file() and not p.name.startswith(".") and is_twin_path(p.relative_to(root).as_posix()))


def sync_files_index(root: Path, index_path: str) -> FilesIndexSync:
    """Make every files-layout twin match its JSONL index file (see the module docstring)."""
    root = Path(root)
    done = FilesIndexSync()
    with _locked(root):
        manifest = _load_manifest(root)
        paths = jsonl_index_files(root, index_path)
        prints = _fingerprints(root, paths, manifest)
        plan = plan_sync(prints, {p: str(manifest.get(p, {}).get("sha256", "")) for p in paths if p in manifest},
                         twin_files(root))
        for p in plan.rebuild:
            _rebuild(root, p, prints[p], manifest, done)
        for t in plan.delete:
            (root / t).unlink(missing_ok=True)
            done.deleted.append(t)
        for p in [p for p in manifest if p not in prints]:
            del manifest[p]
        if plan.rebuild or plan.delete or not (root / MANIFEST_PATH).exists():
            atomic_write(root / MANIFEST_PATH, json.dumps(manifest, sort_keys=True).encode("utf-8"))
    if done.written or done.deleted:
        log.debug("files-layout index: %d twins written, %d deleted", len(done.written), len(done.deleted))
    return done


def _rebuild(root: Path, jsonl: str, sha: str, manifest: dict[str, dict], done: FilesIndexSync) -> None:
    src = root / jsonl
    try:
        st = src.stat()
        data = src.read_bytes()
    except FileNotFoundError:
        return  # merged away meanwhile: the compaction that did it syncs after it
    if hashlib.sha256(data).hexdigest() != sha:
        return  # changed since it was hashed (a writer outside this lock): the next sync makes it
    entries = twin_entries(decode_rows(data), _reader(root))
    out = root / twin_path(jsonl)
    if entries:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(out, fsync=True) as fh:
            write_index(entries, fh)
        fsync_dir(out.parent)
        done.written.append(twin_path(jsonl))
    elif out.exists():
        out.unlink()
        done.deleted.append(twin_path(jsonl))
    manifest[jsonl] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha, "twin": bool(entries)}
