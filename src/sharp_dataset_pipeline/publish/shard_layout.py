"""Paths and plans of the sharded layout. Pure: ids and sizes in, paths and plans out.

The repository (or local folder) of a sharded dataset::

    data/shards/<bb>/<batch>-<part>.tar        WebDataset shards: photo, .spz, .json, .webp per item
    data/ply/<bb>/<batch>-<part>.tar           full PLYs (the optional ``ply`` config), never in the above
    data/index/pending/<bb>/<batch>.parquet    one small index shard per publish step
    data/index/parts/part-<digest>.parquet     compacted index (``parquet_index.plan_compaction``)

``<batch>`` is a digest of the client and the batch's item ids, so a batch that is sent again after an
unknown outcome gets the same paths and the store can tell by path whether it already landed. ``<bb>``
is the batch digest's first two hex digits: 256 folders, each holding about 1/256 of the shards, so
no folder passes 1,000 entries before the repository holds about 200,000 shard files (twice the
Hub's 100k files per repository). A batch becomes one shard per ~1 GB (``plan_batch``).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import PermanentError
from .shard_keys import encode_key
from .tar_shard import finish_tar_bytes, item_tar_bytes

SHARDS_DIR = "data/shards"
PLY_DIR = "data/ply"
INDEX_DIR = "data/index"
PENDING_INDEX_DIR = f"{INDEX_DIR}/pending"
INDEX_PARTS_DIR = f"{INDEX_DIR}/parts"
KIND_DIRS = {"splats": SHARDS_DIR, "ply": PLY_DIR}
DEFAULT_MAX_SHARD_BYTES = 1_000_000_000
MAX_FOLDER_ENTRIES = 1000
BATCH_DIGITS = 20  # 80 bits: no two batches of one dataset share a name
MAX_PARTS = 1000

_DIGEST_RE = re.compile(rf"[0-9a-f]{{{BATCH_DIGITS}}}")
_SHARD_RE = re.compile(rf"^data/(shards|ply)/([0-9a-f]{{2}})/([0-9a-f]{{{BATCH_DIGITS}}})-(\d{{3}})\.tar$")


@dataclass(frozen=True)
class PlannedItem:
    """One item as the planner sees it: its id and ``field → size`` of its members in one shard kind."""

    item_id: str
    field_sizes: Mapping[str, int]


@dataclass(frozen=True)
class ShardPlan:
    """One tar to build: its path, the item ids in it (in tar order) and its exact size."""

    path: str
    item_ids: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class BatchPlan:
    """Every file one publish step adds: the shards of each kind and the batch's index shard."""

    batch: str
    shards: tuple[ShardPlan, ...]
    ply_shards: tuple[ShardPlan, ...]
    index_path: str

    def paths(self) -> list[str]:
        return [s.path for s in self.shards + self.ply_shards] + [self.index_path]


def batch_digest(client_id: str, item_ids: Iterable[str], *, salt: str = "") -> str:
    """The batch's name: a digest of the client, the *set* of item ids and ``salt``.

    The same client sending the same items gets the same name (a resend is recognised by path);
    another client, or the same items with another ``salt`` (pass e.g. the model version on a
    ``--redo`` so a new shard never takes an old shard's path), gets another name.
    """
    ids = sorted(set(item_ids))
    if not ids:
        raise PermanentError("a batch needs at least one item", reason="empty_batch")
    h = hashlib.sha256()
    for part in (client_id, salt, *ids):
        raw = part.encode("utf-8", "surrogatepass")
        h.update(f"{len(raw)}:".encode())  # length-prefixed: no id can pass for two, whatever it holds
        h.update(raw)
    return h.hexdigest()[:BATCH_DIGITS]


def _check_digest(digest: str) -> str:
    if not _DIGEST_RE.fullmatch(digest):
        raise PermanentError(f"{digest!r} is not a {BATCH_DIGITS}-hex-digit digest", reason="bad_batch")
    return digest


