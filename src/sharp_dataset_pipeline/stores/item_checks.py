"""Per-item checks of a publish step (invariant 8: a problem with one item fails that item alone).

Both stores run these before they place anything: a repeated id, an unsafe id or path, two items
writing one path, or a file that is missing or no longer has the size and SHA-256 its row records
(changed after validation) each become one ``Failure`` for that item, and the rest of the batch is
published. Units of an item that failed this way are not marked done in the same step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from ..errors import PermanentError, StoreError
from ..publish import layout
from ..publish.index import row_files, row_from_json
from ..records import Batch, Failure, ProcessedItem, PublishedFile

STAGE = "publish"
_CHUNK = 1 << 20


def publish_failure(pi: ProcessedItem, reason: str, detail: str, transient: bool) -> Failure:
    """The failure of one item found at publish time."""
    return Failure(item_id=pi.row.id, unit=pi.row.unit, stage=STAGE, reason=reason,
                   detail=detail, transient=transient, source=pi.row.source_path or pi.row.source_url)


def screen_items(items: Iterable[ProcessedItem]) -> tuple[list[ProcessedItem], list[Failure]]:
    """Items that may be published together, and a failure for each one that may not.

    The first item of an id wins; a later one with the same id fails (``duplicate_id``), as does an
    item with an unsafe id or repo path, or one whose file would overwrite another item's file.
    """
    seen: set[str] = set()
    paths: dict[str, str] = {}
    ok: list[ProcessedItem] = []
    failed: list[Failure] = []
    for pi in items:
        try:
            layout.check_item_id(pi.row.id)
            mine = [layout.check_repo_path(pf.repo_path) for pf in pi.files]
        except (PermanentError, StoreError) as exc:
            failed.append(publish_failure(pi, "bad_path", str(exc), transient=False))
            continue
        if pi.row.id in seen:
            failed.append(publish_failure(pi, "duplicate_id",
                                          f"item {pi.row.id} appears twice in one publish step; the first "
                                          "one was published", transient=False))
            continue
        clash = next((p for p in mine if p in paths or mine.count(p) > 1), None)
        if clash is not None:
            failed.append(publish_failure(pi, "path_conflict",
                                          f"{clash} is also written by item {paths.get(clash, pi.row.id)}",
                                          transient=False))
            continue
        seen.add(pi.row.id)
        paths.update((p, pi.row.id) for p in mine)
        ok.append(pi)
    return ok, failed


def file_problem(pf: PublishedFile, path: Path | None = None) -> str:
    """Why the file (``path``, default its local copy) cannot be published as recorded; "" if it can."""
    path = path or pf.local_path
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return f"{pf.local_path} is missing"
    except IsADirectoryError:
        return f"{pf.local_path} is not a file"
    if size != pf.size:
        return f"{pf.local_path} has {size} bytes, not {pf.size} (changed after validation)"
    if pf.sha256 and digest.hexdigest() != pf.sha256:
        return f"{pf.local_path} no longer has SHA-256 {pf.sha256[:12]}… (changed after validation)"
    return ""


def check_files(pi: ProcessedItem) -> Failure | None:
    """A failure when one of the item's files is missing or changed, else None."""
    for pf in pi.files:
        problem = file_problem(pf)
        if problem:
            return publish_failure(pi, "file_changed", f"item {pi.row.id}: {problem}", transient=True)
    return None


def units_held_back(units_done: Iterable[str], failures: Iterable[Failure]) -> tuple[list[str], list[str]]:
    """(units still marked done, units held back because one of their items failed and may be retried)."""
    blocked = {f.unit for f in failures if f.transient}
    done = list(dict.fromkeys(units_done))
    return [u for u in done if u not in blocked], [u for u in done if u in blocked]


def beside_published(pi: ProcessedItem, old_line: str) -> ProcessedItem:
    """``pi`` with each file whose path its published row (``old_line``) names with other bytes moved
    to a content-tagged name (``layout.versioned_path``): a ``--redo`` never overwrites a file that a
    committed row still names."""
    old = row_from_json(old_line)
    recorded = {old.image_path: old.image_sha256, old.ply_path: old.ply_sha256}
    try:
        extra = json.loads(old.extra_files or "[]")
    except ValueError:
        extra = []
    for entry in extra if isinstance(extra, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            recorded[entry["path"]] = str(entry.get("sha256") or "")
    named = set(row_files(old))
    moved = {f.repo_path: layout.versioned_path(f.repo_path, pi.row.id, f.sha256) for f in pi.files
             if f.repo_path in named and recorded.get(f.repo_path) != f.sha256}
    return layout.with_paths(pi, moved)


def screen_batch(batch: Batch) -> tuple[Batch, list[Failure], list[str]]:
    """The batch without items that fail alone (invariant 8: repeated id, unsafe path, a file
    missing or changed since validation), their failures riding in the same commit; units of
    items that may be retried are renewed instead of marked done."""
    items, failed = screen_items(batch.items)
    ok = []
    for pi in items:
        problem = check_files(pi)
        if problem is None:
            ok.append(pi)
        else:
            failed.append(problem)
    if not failed:
        return batch, [], []
    done, held = units_held_back(batch.units_done, failed)
    return (dataclasses.replace(batch, items=ok, failures=[*batch.failures, *failed], units_done=done,
                                renew_units=[*batch.renew_units, *held]), failed, held)
