"""The typed Parquet index of a dataset, for both layouts. Pure: records in, Parquet bytes out to a file
object the caller opens (and back).

One row per item. The columns follow ``IndexRow`` with real types instead of its JSONL convention of
"always a string, never null": a missing text or an unknown count is null (not ``''`` or ``0``),
``tags`` / ``topics`` are lists of strings, ``extra_files`` is a list of ``{path, kind, size, sha256}``
structs. The sharded layout adds the item's shard key, its shard paths and its tar ``members`` (shard,
name, field, data offset, size, sha256), so a reader can fetch one member with a ranged read and
``verify --deep`` can check it. ``preview`` is a ``{bytes, path}`` struct that the schema's
``huggingface`` metadata declares an ``Image``: ``datasets.load_dataset("parquet", …)`` and the Hub's
viewer show it as a picture.

Files are written with row groups of at most ``MAX_ROW_GROUP_BYTES`` (100 MB, what ``datasets`` uses;
the viewer refuses groups over ~286 MiB). Compaction (``plan_compaction``, ``merge_index``) merges many
small per-publish index shards into few bigger files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import StoreError
from ..records import IndexRow
from .shard_layout import BATCH_DIGITS, PENDING_INDEX_DIR, index_part_path
from .tar_shard import MemberRecord

MAX_ROW_GROUP_BYTES = 100_000_000
DEFAULT_PART_BYTES = 500_000_000  # datasets' own shard size for push_to_hub
LAYOUTS = ("shards", "files")
# IndexRow numbers whose 0 means "not known" (no photo has 0 pixels, no file 0 bytes): null in Parquet.
_ZERO_IS_MISSING = frozenset({"image_size", "ply_size", "width", "height", "focal_px", "num_gaussians"})
_LIST_FIELDS = frozenset({"tags", "topics"})
# IndexRow's sharded-layout fields: typed columns of their own (``key``, ``shard_path``, ``members``…).
SHARD_ROW_FIELDS = ("shard_key", "shard_path", "ply_shard_path", "members")
_ROW_OVERHEAD = 64  # bytes per row beyond the values: offsets, validity bits, list headers

_FILE_STRUCT = pa.struct([("path", pa.string()), ("kind", pa.string()), ("size", pa.int64()),
                          ("sha256", pa.string())])
_MEMBER_STRUCT = pa.struct([("shard", pa.string()), ("name", pa.string()), ("field", pa.string()),
                            ("offset", pa.int64()), ("size", pa.int64()), ("sha256", pa.string())])
_PREVIEW_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_HF_METADATA = {b"huggingface": json.dumps({"info": {"features": {"preview": {"_type": "Image"}}}}).encode()}
# The ``camera`` object of a ``<key>.json`` member: the shape ``pipeline.stages.camera_metadata`` writes.
CAMERA_TYPE = pa.struct([("intrinsics", pa.list_(pa.list_(pa.float64()))),
                         ("extrinsics", pa.list_(pa.list_(pa.float64()))), ("image_size", pa.list_(pa.int64())),
                         ("focal_px", pa.float64()), ("disparity", pa.list_(pa.float64())),
                         ("color_space", pa.int64()), ("version", pa.list_(pa.int64()))])
# Index columns a ``<key>.json`` member leaves out: it sits inside the shard they would describe.
_NOT_IN_JSON_MEMBER = ("layout", "key", "shard_path", "ply_shard_path", "members", "preview")


@dataclass(frozen=True)
class ShardMember:
    """Where one of an item's files sits inside a shard (``tar_shard.MemberRecord`` plus the shard path)."""

    shard: str
    name: str
    field: str
    offset: int
    size: int
    sha256: str


@dataclass(frozen=True)
class IndexEntry:
    """One index row: the item's ``IndexRow`` plus where its bytes are and its preview image.

    ``layout`` is ``shards`` (``key``, ``shard_path``, ``members`` filled) or ``files`` (the row's own
    paths). ``preview`` is the image bytes (WebP/PNG), ``preview_path`` the name it is shown under.
    """

    row: IndexRow
    layout: str = "shards"
    key: str | None = None
    shard_path: str | None = None
    ply_shard_path: str | None = None
    members: tuple[ShardMember, ...] = ()
    preview: bytes | None = None
    preview_path: str | None = None

    def member(self, field_name: str) -> ShardMember | None:
        """The member holding ``field_name`` (``spz``, ``json``, ``webp``, the photo's field, ``ply``)."""
        return next((m for m in self.members if m.field == field_name), None)


@dataclass(frozen=True)
class IndexFileInfo:
    """What one written index file holds: rows, row groups (each group's row count) and bytes."""

    rows: int
    row_groups: tuple[int, ...]
    size: int
    sha256: str