def shard_path(batch: str, part: int, *, kind: str = "splats") -> str:
    """``data/shards/<bb>/<batch>-<part>.tar`` (``data/ply/…`` for kind ``ply``)."""
    if kind not in KIND_DIRS:
        raise PermanentError(f"unknown shard kind {kind!r} (one of {sorted(KIND_DIRS)})", reason="bad_kind")
    if not 0 <= part < MAX_PARTS:
        raise PermanentError(f"shard part {part} is out of range 0..{MAX_PARTS - 1}", reason="bad_part")
    _check_digest(batch)
    return f"{KIND_DIRS[kind]}/{batch[:2]}/{batch}-{part:03d}.tar"


def parse_shard_path(path: str) -> tuple[str, str, int] | None:
    """``(kind, batch, part)`` of a shard path, or ``None`` for any other path."""
    m = _SHARD_RE.match(path)
    if not m or m.group(2) != m.group(3)[:2]:
        return None
    return ("splats" if m.group(1) == "shards" else "ply"), m.group(3), int(m.group(4))


def index_shard_path(batch: str) -> str:
    """The index shard one publish step adds: ``data/index/pending/<bb>/<batch>.parquet``."""
    _check_digest(batch)
    return f"{PENDING_INDEX_DIR}/{batch[:2]}/{batch}.parquet"


def index_part_path(digest: str) -> str:
    """A compacted index file: ``data/index/parts/part-<digest>.parquet`` (digest of what it merged)."""
    _check_digest(digest)
    return f"{INDEX_PARTS_DIR}/part-{digest}.parquet"


def plan_shards(items: Sequence[PlannedItem], batch: str, *, kind: str = "splats",
                max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, first_part: int = 0) -> list[ShardPlan]:
    """Split one batch into shards of at most ``max_shard_bytes`` (exact tar sizes, see ``tar_shard``).

    Items go in key order (the order ``tar_shard.write_shard`` writes them), filling each shard before
    the next: the same items always give the same shards. An item bigger than the limit on its own gets
    a shard of its own (an item is never split). Raises ``PermanentError`` for no items or repeated ids.
    """
    if not items:
        raise PermanentError("a batch needs at least one item", reason="empty_batch")
    if max_shard_bytes < 1:
        raise PermanentError(f"max_shard_bytes must be positive, got {max_shard_bytes}", reason="bad_limit")
    keyed = sorted(((encode_key(i.item_id), i) for i in items), key=lambda ki: ki[0])
    if len({k for k, _ in keyed}) != len(keyed):
        raise PermanentError(f"batch {batch} holds an item id twice", reason="duplicate_item")
    plans: list[ShardPlan] = []
    ids: list[str] = []
    used = 0
    for key, item in keyed:
        cost = item_tar_bytes(key, item.field_sizes)
        if ids and finish_tar_bytes(used + cost) > max_shard_bytes:
            plans.append(ShardPlan(shard_path(batch, first_part + len(plans), kind=kind), tuple(ids),
                                   finish_tar_bytes(used)))
            ids, used = [], 0
        ids.append(item.item_id)
        used += cost
    plans.append(ShardPlan(shard_path(batch, first_part + len(plans), kind=kind), tuple(ids), finish_tar_bytes(used)))
    return plans


def plan_batch(client_id: str, items: Sequence[PlannedItem], *, ply_items: Sequence[PlannedItem] = (),
               salt: str = "", max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> BatchPlan:
    """Every path one publish step writes: its splat shards, its PLY shards (when ``ply_items`` is given;
    they must be the same items) and its index shard."""
    batch = batch_digest(client_id, (i.item_id for i in items), salt=salt)
    if ply_items and {i.item_id for i in ply_items} != {i.item_id for i in items}:
        raise PermanentError(f"batch {batch}: the PLY shards must hold the same items", reason="ply_mismatch")
    ply = plan_shards(ply_items, batch, kind="ply", max_shard_bytes=max_shard_bytes) if ply_items else []
    return BatchPlan(batch, tuple(plan_shards(items, batch, max_shard_bytes=max_shard_bytes)), tuple(ply),
                     index_shard_path(batch))


def folder_entries(paths: Iterable[str]) -> Counter[str]:
    """Entries (files and sub-folders) directly inside each folder of a set of repo paths (``""`` is the
    root): the number the Hub asks to keep under 10k and this layout under ``MAX_FOLDER_ENTRIES``."""
    children: dict[str, set[str]] = {}
    for path in paths:
        parts = path.split("/")
        for depth in range(len(parts)):
            children.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
    return Counter({folder: len(names) for folder, names in children.items()})
