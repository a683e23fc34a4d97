"""Build the gallery: a static site of the dataset (index grid, item pages, run report).

Layout of the site::

    index.html, index-2.html, ...   the grid (source photo and rendered preview side by side)
    items/<id>.html                 attribution, photo, preview, offline 3D viewer, metadata
    report.html                     plots: items/minute per client, stage timings, GPU memory
    media/<id>/photo.jpg            thumbnail of the source photo
    media/<id>/preview.jpg          the splat rendered on the CPU (``splat.preview.render_preview``)
    media/<id>/splat.ply            the item's PLY (hard-linked where possible), read by the viewer; in the
                                    sharded layout its PLY member, or one converted from its SPZ member
    assets/                         style.css, viewer.js and the bundled PlayCanvas engine
    gallery.json                    what was rendered from which file hashes (rebuilds reuse it)

Thumbnails and previews are rebuilt only when the row's file hashes change, so a rebuild
after a run costs time for the new items only. An item whose files cannot be read is left
out with a warning; the rest of the site is still built.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ...errors import PermanentError, StoreError
from ...fetch.image import to_rgb_array
from ...ledger.status import PublishEvent
from ...publish.parquet_index import row_members
from ...publish.shard_read import ItemReader
from ...records import IndexRow
from ...splat.filter import top_visible
from ...splat.gaussians import XYZ, Gaussians
from ...splat.ply import InvalidSplat, read_ply, write_ply
from ...splat.preview import render_preview, save_preview
from ...splat.spz import gaussians_from_spz
from . import pages, plots
from .runs import RunData, gpu_series, items_per_minute, stage_timings, throughput
from .viewer_assets import copy_viewer_assets

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MANIFEST = "gallery.json"
VIEWER_MAX_GAUSSIANS = 500_000


class FileAccess(Protocol):
    """Gives a local path for a store file (the local store's own file, or a downloaded copy)."""

    def local_path(self, repo_path: str) -> Path: ...


@dataclass(frozen=True)
class LocalFiles:
    """Files of a local store, read in place."""

    root: Path

    def local_path(self, repo_path: str) -> Path:
        return Path(self.root) / repo_path


@dataclass
class GalleryOptions:
    title: str = "SHARP Gaussian splats"
    per_page: int = 120
    thumb_long_side: int = 480
    preview_long_side: int = 480
    viewer: bool = True
    # Gaussians in a PLY converted from an SPZ member for the viewer: the most visible are kept, so a
    # page's splat stays under ~28 MB (56 bytes a Gaussian) and converts in about a second.
    viewer_max_gaussians: int = VIEWER_MAX_GAUSSIANS


@dataclass
class GalleryResult:
    out: Path
    items: int = 0
    pages: int = 0
    rendered: int = 0
    reused: int = 0
    viewer: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def text(self) -> str:
        line = (f"gallery: {_count(self.items, 'item')} on {_count(self.pages, 'page')} in {self.out} ({self.rendered} rendered, "
                f"{self.reused} reused); 3D viewer {'bundled' if self.viewer else 'NOT bundled'}")
        return line + "".join(f"\n  skipped {i}: {why}" for i, why in self.skipped)


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another filesystem, or links unsupported
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _thumbnail(src: Path | BinaryIO, dst: Path, long_side: int) -> None:
    with Image.open(src) as img:
        # Normalised as the fetch stage does: Pillow's convert("RGB") clips 16-bit samples to 255.
        img = Image.fromarray(to_rgb_array(ImageOps.exif_transpose(img)))
        img.thumbnail((long_side, long_side))
        img.save(dst, "JPEG", quality=85)


def _render(ply: Path, dst: Path, long_side: int) -> float:
    """Render the preview; returns the scene's median depth (where the viewer orbits)."""
    g = read_ply(ply)
    _render_gaussians(g, dst, long_side)
    return _median_depth(g)


def _render_gaussians(g: Gaussians, dst: Path, long_side: int) -> None:
    """A splat with fewer Gaussians than the preview has pixels would render as scattered dots, so it
    is rendered at about one Gaussian per pixel and scaled up."""
    side = max(16, min(long_side, int(math.sqrt(max(1, g.count)) * 0.9)))
    img = Image.fromarray(render_preview(g, side))
    if side < long_side:
        scale = long_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BILINEAR)
    save_preview(np.asarray(img), dst, quality=85)


def _median_depth(g: Gaussians) -> float:
    z = g.vertices[:, XYZ][:, 2]
    z = z[np.isfinite(z) & (z > 0)]
    return float(np.median(z)) if z.size else 2.0


