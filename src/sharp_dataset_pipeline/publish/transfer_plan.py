"""Bounded, resumable steps for ``migrate --to shards`` and ``push``: which rows each step carries. Pure.

Both commands move a dataset in steps that each land whole (one store step, one Hub commit), so a
kill between steps loses nothing and a rerun plans again from what has landed:

- **migrate**: rows still in the files layout (no ``shard_path``), in id order, cut into steps of at
  most ``max_items`` items and about ``max_bytes`` of their files (a bigger item goes alone). Rows
  already in shards are done: a resumed migration skips them.
- **push**: a local store's shards go to the target as they are, so the rows that share a shard (or
  a PLY shard) travel together: each step carries whole groups, at most ``max_files`` shard files
  and about ``max_bytes``. A group whose ids are all published at the target is done; ids of a group
  that the target already has (published there by a run) are left out of its rows, so no id is
  published twice (their members stay unreferenced in the pushed shard).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..records import IndexRow
from .index import row_file_refs
from .parquet_index import row_members

DEFAULT_STEP_ITEMS = 256
DEFAULT_STEP_BYTES = 4_000_000_000
DEFAULT_STEP_FILES = 40  # shard files per push commit, well under the Hub's ~100 operations per commit


def in_files_layout(row: IndexRow) -> bool:
    """A row whose bytes are per-item files (not yet migrated)."""
    return not row.shard_path


def row_bytes(row: IndexRow) -> int:
    """What a row's files weigh, as recorded (unknown sizes count 0)."""
    if row.members:
        return sum(m.size for m in row_members(row))
    return sum(max(ref.size, 0) for ref in row_file_refs(row))


def _cut(rows: Sequence[IndexRow], max_items: int, max_bytes: int) -> list[list[IndexRow]]:
    steps: list[list[IndexRow]] = []
    step: list[IndexRow] = []
    weight = 0
    for row in rows:
        size = row_bytes(row)
        if step and (len(step) >= max_items or weight + size > max_bytes):
            steps.append(step)
            step, weight = [], 0
        step.append(row)
        weight += size
    if step:
        steps.append(step)
    return steps


def migration_steps(rows: Iterable[IndexRow], *, max_items: int = DEFAULT_STEP_ITEMS,
                    max_bytes: int = DEFAULT_STEP_BYTES) -> list[list[IndexRow]]:
    """The rows still to migrate, in id order, cut into bounded steps."""
    if max_items < 1 or max_bytes < 1:
        raise ValueError("a step holds at least one item and one byte")
    todo = sorted((r for r in rows if in_files_layout(r)), key=lambda r: r.id)
    return _cut(todo, max_items, max_bytes)


@dataclass(frozen=True, slots=True)
class RowRef:
    """What planning a push needs of one row, and no more: its id, its unit, the shard files that hold
    its members (sorted; empty for a row in the files layout) and what they weigh. A push plans from
    these (a few hundred bytes each, the full rows are kilobytes) and reads each step's full rows only
    when that step is committed, so a million-row store plans in bounded memory."""

    id: str
    unit: str
    shards: tuple[str, ...]
    size: int


def row_ref(row: IndexRow, shared: dict[tuple[str, ...], tuple[str, ...]] | None = None) -> RowRef:
    """``row`` as a ``RowRef``. ``shared`` (one dict for a whole read) makes equal shard tuples one
    object, and units are interned, since many rows share them."""
    shards = tuple(sorted(_shards_of(row))) if row.shard_path else ()
    if shared is not None:
        shards = shared.setdefault(shards, shards)
    return RowRef(row.id, sys.intern(row.unit), shards, row_bytes(row))


@dataclass(frozen=True)
class PushStep:
    """One push step: shard files to upload as they are, and the rows (as refs) that point into them."""

    shards: tuple[str, ...]
    rows: tuple[RowRef, ...]

    @property
    def item_ids(self) -> list[str]:
        return [r.id for r in self.rows]


def _shards_of(row: IndexRow) -> set[str]:
    return {p for p in (row.shard_path, row.ply_shard_path) if p} | {m.shard for m in row_members(row)}


def shard_groups(refs: Iterable[RowRef]) -> list[tuple[tuple[str, ...], list[RowRef]]]:
    """Rows joined by the shards they share (a row in a splats shard and a PLY shard joins both):
    ``(shard paths, rows)`` per group, ordered by their first shard path. Rows in no shard are left out."""
    parent: dict[str, str] = {}

    def find(p: str) -> str:
        while parent.setdefault(p, p) != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    listed = [r for r in refs if r.shards]
    for ref in listed:
        first, *rest = ref.shards
        for other in rest:
            parent[find(other)] = find(first)
    groups: dict[str, tuple[set[str], list[RowRef]]] = {}
    for ref in listed:
        paths, members = groups.setdefault(find(ref.shards[0]), (set(), []))
        paths.update(ref.shards)
        members.append(ref)
    out = [(tuple(sorted(paths)), sorted(members, key=lambda r: r.id)) for paths, members in groups.values()]
    return sorted(out, key=lambda g: g[0])


def push_steps(refs: Iterable[RowRef], published_at_target: set[str], *, max_files: int = DEFAULT_STEP_FILES,
               max_bytes: int = DEFAULT_STEP_BYTES) -> list[PushStep]:
    """The source's shard groups not yet at the target, in bounded steps of whole groups."""
    if max_files < 1 or max_bytes < 1:
        raise ValueError("a step holds at least one shard file and one byte")
    steps: list[PushStep] = []
    shards: list[str] = []
    step_rows: list[RowRef] = []
    weight = 0
    for paths, members in shard_groups(refs):
        todo = [r for r in members if r.id not in published_at_target]
        if not todo:
            continue
        size = sum(r.size for r in members)
        if shards and (len(shards) + len(paths) > max_files or weight + size > max_bytes):
            steps.append(PushStep(tuple(shards), tuple(step_rows)))
            shards, step_rows, weight = [], [], 0
        shards += paths
        step_rows += todo
        weight += size
    if shards:
        steps.append(PushStep(tuple(shards), tuple(step_rows)))
    return steps
