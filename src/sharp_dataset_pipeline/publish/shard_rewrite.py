"""A shard rewritten without some samples (a takedown inside a shard), and the index edits that follow.

The kept samples are written again by ``tar_shard.write_shard`` (same deterministic writer, so the new
tar is exactly what packing the kept items alone would have made); their members move, so the rows
that point into the shard get new ``members`` (JSONL rows through ``index_edit.update_lines``, Parquet
entries through ``rewrite_entries``). A shard with nothing left is deleted, not rewritten. Pure apart
from reading the old shard and writing the new one to the caller's path; the caller makes the rewritten
tar, the edited rows and the edited Parquet files one atomic step. ``plan_takedown`` does it for every
shard a takedown touches, ``rewrite_index`` for one Parquet index file (both stores use them).
"""

from __future__ import annotations

import dataclasses
import shutil
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import StoreError
from ..records import IndexRow
from .parquet_index import (
    IndexEntry,
    ShardMember,
    members_json,
    read_index,
    row_members,
    shard_members,
    write_index,
)
from .tar_shard import MESH_FIELDS, MemberMismatch, ShardItem, ShardResult, write_shard


@dataclass(frozen=True)
class RewrittenShard:
    """The outcome for one shard: ``result`` is None when no sample is left (delete the shard);
    ``members[key]`` are the kept samples' new members (with the shard path); ``dropped`` the keys
    that were in the shard and are gone."""

    shard_path: str
    result: ShardResult | None
    members: dict[str, tuple[ShardMember, ...]] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.result is None