def _published_preview(row: IndexRow) -> str:
    """Repo path of a preview the pipeline already published with the item, if any."""
    try:
        extra = json.loads(row.extra_files or "[]")
    except ValueError:
        return ""
    for entry in extra if isinstance(extra, list) else []:
        if isinstance(entry, dict) and entry.get("kind") == "preview" and isinstance(entry.get("path"), str):
            return entry["path"]
    return ""


def _splat_sha256(row: IndexRow) -> str:
    """What the item's splat is made from: the PLY's sha256, or in the sharded layout that of the member
    the viewer's PLY comes from (a redone item gets new media; shard rows record no ``ply_sha256``)."""
    if not row.shard_path:
        return row.ply_sha256
    try:
        by_field = {m.field: m.sha256 for m in row_members(row)}
    except StoreError:
        return ""
    return by_field.get("ply") or by_field.get("spz", "")


def _shard_splat(row: IndexRow, reader: ItemReader, dst: Path, opts: GalleryOptions) -> Gaussians:
    """The viewer's PLY of a shards-layout row, written to ``dst``: its PLY member as published, else
    its SPZ member converted in process (the pinned PlayCanvas reads PLY and SOG, not SPZ), keeping
    the ``opts.viewer_max_gaussians`` most visible Gaussians."""
    if reader.has(row, "ply"):
        _write_atomic(dst, reader.ply(row))
        return read_ply(dst)
    g = viewer_splat(reader.spz(row), row, opts.viewer_max_gaussians)
    write_ply(g, dst)
    return g


def viewer_splat(spz: bytes, row: IndexRow, max_gaussians: int) -> Gaussians:
    """An SPZ splat as the viewer's scene, with the row's camera: at most ``max_gaussians``, the most
    visible (``splat.filter.top_visible``, as for the small PLY that is shared)."""
    g = gaussians_from_spz(spz, focal_px=row.focal_px, width=row.width, height=row.height)
    return top_visible(g, max_gaussians) if g.count > max_gaussians else g


def _make_shard_media(row: IndexRow, files: FileAccess, media: Path, opts: GalleryOptions) -> dict:
    """Media of a shards-layout row: photo, WebP preview and the viewer's PLY read out of its tars
    (sha256 checked); without a preview member the preview is rendered from the splat. A row with
    neither a PLY nor an SPZ member is skipped (``MissingPart``)."""
    reader = ItemReader(files.local_path)
    g = _shard_splat(row, reader, media / "splat.ply", opts)  # first: a row without a splat writes nothing else
    _thumbnail(io.BytesIO(reader.photo(row)), media / "photo.jpg", opts.thumb_long_side)
    if reader.has(row, "webp"):
        _thumbnail(io.BytesIO(reader.preview(row)), media / "preview.jpg", opts.preview_long_side)
    else:
        _render_gaussians(g, media / "preview.jpg", opts.preview_long_side)
    return {"image_sha256": row.image_sha256, "ply_sha256": _splat_sha256(row), "depth": _median_depth(g)}


def _write_atomic(dst: Path, data: bytes) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dst)


def _make_media(row: IndexRow, files: FileAccess, media: Path, opts: GalleryOptions) -> dict:
    media.mkdir(parents=True, exist_ok=True)
    if row.shard_path:
        return _make_shard_media(row, files, media, opts)
    if not row.image_path or not row.ply_path:
        raise PermanentError(f"{row.id}: the row names no photo or no PLY", reason="incomplete_row")
    _thumbnail(files.local_path(row.image_path), media / "photo.jpg", opts.thumb_long_side)
    ply = files.local_path(row.ply_path)
    published = _published_preview(row)
    if published:  # rendered by the pipeline already: only scaled here
        _thumbnail(files.local_path(published), media / "preview.jpg", opts.preview_long_side)
        depth = _median_depth(read_ply(ply))
    else:
        depth = _render(ply, media / "preview.jpg", opts.preview_long_side)
    _link_or_copy(ply, media / "splat.ply")
    return {"image_sha256": row.image_sha256, "ply_sha256": row.ply_sha256, "depth": depth}


def _fresh(entry: dict | None, row: IndexRow, media: Path) -> bool:
    return (entry is not None and entry.get("image_sha256") == row.image_sha256
            and entry.get("ply_sha256") == _splat_sha256(row)
            and all((media / n).is_file() for n in ("photo.jpg", "preview.jpg", "splat.ply")))


def _load_manifest(out: Path) -> dict[str, dict]:
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return data.get("items", {}) if isinstance(data, dict) else {}


