"""Repository paths shared by every store. Pure: strings in, strings out.

The published layout (DESIGN.md) is the same for the local folder and the Hub repo::

    README.md                              dataset card
    data/<stem>.jsonl                      compacted index (HF_INDEX_REPO_PATH)
    data/<stem>-shard-<utc>-<client>-<nonce>.jsonl   append-only index shards
    <subdir>/<id>/<id>.<ext>               per-item files (or fanned out, see ``item_path``)
    .coord/...                             coordination: ledger, leases, unit done markers

Hub limits drive the shape: under 10k entries per folder, so anything that grows with the
number of items or units is fanned out into sub-folders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import re
from collections.abc import Mapping
from datetime import datetime, timezone

from ..errors import PermanentError, StoreError
from ..records import ProcessedItem

COORD_DIR = ".coord"
README_PATH = "README.md"
DATASETS_YAML_PATH = ".huggingface.yaml"  # local store: per-publish snapshot name for `datasets`
SHARD_MARK = "-shard-"

# A leading "-" is allowed: real Unsplash ids start with one (e.g. "-2vD8lIhdnw").
_ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
_EXT_RE = re.compile(r"^[A-Za-z0-9]+(\.[A-Za-z0-9]+)*$")
_CLIENT_UNSAFE = re.compile(r"[^A-Za-z0-9_.]+")
_KEY_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")
# Leave room under the usual 255-byte file name limit for a suffix and a temp prefix.
_MAX_NAME = 160
FANOUT_THRESHOLD = 5000  # item folders in one folder before new items fan out by id prefix


def item_path(subdir: str, item_id: str, ext: str, *, fanout: bool) -> str:
    """Repo path of one per-item file.

    Without fanout: ``<subdir>/<id>/<id>.<ext>`` (the predecessor's layout). With fanout:
    ``<subdir>/<id[:2]>/<id>/<id>.<ext>``. The fanout rule: item folders are grouped by the
    first two characters of the id, so ``<subdir>`` holds at most a few thousand prefix folders
    (ids drawn from ``[A-Za-z0-9_-]`` give at most 64*64 = 4096, and far fewer in practice) and
    each prefix folder holds about N/4096 item folders. That keeps every folder well under
    the Hub's 10k entries for any dataset that fits the Hub's 100k files per repo; without
    fanout ``<subdir>`` alone passes 10k entries at 10k items.
    """
    check_item_id(item_id)
    if not _EXT_RE.match(ext):
        raise PermanentError(f"unsafe file extension {ext!r} for item {item_id}", reason="bad_ext")
    base = subdir.strip("/")
    parts = [base] if base else []
    if fanout:
        parts.append(item_id[:2])
    parts += [item_id, f"{item_id}.{ext}"]
    return check_repo_path("/".join(parts))


def holder_of(path: str, item_id: str) -> str | None:
    """The folder that holds the item folder of ``path`` (``<holder>/<id>/<id>.<ext>``), if any."""
    parts = path.split("/")
    if len(parts) >= 2 and parts[-2] == item_id and parts[-1].startswith(item_id + "."):
        return "/".join(parts[:-2])
    return None


def placed(pi: ProcessedItem, holders: Mapping[str, int], threshold: int = FANOUT_THRESHOLD) -> ProcessedItem:
    """``pi`` with its paths decided for a store whose folders hold ``holders`` item folders each.

    Post-processing names files ``item_path(fanout=False)`` (it cannot know the store); a file whose
    holding folder has ``threshold`` item folders or more moves to ``item_path(fanout=True)``, and the
    row's paths (image, PLY, every ``extra_files`` entry) follow, all from this one rule.
    """
    item_id = pi.row.id
    moved: dict[str, str] = {}
    for f in pi.files:
        holder = holder_of(f.repo_path, item_id)
        if holder is not None and holders.get(holder, 0) >= threshold:
            ext = posixpath.basename(f.repo_path)[len(item_id) + 1:]
            moved[f.repo_path] = item_path(holder, item_id, ext, fanout=True)
    return with_paths(pi, moved)


def with_paths(pi: ProcessedItem, moved: Mapping[str, str]) -> ProcessedItem:
    """``pi`` with each file at a key of ``moved`` placed at its value instead; the row's paths
    (image, PLY, every ``extra_files`` entry) follow."""
    if not moved:
        return pi
    extra = json.loads(pi.row.extra_files or "[]")
    for entry in extra:
        entry["path"] = moved.get(entry["path"], entry["path"])
    row = dataclasses.replace(pi.row, image_path=moved.get(pi.row.image_path, pi.row.image_path),
                              ply_path=moved.get(pi.row.ply_path, pi.row.ply_path),
                              extra_files=json.dumps(extra, sort_keys=True))
    files = [dataclasses.replace(f, repo_path=moved.get(f.repo_path, f.repo_path)) for f in pi.files]
    return dataclasses.replace(pi, row=row, files=files)


def check_item_id(item_id: str) -> str:
    """Ids become folder names: only ``[A-Za-z0-9_.-]``, no leading dot, at most 128 chars."""
    if not _ID_RE.match(item_id):
        raise PermanentError(f"item id {item_id!r} is not a safe path component", reason="bad_id")
    return item_id


def check_repo_path(path: str) -> str:
    """Reject repo paths that could leave the repository or hide in a dot-dir.

    A repo path is relative, '/'-separated, without empty, '.' or '..' components; only
    ``.coord/`` (and hidden temp files written by the stores themselves) may start with a dot.
    """
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise StoreError(f"invalid repo path {path!r}")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise StoreError(f"invalid repo path {path!r}")
    if parts[0].startswith(".") and parts[0] != COORD_DIR:
        raise StoreError(f"repo path {path!r} is hidden; only {COORD_DIR}/ may be")
    return path


def versioned_path(repo_path: str, item_id: str, sha256: str) -> str:
    """``repo_path`` with a content-hash tag after the id (``<dir>/<id>.<sha12>.<ext>``): where a
    ``--redo`` places a file whose old version a published row still names, so the old row and
    its bytes stay intact until the new row is committed."""
    folder, name = posixpath.split(repo_path)
    head = item_id if name.startswith(item_id + ".") else name.split(".", 1)[0]
    return check_repo_path(posixpath.join(folder, f"{head}.{sha256[:12]}{name[len(head):]}"))


def utc_stamp(ts: float) -> str:
    """``yyyymmddThhmmss`` in UTC, for names that sort by time."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y%m%dT%H%M%S")


