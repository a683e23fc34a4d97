"""One run, from settings to summary: build the parts, start the observers, run, clean up."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from . import __version__
from .errors import ConfigError, SharpDatasetError
from .factories import make_predictor, make_source, make_store
from .net import make_client
from .observe.events import Metrics
from .observe.items import ItemStatusLog
from .observe.sinks import ProgressReporter
from .ops.failures import write_run_stats
from .ops.gallery.runs import store_identity
from .pipeline.base import StageExecutor
from .pipeline.runner import Runner, RunSummary
from .pipeline.stop import StopControl
from .run_config import (  # noqa: F401  (batch_settings, format_options, keep_run_files: app's API)
    batch_settings,
    format_options,
    gsplat_options,
    keep_run_files,
    ray_options,
    run_options,
    share_file_options,
)
from .settings import Settings
from .sources.base import Source
from .splat.formats import FormatOptions, needs_splat_transform

if TYPE_CHECKING:
    from .pipeline.options import RunOptions
    from .pipeline.share_stage import ShareRecorder, ShareSettings
    from .predict.gpu_memory import GpuMemoryLogger
    from .publish.gsplat_client import GsplatClient
    from .publish.share import ShareSummary
    from .stores.base import Store

log = logging.getLogger(__name__)

SHARE_SYNC_EVERY = 50  # late shares per rewrite of the local index files


def _check_formats(opts: FormatOptions) -> None:
    """Fail before any work when a chosen format needs splat-transform and it is missing."""
    if needs_splat_transform(opts.formats):
        from .splat.convert import locate_splat_transform, tool_version

        tool = locate_splat_transform(opts.splat_transform_bin)
        log.info("splat-transform %s for %s", tool_version(tool), ", ".join(opts.formats))


def share_client(settings: Settings) -> GsplatClient | None:
    """GSPLAT_UPLOAD=1 only: a gsplat.org client (GSPLAT_BASE is checked against the allow-list)."""
    if not settings.gsplat_upload:
        return None
    from .publish.gsplat_client import GsplatClient

    return GsplatClient(gsplat_options(settings))


def share_recorder(store: Store) -> ShareRecorder:
    """Where late share fields go, for the share stage and ``share --missing`` alike: the store's
    admin, ``share_record_every`` shares per write (the local ledger at once, one Hub commit per 50),
    the local index files rewritten once per SHARE_SYNC_EVERY shares."""
    from .publish.share import StoreShareRecorder

    return StoreShareRecorder(store.admin(), sync_every=SHARE_SYNC_EVERY)


def share_settings(settings: Settings, client: GsplatClient | None, store: Store) -> ShareSettings | None:
    """The share stage of a run (None without GSPLAT_UPLOAD=1)."""
    if client is None:
        return None
    from .pipeline.share_stage import ShareSettings

    file = share_file_options(settings)
    return ShareSettings(client=client, use_small_ply=file.use_small_ply, keep=file.keep,
                         recorder=share_recorder(store))


def make_executor(settings: Settings) -> StageExecutor | None:
    """EXECUTOR=ray: the Ray Data executor (needs the ``ray`` extra); thread: None (the runner's threads)."""
    if settings.executor != "ray":
        return None
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ConfigError("EXECUTOR=ray needs Ray: pip install 'sharp-dataset[ray]'")
    from .pipeline.ray_executor import RayExecutor

    return RayExecutor(ray_options(settings))


def _start_gpu_log(settings: Settings, run_dir: Path) -> GpuMemoryLogger | None:
    if not settings.log_gpu_mem:
        return None
    try:
        from .predict.gpu_memory import GpuMemoryLogger
    except ImportError:
        log.warning("LOG_GPU_MEM=1 but GPU memory logging is not available in this build")
        return None
    gpu_log = GpuMemoryLogger(run_dir / "gpu_mem_log.csv", interval_s=settings.gpu_mem_log_secs)
    gpu_log.start()
    return gpu_log


def _display_total(source: Source, max_images: int) -> Callable[[], int | None]:
    """The live display's N: the source's item count once known, capped by MAX_IMAGES."""

    def total() -> int | None:
        n = source.total_items()
        if n is not None and max_images:
            return min(n, max_images)
        return n

    return total


def _control_status(control: StopControl, drain_s: float) -> Callable[[], str]:
    """What the display says besides the counts: a received stop, what it waits for, a pause."""

    def status() -> str:
        if control.aborting:
            return f"aborting ({control.reason}): publishing finished items only, then exiting"
        if control.stopping:
            return (f"stopping ({control.reason}): taking no new work, publishing work in flight "
                    f"(at most {drain_s:.0f}s); Ctrl+C again to abort")
        if control.paused:
            return f"paused: remove {control.pause_path} to continue"
        return ""

    return status


@contextmanager
def _run_dir_unless_rejected(run_dir: Path) -> Iterator[None]:
    """Make the run folder; remove it again (when this made it and it is still empty) if the
    settings are rejected inside, so a refused invocation leaves no empty ``runs/<RUN_ID>/``."""
    existed = run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except SharpDatasetError:
        if not existed:
            with suppress(OSError):  # not empty (something was written): keep it
                run_dir.rmdir()
        raise


def check_random_weights(settings: Settings, timing_only: bool) -> None:
    """Untrained weights never reach a dataset: only a timing run into a fresh local folder may use them.

    ``sharp-dataset run`` calls with ``timing_only=False``, so SHARP_RANDOM_WEIGHTS=1 always stops it
    (exit 2); only ``benchmarks/bench_gpu.py`` passes True, for a throwaway store it deletes.
    """
    if not settings.sharp_random_weights:
        return
    if not timing_only:
        raise ConfigError(
            "SHARP_RANDOM_WEIGHTS: untrained weights are for timing only (benchmarks/bench_gpu.py "
            "--random-weights) and are never published by sharp-dataset run; unset it")
    store = settings.resolved_store()
    if settings.resolved_predictor() != "sharp" or not store.startswith("local:"):
        raise ConfigError("SHARP_RANDOM_WEIGHTS: timing runs need --predictor sharp and a local store, "
                          f"got {settings.resolved_predictor()} into {store}")
    if Path(store.split(":", 1)[1]).expanduser().exists():
        raise ConfigError(f"SHARP_RANDOM_WEIGHTS: timing runs write only into a new folder; {store} exists")


def _preflight(settings: Settings, timing_only: bool) -> tuple[RunOptions, StopControl]:
    """The checks before anything is built: random weights, a leftover STOP file, the formats; the run's
    option groups and its stop control."""
    check_random_weights(settings, timing_only)
    opts = run_options(settings)
    control = StopControl(settings.control_path, settings.stop_file, settings.pause_file)
    if control.stop_path.exists():
        raise ConfigError(f"STOP_FILE: {control.stop_path} exists; remove it to run again")
    if settings.resolved_store().startswith("local:") and settings.hf_repo_id and not settings.hf_upload:
        log.info("HF_UPLOAD=0: publishing to the local store")
    elif settings.resolved_store().startswith("local:") and not settings.store:
        log.info("no HF_REPO_ID configured: publishing to the local store %s", settings.resolved_store())
    _check_formats(opts.post.formats)
    return opts, control


def run_pipeline(settings: Settings, console: Console, *, timing_only: bool = False) -> RunSummary:
    """Build source, store and predictor from ``settings``, run once, return the summary.

    ``timing_only`` is the benchmark's switch that admits SHARP_RANDOM_WEIGHTS (see
    ``check_random_weights``); the CLI never sets it.
    """
    opts, control = _preflight(settings, timing_only)
    sharer = share_client(settings)
    executor = make_executor(settings)
    client = make_client(headers={"User-Agent": f"sharp-dataset/{__version__}"})
    with _run_dir_unless_rejected(opts.run_dir):
        store = make_store(settings, stop=control.event)
        source = make_source(settings, client)
        predictor = make_predictor(settings, opts.run_dir)
        log.info("run %s: %s → %s with %s (%s); stop with Ctrl+C or: touch %s", settings.run_id,
                 settings.resolved_source(), store.description, predictor.name, predictor.model_version,
                 control.stop_path)
        try:
            store.open()
            # Post-processing makes what the dataset's layout publishes (the store knows it once open).
            opts = dataclasses.replace(opts, post=dataclasses.replace(
                opts.post, formats=format_options(settings, layout=store.layout)))
            _check_formats(opts.post.formats)
        except SharpDatasetError:
            predictor.close()
            client.close()
            store.close()
            raise
    items_log = ItemStatusLog(opts.run_dir / "items.jsonl")
    metrics = Metrics(on_event=items_log.event)
    reporter = ProgressReporter(metrics, settings.progress, settings.heartbeat_secs, opts.run_dir / "metrics.jsonl",
                                console=console, total=_display_total(source, settings.max_images),
                                status=_control_status(control, opts.stop_drain_secs))
    gpu_log = _start_gpu_log(settings, opts.run_dir)
    control.install_signal_handlers()
    reporter.start()
    summary: RunSummary | None = None
    try:
        share = share_settings(settings, sharer, store)
        summary = Runner(source, store, predictor, opts, metrics, control, http_client=client, share=share,
                         executor=executor).run()
        # Absolute, so the gallery's run report can tell this store's runs from another's.
        summary.extra["store_id"] = store_identity(settings.resolved_store())
        budget = store.budget_report()
        if budget:
            summary.extra["hub_budget"] = budget
        _write_stats(opts.run_dir, summary)
        return summary
    finally:
        control.restore_signal_handlers()
        reporter.stop(summary.__dict__ if summary else None)
        items_log.close()
        if gpu_log is not None:
            gpu_log.stop()
        predictor.close()
        store.close()
        client.close()


def _write_stats(run_dir: Path, summary: RunSummary) -> None:
    """``<run folder>/stats.json``: the run's counts by status and reason (img2dataset's stats file)."""
    try:
        write_run_stats(run_dir, summary.__dict__)
    except OSError as exc:  # a full disk must not turn a finished run into an error
        log.warning("stats.json not written in %s: %s", run_dir, exc)


def share_missing_items(settings: Settings, limit: int | None) -> ShareSummary:
    """``sharp-dataset share --missing``: share what a run did not (off, failed, or left pending).

    Files come through the store's admin (a local store's own files, the hub's downloaded at the
    head); the results go through the same recorder as the run's share stage (``share_recorder``).
    """
    from .publish.gsplat_client import GsplatClient
    from .publish.share import share_file_picker, share_missing

    store = make_store(settings)
    admin = store.admin()
    client = GsplatClient(gsplat_options(settings))
    file = share_file_options(settings)
    file_for = share_file_picker(admin, use_small_ply=file.use_small_ply, keep=file.keep,
                                 work_dir=settings.run_dir / "share")
    recorder = share_recorder(store)
    try:
        return share_missing(admin, client, file_for=file_for, record=recorder.record, limit=limit)
    finally:
        try:
            recorder.flush()
        finally:
            store.close()
