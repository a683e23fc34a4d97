"""Stage functions: one item in, one result out. No threads, no global state.

They run unchanged inside the thread pools of ``runner.py`` and could run inside the workers of
a distributed engine later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import PermanentError, RateLimited, TransientError
from ..predict.base import RawSplat
from ..publish.layout import item_path
from ..records import Failure, FetchedImage, IndexRow, Item, ProcessedItem, PublishedFile
from ..splat.ply import validate_ply, write_ply


@dataclass(frozen=True)
class PostprocessOptions:
    gaussians_dir: Path
    subdir: str
    fanout: bool
    predictor: str
    model_version: str
    client_id: str


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
    """Raw prediction → SHARP-layout PLY on disk (validated) → index row + files to publish."""
    gaussians = raw.to_gaussians()
    item = fetched.item
    ply_local = opts.gaussians_dir / f"{item.id}.ply"
    ply_size, ply_sha = write_ply(gaussians, ply_local)
    validate_ply(ply_local)
    image_repo = item_path(opts.subdir, item.id, fetched.ext, fanout=opts.fanout)
    ply_repo = item_path(opts.subdir, item.id, "ply", fanout=opts.fanout)
    row = _row_from_item(item)
    row.image_path, row.image_size, row.image_sha256 = image_repo, fetched.size, fetched.sha256
    row.ply_path, row.ply_size, row.ply_sha256 = ply_repo, ply_size, ply_sha
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
    files = [
        PublishedFile("image", image_repo, fetched.original_path, fetched.size, fetched.sha256),
        PublishedFile("ply", ply_repo, ply_local, ply_size, ply_sha),
    ]
    payload = str(item.meta.get("download_location", ""))
    return ProcessedItem(row=row, files=files, followup_payload=payload)


def failure_from_error(item: Item, stage: str, exc: BaseException) -> Failure:
    """A stable reason code and a readable detail; transient unless the error says permanent."""
    if isinstance(exc, PermanentError):
        return Failure(item.id, item.unit, stage, exc.reason, str(exc)[:500], transient=False)
    if isinstance(exc, (TransientError, RateLimited)):
        reason = getattr(exc, "reason", "") or f"{stage}_transient"
        return Failure(item.id, item.unit, stage, reason, str(exc)[:500], transient=True)
    return Failure(item.id, item.unit, stage, f"{stage}_error", f"{type(exc).__name__}: {exc}"[:500], True)
