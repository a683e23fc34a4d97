"""One publish step's items packed into the sharded layout: WebDataset tars and the step's index shard.

Both stores call ``pack_batch`` inside their publish step, once they know which items really get
published, and then publish ``PackedBatch.files`` in that same atomic step. Post-processing names its
files for the per-item layout (it cannot know the store); here they become tar members:

    data/shards/<bb>/<batch>-<part>.tar   per item <key>.jpg (the photo), <key>.spz, <key>.json, <key>.webp
                                          (and .sog / .html when asked for)
    data/ply/<bb>/<batch>-<part>.tar      every format whose name ends in ``ply`` (never in the above:
                                          ``datasets`` reads a ``.ply`` member as a mesh)
    data/index/pending/<bb>/<batch>.parquet   the typed index entries of the step, with previews

The photo member is ``<key>.jpg`` whatever the photo's format (its original bytes; a PNG or WebP photo's
real format is the json member's ``photo_format``): ``datasets``' WebDataset builder fixes its columns
from the first samples of the first tar, so a ``<key>.png`` in a later tar would come back as no photo,
and ``webdataset``'s ``to_tuple("jpg", …)`` would fail on it. Image decoders read the format from the
bytes, not the name. Items whose member sets still differ (optional formats) go in different shards of
the batch. The batch name is a digest of the client,
the item ids and what the items hold (model, photo, processing time), so a resend of the same items
after an unknown outcome gets the same paths, and a ``--redo`` never takes the path of a live shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import PermanentError
from ..records import IndexRow, ProcessedItem, PublishedFile
from .parquet_index import ShardMember, entry_of_row, member_json, members_json, write_index
from .shard_keys import encode_key
from .shard_layout import (
    DEFAULT_MAX_SHARD_BYTES,
    PlannedItem,
    ShardPlan,
    batch_digest,
    index_shard_path,
    plan_shards,
)
from .tar_shard import ShardItem, write_shard

SHARD_KIND = "shard"
PLY_SHARD_KIND = "ply_shard"
INDEX_SHARD_KIND = "index_shard"
_PLY_FIELDS = {"ply": "ply", "small_ply": "small.ply", "compressed_ply": "compressed.ply"}
_SPLAT_FIELDS = {"spz": "spz", "sog": "sog", "html": "html"}
# One photo field for every item (see the module docstring); the photo's own format goes in its json.
PHOTO_FIELD = "jpg"
_PHOTO_FORMAT = {"jpeg": "jpg", "jpe": "jpg"}


@dataclass
class PackedBatch:
    """What one publish step adds in the sharded layout.

    ``items`` carry their final rows (``shard_key``, ``shard_path``, ``ply_shard_path``, ``members``
    filled; ``image_path``/``ply_path`` empty, ``extra_files`` ``[]``) and no files of their own: the
    bytes are in ``files`` (kinds ``shard``, ``ply_shard``, then the one ``index_shard``).
    """

    batch: str
    items: list[ProcessedItem]
    files: list[PublishedFile]

    def paths(self) -> list[str]:
        return [f.repo_path for f in self.files]


@dataclass(frozen=True)
class _Sample:
    item: ProcessedItem
    key: str
    splat: dict[str, bytes | Path]
    ply: dict[str, bytes | Path]
    preview: Path | None
    photo_format: str


def _ext_after(item_id: str, repo_path: str) -> str:
    name = posixpath.basename(repo_path)
    return name[len(item_id) + 1:] if name.startswith(item_id + ".") else name.rsplit(".", 1)[-1]


def _sample(pi: ProcessedItem) -> _Sample:
    """The item's members by field. The ``json`` member is added once the row is final (``pack_batch``)."""
    item_id = pi.row.id
    splat: dict[str, bytes | Path] = {}
    ply: dict[str, bytes | Path] = {}
    photo: tuple[str, Path] | None = None
    preview: Path | None = None
    for f in pi.files:
        if f.kind == "image":
            ext = _ext_after(item_id, f.repo_path).lower()
            photo = (_PHOTO_FORMAT.get(ext, ext), f.local_path)
        elif f.kind == "preview":
            preview = f.local_path
            splat[_ext_after(item_id, f.repo_path).rsplit(".", 1)[-1].lower()] = f.local_path
        elif f.kind in _PLY_FIELDS:
            ply[_PLY_FIELDS[f.kind]] = f.local_path
        elif f.kind in _SPLAT_FIELDS:
            splat[_SPLAT_FIELDS[f.kind]] = f.local_path
        else:
            raise PermanentError(f"item {item_id}: no shard member for a {f.kind!r} file", reason="bad_kind")
    if photo is None:
        raise PermanentError(f"item {item_id}: no photo to publish", reason="no_photo")
    splat[PHOTO_FIELD] = photo[1]
    return _Sample(pi, encode_key(item_id), splat, ply, preview, photo[0])


def _sizes(members: dict[str, bytes | Path]) -> dict[str, int]:
    return {k: len(v) if isinstance(v, bytes) else v.stat().st_size for k, v in members.items()}