def safe_client(client_id: str) -> str:
    """A client id squeezed into ``[A-Za-z0-9_.]`` (no '-', which separates name parts)."""
    cleaned = _CLIENT_UNSAFE.sub("_", client_id).strip("._")
    return cleaned[:40] or "client"


def shard_path(index_path: str, client_id: str, ts: float, nonce: str) -> str:
    """Path of a new index shard beside the index file.

    ``data/train.jsonl`` → ``data/train-shard-<utc yyyymmddThhmmss>-<safe client>-<nonce>.jsonl``.
    Unique by construction (the nonce), so writers never touch each other's files.
    """
    folder, stem, ext = _split_index_path(index_path)
    if not re.fullmatch(r"[A-Za-z0-9]+", nonce):
        raise StoreError(f"shard nonce must be alphanumeric, got {nonce!r}")
    name = f"{stem}{SHARD_MARK}{utc_stamp(ts)}-{safe_client(client_id)}-{nonce}{ext}"
    return posixpath.join(folder, name) if folder else name


def is_shard_name(index_path: str, name: str) -> bool:
    """Whether a file name (no folder) is one of ``index_path``'s shards."""
    _, stem, ext = _split_index_path(index_path)
    return name.startswith(f"{stem}{SHARD_MARK}") and name.endswith(ext) and not name.startswith(".")


def index_glob(index_path: str) -> str:
    """The glob that reads the compacted index and every shard (and nothing else)."""
    folder, stem, ext = _split_index_path(index_path)
    pattern = f"{stem}*{ext}"
    return posixpath.join(folder, pattern) if folder else pattern


def _split_index_path(index_path: str) -> tuple[str, str, str]:
    check_repo_path(index_path)
    folder, name = posixpath.split(index_path)
    stem, ext = posixpath.splitext(name)
    if ext != ".jsonl" or not stem:
        raise StoreError(f"index path must name a .jsonl file, got {index_path!r}")
    return folder, stem, ext


def encode_key(key: str) -> str:
    """A unit key (which contains '/', and maybe spaces or any text) as one safe file name.

    Bytes outside ``[A-Za-z0-9.-]`` become ``_XX`` (hex), so the mapping is reversible and
    distinct keys never collide; over-long results are cut and suffixed with a hash.
    """
    out = []
    for byte in key.encode("utf-8"):
        out.append(chr(byte) if byte in _KEY_SAFE else f"_{byte:02X}")
    name = "".join(out)
    if name.startswith("."):
        name = "_2E" + name[1:]
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        name = f"{name[:_MAX_NAME - 17]}~{digest}"
    return name or "_"


def decode_key(name: str) -> str:
    """Inverse of ``encode_key`` for names that were not cut (no '~')."""
    if "~" in name:
        raise StoreError(f"encoded key {name!r} was shortened; read the key from the file content")
    raw = bytearray()
    i = 0
    while i < len(name):
        if name[i] == "_":
            raw.append(int(name[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(name[i]))
            i += 1
    return raw.decode("utf-8")


def _key_bucket(key: str) -> str:
    # 256 buckets: done markers grow with the number of units; this keeps folders small.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:2]


def lease_path(unit_key: str) -> str:
    """``.coord/leases/<2 hex of sha256(key)>/<encoded key>.json``."""
    return f"{COORD_DIR}/leases/{_key_bucket(unit_key)}/{encode_key(unit_key)}.json"


def unit_done_path(unit_key: str) -> str:
    """``.coord/done/<2 hex of sha256(key)>/<encoded key>.json``."""
    return f"{COORD_DIR}/done/{_key_bucket(unit_key)}/{encode_key(unit_key)}.json"


def ledger_path() -> str:
    """The local store's SQLite ledger."""
    return f"{COORD_DIR}/ledger.sqlite3"
