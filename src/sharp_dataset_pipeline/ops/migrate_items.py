"""``migrate --to shards``, per item: a files-layout row and its published files → a ``ProcessedItem``
that ``publish/shard_pack.pack_batch`` packs into the sharded layout.

The photo goes in byte for byte. The SPZ is made in process from the item's PLY (an existing SPZ is
used only when the dataset kept no PLY), the preview is the published one when it is WebP (the
sharded layout's previews always are) and is rendered from the PLY otherwise, and the camera
(``<key>.json``) is read from the PLY's extra elements. The PLY itself, and every other format the
item had, go along (the PLY into the ``ply`` shards), so a migration loses nothing unless asked to
(``keep_ply=False``). Sizes and hashes of what the old row recorded are checked on the way in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import PermanentError
from ..pipeline.stages import camera_metadata
from ..records import IndexRow, ProcessedItem, PublishedFile
from ..splat.formats import FormatOptions, make_extra_files
from ..splat.gaussians import Gaussians
from ..splat.ply import InvalidSplat, read_ply

# repo path → a local file with its bytes (``StoreAdmin.local_path``)
Fetch = Callable[[str], Path]


@dataclass(frozen=True)
class OldFile:
    """A file a files-layout row names, with what the row recorded of it (-1 / "" when unknown)."""

    kind: str
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class MigrateOptions:
    keep_ply: bool = True  # the PLY goes into the ply shards (else only its SPZ stays)
    preview_long_side: int = 512
    spz_version: int = 4


def old_files(row: IndexRow) -> list[OldFile]:
    """Every file a files-layout row names: photo, PLY, then its ``extra_files`` (kind from the entry)."""
    files = [OldFile(kind, p, s, h) for kind, p, s, h in (
        ("image", row.image_path, row.image_size, row.image_sha256),
        ("ply", row.ply_path, row.ply_size, row.ply_sha256)) if p]
    try:
        extra = json.loads(row.extra_files or "[]")
    except ValueError as exc:
        raise PermanentError(f"item {row.id}: extra_files is not JSON", reason="bad_row") from exc
    for entry in extra if isinstance(extra, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("kind"), str):
            size = entry.get("size")
            files.append(OldFile(entry["kind"], entry["path"], size if isinstance(size, int) and size > 0 else -1,
                                 str(entry.get("sha256") or "")))
    return files


def _hash(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return path.stat().st_size, h.hexdigest()


def _suffix(item_id: str, repo_path: str) -> str:
    name = posixpath.basename(repo_path)
    return name[len(item_id) + 1:] if name.startswith(item_id + ".") else name.rsplit(".", 1)[-1]


def _take(old: OldFile, item_id: str, fetch: Fetch) -> PublishedFile:
    """One old file where ``fetch`` has it, named ``<id>.<ext>`` as post-processing names its files,
    checked against the row (a file that does not match is not migrated: nothing is lost by it)."""
    src = fetch(old.path)
    size, sha = _hash(src)
    if (old.size > 0 and size != old.size) or (old.sha256 and sha != old.sha256):
        raise PermanentError(f"item {item_id}: {old.path} is not the file its row recorded "
                             f"({size} B, sha256 {sha[:12]}…)", reason="migrate_mismatch")
    return PublishedFile(old.kind, f"{item_id}.{_suffix(item_id, old.path)}", src, size, sha)


def _gaussians(ply: Path, item_id: str) -> Gaussians:
    try:
        # Some converters drop SHARP's extra elements; such an item is migrated without a camera.
        return read_ply(ply, allow_missing_metadata=True)
    except InvalidSplat as exc:
        raise PermanentError(f"item {item_id}: its PLY is not a SHARP splat: {exc}", reason="migrate_bad_ply") from exc


def _made(g: Gaussians, ply: Path, item_id: str, work: Path, formats: tuple[str, ...],
          opts: MigrateOptions) -> list[PublishedFile]:
    fopts = FormatOptions(formats=formats, preview_long_side=opts.preview_long_side, preview_ext="webp",
                          spz_version=opts.spz_version)
    return [PublishedFile(e.kind, f"{item_id}.{e.ext}", e.local_path, e.size, e.sha256)
            for e in make_extra_files(g, ply, item_id, work, fopts)]


def stage_item(row: IndexRow, fetch: Fetch, work_dir: Path, opts: MigrateOptions = MigrateOptions()) -> ProcessedItem:
    """The item of ``row`` ready for ``pack_batch``: its old files read where ``fetch`` puts them,
    the files made here (SPZ, preview) under ``work_dir/<digest of the id>``.

    Raises ``PermanentError`` for an item that cannot be migrated (no photo, no PLY and no SPZ, a
    file that does not match its row, a PLY that is not a SHARP splat): that item stays as it is.
    """
    work = work_dir / hashlib.sha256(row.id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    olds = old_files(row)
    if not any(old.kind == "image" for old in olds):
        raise PermanentError(f"item {row.id}: its row names no photo", reason="no_photo")
    taken = [_take(old, row.id, fetch) for old in olds
             if not (old.kind == "preview" and not old.path.endswith(".webp"))]
    ply = next((f for f in taken if f.kind == "ply"), None)
    camera = None
    new_row = dataclasses.replace(row)
    if ply is not None:
        g = _gaussians(ply.local_path, row.id)
        wanted = ("spz",) if any(t.kind == "preview" for t in taken) else ("spz", "preview")
        taken = [t for t in taken if t.kind != "spz"] + _made(g, ply.local_path, row.id, work, wanted, opts)
        camera = camera_metadata(g) if g.width and g.height else None
        new_row.num_gaussians = g.count
        if not (new_row.width and new_row.height):
            new_row.width, new_row.height = int(g.width), int(g.height)
        new_row.focal_px = new_row.focal_px or float(g.focal_px)
        if not opts.keep_ply:
            taken = [t for t in taken if t.kind != "ply"]
    elif not any(t.kind == "spz" for t in taken):
        raise PermanentError(f"item {row.id}: neither a PLY nor an SPZ to migrate", reason="migrate_no_splat")
    return ProcessedItem(row=new_row, files=taken, camera=camera)
