"""Settings → the typed option groups a run's stages take whole; each group is decided here once.

``Settings`` holds the flat names users write (environment, ``.env``, flags); everything below the
CLI gets these frozen groups instead of reading settings field by field.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .factories import default_subdir
from .pipeline.options import BatchOptions, ClaimOptions, FetchPoolOptions, PostPoolOptions, RunOptions
from .pipeline.stages import ShareFileOptions
from .publish.batch_sizing import BatchPolicy
from .settings import Settings
from .splat.formats import FormatOptions, parse_formats

if TYPE_CHECKING:
    from .pipeline.ray_executor import RayOptions
    from .publish.gsplat_client import ShareOptions

log = logging.getLogger(__name__)

LOCAL_BATCH_WAIT_S = 1.0


def batch_settings(settings: Settings, store_kind: str) -> tuple[int, float]:
    """Publish batch size and wait. HF_INDEX_FLUSH_EVERY/SECS keep their meaning (flush the index
    every N rows or S seconds) when set and HF_UPLOAD_BATCH_* are not, since index rows now ride
    in every publish step."""
    explicit = settings.model_fields_set
    size = settings.hf_upload_batch_size or (
        settings.hf_index_flush_every if "hf_index_flush_every" in explicit else 32
    )
    if settings.hf_upload_batch_wait_ms:
        wait = settings.hf_upload_batch_wait_ms / 1000
    elif "hf_index_flush_secs" in explicit or store_kind != "local":
        wait = settings.hf_index_flush_secs
    else:
        wait = LOCAL_BATCH_WAIT_S
    return size, wait


def keep_run_files(settings: Settings) -> bool:
    """KEEP_RUN_FILES, or by default: keep them when the store hard-links them (a local store on the
    run folder's filesystem), so keeping costs no disk; drop them once published otherwise."""
    if settings.keep_run_files is not None:
        return settings.keep_run_files
    root = settings.local_store_root()
    if root is None:
        return False
    if _filesystem(root) == _filesystem(settings.run_dir):
        return True
    log.info("the run folder %s is on another filesystem than the store %s: run files are deleted once "
             "published (KEEP_RUN_FILES=1 keeps them, at twice the disk)", settings.run_dir, root)
    return False


def _filesystem(path: Path) -> int:
    """The device of ``path`` or of its nearest existing parent (the folder may not exist yet)."""
    path = path.absolute()
    for candidate in (path, *path.parents):
        try:
            return candidate.stat().st_dev
        except OSError:
            continue
    return -1


def format_options(settings: Settings, formats: str | None = None, *, layout: str = "") -> FormatOptions:
    """What post-processing writes: PUBLISH_FORMATS (or ``formats``, e.g. ``convert --to``), else the
    default of the dataset's ``layout`` ("" before the store is open: LAYOUT, or shards)."""
    chosen = formats if formats is not None else settings.formats_for_layout(layout or settings.layout)
    return FormatOptions(
        formats=parse_formats(chosen),
        preview_long_side=settings.preview_long_side,
        small_ply_keep=settings.small_ply_keep,
        timeout_s=settings.format_timeout_secs,
        splat_transform_bin=settings.splat_transform_bin,
        spz_version=settings.spz_version,
    )


def share_file_options(settings: Settings) -> ShareFileOptions:
    """The file a share uploads: the GSPLAT_FILTER_VISIBILITY most visible Gaussians, or the PLY."""
    return ShareFileOptions(use_small_ply=settings.gsplat_use_small_ply, keep=settings.small_ply_keep)


def gsplat_options(settings: Settings) -> ShareOptions:
    """How the gsplat.org client talks (GSPLAT_BASE is checked against the allow-list by the client)."""
    from .publish.gsplat_client import ShareOptions

    return ShareOptions(base=settings.gsplat_base, expiration_type=settings.gsplat_expiration_type,
                        total_timeout_s=settings.gsplat_timeout_secs,
                        allow_private_base=settings.gsplat_allow_private_base)


def ray_options(settings: Settings) -> RayOptions:
    from .pipeline.ray_executor import RayOptions

    return RayOptions(address=settings.ray_address, num_gpus=settings.ray_num_gpus,
                      predict_rows=settings.ray_predict_rows)


def run_options(settings: Settings) -> RunOptions:
    """The runner's groups: claims, fetch, post-process, publish batches, and the drain deadline."""
    size, wait = batch_settings(settings, settings.resolved_store().split(":", 1)[0])
    return RunOptions(
        client_id=settings.client_id,
        run_dir=settings.run_dir,
        subdir=default_subdir(settings),
        claim=ClaimOptions(lease_ttl_s=settings.lease_ttl_s, max_images=settings.max_images,
                           max_scan=settings.max_scan, max_item_attempts=settings.max_item_attempts,
                           redo=settings.redo),
        fetch=FetchPoolOptions(workers=settings.download_workers, queue_max=settings.download_queue_max,
                               attempts=settings.fetch_retries, timeout_s=settings.fetch_timeout_secs,
                               max_pixels=settings.max_image_pixels, max_bytes=settings.max_download_bytes),
        post=PostPoolOptions(workers=settings.upload_workers, queue_max=settings.upload_queue_max,
                             formats=format_options(settings)),
        # The policy applies where the store has a commit budget to size from (the Hub store's shards
        # layout); elsewhere the store answers none and ``size`` / ``wait_s`` stay as they are.
        batch=BatchOptions(size=size, wait_s=wait, keep_run_files=keep_run_files(settings),
                           policy=BatchPolicy(commits_per_hour=settings.hf_commits_per_hour)),
        stop_drain_secs=settings.stop_drain_secs,
    )