def _items(rows: Iterable[IndexRow], files: FileAccess, out: Path, opts: GalleryOptions,
           result: GalleryResult) -> tuple[list[pages.GalleryItem], dict[str, dict]]:
    old = _load_manifest(out)
    manifest: dict[str, dict] = {}
    items = []
    for row in rows:
        media = out / "media" / row.id
        entry = old.get(row.id)
        if _fresh(entry, row, media):
            result.reused += 1
        else:
            try:
                entry = _make_media(row, files, media, opts)
            except (OSError, UnidentifiedImageError, InvalidSplat, PermanentError, StoreError, ValueError) as exc:
                log.warning("gallery: skipping %s: %s", row.id, exc)
                result.skipped.append((row.id, str(exc)[:200]))
                continue
            result.rendered += 1
        assert entry is not None
        manifest[row.id] = entry
        rel = f"media/{row.id}"
        items.append(pages.GalleryItem(row=row, photo=f"{rel}/photo.jpg", preview=f"{rel}/preview.jpg",
                                       splat=f"{rel}/splat.ply", depth=float(entry.get("depth", 2.0))))
    return items, manifest


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _report(runs: list[RunData], events: list[PublishEvent], title: str) -> str:
    rate = items_per_minute(events)
    gpu, dashed = gpu_series(runs)
    sections = [
        ("Items per minute, per client",
         plots.line_chart(rate, name="items-per-minute", title="Items published per minute", x_label="time (UTC)",
                          y_label="items / minute"),
         "From the dataset's ledger: every publish step of every client."),
        ("Stage timings",
         plots.bar_chart(stage_timings(runs), name="stage-timings", title="Busy time per item, by stage",
                         y_label="ms per item", empty_text="no run metrics found"),
         "From each run's metrics.jsonl: seconds a stage was busy divided by the items it finished."),
        ("Published over time, per run",
         plots.line_chart(throughput(runs), name="published-per-run", title="Items published so far",
                          x_label="time (UTC)", y_label="items", empty_text="no progress records found"),
         "From each run's progress records."),
        ("GPU memory",
         plots.line_chart(gpu, name="gpu-memory", title="GPU memory used", x_label="time (UTC)", y_label="MiB",
                          dashed=dashed, empty_text="no gpu_mem_log.csv found (set LOG_GPU_MEM=1)"),
         "From each run's gpu_mem_log.csv; dashed lines are each GPU's total memory."),
    ]
    total = sum(e.items for e in events)
    facts = [f"{_count(total, 'item')} published in {_count(len(events), 'publish step')} by "
             f"{_count(len({e.client for e in events}), 'client')}",
             f"{_count(len(runs), 'run')} with metrics or GPU logs"]
    return pages.report_page(title=title, sections=sections, facts=facts)


def _prune(out: Path, keep: set[str], page_count: int) -> None:
    """Drop pages and media of items no longer in the dataset (removed ones) and surplus index pages."""
    for page in (out / "items").glob("*.html"):
        if page.stem not in keep:
            page.unlink()
    media = out / "media"
    if media.is_dir():
        for folder in media.iterdir():
            if folder.is_dir() and folder.name not in keep:
                shutil.rmtree(folder)
    for page in out.glob("index-*.html"):
        number = page.stem.split("-", 1)[1]
        if not number.isdigit() or int(number) > page_count:
            page.unlink()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_gallery(rows: Iterable[IndexRow], files: FileAccess, out: Path, *, runs: list[RunData],
                  events: list[PublishEvent], options: GalleryOptions | None = None,
                  find_viewer: Callable[[], Path | None] | None = None) -> GalleryResult:
    """Build (or update) the site in ``out`` from the dataset's rows; returns what was done.

    ``find_viewer`` locates the viewer's npm package (default: the pinned one, see
    ``viewer_assets``); without it item pages say that the 3D viewer is missing.
    """
    opts = options or GalleryOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = GalleryResult(out=out)
    assets = out / pages.ASSETS
    assets.mkdir(exist_ok=True)
    for name in ("style.css", "viewer.js"):
        shutil.copyfile(STATIC_DIR / name, assets / name)
    result.viewer = opts.viewer and copy_viewer_assets(assets, find_viewer)
    items, manifest = _items(rows, files, out, opts, result)
    result.items = len(items)
    per_page = max(1, opts.per_page)
    result.pages = max(1, -(-len(items) // per_page))
    for page in range(1, result.pages + 1):
        chunk = items[(page - 1) * per_page: page * per_page]
        _write(out / pages.index_name(page), pages.index_page(chunk, title=opts.title, page=page,
                                                                pages=result.pages, total=len(items)))
    for it in items:
        _write(out / pages.item_href(it.row.id), pages.item_page(it, title=opts.title, viewer=result.viewer))
    _write(out / "report.html", _report(runs, events, opts.title))
    _prune(out, {it.row.id for it in items}, result.pages)
    _write(out / MANIFEST, json.dumps({"items": manifest}, indent=1, sort_keys=True))
    return result