def _extract(shard_file: Path, drop: set[str], work_dir: Path) -> tuple[dict[str, dict[str, bytes | Path]], list[str]]:
    """The kept samples' members as local files under ``work_dir`` (a shard may be far bigger than memory)."""
    kept: dict[str, dict[str, bytes | Path]] = {}
    dropped: list[str] = []
    try:
        with tarfile.open(shard_file, mode="r:") as tar:
            for n, info in enumerate(tar):
                if not info.isreg():
                    continue
                key, dot, field_name = info.name.partition(".")
                if not dot or "/" in info.name:
                    raise MemberMismatch(f"{shard_file.name}: member {info.name!r} is not named <key>.<field>")
                if key in drop:
                    if key not in dropped:
                        dropped.append(key)
                    continue
                handle = tar.extractfile(info)
                assert handle is not None  # regular members always have a file object
                dst = work_dir / f"{n:06d}"
                with dst.open("wb") as out:
                    while chunk := handle.read(1 << 20):
                        out.write(chunk)
                kept.setdefault(key, {})[field_name] = dst
    except (tarfile.TarError, EOFError) as exc:
        raise MemberMismatch(f"{shard_file.name}: not a readable tar: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"cannot read shard {shard_file}: {exc}") from exc
    return kept, dropped


def rewrite_shard(shard_file: Path, shard_path: str, drop_keys: Iterable[str], out_file: Path,
                  work_dir: Path) -> RewrittenShard:
    """Write ``shard_file`` (the local copy of ``shard_path``) to ``out_file`` without the samples of
    ``drop_keys``. Nothing is written when no sample is left (``result`` None: delete the shard).

    ``work_dir`` holds the kept members while the new tar is written (the caller removes it). Raises
    ``MemberMismatch`` for a shard that is not a readable tar of ``<key>.<field>`` members.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    kept, dropped = _extract(shard_file, set(drop_keys), work_dir)
    if not kept:
        return RewrittenShard(shard_path, None, {}, tuple(dropped))
    items = [ShardItem(key, members) for key, members in kept.items()]
    allow_mesh = any(f.rsplit(".", 1)[-1] in MESH_FIELDS for f in next(iter(kept.values())))
    with out_file.open("wb") as out:
        result = write_shard(items, out, allow_mesh=allow_mesh)
    members = {key: shard_members(shard_path, (r for r in result.members if r.key == key)) for key in kept}
    return RewrittenShard(shard_path, result, members, tuple(dropped))


def _merged(old: Sequence[ShardMember], rewritten: RewrittenShard, key: str) -> tuple[ShardMember, ...]:
    others = [m for m in old if m.shard != rewritten.shard_path]
    return tuple(others) + rewritten.members.get(key, ())


def row_updates(rows: Iterable[IndexRow], rewritten: RewrittenShard) -> dict[str, dict[str, str]]:
    """``id → {"members": …}`` for the kept rows with a member in the rewritten shard (for
    ``index_edit.update_lines``); a row's members in its other shard (the ply one) are kept as they are."""
    updates: dict[str, dict[str, str]] = {}
    for row in rows:
        old = row_members(row)
        if row.shard_key in rewritten.members and any(m.shard == rewritten.shard_path for m in old):
            updates[row.id] = {"members": members_json(_merged(old, rewritten, row.shard_key))}
    return updates


def rewrite_entries(entries: Iterable[IndexEntry], drop_ids: set[str],
                    rewritten: Sequence[RewrittenShard]) -> list[IndexEntry]:
    """Parquet index entries without the rows of ``drop_ids`` and with the kept rows' members moved to
    where the rewritten shards put them (the row's ``members`` JSON too, so both stay one record)."""
    out: list[IndexEntry] = []
    for entry in entries:
        if entry.row.id in drop_ids:
            continue
        members = entry.members
        for shard in rewritten:
            if entry.key in shard.members and any(m.shard == shard.shard_path for m in members):
                members = _merged(members, shard, entry.key or "")
        if members != entry.members:
            row = dataclasses.replace(entry.row, members=members_json(members))
            ordered = tuple(sorted(members, key=lambda m: (m.field, m.shard)))
            entry = dataclasses.replace(entry, row=row, members=ordered)
        out.append(entry)
    return out


def takedown_drops(removed: Iterable[IndexRow]) -> dict[str, set[str]]:
    """Shard path -> the sample keys a takedown of ``removed`` drops from it (splat and PLY shards)."""
    drops: dict[str, set[str]] = {}
    for row in removed:
        for shard in (row.shard_path, row.ply_shard_path):
            if shard and row.shard_key:
                drops.setdefault(shard, set()).add(row.shard_key)
    return drops


def emptied_shards(drops: dict[str, set[str]], shard_rows: Iterable[IndexRow]) -> list[str]:
    """The shards of ``drops`` no other row keeps a sample in (a takedown deletes them), from the rows
    (for a preview: no shard is read)."""
    kept: set[str] = set()
    for row in shard_rows:
        for shard in (row.shard_path, row.ply_shard_path):
            if shard in drops and row.shard_key not in drops[shard]:
                kept.add(shard)
    return sorted(s for s in drops if s not in kept)


@dataclass
class Takedown:
    """A takedown's new shards: ``files[shard path]`` the rewritten tar (local), ``deleted`` the shards
    with nothing left, ``updates[id]`` the kept rows' new ``members`` (for ``index_edit.update_lines``)."""

    rewritten: list[RewrittenShard]
    files: dict[str, Path]
    deleted: list[str]
    updates: dict[str, dict[str, str]]

    @property
    def shards(self) -> list[str]:
        return sorted([*self.files, *self.deleted])


def kept_updates(rows: Iterable[IndexRow], rewritten: Sequence[RewrittenShard]) -> dict[str, dict[str, str]]:
    """``row_updates`` over every rewritten shard, composed (a row's splat and PLY shards may both move)."""
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        for shard in rewritten:
            update = row_updates([row], shard).get(row.id)
            if update:
                row = dataclasses.replace(row, members=update["members"])
                out[row.id] = update
    return out


def plan_takedown(removed: Sequence[IndexRow], shard_rows: Iterable[IndexRow], local_copy: Callable[[str], Path],
                  work_dir: Path) -> Takedown:
    """Rewrite every shard holding a sample of ``removed`` (``local_copy(path)`` gives its bytes on disk)
    into ``work_dir``; ``shard_rows`` are the rows naming those shards (removed ones may be among them)."""
    gone = {r.id for r in removed}
    drops = takedown_drops(removed)
    rewritten: list[RewrittenShard] = []
    files: dict[str, Path] = {}
    work_dir.mkdir(parents=True, exist_ok=True)
    for n, shard in enumerate(sorted(drops)):
        out, scratch = work_dir / f"shard-{n:04d}.tar", work_dir / f"members-{n:04d}"
        try:
            done = rewrite_shard(local_copy(shard), shard, drops[shard], out, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        rewritten.append(done)
        if not done.empty:
            files[shard] = out
    kept = [r for r in shard_rows if r.id not in gone]
    deleted = sorted(r.shard_path for r in rewritten if r.empty)
    return Takedown(rewritten, files, deleted, kept_updates(kept, rewritten))


def rewrite_index(src: BinaryIO, drop_ids: set[str], takedown: Takedown, out: Callable[[], BinaryIO]) -> int | None:
    """One Parquet index file after a takedown: None when it holds no row the takedown touches (nothing
    written), else the rows left, written to ``out()`` unless none is (the caller deletes the file)."""
    entries = read_index(src)
    touched = drop_ids | set(takedown.updates)
    if not any(e.row.id in touched for e in entries):
        return None
    kept = rewrite_entries(entries, drop_ids, takedown.rewritten)
    if kept:
        with out() as fh:
            write_index(kept, fh)
    return len(kept)
