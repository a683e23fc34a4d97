"""Reading an item's bytes back in either layout (pure apart from reading local files).

Files layout: the row's own repo paths (``image_path``, ``ply_path``, ``extra_files``). Shards layout:
the row's ``members``, read out of a local copy of their shard at the recorded offset and checked by
sha256 (``tar_shard.read_member_at``). Where a repo file's local bytes come from is the caller's: a
store's ``StoreAdmin.local_path`` (the file itself, or a downloaded copy). Used by ``gallery``,
``share --missing`` and ``verify --deep``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..errors import StoreError
from ..records import IndexRow
from .parquet_index import ShardMember, row_members
from .tar_shard import read_member_at

LocalPath = Callable[[str], Path]  # repo path -> local path with its bytes
# Fields of a shards-layout sample that are not the photo (shard_pack's member names).
_NOT_PHOTO = frozenset({"spz", "json", "webp", "sog", "html", "ply", "small.ply", "compressed.ply"})


class MissingPart(StoreError):
    """The row names no file or member for the part asked for (no preview published, no SPZ…)."""


def member_bytes(shard_file: Path, member: ShardMember) -> bytes:
    """The bytes of ``member`` from a local copy of its shard, checked against its sha256.

    Raises ``tar_shard.MemberMismatch`` when the shard is short or the bytes differ, ``StoreError`` when
    the file cannot be read."""
    try:
        with shard_file.open("rb") as src:
            return read_member_at(src, member.offset, member.size, member.sha256)
    except OSError as exc:
        raise StoreError(f"cannot read shard {shard_file}: {exc}") from exc


def photo_field(members: tuple[ShardMember, ...]) -> ShardMember | None:
    """The photo member of a sample (``jpg``; ``png`` or ``photo.webp`` in shards packed before every photo
    became ``jpg``): the one no other part claims."""
    return next((m for m in members if m.field.startswith("photo.") or m.field not in _NOT_PHOTO), None)


def _extra_path(row: IndexRow, kind: str) -> str:
    try:
        extra = json.loads(row.extra_files or "[]")
    except ValueError as exc:
        raise StoreError(f"item {row.id}: extra_files is not JSON: {exc}") from exc
    for entry in extra if isinstance(extra, list) else []:
        if isinstance(entry, dict) and entry.get("kind") == kind and isinstance(entry.get("path"), str):
            return str(entry["path"])
    return ""


class ItemReader:
    """The photo / preview / SPZ / PLY bytes of an index row in either layout, through ``local_path``."""

    def __init__(self, local_path: LocalPath) -> None:
        self._local_path = local_path

    def _member(self, row: IndexRow, pick: Callable[[tuple[ShardMember, ...]], ShardMember | None],
                what: str) -> bytes:
        member = pick(row_members(row))
        if member is None:
            raise MissingPart(f"item {row.id}: no {what} member in its shard")
        return member_bytes(self._local_path(member.shard), member)

    def _file(self, row: IndexRow, repo_path: str, what: str) -> bytes:
        if not repo_path:
            raise MissingPart(f"item {row.id}: the row names no {what} file")
        try:
            return self._local_path(repo_path).read_bytes()
        except OSError as exc:
            raise StoreError(f"item {row.id}: cannot read {repo_path}: {exc}") from exc

    def photo(self, row: IndexRow) -> bytes:
        """The published photo, byte for byte."""
        if row.shard_path:
            return self._member(row, photo_field, "photo")
        return self._file(row, row.image_path, "photo")

    def preview(self, row: IndexRow) -> bytes:
        """The published preview image (WebP in the shards layout)."""
        if row.shard_path:
            return self._member(row, lambda ms: _by_field(ms, "webp"), "preview")
        return self._file(row, _extra_path(row, "preview"), "preview")

    def spz(self, row: IndexRow) -> bytes:
        """The published SPZ splat."""
        if row.shard_path:
            return self._member(row, lambda ms: _by_field(ms, "spz"), "spz")
        path = row.ply_path if row.ply_path.endswith(".spz") else _extra_path(row, "spz")
        return self._file(row, path, "spz")

    def ply(self, row: IndexRow) -> bytes:
        """The published full PLY (its own ply shard in the shards layout)."""
        if row.shard_path:
            return self._member(row, lambda ms: _by_field(ms, "ply"), "ply")
        path = row.ply_path if row.ply_path.endswith(".ply") else _extra_path(row, "ply")
        return self._file(row, path, "ply")

    def has(self, row: IndexRow, field_name: str) -> bool:
        """Whether the row names a member (shards) or file (files layout) of ``field_name``."""
        if row.shard_path:
            return _by_field(row_members(row), field_name) is not None
        if field_name == "spz" and row.ply_path.endswith(".spz"):
            return True
        if field_name == "ply" and row.ply_path.endswith(".ply"):
            return True
        return bool(_extra_path(row, "preview" if field_name == "webp" else field_name))


def _by_field(members: tuple[ShardMember, ...], field_name: str) -> ShardMember | None:
    return next((m for m in members if m.field == field_name), None)


def member_file(local_path: LocalPath, row: IndexRow, fields: tuple[str, ...], work_dir: Path) -> Path | None:
    """The first of ``fields`` the shards-layout ``row`` has, written (checked) to ``work_dir`` as
    ``<id>.<last part of the field>`` for a tool that takes a file (``share --missing``); None if none."""
    members = row_members(row)
    for name in fields:
        member = _by_field(members, name)
        if member is not None:
            work_dir.mkdir(parents=True, exist_ok=True)
            out = work_dir / f"{row.id}.{name.rsplit('.', 1)[-1]}"
            out.write_bytes(member_bytes(local_path(member.shard), member))
            return out
    return None