def content_salt(items: Sequence[ProcessedItem], salt: str = "") -> str:
    """What, beyond the ids, tells one packing of these items from another: model, photo and
    processing time of each (a resend keeps them; a ``--redo`` changes them)."""
    h = hashlib.sha256(salt.encode("utf-8", "surrogatepass"))
    for pi in sorted(items, key=lambda p: p.row.id):
        r = pi.row
        h.update("\0".join((r.id, r.predictor, r.model_version, r.image_sha256, r.processed_at)).encode())
    return h.hexdigest()[:16]


def _bare_row(row: IndexRow) -> IndexRow:
    return dataclasses.replace(row, image_path="", ply_path="", extra_files="[]", shard_key="", shard_path="",
                               ply_shard_path="", members="")


def _plan_groups(samples: list[_Sample], batch: str, kind: str, max_bytes: int) -> list[ShardPlan]:
    """Shards of one kind, one group of shards per distinct member set, parts numbered on."""
    groups: dict[tuple[str, ...], list[_Sample]] = {}
    for s in samples:
        members = s.ply if kind == "ply" else s.splat
        if members:
            groups.setdefault(tuple(sorted(members)), []).append(s)
    plans: list[ShardPlan] = []
    for fields in sorted(groups):
        planned = [PlannedItem(s.item.row.id, _sizes(s.ply if kind == "ply" else s.splat)) for s in groups[fields]]
        plans += plan_shards(planned, batch, kind=kind, max_shard_bytes=max_bytes, first_part=len(plans))
    return plans


def _write_plans(plans: list[ShardPlan], by_id: dict[str, _Sample], kind: str, work_dir: Path,
                 members: dict[str, list[ShardMember]]) -> list[PublishedFile]:
    files = []
    for plan in plans:
        local = work_dir / posixpath.basename(plan.path)
        if kind == "ply":
            local = local.with_name("ply-" + local.name)
        shard_items = [ShardItem(by_id[i].key, by_id[i].ply if kind == "ply" else by_id[i].splat)
                       for i in plan.item_ids]
        with local.open("wb") as fh:
            result = write_shard(shard_items, fh, allow_mesh=kind == "ply")
        key_to_id = {by_id[i].key: i for i in plan.item_ids}
        for rec in result.members:
            members[key_to_id[rec.key]].append(
                ShardMember(plan.path, rec.name, rec.field, rec.offset, rec.size, rec.sha256))
        files.append(PublishedFile(PLY_SHARD_KIND if kind == "ply" else SHARD_KIND, plan.path, local,
                                   result.size, result.sha256))
    return files


def pack_batch(items: Sequence[ProcessedItem], client_id: str, work_dir: Path, *, salt: str = "",
               max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> PackedBatch:
    """Write ``items`` as this step's shards and index shard under ``work_dir`` (the caller publishes
    and then removes them). Raises ``PermanentError`` for no items, a repeated id or a file kind that
    has no member; ``StoreError`` for metadata that is not JSON."""
    if not items:
        raise PermanentError("a batch needs at least one item", reason="empty_batch")
    work_dir.mkdir(parents=True, exist_ok=True)
    samples = [_sample(pi) for pi in items]
    batch = batch_digest(client_id, (s.item.row.id for s in samples), salt=content_salt(items, salt))
    by_id = {s.item.row.id: s for s in samples}
    if len(by_id) != len(samples):
        raise PermanentError(f"batch {batch} holds an item id twice", reason="duplicate_item")
    for s in samples:
        s.splat["json"] = member_json(_bare_row(s.item.row), s.item.camera or {}, photo_format=s.photo_format)
    members: dict[str, list[ShardMember]] = {i: [] for i in by_id}
    files = _write_plans(_plan_groups(samples, batch, "splats", max_shard_bytes), by_id, "splats", work_dir, members)
    files += _write_plans(_plan_groups(samples, batch, "ply", max_shard_bytes), by_id, "ply", work_dir, members)
    packed = [_packed_item(by_id[i], members[i]) for i in sorted(by_id)]
    files.append(_index_shard(packed, by_id, batch, work_dir))
    return PackedBatch(batch, packed, files)


def _packed_item(sample: _Sample, members: list[ShardMember]) -> ProcessedItem:
    shard = next(m.shard for m in members if not m.shard.startswith("data/ply/"))
    ply_shard = next((m.shard for m in members if m.shard.startswith("data/ply/")), "")
    row = dataclasses.replace(_bare_row(sample.item.row), shard_key=sample.key, shard_path=shard,
                              ply_shard_path=ply_shard, members=members_json(members))
    return dataclasses.replace(sample.item, row=row, files=[])


def _index_shard(packed: list[ProcessedItem], by_id: dict[str, _Sample], batch: str, work_dir: Path) -> PublishedFile:
    entries = []
    for pi in packed:
        preview = by_id[pi.row.id].preview
        data = preview.read_bytes() if preview is not None else None
        name = f"{pi.row.shard_key}.{preview.suffix.lstrip('.')}" if preview is not None else None
        entries.append(entry_of_row(pi.row, data, name))
    local = work_dir / f"{batch}.parquet"
    with local.open("wb") as fh:
        info = write_index(entries, fh)
    return PublishedFile(INDEX_SHARD_KIND, index_shard_path(batch), local, info.size, info.sha256)
