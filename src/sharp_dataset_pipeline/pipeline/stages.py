"""Stage functions: one item in, one result out. No threads, no global state.

They run unchanged inside the thread pools of ``runner.py`` and inside the Ray workers of
``ray_executor.py``, so they do no network I/O: sharing on gsplat.org is its own stage after
publish (``share_stage.py``); post-processing only prepares the file it shares.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PermanentError, RateLimited, TransientError
from ..predict.base import RawSplat
from ..publish.layout import item_path
from ..records import Failure, FetchedImage, IndexRow, Item, ProcessedItem, PublishedFile
from ..redact import strip_url
from ..splat.formats import ExtraFile, FormatOptions, extra_files_json, make_extra_files
from ..splat.gaussians import Gaussians
from ..splat.ply import validate_ply, write_ply


@dataclass(frozen=True)
class ShareFileOptions:
    """The file post-processing prepares for the share stage (GSPLAT_UPLOAD=1): with
    ``use_small_ply`` the ``keep`` most visible Gaussians, else the SHARP PLY."""

    use_small_ply: bool
    keep: int


@dataclass(frozen=True)
class PostprocessOptions:
    gaussians_dir: Path
    subdir: str
    fanout: bool
    predictor: str
    model_version: str
    client_id: str
    formats: FormatOptions = FormatOptions(formats=("ply", "preview"))
    share: ShareFileOptions | None = None


def utc_now_iso(clock: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock if clock is not None else time.time()))


def _row_from_item(item: Item) -> IndexRow:
    row = IndexRow(id=item.id, source=item.source, unit=item.unit, source_url=item.url)
    names = set(IndexRow.field_names())
    for key, value in item.meta.items():
        if key in names and value is not None:
            current = getattr(row, key)
            setattr(row, key, type(current)(value))
    return row


def postprocess_item(fetched: FetchedImage, raw: RawSplat, opts: PostprocessOptions) -> ProcessedItem:
    """Raw prediction → SHARP-layout PLY on disk (validated) → other formats, preview, the file to
    share → index row + the files to publish (every one checked before it is published)."""
    gaussians = raw.to_gaussians()
    item = fetched.item
    ply_local = opts.gaussians_dir / f"{item.id}.ply"
    ply_size, ply_sha = write_ply(gaussians, ply_local)
    validate_ply(ply_local)
    extras = make_extra_files(gaussians, ply_local, item.id, opts.gaussians_dir, opts.formats)
    image_repo = item_path(opts.subdir, item.id, fetched.ext, fanout=opts.fanout)
    row = _row_from_item(item)
    row.image_path, row.image_size, row.image_sha256 = image_repo, fetched.size, fetched.sha256
    files = [PublishedFile("image", image_repo, fetched.original_path, fetched.size, fetched.sha256)]
    if "ply" in opts.formats.formats:
        ply_repo = item_path(opts.subdir, item.id, "ply", fanout=opts.fanout)
        row.ply_path, row.ply_size, row.ply_sha256 = ply_repo, ply_size, ply_sha
        files.append(PublishedFile("ply", ply_repo, ply_local, ply_size, ply_sha))
    entries = []
    for extra in extras:
        repo = item_path(opts.subdir, item.id, extra.ext, fanout=opts.fanout)
        files.append(PublishedFile(extra.kind, repo, extra.local_path, extra.size, extra.sha256))
        entries.append((extra, repo))
    row.extra_files = extra_files_json(entries)
    share_file = _share_file(item.id, gaussians, ply_local, extras, opts) if opts.share is not None else None
    row.width, row.height = fetched.width, fetched.height
    row.focal_px, row.focal_source = float(fetched.focal_px), fetched.focal_source
    if gaussians.focal_px > 0 and abs(gaussians.focal_px - fetched.focal_px) > 1e-3 * fetched.focal_px:
        # The predictor chose its own focal length (the sharp command reads EXIF itself): record
        # the one the splat was made with.
        row.focal_px, row.focal_source = float(gaussians.focal_px), "predictor"
    row.num_gaussians = gaussians.count
    row.predictor, row.model_version = opts.predictor, opts.model_version
    row.processed_at = utc_now_iso()
    row.client_id = opts.client_id
    payload = str(item.meta.get("download_location", ""))
    scratch = [] if "ply" in opts.formats.formats or share_file == ply_local else [ply_local]
    return ProcessedItem(row=row, files=files, followup_payload=payload, share_file=share_file,
                         camera=camera_metadata(gaussians), scratch=scratch)


def camera_metadata(g: Gaussians) -> dict[str, Any]:
    """SHARP's camera and scene metadata as JSON values: what the PLY's extra elements hold and the
    splat formats (SPZ) cannot carry, published as the sharded layout's ``<key>.json``."""
    return {
        "intrinsics": [[float(v) for v in r] for r in g.intrinsic.reshape(3, 3)],
        "extrinsics": [[float(v) for v in r] for r in g.extrinsic.reshape(4, 4)],
        "image_size": [int(g.width), int(g.height)],
        "focal_px": float(g.focal_px),
        "disparity": [float(v) for v in g.disparity] if g.disparity is not None else None,
        "color_space": int(g.color_space),
        "version": [int(v) for v in g.version],
    }


def _share_file(item_id: str, g: Gaussians, ply_local: Path, extras: list[ExtraFile],
                opts: PostprocessOptions) -> Path:
    """The file the share stage uploads after publish: the published small PLY when there is one,
    else one made here (``<id>.share.small.ply``, never published), or the SHARP PLY."""
    assert opts.share is not None
    if not opts.share.use_small_ply:
        return ply_local
    small = [e for e in extras if e.kind == "small_ply"]
    if small:
        return small[0].local_path
    small_opts = FormatOptions(formats=("small.ply",), small_ply_keep=opts.share.keep)
    return make_extra_files(g, ply_local, f"{item_id}.share", opts.gaussians_dir, small_opts)[0].local_path


def failure_from_error(item: Item, stage: str, exc: BaseException) -> Failure:
    """A stable reason code and a readable detail; transient unless the error says permanent.
    The failure names the input it came from (``source``)."""
    source = strip_url(item.origin)
    if isinstance(exc, PermanentError):
        return Failure(item.id, item.unit, stage, exc.reason, str(exc)[:500], transient=False, source=source)
    if isinstance(exc, (TransientError, RateLimited)):
        reason = getattr(exc, "reason", "") or f"{stage}_transient"
        return Failure(item.id, item.unit, stage, reason, str(exc)[:500], transient=True, source=source)
    return Failure(item.id, item.unit, stage, f"{stage}_error", f"{type(exc).__name__}: {exc}"[:500], True,
                   source=source)


def with_source(failure: Failure, item: Item) -> Failure:
    """``failure`` naming ``item``'s input (predictors build failures without it)."""
    if failure.source:
        return failure
    return dataclasses.replace(failure, source=strip_url(item.origin))


def failure_line(failure: Failure) -> str:
    """``item X failed at fetch: empty_file (empty.jpg: empty file)``: the input is always named."""
    detail = failure.detail
    if failure.source and failure.source not in detail:
        detail = f"{failure.source}: {detail}" if detail else failure.source
    return f"item {failure.item_id} failed at {failure.stage}: {failure.reason} ({detail})"