@dataclass(frozen=True)
class IndexShardInfo:
    """One existing index file as compaction sees it (path and what ``IndexFileInfo`` told at write)."""

    path: str
    rows: int
    size: int


@dataclass(frozen=True)
class CompactionStep:
    """Merge ``inputs`` into one file at ``output`` (then delete the inputs, in the same commit)."""

    output: str
    inputs: tuple[str, ...]
    rows: int
    size: int = field(default=0)


def _row_kinds() -> dict[str, type]:
    hints = typing.get_type_hints(IndexRow)
    return {f.name: hints[f.name] for f in dataclasses.fields(IndexRow)}


def _row_columns() -> list[tuple[str, pa.DataType]]:
    arrow = {str: pa.string(), int: pa.int64(), float: pa.float64()}
    kinds = _row_kinds()
    cols: list[tuple[str, pa.DataType]] = []
    for f in dataclasses.fields(IndexRow):
        if f.name in SHARD_ROW_FIELDS:
            continue
        if f.name in _LIST_FIELDS:
            cols.append((f.name, pa.list_(pa.string())))
        elif f.name == "extra_files":
            cols.append((f.name, pa.list_(_FILE_STRUCT)))
        else:
            cols.append((f.name, arrow[kinds[f.name]]))
    return cols


def index_schema() -> pa.Schema:
    """The Arrow schema of every index file (the same for both layouts, so files concatenate)."""
    row_cols = _row_columns()
    head = [("id", pa.string()), ("layout", pa.string()), ("key", pa.string()), ("shard_path", pa.string()),
            ("ply_shard_path", pa.string()), ("members", pa.list_(_MEMBER_STRUCT))]
    rest = [c for c in row_cols if c[0] != "id"]
    fields = [pa.field(n, t, nullable=(n != "id")) for n, t in head + rest]
    fields.append(pa.field("preview", _PREVIEW_STRUCT))
    return pa.schema(fields, metadata=_HF_METADATA)


def _split_list(text: str) -> list[str] | None:
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _extra_files(text: str, item_id: str) -> list[dict[str, Any]] | None:
    try:
        entries = json.loads(text or "[]")
    except ValueError as exc:
        raise StoreError(f"item {item_id}: extra_files is not JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise StoreError(f"item {item_id}: extra_files is not a list")
    out = []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("path"), str):
            raise StoreError(f"item {item_id}: extra_files entry {e!r} has no path")
        out.append({"path": e["path"], "kind": e.get("kind") or None,
                    "size": int(e["size"]) if e.get("size") is not None else None, "sha256": e.get("sha256") or None})
    return out or None


def entry_record(entry: IndexEntry) -> dict[str, Any]:
    """One entry as a typed record (a dict of the schema's columns): nulls for what is missing."""
    if entry.layout not in LAYOUTS:
        raise StoreError(f"item {entry.row.id}: unknown layout {entry.layout!r}")
    if not entry.row.id:
        raise StoreError("an index row needs an id")
    rec: dict[str, Any] = {}
    for f in dataclasses.fields(IndexRow):
        if f.name in SHARD_ROW_FIELDS:
            continue
        value = getattr(entry.row, f.name)
        if f.name in _LIST_FIELDS:
            value = _split_list(value or "")
        elif f.name == "extra_files":
            value = _extra_files(value, entry.row.id)
        elif value == "" or (f.name in _ZERO_IS_MISSING and value == 0):
            value = None
        rec[f.name] = value
    rec.update(layout=entry.layout, key=entry.key, shard_path=entry.shard_path, ply_shard_path=entry.ply_shard_path,
               members=[dataclasses.asdict(m) for m in entry.members] or None)
    rec["preview"] = None if entry.preview is None else {"bytes": entry.preview, "path": entry.preview_path}
    return rec


def entry_from_record(rec: dict[str, Any]) -> IndexEntry:
    """Back from a typed record to an entry (nulls become ``IndexRow``'s ``''`` / ``0`` again)."""
    values: dict[str, Any] = {}
    kinds = _row_kinds()
    members = tuple(ShardMember(**m) for m in rec.get("members") or ())
    for f in dataclasses.fields(IndexRow):
        value = rec.get(f.name)
        if f.name in SHARD_ROW_FIELDS:
            continue
        if f.name in _LIST_FIELDS:
            value = ", ".join(value or [])
        elif f.name == "extra_files":
            value = json.dumps(value or [], sort_keys=True)
        elif value is None:
            value = kinds[f.name]()
        values[f.name] = value
    values.update(shard_key=rec.get("key") or "", shard_path=rec.get("shard_path") or "",
                  ply_shard_path=rec.get("ply_shard_path") or "", members=members_json(members) if members else "")
    preview = rec.get("preview") or {}
    return IndexEntry(IndexRow(**values), layout=rec.get("layout") or "files", key=rec.get("key"),
                      shard_path=rec.get("shard_path"), ply_shard_path=rec.get("ply_shard_path"),
                      members=members, preview=preview.get("bytes"), preview_path=preview.get("path"))


def members_json(members: Iterable[ShardMember]) -> str:
    """``IndexRow.members``: the members as JSON, sorted by field (deterministic)."""
    return json.dumps([dataclasses.asdict(m) for m in sorted(members, key=lambda m: (m.field, m.shard))],
                      sort_keys=True, separators=(",", ":"))


def row_members(row: IndexRow) -> tuple[ShardMember, ...]:
    """An index row's tar members (none in the files layout). Raises ``StoreError`` if malformed."""
    if not row.members:
        return ()
    try:
        return tuple(ShardMember(**m) for m in json.loads(row.members))
    except (ValueError, TypeError) as exc:
        raise StoreError(f"item {row.id}: members is not a list of members: {exc}") from exc


def entry_of_row(row: IndexRow, preview: bytes | None = None, preview_path: str | None = None) -> IndexEntry:
    """The Parquet entry of a JSONL index row (either layout), with its preview image bytes."""
    if not row.shard_path:
        return IndexEntry(row, layout="files", preview=preview, preview_path=preview_path)
    return IndexEntry(row, layout="shards", key=row.shard_key or None, shard_path=row.shard_path,
                      ply_shard_path=row.ply_shard_path or None, members=row_members(row),
                      preview=preview, preview_path=preview_path)


def shard_members(shard_path: str, records: Iterable[MemberRecord]) -> tuple[ShardMember, ...]:
    """An item's ``members`` for its index entry from what ``tar_shard.write_shard`` returned for it."""
    return tuple(ShardMember(shard_path, r.name, r.field, r.offset, r.size, r.sha256) for r in records)


def member_json(row: IndexRow, camera: dict[str, Any], *, photo_format: str = "") -> bytes:
    """The ``<key>.json`` member: the typed index row (nulls, lists) plus SHARP's camera metadata that the
    splat formats cannot carry (intrinsics, extrinsics, image size, disparity, colour space, version),
    and ``photo_format`` (``jpg``, ``png``, ``webp``…: the ``<key>.jpg`` member's real format) when given.

    Without the shard columns and the preview: the member sits inside the shard it would describe.
    Deterministic (sorted keys, no spaces), so a resent batch makes the same tar. Raises ``StoreError``
    for values JSON cannot hold (NaN, infinity, bytes).
    """
    rec = entry_record(IndexEntry(row))
    for name in _NOT_IN_JSON_MEMBER:
        rec.pop(name)
    rec["camera"] = camera
    if photo_format:
        rec["photo_format"] = photo_format
    try:
        return json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise StoreError(f"item {row.id}: metadata is not JSON: {exc}") from exc


def member_json_type() -> pa.StructType:
    """The Arrow type of every ``<key>.json`` member (what ``member_json`` writes), for readers that must
    be told it: ``datasets`` infers a WebDataset's types from its first samples, and a field that is
    null there (no description yet) would make every later value fail to cast."""
    fields = [f for f in index_schema() if f.name not in _NOT_IN_JSON_MEMBER]
    return pa.struct([*fields, pa.field("camera", CAMERA_TYPE), pa.field("photo_format", pa.string())])


def _record_bytes(rec: dict[str, Any]) -> int:
    """An upper estimate of a record's uncompressed size in a row group."""
    total = _ROW_OVERHEAD
    for value in rec.values():
        if isinstance(value, (str, bytes)):
            total += len(value.encode() if isinstance(value, str) else value) + 4
        elif isinstance(value, (list, dict)):
            total += _record_bytes(value) if isinstance(value, dict) else sum(
                _record_bytes(v) if isinstance(v, dict) else len(str(v)) + 8 for v in value)
        else:
            total += 8
    return total


def _groups(records: Sequence[dict[str, Any]], max_bytes: int) -> list[list[dict[str, Any]]]:
    groups: list[list[dict[str, Any]]] = [[]]
    used = 0
    for rec in records:
        size = _record_bytes(rec)
        if groups[-1] and used + size > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(rec)
        used += size
    return groups


class _CountingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.size = 0
        self.digest = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self.size += len(data)
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self.closed = True  # the caller owns ``out``


def write_index(entries: Iterable[IndexEntry], out: BinaryIO, *,
                max_row_group_bytes: int = MAX_ROW_GROUP_BYTES) -> IndexFileInfo:
    """Write entries as one Parquet file to ``out`` (any writable binary stream), sorted by id, with row
    groups of at most ``max_row_group_bytes`` uncompressed (one row alone may exceed it). Raises
    ``StoreError`` for a repeated id, an unknown layout or a malformed ``extra_files``."""
    records = sorted((entry_record(e) for e in entries), key=lambda r: r["id"])
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for n, i in enumerate(ids) if n and ids[n - 1] == i)
        raise StoreError(f"item {dup} appears twice in one index file")
    return _write_records(records, out, max_row_group_bytes)


def _write_records(records: list[dict[str, Any]], out: BinaryIO, max_row_group_bytes: int) -> IndexFileInfo:
    schema = index_schema()
    sink = _CountingWriter(out)
    groups = _groups(records, max_row_group_bytes) if records else []
    with pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema, compression="zstd") as writer:
        for group in groups:
            writer.write_table(pa.Table.from_pylist(group, schema=schema), row_group_size=len(group))
        if not groups:
            writer.write_table(schema.empty_table())
    return IndexFileInfo(len(records), tuple(len(g) for g in groups), sink.size, sink.digest.hexdigest())


def read_index(src: BinaryIO) -> list[IndexEntry]:
    """Every entry of one index file. Raises ``StoreError`` when it is not Parquet or lacks columns."""
    try:
        # The plain file reader on one thread, as in ``read_ids``: ``read_table``'s scanner thread pools
        # can abort a short-lived command at exit.
        table = pq.ParquetFile(src, pre_buffer=False).read(use_threads=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StoreError(f"index file is not readable Parquet: {exc}") from exc
    missing = [n for n in index_schema().names if n not in table.column_names]
    if missing:
        raise StoreError(f"index file lacks columns {missing[:5]}")
    return [entry_from_record(r) for r in table.to_pylist()]


def read_ids(src: BinaryIO) -> list[str]:
    """The ids of one index file (the ``id`` column alone). Raises ``StoreError`` when it is not Parquet
    or has no ``id`` column."""
    try:
        # The plain file reader, one thread, no pre-buffering: with ``read_table``'s dataset scanner and
        # its thread pools a short-lived command (``verify``) sometimes aborted at exit ("terminate
        # called without an active exception": 2 runs in 30, and 1 in 40 with use_threads=False).
        ids = pq.ParquetFile(src, pre_buffer=False).read(columns=["id"], use_threads=False).column("id")
    except (pa.ArrowInvalid, OSError, KeyError) as exc:  # KeyError: no ``id`` column
        raise StoreError(f"index file is not readable Parquet with an id column: {exc}") from exc
    return [str(i) for i in ids.to_pylist()]


def merge_index(sources: Sequence[BinaryIO], out: BinaryIO, *,
                max_row_group_bytes: int = MAX_ROW_GROUP_BYTES) -> IndexFileInfo:
    """Merge index files into one, sorted by id. An id in several inputs (a ``--redo``) keeps the row with
    the latest ``processed_at``; on a tie the later input wins."""
    latest: dict[str, dict[str, Any]] = {}
    for src in sources:
        for entry in read_index(src):
            rec = entry_record(entry)
            old = latest.get(rec["id"])
            if old is None or (rec["processed_at"] or "") >= (old["processed_at"] or ""):
                latest[rec["id"]] = rec
    records = [latest[i] for i in sorted(latest)]
    return _write_records(records, out, max_row_group_bytes)


def plan_compaction(files: Sequence[IndexShardInfo], *, target_bytes: int = DEFAULT_PART_BYTES,
                    small_bytes: int | None = None) -> list[CompactionStep]:
    """Which index files to merge into which new part file.

    Candidates are every pending shard (``data/index/pending/…``) and every part smaller than
    ``small_bytes`` (default a quarter of ``target_bytes``); bigger parts stay as they are. Candidates go
    in path order into outputs of at most ``target_bytes`` (by input sizes; a file alone may exceed it).
    A step that would only rewrite one part into itself is dropped. Each output is named from the digest
    of its inputs, so a compaction retried after an unknown outcome writes the same paths.
    """
    small = target_bytes // 4 if small_bytes is None else small_bytes
    pending = PENDING_INDEX_DIR + "/"
    cands = sorted((f for f in files if f.path.startswith(pending) or f.size < small), key=lambda f: f.path)
    groups: list[list[IndexShardInfo]] = [[]]
    used = 0
    for f in cands:
        if groups[-1] and used + f.size > target_bytes:
            groups.append([])
            used = 0
        groups[-1].append(f)
        used += f.size
    steps = []
    for group in groups:
        if not group or (len(group) == 1 and not group[0].path.startswith(pending)):
            continue
        digest = hashlib.sha256("\n".join(f.path for f in group).encode()).hexdigest()[:BATCH_DIGITS]
        steps.append(CompactionStep(index_part_path(digest), tuple(f.path for f in group),
                                    sum(f.rows for f in group), sum(f.size for f in group)))
    return steps
